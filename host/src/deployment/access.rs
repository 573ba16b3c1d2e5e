//! `[gateway.issuers.NAME]` and `[gateway.routes."/path"]`: who may use a route and how
//! often. An issuer is a token service the gateway trusts (its keys, algorithms,
//! `iss` and `aud`); a route may require a token from one, and may be rate limited per
//! client address and as a whole.
//!
//! Everything is checked here, before a node serves: key files are read and parsed, so
//! a key that cannot verify anything is a configuration error naming its file, not a
//! 401 for every client later. Verifying tokens is the gateway's
//! (`gateway::access`); this module owns what the operator trusts.

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, JwkSet, PublicKeyUse};
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use super::errors::Problems;
use super::modules::ModuleSpec;
use super::routes;
use super::units::{Rate, Timeout};

/// How far a token's `exp` and `nbf` may be off when the file does not say.
pub const DEFAULT_LEEWAY: Duration = Duration::from_secs(30);
/// The most leeway a file may give: past it, an expired token is simply accepted.
const MAX_LEEWAY: Duration = Duration::from_secs(300);
/// The shortest shared secret accepted for HS algorithms (RFC 7518 §3.2: at least the
/// hash's size; 32 bytes covers HS256).
const MIN_SECRET_BYTES: usize = 32;

/// `[gateway.issuers.NAME]` as written: a token service the gateway trusts.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IssuerSection {
    /// A JWKS file: the issuer's public keys, told apart by `kid`.
    #[serde(default)]
    pub jwks: Option<PathBuf>,
    /// One public key (or certificate) in PEM.
    #[serde(default)]
    pub pem: Option<PathBuf>,
    /// A file holding a shared secret, for the HS algorithms only.
    #[serde(default)]
    pub secret_file: Option<PathBuf>,
    /// The signature algorithms accepted, named as in JOSE (`"ES256"`, `"RS256"`…).
    pub algorithms: Vec<String>,
    /// The `iss` every token must carry.
    pub issuer: String,
    /// The `aud` a token must carry (one of them, when it carries several).
    pub audience: Audience,
    /// How far `exp` and `nbf` may be off (clock skew); default 30s, at most 5m.
    #[serde(default)]
    pub leeway: Option<Timeout>,
    /// The claims the module is shown; all of them when absent.
    #[serde(default)]
    pub claims: Option<Vec<String>>,
}

/// `audience = "shop"` or `audience = ["shop", "admin"]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Audience {
    /// One audience.
    One(String),
    /// Any of several.
    Many(Vec<String>),
}

/// `[gateway.routes."/path"]` as written: the rules of one module route.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteSection {
    /// The issuer (`[gateway.issuers.NAME]`) whose token the route requires.
    #[serde(default)]
    pub auth: Option<String>,
    /// How many requests each client address may make.
    #[serde(default)]
    pub client_rate: Option<Rate>,
    /// How many a client may make at once after a quiet spell; default: the rate's count.
    #[serde(default)]
    pub client_burst: Option<u32>,
    /// How many requests the route takes from all clients together.
    #[serde(default)]
    pub route_rate: Option<Rate>,
    /// The route's burst; default: the rate's count.
    #[serde(default)]
    pub route_burst: Option<u32>,
}

/// A trusted issuer, its keys loaded.
#[derive(Debug)]
pub struct Issuer {
    /// Its name in the file (`[gateway.issuers.NAME]`).
    pub name: String,
    /// The keys it signs with.
    pub keys: Vec<TrustedKey>,
    /// The `iss` tokens must carry.
    pub issuer: String,
    /// The `aud` values a token may carry (one is enough).
    pub audience: Vec<String>,
    /// Allowed clock skew for `exp` and `nbf`.
    pub leeway: Duration,
    /// The claims a module sees; `None`: all.
    pub claims: Option<Vec<String>>,
}

/// One key an issuer signs with.
#[derive(Debug, Clone)]
pub struct TrustedKey {
    /// Its `kid`, when the JWKS gives one.
    pub id: Option<String>,
    /// The key.
    pub key: DecodingKey,
    /// The algorithms this key may verify: the configured ones of its family (and of
    /// its curve, or its own `alg` when the JWKS names one).
    pub algorithms: Vec<Algorithm>,
}

/// A rate limit: a rate and how many may come at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// The sustained rate.
    pub rate: Rate,
    /// How many requests may come at once after a quiet spell.
    pub burst: u32,
}

