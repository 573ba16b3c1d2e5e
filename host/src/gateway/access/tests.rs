//! The route guard alone: tokens made here with real keys, forged the ways attackers
//! forge them, and rate limits counted per client and per route.

use super::*;
use crate::deployment::access::{Issuer, RateLimit, RouteAccess, TrustedKey};
use crate::deployment::units::Rate;
use jsonwebtoken::{encode, get_current_timestamp, Algorithm, DecodingKey, EncodingKey, Header};
use serde_json::json;
use std::net::Ipv4Addr;

/// An issuer's key pair: the private half signs test tokens, the public half is
/// what the gateway trusts.
struct Signer {
    private: EncodingKey,
    public_pem: String,
}

fn ec_signer() -> Signer {
    let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    Signer {
        private: EncodingKey::from_ec_pem(pair.serialize_pem().as_bytes()).unwrap(),
        public_pem: pair.public_key_pem(),
    }
}

fn issuer(keys: Vec<(Option<&str>, &Signer)>, claims: Option<Vec<&str>>) -> Arc<Issuer> {
    Arc::new(Issuer {
        name: "shop".into(),
        keys: keys
            .into_iter()
            .map(|(id, signer)| TrustedKey {
                id: id.map(String::from),
                key: DecodingKey::from_ec_pem(signer.public_pem.as_bytes()).unwrap(),
                algorithms: vec![Algorithm::ES256],
            })
            .collect(),
        issuer: "https://id.example".into(),
        audience: vec!["shop".into()],
        leeway: Duration::from_secs(30),
        claims: claims.map(|names| names.into_iter().map(String::from).collect()),
    })
}

fn guard(access: RouteAccess) -> RouteGuard {
    RouteGuard::new(&access)
}

fn authenticated(issuer: Arc<Issuer>) -> RouteGuard {
    guard(RouteAccess {
        auth: Some(issuer),
        ..RouteAccess::default()
    })
}

/// Claims a good token carries, with `changes` applied.
fn claims(changes: serde_json::Value) -> serde_json::Value {
    let now = get_current_timestamp();
    let mut claims = json!({
        "iss": "https://id.example",
        "aud": "shop",
        "sub": "user-7",
        "exp": now + 600,
        "nbf": now - 10,
        "name": "Zoë",
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

fn sign(signer: &Signer, kid: Option<&str>, claims: &serde_json::Value) -> String {
    let mut header = Header::new(Algorithm::ES256);
    header.kid = kid.map(String::from);
    encode(&header, claims, &signer.private).unwrap()
}

fn bearer(token: &str) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(
        header::AUTHORIZATION,
        HeaderValue::from_str(&format!("Bearer {token}")).unwrap(),
    );
    headers
}

const CLIENT: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));

/// The reason a request with `headers` was refused.
fn refused(guard: &RouteGuard, mut headers: HeaderMap) -> String {
    match guard.check(CLIENT, &mut headers) {
        Err(Refusal::Unauthenticated { reason, .. }) => reason,
        other => panic!("expected a 401, got {other:?}"),
    }
}

/// `{"alg":"none","typ":"JWT","kid":"k1"}`, base64url: the header of an unsigned token.
const ALG_NONE_HEADER: &str = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIiwia2lkIjoiazEifQ";

/// The payload part of `token`.
fn payload(token: &str) -> &str {
    token.split('.').nth(1).unwrap()
}

#[test]
fn a_valid_token_reaches_the_module_as_trusted_headers() {
    let signer = ec_signer();
    let guard = authenticated(issuer(vec![(Some("k1"), &signer)], None));
    let mut headers = bearer(&sign(&signer, Some("k1"), &claims(json!({}))));
    guard.check(CLIENT, &mut headers).unwrap();
    assert_eq!(headers[SUBJECT_HEADER], "user-7");
    let shown = headers[CLAIMS_HEADER].to_str().unwrap();
    assert!(shown.is_ascii() && shown.contains(r"Zo\u00eb"), "{shown}");
    let shown: serde_json::Value = serde_json::from_str(shown).unwrap();
    assert_eq!(shown["name"], "Zoë");
    assert_eq!(shown["role"], "buyer");
}

