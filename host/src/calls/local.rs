//! A call's last hop: running the callee's export in an instance of its own.

use wasmtime::component::Val;

use crate::capabilities::Hop;
use crate::module::{CallFailed, CallFailure, Failure, ModuleVersion};

/// Calls nested deeper than this fail: A→B→A… must end somewhere.
pub const MAX_CALL_DEPTH: u32 = 32;

/// Calls the export `key` (`interface-without-version#function`) of version `module`
/// with `params`, at `hop`: the module's bulkhead, an instance of its own, its
/// deadline. `route` names the edge for messages. This is every call's last hop,
/// whether the caller runs on this node or another.
pub async fn call_local(
    module: &ModuleVersion,
    key: &str,
    route: &(dyn Fn() -> String + Sync),
    hop: Hop,
    params: &[Val],
    results: &mut [Val],
) -> Result<(), CallFailed> {
    let Some(export) = module.exports.get(key).map(|export| export.index) else {
        return Err(CallFailed::new(
            CallFailure::Unavailable,
            format!(
                "{}: version {} of module `{}` does not export {key}",
                route(),
                module.version,
                module.name()
            ),
        ));
    };
    if let Some(reason) = module.module.not_started() {
        return Err(CallFailed::new(
            CallFailure::Unavailable,
            format!(
                "{}: module `{}` did not start: {reason}",
                route(),
                module.name()
            ),
        ));
    }
    let _permit = module.try_admit().ok_or_else(|| {
        if module.has_left() || module.module.hold.is_held() {
            // Moving, or moved, to another node while the call came: it did not run
            // here; its caller looks again where the module is.
            return CallFailed::new(
                CallFailure::Misplaced,
                format!(
                    "{}: module `{}` is moving to another node",
                    route(),
                    module.name()
                ),
            );
        }
        CallFailed::new(
            CallFailure::Overloaded,
            format!(
                "{}: module `{}` is at its concurrency limit",
                route(),
                module.name()
            ),
        )
    })?;
    let outcome = module
        .run(hop, async |store, instance| {
            let func = instance
                .get_func(&mut *store, export)
                .ok_or_else(|| wasmtime::format_err!("export missing from the instance"))?;
            func.call_async(&mut *store, params, results).await
        })
        .await;
    let (kind, why) = match outcome {
        Ok(()) => return Ok(()),
        // A deeper call that found its callee moved ran nothing, but this call did:
        // to this call's caller it is a callee it could not reach, never one to send
        // again.
        Err(Failure::Call(deeper)) if deeper.kind == CallFailure::Misplaced => {
            return Err(CallFailed::new(CallFailure::Unavailable, deeper.message))
        }
        Err(Failure::Call(deeper)) => return Err(deeper),
        Err(Failure::MemoryExhausted) => (
            CallFailure::Crashed,
            "exceeded its memory limit".to_string(),
        ),
        Err(Failure::DeadlineExceeded) => (
            CallFailure::TimedOut,
            format!(
                "did not return within its timeout of {}",
                module.limits().timeout
            ),
        ),
        Err(other) => (CallFailure::Crashed, format!("failed: {other}")),
    };
    Err(CallFailed::new(
        kind,
        format!("{}: the callee {why}", route()),
    ))
}
