//! What a client is told when a module could not answer: the status code and message
//! for each [`Failure`].
//!
//! The module's own failures are its fault and say so (500, 504); a failure of a module
//! it called is the callee's (502, 503, 504: a gateway's codes, since the module acted
//! as one); a module at its limit or not started is unavailable (503), and the client
//! may retry an overloaded one shortly (`Retry-After`).

use http::StatusCode;

use crate::module::{CallFailed, CallFailure, Failure};

/// How the gateway answers a request that `module` failed with `failure`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// The status code.
    pub status: StatusCode,
    /// The message for the client.
    pub message: String,
    /// Whether the client may retry shortly (`Retry-After: 1`).
    pub retry_soon: bool,
}

/// The answer to a request that `module` failed with `failure`.
pub fn answer(module: &str, failure: &Failure) -> Answer {
    let (status, message) = match failure {
        Failure::Overloaded => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("module {module} is at its concurrency limit; retry shortly"),
        ),
        Failure::DeadlineExceeded => (
            StatusCode::GATEWAY_TIMEOUT,
            format!("module {module} did not answer within its timeout"),
        ),
        Failure::MemoryExhausted => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("module {module} exceeded its memory limit"),
        ),
        Failure::Trapped(_) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("module {module} failed (trapped) while handling the request"),
        ),
        Failure::NoResponse(_) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("module {module} did not produce a response"),
        ),
        Failure::NotStarted(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("module {module} did not start: {reason}"),
        ),
        // The module's own code was fine; a module it depends on was not.
        Failure::Call(failed) => (
            match failed.kind {
                CallFailure::Unavailable | CallFailure::Overloaded | CallFailure::Misplaced => {
                    StatusCode::SERVICE_UNAVAILABLE
                }
                CallFailure::TimedOut => StatusCode::GATEWAY_TIMEOUT,
                CallFailure::Crashed => StatusCode::BAD_GATEWAY,
                CallFailure::TooDeep => StatusCode::INTERNAL_SERVER_ERROR,
            },
            format!("module {module} could not complete a call to another module"),
        ),
    };
    let retry_soon = matches!(failure, Failure::Overloaded)
        || matches!(failure, Failure::Call(failed) if failed.kind == CallFailure::Overloaded);
    Answer {
        status,
        message,
        retry_soon,
    }
}

/// The answer to a request forwarded to its module's node that got no response: the
/// module's policy or the mesh ended it with `failed` (whose message says why, naming
/// the node or the policy); with its stable code.
pub fn forwarded(failed: &CallFailed) -> (Answer, &'static str) {
    let (status, code) = match failed.kind {
        CallFailure::TimedOut => (StatusCode::GATEWAY_TIMEOUT, "gateway_timeout"),
        CallFailure::Overloaded => (StatusCode::SERVICE_UNAVAILABLE, "module_overloaded"),
        _ => (StatusCode::SERVICE_UNAVAILABLE, "module_unavailable"),
    };
    let answer = Answer {
        status,
        message: failed.message.clone(),
        retry_soon: failed.kind == CallFailure::Overloaded,
    };
    (answer, code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_forward_that_got_no_response_says_why_with_its_code() {
        let cases = [
            (CallFailure::TimedOut, 504, "gateway_timeout", false),
            (CallFailure::Overloaded, 503, "module_overloaded", true),
            (CallFailure::Unavailable, 503, "module_unavailable", false),
        ];
        for (kind, status, code, retry_soon) in cases {
            let failed = CallFailed::new(kind, "gateway → m (forwarded): why".into());
            let (answer, said) = forwarded(&failed);
            assert_eq!(
                (answer.status.as_u16(), said, answer.retry_soon),
                (status, code, retry_soon)
            );
            assert_eq!(answer.message, failed.message);
        }
    }
    use crate::module::CallFailed;

    fn call(kind: CallFailure) -> Failure {
        Failure::Call(CallFailed::new(kind, "a → b.api#f: why".into()))
    }

    #[test]
    fn every_failure_has_its_status_code_and_stable_code() {
        let cases = [
            (Failure::Overloaded, 503, "module_overloaded", true),
            (Failure::DeadlineExceeded, 504, "module_timeout", false),
            (Failure::MemoryExhausted, 500, "module_out_of_memory", false),
            (
                Failure::Trapped(anyhow::anyhow!("boom")),
                500,
                "module_trapped",
                false,
            ),
            (
                Failure::NoResponse(anyhow::anyhow!("none")),
                500,
                "module_no_response",
                false,
            ),
            (
                Failure::NotStarted("no db".into()),
                503,
                "module_unavailable",
                false,
            ),
            (
                call(CallFailure::Unavailable),
                503,
                "call_unavailable",
                false,
            ),
            (call(CallFailure::Overloaded), 503, "call_overloaded", true),
            (call(CallFailure::TimedOut), 504, "call_timeout", false),
            (call(CallFailure::Crashed), 502, "call_failed", false),
            (
                call(CallFailure::TooDeep),
                500,
                "call_depth_exceeded",
                false,
            ),
        ];
        for (failure, status, code, retry_soon) in cases {
            let answer = answer("orders", &failure);
            assert_eq!(answer.status.as_u16(), status, "{failure:?}");
            assert_eq!(failure.code(), code);
            assert_eq!(answer.retry_soon, retry_soon, "{failure:?}");
            assert!(
                answer.message.contains("module orders"),
                "{}",
                answer.message
            );
        }
    }

    #[test]
    fn a_module_that_did_not_start_says_why() {
        let answer = answer(
            "inventory",
            &Failure::NotStarted("0002_broken.sql failed".into()),
        );
        assert_eq!(
            answer.message,
            "module inventory did not start: 0002_broken.sql failed"
        );
    }
}
