//! The Host and Origin guard over real HTTP. Each test cites the line of Ollama
//! (commit fb30760, `server/routes.go`, `envconfig/config.go`) or of gin-contrib/cors
//! v1.7.2 (the CORS middleware Ollama installs) that foreman follows; the last one
//! holds foreman's answers against the simulator's, the oracle written apart.

use reqwest::Method;
use reqwest::header::HeaderMap;
use tokio_util::sync::CancellationToken;

use crate::common::*;

/// What a guarded request came back with.
struct Answer {
    status: u16,
    headers: HeaderMap,
    body: String,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().unwrap())
    }

    fn vary(&self) -> Vec<&str> {
        self.headers
            .get_all("vary")
            .iter()
            .map(|v| v.to_str().unwrap())
            .collect()
    }

    /// Ollama's refusal: 403 with an empty body (`c.AbortWithStatus`, routes.go:1837
    /// and cors config.go:85).
    fn assert_refused(&self) {
        assert_eq!(self.status, 403, "{}", self.body);
        assert_eq!(self.body, "", "Ollama sends no body with the refusal");
        assert_eq!(self.header("content-type"), None);
    }
}

async fn send(
    url: &str,
    method: Method,
    path: &str,
    host: Option<&str>,
    origin: Option<&str>,
) -> Answer {
    let mut request = client().request(method.clone(), format!("{url}{path}"));
    if method == Method::POST {
        request = request.json(&chat_body(CHAT, "hello from a page", false));
    }
    if let Some(host) = host {
        request = request.header("host", host);
    }
    if let Some(origin) = origin {
        request = request.header("origin", origin);
    }
    let response = request.send().await.unwrap();
    Answer {
        status: response.status().as_u16(),
        headers: response.headers().clone(),
        body: response.text().await.unwrap(),
    }
}

fn port(url: &str) -> u16 {
    url.rsplit(':').next().unwrap().parse().unwrap()
}

/// No job row and no request at the target: the refusal came first.
async fn assert_nothing_reached(foreman: &TestForeman) {
    assert!(foreman.jobs().await.is_empty(), "no job was created");
    assert_eq!(
        foreman.sim.stats().requests_total,
        0,
        "the target saw nothing"
    );
}

/// routes.go:1810-1837: on loopback, a foreign Host gets 403 on every route
/// (`/healthz`, `/jobs` and unknown paths too, as all of Ollama's are guarded), before
/// auth and before a job exists; loopback IPs and allowedHost names (1776-1801) pass.
#[tokio::test]
async fn a_foreign_host_is_refused_before_anything_happens() {
    let foreman = TestForeman::start_with(fast_sim(), |config| {
        config.token = Some("secret".into());
    })
    .await;
    let url = &foreman.url;
    let foreign = format!("evil.example:{}", port(url));
    send(url, Method::POST, "/api/chat", Some(&foreign), None)
        .await
        .assert_refused();
    send(url, Method::POST, "/api/chat", Some("evil.example"), None)
        .await
        .assert_refused();
    send(url, Method::POST, "/jobs", Some(&foreign), None)
        .await
        .assert_refused();
    send(url, Method::GET, "/healthz", Some(&foreign), None)
        .await
        .assert_refused();
    send(url, Method::GET, "/no/such/route", Some(&foreign), None)
        .await
        .assert_refused();
    assert_nothing_reached(&foreman).await;
    for host in [
        format!("127.0.0.1:{}", port(url)),
        format!("localhost:{}", port(url)),
    ] {
        let answer = send(url, Method::GET, "/healthz", Some(&host), None).await;
        assert_eq!(answer.status, 200, "{host}: {}", answer.body);
        let answer = send(url, Method::POST, "/api/chat", Some(&host), None).await;
        assert_eq!(answer.status, 401, "past the guard, auth applies: {host}");
    }
    foreman.stop().await;
}

/// Allowed Hosts reach the queue as before (routes.go:1821-1834).
#[tokio::test]
async fn loopback_and_localhost_hosts_are_served() {
    let foreman = TestForeman::start(fast_sim()).await;
    let url = &foreman.url;
    for host in [
        format!("127.0.0.1:{}", port(url)),
        format!("localhost:{}", port(url)),
    ] {
        let answer = send(url, Method::POST, "/api/chat", Some(&host), None).await;
        assert_eq!(answer.status, 200, "{host}: {}", answer.body);
        assert!(answer.body.contains("\"done\":true"), "{}", answer.body);
    }
    assert_eq!(foreman.jobs().await.len(), 2);
    foreman.stop().await;
}

