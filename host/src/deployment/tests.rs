use super::*;
use database::{DEFAULT_ACQUIRE_TIMEOUT, DEFAULT_POOL};
use std::time::Duration;

fn parse(text: &str) -> Result<Deployment, ConfigErrors> {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("app.wasm"), b"\0asm").unwrap();
    std::fs::write(dir.path().join("other.wasm"), b"\0asm").unwrap();
    Deployment::parse(&dir.path().join("deploy.toml"), text)
}

fn errors(text: &str) -> Vec<ConfigError> {
    parse(text)
        .expect_err("expected the deployment to be refused")
        .0
}

const MINIMAL: &str = r#"
[app]
name = "shop"

[modules.users]
component = "app.wasm"
routes = ["/users"]
"#;

#[test]
fn a_minimal_deployment_gets_defaults() {
    let deployment = parse(MINIMAL).unwrap();
    assert_eq!(deployment.app_name, "shop");
    let users = &deployment.modules["users"];
    assert_eq!(users.routes, vec!["/users"]);
    assert_eq!(users.limits, ModuleLimits::default());
    assert!(matches!(users.component, ComponentSource::Wasm(_)));
    assert_eq!(deployment.gateway.max_body, ByteSize::mib(1));
}

#[test]
fn an_unknown_key_is_named_with_file_line_and_path() {
    let errors = errors("[app]\nname = \"shop\"\n\n[modules.users]\ncompnent = \"app.wasm\"\n");
    assert_eq!(errors.len(), 1);
    let error = &errors[0];
    assert_eq!(error.key, "modules.users.compnent");
    assert_eq!(error.line, Some(5));
    assert!(
        error.problem.contains("unknown field `compnent`"),
        "{}",
        error.problem
    );
    let shown = error.to_string();
    assert!(
        shown.contains("deploy.toml:5: modules.users.compnent"),
        "{shown}"
    );
}

#[test]
fn an_unknown_section_is_named() {
    let errors = errors(&format!("{MINIMAL}\n[gatway]\nlisten = \"1.2.3.4:5\"\n"));
    assert_eq!(errors[0].key, "gatway");
}

#[test]
fn bad_sizes_and_durations_name_their_key() {
    let memory_errors = errors(&format!(
        "{MINIMAL}limits = {{ memory = \"64 parsecs\" }}\n"
    ));
    assert_eq!(memory_errors[0].key, "modules.users.limits.memory");
    assert!(
        memory_errors[0].problem.contains("64 parsecs"),
        "{}",
        memory_errors[0].problem
    );

    let timeout_errors = errors(&format!("{MINIMAL}limits = {{ timeout = \"soon\" }}\n"));
    assert_eq!(timeout_errors[0].key, "modules.users.limits.timeout");
}

#[test]
fn out_of_range_limits_are_refused() {
    let errors = errors(&format!(
        "{MINIMAL}limits = {{ memory = \"1KiB\", timeout = \"0s\", concurrency = 0 }}\n"
    ));
    let keys: Vec<&str> = errors.iter().map(|e| e.key.as_str()).collect();
    assert_eq!(
        keys,
        [
            "modules.users.limits.memory",
            "modules.users.limits.timeout",
            "modules.users.limits.concurrency"
        ]
    );
}

#[test]
fn a_missing_component_file_is_named() {
    let errors = errors("[app]\nname = \"shop\"\n[modules.users]\ncomponent = \"missing.wasm\"\n");
    assert_eq!(errors[0].key, "modules.users.component");
    assert!(
        errors[0].problem.contains("does not exist"),
        "{}",
        errors[0].problem
    );
}

#[test]
fn duplicate_routes_across_modules_are_refused() {
    let errors = errors(&format!(
        "{MINIMAL}\n[modules.other]\ncomponent = \"other.wasm\"\nroutes = [\"/users/\"]\n"
    ));
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0].key, "modules.users.routes[0]");
    assert!(
        errors[0].problem.contains("module `other` already claims"),
        "{}",
        errors[0].problem
    );
}

