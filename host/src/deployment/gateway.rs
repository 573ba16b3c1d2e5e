//! `[gateway]`: the public HTTP listener and the limits that protect it.

use serde::Deserialize;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use super::access::{IssuerSection, RouteSection};
use super::errors::Problems;
use super::units::{ByteSize, Timeout};

/// `[gateway]`: the public HTTP listener and the limits that protect it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GatewaySettings {
    /// Address the gateway listens on.
    pub listen: SocketAddr,
    /// Connections served at once; further clients wait in the accept queue.
    pub max_connections: usize,
    /// Connections one client address may hold at once; more are answered 503 and
    /// closed, so one client cannot take every connection.
    pub max_connections_per_client: usize,
    /// How long a connection may stay open with no request in flight before it is
    /// closed (HTTP/1 keep-alive and HTTP/2 alike).
    pub idle_timeout: Timeout,
    /// Largest request head (request line + headers); larger gets 431.
    pub max_header_bytes: ByteSize,
    /// Largest request body; larger gets 413.
    pub max_body: ByteSize,
    /// Time a client has to send a complete request head (stops slowloris).
    pub header_read_timeout: Timeout,
    /// Time from request head to the start of the response, including the body upload.
    pub request_timeout: Timeout,
    /// On SIGTERM/SIGINT, how long in-flight requests may take to finish.
    pub shutdown_grace: Timeout,
    /// `[gateway.issuers.NAME]`: token services the gateway trusts, as written (checked
    /// into [`crate::deployment::Deployment::access`]).
    pub issuers: BTreeMap<String, IssuerSection>,
    /// `[gateway.routes."/path"]`: each route's authentication and rate limits, as
    /// written (checked into [`crate::deployment::Deployment::access`]).
    pub routes: BTreeMap<String, RouteSection>,
}

impl Default for GatewaySettings {
    fn default() -> Self {
        GatewaySettings {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            max_connections: 10_000,
            max_connections_per_client: 512,
            idle_timeout: Timeout(Duration::from_secs(60)),
            max_header_bytes: ByteSize::kib(16),
            max_body: ByteSize::mib(1),
            header_read_timeout: Timeout(Duration::from_secs(10)),
            request_timeout: Timeout(Duration::from_secs(30)),
            shutdown_grace: Timeout(Duration::from_secs(30)),
            issuers: BTreeMap::new(),
            routes: BTreeMap::new(),
        }
    }
}

/// Checks what the types of `[gateway]` cannot.
pub(super) fn check_gateway(gateway: &GatewaySettings, problems: &mut Problems) {
    if gateway.max_connections == 0 {
        problems.add("gateway.max_connections", "must be at least 1");
    }
    if gateway.max_connections_per_client == 0 {
        problems.add("gateway.max_connections_per_client", "must be at least 1");
    }
    // hyper needs at least 8 KiB of read buffer for a request head.
    if gateway.max_header_bytes < ByteSize::kib(8) || gateway.max_header_bytes > ByteSize::mib(1) {
        problems.add("gateway.max_header_bytes", "must be from 8KiB to 1MiB");
    }
    if gateway.max_body.bytes() == 0 {
        problems.add("gateway.max_body", "must be more than 0 bytes");
    }
    for (key, value) in [
        ("gateway.header_read_timeout", gateway.header_read_timeout),
        ("gateway.request_timeout", gateway.request_timeout),
        ("gateway.idle_timeout", gateway.idle_timeout),
    ] {
        if value.duration().is_zero() {
            problems.add(key, "must be longer than 0s");
        }
    }
}
