//! An OTLP/HTTP trace receiver: what a collector is to modhost, at the protocol level.
//! It takes `POST /v1/traces` bodies, decodes them as OTLP's protobuf
//! `ExportTraceServiceRequest` and keeps every span, with the service that sent it.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{any_value, KeyValue};
use prost::Message;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// One span as the receiver got it.
#[derive(Debug, Clone)]
pub struct ReceivedSpan {
    /// `service.name` of the resource that sent it.
    pub service: String,
    /// `service.instance.id`: the node.
    pub node: String,
    /// The span's name (`request`, `call`, `remote_call`, `event`…).
    pub name: String,
    /// Trace, span and parent span ids, as hex ("" for no parent).
    pub trace_id: String,
    pub span_id: String,
    pub parent: String,
    /// The span's attributes, as text.
    pub attributes: BTreeMap<String, String>,
    /// Its events: each one's name and attributes.
    pub events: Vec<(String, BTreeMap<String, String>)>,
}

impl ReceivedSpan {
    /// Attribute `key`, or "".
    pub fn attribute(&self, key: &str) -> &str {
        self.attributes.get(key).map_or("", String::as_str)
    }
}

/// The receiver, listening until dropped.
pub struct Receiver {
    address: std::net::SocketAddr,
    spans: Arc<Mutex<Vec<ReceivedSpan>>>,
    /// Requests that did not decode: each one a test failure to report.
    refused: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Receiver {
    /// Starts listening on a free port of 127.0.0.1.
    pub async fn start() -> Receiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the OTLP receiver");
        let address = listener.local_addr().expect("its address");
        let spans = Arc::new(Mutex::new(Vec::new()));
        let refused = Arc::new(Mutex::new(Vec::new()));
        let (kept, problems) = (spans.clone(), refused.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let (kept, problems) = (kept.clone(), problems.clone());
                tokio::spawn(async move {
                    let service = service_fn(move |request: Request<Incoming>| {
                        let (kept, problems) = (kept.clone(), problems.clone());
                        async move {
                            Ok::<_, std::convert::Infallible>(
                                receive(request, kept, problems).await,
                            )
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Receiver {
            address,
            spans,
            refused,
            task,
        }
    }

    /// Where a node sends its spans: `[telemetry] otlp`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.address)
    }

    /// Every span received so far.
    pub fn spans(&self) -> Vec<ReceivedSpan> {
        self.assert_all_decoded();
        self.spans.lock().expect("spans").clone()
    }

    /// Waits (up to `within`) until `done` holds for the spans received, polling as
    /// they arrive; returns them, or panics with what came.
    pub async fn wait_for(
        &self,
        within: Duration,
        what: &str,
        done: impl Fn(&[ReceivedSpan]) -> bool,
    ) -> Vec<ReceivedSpan> {
        let deadline = Instant::now() + within;
        loop {
            let spans = self.spans();
            if done(&spans) {
                return spans;
            }
            if Instant::now() > deadline {
                let names: Vec<String> = spans
                    .iter()
                    .map(|s| format!("{}@{} {} (parent {})", s.name, s.node, s.span_id, s.parent))
                    .collect();
                panic!("no {what} within {within:?}; received: {names:#?}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn assert_all_decoded(&self) {
        let refused = self.refused.lock().expect("refused");
        assert!(refused.is_empty(), "the receiver refused: {refused:?}");
    }
}

async fn receive(
    request: Request<Incoming>,
    kept: Arc<Mutex<Vec<ReceivedSpan>>>,
    refused: Arc<Mutex<Vec<String>>>,
) -> Response<Full<Bytes>> {
    let answer = |status: u16, body: Vec<u8>| {
        Response::builder()
            .status(status)
            .header("content-type", "application/x-protobuf")
            .body(Full::new(Bytes::from(body)))
            .expect("response")
    };
    if request.method() != http::Method::POST || request.uri().path() != "/v1/traces" {
        refused
            .lock()
            .expect("refused")
            .push(format!("{} {}", request.method(), request.uri()));
        return answer(404, Vec::new());
    }
    let body = match request.into_body().collect().await {
        Ok(body) => body.to_bytes(),
        Err(error) => {
            refused
                .lock()
                .expect("refused")
                .push(format!("body: {error}"));
            return answer(400, Vec::new());
        }
    };
    let export = match ExportTraceServiceRequest::decode(body) {
        Ok(export) => export,
        Err(error) => {
            refused
                .lock()
                .expect("refused")
                .push(format!("protobuf: {error}"));
            return answer(400, Vec::new());
        }
    };
    let mut spans = Vec::new();
    for resource in export.resource_spans {
        let resource_attributes = resource
            .resource
            .map(|resource| attributes(&resource.attributes))
            .unwrap_or_default();
        let of = |key: &str| resource_attributes.get(key).cloned().unwrap_or_default();
        for scope in resource.scope_spans {
            for span in scope.spans {
                spans.push(ReceivedSpan {
                    service: of("service.name"),
                    node: of("service.instance.id"),
                    name: span.name,
                    trace_id: hex(&span.trace_id),
                    span_id: hex(&span.span_id),
                    parent: hex(&span.parent_span_id),
                    attributes: attributes(&span.attributes),
                    events: span
                        .events
                        .iter()
                        .map(|event| (event.name.clone(), attributes(&event.attributes)))
                        .collect(),
                });
            }
        }
    }
    kept.lock().expect("spans").extend(spans);
    answer(200, ExportTraceServiceResponse::default().encode_to_vec())
}

fn attributes(list: &[KeyValue]) -> BTreeMap<String, String> {
    list.iter()
        .map(|pair| {
            let value = match pair.value.as_ref().and_then(|v| v.value.as_ref()) {
                Some(any_value::Value::StringValue(s)) => s.clone(),
                Some(any_value::Value::BoolValue(b)) => b.to_string(),
                Some(any_value::Value::IntValue(n)) => n.to_string(),
                Some(any_value::Value::DoubleValue(x)) => x.to_string(),
                Some(other) => format!("{other:?}"),
                None => String::new(),
            };
            (pair.key.clone(), value)
        })
        .collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
