//! Webhooks that receivers can trust: the dispatcher that sends the store's outbox,
//! Standard Webhooks signatures, and the address policy that keeps webhook URLs
//! from reaching internal services.
//!
//! - **Durable:** the store writes a delivery in the same transaction that finishes
//!   the job, so a restart never drops one; the dispatcher sends whatever is due.
//! - **Signed:** every attempt carries `webhook-id` (the same on every attempt, the
//!   receiver's dedupe key), `webhook-timestamp` and `webhook-signature` =
//!   `v1,` + base64 HMAC-SHA256 of `id.timestamp.body` under `FOREMAN_WEBHOOK_SECRET`.
//! - **Retried:** timeouts (`FOREMAN_WEBHOOK_TIMEOUT`), refused connections and
//!   non-2xx answers are retried with exponential backoff and jitter, capped at
//!   `FOREMAN_WEBHOOK_RETRY_MAX`, until `FOREMAN_WEBHOOK_MAX_ATTEMPTS`; `410 Gone`
//!   and refused addresses stop at once. Every attempt is logged on the job, with
//!   the time the next one was scheduled for.
//! - **Concurrent:** up to 16 attempts run at once, so one receiver that
//!   is slow to answer holds up only its own deliveries.
//! - **Contained:** only http(s); every address IANA's special-purpose registries
//!   do not mark globally reachable (loopback, private, link-local, documentation,
//!   reserved, ...), multicast, and anycast service addresses are refused, also behind a
//!   DNS name and when IPv6 carries them (mapped, NAT64, 6to4, Teredo, ...), unless
//!   `FOREMAN_WEBHOOK_ALLOW_PRIVATE_NETS` lists them ([`special_purpose`]). A host name is
//!   resolved once per attempt (through a [`Resolver`], DNS unless a test injects
//!   another) and the addresses checked are the only ones connected to, so a DNS
//!   answer that changes between the check and the connection (rebinding) cannot
//!   reach an internal address. Redirects are not followed.

use std::collections::HashSet;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use foreman_store::{AttemptOutcome, Store, WebhookAttempt, WebhookDelivery};
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use thiserror::Error;
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::clock::now_ms;

pub mod special_purpose;

pub use special_purpose::InternalAddress;

const SECRET_PREFIX: &str = "whsec_";
/// How often the dispatcher looks for due deliveries without a wake-up.
const POLL: Duration = Duration::from_millis(250);
const BATCH: u32 = 32;
/// Most attempts under way at once.
const IN_FLIGHT: usize = 16;
/// How long shutdown waits for attempts under way; the rest are sent again after
/// the restart (same `webhook-id`).
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);
/// A claimed delivery's lease outlasts its attempt's timeout by this much.
const CLAIM_MARGIN: Duration = Duration::from_secs(30);

/// An IP network in CIDR form.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

impl Cidr {
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.network, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

/// Parses `10.0.0.0/8, 192.168.1.0/24, fd00::/8` (an empty list is fine).
pub fn parse_cidrs(text: &str) -> Result<Vec<Cidr>, String> {
    text.split(',')
        .map(str::trim)
        .filter(|part| !part.is_empty())
        .map(parse_cidr)
        .collect()
}

/// Parses one `192.168.1.0/24`; an address alone is a network of one.
fn parse_cidr(part: &str) -> Result<Cidr, String> {
    let (address, prefix) = part.split_once('/').unwrap_or((part, ""));
    let network: IpAddr = address
        .parse()
        .map_err(|_| format!("{part:?} is not a CIDR like 192.168.1.0/24"))?;
    let width = if network.is_ipv4() { 32 } else { 128 };
    let prefix = if prefix.is_empty() {
        width
    } else {
        prefix
            .parse::<u8>()
            .ok()
            .filter(|p| *p <= width)
            .ok_or_else(|| format!("{part:?} has a bad prefix length"))?
    };
    Ok(Cidr { network, prefix })
}

/// Decodes `whsec_<base64>` into the signing key.
pub fn decode_secret(secret: &str) -> Result<Vec<u8>, String> {
    let encoded = secret.trim().strip_prefix(SECRET_PREFIX).ok_or_else(|| {
        format!("must start with {SECRET_PREFIX} followed by base64 (e.g. {SECRET_PREFIX}$(head -c32 /dev/urandom | base64))")
    })?;
    let key = STANDARD
        .decode(encoded)
        .map_err(|e| format!("the part after {SECRET_PREFIX} is not base64: {e}"))?;
    if !(16..=64).contains(&key.len()) {
        return Err(format!("the key must be 16 to 64 bytes, got {}", key.len()));
    }
    Ok(key)
}

/// The `webhook-signature` value for one attempt.
pub fn sign(key: &[u8], id: &str, timestamp: i64, body: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(format!("{id}.{timestamp}.{body}").as_bytes());
    format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
}

/// True for addresses a webhook may reach without the allow-list: see
/// [`special_purpose`].
pub fn is_public(ip: IpAddr) -> bool {
    special_purpose::internal(ip).is_none()
}

/// Answers a host name with its addresses.
pub trait Resolve: Send + Sync + 'static {
    fn lookup(&self, host: &str) -> Lookup;
}

