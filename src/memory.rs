//! Gives freed heap memory back to the operating system once a burst of connections has ended.
//!
//! glibc's malloc keeps what is freed in the middle of its heaps (one arena per worker thread)
//! instead of returning it: after 10,000 connections relayed 1,000 at a time, the arenas held
//! ~9 MB of which 0.4 MB was in use, and the process's RSS stayed ~9 MB above where it started
//! (measured by `tests/memory.rs`). Fewer arenas (`M_ARENA_MAX`) lowered the peak but returned
//! nothing; `malloc_trim(0)` returns the free pages of every arena in about 2 ms.
//!
//! Policy: the number of live connections of the process (every tracker of every manager, TCP
//! and UDP) is followed. When it has fallen to half of its peak or less, and by at least
//! [`BURST`] connections, a release is scheduled [`QUIET`] later on the runtime's blocking pool
//! (never on a worker); the peak then starts again from the live count. At most one release is
//! pending at a time, so steady traffic costs nothing and the end of a burst one or a few
//! releases.
//!
//! What a release does: glibc (Linux): `malloc_trim(0)`. Apple: `malloc_zone_pressure_relief`
//! on every zone (what the system itself does under memory pressure; not measured here). Other
//! platforms: nothing (Android's scudo and jemalloc, and musl, give freed memory back on their
//! own).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

/// How many connections the live count must have fallen by before a release is worth it.
pub const BURST: usize = 128;
/// How long after the fall the release runs (the rest of the burst usually ends meanwhile).
pub const QUIET: Duration = Duration::from_secs(1);

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);
static PENDING: AtomicBool = AtomicBool::new(false);

/// Counts a connection that starts (called by the tracker).
pub(crate) fn connection_opened() {
    let live = LIVE.fetch_add(1, Ordering::AcqRel) + 1;
    PEAK.fetch_max(live, Ordering::AcqRel);
}

/// Counts a connection that ended (called by the tracker) and schedules a release when a burst
/// is over (see the module docs).
pub(crate) fn connection_closed() {
    let live = LIVE.fetch_sub(1, Ordering::AcqRel).saturating_sub(1);
    let peak = PEAK.load(Ordering::Acquire);
    let burst_over = peak.saturating_sub(live) >= BURST && live <= peak / 2;
    if burst_over && !PENDING.swap(true, Ordering::AcqRel) {
        schedule();
    }
}

/// Clears [`PENDING`] when the scheduled release finishes or is dropped with its runtime.
struct Pending;

impl Drop for Pending {
    fn drop(&mut self) {
        PENDING.store(false, Ordering::Release);
    }
}

fn schedule() {
    let pending = Pending;
    let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
    runtime.spawn(async move {
        tokio::time::sleep(QUIET).await;
        PEAK.store(LIVE.load(Ordering::Acquire), Ordering::Release);
        let started = std::time::Instant::now();
        if tokio::task::spawn_blocking(release).await.is_ok() {
            tracing::debug!(
                ms = started.elapsed().as_millis() as u64,
                "freed heap memory given back after a burst"
            );
        }
        drop(pending);
    });
}

/// Gives the allocator's free pages back to the operating system. Takes a few milliseconds:
/// call it off the runtime's workers.
fn release() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks glibc's own arenas under their locks; 0 = keep no padding.
    unsafe {
        libc::malloc_trim(0);
    }
    #[cfg(target_vendor = "apple")]
    {
        extern "C" {
            /// libmalloc (`<malloc/malloc.h>`, macOS 10.7 / iOS 4.3): frees what it can of the
            /// free memory of `zone`, or of every zone when `zone` is null; `goal` 0 = all.
            fn malloc_zone_pressure_relief(zone: *mut std::ffi::c_void, goal: usize) -> usize;
        }
        // SAFETY: a null zone means "every zone"; libmalloc takes its own locks.
        unsafe {
            malloc_zone_pressure_relief(std::ptr::null_mut(), 0);
        }
    }
}