#[test]
fn nested_routes_of_one_module_overlap_but_across_modules_longest_wins() {
    let errors = errors(
        "[app]\nname = \"shop\"\n[modules.users]\ncomponent = \"app.wasm\"\nroutes = [\"/users\", \"/users/admin\"]\n",
    );
    assert_eq!(errors[0].key, "modules.users.routes[1]");
    assert!(
        errors[0].problem.contains("overlaps"),
        "{}",
        errors[0].problem
    );

    let ok = parse(&format!(
        "{MINIMAL}\n[modules.admin]\ncomponent = \"other.wasm\"\nroutes = [\"/users/admin\"]\n"
    ));
    assert!(ok.is_ok(), "{ok:?}");
}

#[test]
fn malformed_and_reserved_routes_are_refused() {
    for (route, expect) in [
        ("users", "must start with '/'"),
        ("/users?x=1", "contains '?'"),
        ("/a//b", "empty"),
        ("/healthz", "reserved"),
        ("/readyz/deep", "reserved"),
    ] {
        let errors = errors(&format!(
            "[app]\nname = \"shop\"\n[modules.users]\ncomponent = \"app.wasm\"\nroutes = [{route:?}]\n"
        ));
        assert!(
            errors[0].problem.contains(expect),
            "{route}: {}",
            errors[0].problem
        );
    }
}

#[test]
fn every_problem_is_reported_not_just_the_first() {
    let errors = errors(
        "[app]\nname = \"\"\n[modules.Users]\ncomponent = \"nope.wasm\"\nroutes = [\"x\"]\n",
    );
    let keys: Vec<&str> = errors.iter().map(|e| e.key.as_str()).collect();
    assert!(keys.contains(&"app.name"), "{keys:?}");
    assert!(keys.contains(&"modules.Users"), "{keys:?}");
    assert!(keys.contains(&"modules.Users.component"), "{keys:?}");
    assert!(keys.contains(&"modules.Users.routes[0]"), "{keys:?}");
}

#[test]
fn a_deployment_without_modules_is_refused() {
    let errors = errors("[app]\nname = \"shop\"\n");
    assert_eq!(errors[0].key, "modules");
}

#[test]
fn a_crate_directory_is_a_component_source() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("users")).unwrap();
    std::fs::write(
        dir.path().join("users/Cargo.toml"),
        "[package]\nname = \"users\"\nversion = \"0.1.0\"\n",
    )
    .unwrap();
    let deployment = Deployment::parse(
        &dir.path().join("deploy.toml"),
        "[app]\nname = \"shop\"\n[modules.users]\ncomponent = \"users\"\n",
    )
    .unwrap();
    assert_eq!(
        deployment.modules["users"].component,
        ComponentSource::Crate {
            dir: dir.path().join("users"),
            package: "users".into()
        }
    );
}

#[test]
fn covers_matches_at_segment_boundaries() {
    assert!(routes::covers("/users", "/users"));
    assert!(routes::covers("/users", "/users/42"));
    assert!(!routes::covers("/users", "/usersx"));
    assert!(routes::covers("/", "/anything"));
}

#[test]
fn grants_name_other_deployed_modules_once() {
    let ok = parse(&format!(
        "{MINIMAL}calls = [\"other\"]\n[modules.other]\ncomponent = \"other.wasm\"\n"
    ))
    .unwrap();
    assert_eq!(ok.modules["users"].calls, vec!["other"]);

    let errors = errors(&format!(
        "{MINIMAL}calls = [\"users\", \"ghost\", \"other\", \"other\"]\n[modules.other]\ncomponent = \"other.wasm\"\n"
    ));
    let found: Vec<(&str, &str)> = errors
        .iter()
        .map(|e| (e.key.as_str(), e.problem.as_str()))
        .collect();
    assert_eq!(found.len(), 3, "{found:?}");
    assert_eq!(found[0].0, "modules.users.calls[0]");
    assert!(found[0].1.contains("itself"));
    assert_eq!(found[1].0, "modules.users.calls[1]");
    assert!(found[1].1.contains("no module `ghost`"));
    assert_eq!(found[2].0, "modules.users.calls[3]");
    assert!(found[2].1.contains("granted twice"));
}