#[test]
fn only_the_listed_claims_are_shown_and_one_key_needs_no_kid() {
    let signer = ec_signer();
    let guard = authenticated(issuer(vec![(None, &signer)], Some(vec!["sub", "role"])));
    let mut headers = bearer(&sign(&signer, None, &claims(json!({}))));
    guard.check(CLIENT, &mut headers).unwrap();
    let shown: serde_json::Value =
        serde_json::from_str(headers[CLAIMS_HEADER].to_str().unwrap()).unwrap();
    assert_eq!(shown, json!({"sub": "user-7", "role": "buyer"}));
}

#[test]
fn forged_and_stale_tokens_are_refused() {
    let signer = ec_signer();
    let impostor = ec_signer();
    let guard = authenticated(issuer(
        vec![(Some("k1"), &signer), (Some("k2"), &ec_signer())],
        None,
    ));
    let good = claims(json!({}));
    let now = get_current_timestamp();

    // No token at all: the challenge names no error (RFC 6750 §3.1).
    let mut headers = HeaderMap::new();
    let refusal = guard.check(CLIENT, &mut headers).unwrap_err();
    assert!(matches!(
        refusal,
        Refusal::Unauthenticated {
            token_sent: false,
            ..
        }
    ));
    assert_eq!(refusal.header().1, "Bearer realm=\"modhost\"");

    // alg none: a token whose signature is empty.
    let honest = sign(&signer, Some("k1"), &good);
    let none = format!("{ALG_NONE_HEADER}.{}.", payload(&honest));
    assert_eq!(refused(&guard, bearer(&none)), "the token is malformed");

    // HS256 signed with the issuer's public key as the secret (algorithm confusion).
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some("k1".into());
    let confused = encode(
        &header,
        &good,
        &EncodingKey::from_secret(signer.public_pem.as_bytes()).unwrap(),
    )
    .unwrap();
    assert_eq!(
        refused(&guard, bearer(&confused)),
        "the token's algorithm is not accepted"
    );

    // Signed by another key under a kid the issuer has.
    let bad_signature = sign(&impostor, Some("k1"), &good);
    assert_eq!(
        refused(&guard, bearer(&bad_signature)),
        "the token's signature does not verify"
    );
    // A good token with its payload swapped for one that says more.
    let elevated = sign(&impostor, Some("k1"), &claims(json!({"role": "admin"})));
    let mut parts: Vec<&str> = honest.split('.').collect();
    parts[1] = payload(&elevated);
    assert_eq!(
        refused(&guard, bearer(&parts.join("."))),
        "the token's signature does not verify"
    );

    for (changes, reason) in [
        (
            json!({"iss": "https://evil.example"}),
            "the token is from another issuer",
        ),
        (
            json!({"aud": "billing"}),
            "the token is for another audience",
        ),
        (json!({"exp": now - 120}), "the token has expired"),
        (
            json!({"nbf": now + 120}),
            "the token is not valid yet (nbf)",
        ),
        (
            json!({"exp": null}),
            "the token lacks a required claim (exp, iss, aud)",
        ),
        (
            json!({"iss": null}),
            "the token lacks a required claim (exp, iss, aud)",
        ),
        (
            json!({"aud": null}),
            "the token lacks a required claim (exp, iss, aud)",
        ),
        (json!({"sub": 7}), "the token's sub is not a string"),
    ] {
        let token = sign(&signer, Some("k1"), &claims(changes.clone()));
        assert_eq!(refused(&guard, bearer(&token)), reason, "{changes}");
    }

    // A kid the issuer does not have, and no kid when it has several keys.
    assert_eq!(
        refused(&guard, bearer(&sign(&signer, Some("k9"), &good))),
        "the token names a key the issuer does not have"
    );
    assert_eq!(
        refused(&guard, bearer(&sign(&signer, None, &good))),
        "the token names no key (kid)"
    );
    // Within the leeway, a just-expired token still passes.
    let lenient = sign(&signer, Some("k1"), &claims(json!({"exp": now - 5})));
    guard.check(CLIENT, &mut bearer(&lenient)).unwrap();

    // Garbage in the header never panics.
    for junk in [
        "",
        "Bearer",
        "Bearer ",
        "Basic dXNlcjpwYXNz",
        "Bearer a.b",
        "Bearer .....",
    ] {
        let mut headers = HeaderMap::new();
        headers.insert(header::AUTHORIZATION, HeaderValue::from_static(junk));
        assert!(guard.check(CLIENT, &mut headers).is_err(), "{junk:?}");
    }
}

