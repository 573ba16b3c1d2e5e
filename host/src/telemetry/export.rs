//! Spans out of the process: OTLP over HTTP (protobuf) to the collector that
//! `[telemetry] otlp` names. Off by default, and then free: no span is even recorded
//! for it.
//!
//! The host's spans are `tracing` spans (a request, a call, a remote call, an event
//! delivery); `tracing-opentelemetry` turns them into OpenTelemetry spans, and the
//! module's log lines inside them into span events. Each hop of a trace is one of
//! those spans: [`span_context`] makes a hop's span the child of the hop before it (a
//! `traceparent` from a client, a peer node or an event) and hands back its ids, which
//! the next hop gets as its parent — so a request that crosses modules, nodes and the
//! broker is one trace at the collector, with every parent link in place.
//!
//! Nothing here may slow a request down. A finished span goes into a bounded queue
//! ([`TelemetrySettings::queue`]); when that is full the span is dropped and counted
//! (`modhost_trace_spans_dropped_total`), never waited for. One task takes spans from
//! the queue in batches and sends them, each batch bounded by [`EXPORT_TIMEOUT`].
//!
//! The layer is part of the subscriber from the start (logging starts before the
//! deployment file is read) and does nothing until [`start`] gives it a tracer.

use std::any::TypeId;
use std::sync::OnceLock;
use std::time::Duration;

use anyhow::{Context as _, Result};
use opentelemetry::trace::{
    SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState, TracerProvider as _,
};
use opentelemetry::KeyValue;
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{
    Sampler, SdkTracer, SdkTracerProvider, SpanData, SpanExporter, SpanProcessor,
};
use opentelemetry_sdk::Resource;
use tokio::sync::{mpsc, oneshot};
use tracing::span;
use tracing_opentelemetry::{OpenTelemetryLayer, OpenTelemetrySpanExt};
use tracing_subscriber::layer::Context;
use tracing_subscriber::{Layer, Registry};

use super::metrics::{metrics, TraceExportMetrics};
use super::trace::TraceContext;

/// How many spans wait for export at most, by default.
pub const DEFAULT_QUEUE: usize = 4096;

/// The largest export queue a deployment may ask for.
pub const MAX_QUEUE: usize = 1_000_000;

/// How this node exports its spans: the deployment's `[telemetry]`, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct TelemetrySettings {
    /// The OTLP/HTTP collector spans are exported to (`http://host:port`, spans sent
    /// to its `/v1/traces` as protobuf). `None`: no span leaves the process.
    pub otlp: Option<http::Uri>,
    /// The share of new traces recorded, 0 to 1. A request that arrives with a
    /// `traceparent` keeps its caller's decision, and so does everything it causes.
    pub sampling: f64,
    /// The `service.name` of this node's spans (default: the app's name); the node's
    /// name goes in `service.instance.id`.
    pub service_name: Option<String>,
    /// Spans waiting for export at most: a slow or absent collector never holds up a
    /// request, the spans past this are dropped and counted.
    pub queue: usize,
    /// How long a request may take before the dashboard lists it as slow.
    pub slow_request: Duration,
    /// Where the dashboard links a trace id to (`{trace_id}` replaced), such as a
    /// Jaeger or Tempo page. `None`: trace ids are shown, not linked.
    pub trace_url: Option<String>,
}

impl Default for TelemetrySettings {
    fn default() -> Self {
        TelemetrySettings {
            otlp: None,
            sampling: 1.0,
            service_name: None,
            queue: DEFAULT_QUEUE,
            slow_request: super::overview::DEFAULT_SLOW,
            trace_url: None,
        }
    }
}

/// How long one batch may take to reach the collector.
pub const EXPORT_TIMEOUT: Duration = Duration::from_secs(5);

/// Spans sent in one request at most.
const BATCH: usize = 512;

/// How long a span waits for others to fill its batch.
const BATCH_WAIT: Duration = Duration::from_millis(200);

/// The layer that turns spans into OpenTelemetry spans, once [`start`] made it.
type OtelLayer = OpenTelemetryLayer<Registry, SdkTracer>;

/// The layer, set once by [`start`].
static LAYER: OnceLock<OtelLayer> = OnceLock::new();

/// Asks the export task to send what it holds: answered once it has.
static FLUSH: OnceLock<mpsc::Sender<oneshot::Sender<()>>> = OnceLock::new();

/// Whether spans are recorded for export (the layer exists): read before anything
/// else is done for it.
fn active() -> bool {
    LAYER.get().is_some()
}

/// The subscriber's place for the exporting layer: forwards to it once it exists.
pub(super) fn deferred_layer() -> impl Layer<Registry> {
    Deferred.with_filter(Exported)
}

/// Which spans and events go to the exporting layer: the host's, at `info` and
/// above, once export is on.
///
/// What a call site is (its level, its target) never changes, so a call site that can
/// never be exported is told so once (`never`), and costs nothing after. Whether
/// export is on is asked each time (`sometimes`): the answer is then the filter's,
/// decided right before the span is made. (Cached as `always` instead, a span's
/// per-layer filter state would not be set fresh when it is made, and a `relay`
/// span was seen left out of the export though export was on.)
struct Exported;