#[test]
fn a_database_is_sqlite_or_postgres_with_its_pool() {
    let sqlite = parse(&format!("{MINIMAL}database = \"sqlite\"\n")).unwrap();
    let spec = sqlite.modules["users"].database.clone().unwrap();
    assert_eq!(spec.backend, DatabaseBackend::Sqlite);
    assert_eq!(spec.pool, DEFAULT_POOL);
    assert_eq!(spec.acquire_timeout.duration(), DEFAULT_ACQUIRE_TIMEOUT);

    let postgres = parse(&format!(
        "{MINIMAL}database = {{ postgres = \"postgres://admin@db/shop\", pool = 16, acquire_timeout = \"250ms\" }}\n"
    ))
    .unwrap();
    let spec = postgres.modules["users"].database.clone().unwrap();
    assert_eq!(
        spec.backend,
        DatabaseBackend::Postgres {
            url: "postgres://admin@db/shop".into(),
            schema: "users".into(),
            tls: PostgresTls::default(),
        }
    );
    assert_eq!(spec.pool, 16);
    assert_eq!(spec.acquire_timeout.duration(), Duration::from_millis(250));

    // Encrypted and verified against a CA file, relative to the deployment file.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("app.wasm"), b"\0asm").unwrap();
    std::fs::write(dir.path().join("db-ca.pem"), b"a CA").unwrap();
    let verified = Deployment::parse(
        &dir.path().join("deploy.toml"),
        &format!(
            "{MINIMAL}database = {{ postgres = \"postgres://admin@db/shop\", tls = \"verify-full\", ca = \"db-ca.pem\" }}\n"
        ),
    )
    .unwrap();
    let spec = verified.modules["users"].database.clone().unwrap();
    let DatabaseBackend::Postgres { tls, .. } = spec.backend else {
        panic!("postgres");
    };
    assert_eq!(
        tls,
        PostgresTls {
            mode: Some(TlsMode::VerifyFull),
            ca: Some(dir.path().join("db-ca.pem")),
        }
    );

    // No database unless asked for.
    assert!(parse(MINIMAL).unwrap().modules["users"].database.is_none());
}

#[test]
fn database_mistakes_name_their_key() {
    let cases = [
        ("database = \"mysql\"", "modules.users.database"),
        ("database = { pool = 0 }", "modules.users.database.pool"),
        ("database = { pool = \"8\" }", "modules.users.database.pool"),
        ("database = { poool = 8 }", "modules.users.database.poool"),
        (
            "database = { postgres = \"mysql://x\" }",
            "modules.users.database.postgres",
        ),
        (
            "database = { postgres = \"$MODHOST_TEST_SURELY_UNSET_VAR\" }",
            "modules.users.database.postgres",
        ),
        (
            "database = { schema = \"users\" }",
            "modules.users.database.schema",
        ),
        (
            "database = { postgres = \"postgres://db/x\", schema = \"Bad-Name\" }",
            "modules.users.database.schema",
        ),
        (
            "database = { postgres = \"postgres://db/x\", schema = \"modhost_orders\" }",
            "modules.users.database.schema",
        ),
        (
            "database = { acquire_timeout = \"0s\" }",
            "modules.users.database.acquire_timeout",
        ),
        (
            "database = { postgres = \"postgres://db/x\", tls = \"required\" }",
            "modules.users.database.tls",
        ),
        (
            "database = { postgres = \"postgres://db/x\", tls = \"verify-full\", ca = \"none.pem\" }",
            "modules.users.database.ca",
        ),
        (
            "database = { postgres = \"postgres://db/x\", tls = \"require\", ca = \"app.wasm\" }",
            "modules.users.database.ca",
        ),
        (
            "database = { sqlite = true, tls = \"verify-full\" }",
            "modules.users.database.tls",
        ),
        (
            "database = { postgres = \"postgres://db/x\", tls = \"verify-ca\" }",
            "modules.users.database.tls",
        ),
        ("migrations = \".\"", "modules.users.migrations"),
        (
            "database = \"sqlite\"\nmigrations = \"nowhere\"",
            "modules.users.migrations",
        ),
    ];
    for (line, key) in cases {
        let errors = errors(&format!("{MINIMAL}{line}\n"));
        assert!(
            errors.iter().any(|e| e.key == key),
            "{line}: expected an error at {key}, got {errors:?}"
        );
    }
}

