//! A real browser against the Host and Origin guard: headless Chromium opens a page
//! served from another origin whose script calls foreman's `/api/chat`, as a web page
//! a user visits could. With Ollama's default origins the calls must not reach foreman
//! (no job row, nothing at the simulator); with `FOREMAN_ORIGINS` set to the page's
//! origin, the same page must get its answers (the control that shows the browser
//! really sends them).
//!
//! Chromium is Debian's, installed by `scripts/setup-browser.sh` (`scripts/test` runs
//! it); its absence fails this test rather than skipping it.

use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::response::Html;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::common::*;

/// The page's host name, mapped to 127.0.0.1 inside Chromium only: another origin
/// than foreman's, and not one of Ollama's default origins.
const PAGE_HOST: &str = "page.test";
/// Another name Chromium maps to 127.0.0.1, as DNS rebinding would: a request to
/// foreman under it carries a foreign `Host`.
const REBOUND_HOST: &str = "rebound.test";

/// The script tries three calls and writes what it saw into `#result`, which
/// `--dump-dom` prints: a "simple" POST (text/plain: the browser sends it without
/// asking first), a JSON POST (preflighted), and a simple POST under the rebound name.
const PAGE: &str = r#"<!doctype html>
<html><body><pre id="result">pending</pre><script>
async function attempt(url, contentType) {
  const body = JSON.stringify({model: "MODEL", messages: [{role: "user", content: "from a web page"}], stream: false});
  try {
    const response = await fetch(url, {method: "POST", body, headers: {"Content-Type": contentType}});
    const text = await response.text();
    return {reached: true, status: response.status, done: text.includes('"done":true')};
  } catch (error) {
    return {reached: false, error: String(error)};
  }
}
(async () => {
  const result = {
    simple: await attempt("FOREMAN/api/chat", "text/plain"),
    preflighted: await attempt("FOREMAN/api/chat", "application/json"),
    rebound: await attempt("REBOUND/api/chat", "text/plain"),
  };
  document.getElementById("result").textContent = JSON.stringify(result);
})();
</script></body></html>
"#;

#[tokio::test]
async fn a_page_from_another_origin_cannot_call_foreman() {
    let page = PageServer::start().await;

    // Ollama's defaults: the page's origin is not allowed.
    let refused = ForemanProcess::start(None).await;
    page.point_at(&refused);
    let seen = chromium(&page.url()).await;
    for call in ["simple", "preflighted", "rebound"] {
        assert_eq!(
            seen[call]["reached"], false,
            "{call}: the page could not read an answer: {seen}"
        );
    }
    refused.assert_untouched().await;
    refused.stop().await;

    // The control: the same page, its origin allowed by FOREMAN_ORIGINS.
    let allowed = ForemanProcess::start(Some(&page.origin())).await;
    page.point_at(&allowed);
    let seen = chromium(&page.url()).await;
    for call in ["simple", "preflighted"] {
        assert_eq!(seen[call]["status"], 200, "{call}: {seen}");
        assert_eq!(seen[call]["done"], true, "{call}: {seen}");
    }
    // The rebound name is refused by the Host check; the allowed origin still gets its
    // CORS headers, so the page reads the 403.
    assert_eq!(seen["rebound"]["status"], 403, "{seen}");
    let jobs = allowed.jobs().await;
    assert_eq!(
        jobs.len(),
        2,
        "the two calls from the page, not the rebound one"
    );
    assert_eq!(allowed.sim.stats().requests_total, 2);
    allowed.stop().await;
}

/// The page's own server, on another port of 127.0.0.1, reached as `page.test`.
struct PageServer {
    port: u16,
    html: Arc<Mutex<String>>,
    task: tokio::task::JoinHandle<()>,
}

