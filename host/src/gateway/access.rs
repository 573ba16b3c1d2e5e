//! Who may use a route, and how often: the gateway's checks before a request reaches a
//! module — rate limits per client address and per route (429 with `Retry-After`),
//! then a bearer token from the route's issuer (401 with `WWW-Authenticate`).
//!
//! A token that verifies reaches the module as headers it can trust
//! ([`SUBJECT_HEADER`], [`CLAIMS_HEADER`]): the gateway removes every `x-modhost-*`
//! header a client sends ([`strip_trusted_headers`]), so a module only ever sees the
//! gateway's own. Limits come before the token, so a flood of forged tokens costs a
//! signature check only up to the limit.

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, DefaultKeyedRateLimiter, Quota, RateLimiter};
use http::{header, HeaderMap, HeaderValue};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{decode, decode_header, Validation};
use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use crate::deployment::access::{Issuer, RateLimit, RouteAccess, TrustedKey};

/// The prefix of the headers only the host sets; a client's are removed.
pub const TRUSTED_PREFIX: &str = "x-modhost-";
/// The verified token's `sub`, for the module.
pub const SUBJECT_HEADER: &str = "x-modhost-subject";
/// The verified token's claims (those the issuer's `claims` lists, or all), as one
/// JSON object in ASCII.
pub const CLAIMS_HEADER: &str = "x-modhost-claims";
/// The realm named in `WWW-Authenticate`.
const REALM: &str = "modhost";

/// Removes every header of the host's own (`x-modhost-…`) from a client's request:
/// what a module reads there, only the host wrote.
pub fn strip_trusted_headers(headers: &mut HeaderMap) {
    let trusted: Vec<header::HeaderName> = headers
        .keys()
        .filter(|name| name.as_str().starts_with(TRUSTED_PREFIX))
        .cloned()
        .collect();
    for name in trusted {
        headers.remove(&name);
    }
}

/// Why the gateway refused a request before its module saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Too many requests; the client may try again after the wait.
    RateLimited {
        /// Which limit: the client's own, or the route's.
        scope: LimitScope,
        /// How long until a request would be admitted.
        retry_after: Duration,
    },
    /// No token, or one that does not verify.
    Unauthenticated {
        /// Whether the request carried a bearer token at all (RFC 6750: without
        /// one, the challenge names no error).
        token_sent: bool,
        /// What was wrong, for the client.
        reason: String,
    },
}

/// Which rate limit refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitScope {
    /// The limit per client address.
    Client,
    /// The limit of the route, all clients together.
    Route,
}

impl Refusal {
    /// The metric label and error code for this refusal.
    pub fn code(&self) -> &'static str {
        match self {
            Refusal::RateLimited {
                scope: LimitScope::Client,
                ..
            } => "client_rate_limited",
            Refusal::RateLimited {
                scope: LimitScope::Route,
                ..
            } => "route_rate_limited",
            Refusal::Unauthenticated { .. } => "unauthenticated",
        }
    }

    /// The header the refusal's answer carries: `Retry-After` (whole seconds,
    /// rounded up) or `WWW-Authenticate`.
    pub fn header(&self) -> (header::HeaderName, HeaderValue) {
        match self {
            Refusal::RateLimited { retry_after, .. } => {
                let seconds = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
                (header::RETRY_AFTER, HeaderValue::from(seconds.max(1)))
            }
            Refusal::Unauthenticated { token_sent, reason } => {
                let challenge = if *token_sent {
                    // The description is ours; keep it a valid quoted-string.
                    let reason: String = reason
                        .chars()
                        .filter(|c| {
                            c.is_ascii() && !c.is_ascii_control() && *c != '"' && *c != '\\'
                        })
                        .collect();
                    format!(
                        "Bearer realm=\"{REALM}\", error=\"invalid_token\", error_description=\"{reason}\""
                    )
                } else {
                    format!("Bearer realm=\"{REALM}\"")
                };
                let value = HeaderValue::from_str(&challenge)
                    .unwrap_or(HeaderValue::from_static("Bearer realm=\"modhost\""));
                (header::WWW_AUTHENTICATE, value)
            }
        }
    }
}

/// The checks of every route that has any, by route.
#[derive(Default)]
pub struct Guards {
    routes: HashMap<String, RouteGuard>,
}