#[test]
fn modules_on_postgres_never_share_a_role_or_a_schema() {
    let pg = "database = { postgres = \"postgres://admin@db/shop\" }";
    let found = errors(&format!(
        "{MINIMAL}{pg}\n[modules.a-b]\ncomponent = \"app.wasm\"\n{pg}\n\
         [modules.a_b]\ncomponent = \"other.wasm\"\n{pg}\n"
    ));
    assert!(
        found.iter().any(|e| e
            .problem
            .contains("would share the Postgres role modhost_a_b")),
        "{found:?}"
    );
    let found = errors(&format!(
        "{MINIMAL}database = {{ postgres = \"postgres://admin@db/shop\", schema = \"billing\" }}\n\
         [modules.billing]\ncomponent = \"other.wasm\"\n{pg}\n"
    ));
    assert!(
        found
            .iter()
            .any(|e| e.key == "modules.users.database.schema"
                || e.key == "modules.billing.database.schema"),
        "{found:?}"
    );
    let found = errors(&format!(
        "{MINIMAL}database = {{ postgres = \"postgres://admin@db/shop\", schema = \"public\" }}\n"
    ));
    assert_eq!(found[0].key, "modules.users.database.schema", "{found:?}");
}

const EVENTS: &str = r#"
[app]
name = "shop"

[modules.payments]
component = "app.wasm"
database = "sqlite"
publishes = ["payments.charged", "payments.failed"]

[modules.orders]
component = "other.wasm"
database = "sqlite"
subscribes = ["payments.charged"]
"#;

#[test]
fn events_default_to_the_embedded_bus_and_grants_are_kept() {
    let deployment = parse(EVENTS).unwrap();
    assert_eq!(deployment.events.backend, EventsBackend::Embedded);
    assert_eq!(deployment.events.max_attempts, 5);
    assert_eq!(
        deployment.modules["payments"].publishes,
        vec!["payments.charged", "payments.failed"]
    );
    assert_eq!(
        deployment.modules["orders"].subscribes,
        vec!["payments.charged"]
    );
}

#[test]
fn the_kafka_bus_needs_brokers_and_takes_its_settings() {
    let kafka = parse(&format!(
        "{EVENTS}\n[events]\nbackend = \"kafka\"\nbrokers = \"10.0.0.1:9092,10.0.0.2:9092\"\npartitions = 12\nmax_attempts = 8\nbackoff = \"250ms\"\n"
    ))
    .unwrap();
    assert_eq!(
        kafka.events.backend,
        EventsBackend::Kafka {
            brokers: "10.0.0.1:9092,10.0.0.2:9092".into(),
            partitions: 12,
            replication: 1,
            security: KafkaSecurity::default(),
        }
    );
    assert_eq!(kafka.events.max_attempts, 8);
    assert_eq!(kafka.events.backoff, Duration::from_millis(250));

    let keys = |extra: &str| -> Vec<String> {
        errors(&format!("{EVENTS}\n[events]\n{extra}\n"))
            .into_iter()
            .map(|e| e.key)
            .collect()
    };
    assert_eq!(keys("backend = \"kafka\""), vec!["events.brokers"]);
    assert_eq!(
        keys("backend = \"kafka\"\nbrokers = \"nohost\""),
        vec!["events.brokers"]
    );
    assert_eq!(keys("backend = \"rabbit\""), vec!["events.backend"]);
    assert_eq!(keys("brokers = \"a:1\""), vec!["events.brokers"]);
    assert_eq!(keys("max_attempts = 0"), vec!["events.max_attempts"]);
    assert_eq!(
        keys("backoff = \"2s\"\nmax_backoff = \"1s\""),
        vec!["events.max_backoff"]
    );
    assert_eq!(keys("retention = \"1s\""), vec!["events.retention"]);
    assert_eq!(keys("bakend = \"kafka\""), vec!["events.bakend"]);

    // TLS and SASL to the brokers.
    let kafka = "backend = \"kafka\"\nbrokers = \"k:9092\"\n";
    let sasl = |mechanism: &str, password: &str| {
        format!("sasl = {{ mechanism = \"{mechanism}\", username = \"shop\", password = \"{password}\" }}")
    };
    assert_eq!(
        keys(&format!("{kafka}{}", sasl("GSSAPI", "p"))),
        vec!["events.sasl.mechanism"]
    );
    assert_eq!(
        keys(&format!("{kafka}{}", sasl("PLAIN", "p"))),
        vec!["events.sasl.mechanism"],
        "PLAIN without TLS sends the password in clear"
    );
    assert_eq!(
        keys(&format!(
            "{kafka}tls = {{}}\n{}",
            sasl("PLAIN", "$MODHOST_TEST_SURELY_UNSET_VAR")
        )),
        vec!["events.sasl.password"]
    );
    assert_eq!(
        keys(&format!("{kafka}tls = {{ ca = \"nowhere.pem\" }}")),
        vec!["events.tls.ca"]
    );
    assert_eq!(keys("tls = {}"), vec!["events.tls"]);
    let secured = parse(&format!(
        "{EVENTS}\n[events]\n{kafka}tls = {{}}\n{}\n",
        sasl("scram-sha-512", "s3cret")
    ))
    .unwrap();
    let EventsBackend::Kafka { security, .. } = &secured.events.backend else {
        panic!("kafka");
    };
    assert_eq!(security.tls, Some(KafkaTls { ca: None }));
    let login = security.sasl.as_ref().expect("a login");
    assert_eq!(login.mechanism, SaslMechanism::ScramSha512);
    assert_eq!(login.password, "s3cret");
    assert!(
        !format!("{security:?}").contains("s3cret"),
        "the password is in the debug output"
    );
}