impl Exported {
    /// Whether spans and events of `metadata`'s call site may ever be exported.
    fn exportable(metadata: &tracing::Metadata<'_>) -> bool {
        *metadata.level() <= tracing::Level::INFO && metadata.target().starts_with("modhost")
    }
}

impl<S> tracing_subscriber::layer::Filter<S> for Exported {
    fn enabled(&self, metadata: &tracing::Metadata<'_>, _: &Context<'_, S>) -> bool {
        active() && Exported::exportable(metadata)
    }

    // Without it the subscriber's level hint would be "anything", and every
    // dependency's `trace!` and `log::trace!` would be built to be filtered.
    fn max_level_hint(&self) -> Option<tracing::level_filters::LevelFilter> {
        Some(if active() {
            tracing::level_filters::LevelFilter::INFO
        } else {
            tracing::level_filters::LevelFilter::OFF
        })
    }

    fn callsite_enabled(
        &self,
        metadata: &'static tracing::Metadata<'static>,
    ) -> tracing::subscriber::Interest {
        if Exported::exportable(metadata) {
            tracing::subscriber::Interest::sometimes()
        } else {
            tracing::subscriber::Interest::never()
        }
    }
}

/// Forwards every callback to [`LAYER`] when it is set.
struct Deferred;

impl Layer<Registry> for Deferred {
    fn on_new_span(&self, attrs: &span::Attributes<'_>, id: &span::Id, ctx: Context<'_, Registry>) {
        if let Some(layer) = LAYER.get() {
            layer.on_new_span(attrs, id, ctx);
        }
    }

    fn on_record(&self, id: &span::Id, values: &span::Record<'_>, ctx: Context<'_, Registry>) {
        if let Some(layer) = LAYER.get() {
            layer.on_record(id, values, ctx);
        }
    }

    fn on_follows_from(&self, id: &span::Id, follows: &span::Id, ctx: Context<'_, Registry>) {
        if let Some(layer) = LAYER.get() {
            layer.on_follows_from(id, follows, ctx);
        }
    }

    fn on_event(&self, event: &tracing::Event<'_>, ctx: Context<'_, Registry>) {
        if let Some(layer) = LAYER.get() {
            layer.on_event(event, ctx);
        }
    }

    fn on_enter(&self, id: &span::Id, ctx: Context<'_, Registry>) {
        if let Some(layer) = LAYER.get() {
            layer.on_enter(id, ctx);
        }
    }

    fn on_exit(&self, id: &span::Id, ctx: Context<'_, Registry>) {
        if let Some(layer) = LAYER.get() {
            layer.on_exit(id, ctx);
        }
    }

    fn on_close(&self, id: span::Id, ctx: Context<'_, Registry>) {
        if let Some(layer) = LAYER.get() {
            layer.on_close(id, ctx);
        }
    }

    // `OpenTelemetrySpanExt` finds the layer by downcasting the subscriber: the
    // exporting layer's types must be reachable through this one.
    unsafe fn downcast_raw(&self, id: TypeId) -> Option<*const ()> {
        if id == TypeId::of::<Self>() {
            return Some(self as *const Self as *const ());
        }
        // SAFETY: forwarded to a layer that lives as long as the process.
        LAYER
            .get()
            .and_then(|layer| unsafe { layer.downcast_raw(id) })
    }
}

/// Starts exporting this node's spans as `settings` say (nothing if `otlp` is not
/// set). `service` is the default service name (the app's), `node` the node's name.
/// Call once, inside the runtime, before serving.
pub fn start(settings: &TelemetrySettings, service: &str, node: Option<&str>) -> Result<()> {
    let Some(otlp) = &settings.otlp else {
        return Ok(());
    };
    let endpoint = format!("{}/v1/traces", otlp.to_string().trim_end_matches('/'));
    let mut exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(endpoint.clone())
        .with_timeout(EXPORT_TIMEOUT)
        .build()
        .context("making the OTLP exporter")?;
    let resource = Resource::builder()
        .with_service_name(
            settings
                .service_name
                .clone()
                .unwrap_or_else(|| service.to_string()),
        )
        .with_attributes([
            KeyValue::new("service.instance.id", node.unwrap_or("single").to_string()),
            KeyValue::new("service.version", env!("CARGO_PKG_VERSION")),
        ])
        .build();
    exporter.set_resource(&resource);

    let (spans, queued) = mpsc::channel(settings.queue);
    let (flush, flushes) = mpsc::channel(1);
    let counts = metrics().trace_export.clone();
    tokio::spawn(send_batches(exporter, queued, flushes, counts.clone()));
    let provider = SdkTracerProvider::builder()
        .with_span_processor(Queue { spans, counts })
        .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
            settings.sampling,
        ))))
        .with_resource(resource)
        .build();
    let layer = tracing_opentelemetry::layer()
        .with_tracer(provider.tracer("modhost"))
        .with_location(false)
        .with_threads(false)
        .with_tracked_inactivity(false)
        // Each hop's parent is set by `span_context`, not taken from a thread-local.
        .with_context_activation(false);
    if LAYER.set(layer).is_err() {
        anyhow::bail!("span export was already started in this process");
    }
    let _ = FLUSH.set(flush);
    // Call sites decided while export was off are asked again.
    tracing::callsite::rebuild_interest_cache();
    tracing::info!(
        endpoint,
        sampling = settings.sampling,
        "exporting spans over OTLP"
    );
    Ok(())
}

