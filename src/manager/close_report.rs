//! The close report of one connection, TCP or UDP: the connection leaves the tracker, then the
//! close observer and the connection's own `on_close` see it — exactly once, on every path.
//!
//! The report is a guard owned by the connection's task: the task calls
//! [`CloseReport::finish`] with its result when it ends; if the task is dropped before (the
//! runtime shut down or was dropped, or the task was never run because the runtime was already
//! gone), `Drop` reports [`ConnectionError::ShutDown`]. A panic in the work of the connection (a
//! user's `Outbound`, `InboundHandshake` or `PacketSink`, or netswitch itself) is caught by
//! [`catch_panic`] and reported as [`ConnectionError::Panicked`].

use std::any::Any;
use std::future::{poll_fn, Future};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::Poll;

use super::CloseObserver;
use crate::relay::{ClosedConnection, ConnectionError};
use crate::tracker::{Entry, EntryGuard, TransportProtocol};

/// Reports a connection's close exactly once: from [`CloseReport::finish`], or from `Drop`.
pub(super) struct CloseReport<F: FnOnce(ClosedConnection)> {
    entry: Arc<Entry>,
    guard: Option<EntryGuard>,
    observer: Option<CloseObserver>,
    on_close: Option<F>,
    shut_down: Arc<AtomicBool>,
}

impl<F: FnOnce(ClosedConnection)> CloseReport<F> {
    /// A report for the connection `entry` (tracked while `guard` lives). `shut_down` tells a
    /// close requested by the manager's shutdown from one requested by `close`.
    pub(super) fn new(
        entry: Arc<Entry>,
        guard: EntryGuard,
        observer: Option<CloseObserver>,
        on_close: F,
        shut_down: Arc<AtomicBool>,
    ) -> CloseReport<F> {
        CloseReport { entry, guard: Some(guard), observer, on_close: Some(on_close), shut_down }
    }

    /// The connection's tracker entry.
    pub(super) fn entry(&self) -> &Arc<Entry> {
        &self.entry
    }

    /// True once the close was reported.
    pub(super) fn is_finished(&self) -> bool {
        self.on_close.is_none()
    }

    /// True once the manager was shut down.
    pub(super) fn is_shut_down(&self) -> bool {
        self.shut_down.load(Ordering::Acquire)
    }

    /// Removes the connection from the tracker, logs it, and calls the close observer and
    /// `on_close` with `result` (a close request during shutdown becomes
    /// [`ConnectionError::ShutDown`]). Only the first call (or the drop) reports.
    pub(super) fn finish(&mut self, result: Result<(), ConnectionError>) {
        let Some(on_close) = self.on_close.take() else { return };
        drop(self.guard.take());
        let error = match result {
            Err(ConnectionError::Closed) if self.shut_down.load(Ordering::Acquire) => {
                Some(ConnectionError::ShutDown)
            }
            other => other.err(),
        };
        let closed = closed_report(&self.entry, error);
        match self.entry.protocol {
            TransportProtocol::Tcp => log_tcp(&closed),
            TransportProtocol::Udp => log_udp(&self.entry, &closed),
        }
        if let Some(observer) = &self.observer {
            observer(&closed);
        }
        on_close(closed);
    }
}

impl<F: FnOnce(ClosedConnection)> Drop for CloseReport<F> {
    fn drop(&mut self) {
        self.finish(Err(ConnectionError::ShutDown));
    }
}

/// Runs `work`; a panic while polling it ends it with [`ConnectionError::Panicked`] instead of
/// unwinding into the runtime (the panic hook has printed the panic by then, as usual).
pub(super) async fn catch_panic<F>(mut work: Pin<&mut F>) -> Result<(), ConnectionError>
where
    F: Future<Output = Result<(), ConnectionError>> + ?Sized,
{
    poll_fn(|cx| poll_catching_panic(|| work.as_mut().poll(cx))).await
}

/// Calls `poll` (one poll of a connection's work); a panic in it becomes a ready
/// [`ConnectionError::Panicked`] instead of unwinding into the runtime.
pub(super) fn poll_catching_panic(
    poll: impl FnOnce() -> Poll<Result<(), ConnectionError>>,
) -> Poll<Result<(), ConnectionError>> {
    match catch_unwind(AssertUnwindSafe(poll)) {
        Ok(poll) => poll,
        Err(payload) => Poll::Ready(Err(ConnectionError::Panicked(panic_message(payload.as_ref())))),
    }
}

fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(message) = payload.downcast_ref::<&str>() {
        (*message).to_string()
    } else if let Some(message) = payload.downcast_ref::<String>() {
        message.clone()
    } else {
        "a panic without a message".to_string()
    }
}

/// The final report of a connection from its tracker entry.
fn closed_report(entry: &Entry, error: Option<ConnectionError>) -> ClosedConnection {
    ClosedConnection {
        id: entry.id,
        destination: entry.metadata.destination.clone(),
        egress: entry.egress().unwrap_or_default(),
        bytes_up: entry.bytes_up.load(Ordering::Relaxed),
        bytes_down: entry.bytes_down.load(Ordering::Relaxed),
        duration: entry.started.elapsed(),
        error,
    }
}

fn log_tcp(closed: &ClosedConnection) {
    let ms = closed.duration.as_millis() as u64;
    match &closed.error {
        None => tracing::debug!(
            id = closed.id, destination = %closed.destination, via = %closed.egress,
            up = closed.bytes_up, down = closed.bytes_down, ms, "connection finished"
        ),
        Some(ConnectionError::Closed | ConnectionError::ShutDown) => tracing::debug!(
            id = closed.id, destination = %closed.destination, via = %closed.egress,
            up = closed.bytes_up, down = closed.bytes_down, ms, "connection closed by request"
        ),
        Some(error @ ConnectionError::Panicked(_)) => tracing::error!(
            id = closed.id, destination = %closed.destination, via = %closed.egress,
            up = closed.bytes_up, down = closed.bytes_down, ms, %error, "connection ended by a panic"
        ),
        Some(error) => tracing::info!(
            id = closed.id, destination = %closed.destination, via = %closed.egress,
            up = closed.bytes_up, down = closed.bytes_down, ms, %error, "connection ended with an error"
        ),
    }
}

fn log_udp(entry: &Entry, closed: &ClosedConnection) {
    let packets = (entry.packets_up.load(Ordering::Relaxed), entry.packets_down.load(Ordering::Relaxed));
    let drops = entry.drops.load(Ordering::Relaxed);
    let ms = closed.duration.as_millis() as u64;
    match &closed.error {
        None | Some(ConnectionError::Closed | ConnectionError::ShutDown | ConnectionError::UdpIdle(_)) => {
            tracing::debug!(
                id = closed.id, destination = %closed.destination, via = %closed.egress,
                packets_up = packets.0, packets_down = packets.1, drops,
                up = closed.bytes_up, down = closed.bytes_down, ms,
                reason = closed.error.as_ref().map(tracing::field::display), "UDP session finished"
            )
        }
        Some(error @ ConnectionError::Panicked(_)) => tracing::error!(
            id = closed.id, destination = %closed.destination, via = %closed.egress,
            packets_up = packets.0, packets_down = packets.1, drops,
            up = closed.bytes_up, down = closed.bytes_down, ms, %error, "UDP session ended by a panic"
        ),
        Some(error) => tracing::info!(
            id = closed.id, destination = %closed.destination, via = %closed.egress,
            packets_up = packets.0, packets_down = packets.1, drops,
            up = closed.bytes_up, down = closed.bytes_down, ms, %error, "UDP session ended with an error"
        ),
    }
}