#[test]
fn topics_are_valid_granted_published_and_need_a_database() {
    let cases = [
        (
            EVENTS.replace(
                "\"payments.failed\"]",
                "\"payments.failed\", \"bad topic\"]",
            ),
            "modules.payments.publishes[2]",
            "letters, digits",
        ),
        (
            EVENTS.replace("\"payments.failed\"]", "\"modhost.mine\"]"),
            "modules.payments.publishes[1]",
            "host's own",
        ),
        (
            EVENTS.replace("\"payments.failed\"]", "\"payments.charged\"]"),
            "modules.payments.publishes[1]",
            "listed twice",
        ),
        (
            EVENTS.replace(
                "subscribes = [\"payments.charged\"]",
                "subscribes = [\"payments.refunded\"]",
            ),
            "modules.orders.subscribes[0]",
            "no deployed module publishes",
        ),
        (
            EVENTS.replacen("database = \"sqlite\"\npublishes", "publishes", 1),
            "modules.payments.publishes",
            "outbox",
        ),
    ];
    for (text, key, problem) in cases {
        let found = errors(&text);
        assert!(
            found
                .iter()
                .any(|e| e.key == key && e.problem.contains(problem)),
            "expected {key}: …{problem}… in {found:?}"
        );
    }
}

/// Parses `text` beside `files` (name, contents) in a fresh directory.
fn parse_beside(text: &str, files: &[(&str, &[u8])]) -> Result<Deployment, ConfigErrors> {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("app.wasm"), b"\0asm").unwrap();
    for (name, contents) in files {
        std::fs::write(dir.path().join(name), contents).unwrap();
    }
    Deployment::parse(&dir.path().join("deploy.toml"), text)
}

/// A public key in PEM, and a JWKS holding it as `kid` "k1".
fn issuer_keys() -> (String, String) {
    let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let encoding = jsonwebtoken::EncodingKey::from_ec_pem(pair.serialize_pem().as_bytes()).unwrap();
    let mut jwk =
        jsonwebtoken::jwk::Jwk::from_encoding_key(&encoding, jsonwebtoken::Algorithm::ES256)
            .unwrap();
    jwk.common.key_id = Some("k1".into());
    let jwks = serde_json::json!({ "keys": [jwk] }).to_string();
    (pair.public_key_pem(), jwks)
}

const GUARDED: &str = r#"
[app]
name = "shop"

[gateway.issuers.shop]
jwks = "keys.json"
algorithms = ["ES256"]
issuer = "https://id.example"
audience = ["shop", "admin"]
leeway = "10s"
claims = ["sub", "role"]

[gateway.routes."/orders/"]
auth = "shop"
client_rate = "20/s"
route_rate = "600/min"
route_burst = 50

[modules.orders]
component = "app.wasm"
routes = ["/orders"]
"#;

