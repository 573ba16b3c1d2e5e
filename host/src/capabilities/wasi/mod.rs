//! WASI 0.2 and 0.3 for modules: clocks and randomness, but no filesystem, environment,
//! arguments or sockets. Whatever a module writes to stdout or stderr becomes log
//! lines of the host, tagged with the module's name, in the span of the work the
//! instance serves.
//!
//! Every module gets it (a Rust std component cannot run without `wasi:cli` and
//! friends); what it grants is nothing beyond the clock and the random source.

use anyhow::Result;
use std::io::Write;
use std::sync::{Arc, Mutex};
use wasmtime::component::Linker;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::{Capability, Components, InstanceState, StateMap};
use crate::engine::OuterNames;
use crate::telemetry::span::LogSpan;

/// The WASI capability.
pub struct Wasi;

/// An instance's WASI context.
pub struct WasiSlice(WasiCtx);

impl Capability for Wasi {
    fn name(&self) -> &'static str {
        "wasi"
    }

    /// Links WASI 0.2 (the `wasi:cli/*`, `wasi:io`, `wasi:clocks`, `wasi:random`,
    /// `wasi:filesystem` and `wasi:sockets` interfaces a Rust std component imports).
    fn link(&self, linker: &mut Linker<InstanceState>, _: &Components<'_>) -> Result<()> {
        Ok(wasmtime_wasi::p2::add_to_linker_async(linker)?)
    }

    /// Links WASI 0.3 and, beside it, WASI 0.2: a Rust component built with the
    /// `wasip3` bindings still reaches the 0.2 interfaces through its standard library.
    /// Both read the same context, so a WASI 0.3 module is granted what a 0.2 one is.
    fn link_concurrent(&self, linker: &mut Linker<InstanceState>) -> Result<()> {
        wasmtime_wasi::p2::add_to_linker_async(linker)?;
        Ok(wasmtime_wasi::p3::add_to_linker(linker)?)
    }

    fn prepare(&self, instance: &mut InstanceState, _: &StateMap, _: &StateMap) {
        let ctx = context(instance.module(), &instance.log_span);
        instance.slices.insert(WasiSlice(ctx));
    }
}

/// The WASI release lines modules are linked against: every `wasi:*` import must be a
/// version of one of them. wasmtime 48 implements 0.2.12, which also serves the
/// releases before it (0.2.0 to 0.2.11), and 0.3 (for WASI 0.3 components, on the
/// concurrent engine); a pre-release other than those the host links exactly
/// (`wasi:config@0.2.0-rc.1`, `wasi:keyvalue@0.2.0-draft`) passes this check and is
/// then refused by the linker.
pub const SERVED_WASI: [&str; 2] = ["0.2", "0.3"];

/// Whether a component import named `name` is one the host can serve as far as WASI
/// goes: anything outside the `wasi:` namespace, or a `wasi:*` interface of a served
/// line. An unversioned `wasi:*` name is not on one.
pub fn is_served(name: &str) -> bool {
    if !name.starts_with("wasi:") {
        return true;
    }
    name.split_once('@').is_some_and(|(_, version)| {
        SERVED_WASI.iter().any(|line| {
            version
                .strip_prefix(line)
                .is_some_and(|rest| rest.starts_with('.'))
        })
    })
}

/// The `wasi:*` imports of `component` that no served line has, so a load can refuse
/// them by name instead of failing to link with a generic message.
pub fn unserved_imports(
    engine: &wasmtime::Engine,
    component: &wasmtime::component::Component,
) -> Vec<String> {
    component
        .component_type()
        .imports(engine)
        .map(|(name, _)| name)
        .filter(|name| !is_served(name))
        .map(str::to_string)
        .collect()
}

/// The same, read from a component's bytes without compiling them: for a component
/// that does not compile, to say whether unserved WASI is why.
pub fn unserved_imports_in(bytes: &[u8]) -> Vec<String> {
    OuterNames::of(bytes)
        .imports
        .into_iter()
        .filter(|name| !is_served(name))
        .collect()
}

/// A WASI context granting nothing beyond clocks and randomness, its output logged in
/// `span`.
fn context(module: &str, span: &LogSpan) -> WasiCtx {
    WasiCtx::builder()
        .stdout(GuestLog::new(module, "stdout", span))
        .stderr(GuestLog::new(module, "stderr", span))
        .allow_tcp(false)
        .allow_udp(false)
        .allow_ip_name_lookup(false)
        .build()
}

