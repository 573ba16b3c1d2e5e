//! An event as the host carries it: what the publisher gave, plus what the host adds
//! (id, source module, publication time, trace context).

use super::bindings::modhost::events::types::Event;
use crate::telemetry::trace::TraceContext;

/// Largest payload one event may carry.
pub const MAX_PAYLOAD: usize = MAX_EVENT;
/// Largest key.
pub const MAX_KEY: usize = 1024;
/// Most headers one event may carry, and the largest name and value.
pub const MAX_HEADERS: usize = 64;
const MAX_HEADER_NAME: usize = 256;
const MAX_HEADER_VALUE: usize = 8 * 1024;
/// Header names with this prefix are the host's own (on Kafka they carry the id,
/// source and publication time).
pub const RESERVED_HEADER_PREFIX: &str = "modhost-";
/// Largest event, key, payload and headers together: under Kafka's default limit of
/// 1,000,000 bytes a message, with room for the host's own headers. An event the bus
/// would refuse forever is refused when it is published instead.
pub const MAX_EVENT: usize = 960 * 1024;

/// One event between publisher and subscribers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    /// Unique, time-ordered id (a UUID v7), assigned at publication.
    pub id: String,
    /// The topic.
    pub topic: String,
    /// The ordering key: events with the same key keep their order.
    pub key: String,
    /// The publisher's bytes.
    pub payload: Vec<u8>,
    /// The publisher's headers.
    pub headers: Vec<(String, String)>,
    /// The publishing module.
    pub source: String,
    /// Publication time, milliseconds since the Unix epoch.
    pub published_at_ms: i64,
    /// The publisher's trace context (`traceparent`), when it had one.
    pub traceparent: Option<String>,
}

impl Envelope {
    /// The trace context of the hop that sent the event on (its publisher, then the
    /// relay), when it carries a valid one.
    pub fn trace_parent(&self) -> Option<TraceContext> {
        self.traceparent.as_deref().and_then(TraceContext::parse)
    }

    /// The event as the subscriber's `handle` receives it, on its `attempt`th delivery.
    pub fn to_event(&self, attempt: u32) -> Event {
        Event {
            id: self.id.clone(),
            topic: self.topic.clone(),
            key: self.key.clone(),
            payload: self.payload.clone(),
            headers: self.headers.clone(),
            source: self.source.clone(),
            published_at_ms: u64::try_from(self.published_at_ms).unwrap_or(0),
            attempt,
        }
    }

    /// The headers as stored in an outbox or log row: a JSON list of pairs.
    pub fn headers_json(&self) -> String {
        serde_json::to_string(&self.headers).unwrap_or_else(|_| "[]".into())
    }

    /// Headers read back from [`Self::headers_json`]'s text.
    pub fn headers_from_json(text: &str) -> Vec<(String, String)> {
        serde_json::from_str(text).unwrap_or_default()
    }

    /// The seal the host puts on the event's outbox row: an HMAC-SHA256, under a key
    /// of the host's (`Database::host_key`), of every field the relay sends, source
    /// included. A row the module wrote itself, or changed, has no valid seal, so the
    /// relay sends only what the host's `publish` wrote: a module can neither publish
    /// to a topic it was not granted, nor pose as another module, nor reuse an id.
    pub fn seal(&self, key: &[u8; 32]) -> String {
        use hmac::{Hmac, Mac};
        let mut mac = <Hmac<sha2::Sha256> as Mac>::new_from_slice(key)
            .expect("HMAC takes a key of any length");
        // Each field with its length first, so no two events share an input.
        let headers = self.headers_json();
        let published_at = self.published_at_ms.to_string();
        for field in [
            self.id.as_bytes(),
            self.topic.as_bytes(),
            self.key.as_bytes(),
            &self.payload,
            headers.as_bytes(),
            self.source.as_bytes(),
            published_at.as_bytes(),
            self.traceparent.as_deref().unwrap_or("-").as_bytes(),
        ] {
            mac.update(&(field.len() as u64).to_be_bytes());
            mac.update(field);
        }
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut seal = String::with_capacity(64);
        for byte in mac.finalize().into_bytes() {
            seal.push(char::from(HEX[usize::from(byte >> 4)]));
            seal.push(char::from(HEX[usize::from(byte & 0x0f)]));
        }
        seal
    }

    /// Whether `seal` is this event's seal under `key` (compared in constant time).
    pub fn sealed_by(&self, seal: &str, key: &[u8; 32]) -> bool {
        let expected = self.seal(key);
        expected.len() == seal.len()
            && expected
                .bytes()
                .zip(seal.bytes())
                .fold(0u8, |diff, (a, b)| diff | (a ^ b))
                == 0
    }
}

