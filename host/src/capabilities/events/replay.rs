//! Replaying dead letters: once the cause of a handler's failures is fixed, an operator
//! sends the events a module gave up on through that module again
//! (`modhost events replay`).
//!
//! A dead letter keeps the original event (id, key, payload, headers, source, trace
//! context) and names the topic it came from. Replaying it takes two steps: the
//! module's inbox forgets that it gave the event up, then the original event is sent to
//! its topic again. The module handles it as a new event (attempt 1). Every other
//! subscriber of the topic finds the id in its own inbox and skips it. An event the
//! module has handled since (an earlier replay) is not sent again.
//!
//! The steps are in that order so that a failure between them loses nothing. If the
//! send fails, the inbox no longer says "given up", and the next replay sends the
//! event again. The replayed event comes after the events of its key that were
//! published since: per-key order does not hold for it.

use anyhow::{bail, Context, Result};

use super::bus::Bus;
use super::delivery::dead_letter;
use super::envelope::Envelope;
use super::tables::{self, Outcome};
use crate::capabilities::sql::{self, Database};
use crate::deployment::events::dead_letter_topic;
use crate::deployment::{Deployment, ModuleSpec};

/// What replaying one dead letter did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Replayed {
    /// The event is on its topic again, on its way to the module.
    Sent,
    /// The module has handled the event since it gave it up: nothing was sent.
    AlreadyHandled,
}

impl Replayed {
    /// The outcome's name, as the command line prints it.
    pub fn as_str(&self) -> &'static str {
        match self {
            Replayed::Sent => "sent",
            Replayed::AlreadyHandled => "already-handled",
        }
    }
}

/// One dead letter that a replay went through.
#[derive(Debug, Clone)]
pub struct Replay {
    /// The event's id.
    pub id: String,
    /// The topic it was sent to again.
    pub topic: String,
    /// What happened.
    pub outcome: Replayed,
}

/// `module` of `deployment`, if it subscribes to topics: only such a module has dead
/// letters to replay.
pub fn subscriber<'a>(deployment: &'a Deployment, module: &str) -> Option<&'a ModuleSpec> {
    deployment
        .modules
        .get(module)
        .filter(|spec| !spec.subscribes.is_empty())
}

/// Replays `module`'s dead letters: those with the ids in `only`, or all of them when
/// `only` is empty. An id in `only` that is not among them is an error, and then nothing
/// is replayed.
pub async fn replay(deployment: &Deployment, module: &str, only: &[String]) -> Result<Vec<Replay>> {
    let Some(spec) = subscriber(deployment, module) else {
        bail!("no module `{module}` subscribes to events: it has no dead letters");
    };
    let Some(database_spec) = &spec.database else {
        bail!("module `{module}` has no database (its inbox lives there)");
    };

    let bus = super::open_for_reading(deployment)
        .await
        .context("opening the event bus")?;
    let letters = originals(&bus, module).await?;
    let chosen: Vec<Envelope> = if only.is_empty() {
        letters
    } else {
        let missing: Vec<&str> = only
            .iter()
            .filter(|id| !letters.iter().any(|event| &event.id == *id))
            .map(String::as_str)
            .collect();
        if !missing.is_empty() {
            bail!(
                "no dead letter of `{module}` has the id {}",
                missing.join(", ")
            );
        }
        letters
            .into_iter()
            .filter(|event| only.contains(&event.id))
            .collect()
    };

    let database = Database::open(
        module,
        database_spec,
        &deployment.data_dir,
        spec.limits.timeout.duration(),
    )
    .await
    .with_context(|| format!("opening the database of `{module}`"))?;
    tables::create(&database, module)
        .await
        .map_err(sql_error)
        .with_context(|| format!("opening the inbox of `{module}`"))?;

    let mut replays = Vec::with_capacity(chosen.len());
    for event in chosen {
        let remembered = tables::inbox_outcome(&database, &event.id)
            .await
            .map_err(sql_error)
            .with_context(|| format!("reading the inbox of `{module}`"))?;
        let outcome = if remembered == Some(Outcome::Handled) {
            Replayed::AlreadyHandled
        } else {
            tables::forget_dead_letter(&database, &event.id)
                .await
                .map_err(sql_error)
                .with_context(|| format!("updating the inbox of `{module}`"))?;
            if let Some(Err(error)) = bus.send(std::slice::from_ref(&event)).await.pop() {
                bail!(
                    "sending event {} to {}: {error} (replaying it again sends it)",
                    event.id,
                    event.topic
                );
            }
            Replayed::Sent
        };
        replays.push(Replay {
            id: event.id,
            topic: event.topic,
            outcome,
        });
    }
    Ok(replays)
}

/// A database error of the module, for the command's report.
fn sql_error(error: sql::Error) -> anyhow::Error {
    anyhow::anyhow!("{error:?}")
}

/// The original events of `module`'s dead letters, oldest first, each once (a
/// dead letter of an event that was replayed and failed again appears twice on the
/// dead-letter topic).
async fn originals(bus: &Bus, module: &str) -> Result<Vec<Envelope>> {
    let topic = dead_letter_topic(module);
    let letters = bus
        .read_all(&topic)
        .await
        .with_context(|| format!("reading {topic}"))?;
    let mut seen = std::collections::HashSet::new();
    let mut events: Vec<Envelope> = Vec::with_capacity(letters.len());
    for letter in letters {
        let mut event = letter.envelope;
        if !seen.insert(event.id.clone()) {
            continue;
        }
        let Some(topic) = event
            .headers
            .iter()
            .find(|(name, _)| name == dead_letter::TOPIC)
            .map(|(_, value)| value.clone())
        else {
            continue;
        };
        event.topic = topic;
        event
            .headers
            .retain(|(name, _)| !name.starts_with(dead_letter::PREFIX));
        events.push(event);
    }
    Ok(events)
}
