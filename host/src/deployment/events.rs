//! `[events]` and the modules' `publishes` / `subscribes` grants: which bus carries
//! events between modules, how delivery retries, and who may publish or receive what.

use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{existing_file, expand_env, ModuleSpec, Problems, Timeout};

/// Topics whose names start with this are the host's own (dead letters).
pub const RESERVED_TOPIC_PREFIX: &str = "modhost.";

/// `[events]`: the bus and the delivery policy, shared by every module.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventsSettings {
    /// Which bus carries events.
    pub backend: EventsBackend,
    /// Deliveries of one event before it goes to the dead-letter topic.
    pub max_attempts: u32,
    /// Wait before the first retry of a failed event; it doubles for each further one.
    pub backoff: Duration,
    /// The longest wait between two attempts.
    pub max_backoff: Duration,
    /// Most events one handler transaction covers (each in its own savepoint).
    pub batch: u32,
    /// How long subscribers remember handled event ids (redeliveries within it are
    /// skipped), and how long the embedded log keeps delivered events.
    pub retention: Duration,
}

/// The bus events travel on between the outbox and the subscribers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventsBackend {
    /// In-process, durable in a SQLite log under the data dir; no broker. One node.
    Embedded,
    /// A Kafka-protocol broker (Apache Kafka, Redpanda).
    Kafka {
        /// `host:port[,host:port…]` of the bootstrap brokers.
        brokers: String,
        /// Partitions of each topic the host creates.
        partitions: i32,
        /// Replicas of each topic the host creates.
        replication: i32,
        /// How the host proves itself to the brokers, and they to it.
        security: KafkaSecurity,
    },
}

/// `events.tls` and `events.sasl`: encryption and authentication to the brokers, as
/// managed Kafka services require them. librdkafka's `security.protocol` follows:
/// neither is `plaintext`, TLS alone `ssl`, SASL alone `sasl_plaintext`, both
/// `sasl_ssl`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KafkaSecurity {
    /// TLS to the brokers, each verified against a CA for the name it is reached by.
    pub tls: Option<KafkaTls>,
    /// SASL credentials the host logs in with.
    pub sasl: Option<KafkaSasl>,
}

/// `events.tls = { ca = "…" }`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KafkaTls {
    /// The PEM file of the CA the brokers' certificates chain to; `None`: the
    /// system's CAs.
    pub ca: Option<PathBuf>,
}

/// `events.sasl = { mechanism, username, password }`.
#[derive(Clone, PartialEq, Eq)]
pub struct KafkaSasl {
    /// `PLAIN`, `SCRAM-SHA-256` or `SCRAM-SHA-512`.
    pub mechanism: SaslMechanism,
    /// The user the host logs in as.
    pub username: String,
    /// Its password (written as `$VAR`, read from the environment).
    pub password: String,
}

impl std::fmt::Debug for KafkaSasl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The password is a secret: it stays out of logs and error messages.
        f.debug_struct("KafkaSasl")
            .field("mechanism", &self.mechanism)
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

/// The SASL mechanisms librdkafka speaks without a Kerberos library.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SaslMechanism {
    /// The password itself, sent to the broker: only over TLS.
    Plain,
    /// A salted challenge and response (RFC 7677); the password never crosses.
    ScramSha256,
    /// As `ScramSha256`, with SHA-512.
    ScramSha512,
}

impl SaslMechanism {
    /// The mechanism's name, as librdkafka and Kafka write it.
    pub fn name(self) -> &'static str {
        match self {
            SaslMechanism::Plain => "PLAIN",
            SaslMechanism::ScramSha256 => "SCRAM-SHA-256",
            SaslMechanism::ScramSha512 => "SCRAM-SHA-512",
        }
    }
}

impl EventsBackend {
    /// `embedded` or `kafka`, for logs and status.
    pub fn name(&self) -> &'static str {
        match self {
            EventsBackend::Embedded => "embedded",
            EventsBackend::Kafka { .. } => "kafka",
        }
    }
}

impl Default for EventsSettings {
    fn default() -> Self {
        EventsSettings {
            backend: EventsBackend::Embedded,
            max_attempts: 5,
            backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(30),
            batch: 100,
            retention: DEFAULT_RETENTION,
        }
    }
}

const DEFAULT_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);

