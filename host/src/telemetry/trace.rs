//! Trace context, as W3C Trace Context (`traceparent`) carries it.
//!
//! Every request the gateway serves belongs to a trace: the one its `traceparent`
//! header names, or a new one. The context travels with the work the request causes —
//! into the module's instance, through calls between modules, into every event the
//! module publishes and on to the handlers of those events — so one trace id ties
//! together the log lines of everything that happened because of one request.

use std::fmt;

/// The W3C Trace Context header a request's trace travels in.
pub const TRACEPARENT: &str = "traceparent";

/// Where a piece of work sits in a trace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceContext {
    /// The trace: the same for everything one request caused.
    pub trace_id: u128,
    /// This hop within the trace.
    pub span_id: u64,
    /// Whether the trace is sampled (the `01` flag), passed on as received.
    pub sampled: bool,
}

impl TraceContext {
    /// The start of a new trace.
    pub fn new_root() -> TraceContext {
        TraceContext {
            trace_id: nonzero_random(),
            span_id: nonzero_random() as u64,
            sampled: true,
        }
    }

    /// A `traceparent` header value, if it is a valid version-00 one.
    pub fn parse(header: &str) -> Option<TraceContext> {
        let mut parts = header.trim().split('-');
        let (version, trace, span, flags) =
            (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        // Version 00 has exactly four fields; a later version may add more.
        if version.len() != 2 || version == "ff" || (version == "00" && parts.next().is_some()) {
            return None;
        }
        let hex = |text: &str, len: usize| {
            (text.len() == len
                && text
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
            .then(|| u128::from_str_radix(text, 16).ok())
            .flatten()
        };
        let trace_id = hex(trace, 32)?;
        let span_id = hex(span, 16)? as u64;
        let flags = hex(flags, 2)? as u8;
        (trace_id != 0 && span_id != 0).then_some(TraceContext {
            trace_id,
            span_id,
            sampled: flags & 1 == 1,
        })
    }

    /// The context a request's `traceparent` header names, if it is a valid one.
    pub fn from_headers(headers: &http::HeaderMap) -> Option<TraceContext> {
        headers
            .get(TRACEPARENT)
            .and_then(|value| value.to_str().ok())
            .and_then(TraceContext::parse)
    }

    /// Sets `headers`' `traceparent` to this context (what the module serving the
    /// request sees as its own hop).
    pub fn write_to(&self, headers: &mut http::HeaderMap) {
        if let Ok(value) = http::HeaderValue::from_str(&self.to_string()) {
            headers.insert(TRACEPARENT, value);
        }
    }

    /// The context of the next hop in the same trace (a call, a delivery).
    pub fn child(&self) -> TraceContext {
        TraceContext {
            span_id: nonzero_random() as u64,
            ..*self
        }
    }

    /// The context of the hop `span` records, in `parent`'s trace (a new trace when
    /// there is none). When spans are exported ([`super::export`]) these are the ids
    /// of `span` itself, made the child of `parent`, so the next hop names a span the
    /// collector has; otherwise a fresh span id. Call before `span` is first entered.
    pub fn for_span(span: &tracing::Span, parent: Option<TraceContext>) -> TraceContext {
        super::export::span_context(span, parent)
            .unwrap_or_else(|| parent.map_or_else(TraceContext::new_root, |parent| parent.child()))
    }

    /// The trace id as 32 hex digits, as logs show it.
    pub fn trace_id(&self) -> String {
        format!("{:032x}", self.trace_id)
    }
}

/// The `traceparent` header value.
impl fmt::Display for TraceContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "00-{:032x}-{:016x}-{:02x}",
            self.trace_id,
            self.span_id,
            u8::from(self.sampled)
        )
    }
}

fn nonzero_random() -> u128 {
    loop {
        let value = uuid::Uuid::new_v4().as_u128();
        // A v4 UUID has fixed version bits; mix them away, never to all-zero.
        let value = value ^ (value >> 67);
        if value as u64 != 0 && value != 0 {
            return value;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_traceparent_round_trips() {
        let header = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let context = TraceContext::parse(header).unwrap();
        assert_eq!(context.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(context.span_id, 0x00f067aa0ba902b7);
        assert!(context.sampled);
        assert_eq!(context.to_string(), header);
    }

    #[test]
    fn a_child_keeps_the_trace_and_gets_its_own_span() {
        let root = TraceContext::new_root();
        let child = root.child();
        assert_eq!(child.trace_id, root.trace_id);
        assert_ne!(child.span_id, root.span_id);
        assert_eq!(TraceContext::parse(&child.to_string()), Some(child));
    }

    #[test]
    fn malformed_headers_are_ignored() {
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-xyz-00f067aa0ba902b7-01",
        ] {
            assert_eq!(TraceContext::parse(bad), None, "{bad}");
        }
    }
}