/// The checked rules of one route.
#[derive(Debug, Clone, Default)]
pub struct RouteAccess {
    /// The issuer whose token is required, if any.
    pub auth: Option<Arc<Issuer>>,
    /// The limit per client address.
    pub per_client: Option<RateLimit>,
    /// The limit for all clients together.
    pub per_route: Option<RateLimit>,
}

/// Checks `[gateway.issuers]` and `[gateway.routes]`: every route named is a module's
/// route, every issuer named exists and its keys load. The rules of each route, by its
/// normalised path.
pub(super) fn check_access(
    issuers: &BTreeMap<String, IssuerSection>,
    route_sections: &BTreeMap<String, RouteSection>,
    base: &Path,
    modules: &BTreeMap<String, ModuleSpec>,
    problems: &mut Problems,
) -> BTreeMap<String, RouteAccess> {
    let loaded: BTreeMap<&str, Arc<Issuer>> = issuers
        .iter()
        .filter_map(|(name, section)| {
            let key = format!("gateway.issuers.{name}");
            load_issuer(name, section, base, &key, problems)
                .map(|issuer| (name.as_str(), Arc::new(issuer)))
        })
        .collect();
    let mut access = BTreeMap::new();
    for (written, section) in route_sections {
        let key = format!("gateway.routes.\"{written}\"");
        let route = match routes::normalise(written) {
            Ok(route) => route,
            Err(problem) => {
                problems.add(&key, &problem);
                continue;
            }
        };
        if !modules
            .values()
            .any(|module| module.routes.contains(&route))
        {
            problems.add(
                &key,
                &format!("no module serves the route {route}: the key must be one of a module's `routes`"),
            );
            continue;
        }
        let auth = match &section.auth {
            None => None,
            Some(name) => match loaded.get(name.as_str()) {
                Some(issuer) => Some(issuer.clone()),
                None if issuers.contains_key(name) => None, // its own problem is reported
                None => {
                    problems.add(
                        &format!("{key}.auth"),
                        &format!("no [gateway.issuers.{name}] is configured"),
                    );
                    None
                }
            },
        };
        let per_client = limit(
            section.client_rate,
            section.client_burst,
            &format!("{key}.client_burst"),
            problems,
        );
        let per_route = limit(
            section.route_rate,
            section.route_burst,
            &format!("{key}.route_burst"),
            problems,
        );
        access.insert(
            route,
            RouteAccess {
                auth,
                per_client,
                per_route,
            },
        );
    }
    access
}

/// A rate and its burst (the rate's count by default, at least 1).
fn limit(
    rate: Option<Rate>,
    burst: Option<u32>,
    key: &str,
    problems: &mut Problems,
) -> Option<RateLimit> {
    match (rate, burst) {
        (None, None) => None,
        (None, Some(_)) => {
            problems.add(key, "a burst needs its rate (the `_rate` key beside it)");
            None
        }
        (Some(_), Some(0)) => {
            problems.add(key, "must be at least 1");
            None
        }
        (Some(rate), burst) => Some(RateLimit {
            rate,
            burst: burst.unwrap_or(rate.count),
        }),
    }
}

