//! Bearer-token edge cases end to end: the scheme in any case (RFC 7235), Anthropic's
//! `x-api-key` on the Messages route, and a `FOREMAN_TOKEN` no client could present
//! (whitespace around it) refused at start with a line naming the flag and variable.

use serde_json::{Value, json};

use crate::common::*;

const TOKEN: &str = "s3cret";

async fn status_of(request: reqwest::RequestBuilder) -> u16 {
    request.send().await.unwrap().status().as_u16()
}

#[tokio::test]
async fn the_bearer_scheme_is_accepted_in_any_case() {
    let foreman =
        TestForeman::start_with(fast_sim(), |config| config.token = Some(TOKEN.into())).await;
    let client = client();
    let tags = format!("{}/api/tags", foreman.url);
    for (authorization, status) in [
        ("Bearer s3cret", 200),
        ("bearer s3cret", 200),
        ("BEARER s3cret", 200),
        ("bEaReR s3cret", 200),
        ("Bearer  s3cret", 200),
        ("bearer wrong", 401),
        ("BEARER s3cre", 401),
        ("Basic s3cret", 401),
        ("Bearers3cret", 401),
        ("s3cret", 401),
    ] {
        let request = client.get(&tags).header("authorization", authorization);
        assert_eq!(status_of(request).await, status, "{authorization:?}");
    }
    // A queued route, and one in OpenAI's family, take it the same way.
    let chat = client
        .post(format!("{}/api/chat", foreman.url))
        .header("authorization", "bearer s3cret")
        .json(&chat_body(CHAT, "hi", false));
    assert_eq!(status_of(chat).await, 200);
    let models = client
        .get(format!("{}/v1/models", foreman.url))
        .header("authorization", "BEARER s3cret");
    assert_eq!(status_of(models).await, 200);
    foreman.stop().await;
}

#[tokio::test]
async fn the_messages_route_still_takes_x_api_key() {
    let foreman =
        TestForeman::start_with(fast_sim(), |config| config.token = Some(TOKEN.into())).await;
    let client = client();
    let messages =
        json!({"model": CHAT, "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]});
    let url = format!("{}/v1/messages", foreman.url);
    let by_key = client.post(&url).header("x-api-key", TOKEN).json(&messages);
    assert_eq!(status_of(by_key).await, 200);
    let lower_case_bearer = client
        .post(&url)
        .header("authorization", "bearer s3cret")
        .json(&messages);
    assert_eq!(status_of(lower_case_bearer).await, 200);
    let response = client
        .post(&url)
        .header("x-api-key", "wrong")
        .json(&messages)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    let answer: Value = response.json().await.unwrap();
    assert_eq!(answer["error"]["type"], "authentication_error");
    foreman.stop().await;
}

/// Checked where every setting is: [`ServeArgs::validate`].
#[test]
fn a_token_no_client_can_send_is_refused_by_validation() {
    for token in [
        " s3cret",
        "s3cret ",
        "s3cret\n",
        "\ts3cret",
        " ",
        "s3cr\u{e9}t",
        "s3\u{7}cret",
    ] {
        let error = foreman::config::ServeArgs::from_flags(&["--token", token])
            .unwrap()
            .validate()
            .unwrap_err();
        assert_eq!(
            (error.flag.as_str(), error.env.as_str()),
            ("token", "TOKEN"),
            "{token:?}"
        );
    }
    let error = foreman::config::ServeArgs::from_flags(&["--token", "s3cret\n"])
        .unwrap()
        .validate()
        .unwrap_err();
    assert!(error.reason.contains("whitespace"), "{error}");
    for token in ["s3cret", "fm_abc-DEF.123~+/=", "two words"] {
        let config = foreman::config::ServeArgs::from_flags(&["--token", token])
            .unwrap()
            .validate()
            .unwrap();
        assert_eq!(config.token.as_deref(), Some(token));
    }
}

/// The binary stops at start with one line naming the flag and the variable, as
/// for every bad setting, rather than serving with a token nobody can present.
#[tokio::test]
async fn a_token_with_whitespace_around_it_stops_foreman_at_start() {
    let dir = tempfile::tempdir().unwrap();
    for token in ["s3cret\n", " s3cret"] {
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_foreman"));
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("FOREMAN_") {
                command.env_remove(name);
            }
        }
        // Should it start after all, it binds no fixed port, writes nothing outside
        // the temporary folder, and is stopped when the wait gives up.
        let output = command
            .arg("serve")
            .env("FOREMAN_TOKEN", token)
            .env("FOREMAN_ADDR", "127.0.0.1:0")
            .env("FOREMAN_DATABASE", dir.path().join("foreman.db"))
            .env("FOREMAN_DATA_DIR", dir.path().join("data"))
            .kill_on_drop(true)
            .output();
        let output = tokio::time::timeout(std::time::Duration::from_secs(20), output)
            .await
            .expect("foreman stops at start instead of serving")
            .unwrap();
        assert_eq!(output.status.code(), Some(2), "{token:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
        assert!(
            stderr.starts_with("foreman: invalid --token (FOREMAN_TOKEN): ")
                && stderr.contains("whitespace"),
            "{stderr}"
        );
        assert!(
            !stderr.contains("s3cret"),
            "the token is not shown: {stderr}"
        );
    }
}