/// What [`Resolve::lookup`] returns.
pub type Lookup = Pin<Box<dyn Future<Output = std::io::Result<Vec<IpAddr>>> + Send>>;

/// The system's resolver (`getaddrinfo`, so `/etc/hosts` and DNS).
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemResolver;

impl Resolve for SystemResolver {
    fn lookup(&self, host: &str) -> Lookup {
        let host = host.to_string();
        Box::pin(async move {
            Ok(tokio::net::lookup_host((host.as_str(), 0))
                .await?
                .map(|address| address.ip())
                .collect())
        })
    }
}

/// The resolver webhooks use: the system's by default; tests inject their own.
#[derive(Clone)]
pub struct Resolver(Arc<dyn Resolve>);

impl Resolver {
    pub fn new(resolve: impl Resolve) -> Resolver {
        Resolver(Arc::new(resolve))
    }

    pub async fn lookup(&self, host: &str) -> std::io::Result<Vec<IpAddr>> {
        self.0.lookup(host).await
    }
}

impl Default for Resolver {
    fn default() -> Resolver {
        Resolver::new(SystemResolver)
    }
}

impl std::fmt::Debug for Resolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Resolver")
    }
}

/// The HTTP client resolves through the same resolver for any name it was not given
/// addresses for; an attempt pins the checked addresses, so this is not consulted for
/// the webhook's own host.
impl reqwest::dns::Resolve for Resolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let resolver = self.clone();
        let host = name.as_str().to_string();
        Box::pin(async move {
            let addresses = resolver.lookup(&host).await?;
            let addresses: reqwest::dns::Addrs = Box::new(
                addresses
                    .into_iter()
                    .map(|ip| SocketAddr::new(ip, 0))
                    .collect::<Vec<_>>()
                    .into_iter(),
            );
            Ok(addresses)
        })
    }
}

/// Which webhook addresses may be used.
#[derive(Debug, Clone, Default)]
pub struct AddressPolicy {
    pub allowed_private: Vec<Cidr>,
    /// Answers host names; every answer is checked.
    pub resolver: Resolver,
}

/// Why a webhook URL may not be used.
#[derive(Debug, Error)]
pub enum UrlError {
    #[error("webhook {url:?} is not a URL: {reason}")]
    NotAUrl { url: String, reason: String },
    #[error("webhook scheme {0:?} is not allowed: use http or https")]
    Scheme(String),
    #[error("webhook URL has no host")]
    NoHost,
    #[error("webhook host {host:?} does not resolve: {source}")]
    Unresolved {
        host: String,
        source: std::io::Error,
    },
    #[error("webhook host {0:?} has no address")]
    NoAddress(String),
    #[error(
        "webhook address {address} is not allowed ({why}): internal addresses need FOREMAN_WEBHOOK_ALLOW_PRIVATE_NETS"
    )]
    Internal {
        address: IpAddr,
        why: InternalAddress,
    },
}

impl AddressPolicy {
    /// The policy the settings give (`FOREMAN_WEBHOOK_ALLOW_PRIVATE_NETS`, the resolver),
    /// the one every webhook check and send uses.
    pub fn from_config(config: &crate::config::Config) -> AddressPolicy {
        AddressPolicy {
            allowed_private: config.webhook_allow_private_nets.clone(),
            resolver: config.webhook_resolver.clone(),
        }
    }