/// Sends what the export queue holds now and waits for it (at most `within`): at
/// shutdown, so the last requests' spans are not lost.
pub async fn flush(within: Duration) {
    let Some(flush) = FLUSH.get() else { return };
    let (done, sent) = oneshot::channel();
    if flush.send(done).await.is_ok() {
        let _ = tokio::time::timeout(within, sent).await;
    }
}

/// Makes `span` the child of `parent` (a new trace's root if none) and returns its
/// context, when spans are exported; `None` when they are not, or the span is not
/// recorded.
pub(super) fn span_context(
    span: &tracing::Span,
    parent: Option<TraceContext>,
) -> Option<TraceContext> {
    if !active() {
        return None;
    }
    if let Some(parent) = parent {
        let flags = if parent.sampled {
            TraceFlags::SAMPLED
        } else {
            TraceFlags::default()
        };
        let remote = SpanContext::new(
            TraceId::from_bytes(parent.trace_id.to_be_bytes()),
            SpanId::from_bytes(parent.span_id.to_be_bytes()),
            flags,
            true,
            TraceState::default(),
        );
        // Refused only for a span that is not recorded, or already started: then the
        // context read below is not valid, and the caller goes on without it.
        let _ = span.set_parent(opentelemetry::Context::new().with_remote_span_context(remote));
    }
    let context = span.context();
    let own = context.span().span_context().clone();
    own.is_valid().then(|| TraceContext {
        trace_id: u128::from_be_bytes(own.trace_id().to_bytes()),
        span_id: u64::from_be_bytes(own.span_id().to_bytes()),
        sampled: own.is_sampled(),
    })
}

/// The span processor: a finished span goes into the bounded queue, or is dropped.
#[derive(Debug)]
struct Queue {
    spans: mpsc::Sender<SpanData>,
    counts: TraceExportMetrics,
}

impl SpanProcessor for Queue {
    fn on_start(&self, _span: &mut opentelemetry_sdk::trace::Span, _cx: &opentelemetry::Context) {}

    fn on_end(&self, span: SpanData) {
        if self.spans.try_send(span).is_err() {
            self.counts.dropped.inc();
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        Ok(())
    }

    fn shutdown_with_timeout(&self, _timeout: Duration) -> OTelSdkResult {
        Ok(())
    }
}

/// Sends `batch` (emptying it), counting what became of it.
async fn send(
    exporter: &opentelemetry_otlp::SpanExporter,
    batch: &mut Vec<SpanData>,
    counts: &TraceExportMetrics,
    failures: &mut u64,
) {
    if batch.is_empty() {
        return;
    }
    let sent = batch.len() as u64;
    if let Err(error) = exporter.export(std::mem::take(batch)).await {
        counts.failed.inc();
        *failures += 1;
        // The first failure, then one in a hundred: a collector that is away must
        // not flood the log.
        if *failures % 100 == 1 {
            tracing::warn!(target: "export", failures, "sending spans to the OTLP collector: {error}");
        }
        return;
    }
    counts.exported.inc_by(sent);
}

/// The export task: takes spans from the queue in batches (up to [`BATCH`], or what
/// came within [`BATCH_WAIT`] of the first) and sends each batch, one at a time.
async fn send_batches(
    exporter: opentelemetry_otlp::SpanExporter,
    mut queued: mpsc::Receiver<SpanData>,
    mut flushes: mpsc::Receiver<oneshot::Sender<()>>,
    counts: TraceExportMetrics,
) {
    let mut batch = Vec::with_capacity(BATCH);
    let mut failures = 0u64;
    loop {
        let mut flushed = None;
        tokio::select! {
            span = queued.recv() => match span {
                Some(span) => batch.push(span),
                None => return,
            },
            Some(done) = flushes.recv() => flushed = Some(done),
        }
        if flushed.is_some() {
            // Everything queued now, batch after batch.
            loop {
                while batch.len() < BATCH {
                    match queued.try_recv() {
                        Ok(span) => batch.push(span),
                        Err(_) => break,
                    }
                }
                if batch.is_empty() {
                    break;
                }
                send(&exporter, &mut batch, &counts, &mut failures).await;
            }
        } else {
            let until = tokio::time::Instant::now() + BATCH_WAIT;
            while batch.len() < BATCH {
                match tokio::time::timeout_at(until, queued.recv()).await {
                    Ok(Some(span)) => batch.push(span),
                    _ => break,
                }
            }
            send(&exporter, &mut batch, &counts, &mut failures).await;
        }
        if let Some(done) = flushed {
            let _ = done.send(());
        }
    }
}
