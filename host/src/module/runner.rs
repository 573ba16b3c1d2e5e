//! Background work in a module's instances, for the capabilities that need it (event
//! delivery): the module layer's side of [`ModuleRunner`].

use crate::capabilities::{Hop, InstanceWork, ModuleRunner, WorkFailed};
use crate::runtime::BoxFuture;

use super::failure::Failure;
use super::slot::ModuleSlot;

impl ModuleRunner for ModuleSlot {
    fn module(&self) -> &str {
        &self.name
    }

    /// Runs `work` in a version picked from the slot (a canary gets its share), after
    /// waiting for one of the module's permits, and counts its outcome for that version.
    fn run<'a>(
        &'a self,
        hop: Hop,
        work: &'a mut dyn InstanceWork,
    ) -> BoxFuture<'a, Result<(), WorkFailed>> {
        Box::pin(async move {
            let version = self.pick(hop.routing);
            let failed = |failure: Failure| WorkFailed {
                code: failure.code(),
                message: failure.to_string(),
            };
            if let Some(reason) = version.module.not_started() {
                return Err(failed(Failure::NotStarted(reason.to_string())));
            }
            let Some(_permit) = version.admit().await else {
                return Err(failed(Failure::NotStarted(
                    "the module is shutting down".into(),
                )));
            };
            let outcome = version
                .run(hop, async |store, instance| work.run(store, instance).await)
                .await;
            self.record(&version, matches!(outcome, Ok(true)));
            outcome.map(drop).map_err(failed)
        })
    }
}