impl PageServer {
    async fn start() -> PageServer {
        let html = Arc::new(Mutex::new(String::new()));
        let app = axum::Router::new()
            .route(
                "/",
                axum::routing::get(|State(html): State<Arc<Mutex<String>>>| async move {
                    Html(html.lock().unwrap().clone())
                }),
            )
            .with_state(html.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        PageServer { port, html, task }
    }

    fn origin(&self) -> String {
        format!("http://{PAGE_HOST}:{}", self.port)
    }

    fn url(&self) -> String {
        format!("{}/", self.origin())
    }

    /// Makes the page call this foreman.
    fn point_at(&self, foreman: &ForemanProcess) {
        *self.html.lock().unwrap() = PAGE
            .replace("FOREMAN", &format!("http://127.0.0.1:{}", foreman.port))
            .replace(
                "REBOUND",
                &format!("http://{REBOUND_HOST}:{}", foreman.port),
            )
            .replace("MODEL", CHAT);
    }
}

impl Drop for PageServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The `foreman` binary, as a user runs it, in front of an in-process simulator.
struct ForemanProcess {
    child: Child,
    port: u16,
    sim: ollama_sim::SimHandle,
    dir: tempfile::TempDir,
}

impl ForemanProcess {
    async fn start(origins: Option<&str>) -> ForemanProcess {
        let sim = ollama_sim::spawn("127.0.0.1:0".parse().unwrap(), fast_sim())
            .await
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let mut command = Command::new(env!("CARGO_BIN_EXE_foreman"));
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("FOREMAN_") {
                command.env_remove(name);
            }
        }
        command
            .arg("serve")
            .env("FOREMAN_ADDR", "127.0.0.1:0")
            .env("FOREMAN_OLLAMA_URL", sim.url())
            .env("FOREMAN_DATABASE", dir.path().join("foreman.db"))
            .env("FOREMAN_DATA_DIR", dir.path().join("data"))
            .env("FOREMAN_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true);
        if let Some(origins) = origins {
            command.env("FOREMAN_ORIGINS", origins);
        }
        let mut child = command.spawn().expect("the foreman binary starts");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let banner = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
            .await
            .expect("foreman prints its address")
            .unwrap()
            .expect("a banner line");
        let address = banner
            .split_whitespace()
            .find_map(|word| word.strip_prefix("http://"))
            .expect("the banner names the address");
        let port = address.rsplit(':').next().unwrap().parse().unwrap();
        let url = format!("http://127.0.0.1:{port}");
        eventually("foreman to be ready", async || {
            client()
                .get(format!("{url}/healthz"))
                .send()
                .await
                .is_ok_and(|r| r.status() == 200)
        })
        .await;
        ForemanProcess {
            child,
            port,
            sim,
            dir,
        }
    }

    async fn jobs(&self) -> Vec<foreman_store::Job> {
        let path = self.dir.path().join("foreman.db");
        let store = foreman_store::Store::open(path.to_str().unwrap())
            .await
            .unwrap();
        let jobs = store
            .list(foreman_store::ListParams {
                limit: 1000,
                ..Default::default()
            })
            .await
            .unwrap();
        store.close().await;
        jobs
    }

    async fn assert_untouched(&self) {
        assert!(self.jobs().await.is_empty(), "no job row");
        assert_eq!(
            self.sim.stats().requests_total,
            0,
            "nothing reached the simulator"
        );
    }

    async fn stop(mut self) {
        self.child.start_kill().unwrap();
        self.child.wait().await.unwrap();
        self.sim.shutdown().await;
    }
}

/// Opens `url` in a fresh headless Chromium and returns what the page wrote into
/// `#result`.
async fn chromium(url: &str) -> Value {
    let profile = tempfile::tempdir().unwrap();
    let child = Command::new(chromium_binary())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            "--no-proxy-server",
            // Virtual time waits for pending fetches, so the DOM is dumped once the
            // script has written its result.
            "--virtual-time-budget=15000",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(format!(
            "--host-resolver-rules=MAP {PAGE_HOST} 127.0.0.1, MAP {REBOUND_HOST} 127.0.0.1"
        ))
        .arg("--dump-dom")
        .arg(url)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("chromium starts");
    let output = tokio::time::timeout(Duration::from_secs(90), child.wait_with_output())
        .await
        .expect("chromium finishes within 90 s")
        .unwrap();
    let dom = String::from_utf8_lossy(&output.stdout);
    let result = dom
        .split_once(r#"<pre id="result">"#)
        .and_then(|(_, rest)| rest.split_once("</pre>"))
        .map(|(text, _)| text.replace("&amp;", "&"))
        .unwrap_or_else(|| {
            panic!(
                "no #result in the DOM ({}):\n{dom}\n{}",
                output.status,
                String::from_utf8_lossy(&output.stderr)
            )
        });
    serde_json::from_str(&result)
        .unwrap_or_else(|e| panic!("the page did not finish ({e}): {result:?}"))
}

/// Debian's `chromium`; missing means `scripts/setup-browser.sh` has not run.
fn chromium_binary() -> &'static str {
    let found = std::env::var_os("PATH").is_some_and(|path| {
        std::env::split_paths(&path).any(|dir| Path::new(&dir).join("chromium").is_file())
    });
    assert!(
        found,
        "chromium is not installed: run scripts/setup-browser.sh (scripts/test does)"
    );
    "chromium"
}