    pub fn allows(&self, ip: IpAddr) -> bool {
        self.refusal(ip).is_none()
    }

    /// Why `ip` may not be reached, or `None` if it may: public, or in a network the
    /// allow-list names. An IPv4-mapped address is the IPv4 address to the socket,
    /// so the allow-list matches it in either form.
    pub fn refusal(&self, ip: IpAddr) -> Option<InternalAddress> {
        let canonical = ip.to_canonical();
        let listed = self
            .allowed_private
            .iter()
            .any(|net| net.contains(ip) || net.contains(canonical));
        if listed {
            return None;
        }
        special_purpose::internal(ip)
    }

    /// [`AddressPolicy::check_url`] with its error as the message for a client.
    pub async fn check(&self, url: &str) -> Result<(reqwest::Url, Vec<SocketAddr>), String> {
        self.check_url(url).await.map_err(|error| error.to_string())
    }

    /// Checks a URL and resolves its host; every address it resolves to must be
    /// allowed. Returns the URL and the addresses to connect to (only these).
    pub async fn check_url(&self, url: &str) -> Result<(reqwest::Url, Vec<SocketAddr>), UrlError> {
        let parsed = reqwest::Url::parse(url).map_err(|e| UrlError::NotAUrl {
            url: url.to_string(),
            reason: e.to_string(),
        })?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(UrlError::Scheme(parsed.scheme().to_string()));
        }
        let host = parsed
            .host_str()
            .ok_or(UrlError::NoHost)?
            .trim_matches(['[', ']'])
            .to_string();
        let port = parsed.port_or_known_default().unwrap_or(80);
        let addresses: Vec<SocketAddr> = match host.parse::<IpAddr>() {
            Ok(ip) => vec![SocketAddr::new(ip, port)],
            Err(_) => self
                .resolver
                .lookup(&host)
                .await
                .map_err(|source| UrlError::Unresolved {
                    host: host.clone(),
                    source,
                })?
                .into_iter()
                .map(|ip| SocketAddr::new(ip, port))
                .collect(),
        };
        if addresses.is_empty() {
            return Err(UrlError::NoAddress(host));
        }
        for address in &addresses {
            if let Some(why) = self.refusal(address.ip()) {
                return Err(UrlError::Internal {
                    address: address.ip(),
                    why,
                });
            }
        }
        Ok((parsed, addresses))
    }
}

/// Sends due deliveries until shutdown.
pub struct Dispatcher {
    pub store: Store,
    pub key: Vec<u8>,
    pub policy: AddressPolicy,
    pub retry_base: Duration,
    /// The longest pause between two attempts.
    pub retry_max: Duration,
    pub max_attempts: u32,
    /// How long a receiver has to answer an attempt.
    pub timeout: Duration,
    /// Rung when jobs finish (their deliveries may be due now).
    pub wake: Arc<Notify>,
    /// Counts each attempt's outcome.
    pub metrics: Arc<crate::metrics::Metrics>,
}

