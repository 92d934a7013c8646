//! The operators' API: the admin role's gate and the bots it shows (issue
//! 17's first step).

use serde_json::Value;
use skald_actors::settings::BotSettings;

use crate::common::*;

async fn get(server: &TestServer, path: &str, bearer: Option<String>) -> (u16, Value) {
    let mut request = server.http(reqwest::Method::GET, path, None);
    if let Some(token) = bearer {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

fn admin(sub: &str) -> String {
    token_with(sub, |c| c.roles = vec!["admin".into()])
}

#[tokio::test]
async fn only_the_admin_role_opens_the_admin_api_and_it_shows_the_bots_in_force() {
    let server = TestServer::with_config(|c| {
        c.bots.insert(
            "shop".into(),
            BotSettings {
                system_prompt: "You sell shoes.".into(),
                max_tokens: 321,
                allowed_origins: vec!["https://shop.example".into()],
                ..BotSettings::default()
            },
        );
    })
    .await;
    // No token, a token without the role, another role: refused, in the
    // contract's shape.
    for (bearer, status, code) in [
        (None, 401, "unauthorized"),
        (Some(token("ops")), 403, "forbidden"),
        (
            Some(token_with("ops", |c| c.roles = vec!["support".into()])),
            403,
            "forbidden",
        ),
    ] {
        for path in ["/v1/admin/bots", "/v1/admin/bots/shop"] {
            let (got, body) = get(&server, path, bearer.clone()).await;
            assert_eq!(
                (got, body["error"]["code"].as_str()),
                (status, Some(code)),
                "{path}: {body}"
            );
        }
    }
    let (status, body) = get(&server, "/v1/admin/bots", Some(admin("ops"))).await;
    assert_eq!(status, 200, "{body}");
    let names: Vec<&str> = body["bots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["name"].as_str().unwrap())
        .collect();
    assert!(
        names.contains(&"default") && names.contains(&"shop"),
        "{names:?}"
    );
    let (status, shop) = get(&server, "/v1/admin/bots/shop", Some(admin("ops"))).await;
    assert_eq!(status, 200, "{shop}");
    assert_eq!(shop["system_prompt"], "You sell shoes.");
    assert_eq!(shop["max_tokens"], 321);
    assert_eq!(shop["allowed_origins"][0], "https://shop.example");
    let (status, body) = get(&server, "/v1/admin/bots/nobody", Some(admin("ops"))).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("not_found"))
    );
    server.stop().await;
}
