//! The Host and Origin guard: Ollama's defence against web pages, rebuilt for foreman.
//!
//! A tokenless foreman on 127.0.0.1 would otherwise take orders from any page the
//! user's browser opens: a cross-origin `fetch` (a "simple" POST needs no preflight)
//! or a DNS-rebinding page whose name now points at 127.0.0.1. Ollama stops both with
//! two middlewares in front of every route (`server/routes.go`, `GenerateRoutes`), and
//! this one layer does what they do, in their order, before auth and before any job
//! exists:
//!
//! 1. CORS (gin-contrib/cors v1.7.2 with Ollama's config): a request whose `Origin` is
//!    neither its own (`http(s)://` + its `Host`) nor allowed gets `403` with an empty
//!    body; an allowed origin's preflight (`OPTIONS`) gets `204` with the
//!    `Access-Control-Allow-*` headers; other allowed requests get
//!    `Access-Control-Allow-Origin` and `Vary: Origin`.
//! 2. Host (`allowedHostsMiddleware`), only when foreman is bound to a loopback
//!    address: a `Host` that is not a loopback, private, unspecified or local IP, not
//!    `localhost`, the machine's host name, nor under `.localhost`, `.local` or
//!    `.internal` gets `403` with an empty body; `OPTIONS` to an allowed name gets
//!    `204`.
//!
//! Allowed origins are Ollama's defaults plus `FOREMAN_ORIGINS` (as `OLLAMA_ORIGINS`).
//! foreman adds its own request headers (`X-Foreman-Priority`, `Idempotency-Key`) to
//! the allowed ones and exposes `X-Foreman-Job-Id`, so an allowed page can use them.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

