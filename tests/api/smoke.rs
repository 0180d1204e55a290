use reqwest::StatusCode;

use crate::helpers::*;

#[tokio::test]
async fn register_login_refresh_me() {
    let app = spawn_app().await;
    let tokens = app.signup_and_login("smoke@example.com").await;
    let me = app.me(&s(&tokens, "access_token")).await;
    assert_eq!(me.status(), StatusCode::OK);
    let r = app.refresh(&s(&tokens, "refresh_token")).await;
    assert_eq!(r.status(), StatusCode::OK);
}
