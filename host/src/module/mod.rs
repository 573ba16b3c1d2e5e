//! Modules as the host runs them: loaded versions, their instances, limits and
//! failures, their slots, and the directory of what is served where.
//!
//! - [`version`]: a module on this node ([`Module`](version::Module)) and one loaded
//!   version of it ([`ModuleVersion`](version::ModuleVersion)), which runs work in a
//!   fresh or warm instance under the module's limits;
//! - [`failure`]: how such work fails, and the failure of a call between modules;
//! - [`interface`]: interface names, and where calls into a version land;
//! - [`http`]: serving one HTTP request with a fresh instance;
//! - [`slot`]: a module's serving version and canary, switched atomically;
//! - [`hold`]: a module's new work waiting while it moves;
//! - [`warm`]: warm instances of modules that reuse them;
//! - [`directory`]: what is served where, republished on every change;
//! - [`registry`]: loading every module of the node through the capabilities'
//!   lifecycle, and owning the directory;
//! - [`extraction`]: a module moving to another node with its data, this node's part;
//! - [`moving`]: a module's data files, copied to another node chunk by chunk;
//! - [`placing`]: a new placement applied while the node serves;
//! - [`swap`]: new versions — swap, canary, promote, rollback, adoption;
//! - [`versions`]: which version serves, remembered across restarts;
//! - [`crates`]: module crates, built with cargo;
//! - [`runner`]: background work of capabilities in a module's instances.

pub mod crates;
pub mod directory;
pub mod extraction;
pub mod failure;
pub mod hold;
pub mod http;
pub mod interface;
pub mod javascript;
pub mod moving;
pub mod placing;
pub mod python;
pub mod registry;
mod runner;
pub mod scaffold;
pub mod slot;
pub mod sources;
pub mod swap;
pub mod version;
pub mod versions;
pub mod warm;

pub use failure::{CallFailed, CallFailure, Failure};
pub use registry::{LoadError, Registry};
pub use slot::ModuleSlot;
pub use version::{Module, ModuleVersion};