impl Guards {
    /// The guards for the checked rules of a deployment (`Deployment::access`).
    pub fn new(access: &BTreeMap<String, RouteAccess>) -> Guards {
        Guards {
            routes: access
                .iter()
                .map(|(route, rules)| (route.clone(), RouteGuard::new(rules)))
                .collect(),
        }
    }

    /// The guard of `route` (as the route table matched it), if it has one.
    pub fn get(&self, route: &str) -> Option<&RouteGuard> {
        self.routes.get(route)
    }

    /// Forgets clients whose limits are back to full, so addresses seen once do not
    /// stay in memory. The gateway calls it every few seconds.
    pub fn forget_idle_clients(&self) {
        for guard in self.routes.values() {
            if let Some(limiter) = &guard.per_client {
                limiter.retain_recent();
                limiter.shrink_to_fit();
            }
        }
    }
}

/// One route's checks.
pub struct RouteGuard {
    per_client: Option<DefaultKeyedRateLimiter<ClientKey>>,
    per_route: Option<DefaultDirectRateLimiter>,
    auth: Option<Verifier>,
}

/// The address a client limit counts by: an IPv4 address, or an IPv6 /64 (one host
/// holds a whole /64, so counting single addresses would let it take 2^64 limits).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClientKey(u128);

impl ClientKey {
    /// The key of `address`.
    pub fn of(address: IpAddr) -> ClientKey {
        match address {
            IpAddr::V4(v4) => ClientKey(u128::from(v4.to_bits())),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => ClientKey(u128::from(v4.to_bits())),
                None => ClientKey((v6.to_bits() >> 64) << 64 | 1),
            },
        }
    }
}

fn quota(limit: RateLimit) -> Quota {
    let burst = NonZeroU32::new(limit.burst).unwrap_or(NonZeroU32::MIN);
    // The deployment refuses rates faster than a microsecond apart, so the interval
    // is never zero; if it were, a limit of one per nanosecond is the closest.
    Quota::with_period(limit.rate.interval())
        .unwrap_or_else(|| Quota::per_second(NonZeroU32::MAX))
        .allow_burst(burst)
}

impl RouteGuard {
    fn new(rules: &RouteAccess) -> RouteGuard {
        RouteGuard {
            per_client: rules
                .per_client
                .map(|limit| RateLimiter::dashmap(quota(limit))),
            per_route: rules
                .per_route
                .map(|limit| RateLimiter::direct(quota(limit))),
            auth: rules
                .auth
                .as_ref()
                .map(|issuer| Verifier::new(issuer.clone())),
        }
    }

    /// Checks a request from `client`: its limits, then its token. The headers the
    /// module should see for a verified token are added to `headers`.
    pub fn check(&self, client: IpAddr, headers: &mut HeaderMap) -> Result<(), Refusal> {
        if let Some(limiter) = &self.per_client {
            if let Err(not_until) = limiter.check_key(&ClientKey::of(client)) {
                return Err(Refusal::RateLimited {
                    scope: LimitScope::Client,
                    retry_after: not_until.wait_time_from(DefaultClock::default().now()),
                });
            }
        }
        if let Some(limiter) = &self.per_route {
            if let Err(not_until) = limiter.check() {
                return Err(Refusal::RateLimited {
                    scope: LimitScope::Route,
                    retry_after: not_until.wait_time_from(DefaultClock::default().now()),
                });
            }
        }
        if let Some(verifier) = &self.auth {
            let verified = verifier.verify(headers)?;
            if let Some(subject) = verified.subject {
                headers.insert(SUBJECT_HEADER, subject);
            }
            headers.insert(CLAIMS_HEADER, verified.claims);
        }
        Ok(())
    }
}

/// What a verified token tells the module.
struct Verified {
    subject: Option<HeaderValue>,
    claims: HeaderValue,
}

/// Verifies bearer tokens of one issuer.
struct Verifier {
    issuer: Arc<Issuer>,
    /// Per key: the rules its tokens are held to (its own algorithms: a validation
    /// names one key family only, so no token can pick another).
    keys: Vec<(TrustedKey, Validation)>,
}