#[test]
fn route_rules_load_their_issuers_keys() {
    let (_, jwks) = issuer_keys();
    let deployment = parse_beside(GUARDED, &[("keys.json", jwks.as_bytes())]).unwrap();
    let rules = &deployment.access["/orders"];
    let issuer = rules.auth.as_ref().unwrap();
    assert_eq!(issuer.keys.len(), 1);
    assert_eq!(issuer.keys[0].id.as_deref(), Some("k1"));
    assert_eq!(issuer.audience, ["shop", "admin"]);
    assert_eq!(issuer.leeway, Duration::from_secs(10));
    let client = rules.per_client.unwrap();
    assert_eq!((client.rate.count, client.burst), (20, 20));
    let route = rules.per_route.unwrap();
    assert_eq!((route.rate.per_second(), route.burst), (10.0, 50));
}

#[test]
fn unsafe_or_broken_issuers_are_refused_before_serving() {
    let (pem, jwks) = issuer_keys();
    let oct =
        r#"{"keys":[{"kty":"oct","kid":"s","k":"c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0"}]}"#;
    let cases: &[(&str, &str, &str)] = &[
        (
            r#"algorithms = ["ES256"]"#,
            r#"algorithms = ["none"]"#,
            "never accepted",
        ),
        (
            r#"algorithms = ["ES256"]"#,
            r#"algorithms = ["ES999"]"#,
            "unknown algorithm",
        ),
        (
            r#"algorithms = ["ES256"]"#,
            r#"algorithms = []"#,
            "name the algorithms",
        ),
        (
            r#"algorithms = ["ES256"]"#,
            r#"algorithms = ["HS256"]"#,
            "never used with a public key",
        ),
        (
            r#"jwks = "keys.json""#,
            r#"jwks = "oct.json""#,
            "symmetric (`oct`) key",
        ),
        (
            r#"jwks = "keys.json""#,
            r#"jwks = "missing.json""#,
            "cannot read",
        ),
        (
            r#"jwks = "keys.json""#,
            r#"jwks = "key.pem""#,
            "is not a JWKS",
        ),
        (
            r#"jwks = "keys.json""#,
            r#"pem = "keys.json""#,
            "is not an EC public key in PEM",
        ),
        (
            r#"jwks = "keys.json""#,
            "jwks = \"keys.json\"\npem = \"key.pem\"",
            "exactly one",
        ),
        (r#"jwks = "keys.json""#, "", "say where the keys are"),
        (
            r#"jwks = "keys.json""#,
            r#"secret_file = "short.txt""#,
            "a shared secret verifies HS",
        ),
        (
            r#"algorithms = ["ES256"]"#,
            r#"algorithms = ["ES384"]"#,
            "has no signature key for ES384",
        ),
        (
            r#"issuer = "https://id.example""#,
            r#"issuer = """#,
            "must not be empty",
        ),
        (r#"leeway = "10s""#, r#"leeway = "1h""#, "at most 5m"),
        (
            r#"auth = "shop""#,
            r#"auth = "other""#,
            "no [gateway.issuers.other]",
        ),
        (
            r#"[gateway.routes."/orders/"]"#,
            r#"[gateway.routes."/payments"]"#,
            "no module serves the route /payments",
        ),
        (
            r#"client_rate = "20/s""#,
            r#"client_rate = "20/fortnight""#,
            "unknown period",
        ),
        (r#"route_rate = "600/min""#, "", "a burst needs its rate"),
        (
            r#"client_rate = "20/s""#,
            "client_rate = \"20/s\"\nclient_burst = 0",
            "must be at least 1",
        ),
        (
            r#"client_rate = "20/s""#,
            r#"client_rates = "20/s""#,
            "unknown field",
        ),
    ];
    for (from, to, expected) in cases {
        assert!(GUARDED.contains(from), "{from}");
        let text = GUARDED.replace(from, to);
        let errors = parse_beside(
            &text,
            &[
                ("keys.json", jwks.as_bytes()),
                ("oct.json", oct.as_bytes()),
                ("key.pem", pem.as_bytes()),
                ("short.txt", b"too short\n"),
            ],
        )
        .expect_err(to)
        .0;
        assert!(
            errors
                .iter()
                .any(|error| error.to_string().contains(expected)),
            "{to:?}: expected {expected:?} in {errors:?}"
        );
        assert!(
            errors.iter().all(|error| error.key.starts_with("gateway.")),
            "{to:?}: each problem names its gateway key: {errors:?}"
        );
    }
    // A PEM key and a shared secret are accepted where they fit.
    let pem_text = GUARDED.replace(r#"jwks = "keys.json""#, r#"pem = "key.pem""#);
    assert!(parse_beside(&pem_text, &[("key.pem", pem.as_bytes())]).is_ok());
    let hs_text = GUARDED
        .replace(r#"jwks = "keys.json""#, r#"secret_file = "secret.txt""#)
        .replace(r#"algorithms = ["ES256"]"#, r#"algorithms = ["HS256"]"#);
    let secret = [b'k'; 40];
    assert!(parse_beside(&hs_text, &[("secret.txt", &secret[..])]).is_ok());
}

const POLICED: &str = r#"
[app]
name = "shop"

[modules.orders]
component = "app.wasm"
calls = ["payments"]

[modules.payments]
component = "other.wasm"

[policies.payments]
timeout = "2s"
retries = { attempts = 2, idempotent = ["status"] }
breaker = { failures = 3, failure_rate = 0.5, open_for = "1s" }
bulkhead = { concurrency = 4, queue = 8 }

[policies."orders->payments"]
timeout = "5s"
"#;

#[test]
fn policies_apply_per_edge_before_per_callee() {
    let deployment = parse(POLICED).unwrap();
    let edge = deployment.policies.for_edge("orders", "payments").unwrap();
    assert_eq!(edge.timeout, Some(Timeout(Duration::from_secs(5))));
    assert!(edge.retries.is_none(), "an edge policy does not inherit");
    let callee = deployment.policies.for_edge("users", "payments").unwrap();
    let retries = callee.retries.as_ref().unwrap();
    assert_eq!(
        (retries.attempts, retries.budget, retries.min_per_second),
        (2, 0.2, 10)
    );
    assert!(retries.covers("shop:payments/api", "status"));
    assert!(!retries.covers("shop:payments/api", "charge"));
    let bulkhead = callee.bulkhead.unwrap();
    assert_eq!(bulkhead.queue_timeout, Timeout(Duration::from_millis(100)));
    assert!(deployment.policies.for_edge("payments", "orders").is_none());
}

#[test]
fn bad_policies_are_refused_naming_their_key() {
    let cases: &[(&str, &str, &str, &str)] = &[
        (
            "[policies.payments]",
            "[policies.billing]",
            "policies.\"billing\"",
            "no module `billing`",
        ),
        (
            "[policies.\"orders->payments\"]",
            "[policies.\"payments->orders\"]",
            "policies.\"payments->orders\"",
            "may not call `orders`",
        ),
        (
            "[policies.\"orders->payments\"]",
            "[policies.\"ghost->payments\"]",
            "policies.\"ghost->payments\"",
            "no module `ghost`",
        ),
        (
            "attempts = 2",
            "attempts = 0",
            "policies.\"payments\".retries.attempts",
            "from 1 to 10",
        ),
        (
            "idempotent = [\"status\"]",
            "idempotent = []",
            "policies.\"payments\".retries.idempotent",
            "safe to call twice",
        ),
        (
            "failures = 3",
            "failures = 0",
            "policies.\"payments\".breaker.failures",
            "at least 1",
        ),
        (
            "failure_rate = 0.5",
            "failure_rate = 1.5",
            "policies.\"payments\".breaker.failure_rate",
            "at most 1",
        ),
        (
            "concurrency = 4",
            "concurrency = 0",
            "policies.\"payments\".bulkhead.concurrency",
            "from 1 to 10000",
        ),
        (
            "timeout = \"2s\"",
            "timeout = \"0s\"",
            "policies.\"payments\".timeout",
            "longer than 0s",
        ),
    ];
    for (from, to, key, problem) in cases {
        let errors = errors(&POLICED.replace(from, to));
        assert!(
            errors
                .iter()
                .any(|e| e.key == *key && e.problem.contains(problem)),
            "{to}: expected {key}: {problem} in {errors:?}"
        );
    }
    // A misspelt key is refused with its line, like every other.
    let errors = errors(&POLICED.replace("queue = 8", "queu = 8"));
    assert!(
        errors
            .iter()
            .any(|e| e.to_string().contains("unknown field `queu`")),
        "{errors:?}"
    );
}

#[test]
fn telemetry_is_off_by_default_and_checked_when_set() {
    let deployment = parse(MINIMAL).unwrap();
    assert_eq!(deployment.telemetry, TelemetrySettings::default());
    assert!(deployment.telemetry.otlp.is_none());

    let deployment = parse(&format!(
        "{MINIMAL}\n[telemetry]\notlp = \"http://collector:4318\"\nsampling = 0.01\n\
         service_name = \"shop-eu\"\nqueue = 100\nslow_request = \"250ms\"\n\
         trace_url = \"http://jaeger:16686/trace/{{trace_id}}\"\n"
    ))
    .unwrap();
    let telemetry = &deployment.telemetry;
    assert_eq!(
        telemetry.slow_request,
        std::time::Duration::from_millis(250)
    );
    assert_eq!(
        telemetry.trace_url.as_deref(),
        Some("http://jaeger:16686/trace/{trace_id}")
    );
    assert_eq!(
        telemetry.otlp.as_ref().map(|uri| uri.to_string()),
        Some("http://collector:4318/".to_string())
    );
    assert_eq!(telemetry.sampling, 0.01);
    assert_eq!(telemetry.service_name.as_deref(), Some("shop-eu"));
    assert_eq!(telemetry.queue, 100);

    let errors = errors(&format!(
        "{MINIMAL}\n[telemetry]\notlp = \"https://collector:4318\"\nsampling = 1.5\n\
         queue = 0\nservice_name = \" \"\nslow_request = \"soon\"\n\
         trace_url = \"http://jaeger:16686/trace/\"\n"
    ));
    let keys: Vec<&str> = errors.iter().map(|e| e.key.as_str()).collect();
    assert_eq!(
        keys,
        [
            "telemetry.otlp",
            "telemetry.sampling",
            "telemetry.service_name",
            "telemetry.queue",
            "telemetry.slow_request",
            "telemetry.trace_url"
        ],
        "{errors:?}"
    );
    assert!(
        errors[0].problem.contains("http://"),
        "{}",
        errors[0].problem
    );
    let huge = self::errors(&format!(
        "{MINIMAL}\n[telemetry]\notlp = \"http://c:4318\"\nqueue = 9223372036854775807\n"
    ));
    assert_eq!(huge[0].key, "telemetry.queue", "{huge:?}");
    let misspelt = self::errors(&format!(
        "{MINIMAL}\n[telemetry]\notlp = \"http://c:4318\"\nsampled = 1\n"
    ));
    assert!(misspelt[0].key.starts_with("telemetry"), "{misspelt:?}");
}

#[test]
fn declaring_the_environment_reads_no_variable_and_names_each() {
    // Variables this process does not have: read normally, each is a problem; while
    // declaring (`modhost manifests`), each is named and taken as written.
    let text = format!(
        "{MINIMAL}database = {{ postgres = \"$MODHOST_TEST_UNSET_DB\" }}\n\n\
         [events]\nbackend = \"kafka\"\nbrokers = \"$MODHOST_TEST_UNSET_BROKERS\"\n\
         sasl = {{ mechanism = \"SCRAM-SHA-512\", username = \"shop\", password = \"$MODHOST_TEST_UNSET_PASSWORD\" }}\n\n\
         [admin]\nlisten = \"127.0.0.1:9090\"\ntoken = \"$MODHOST_TEST_UNSET_TOKEN\"\n"
    );
    let refused: Vec<String> = errors(&text).into_iter().map(|e| e.key).collect();
    for key in [
        "modules.users.database.postgres",
        "events.brokers",
        "events.sasl.password",
        "admin.token",
    ] {
        assert!(refused.iter().any(|k| k == key), "{key}: {refused:?}");
    }

    let (parsed, names) = declaring_environment(|| parse(&text));
    let deployment = parsed.unwrap();
    assert_eq!(
        names.into_iter().collect::<Vec<_>>(),
        [
            "MODHOST_TEST_UNSET_BROKERS",
            "MODHOST_TEST_UNSET_DB",
            "MODHOST_TEST_UNSET_PASSWORD",
            "MODHOST_TEST_UNSET_TOKEN"
        ]
    );
    assert!(matches!(
        &deployment.modules["users"].database.as_ref().unwrap().backend,
        DatabaseBackend::Postgres { url, .. } if url == "$MODHOST_TEST_UNSET_DB"
    ));
    assert_eq!(deployment.admin.unwrap().token, "$MODHOST_TEST_UNSET_TOKEN");
    // Declaring ends with the call: the next read is a node's again.
    assert!(parse(&text).is_err());
}