impl Dispatcher {
    pub async fn run(self, shutdown: CancellationToken) {
        let dispatcher = Arc::new(self);
        // Attempts under way, by delivery id: a delivery stays due until its attempt
        // is recorded, and must not be sent twice at once.
        let mut in_flight: JoinSet<String> = JoinSet::new();
        let mut sending: HashSet<String> = HashSet::new();
        loop {
            let woken = dispatcher.wake.notified();
            tokio::pin!(woken);
            woken.as_mut().enable();
            let mut started = false;
            if in_flight.len() < IN_FLIGHT {
                // On a shared database, deliveries are claimed with a lease longer than
                // an attempt, so another instance's dispatcher does not send them too.
                let due = if dispatcher.store.is_shared() {
                    let lease = dispatcher.timeout + CLAIM_MARGIN;
                    let lease_ms = i64::try_from(lease.as_millis()).unwrap_or(i64::MAX);
                    // Only as many as start now: a claimed delivery waits out its lease.
                    let free = u32::try_from(IN_FLIGHT - in_flight.len()).unwrap_or(BATCH);
                    dispatcher
                        .store
                        .claim_webhooks(now_ms(), BATCH.min(free), lease_ms)
                        .await
                } else {
                    dispatcher.store.due_webhooks(now_ms(), BATCH).await
                };
                let due = match due {
                    Ok(due) => due,
                    Err(error) => {
                        tracing::error!(%error, "cannot read the webhook outbox");
                        Vec::new()
                    }
                };
                for delivery in due {
                    if in_flight.len() >= IN_FLIGHT {
                        break;
                    }
                    if sending.insert(delivery.id.clone()) {
                        let dispatcher = dispatcher.clone();
                        in_flight.spawn(async move {
                            let id = delivery.id.clone();
                            dispatcher.attempt(delivery).await;
                            id
                        });
                        started = true;
                    }
                }
            }
            if started {
                continue;
            }
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = &mut woken => {}
                _ = tokio::time::sleep(POLL) => {}
                Some(done) = in_flight.join_next(), if !in_flight.is_empty() => {
                    if let Ok(id) = done {
                        sending.remove(&id);
                    }
                }
            }
            while let Some(done) = in_flight.try_join_next() {
                if let Ok(id) = done {
                    sending.remove(&id);
                }
            }
        }
        let finish = async { while in_flight.join_next().await.is_some() {} };
        if tokio::time::timeout(SHUTDOWN_GRACE, finish).await.is_err() {
            tracing::info!(
                left = in_flight.len(),
                "webhook attempts cut short by shutdown; they are sent again after the restart"
            );
        }
    }

    async fn attempt(&self, delivery: WebhookDelivery) {
        let number = delivery.attempts + 1;
        let at = now_ms();
        let started = Instant::now();
        let sent = self.send(&delivery).await;
        let latency_ms = started.elapsed().as_millis() as i64;
        let (status, error, retryable) = match sent {
            Ok(status) if (200..300).contains(&status) => (Some(status), None, false),
            Ok(410) => (
                Some(410),
                Some("the receiver answered 410 Gone".to_string()),
                false,
            ),
            Ok(status) => (
                Some(status),
                Some(format!("the receiver answered {status}")),
                true,
            ),
            Err(SendError::Refused(reason)) => (None, Some(reason), false),
            Err(SendError::Failed(reason)) => (None, Some(reason), true),
        };
        let outcome = match (&error, retryable) {
            (None, _) => AttemptOutcome::Delivered,
            (Some(_), true) if number < self.max_attempts => {
                let pause = crate::backoff::exponential(self.retry_base, number, self.retry_max);
                // From the end of this attempt, so the log shows the pause itself:
                // retry_at - (at + latency_ms).
                AttemptOutcome::RetryAt(at + latency_ms + pause.as_millis() as i64)
            }
            _ => AttemptOutcome::Failed,
        };
        let attempt = WebhookAttempt {
            attempt: number,
            at,
            status,
            latency_ms,
            error: error.clone(),
            retry_at: match outcome {
                AttemptOutcome::RetryAt(at) => Some(at),
                AttemptOutcome::Delivered | AttemptOutcome::Failed => None,
            },
        };
        tracing::info!(delivery = %delivery.id, job = %delivery.job_id, attempt = number, ?status, ?outcome, "webhook attempt");
        self.metrics.webhook_attempt(&outcome);
        match self
            .store
            .record_webhook_attempt(&delivery.id, &attempt, outcome)
            .await
        {
            Ok(true) => {}
            Ok(false) => {
                tracing::warn!(delivery = %delivery.id, "delivery moved on elsewhere; attempt not recorded")
            }
            Err(error) => {
                tracing::error!(%error, delivery = %delivery.id, "cannot record a webhook attempt")
            }
        }
    }

    async fn send(&self, delivery: &WebhookDelivery) -> Result<u16, SendError> {
        post_signed(
            &self.policy,
            &self.key,
            self.timeout,
            &delivery.url,
            &delivery.id,
            &delivery.payload,
        )
        .await
    }
}

