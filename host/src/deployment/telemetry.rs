//! `[telemetry]`: where this node's spans go (OTLP over HTTP), how many new traces
//! are recorded, and the name the node reports them under (off unless `otlp` is
//! set); what the dashboard calls a slow request, and where it links trace ids.

use serde::Deserialize;

use super::units::Timeout;
use super::Problems;

pub use crate::telemetry::export::TelemetrySettings;
use crate::telemetry::export::MAX_QUEUE;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct TelemetrySection {
    otlp: Option<String>,
    sampling: Option<f64>,
    service_name: Option<String>,
    queue: Option<usize>,
    slow_request: Option<String>,
    trace_url: Option<String>,
}

impl TelemetrySection {
    pub(super) fn settings(self, problems: &mut Problems) -> TelemetrySettings {
        let mut settings = TelemetrySettings::default();
        if let Some(otlp) = self.otlp {
            match otlp.parse::<http::Uri>() {
                Ok(uri)
                    if uri.scheme_str() == Some("http")
                        && uri.host().is_some()
                        && uri.query().is_none() =>
                {
                    settings.otlp = Some(uri);
                }
                Ok(_) => problems.add(
                    "telemetry.otlp",
                    "must be an http:// address of an OTLP/HTTP collector, such as \
                     \"http://127.0.0.1:4318\" (for TLS, run a collector beside the node)",
                ),
                Err(error) => problems.add("telemetry.otlp", &format!("is not a URL: {error}")),
            }
        }
        if let Some(sampling) = self.sampling {
            if (0.0..=1.0).contains(&sampling) {
                settings.sampling = sampling;
            } else {
                problems.add(
                    "telemetry.sampling",
                    "must be from 0 to 1 (the share of new traces recorded)",
                );
            }
        }
        if let Some(name) = self.service_name {
            if name.trim().is_empty() {
                problems.add("telemetry.service_name", "must not be empty");
            } else {
                settings.service_name = Some(name);
            }
        }
        if let Some(queue) = self.queue {
            if (1..=MAX_QUEUE).contains(&queue) {
                settings.queue = queue;
            } else {
                problems.add(
                    "telemetry.queue",
                    &format!("must be from 1 to {MAX_QUEUE} (spans waiting for export)"),
                );
            }
        }
        if let Some(slow) = self.slow_request {
            match Timeout::parse(&slow) {
                Ok(Timeout(slow)) if !slow.is_zero() => settings.slow_request = slow,
                Ok(_) => problems.add("telemetry.slow_request", "must be longer than zero"),
                Err(error) => problems.add("telemetry.slow_request", &error),
            }
        }
        if let Some(url) = self.trace_url {
            let linkable = (url.starts_with("http://") || url.starts_with("https://"))
                && url.contains("{trace_id}");
            if linkable {
                settings.trace_url = Some(url);
            } else {
                problems.add(
                    "telemetry.trace_url",
                    "must be an http:// or https:// address with {trace_id} in it, such as \
                     \"http://jaeger:16686/trace/{trace_id}\"",
                );
            }
        }
        settings
    }
}