/// cors v1.7.2 config.go:84-87: a disallowed Origin gets 403 before any route, so no
/// job; config.go:93-97 with utils.go:12-27: an allowed one (envconfig/config.go:91-98:
/// localhost on any port) gets its origin back and `Vary: Origin`.
#[tokio::test]
async fn a_disallowed_origin_is_refused_and_an_allowed_one_gets_cors_headers() {
    let foreman = TestForeman::start(fast_sim()).await;
    let url = &foreman.url;
    send(
        url,
        Method::POST,
        "/api/chat",
        None,
        Some("http://evil.example"),
    )
    .await
    .assert_refused();
    send(
        url,
        Method::POST,
        "/v1/chat/completions",
        None,
        Some("http://evil.example"),
    )
    .await
    .assert_refused();
    send(
        url,
        Method::POST,
        "/jobs",
        None,
        Some("https://evil.example"),
    )
    .await
    .assert_refused();
    assert_nothing_reached(&foreman).await;

    let answer = send(
        url,
        Method::POST,
        "/api/chat",
        None,
        Some("http://localhost:3000"),
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(
        answer.header("access-control-allow-origin"),
        Some("http://localhost:3000")
    );
    assert_eq!(answer.vary(), ["Origin"]);
    assert_eq!(
        answer.header("access-control-expose-headers"),
        Some("X-Foreman-Job-Id"),
        "foreman's addition: a page may read the job id"
    );
    assert!(answer.header("x-foreman-job-id").is_some());
    // config.go:78-81: the server's own origin is not a CORS request.
    let own = format!("http://127.0.0.1:{}", port(url));
    let answer = send(url, Method::POST, "/api/chat", None, Some(&own)).await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.header("access-control-allow-origin"), None);
    foreman.stop().await;
}

/// cors v1.7.2 config.go:89-91 and utils.go:29-65, with routes.go:1845-1866 (allowed
/// headers): an allowed origin's preflight gets 204 and the CORS headers, before
/// auth (a preflight carries no token); a disallowed one's gets 403.
#[tokio::test]
async fn preflights_get_204_with_the_cors_headers() {
    let foreman = TestForeman::start_with(fast_sim(), |config| {
        config.token = Some("secret".into());
    })
    .await;
    let url = &foreman.url;
    let answer = send(
        url,
        Method::OPTIONS,
        "/api/chat",
        None,
        Some("http://localhost:5173"),
    )
    .await;
    assert_eq!((answer.status, answer.body.as_str()), (204, ""));
    assert_eq!(
        answer.header("access-control-allow-origin"),
        Some("http://localhost:5173")
    );
    assert_eq!(
        answer.header("access-control-allow-methods"),
        Some("GET,POST,PUT,PATCH,DELETE,HEAD,OPTIONS")
    );
    let allowed = answer.header("access-control-allow-headers").unwrap();
    assert!(
        allowed.starts_with(
            "Authorization,Content-Type,User-Agent,Accept,X-Requested-With,Openai-Beta,"
        ),
        "{allowed}"
    );
    assert!(
        allowed.ends_with("X-Stainless-Timeout,X-Foreman-Priority,Idempotency-Key"),
        "{allowed}"
    );
    assert_eq!(answer.header("access-control-max-age"), Some("43200"));
    assert_eq!(
        answer.vary(),
        [
            "Origin",
            "Access-Control-Request-Method",
            "Access-Control-Request-Headers"
        ]
    );
    send(
        url,
        Method::OPTIONS,
        "/api/chat",
        None,
        Some("http://evil.example"),
    )
    .await
    .assert_refused();
    // routes.go:1827-1832: OPTIONS to an allowed host name, without Origin, is 204.
    let host = format!("localhost:{}", port(url));
    assert_eq!(
        send(url, Method::OPTIONS, "/api/chat", Some(&host), None)
            .await
            .status,
        204
    );
    assert_nothing_reached(&foreman).await;
    foreman.stop().await;
}