/// One signed attempt: `body` POSTed to `url` (checked against `policy`, and connected
/// to only at the addresses the check resolved, so a second lookup cannot answer another,
/// internal, address), with the Standard Webhooks headers for `id` under `key`; the
/// receiver's status. Job deliveries and a batch's end both send through it.
pub(crate) async fn post_signed(
    policy: &AddressPolicy,
    key: &[u8],
    timeout: Duration,
    url: &str,
    id: &str,
    body: &str,
) -> Result<u16, SendError> {
    let (url, addresses) = policy
        .check_url(url)
        .await
        .map_err(|error| SendError::Refused(error.to_string()))?;
    let host = url
        .host_str()
        .unwrap_or_default()
        .trim_matches(['[', ']'])
        .to_string();
    let client = reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(timeout)
        .dns_resolver(policy.resolver.clone())
        .resolve_to_addrs(&host, &addresses)
        .build()
        .map_err(|e| SendError::Failed(e.to_string()))?;
    let timestamp = now_ms() / 1000;
    let response = client
        .post(url)
        .header("content-type", "application/json")
        .header("webhook-id", id)
        .header("webhook-timestamp", timestamp.to_string())
        .header("webhook-signature", sign(key, id, timestamp, body))
        .body(body.to_owned())
        .send()
        .await
        .map_err(|e| {
            SendError::Failed(if e.is_timeout() {
                "the receiver timed out".into()
            } else {
                e.to_string()
            })
        })?;
    Ok(response.status().as_u16())
}

pub(crate) enum SendError {
    /// The URL may not be used: no retry.
    Refused(String),
    /// The attempt failed in transit: retry.
    Failed(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_addresses_are_refused_unless_allowed() {
        for blocked in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "224.0.0.1",
            "255.255.255.255",
            "::1",
            "::",
            "fe80::1",
            "fd00::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "64:ff9b::a00:1",
            "2002:c0a8:0101::1",
            "ff02::1",
        ] {
            assert!(
                !is_public(blocked.parse().unwrap()),
                "{blocked} must be refused"
            );
        }
        for public in [
            "93.184.216.34",
            "1.1.1.1",
            "2606:4700::1111",
            "::ffff:93.184.216.34",
        ] {
            assert!(is_public(public.parse().unwrap()), "{public} is public");
        }
        let policy = AddressPolicy {
            allowed_private: parse_cidrs("127.0.0.0/8, 192.168.1.0/24").unwrap(),
            ..AddressPolicy::default()
        };
        assert!(policy.allows("127.0.0.1".parse().unwrap()));
        assert!(policy.allows("192.168.1.77".parse().unwrap()));
        assert!(!policy.allows("192.168.2.1".parse().unwrap()));
        assert!(!policy.allows("10.0.0.1".parse().unwrap()));
    }

    /// The addresses issue 13 found accepted without the allow-list, as URLs and
    /// behind a host name; refused, each with the block that refuses it named.
    #[tokio::test]
    async fn urls_with_the_addresses_found_accepted_are_refused() {
        let cases = [
            ("::ffff:0:7f00:1", "loopback"),
            ("fec0::1", "site-local"),
            ("2001:0:4136:e378:8000:63bf:80ff:fffe", "Teredo"),
            ("192.88.99.1", "6to4 relay anycast"),
            ("100::1", "discard-only"),
        ];
        for (address, block) in cases {
            let ip: IpAddr = address.parse().unwrap();
            let literal = match ip {
                IpAddr::V4(_) => format!("http://{ip}/hook"),
                IpAddr::V6(_) => format!("http://[{ip}]/hook"),
            };
            let by_name = AddressPolicy {
                allowed_private: Vec::new(),
                resolver: Resolver::new(Fixed(vec![ip])),
            };
            for url in [literal.as_str(), "https://hooks.example/in"] {
                let error = by_name.check_url(url).await.unwrap_err();
                assert!(
                    matches!(error, UrlError::Internal { address, .. } if address == ip),
                    "{url} ({address}): {error:?}"
                );
                let message = error.to_string();
                assert!(
                    message.contains("not allowed") && message.contains(block),
                    "{url} ({address}): {message}"
                );
            }
        }
    }