/// `[events]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct EventsSection {
    backend: Option<String>,
    brokers: Option<String>,
    partitions: Option<i64>,
    replication: Option<i64>,
    retention: Option<Timeout>,
    max_attempts: Option<i64>,
    backoff: Option<Timeout>,
    max_backoff: Option<Timeout>,
    batch: Option<i64>,
    tls: Option<TlsSection>,
    sasl: Option<SaslSection>,
}

/// `events.tls` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct TlsSection {
    ca: Option<String>,
}

/// `events.sasl` as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SaslSection {
    mechanism: String,
    username: String,
    password: String,
}

impl std::fmt::Debug for SaslSection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // As written, the password may be the secret itself: it stays out.
        f.debug_struct("SaslSection")
            .field("mechanism", &self.mechanism)
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

impl EventsSection {
    /// Validates the section, reporting every problem under `events.*`; a relative
    /// `tls.ca` is relative to `base`.
    pub(super) fn settings(self, base: &Path, problems: &mut Problems) -> EventsSettings {
        let mut settings = EventsSettings::default();
        let backend = self.backend.as_deref().unwrap_or("embedded");
        let mut within = |key: &str, value: Option<i64>, range: (i64, i64), default: i64| {
            let value = value.unwrap_or(default);
            if (range.0..=range.1).contains(&value) {
                value
            } else {
                problems.add(
                    &format!("events.{key}"),
                    &format!(
                        "{value} is outside the accepted range {} to {}",
                        range.0, range.1
                    ),
                );
                default
            }
        };
        let partitions = within("partitions", self.partitions, (1, 10_000), 6) as i32;
        let replication = within("replication", self.replication, (1, 32), 1) as i32;
        settings.max_attempts = within("max_attempts", self.max_attempts, (1, 1000), 5) as u32;
        settings.batch = within("batch", self.batch, (1, 10_000), 100) as u32;
        for (key, written, slot) in [
            ("backoff", self.backoff, &mut settings.backoff),
            ("max_backoff", self.max_backoff, &mut settings.max_backoff),
        ] {
            match written {
                Some(timeout) if timeout.duration().is_zero() => {
                    problems.add(&format!("events.{key}"), "must be longer than 0s")
                }
                Some(timeout) => *slot = timeout.duration(),
                None => {}
            }
        }
        settings.retention = self.retention.map_or(DEFAULT_RETENTION, Timeout::duration);
        if settings.retention < Duration::from_secs(60) {
            problems.add("events.retention", "must be at least 1m");
        }
        if settings.max_backoff < settings.backoff {
            problems.add(
                "events.max_backoff",
                "must not be shorter than events.backoff",
            );
        }
        match backend {
            "embedded" => {
                for (key, given) in [
                    ("brokers", self.brokers.is_some()),
                    ("partitions", self.partitions.is_some()),
                    ("replication", self.replication.is_some()),
                    ("tls", self.tls.is_some()),
                    ("sasl", self.sasl.is_some()),
                ] {
                    if given {
                        problems.add(
                            &format!("events.{key}"),
                            "applies only to backend = \"kafka\"",
                        );
                    }
                }
                settings.backend = EventsBackend::Embedded;
            }
            "kafka" => {
                let brokers = match self.brokers.as_deref().map(expand_env) {
                    None => {
                        problems.add(
                            "events.brokers",
                            "is required with backend = \"kafka\": \"host:9092[,host:9092…]\"",
                        );
                        String::new()
                    }
                    Some(Err(problem)) => {
                        problems.add("events.brokers", &problem);
                        String::new()
                    }
                    Some(Ok(None)) => self.brokers.clone().unwrap_or_default(),
                    Some(Ok(Some(brokers))) => {
                        if let Some(bad) = brokers.split(',').find(|b| !is_host_port(b.trim())) {
                            problems.add("events.brokers", &format!("{bad:?} is not host:port"));
                        }
                        brokers
                    }
                };
                let security = kafka_security(self.tls, self.sasl, base, problems);
                settings.backend = EventsBackend::Kafka {
                    brokers,
                    partitions,
                    replication,
                    security,
                };
            }
            other => problems.add(
                "events.backend",
                &format!("{other:?} is not a backend; expected \"embedded\" or \"kafka\""),
            ),
        }
        settings
    }
}

