//! Ollama's Host and Origin guard, as the simulator answers it.
//!
//! Ollama puts two middlewares in front of every route (`server/routes.go`,
//! `GenerateRoutes`): gin-contrib/cors (v1.7.2) configured with `OLLAMA_ORIGINS`, then
//! `allowedHostsMiddleware`, which checks `Host` only when the listener is bound to
//! loopback. Together they keep web pages (cross-origin `fetch`, DNS rebinding) away
//! from a local server. Refusals are `403` with an empty body; preflights `204`.
//!
//! Written apart from foreman's guard on purpose: the simulator is the oracle the
//! tests hold foreman against, so it must not share foreman's code.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderName, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

/// `envconfig.AllowedOrigins` without `OLLAMA_ORIGINS`.
const DEFAULT_ORIGINS: [&str; 17] = [
    "http://localhost",
    "https://localhost",
    "http://localhost:*",
    "https://localhost:*",
    "http://127.0.0.1",
    "https://127.0.0.1",
    "http://127.0.0.1:*",
    "https://127.0.0.1:*",
    "http://0.0.0.0",
    "https://0.0.0.0",
    "http://0.0.0.0:*",
    "https://0.0.0.0:*",
    "app://*",
    "file://*",
    "tauri://*",
    "vscode-webview://*",
    "vscode-file://*",
];

/// The `AllowHeaders` of `GenerateRoutes`, as gin-contrib/cors writes them
/// (lower-cased, then `http.CanonicalHeaderKey`, joined by commas).
const PREFLIGHT_ALLOW_HEADERS: &str = "Authorization,Content-Type,User-Agent,Accept,\
X-Requested-With,Openai-Beta,X-Stainless-Arch,X-Stainless-Async,\
X-Stainless-Custom-Poll-Interval,X-Stainless-Helper-Method,X-Stainless-Lang,X-Stainless-Os,\
X-Stainless-Package-Version,X-Stainless-Poll-Helper,X-Stainless-Retry-Count,\
X-Stainless-Runtime,X-Stainless-Runtime-Version,X-Stainless-Timeout";

/// Checks `OLLAMA_ORIGINS` entries as `cors.Config.Validate` and `parseWildcardRules`
/// do (Ollama panics at start on a bad one): one `*` at most, and without it a scheme
/// of http, https or a browser extension.
pub fn check_origins(origins: &[String]) -> Result<(), String> {
    const SCHEMES: [&str; 6] = [
        "http://",
        "https://",
        "chrome-extension://",
        "safari-extension://",
        "moz-extension://",
        "ms-browser-extension://",
    ];
    for origin in origins {
        match origin.matches('*').count() {
            0 if !SCHEMES.iter().any(|scheme| origin.starts_with(scheme)) => {
                return Err(format!(
                    "bad origin {origin:?}: origins must contain '*' or include {}",
                    SCHEMES.join(",")
                ));
            }
            0 | 1 => {}
            _ => return Err(format!("bad origin {origin:?}: only one * is allowed")),
        }
    }
    Ok(())
}

/// Splits `OLLAMA_ORIGINS` as `envconfig` does (blanks and quotes around the whole
/// value dropped), trimming entries and skipping empty ones.
pub fn split_origins(text: &str) -> Vec<String> {
    text.trim()
        .trim_matches(['"', '\''])
        .split(',')
        .map(str::trim)
        .filter(|origin| !origin.is_empty())
        .map(String::from)
        .collect()
}

/// What the two middlewares make of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// 403, empty body; a Host refused after an allowed Origin keeps the CORS headers
    /// gin had already set (`Some`).
    Refuse(Option<String>),
    /// A cross-origin preflight: 204 with the preflight headers for this
    /// `Access-Control-Allow-Origin` value.
    Preflight(String),
    /// `OPTIONS` to an allowed host name: 204 with no headers.
    NoContent,
    /// On to the route; `Some` adds `Access-Control-Allow-Origin` (and `Vary: Origin`
    /// unless it is `*`).
    Pass(Option<String>),
}

