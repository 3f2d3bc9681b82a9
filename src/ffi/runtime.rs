//! The one process-wide tokio runtime behind the façade, built lazily by the first manager.

use std::sync::OnceLock;

use tokio::runtime::{Builder, Runtime};

use super::error::NetswitchError;

/// Worker threads of the lightweight runtime (iOS Network Extension: 50 MiB for everything).
const LIGHTWEIGHT_WORKERS: usize = 2;
/// Stack size of the lightweight runtime's threads.
const LIGHTWEIGHT_STACK: usize = 256 * 1024;
/// Blocking threads (DNS resolution) of the lightweight runtime.
const LIGHTWEIGHT_BLOCKING: usize = 2;

static RUNTIME: OnceLock<Result<Runtime, String>> = OnceLock::new();

/// The process-wide multi-threaded runtime. The first call decides its size: `lightweight`
/// gives two workers with 256 KiB stacks, otherwise one worker per core. Never shut down (it
/// lives as long as the process, like the host's own thread pools).
pub(crate) fn runtime(lightweight: bool) -> Result<&'static Runtime, NetswitchError> {
    let built = RUNTIME.get_or_init(|| {
        let mut builder = Builder::new_multi_thread();
        builder.enable_all().thread_name("netswitch-worker");
        if lightweight {
            builder
                .worker_threads(LIGHTWEIGHT_WORKERS)
                .thread_stack_size(LIGHTWEIGHT_STACK)
                .max_blocking_threads(LIGHTWEIGHT_BLOCKING);
        }
        builder.build().map_err(|e| format!("cannot start the tokio runtime: {e}"))
    });
    built.as_ref().map_err(|reason| NetswitchError::Internal { reason: reason.clone() })
}
