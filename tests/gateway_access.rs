//! Who may use a route and how often, against a real `modhost` process: bearer tokens
//! from a configured issuer (valid ones reach the module as trusted headers, forged
//! ones get 401), rate limits per client address and per route (429 with
//! `Retry-After`, holding the configured rate under load), and the request id.

mod common;
use common::*;

use base64::Engine;
use jsonwebtoken::{encode, get_current_timestamp, Algorithm, EncodingKey, Header};
use serde_json::json;
use std::time::{Duration, Instant};

const DEPLOYMENT: &str = r#"
[app]
name = "access"

[gateway.issuers.shop]
jwks = "keys.json"
algorithms = ["ES256", "EdDSA"]
issuer = "https://id.shop.example"
audience = "shop"
leeway = "5s"

[gateway.routes."/faulty"]
auth = "shop"

[gateway.routes."/hello"]
client_rate = "100/s"
client_burst = 10

[gateway.routes."/limited"]
route_rate = "100/s"
route_burst = 10

[modules.faulty]
component = "{faulty}"
routes = ["/faulty"]

[modules.open]
component = "{faulty}"
routes = ["/open"]

[modules.hello]
component = "{hello}"
routes = ["/hello"]

[modules.limited]
component = "{hello}"
routes = ["/limited"]
"#;

/// One of the issuer's signing keys: its private half signs the test's tokens.
struct Signer {
    kid: &'static str,
    algorithm: Algorithm,
    private: EncodingKey,
    public_pem: String,
    public_raw: Vec<u8>,
}

impl Signer {
    fn new(kid: &'static str, algorithm: Algorithm) -> Signer {
        let kind = match algorithm {
            Algorithm::ES256 => &rcgen::PKCS_ECDSA_P256_SHA256,
            _ => &rcgen::PKCS_ED25519,
        };
        let pair = rcgen::KeyPair::generate_for(kind).unwrap();
        let pkcs8 = pair.serialize_pem();
        let private = match algorithm {
            Algorithm::ES256 => EncodingKey::from_ec_pem(pkcs8.as_bytes()),
            _ => EncodingKey::from_ed_pem(pkcs8.as_bytes()),
        }
        .unwrap();
        Signer {
            kid,
            algorithm,
            private,
            public_pem: pair.public_key_pem(),
            public_raw: pair.public_key_raw().to_vec(),
        }
    }

    /// The public key as a JWK, with its kid.
    fn jwk(&self) -> serde_json::Value {
        match self.algorithm {
            Algorithm::ES256 => {
                let mut jwk =
                    jsonwebtoken::jwk::Jwk::from_encoding_key(&self.private, self.algorithm)
                        .unwrap();
                jwk.common.key_id = Some(self.kid.into());
                serde_json::to_value(jwk).unwrap()
            }
            // jsonwebtoken cannot read the public half out of ring's Ed25519 PKCS#8;
            // the raw key is what an OKP JWK holds anyway.
            _ => json!({
                "kty": "OKP",
                "crv": "Ed25519",
                "kid": self.kid,
                "x": base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&self.public_raw),
            }),
        }
    }

    fn sign(&self, claims: &serde_json::Value) -> String {
        let mut header = Header::new(self.algorithm);
        header.kid = Some(self.kid.into());
        encode(&header, claims, &self.private).unwrap()
    }
}

/// The claims of a good token, with `changes` applied (`null` removes a claim).
fn claims(changes: serde_json::Value) -> serde_json::Value {
    let now = get_current_timestamp();
    let mut claims = json!({
        "iss": "https://id.shop.example",
        "aud": "shop",
        "sub": "customer-42",
        "exp": now + 600,
        "nbf": now - 10,
        "role": "buyer",
    });
    for (name, value) in changes.as_object().unwrap() {
        if value.is_null() {
            claims.as_object_mut().unwrap().remove(name);
        } else {
            claims[name] = value.clone();
        }
    }
    claims
}

/// The deployment with the issuer's JWKS beside it (keys `ec` and `ed`), running.
fn start(signers: &[&Signer]) -> (TestDeployment, Modhost) {
    let deployment = TestDeployment::new(DEPLOYMENT);
    let keys: Vec<_> = signers.iter().map(|signer| signer.jwk()).collect();
    std::fs::write(
        deployment.dir.path().join("keys.json"),
        json!({ "keys": keys }).to_string(),
    )
    .unwrap();
    let host = Modhost::start(&deployment);
    (deployment, host)
}