/// Ollama's origins when `OLLAMA_ORIGINS` adds none (`envconfig.AllowedOrigins`):
/// localhost, 127.0.0.1 and 0.0.0.0 over http and https with any port or none, and
/// the schemes of desktop apps and editors.
pub const DEFAULT_ORIGINS: &[&str] = &[
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

/// Schemes an origin without `*` must start with: gin-contrib/cors's defaults plus
/// browser extensions, which Ollama enables (`AllowBrowserExtensions`).
const ORIGIN_SCHEMES: &[&str] = &[
    "http://",
    "https://",
    "chrome-extension://",
    "safari-extension://",
    "moz-extension://",
    "ms-browser-extension://",
];

/// `Access-Control-Allow-Headers` of a preflight: Ollama's list (with gin's
/// canonical spelling), then foreman's own request headers.
const ALLOW_HEADERS: &str = "Authorization,Content-Type,User-Agent,Accept,X-Requested-With,\
Openai-Beta,X-Stainless-Arch,X-Stainless-Async,X-Stainless-Custom-Poll-Interval,\
X-Stainless-Helper-Method,X-Stainless-Lang,X-Stainless-Os,X-Stainless-Package-Version,\
X-Stainless-Poll-Helper,X-Stainless-Retry-Count,X-Stainless-Runtime,\
X-Stainless-Runtime-Version,X-Stainless-Timeout,X-Foreman-Priority,Idempotency-Key";

/// gin-contrib/cors's default methods, which Ollama keeps.
const ALLOW_METHODS: &str = "GET,POST,PUT,PATCH,DELETE,HEAD,OPTIONS";

/// gin-contrib/cors's default preflight lifetime (12 h), which Ollama keeps.
const MAX_AGE_SECONDS: &str = "43200";

/// Response headers a page may read: foreman's addition (Ollama exposes none).
const EXPOSE_HEADERS: &str = "X-Foreman-Job-Id";

/// Reads `FOREMAN_ORIGINS` the way Ollama reads `OLLAMA_ORIGINS`: surrounding blanks
/// and quotes go, entries are comma-separated and trimmed (empty ones are skipped).
/// An entry needs a scheme (`http://`, `https://`, or a browser extension's) unless it
/// has a `*`, and may have only one `*`; Ollama refuses to start otherwise.
pub fn parse_origins(text: &str) -> Result<Vec<String>, String> {
    let text = text.trim().trim_matches(['"', '\'']);
    let mut origins = Vec::new();
    for origin in text.split(',').map(str::trim).filter(|o| !o.is_empty()) {
        let stars = origin.matches('*').count();
        if stars > 1 {
            return Err(format!("{origin:?} has more than one *"));
        }
        if stars == 0 && !ORIGIN_SCHEMES.iter().any(|s| origin.starts_with(s)) {
            return Err(format!(
                "{origin:?} must contain * or start with one of {}",
                ORIGIN_SCHEMES.join(", ")
            ));
        }
        origins.push(origin.to_string());
    }
    Ok(origins)
}

/// The compiled guard one router holds.
#[derive(Debug)]
pub struct Guard {
    /// Bound to a loopback address: only then is the `Host` checked.
    check_host: bool,
    /// The machine's host name, read once at start (a name allowed as `Host`).
    hostname: Option<String>,
    /// `*` was listed: every origin passes and gets `Access-Control-Allow-Origin: *`.
    any_origin: bool,
    /// Origins without `*`, lower-cased; the request's `Origin` must equal one.
    exact: Vec<String>,
    /// Origins with one `*`, as (before, after): the `Origin` must start and end so.
    wildcards: Vec<(String, String)>,
}

impl Guard {
    /// The guard for a listener bound to `bound`, allowing Ollama's default origins and
    /// `extra` (already checked by [`parse_origins`]).
    pub fn new(bound: SocketAddr, extra: &[String]) -> Guard {
        let mut guard = Guard {
            check_host: bound.ip().to_canonical().is_loopback(),
            hostname: machine_hostname(),
            any_origin: false,
            exact: Vec::new(),
            wildcards: Vec::new(),
        };
        let all = extra
            .iter()
            .map(String::as_str)
            .chain(DEFAULT_ORIGINS.iter().copied());
        for origin in all {
            if origin == "*" {
                guard.any_origin = true;
            }
            match origin.split_once('*') {
                Some((before, after)) => guard.wildcards.push((before.into(), after.into())),
                None => guard.exact.push(origin.to_lowercase()),
            }
        }
        guard
    }

    /// Whether a cross-origin request from `origin` may proceed.
    pub fn allows_origin(&self, origin: &str) -> bool {
        self.any_origin
            || self.exact.iter().any(|allowed| allowed == origin)
            || self
                .wildcards
                .iter()
                .any(|(before, after)| origin.starts_with(before) && origin.ends_with(after))
    }
}

/// The middleware: installed outermost, so nothing (auth, 404, a job) happens for a
/// refused request.
pub async fn guard(State(guard): State<Arc<Guard>>, request: Request, next: Next) -> Response {
    let host = request_host(&request);
    let origin = request
        .headers()
        .get(header::ORIGIN)
        .map(|value| String::from_utf8_lossy(value.as_bytes()).into_owned())
        .unwrap_or_default();
    let is_options = request.method() == Method::OPTIONS;

    // Step 1, CORS. An empty Origin, or the request's own, is not a CORS request.
    let mut cors_headers = HeaderMap::new();
    let cross_origin = !origin.is_empty()
        && origin != format!("http://{host}")
        && origin != format!("https://{host}");
    if cross_origin {
        if !guard.allows_origin(&origin) {
            tracing::info!(%origin, %host, "refused a request from a disallowed origin");
            return StatusCode::FORBIDDEN.into_response();
        }
        let allow_origin = if guard.any_origin { "*" } else { &origin };
        if let Ok(value) = HeaderValue::from_str(allow_origin) {
            cors_headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, value);
        }
        if is_options {
            // A preflight ends here, whatever the Host: the request it clears is checked.
            let headers = &mut cors_headers;
            let set = |headers: &mut HeaderMap, name, value| {
                headers.append(name, HeaderValue::from_static(value));
            };
            set(headers, header::ACCESS_CONTROL_ALLOW_HEADERS, ALLOW_HEADERS);
            set(headers, header::ACCESS_CONTROL_ALLOW_METHODS, ALLOW_METHODS);
            set(headers, header::ACCESS_CONTROL_MAX_AGE, MAX_AGE_SECONDS);
            if !guard.any_origin {
                set(headers, header::VARY, "Origin");
                set(headers, header::VARY, "Access-Control-Request-Method");
                set(headers, header::VARY, "Access-Control-Request-Headers");
            }
            let mut response = StatusCode::NO_CONTENT.into_response();
            response.headers_mut().extend(cors_headers);
            return response;
        }
        if !guard.any_origin {
            cors_headers.insert(header::VARY, HeaderValue::from_static("Origin"));
        }
        cors_headers.insert(
            header::ACCESS_CONTROL_EXPOSE_HEADERS,
            HeaderValue::from_static(EXPOSE_HEADERS),
        );
    }

    // Step 2, Host, only on loopback: elsewhere foreman is meant to be reached by name.
    let mut response = if !guard.check_host {
        next.run(request).await
    } else {
        match classify_host(&host, guard.hostname.as_deref()) {
            HostVerdict::LocalAddress => next.run(request).await,
            HostVerdict::LocalName if is_options => StatusCode::NO_CONTENT.into_response(),
            HostVerdict::LocalName => next.run(request).await,
            HostVerdict::Foreign => {
                tracing::info!(%host, "refused a request for a foreign Host");
                StatusCode::FORBIDDEN.into_response()
            }
        }
    };
    // Set before the handler in gin, so they also ride on a Host refusal.
    for (name, value) in &cors_headers {
        response.headers_mut().insert(name, value.clone());
    }
    response
}

