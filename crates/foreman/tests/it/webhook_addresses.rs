//! The webhook address policy through `POST /jobs`: the special-purpose addresses
//! issue 13 found accepted are refused without the allow-list, by literal and
//! behind a host name (an injected resolver stands in for DNS), and let through
//! when `FOREMAN_WEBHOOK_ALLOW_PRIVATE_NETS` lists their network.

use std::net::IpAddr;

use base64::Engine;
use serde_json::{Value, json};

use crate::common::*;

/// The addresses, with a word of the block that refuses each.
const FOUND_ACCEPTED: &[(&str, &str)] = &[
    ("::ffff:0:7f00:1", "loopback"),
    ("fec0::1", "site-local"),
    ("2001:0:4136:e378:8000:63bf:80ff:fffe", "Teredo"),
    ("192.88.99.1", "6to4 relay anycast"),
    ("100::1", "discard-only"),
];

/// Answers every name with one address.
struct Answer(IpAddr);

impl foreman::webhook::Resolve for Answer {
    fn lookup(&self, _host: &str) -> foreman::webhook::Lookup {
        let answer = self.0;
        Box::pin(async move { Ok(vec![answer]) })
    }
}

fn url_of(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(ip) => format!("http://{ip}/hook"),
        IpAddr::V6(ip) => format!("http://[{ip}]/hook"),
    }
}

async fn submit(foreman: &TestForeman, webhook: &str) -> (u16, Value) {
    let body =
        json!({"kind": "chat", "webhook": webhook, "request": {"model": CHAT, "messages": []}});
    let response = client()
        .post(format!("{}/jobs", foreman.url))
        .json(&body)
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.json().await.unwrap())
}

async fn foreman_with(resolver: Answer, allow: &str) -> TestForeman {
    TestForeman::start_with(fast_sim(), |config| {
        let secret = base64::engine::general_purpose::STANDARD.encode([7u8; 32]);
        config.webhook_key =
            Some(foreman::webhook::decode_secret(&format!("whsec_{secret}")).unwrap());
        config.webhook_allow_private_nets = foreman::webhook::parse_cidrs(allow).unwrap();
        config.webhook_resolver = foreman::webhook::Resolver::new(resolver);
    })
    .await
}

#[tokio::test]
async fn special_purpose_addresses_found_accepted_are_refused() {
    for &(address, block) in FOUND_ACCEPTED {
        let ip: IpAddr = address.parse().unwrap();
        let foreman = foreman_with(Answer(ip), "").await;
        for url in [url_of(ip), "https://hooks.example/in".to_string()] {
            let (status, error) = submit(&foreman, &url).await;
            assert_eq!(status, 400, "{url} ({address}): {error}");
            let message = error["error"].as_str().unwrap();
            assert!(
                message.contains("not allowed") && message.contains(block),
                "{url} ({address}): {message}"
            );
        }
        assert!(foreman.jobs().await.is_empty(), "no job was created");
        foreman.stop().await;
    }
}

#[tokio::test]
async fn the_allow_list_lets_their_networks_through() {
    let allow = "::ffff:0:0:0/96, fec0::/10, 2001::/32, 192.88.99.0/24, 100::/64";
    for &(address, _) in FOUND_ACCEPTED {
        let ip: IpAddr = address.parse().unwrap();
        let foreman = foreman_with(Answer(ip), allow).await;
        for url in [url_of(ip), "https://hooks.example/in".to_string()] {
            let (status, answer) = submit(&foreman, &url).await;
            assert_eq!(status, 202, "{url} ({address}): {answer}");
        }
        foreman.stop().await;
    }
}