async fn get_with(host: &Modhost, path: &str, headers: &[(&str, &str)]) -> Reply {
    send_with_headers(&client(false), "GET", &host.url(path), headers, None).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_valid_token_reaches_the_module_and_forged_ones_get_401() {
    let ec = Signer::new("ec", Algorithm::ES256);
    let ed = Signer::new("ed", Algorithm::EdDSA);
    let (_deployment, host) = start(&[&ec, &ed]);
    let now = get_current_timestamp();

    // Both of the issuer's keys sign tokens the module's route accepts; what the
    // client claims about itself in x-modhost-* headers is replaced by what the token
    // says.
    for signer in [&ec, &ed] {
        let token = signer.sign(&claims(json!({})));
        let reply = get_with(
            &host,
            "/faulty/headers",
            &[
                ("authorization", &format!("Bearer {token}")),
                ("x-modhost-subject", "admin"),
            ],
        )
        .await;
        assert_eq!(reply.status, 200, "{}", reply.text());
        let seen = reply.json();
        assert_eq!(seen["x-modhost-subject"], "customer-42", "{seen}");
        let shown: serde_json::Value =
            serde_json::from_str(seen["x-modhost-claims"].as_str().unwrap()).unwrap();
        assert_eq!(shown["role"], "buyer");
        assert_eq!(shown["iss"], "https://id.shop.example");
    }

    // No token: a bare challenge.
    let reply = get_with(&host, "/faulty/headers", &[]).await;
    assert_eq!(reply.status, 401);
    assert_eq!(
        reply.headers["www-authenticate"],
        "Bearer realm=\"modhost\""
    );
    assert_eq!(reply.json()["error"]["code"], "unauthenticated");

    let good = ec.sign(&claims(json!({})));
    let payload = good.split('.').nth(1).unwrap();
    let mut hs_header = Header::new(Algorithm::HS256);
    hs_header.kid = Some("ec".into());
    let impostor = Signer::new("ec", Algorithm::ES256);
    let forged: Vec<(&str, String)> = vec![
        // {"alg":"none","typ":"JWT","kid":"ec"}: unsigned.
        (
            "alg none",
            format!("eyJhbGciOiJub25lIiwidHlwIjoiSldUIiwia2lkIjoiZWMifQ.{payload}."),
        ),
        (
            "HS256 signed with the public key",
            encode(
                &hs_header,
                &claims(json!({})),
                &EncodingKey::from_secret(ec.public_pem.as_bytes()).unwrap(),
            )
            .unwrap(),
        ),
        (
            "wrong issuer",
            ec.sign(&claims(json!({"iss": "https://evil.example"}))),
        ),
        (
            "wrong audience",
            ec.sign(&claims(json!({"aud": "billing"}))),
        ),
        ("expired", ec.sign(&claims(json!({"exp": now - 60})))),
        ("not yet valid", ec.sign(&claims(json!({"nbf": now + 60})))),
        ("bad signature", impostor.sign(&claims(json!({})))),
        (
            "unknown kid",
            Signer::new("k9", Algorithm::ES256).sign(&claims(json!({}))),
        ),
        ("no expiry", ec.sign(&claims(json!({"exp": null})))),
        ("garbage", "not.a.token".to_string()),
    ];
    for (what, token) in &forged {
        let reply = get_with(
            &host,
            "/faulty/headers",
            &[("authorization", &format!("Bearer {token}"))],
        )
        .await;
        assert_eq!(reply.status, 401, "{what}: {}", reply.text());
        let challenge = reply.headers["www-authenticate"].to_str().unwrap();
        assert!(
            challenge.starts_with("Bearer realm=\"modhost\", error=\"invalid_token\""),
            "{what}: {challenge}"
        );
        // The refusal is in the log under the answer's error id.
        host.failure_log(&reply, 401);
    }

    // An unguarded route is open, and a client's x-modhost-* headers never reach
    // its module either.
    let reply = get_with(
        &host,
        "/open/headers",
        &[
            ("x-modhost-subject", "admin"),
            ("x-modhost-claims", "{\"role\":\"admin\"}"),
            ("x-other", "kept"),
        ],
    )
    .await;
    assert_eq!(reply.status, 200);
    let seen = reply.json();
    assert_eq!(seen["x-other"], "kept");
    assert!(
        seen.as_object()
            .unwrap()
            .keys()
            .all(|name| !name.starts_with("x-modhost-")),
        "{seen}"
    );

    let metrics = get(&host.url("/metrics")).await.text();
    let refused = format!(
        "modhost_gateway_refused_total{{route=\"/faulty\",reason=\"unauthenticated\"}} {}",
        forged.len() + 1
    );
    assert!(metrics.contains(&refused), "{refused} in:\n{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_request_has_an_id_from_the_log_to_the_module() {
    let (_deployment, host) = start(&[&Signer::new("ec", Algorithm::ES256)]);

    let reply = get_with(&host, "/open/headers", &[("x-request-id", "order-flow.7")]).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.headers["x-request-id"], "order-flow.7");
    assert_eq!(reply.json()["x-request-id"], "order-flow.7");
    let line = host.wait_for_log_with(&["request completed", "order-flow.7"]);
    let event: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(event["span"]["request_id"], "order-flow.7", "{event}");

    // A client's id that could break a log line or a header is replaced.
    let reply = get_with(&host, "/open/headers", &[("x-request-id", "two words")]).await;
    let id = reply.headers["x-request-id"].to_str().unwrap().to_string();
    assert_eq!(id.len(), 32, "{id}");
    assert_eq!(reply.json()["x-request-id"], id.as_str());

    // The gateway's own answers carry one too.
    let reply = get_with(&host, "/nowhere", &[]).await;
    assert_eq!(reply.status, 404);
    assert!(reply.headers.contains_key("x-request-id"));
}

/// A client whose connections come from `address` (any 127.0.0.0/8 address reaches
/// the loopback listener, so one machine can act as several clients).
fn client_from(
    address: &str,
) -> hyper_util::client::legacy::Client<
    hyper_util::client::legacy::connect::HttpConnector,
    http_body_util::Full<bytes::Bytes>,
> {
    let mut connector = hyper_util::client::legacy::connect::HttpConnector::new();
    connector.set_local_address(Some(address.parse().unwrap()));
    hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build(connector)
}

/// Drives `url` from each client address with 4 connections each for `period`: the
/// answers admitted (200) per client, and the 429s' `Retry-After` values seen.
async fn drive(url: &str, clients: &[&str], period: Duration) -> (Vec<u64>, Vec<String>) {
    let started = Instant::now();
    let mut tasks = Vec::new();
    for address in clients {
        let http = client_from(address);
        for _ in 0..4 {
            let (http, url) = (http.clone(), url.to_string());
            tasks.push(tokio::spawn(async move {
                let (mut admitted, mut retry_after) = (0u64, Vec::new());
                while started.elapsed() < period {
                    let reply = send(&http, "GET", &url, None).await;
                    match reply.status {
                        200 => admitted += 1,
                        429 => {
                            let wait = reply.headers["retry-after"].to_str().unwrap();
                            if !retry_after.iter().any(|seen| seen == wait) {
                                retry_after.push(wait.to_string());
                            }
                        }
                        other => panic!("unexpected {other}: {}", reply.text()),
                    }
                }
                (admitted, retry_after)
            }));
        }
    }
    let mut per_client = vec![0u64; clients.len()];
    let mut waits = Vec::new();
    for (i, task) in tasks.into_iter().enumerate() {
        let (admitted, seen) = task.await.unwrap();
        per_client[i / 4] += admitted;
        waits.extend(seen);
    }
    waits.sort();
    waits.dedup();
    (per_client, waits)
}

/// The requests a limit of 100/s with a burst of 10 admits in `period`, and the
/// ±10% band around it.
fn band(period: Duration) -> std::ops::RangeInclusive<u64> {
    let expected = 10.0 + 100.0 * period.as_secs_f64();
    (expected * 0.9) as u64..=(expected * 1.1) as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_client_gets_its_own_rate_and_the_route_one_for_all() {
    let (_deployment, host) = start(&[&Signer::new("ec", Algorithm::ES256)]);
    let period = Duration::from_secs(3);
    let clients = ["127.0.0.1", "127.0.0.2"];

    // Per client: each of the two addresses gets the whole allowance.
    let (admitted, waits) = drive(&host.url("/hello"), &clients, period).await;
    eprintln!(
        "per client: {admitted:?} admitted in {period:?} (expected {:?})",
        band(period)
    );
    for (client, count) in clients.iter().zip(&admitted) {
        assert!(
            band(period).contains(count),
            "{client}: {count} admitted in {period:?}, expected {:?}",
            band(period)
        );
    }
    assert_eq!(waits, ["1"], "a 429 says when to come back");

    // Per route: the two addresses share one allowance.
    let (admitted, _) = drive(&host.url("/limited"), &clients, period).await;
    let total: u64 = admitted.iter().sum();
    eprintln!(
        "per route: {admitted:?} admitted in {period:?} (expected {:?})",
        band(period)
    );
    assert!(
        band(period).contains(&total),
        "{total} admitted in {period:?} for both clients, expected {:?}",
        band(period)
    );
    assert!(admitted.iter().all(|count| *count > 0), "{admitted:?}");

    // Another route has no limit, and the refusals are counted.
    let reply = get(&host.url("/open/headers")).await;
    assert_eq!(reply.status, 200);
    let metrics = get(&host.url("/metrics")).await.text();
    for needle in [
        "modhost_gateway_refused_total{route=\"/hello\",reason=\"client_rate_limited\"}",
        "modhost_gateway_refused_total{route=\"/limited\",reason=\"route_rate_limited\"}",
    ] {
        assert!(metrics.contains(needle), "{needle} in:\n{metrics}");
    }
}