    /// `FOREMAN_WEBHOOK_ALLOW_PRIVATE_NETS` lets exactly the listed networks through,
    /// an IPv4 network also in its IPv4-mapped form.
    #[test]
    fn the_allow_list_lets_listed_networks_through() {
        let policy = AddressPolicy {
            allowed_private: parse_cidrs("fec0::/10, 192.88.99.0/24, 127.0.0.0/8, 2001::/32")
                .unwrap(),
            ..AddressPolicy::default()
        };
        for allowed in [
            "fec0::1",
            "192.88.99.1",
            "127.0.0.1",
            "::ffff:127.0.0.1",
            "2001:0:4136:e378:8000:63bf:80ff:fffe",
            "8.8.8.8",
            "2606:4700:4700::1111",
        ] {
            assert!(policy.allows(allowed.parse().unwrap()), "{allowed}");
        }
        for refused in [
            "100::1",
            "::ffff:0:7f00:1",
            "64:ff9b::7f00:1",
            "2002:7f00:1::",
            "192.168.1.1",
            "10.0.0.1",
        ] {
            let ip: IpAddr = refused.parse().unwrap();
            assert!(!policy.allows(ip), "{refused}");
            assert!(policy.refusal(ip).is_some(), "{refused}");
        }
    }

    #[test]
    fn cidrs_and_secrets_parse_or_say_why_not() {
        assert_eq!(parse_cidrs("").unwrap(), vec![]);
        assert!(parse_cidrs("10.0.0.0/33").is_err());
        assert!(parse_cidrs("nowhere/8").is_err());
        let single = parse_cidrs("10.0.0.5").unwrap();
        assert!(single[0].contains("10.0.0.5".parse().unwrap()));
        assert!(!single[0].contains("10.0.0.6".parse().unwrap()));
        assert!(decode_secret("nope").is_err());
        assert!(decode_secret("whsec_!!!").is_err());
        assert!(decode_secret(&format!("whsec_{}", STANDARD.encode([1u8; 8]))).is_err());
        assert_eq!(
            decode_secret(&format!("whsec_{}", STANDARD.encode([7u8; 32]))).unwrap(),
            vec![7u8; 32]
        );
    }

    #[test]
    fn signatures_follow_the_standard_webhooks_example() {
        // The reference example of the Standard Webhooks specification.
        let key = decode_secret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let body = r#"{"test": 2432232314}"#;
        assert_eq!(
            sign(&key, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }

    #[tokio::test]
    async fn urls_are_checked_before_use() {
        let strict = AddressPolicy::default();
        for url in [
            "ftp://93.184.216.34/x",
            "http://127.0.0.1:9/x",
            "http://[::1]/x",
            "http://169.254.169.254/latest",
            "not a url",
        ] {
            assert!(strict.check(url).await.is_err(), "{url}");
        }
        let (_, addresses) = strict.check("https://93.184.216.34/hook").await.unwrap();
        assert_eq!(addresses, vec!["93.184.216.34:443".parse().unwrap()]);
        assert!(
            strict.check("http://localhost:9/x").await.is_err(),
            "names are resolved and checked"
        );
    }

    /// Answers every name with the same addresses.
    struct Fixed(Vec<IpAddr>);

    impl Resolve for Fixed {
        fn lookup(&self, _host: &str) -> Lookup {
            let answer = self.0.clone();
            Box::pin(async move { Ok(answer) })
        }
    }

    #[tokio::test]
    async fn every_address_a_name_resolves_to_is_checked_and_kept() {
        let ips = |list: &[&str]| list.iter().map(|ip| ip.parse().unwrap()).collect();
        let policy = |answer: Vec<IpAddr>| AddressPolicy {
            allowed_private: Vec::new(),
            resolver: Resolver::new(Fixed(answer)),
        };
        let (_, addresses) = policy(ips(&["93.184.216.34", "2606:4700::1111"]))
            .check("https://hooks.example:8443/in")
            .await
            .unwrap();
        assert_eq!(
            addresses,
            vec![
                "93.184.216.34:8443".parse().unwrap(),
                "[2606:4700::1111]:8443".parse().unwrap()
            ],
            "all checked addresses are the ones to connect to"
        );
        let error = policy(ips(&["93.184.216.34", "10.0.0.7"]))
            .check("https://hooks.example/in")
            .await
            .unwrap_err();
        assert!(error.contains("10.0.0.7"), "{error}");
        let error = policy(Vec::new())
            .check("https://hooks.example/in")
            .await
            .unwrap_err();
        assert!(error.contains("no address"), "{error}");
    }
}