/// Go's `Request.Host`: the authority of an absolute request target, else the `Host`
/// header (empty when there is none).
fn request_host(request: &Request) -> String {
    if let Some(authority) = request.uri().authority() {
        return authority.as_str().to_string();
    }
    request
        .headers()
        .get(header::HOST)
        .map(|value| String::from_utf8_lossy(value.as_bytes()).into_owned())
        .unwrap_or_default()
}

#[derive(Debug, PartialEq, Eq)]
enum HostVerdict {
    /// A loopback, private, unspecified or local interface IP: passes untouched.
    LocalAddress,
    /// `localhost`, the host name, `.localhost`, `.local`, `.internal`: passes, and
    /// `OPTIONS` gets 204.
    LocalName,
    Foreign,
}

/// How `host` (a `Host` value) counts; `hostname` is the machine's own name.
fn classify_host(host: &str, hostname: Option<&str>) -> HostVerdict {
    let host = split_host_port(host).unwrap_or(host);
    if let Some(ip) = parse_ip(host) {
        let ip = ip.to_canonical();
        let private = match ip {
            IpAddr::V4(v4) => v4.is_private(),
            IpAddr::V6(v6) => (v6.segments()[0] & 0xfe00) == 0xfc00,
        };
        if ip.is_loopback() || private || ip.is_unspecified() || is_local_ip(ip) {
            return HostVerdict::LocalAddress;
        }
    }
    let host = host.to_lowercase();
    let local_name = host.is_empty()
        || host == "localhost"
        || hostname == Some(host.as_str())
        || [".localhost", ".local", ".internal"]
            .iter()
            .any(|tld| host.ends_with(tld));
    if local_name {
        HostVerdict::LocalName
    } else {
        HostVerdict::Foreign
    }
}

/// Go's `net.SplitHostPort`, host half: `None` where Go fails (no port, too many
/// colons), in which case Ollama checks the whole value.
fn split_host_port(hostport: &str) -> Option<&str> {
    if let Some(rest) = hostport.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        return after.starts_with(':').then_some(host);
    }
    let (host, _port) = hostport.rsplit_once(':')?;
    (!host.contains(':') && !host.contains('[') && !host.contains(']')).then_some(host)
}

/// Go's `netip.ParseAddr`: IPv4, or IPv6 with an optional `%zone`.
fn parse_ip(text: &str) -> Option<IpAddr> {
    if let Ok(ip) = text.parse() {
        return Some(ip);
    }
    let (address, zone) = text.split_once('%')?;
    (address.contains(':') && !zone.is_empty())
        .then(|| address.parse().ok())
        .flatten()
}

/// Whether `ip` belongs to one of this machine's interfaces (Ollama's `isLocalIP`).
/// Binding a socket to an address succeeds only for a local one; this runs only for a
/// public IP in `Host` while bound to loopback, which normal clients never send.
fn is_local_ip(ip: IpAddr) -> bool {
    let special = match ip {
        IpAddr::V4(v4) => v4.is_multicast() || v4.is_broadcast(),
        IpAddr::V6(v6) => v6.is_multicast(),
    };
    !special && std::net::UdpSocket::bind(SocketAddr::new(ip, 0)).is_ok()
}