/// Loads one issuer's keys and checks its settings; `None` after reporting problems.
fn load_issuer(
    name: &str,
    section: &IssuerSection,
    base: &Path,
    key: &str,
    problems: &mut Problems,
) -> Option<Issuer> {
    let before = problems.errors.len();
    let mut algorithms = Vec::new();
    if section.algorithms.is_empty() {
        problems.add(
            &format!("{key}.algorithms"),
            "name the algorithms the issuer signs with, e.g. [\"ES256\"]",
        );
    }
    for (i, written) in section.algorithms.iter().enumerate() {
        match Algorithm::from_str(written) {
            Ok(algorithm) => algorithms.push(algorithm),
            Err(_) if written.eq_ignore_ascii_case("none") => problems.add(
                &format!("{key}.algorithms[{i}]"),
                "`none` is never accepted: an unsigned token proves nothing",
            ),
            Err(_) => problems.add(
                &format!("{key}.algorithms[{i}]"),
                &format!(
                    "unknown algorithm {written:?}; one of HS256, HS384, HS512, RS256, RS384, \
                     RS512, PS256, PS384, PS512, ES256, ES384, EdDSA"
                ),
            ),
        }
    }
    if section.issuer.trim().is_empty() {
        problems.add(&format!("{key}.issuer"), "must not be empty");
    }
    let audience = match &section.audience {
        Audience::One(one) => vec![one.clone()],
        Audience::Many(many) => many.clone(),
    };
    if audience.is_empty() || audience.iter().any(|aud| aud.trim().is_empty()) {
        problems.add(
            &format!("{key}.audience"),
            "name the audience tokens are meant for (not empty)",
        );
    }
    let leeway = section.leeway.map_or(DEFAULT_LEEWAY, Timeout::duration);
    if leeway > MAX_LEEWAY {
        problems.add(&format!("{key}.leeway"), "must be at most 5m");
    }
    if let Some(claims) = &section.claims {
        if claims.iter().any(|claim| claim.trim().is_empty()) {
            problems.add(&format!("{key}.claims"), "claim names must not be empty");
        }
    }
    let hmac = algorithms
        .iter()
        .any(|alg| alg.family() == AlgorithmFamily::Hmac);
    let keys = match (&section.jwks, &section.pem, &section.secret_file) {
        (Some(file), None, None) if !hmac => load_jwks(
            &base.join(file),
            &algorithms,
            &format!("{key}.jwks"),
            problems,
        ),
        (None, Some(file), None) if !hmac => load_pem(
            &base.join(file),
            &algorithms,
            &format!("{key}.pem"),
            problems,
        ),
        (None, None, Some(file)) => {
            if algorithms
                .iter()
                .any(|alg| alg.family() != AlgorithmFamily::Hmac)
            {
                problems.add(
                    &format!("{key}.algorithms"),
                    "a shared secret verifies HS256, HS384 or HS512 only",
                );
            }
            load_secret(
                &base.join(file),
                &algorithms,
                &format!("{key}.secret_file"),
                problems,
            )
        }
        (None, None, None) => {
            problems.add(
                key,
                "say where the keys are: `jwks`, `pem` or `secret_file`",
            );
            Vec::new()
        }
        (jwks, pem, None) if jwks.is_some() != pem.is_some() => {
            // A public key with an HS algorithm: the classic confusion, where the
            // public key (known to everyone) becomes the HMAC secret.
            problems.add(
                &format!("{key}.algorithms"),
                "HS algorithms are never used with a public key (anyone could sign with it); \
                 use `secret_file` for HS, or asymmetric algorithms for `jwks`/`pem`",
            );
            Vec::new()
        }
        _ => {
            problems.add(key, "give exactly one of `jwks`, `pem` and `secret_file`");
            Vec::new()
        }
    };
    if problems.errors.len() > before {
        return None;
    }
    Some(Issuer {
        name: name.to_string(),
        keys,
        issuer: section.issuer.clone(),
        audience,
        leeway,
        claims: section.claims.clone(),
    })
}

/// Reads a key file, naming it in the problem when it cannot.
fn read(path: &Path, key: &str, problems: &mut Problems) -> Option<Vec<u8>> {
    match std::fs::read(path) {
        Ok(bytes) => Some(bytes),
        Err(error) => {
            problems.add(key, &format!("cannot read {}: {error}", path.display()));
            None
        }
    }
}