/// envconfig/config.go:86-89: the setting adds origins to the defaults (here
/// `FOREMAN_ORIGINS=https://app.example`); cors v1.7.2 config.go:46-50 with
/// utils.go:21-22: `*` allows every origin, answered `*` without `Vary`.
#[tokio::test]
async fn foreman_origins_adds_allowed_origins() {
    let mut foreman = TestForeman::start_with(fast_sim(), |config| {
        config.origins = vec!["https://app.example".into()];
    })
    .await;
    let answer = send(
        &foreman.url,
        Method::POST,
        "/api/chat",
        None,
        Some("https://app.example"),
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(
        answer.header("access-control-allow-origin"),
        Some("https://app.example")
    );
    send(
        &foreman.url,
        Method::POST,
        "/api/chat",
        None,
        Some("https://other.example"),
    )
    .await
    .assert_refused();
    assert_eq!(foreman.jobs().await.len(), 1);

    foreman
        .restart_with(|config| config.origins = vec!["*".into()])
        .await;
    let answer = send(
        &foreman.url,
        Method::POST,
        "/api/chat",
        None,
        Some("https://other.example"),
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.header("access-control-allow-origin"), Some("*"));
    assert_eq!(answer.vary(), Vec::<&str>::new());
    foreman.stop().await;
}

/// routes.go:1810: bound to 0.0.0.0 (not loopback), the Host check is off; the
/// Origin check stays.
#[tokio::test]
async fn hosts_are_not_checked_when_bound_beyond_loopback() {
    let sim = ollama_sim::spawn("127.0.0.1:0".parse().unwrap(), fast_sim())
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = test_config(&sim.url(), dir.path().join("foreman.db").to_str().unwrap());
    let listener = tokio::net::TcpListener::bind("0.0.0.0:0").await.unwrap();
    let url = format!("http://127.0.0.1:{}", listener.local_addr().unwrap().port());
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(foreman::serve(listener, config, shutdown.clone()));
    eventually("foreman to answer", async || {
        client().get(format!("{url}/healthz")).send().await.is_ok()
    })
    .await;
    let answer = send(&url, Method::POST, "/api/chat", Some("evil.example"), None).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    // cors config.go:78-81: a page of that name is its own origin, so it passes too;
    // another origin is still refused.
    let own = Some("http://evil.example");
    let answer = send(&url, Method::POST, "/api/chat", Some("evil.example"), own).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let other = Some("http://other.example");
    send(&url, Method::POST, "/api/chat", Some("evil.example"), other)
        .await
        .assert_refused();
    shutdown.cancel();
    task.await.unwrap().unwrap();
    sim.shutdown().await;
}

/// foreman answers every guard case as the simulator (Ollama's model, written apart)
/// does: same status, same `Access-Control-Allow-Origin`, same `Vary`.
#[tokio::test]
async fn foreman_guards_like_the_simulator() {
    let foreman = TestForeman::start(fast_sim()).await;
    // PORT is each server's own port; "[::1]" without one is refused (SplitHostPort).
    let cases: &[(Method, Option<&str>, Option<&str>)] = &[
        (Method::GET, None, None),
        (Method::GET, Some("evil.example:PORT"), None),
        (Method::GET, Some("localhost:PORT"), None),
        (Method::GET, Some("printer.local:PORT"), None),
        (Method::GET, Some("8.8.8.8:PORT"), None),
        (Method::GET, Some("[::1]"), None),
        (Method::GET, None, Some("http://evil.example")),
        (Method::GET, None, Some("http://localhost:3000")),
        (Method::GET, None, Some("vscode-webview://abc")),
        (Method::GET, None, Some("null")),
        (
            Method::GET,
            Some("evil.example:PORT"),
            Some("http://localhost:3000"),
        ),
        (Method::OPTIONS, None, Some("http://localhost:3000")),
        (
            Method::OPTIONS,
            Some("evil.example:PORT"),
            Some("http://localhost:3000"),
        ),
        (Method::OPTIONS, None, Some("http://evil.example")),
        (Method::OPTIONS, Some("localhost:PORT"), None),
    ];
    for (method, host, origin) in cases {
        let mut answers = Vec::new();
        for url in [&foreman.url, &foreman.sim.url()] {
            let host = host.map(|host| host.replace("PORT", &port(url).to_string()));
            let answer = send(url, method.clone(), "/api/tags", host.as_deref(), *origin).await;
            answers.push((
                answer.status,
                answer
                    .header("access-control-allow-origin")
                    .map(String::from),
                answer.vary().join(","),
                answer
                    .header("access-control-allow-methods")
                    .map(String::from),
            ));
        }
        assert_eq!(
            answers[0], answers[1],
            "{method} host {host:?} origin {origin:?}"
        );
    }
    assert_eq!(
        send(&foreman.url, Method::GET, "/api/tags", None, None)
            .await
            .status,
        200,
        "the plain case is served"
    );
    foreman.stop().await;
}