impl WasiView for InstanceState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        // Every instance is prepared with its context; should one not be, it gets the
        // same grant-nothing context rather than a panic.
        let WasiSlice(ctx) = self
            .slices
            .get_or_insert_with(|| WasiSlice(context(&self.module, &self.log_span)));
        WasiCtxView {
            ctx,
            table: &mut self.table,
        }
    }
}

/// A guest output stream that turns complete lines into `tracing` events.
///
/// It logs inside the instance's [`LogSpan`] (the request's or call's): wasmtime-wasi
/// writes guest output from a worker task of its own, where the request's span would
/// otherwise be lost.
#[derive(Clone)]
struct GuestLog {
    module: Arc<str>,
    stream: &'static str,
    span: LogSpan,
    pending: Arc<Mutex<Vec<u8>>>,
}

/// A guest line longer than this is logged in pieces rather than buffered further.
const MAX_LINE: usize = 16 * 1024;

impl GuestLog {
    fn new(module: &str, stream: &'static str, span: &LogSpan) -> GuestLog {
        GuestLog {
            module: module.into(),
            stream,
            span: span.clone(),
            pending: Arc::default(),
        }
    }

    fn emit(&self, line: &[u8]) {
        let text = String::from_utf8_lossy(line);
        let text = text.trim_end_matches('\r');
        self.span.get().in_scope(|| {
            tracing::info!(target: "modhost::guest", module = %self.module, stream = self.stream, "{text}");
        });
    }
}

impl Write for GuestLog {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        let mut pending = self
            .pending
            .lock()
            .map_err(|_| std::io::Error::other("guest log lock poisoned"))?;
        pending.extend_from_slice(bytes);
        while let Some(end) = pending.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = pending.drain(..=end).collect();
            self.emit(&line[..line.len() - 1]);
        }
        if pending.len() > MAX_LINE {
            let line: Vec<u8> = std::mem::take(&mut *pending);
            self.emit(&line);
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for GuestLog {
    fn drop(&mut self) {
        // The last clone of a stream flushes what is left of an unterminated line.
        if Arc::strong_count(&self.pending) == 1 {
            if let Ok(pending) = self.pending.lock() {
                if !pending.is_empty() {
                    self.emit(&pending);
                }
            }
        }
    }
}

impl IsTerminal for GuestLog {
    fn is_terminal(&self) -> bool {
        false
    }
}

// The default `p2_stream` adapts `async_stream`; it is built only when a guest
// actually asks for its stdout or stderr, so quiet modules pay nothing.
impl StdoutStream for GuestLog {
    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(tokio_util_compat::AllowStdWrite(self.clone()))
    }
}

mod tokio_util_compat {
    //! A blocking-free `Write` (it only buffers and logs) used as `AsyncWrite`.
    use std::io::Write;
    use std::pin::Pin;
    use std::task::{Context, Poll};

    pub struct AllowStdWrite<W>(pub W);

    impl<W: Write + Unpin> tokio::io::AsyncWrite for AllowStdWrite<W> {
        fn poll_write(
            mut self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<std::io::Result<usize>> {
            Poll::Ready(self.0.write(buf))
        }

        fn poll_flush(
            mut self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
        ) -> Poll<std::io::Result<()>> {
            Poll::Ready(self.0.flush())
        }

        fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_0_2_and_0_3_lines_of_wasi_are_served() {
        for served in [
            "wasi:cli/environment@0.2.0",
            "wasi:cli/stdin@0.3.2",
            "wasi:http/types@0.3.0",
            "wasi:http/types@0.2.12",
            "wasi:config/store@0.2.0-rc.1",
            "wasi:keyvalue/store@0.2.0-draft",
            "modhost:sql/sql@2.0.0",
            "shop:users/api@1.0.0",
        ] {
            assert!(is_served(served), "{served}");
        }
        for refused in [
            "wasi:cli/stdin@0.1.0",
            "wasi:cli/stdin@0.4.0",
            "wasi:cli/stdin@0.30.0",
            "wasi:cli/environment",
            "wasi:io/streams@0.20.0",
            "wasi:io/streams@1.0.0",
        ] {
            assert!(!is_served(refused), "{refused}");
        }
    }

    #[test]
    fn the_imports_of_component_bytes_are_read_without_compiling() {
        let bytes = wat::parse_str(
            r#"(component
                (import "wasi:cli/stdin@0.4.0" (instance))
                (import "wasi:clocks/monotonic-clock@0.2.4" (instance))
                (component (import "wasi:http/types@0.5.0" (instance)))
            )"#,
        )
        .unwrap();
        assert_eq!(unserved_imports_in(&bytes), ["wasi:cli/stdin@0.4.0"]);
        assert!(unserved_imports_in(b"not wasm").is_empty());
    }
}
