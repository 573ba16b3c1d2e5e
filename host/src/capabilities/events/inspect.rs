//! Looking at a deployment's events from outside a running node: the dead letters of
//! its subscribing modules (`modhost events dead-letters`).

use anyhow::{bail, Context, Result};

use super::delivery::dead_letter;
use super::open_for_reading;
use crate::deployment::events::dead_letter_topic;
use crate::deployment::Deployment;

/// One event a subscribing module gave up on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    /// The module that gave it up.
    pub module: String,
    /// The event's id.
    pub id: String,
    /// The topic it was delivered on.
    pub topic: String,
    /// Its key.
    pub key: String,
    /// The module that published it.
    pub source: String,
    /// How many attempts failed.
    pub attempts: u32,
    /// The last attempt's error.
    pub error: String,
    /// When it was given up (ms since the epoch).
    pub dead_lettered_at_ms: i64,
    /// When it was published (ms since the epoch).
    pub published_at_ms: i64,
    /// Its payload, as text (lossy).
    pub payload: String,
}

impl DeadLetter {
    /// The dead letter as one JSON object.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "module": self.module,
            "id": self.id,
            "topic": self.topic,
            "key": self.key,
            "source": self.source,
            "attempts": self.attempts,
            "error": self.error,
            "dead_lettered_at_ms": self.dead_lettered_at_ms,
            "published_at_ms": self.published_at_ms,
            "payload": self.payload,
        })
    }
}

impl std::fmt::Display for DeadLetter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}  {}  topic={} key={} attempts={}\n    error: {}\n    payload: {}",
            self.module,
            self.id,
            self.topic,
            self.key,
            self.attempts,
            self.error,
            self.payload.chars().take(200).collect::<String>(),
        )
    }
}

/// The modules of `deployment` that subscribe to events: only they have dead letters.
pub fn subscribers(deployment: &Deployment) -> Vec<String> {
    deployment
        .modules
        .values()
        .filter(|module| !module.subscribes.is_empty())
        .map(|module| module.name.clone())
        .collect()
}

/// The dead letters of `only` (a subscribing module), or of every subscribing module,
/// oldest first per module. A module that subscribes to nothing is an error.
pub async fn dead_letters(deployment: &Deployment, only: Option<&str>) -> Result<Vec<DeadLetter>> {
    let modules: Vec<String> = subscribers(deployment)
        .into_iter()
        .filter(|name| only.is_none_or(|only| only == name))
        .collect();
    if let (Some(only), true) = (only, modules.is_empty()) {
        bail!("no module `{only}` subscribes to events");
    }
    let bus = open_for_reading(deployment)
        .await
        .context("cannot open the event bus")?;
    let mut found = Vec::new();
    for module in modules {
        let topic = dead_letter_topic(&module);
        let letters = bus
            .read_all(&topic)
            .await
            .with_context(|| format!("reading {topic}"))?;
        for letter in letters {
            let event = letter.envelope;
            let header = |name: &str| {
                event
                    .headers
                    .iter()
                    .find(|(key, _)| key == name)
                    .map_or(String::new(), |(_, value)| value.clone())
            };
            found.push(DeadLetter {
                module: module.clone(),
                topic: header(dead_letter::TOPIC),
                attempts: header(dead_letter::ATTEMPTS).parse().unwrap_or(0),
                error: header(dead_letter::ERROR),
                dead_lettered_at_ms: header(dead_letter::AT).parse().unwrap_or(0),
                published_at_ms: event.published_at_ms,
                payload: String::from_utf8_lossy(&event.payload).into_owned(),
                id: event.id,
                key: event.key,
                source: event.source,
            });
        }
    }
    Ok(found)
}
