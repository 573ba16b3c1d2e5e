//! `[rollout]` and `[admin]`: how new module versions are trialled and judged, and the
//! authenticated listener through which operators swap them.

use serde::Deserialize;
use std::net::SocketAddr;

use super::{expand_env, Problems};

/// `[rollout]`: when a canary has failed, and which request header keeps a client on
/// one version.
#[derive(Debug, Clone, PartialEq)]
pub struct RolloutSettings {
    /// A canary whose share of failed requests and calls passes this (0-1) is rolled
    /// back on its own…
    pub max_error_rate: f64,
    /// …once it has served at least this many.
    pub min_requests: u64,
    /// The request header whose value picks the version: the same value, the same
    /// version, for the whole rollout (lower-case).
    pub sticky_header: String,
}

impl Default for RolloutSettings {
    fn default() -> Self {
        RolloutSettings {
            max_error_rate: 0.05,
            min_requests: 20,
            sticky_header: "x-canary-key".into(),
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RolloutSection {
    max_error_rate: Option<f64>,
    min_requests: Option<u64>,
    sticky_header: Option<String>,
}

impl RolloutSection {
    pub(super) fn settings(self, problems: &mut Problems) -> RolloutSettings {
        let mut settings = RolloutSettings::default();
        if let Some(rate) = self.max_error_rate {
            if (0.0..=1.0).contains(&rate) {
                settings.max_error_rate = rate;
            } else {
                problems.add(
                    "rollout.max_error_rate",
                    "must be from 0 to 1 (a share of requests)",
                );
            }
        }
        if let Some(min) = self.min_requests {
            if min == 0 {
                problems.add("rollout.min_requests", "must be at least 1");
            } else {
                settings.min_requests = min;
            }
        }
        if let Some(header) = self.sticky_header {
            if http::HeaderName::from_bytes(header.as_bytes()).is_ok() {
                settings.sticky_header = header.to_ascii_lowercase();
            } else {
                problems.add("rollout.sticky_header", "is not a valid header name");
            }
        }
        settings
    }
}

/// `[admin]`: the operators' listener (status, swap, canary, promote, rollback).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminSettings {
    /// Where it listens (a node of a split deployment uses its `nodes.NAME.admin`).
    pub listen: Option<SocketAddr>,
    /// The bearer token every request must carry.
    pub token: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct AdminSection {
    listen: Option<SocketAddr>,
    token: String,
}

impl AdminSection {
    pub(super) fn settings(self, problems: &mut Problems) -> Option<AdminSettings> {
        let (token, known) = match expand_env(&self.token) {
            Ok(Some(token)) => (token, true),
            Ok(None) => (self.token, false),
            Err(problem) => {
                problems.add("admin.token", &problem);
                return None;
            }
        };
        if known && token.len() < 16 {
            problems.add(
                "admin.token",
                "must be at least 16 characters (it is the only thing between the network and swapping modules)",
            );
            return None;
        }
        Some(AdminSettings {
            listen: self.listen,
            token,
        })
    }
}
