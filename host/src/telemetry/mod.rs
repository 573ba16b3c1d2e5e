//! Logging: human-readable or JSON lines on stderr, filtered by `MODHOST_LOG`
//! (or `RUST_LOG`), default `info`.
//!
//! Every request runs in a `request` span carrying method, path, module, route,
//! status, duration and error id; the access line (`target: modhost::access`) is logged
//! inside it, so both formats show all of them. Silence access lines with
//! `MODHOST_LOG=info,modhost::access=off`.

pub mod metrics;
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

/// Installs the global subscriber. Call once, first thing.
pub fn init(format: LogFormat) {
    let filter = std::env::var("MODHOST_LOG")
        .ok()
        .or_else(|| std::env::var("RUST_LOG").ok())
        .and_then(|spec| EnvFilter::try_new(spec).ok())
        .unwrap_or_else(|| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        // Colours only for a terminal: a log file or a pipe gets plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    let result = match format {
        LogFormat::Human => builder.try_init(),
        LogFormat::Json => builder
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .try_init(),
    };
    // A second init (tests, embedding) keeps the first subscriber.
    drop(result);
}
