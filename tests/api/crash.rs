//! A crash (`kill -9`) of the server under refresh load loses no acknowledged rotation:
//! after a restart on the same database, the last refresh token each client was given
//! still works.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use crate::binary::Served;
use crate::helpers::*;

const CLIENTS: usize = 8;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_under_refresh_load_loses_no_acknowledged_rotation() {
    let storage = test_storage().await;
    let database_url = test_config(&storage).database_url;
    let env = [
        ("TESSERA_DATABASE_URL", database_url),
        ("TESSERA_REFRESH_RATE", "0".to_owned()),
        ("TESSERA_COOKIE_SECURE", "false".to_owned()),
    ];
    let mut served = Served::start_with(storage.dir.path(), &[], &env);
    let base = served.base();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client");
    let post = |path: &str, body: Value| client.post(format!("{base}{path}")).json(&body).send();
    let credentials = json!({ "email": EMAIL, "password": PASSWORD });
    assert_eq!(
        post("/v1/auth/register", credentials.clone())
            .await
            .expect("register")
            .status(),
        201
    );
    let mut tokens = Vec::new();
    for _ in 0..CLIENTS {
        let r = post("/v1/auth/login", credentials.clone()).await.expect("login");
        tokens.push(s(&json_ok(r).await, "refresh_token"));
    }

    // Each client chains its own session as fast as it can; what it was last given is what
    // it would present next.
    let running = Arc::new(AtomicBool::new(true));
    let workers: Vec<_> = tokens
        .into_iter()
        .map(|mut current| {
            let (client, base, running) = (client.clone(), base.clone(), Arc::clone(&running));
            tokio::spawn(async move {
                let mut acknowledged = 0u32;
                while running.load(Ordering::Relaxed) {
                    let sent = client
                        .post(format!("{base}/v1/auth/refresh"))
                        .json(&json!({ "refresh_token": current }))
                        .send()
                        .await;
                    let Ok(r) = sent else { break };
                    let status = r.status();
                    let Ok(body) = r.json::<Value>().await else { break };
                    assert_eq!(status, 200, "refresh under load: {body}");
                    current = s(&body, "refresh_token");
                    acknowledged += 1;
                }
                (current, acknowledged)
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    served.kill_9();
    running.store(false, Ordering::Relaxed);
    let mut last_given = Vec::new();
    let mut total = 0;
    for w in workers {
        let (current, acknowledged) = w.await.expect("worker");
        total += acknowledged;
        last_given.push(current);
    }
    assert!(total >= 50, "the load was real: {total} rotations acknowledged");

    let served = Served::start_with(storage.dir.path(), &[], &env);
    let base = served.base();
    for token in last_given {
        let r = client
            .post(format!("{base}/v1/auth/refresh"))
            .json(&json!({ "refresh_token": token }))
            .send()
            .await
            .expect("refresh after restart");
        // 200 either way: the token is current, or its successor was committed but the
        // answer never left the dying process (then it is replayed within the grace window).
        json_ok(r).await;
    }
}