/// The allowed origins and whether `Host` is checked.
#[derive(Debug)]
pub struct Policy {
    loopback_listener: bool,
    allow_all: bool,
    origins: Vec<String>,
}

impl Policy {
    /// For a listener on `bound`, with the `OLLAMA_ORIGINS` entries `extra`.
    pub fn new(bound: SocketAddr, extra: &[String]) -> Policy {
        let origins: Vec<String> = extra
            .iter()
            .cloned()
            .chain(DEFAULT_ORIGINS.iter().map(|o| o.to_string()))
            .collect();
        Policy {
            loopback_listener: bound.ip().to_canonical().is_loopback(),
            allow_all: origins.iter().any(|o| o == "*"),
            origins,
        }
    }

    fn origin_allowed(&self, origin: &str) -> bool {
        self.allow_all
            || self.origins.iter().any(|allowed| match allowed.find('*') {
                None => allowed.to_lowercase() == origin,
                Some(star) => {
                    origin.starts_with(&allowed[..star]) && origin.ends_with(&allowed[star + 1..])
                }
            })
    }

    /// The cors middleware, then `allowedHostsMiddleware`.
    pub fn judge(&self, method: &Method, host: &str, origin: &str) -> Verdict {
        let mut allow_origin = None;
        let same_origin = origin == format!("http://{host}") || origin == format!("https://{host}");
        if !origin.is_empty() && !same_origin {
            if !self.origin_allowed(origin) {
                return Verdict::Refuse(None);
            }
            let value = if self.allow_all { "*" } else { origin };
            if method == Method::OPTIONS {
                return Verdict::Preflight(value.to_string());
            }
            allow_origin = Some(value.to_string());
        }
        if !self.loopback_listener {
            return Verdict::Pass(allow_origin);
        }
        let name = go_split_host(host).unwrap_or(host);
        if go_parse_ip(name).is_some_and(is_local_address) {
            return Verdict::Pass(allow_origin);
        }
        if !allowed_host_name(name) {
            return Verdict::Refuse(allow_origin);
        }
        if method == Method::OPTIONS {
            Verdict::NoContent
        } else {
            Verdict::Pass(allow_origin)
        }
    }
}

/// Go's `net.SplitHostPort`, host only; `None` where Go returns an error.
fn go_split_host(hostport: &str) -> Option<&str> {
    match hostport.strip_prefix('[') {
        Some(bracketed) => {
            let close = bracketed.find(']')?;
            bracketed[close + 1..]
                .starts_with(':')
                .then(|| &bracketed[..close])
        }
        None => {
            let colon = hostport.rfind(':')?;
            let host = &hostport[..colon];
            (!host.contains([':', '[', ']'])).then_some(host)
        }
    }
}

/// Go's `netip.ParseAddr` (an IPv6 zone is accepted and ignored).
fn go_parse_ip(text: &str) -> Option<IpAddr> {
    let address = match text.split_once('%') {
        Some((address, zone)) if address.contains(':') && !zone.is_empty() => address,
        Some(_) => return None,
        None => text,
    };
    address.parse().ok()
}

/// Loopback, private, unspecified, or an address of this machine (`isLocalIP`: a
/// socket binds only to a local address).
fn is_local_address(ip: IpAddr) -> bool {
    let ip = ip.to_canonical();
    let (private, multicast) = match ip {
        IpAddr::V4(v4) => (v4.is_private(), v4.is_multicast() || v4.is_broadcast()),
        IpAddr::V6(v6) => ((v6.segments()[0] >> 9) == 0x7e, v6.is_multicast()),
    };
    ip.is_loopback()
        || private
        || ip.is_unspecified()
        || (!multicast && std::net::UdpSocket::bind((ip, 0)).is_ok())
}

