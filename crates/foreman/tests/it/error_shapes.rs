//! Errors no handler writes (a bad query string, an unknown path, a wrong method)
//! in the shape of the route's family: Ollama's plain text on Ollama's own paths, as
//! Ollama's router answers; JSON on foreman's own routes and under `/v1/`.

use reqwest::Method;
use serde_json::{Value, json};

use crate::common::*;

const JSON_UTF8: &str = "application/json; charset=utf-8";

/// Sends `method path` and returns the status, content type and body text.
async fn ask(foreman: &TestForeman, method: Method, path: &str) -> (u16, String, String) {
    let response = client()
        .request(method, format!("{}{path}", foreman.url))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_string();
    (status, content_type, response.text().await.unwrap())
}

#[tokio::test]
async fn a_bad_query_string_is_answered_in_json() {
    let foreman = TestForeman::start(fast_sim()).await;
    let id = "01JABCDEFGHJKMNPQRSTVWXYZ0";
    for (path, error) in [
        (
            "/jobs?limit=abc".to_string(),
            "invalid query string: limit: invalid digit found in string",
        ),
        (
            "/jobs?limit=-1".to_string(),
            "invalid query string: limit: invalid digit found in string",
        ),
        (
            format!("/jobs/{id}?wait=1s&wait=2s"),
            "invalid query string: duplicate field `wait`",
        ),
    ] {
        let (status, content_type, body) = ask(&foreman, Method::GET, &path).await;
        assert_eq!((status, content_type.as_str()), (400, JSON_UTF8), "{path}");
        assert_eq!(
            serde_json::from_str::<Value>(&body).unwrap(),
            json!({ "error": error }),
            "{path}"
        );
    }
    foreman.stop().await;
}

#[tokio::test]
async fn a_path_segment_that_is_not_utf8_is_answered_in_json() {
    let foreman = TestForeman::start(fast_sim()).await;
    for (method, path) in [
        (Method::GET, "/jobs/%FF"),
        (Method::DELETE, "/jobs/%FF"),
        (Method::POST, "/jobs/%FF/cancel"),
        (Method::GET, "/jobs/%FF/events"),
        (Method::GET, "/jobs/%FF/artifacts/a"),
    ] {
        let (status, content_type, body) = ask(&foreman, method, path).await;
        assert_eq!((status, content_type.as_str()), (400, JSON_UTF8), "{path}");
        let error = serde_json::from_str::<Value>(&body).unwrap();
        assert!(
            error["error"]
                .as_str()
                .is_some_and(|text| text.starts_with("invalid path: ")),
            "{path}: {body}"
        );
    }
    foreman.stop().await;
}

#[tokio::test]
async fn unknown_paths_and_methods_under_v1_answer_in_openai_json() {
    let foreman = TestForeman::start(fast_sim()).await;
    let cases = [
        (Method::GET, "/v1/nope", 404, "no route for GET /v1/nope"),
        (
            Method::POST,
            "/v1/chat/completions/extra",
            404,
            "no route for POST /v1/chat/completions/extra",
        ),
        (
            Method::GET,
            "/v1/chat/completions",
            405,
            "method GET is not allowed for /v1/chat/completions",
        ),
        (
            Method::DELETE,
            "/v1/models",
            405,
            "method DELETE is not allowed for /v1/models",
        ),
    ];
    for (method, path, status, message) in cases {
        let (got_status, content_type, body) = ask(&foreman, method.clone(), path).await;
        assert_eq!(
            (got_status, content_type.as_str()),
            (status, JSON_UTF8),
            "{method} {path}"
        );
        let body: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(body["error"]["message"], message, "{method} {path}");
        assert!(body["error"]["type"].is_string(), "{body}");
        assert!(body["error"].get("code").is_some(), "{body}");
    }
    let (status, content_type, body) = ask(&foreman, Method::GET, "/v1/messages").await;
    assert_eq!((status, content_type.as_str()), (405, JSON_UTF8));
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["type"], "error", "Anthropic's shape on /v1/messages");
    assert_eq!(
        body["error"]["message"],
        "method GET is not allowed for /v1/messages"
    );
    foreman.stop().await;
}

#[tokio::test]
async fn foreman_own_routes_answer_unknown_paths_and_methods_in_json() {
    let foreman = TestForeman::start(fast_sim()).await;
    let cases = [
        (
            Method::PUT,
            "/jobs",
            405,
            "method PUT is not allowed for /jobs",
        ),
        (
            Method::GET,
            "/jobs/x/y/z",
            404,
            "no route for GET /jobs/x/y/z",
        ),
        (
            Method::POST,
            "/healthz",
            405,
            "method POST is not allowed for /healthz",
        ),
        (
            Method::GET,
            "/foreman/nope",
            404,
            "no route for GET /foreman/nope",
        ),
    ];
    for (method, path, status, error) in cases {
        let (got_status, content_type, body) = ask(&foreman, method.clone(), path).await;
        assert_eq!(
            (got_status, content_type.as_str()),
            (status, JSON_UTF8),
            "{method} {path}"
        );
        assert_eq!(
            serde_json::from_str::<Value>(&body).unwrap(),
            json!({ "error": error }),
            "{method} {path}"
        );
    }
    // Ollama's own paths keep Ollama's plain text.
    assert_eq!(
        ask(&foreman, Method::GET, "/api/nope").await,
        (404, "text/plain".into(), "404 page not found".into())
    );
    assert_eq!(
        ask(&foreman, Method::GET, "/api/chat").await,
        (405, "text/plain".into(), "405 method not allowed".into())
    );
    assert_eq!(
        ask(&foreman, Method::GET, "/jobsx").await,
        (404, "text/plain".into(), "404 page not found".into()),
        "a path that only starts like foreman's is not foreman's"
    );
    foreman.stop().await;
}