impl Verifier {
    fn new(issuer: Arc<Issuer>) -> Verifier {
        let keys = issuer
            .keys
            .iter()
            // A key with no algorithm verifies nothing (the deployment never lets one
            // through; it would be dropped here rather than trusted with a default).
            .filter_map(|key| {
                let mut validation = Validation::new(*key.algorithms.first()?);
                validation.algorithms = key.algorithms.clone();
                validation.leeway = issuer.leeway.as_secs();
                validation.validate_exp = true;
                validation.validate_nbf = true;
                validation.set_issuer(&[issuer.issuer.as_str()]);
                validation.set_audience(&issuer.audience);
                validation.set_required_spec_claims(&["exp", "iss", "aud"]);
                Some((key.clone(), validation))
            })
            .collect();
        Verifier { issuer, keys }
    }

    fn verify(&self, headers: &HeaderMap) -> Result<Verified, Refusal> {
        let refuse = |reason: &str| Refusal::Unauthenticated {
            token_sent: true,
            reason: reason.to_string(),
        };
        let Some(token) = bearer_token(headers) else {
            return Err(Refusal::Unauthenticated {
                token_sent: false,
                reason: "a bearer token is required".to_string(),
            });
        };
        // The header only picks the key; `decode` verifies everything it claims.
        let header = decode_header(token).map_err(|_| refuse("the token is malformed"))?;
        let chosen = match &header.kid {
            Some(kid) => self
                .keys
                .iter()
                .find(|(key, _)| key.id.as_deref() == Some(kid.as_str())),
            None if self.keys.len() == 1 => self.keys.first(),
            None => None,
        };
        let Some((key, validation)) = chosen else {
            return Err(refuse(if header.kid.is_some() {
                "the token names a key the issuer does not have"
            } else {
                "the token names no key (kid)"
            }));
        };
        let data =
            decode::<serde_json::Map<String, serde_json::Value>>(token, &key.key, validation)
                .map_err(|error| refuse(describe(error.kind())))?;
        let claims = data.claims;
        let subject = match claims.get("sub") {
            None => None,
            Some(serde_json::Value::String(sub)) => Some(
                HeaderValue::from_str(sub)
                    .map_err(|_| refuse("the token's sub is not a plain string"))?,
            ),
            Some(_) => return Err(refuse("the token's sub is not a string")),
        };
        let shown: serde_json::Map<String, serde_json::Value> = match &self.issuer.claims {
            None => claims,
            Some(names) => claims
                .into_iter()
                .filter(|(name, _)| names.contains(name))
                .collect(),
        };
        let claims = HeaderValue::from_str(&ascii_json(&serde_json::Value::Object(shown)))
            .map_err(|_| refuse("the token's claims cannot be passed on"))?;
        Ok(Verified { subject, claims })
    }
}

/// The token of an `Authorization: Bearer …` header.
fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|token| !token.is_empty())
}

/// What a client is told about a token that did not verify.
fn describe(kind: &ErrorKind) -> &'static str {
    match kind {
        ErrorKind::ExpiredSignature => "the token has expired",
        ErrorKind::ImmatureSignature => "the token is not valid yet (nbf)",
        ErrorKind::InvalidIssuer => "the token is from another issuer",
        ErrorKind::InvalidAudience => "the token is for another audience",
        ErrorKind::InvalidSignature => "the token's signature does not verify",
        ErrorKind::InvalidAlgorithm | ErrorKind::MissingAlgorithm => {
            "the token's algorithm is not accepted"
        }
        ErrorKind::MissingRequiredClaim(_) => "the token lacks a required claim (exp, iss, aud)",
        ErrorKind::InvalidClaimFormat(_) => "a claim of the token has the wrong type",
        _ => "the token is malformed",
    }
}

/// `value` as JSON with every non-ASCII character escaped: a header value carries
/// ASCII only.
fn ascii_json(value: &serde_json::Value) -> String {
    use std::fmt::Write;
    let text = value.to_string();
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        // serde_json escapes control characters already; DEL it leaves as is.
        if c.is_ascii() && c != '\x7f' {
            out.push(c);
        } else {
            let mut units = [0u16; 2];
            for unit in c.encode_utf16(&mut units) {
                let _ = write!(out, "\\u{unit:04x}");
            }
        }
    }
    out
}

#[cfg(test)]
mod tests;