/// What is wrong with a key, payload and headers a module wants to publish, if anything.
pub fn check(key: &str, payload: &[u8], headers: &[(String, String)]) -> Option<String> {
    if key.len() > MAX_KEY {
        return Some(format!("the key is longer than {MAX_KEY} bytes"));
    }
    if payload.len() > MAX_PAYLOAD {
        return Some(format!(
            "the payload is {} bytes; the most is {MAX_PAYLOAD}",
            payload.len()
        ));
    }
    if headers.len() > MAX_HEADERS {
        return Some(format!("more than {MAX_HEADERS} headers"));
    }
    let size = key.len()
        + payload.len()
        + headers
            .iter()
            .map(|(name, value)| name.len() + value.len())
            .sum::<usize>();
    if size > MAX_EVENT {
        return Some(format!(
            "the event (key, payload and headers) is {size} bytes; the most is {MAX_EVENT}, \
             under Kafka's default message limit"
        ));
    }
    for (name, value) in headers {
        if name.is_empty() || name.len() > MAX_HEADER_NAME {
            return Some(format!(
                "header name {name:?} must be 1-{MAX_HEADER_NAME} bytes"
            ));
        }
        if name
            .to_ascii_lowercase()
            .starts_with(RESERVED_HEADER_PREFIX)
            || name == crate::telemetry::trace::TRACEPARENT
        {
            return Some(format!("header {name:?} is reserved for the host"));
        }
        if value.len() > MAX_HEADER_VALUE {
            return Some(format!(
                "header {name:?} is longer than {MAX_HEADER_VALUE} bytes"
            ));
        }
    }
    None
}

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserved_and_oversized_parts_are_refused() {
        let ok = vec![("content-type".to_string(), "application/json".to_string())];
        assert_eq!(check("k", b"{}", &ok), None);
        assert!(check("k", &vec![0; MAX_PAYLOAD + 1], &ok).is_some());
        assert!(check(&"k".repeat(MAX_KEY + 1), b"", &ok).is_some());
        let reserved = vec![("Modhost-Source".to_string(), "x".to_string())];
        assert!(check("k", b"", &reserved).unwrap().contains("reserved"));
        let trace = vec![("traceparent".to_string(), "x".to_string())];
        assert!(check("k", b"", &trace).is_some());
        let empty = vec![(String::new(), "x".to_string())];
        assert!(check("k", b"", &empty).is_some());
    }

    #[test]
    fn an_event_past_the_brokers_limit_is_refused_whole() {
        let headers = vec![
            ("a".to_string(), "v".repeat(8 * 1024)),
            ("b".to_string(), "v".repeat(8 * 1024)),
        ];
        assert_eq!(check("k", &vec![0; MAX_EVENT - 10_000], &[]), None);
        assert!(check("k", &vec![0; MAX_EVENT - 10_000], &headers).is_some());
    }

    #[test]
    fn a_seal_holds_only_for_the_event_and_key_it_was_made_with() {
        let event = Envelope {
            id: "e".into(),
            topic: "t".into(),
            key: "k".into(),
            payload: vec![1, 2],
            headers: vec![],
            source: "m".into(),
            published_at_ms: 5,
            traceparent: None,
        };
        let key = [7u8; 32];
        let seal = event.seal(&key);
        assert!(event.sealed_by(&seal, &key));
        assert!(!event.sealed_by(&seal, &[8u8; 32]));
        assert!(!event.sealed_by("", &key));
        for changed in [
            Envelope {
                topic: "payments.charged".into(),
                ..event.clone()
            },
            Envelope {
                source: "payments".into(),
                ..event.clone()
            },
            Envelope {
                id: "f".into(),
                ..event.clone()
            },
            Envelope {
                payload: vec![1, 3],
                ..event.clone()
            },
            Envelope {
                headers: vec![("modhost-source".into(), "x".into())],
                ..event.clone()
            },
        ] {
            assert!(!changed.sealed_by(&seal, &key), "{changed:?}");
        }
    }

    #[test]
    fn headers_survive_their_stored_form() {
        let envelope = Envelope {
            id: "e".into(),
            topic: "t".into(),
            key: "k".into(),
            payload: vec![1, 2],
            headers: vec![("a".into(), "1".into()), ("a".into(), "2".into())],
            source: "m".into(),
            published_at_ms: 5,
            traceparent: None,
        };
        let text = envelope.headers_json();
        assert_eq!(Envelope::headers_from_json(&text), envelope.headers);
    }
}