/// `allowedHost`: empty, `localhost`, the machine's name, or a `.localhost`,
/// `.local` or `.internal` name.
fn allowed_host_name(host: &str) -> bool {
    let host = host.to_lowercase();
    if host.is_empty() || host == "localhost" {
        return true;
    }
    let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let hostname = hostname.trim().to_lowercase();
    if !hostname.is_empty() && host == hostname {
        return true;
    }
    ["localhost", "local", "internal"]
        .iter()
        .any(|tld| host.ends_with(&format!(".{tld}")))
}

/// The middleware over [`Policy::judge`].
pub async fn guard(State(policy): State<Arc<Policy>>, request: Request, next: Next) -> Response {
    let host = match request.uri().authority() {
        Some(authority) => authority.to_string(),
        None => header_text(&request, header::HOST),
    };
    let origin = header_text(&request, header::ORIGIN);
    match policy.judge(request.method(), &host, &origin) {
        Verdict::Refuse(allow_origin) => {
            let mut response = StatusCode::FORBIDDEN.into_response();
            add_cors(&mut response, allow_origin);
            response
        }
        Verdict::NoContent => StatusCode::NO_CONTENT.into_response(),
        Verdict::Preflight(allow_origin) => {
            let mut response = StatusCode::NO_CONTENT.into_response();
            let headers = response.headers_mut();
            let fixed = [
                (
                    header::ACCESS_CONTROL_ALLOW_HEADERS,
                    PREFLIGHT_ALLOW_HEADERS,
                ),
                (
                    header::ACCESS_CONTROL_ALLOW_METHODS,
                    "GET,POST,PUT,PATCH,DELETE,HEAD,OPTIONS",
                ),
                (header::ACCESS_CONTROL_MAX_AGE, "43200"),
            ];
            for (name, value) in fixed {
                headers.insert(name, HeaderValue::from_static(value));
            }
            if allow_origin != "*" {
                for vary in [
                    "Origin",
                    "Access-Control-Request-Method",
                    "Access-Control-Request-Headers",
                ] {
                    headers.append(header::VARY, HeaderValue::from_static(vary));
                }
            }
            insert_text(headers, header::ACCESS_CONTROL_ALLOW_ORIGIN, &allow_origin);
            response
        }
        Verdict::Pass(allow_origin) => {
            let mut response = next.run(request).await;
            add_cors(&mut response, allow_origin);
            response
        }
    }
}

/// The headers gin-contrib/cors sets on an allowed cross-origin request.
fn add_cors(response: &mut Response, allow_origin: Option<String>) {
    if let Some(allow_origin) = allow_origin {
        let headers = response.headers_mut();
        if allow_origin != "*" {
            headers.insert(header::VARY, HeaderValue::from_static("Origin"));
        }
        insert_text(headers, header::ACCESS_CONTROL_ALLOW_ORIGIN, &allow_origin);
    }
}

fn header_text(request: &Request, name: HeaderName) -> String {
    request
        .headers()
        .get(name)
        .map(|value| String::from_utf8_lossy(value.as_bytes()).into_owned())
        .unwrap_or_default()
}

/// Wraps `router` in the guard for a listener on `bound`.
pub fn install(router: axum::Router, bound: SocketAddr, origins: &[String]) -> axum::Router {
    let policy = Arc::new(Policy::new(bound, origins));
    router.layer(axum::middleware::from_fn_with_state(policy, guard))
}

