//! Logging: human-readable or JSON lines on stderr, filtered by `MODHOST_LOG`
//! (or `RUST_LOG`), default `info`.
//!
//! Every request runs in a `request` span carrying method, path, module, route,
//! status, duration and error id; the access line (`target: modhost::access`) is logged
//! inside it, so both formats show all of them. Silence access lines with
//! `MODHOST_LOG=info,modhost::access=off`.

pub mod export;
pub mod metrics;
pub mod overview;
pub mod request_id;
pub mod span;
pub mod trace;

use tracing_subscriber::EnvFilter;

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LogFormat {
    /// One readable line per event.
    #[default]
    Human,
    /// One JSON object per event, span fields included.
    Json,
}

/// Installs the global subscriber: log lines on stderr, and the place of the span
/// exporter ([`export`], idle until the deployment turns it on). Call once, first
/// thing.
pub fn init(format: LogFormat) {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::Layer;
    let filter = std::env::var("MODHOST_LOG")
        .ok()
        .or_else(|| std::env::var("RUST_LOG").ok())
        .and_then(|spec| EnvFilter::try_new(spec).ok())
        .unwrap_or_else(|| EnvFilter::new("info"));
    let lines = tracing_subscriber::fmt::layer()
        // Colours only for a terminal: a log file or a pipe gets plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    let subscriber = tracing_subscriber::registry().with(export::deferred_layer());
    let result = match format {
        LogFormat::Human => subscriber.with(lines.with_filter(filter)).try_init(),
        LogFormat::Json => subscriber
            .with(
                lines
                    .json()
                    .with_current_span(true)
                    .with_span_list(false)
                    .with_filter(filter),
            )
            .try_init(),
    };
    // A second init (tests, embedding) keeps the first subscriber.
    drop(result);
}
