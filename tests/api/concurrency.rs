//! Racing requests: concurrent refreshes of one token rotate it exactly once (never two live
//! successors), racing registrations create one account, a refresh never outlives a racing logout.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::sync::Barrier;

use crate::helpers::*;

const RACERS: usize = 20;

/// What one racing request got back: the status, and the refresh token or problem code, if any.
struct Outcome {
    status: u16,
    refresh_token: Option<String>,
    code: Option<String>,
}

/// POSTs each `(path, body)` from its own task, all released at the same moment.
async fn race(app: &TestApp, requests: Vec<(&str, Value)>) -> Vec<Outcome> {
    let barrier = Arc::new(Barrier::new(requests.len()));
    let tasks: Vec<_> = requests
        .into_iter()
        .map(|(path, body)| {
            let (client, url, barrier) = (app.client.clone(), app.url(path), barrier.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                let r = client.post(url).json(&body).send().await.expect("request");
                let status = r.status().as_u16();
                let v: Value = r.json().await.unwrap_or(Value::Null);
                Outcome {
                    status,
                    refresh_token: v["refresh_token"].as_str().map(str::to_owned),
                    code: v["code"].as_str().map(str::to_owned),
                }
            })
        })
        .collect();
    let mut outcomes = Vec::new();
    for t in tasks {
        outcomes.push(t.await.expect("task"));
    }
    outcomes
}

/// Presents `refresh_token` `RACERS` times at once.
async fn race_refreshes(app: &TestApp, refresh_token: &str) -> Vec<Outcome> {
    let body = json!({ "refresh_token": refresh_token });
    race(app, vec![("/v1/auth/refresh", body); RACERS]).await
}

fn describe(outcomes: &[Outcome]) -> Vec<(u16, Option<&str>)> {
    outcomes.iter().map(|o| (o.status, o.code.as_deref())).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_refreshes_within_grace_all_get_the_one_successor() {
    let app = spawn_app().await;
    let t = app.signup_and_login(EMAIL).await;
    let outcomes = race_refreshes(&app, &s(&t, "refresh_token")).await;
    assert!(
        outcomes.iter().all(|o| o.status == 200),
        "{:?}",
        describe(&outcomes)
    );
    let successors: HashSet<_> = outcomes
        .iter()
        .map(|o| o.refresh_token.clone().expect("a refresh token in every 200"))
        .collect();
    assert_eq!(successors.len(), 1, "exactly one successor: {successors:?}");
    let successor = successors.into_iter().next().unwrap();
    assert_ne!(successor, s(&t, "refresh_token"));
    let next = app.refresh_ok(&successor).await;
    assert_eq!(next["session_id"], t["session_id"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_refreshes_with_grace_zero_rotate_once_and_refuse_the_rest() {
    let app = spawn_app_with(|c| c.reuse_grace = Duration::ZERO).await;
    let t = app.signup_and_login(EMAIL).await;
    let outcomes = race_refreshes(&app, &s(&t, "refresh_token")).await;
    let winners: Vec<_> = outcomes.iter().filter(|o| o.status == 200).collect();
    assert_eq!(winners.len(), 1, "{:?}", describe(&outcomes));
    assert!(winners[0].refresh_token.is_some());
    for loser in outcomes.iter().filter(|o| o.status != 200) {
        assert_eq!(loser.status, 401, "{:?}", describe(&outcomes));
        assert!(
            matches!(
                loser.code.as_deref(),
                Some("refresh_token_reused" | "session_revoked")
            ),
            "{:?}",
            describe(&outcomes)
        );
    }
    // The replays were reuse: the session, the winner's successor included, is dead.
    let successor = winners[0].refresh_token.clone().unwrap();
    assert_problem(app.refresh(&successor).await, 401, "session_revoked").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_registrations_of_one_email_create_one_account() {
    let app = spawn_app().await;
    let requests = ["alice@example.com", "ALICE@example.com", " Alice@Example.com "]
        .iter()
        .cycle()
        .take(9)
        .map(|email| {
            (
                "/v1/auth/register",
                json!({ "email": email, "password": PASSWORD }),
            )
        })
        .collect();
    let outcomes = race(&app, requests).await;
    let created = outcomes.iter().filter(|o| o.status == 201).count();
    assert_eq!(created, 1, "{:?}", describe(&outcomes));
    for o in outcomes.iter().filter(|o| o.status != 201) {
        assert_eq!((o.status, o.code.as_deref()), (409, Some("email_taken")));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_refresh_racing_a_logout_never_outlives_it() {
    let app = spawn_app().await;
    assert_status(app.register(EMAIL).await, 201).await;
    for _ in 0..8 {
        let t = app.login_ok(EMAIL).await;
        let body = json!({ "refresh_token": s(&t, "refresh_token") });
        let outcomes = race(
            &app,
            vec![("/v1/auth/refresh", body.clone()), ("/v1/auth/logout", body)],
        )
        .await;
        assert_eq!(outcomes[1].status, 204, "logout: {:?}", describe(&outcomes));
        match (outcomes[0].status, &outcomes[0].refresh_token) {
            (200, Some(successor)) => {
                assert_problem(app.refresh(successor).await, 401, "session_revoked").await;
            }
            _ => assert_eq!(
                (outcomes[0].status, outcomes[0].code.as_deref()),
                (401, Some("session_revoked")),
                "refresh: {:?}",
                describe(&outcomes)
            ),
        }
    }
}