fn insert_text(headers: &mut axum::http::HeaderMap, name: HeaderName, value: &str) {
    if let Ok(value) = HeaderValue::from_str(value) {
        headers.insert(name, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(bound: &str, extra: &[&str]) -> Policy {
        let extra: Vec<String> = extra.iter().map(|o| o.to_string()).collect();
        Policy::new(bound.parse().unwrap(), &extra)
    }

    /// Ollama fb30760, envconfig/config.go:86-109 (AllowedOrigins) and
    /// gin-contrib/cors v1.7.2 config.go:101-145 (exact and wildcard matching).
    #[test]
    fn default_and_extra_origins() {
        let guard = policy("127.0.0.1:11434", &["https://*.corp.example"]);
        let get = Method::GET;
        for origin in [
            "http://localhost:3000",
            "https://127.0.0.1",
            "http://0.0.0.0:8080",
            "tauri://localhost",
            "vscode-webview://x",
            "https://wiki.corp.example",
        ] {
            assert_eq!(
                guard.judge(&get, "127.0.0.1:11434", origin),
                Verdict::Pass(Some(origin.into())),
                "{origin}"
            );
        }
        for origin in ["http://evil.example", "chrome-extension://x", "null"] {
            assert_eq!(
                guard.judge(&get, "127.0.0.1:11434", origin),
                Verdict::Refuse(None)
            );
        }
        let any = policy("127.0.0.1:11434", &["*"]);
        assert_eq!(
            any.judge(&get, "127.0.0.1:11434", "http://evil.example"),
            Verdict::Pass(Some("*".into()))
        );
    }

    /// cors v1.7.2 config.go:78-81 (own origin is no CORS), 88-91 (preflight ends in
    /// 204 before the Host check); routes.go:1827-1832 (OPTIONS to an allowed name).
    #[test]
    fn preflights_and_own_origin() {
        let guard = policy("127.0.0.1:11434", &[]);
        let options = Method::OPTIONS;
        assert_eq!(
            guard.judge(&options, "evil.example", "http://localhost:3000"),
            Verdict::Preflight("http://localhost:3000".into())
        );
        assert_eq!(
            guard.judge(&options, "localhost:11434", ""),
            Verdict::NoContent
        );
        assert_eq!(
            guard.judge(&options, "127.0.0.1:11434", ""),
            Verdict::Pass(None)
        );
        assert_eq!(
            guard.judge(
                &Method::POST,
                "evil.example:11434",
                "http://evil.example:11434"
            ),
            Verdict::Refuse(None),
            "a rebound page is its own origin, and its Host is foreign"
        );
        // config.go:93-97 set the CORS headers before routes.go:1837 refuses the Host.
        assert_eq!(
            guard.judge(&Method::GET, "evil.example", "http://localhost:3000"),
            Verdict::Refuse(Some("http://localhost:3000".into()))
        );
    }

    /// routes.go:1776-1801 (allowedHost), 1810 (only on loopback), 1815-1824 (IPs).
    #[test]
    fn hosts() {
        let guard = policy("127.0.0.1:11434", &[]);
        let get = Method::GET;
        for host in [
            "127.0.0.1:11434",
            "[::1]:11434",
            "10.0.0.2",
            "0.0.0.0:1",
            "localhost:11434",
            "a.localhost",
            "nas.local",
            "host.docker.internal",
            "",
        ] {
            assert_eq!(guard.judge(&get, host, ""), Verdict::Pass(None), "{host}");
        }
        for host in ["evil.example", "evil.example:11434", "8.8.8.8", "[::1]"] {
            assert_eq!(guard.judge(&get, host, ""), Verdict::Refuse(None), "{host}");
        }
        let open = policy("0.0.0.0:11434", &[]);
        assert_eq!(open.judge(&get, "evil.example", ""), Verdict::Pass(None));
    }

    /// cors v1.7.2 cors.go:117-140 (Validate) and 156 (one `*`); envconfig Var
    /// (config.go:375-377) trims blanks and quotes.
    #[test]
    fn origins_setting() {
        assert_eq!(
            split_origins("\"https://a.example, app://*,\""),
            ["https://a.example", "app://*"]
        );
        assert!(check_origins(&split_origins("https://a.example,app://*")).is_ok());
        assert!(check_origins(&["a.example".into()]).is_err());
        assert!(check_origins(&["http://*.*.example".into()]).is_err());
    }
}