/// The machine's host name, lower-cased, as Go's `os.Hostname` reads it on Linux.
fn machine_hostname() -> Option<String> {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname").ok()?;
    let name = name.trim().to_lowercase();
    (!name.is_empty()).then_some(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loopback(extra: &[&str]) -> Guard {
        let extra: Vec<String> = extra.iter().map(|o| o.to_string()).collect();
        Guard::new("127.0.0.1:11435".parse().unwrap(), &extra)
    }

    /// Ollama fb30760 envconfig/config.go:86-109 (AllowedOrigins): localhost,
    /// 127.0.0.1 and 0.0.0.0 with any port over http(s), plus app://, file://,
    /// tauri://, vscode-webview://, vscode-file://; gin-contrib/cors v1.7.2
    /// config.go:101-145 matches them exactly or by wildcard.
    #[test]
    fn the_default_origins_are_ollamas() {
        let guard = loopback(&[]);
        for origin in [
            "http://localhost",
            "https://localhost:8443",
            "http://localhost:3000",
            "http://127.0.0.1:5173",
            "https://0.0.0.0",
            "app://obsidian.md",
            "tauri://localhost",
            "vscode-webview://abc",
            "vscode-file://vscode-app",
            "file://",
        ] {
            assert!(guard.allows_origin(origin), "{origin}");
        }
        for origin in [
            "http://evil.example",
            "http://localhost.evil.example",
            "http://127.0.0.1.evil.example",
            "chrome-extension://abcdef",
            "null",
            "https://[::1]:3000",
        ] {
            assert!(!guard.allows_origin(origin), "{origin}");
        }
    }

    /// envconfig/config.go:87-89: OLLAMA_ORIGINS adds to the defaults; routes.go:1843
    /// (AllowWildcard) makes one `*` a wildcard; cors v1.7.2 config.go:46-50: a lone
    /// `*` allows every origin.
    #[test]
    fn extra_origins_and_wildcards() {
        let guard = loopback(&[
            "https://app.example",
            "https://*.corp.example",
            "chrome-extension://*",
        ]);
        assert!(guard.allows_origin("https://app.example"));
        assert!(!guard.allows_origin("https://app.example:8443"));
        assert!(guard.allows_origin("https://wiki.corp.example"));
        assert!(guard.allows_origin("chrome-extension://abcdef"));
        assert!(!guard.allows_origin("http://wiki.corp.example"));
        assert!(!guard.any_origin);
        let guard = loopback(&["*"]);
        assert!(guard.any_origin && guard.allows_origin("http://evil.example"));
    }

    /// envconfig/config.go:375-377 (Var) trims blanks and quotes; cors v1.7.2
    /// cors.go:117-140 (Validate, with routes.go:1844 AllowBrowserExtensions) refuses
    /// an origin with no `*` and no known scheme, and cors.go:156 more than one `*`.
    #[test]
    fn foreman_origins_is_read_like_ollama_origins() {
        assert_eq!(
            parse_origins(" 'https://a.example, http://b.example:8080,' "),
            Ok(vec![
                "https://a.example".into(),
                "http://b.example:8080".into()
            ])
        );
        assert_eq!(parse_origins(""), Ok(vec![]));
        assert_eq!(parse_origins("*"), Ok(vec!["*".into()]));
        assert!(
            parse_origins("a.example")
                .unwrap_err()
                .contains("must contain *")
        );
        assert!(
            parse_origins("http://*.*.example")
                .unwrap_err()
                .contains("more than one")
        );
        assert_eq!(
            parse_origins("moz-extension://x"),
            Ok(vec!["moz-extension://x".into()])
        );
    }

    /// routes.go:1815-1824 (IPs: loopback, private, unspecified, local) and
    /// 1776-1801 (allowedHost: localhost, .localhost, .local, .internal).
    #[test]
    fn hosts_ollama_allows() {
        use HostVerdict::*;
        for (host, verdict) in [
            ("127.0.0.1:11435", LocalAddress),
            ("127.0.0.1", LocalAddress),
            ("[::1]:11435", LocalAddress),
            ("::1", LocalAddress),
            ("10.1.2.3:80", LocalAddress),
            ("192.168.1.20", LocalAddress),
            ("0.0.0.0:11435", LocalAddress),
            ("[fd00::1]:1", LocalAddress),
            ("localhost:11435", LocalName),
            ("LOCALHOST", LocalName),
            ("", LocalName),
            ("app.localhost:3000", LocalName),
            ("printer.local", LocalName),
            ("host.docker.internal:11435", LocalName),
            ("GPU-box:11435", LocalName),
            ("evil.example:11435", Foreign),
            ("evil.example", Foreign),
            ("localhost.evil.example", Foreign),
            ("8.8.8.8:11435", Foreign),
            // Go's SplitHostPort fails without a port, and "[::1]" is no IP.
            ("[::1]", Foreign),
        ] {
            assert_eq!(classify_host(host, Some("gpu-box")), verdict, "{host:?}");
        }
    }

    /// routes.go:1783-1785: the machine's own host name (os.Hostname) passes.
    #[test]
    fn the_machine_hostname_is_allowed() {
        let guard = loopback(&[]);
        let name = guard.hostname.as_deref().expect("Linux names the machine");
        assert_eq!(
            classify_host(&format!("{name}:11435"), Some(name)),
            HostVerdict::LocalName
        );
        assert_eq!(
            classify_host(&format!("{name}.example:11435"), Some(name)),
            HostVerdict::Foreign
        );
    }

    /// routes.go:1810: the Host check is skipped unless the listener is loopback.
    #[test]
    fn host_checks_only_on_loopback() {
        assert!(loopback(&[]).check_host);
        assert!(Guard::new("[::1]:1".parse().unwrap(), &[]).check_host);
        assert!(!Guard::new("0.0.0.0:1".parse().unwrap(), &[]).check_host);
        assert!(!Guard::new("[::]:1".parse().unwrap(), &[]).check_host);
        assert!(!Guard::new("192.168.1.5:1".parse().unwrap(), &[]).check_host);
    }
}