#[test]
fn a_refused_token_answers_a_bearer_challenge() {
    let refusal = Refusal::Unauthenticated {
        token_sent: true,
        reason: "the token has \"expired\"".into(),
    };
    let (name, value) = refusal.header();
    assert_eq!(name, header::WWW_AUTHENTICATE);
    assert_eq!(
        value,
        "Bearer realm=\"modhost\", error=\"invalid_token\", error_description=\"the token has expired\""
    );
    let (name, value) = Refusal::RateLimited {
        scope: LimitScope::Client,
        retry_after: Duration::from_millis(1200),
    }
    .header();
    assert_eq!((name, value), (header::RETRY_AFTER, HeaderValue::from(2)));
}

fn limit(rate: &str, burst: u32) -> Option<RateLimit> {
    Some(RateLimit {
        rate: Rate::parse(rate).unwrap(),
        burst,
    })
}

#[test]
fn each_client_has_its_own_allowance() {
    let guard = guard(RouteAccess {
        per_client: limit("1/min", 3),
        ..RouteAccess::default()
    });
    let other = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 2));
    for _ in 0..3 {
        guard.check(CLIENT, &mut HeaderMap::new()).unwrap();
    }
    match guard.check(CLIENT, &mut HeaderMap::new()) {
        Err(Refusal::RateLimited {
            scope: LimitScope::Client,
            retry_after,
        }) => assert!(
            retry_after > Duration::from_secs(50) && retry_after <= Duration::from_secs(60),
            "{retry_after:?}"
        ),
        other => panic!("expected the client's limit, got {other:?}"),
    }
    guard.check(other, &mut HeaderMap::new()).unwrap();
}

#[test]
fn a_route_limit_counts_every_client_together() {
    let guard = guard(RouteAccess {
        per_route: limit("2/h", 2),
        ..RouteAccess::default()
    });
    guard.check(CLIENT, &mut HeaderMap::new()).unwrap();
    guard
        .check("198.51.100.1".parse().unwrap(), &mut HeaderMap::new())
        .unwrap();
    let refusal = guard
        .check("203.0.113.1".parse().unwrap(), &mut HeaderMap::new())
        .unwrap_err();
    assert_eq!(refusal.code(), "route_rate_limited");
}

#[test]
fn an_ipv6_client_is_counted_by_its_64_prefix() {
    let a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
    let b: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
    let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
    assert_eq!(ClientKey::of(a), ClientKey::of(b));
    assert_ne!(ClientKey::of(a), ClientKey::of(c));
    let mapped: IpAddr = "::ffff:192.0.2.1".parse().unwrap();
    assert_eq!(ClientKey::of(mapped), ClientKey::of(CLIENT));
}

#[test]
fn a_clients_own_trusted_headers_are_removed() {
    let mut headers = HeaderMap::new();
    headers.insert(SUBJECT_HEADER, HeaderValue::from_static("admin"));
    headers.insert(
        CLAIMS_HEADER,
        HeaderValue::from_static("{\"role\":\"admin\"}"),
    );
    headers.insert("X-Modhost-Forwarded-By", HeaderValue::from_static("a"));
    headers.insert("x-other", HeaderValue::from_static("kept"));
    strip_trusted_headers(&mut headers);
    assert_eq!(headers.len(), 1);
    assert_eq!(headers["x-other"], "kept");
}