/// Checks `events.tls` and `events.sasl`.
fn kafka_security(
    tls: Option<TlsSection>,
    sasl: Option<SaslSection>,
    base: &Path,
    problems: &mut Problems,
) -> KafkaSecurity {
    let tls = tls.map(|tls| KafkaTls {
        ca: tls
            .ca
            .and_then(|written| existing_file(base, &written, "events.tls.ca", problems)),
    });
    let sasl = sasl.and_then(|sasl| {
        let mechanism = match sasl.mechanism.to_ascii_uppercase().as_str() {
            "PLAIN" => SaslMechanism::Plain,
            "SCRAM-SHA-256" => SaslMechanism::ScramSha256,
            "SCRAM-SHA-512" => SaslMechanism::ScramSha512,
            other => {
                problems.add(
                    "events.sasl.mechanism",
                    &format!("{other:?} is not a mechanism; expected PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512"),
                );
                return None;
            }
        };
        if mechanism == SaslMechanism::Plain && tls.is_none() {
            problems.add(
                "events.sasl.mechanism",
                "PLAIN sends the password itself: add events.tls, or use SCRAM-SHA-512",
            );
        }
        let (username, password) = match (expand_env(&sasl.username), expand_env(&sasl.password)) {
            (Ok(username), Ok(password)) => (
                username.unwrap_or_else(|| sasl.username.clone()),
                password.unwrap_or_else(|| sasl.password.clone()),
            ),
            (username, password) => {
                for (key, result) in [("username", username), ("password", password)] {
                    if let Err(problem) = result {
                        problems.add(&format!("events.sasl.{key}"), &problem);
                    }
                }
                return None;
            }
        };
        Some(KafkaSasl {
            mechanism,
            username,
            password,
        })
    });
    KafkaSecurity { tls, sasl }
}

fn is_host_port(text: &str) -> bool {
    match text.rsplit_once(':') {
        Some((host, port)) => !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0),
        None => false,
    }
}

/// A topic name: 1-200 of `[a-zA-Z0-9._-]`, as Kafka allows, and not one of the
/// host's own.
pub fn topic_problem(topic: &str) -> Option<String> {
    if topic.is_empty() || topic.len() > 200 {
        return Some("a topic name is 1-200 characters".into());
    }
    if !topic
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
    {
        return Some(format!(
            "{topic:?}: a topic name is made of letters, digits, '.', '_' and '-'"
        ));
    }
    if topic.starts_with(RESERVED_TOPIC_PREFIX) {
        return Some(format!(
            "{topic:?}: topics starting with {RESERVED_TOPIC_PREFIX:?} are the host's own"
        ));
    }
    None
}

/// The dead-letter topic of a subscribing module.
pub fn dead_letter_topic(module: &str) -> String {
    format!("{RESERVED_TOPIC_PREFIX}dead-letter.{module}")
}

/// Checks every module's `publishes` and `subscribes` (already parsed into `modules`):
/// valid, unique topic names; a database to hold the outbox and inbox; every
/// subscribed topic published by some deployed module.
pub(super) fn check_topics(modules: &BTreeMap<String, ModuleSpec>, problems: &mut Problems) {
    let published: BTreeMap<&str, &str> = modules
        .values()
        .flat_map(|m| m.publishes.iter().map(|t| (t.as_str(), m.name.as_str())))
        .collect();
    for module in modules.values() {
        for (field, topics) in [
            ("publishes", &module.publishes),
            ("subscribes", &module.subscribes),
        ] {
            for (i, topic) in topics.iter().enumerate() {
                let key = format!("modules.{}.{field}[{i}]", module.name);
                if let Some(problem) = topic_problem(topic) {
                    problems.add(&key, &problem);
                } else if topics[..i].contains(topic) {
                    problems.add(&key, &format!("{topic:?} is listed twice"));
                } else if field == "subscribes" && !published.contains_key(topic.as_str()) {
                    problems.add(
                        &key,
                        &format!(
                            "no deployed module publishes {topic:?} (add it to some module's `publishes`)"
                        ),
                    );
                }
            }
            if !topics.is_empty() && module.database.is_none() {
                problems.add(
                    &format!("modules.{}.{field}", module.name),
                    &format!(
                        "a module that {} events needs a database (its {} lives there): add `database = \"sqlite\"`",
                        if field == "publishes" { "publishes" } else { "receives" },
                        if field == "publishes" { "outbox" } else { "inbox" },
                    ),
                );
            }
        }
    }
}