/// The keys of a JWKS file: the signature keys whose family (and curve, and `alg`
/// when given) matches a configured algorithm. Encryption keys and key types the
/// gateway does not verify with are passed over; a symmetric (`oct`) key is refused,
/// since a key set is public.
fn load_jwks(
    path: &Path,
    algorithms: &[Algorithm],
    key: &str,
    problems: &mut Problems,
) -> Vec<TrustedKey> {
    let Some(bytes) = read(path, key, problems) else {
        return Vec::new();
    };
    let set: JwkSet = match serde_json::from_slice(&bytes) {
        Ok(set) => set,
        Err(error) => {
            problems.add(
                key,
                &format!(
                    "{} is not a JWKS (a JSON {{\"keys\": [...]}}): {error}",
                    path.display()
                ),
            );
            return Vec::new();
        }
    };
    let mut keys = Vec::new();
    for (i, jwk) in set.keys.iter().enumerate() {
        let what = jwk
            .common
            .key_id
            .as_deref()
            .map_or_else(|| format!("key {i}"), |kid| format!("key {kid:?}"));
        if matches!(jwk.algorithm, AlgorithmParameters::OctetKey(_)) {
            problems.add(
                key,
                &format!(
                    "{} {what} is a symmetric (`oct`) key: a key set is public, so it \
                     would let anyone sign",
                    path.display()
                ),
            );
            continue;
        }
        if matches!(jwk.common.public_key_use, Some(ref u) if *u != PublicKeyUse::Signature) {
            continue;
        }
        // The algorithms this key can verify, by its type and curve.
        let fits: &[Algorithm] = match &jwk.algorithm {
            AlgorithmParameters::RSA(_) => AlgorithmFamily::Rsa.algorithms(),
            AlgorithmParameters::EllipticCurve(ec) => match ec.curve {
                EllipticCurve::P256 => &[Algorithm::ES256],
                EllipticCurve::P384 => &[Algorithm::ES384],
                _ => &[],
            },
            AlgorithmParameters::OctetKeyPair(okp) if okp.curve == EllipticCurve::Ed25519 => {
                &[Algorithm::EdDSA]
            }
            _ => &[],
        };
        let own = jwk
            .common
            .key_algorithm
            .and_then(|alg| Algorithm::try_from(alg).ok());
        let usable: Vec<Algorithm> = algorithms
            .iter()
            .copied()
            .filter(|alg| fits.contains(alg) && own.is_none_or(|own| own == *alg))
            .collect();
        if usable.is_empty() {
            continue;
        }
        match DecodingKey::from_jwk(jwk) {
            Ok(decoding) => keys.push(TrustedKey {
                id: jwk.common.key_id.clone(),
                key: decoding,
                algorithms: usable,
            }),
            Err(error) => problems.add(
                key,
                &format!("{} {what} is not a usable key: {error}", path.display()),
            ),
        }
    }
    if keys.is_empty() && !algorithms.is_empty() {
        problems.add(
            key,
            &format!(
                "{} has no signature key for {}",
                path.display(),
                names(algorithms)
            ),
        );
    }
    if keys.len() > 1 && keys.iter().any(|k| k.id.is_none()) {
        problems.add(
            key,
            &format!(
                "{} has several keys: each needs a `kid`, so a token can say which signed it",
                path.display()
            ),
        );
    }
    keys
}

/// The one key of a PEM file, read as the family of the configured algorithms.
fn load_pem(
    path: &Path,
    algorithms: &[Algorithm],
    key: &str,
    problems: &mut Problems,
) -> Vec<TrustedKey> {
    let Some(first) = algorithms.first() else {
        return Vec::new();
    };
    let family = first.family();
    if algorithms.iter().any(|alg| alg.family() != family) {
        problems.add(
            key,
            &format!(
                "one PEM key verifies one family of algorithms; {} mixes them (use a JWKS for several keys)",
                names(algorithms)
            ),
        );
        return Vec::new();
    }
    let Some(bytes) = read(path, key, problems) else {
        return Vec::new();
    };
    let (decoded, kind) = match family {
        AlgorithmFamily::Rsa => (DecodingKey::from_rsa_pem(&bytes), "an RSA"),
        AlgorithmFamily::Ec => (DecodingKey::from_ec_pem(&bytes), "an EC"),
        AlgorithmFamily::Ed => (DecodingKey::from_ed_pem(&bytes), "an Ed25519"),
        AlgorithmFamily::Hmac => return Vec::new(),
    };
    match decoded {
        Ok(decoding) => vec![TrustedKey {
            id: None,
            key: decoding,
            algorithms: algorithms.to_vec(),
        }],
        Err(error) => {
            problems.add(
                key,
                &format!(
                    "{} is not {kind} public key in PEM (for {}): {error}",
                    path.display(),
                    names(algorithms)
                ),
            );
            Vec::new()
        }
    }
}

/// The shared secret of a file (a trailing newline is not part of it).
fn load_secret(
    path: &Path,
    algorithms: &[Algorithm],
    key: &str,
    problems: &mut Problems,
) -> Vec<TrustedKey> {
    let Some(bytes) = read(path, key, problems) else {
        return Vec::new();
    };
    let secret = bytes.strip_suffix(b"\n").unwrap_or(&bytes);
    let secret = secret.strip_suffix(b"\r").unwrap_or(secret);
    if secret.len() < MIN_SECRET_BYTES {
        problems.add(
            key,
            &format!(
                "the secret in {} is {} bytes; at least {MIN_SECRET_BYTES} are needed",
                path.display(),
                secret.len()
            ),
        );
        return Vec::new();
    }
    match DecodingKey::from_secret(secret) {
        Ok(decoding) => vec![TrustedKey {
            id: None,
            key: decoding,
            algorithms: algorithms.to_vec(),
        }],
        Err(error) => {
            problems.add(key, &format!("{}: {error}", path.display()));
            Vec::new()
        }
    }
}

/// `"ES256, RS256"`.
fn names(algorithms: &[Algorithm]) -> String {
    algorithms
        .iter()
        .map(|alg| format!("{alg:?}"))
        .collect::<Vec<_>>()
        .join(", ")
}
