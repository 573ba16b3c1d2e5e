//! An event as the host carries it: what the publisher gave, plus what the host adds
//! (id, source module, publication time, trace context).

use super::bindings::modhost::events::types::Event;

/// Largest payload one event may carry.
pub const MAX_PAYLOAD: usize = 1024 * 1024;
/// Largest key.
pub const MAX_KEY: usize = 1024;
/// Most headers one event may carry, and the largest name and value.
pub const MAX_HEADERS: usize = 64;
const MAX_HEADER_NAME: usize = 256;
const MAX_HEADER_VALUE: usize = 8 * 1024;
/// Header names with this prefix are the host's own (on Kafka they carry the id,
/// source and publication time).
pub const RESERVED_HEADER_PREFIX: &str = "modhost-";

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
    for (name, value) in headers {
        if name.is_empty() || name.len() > MAX_HEADER_NAME {
            return Some(format!(
                "header name {name:?} must be 1-{MAX_HEADER_NAME} bytes"
            ));
        }
        if name
            .to_ascii_lowercase()
            .starts_with(RESERVED_HEADER_PREFIX)
            || name == "traceparent"
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
