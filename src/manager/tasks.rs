//! The task of one connection, TCP or UDP: run it with a panic turned into
//! [`ConnectionError::Panicked`], then report its close through its [`CloseReport`] guard (which
//! also reports if the task is dropped before it ends).

use std::future::Future;
use std::pin::{pin, Pin};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use super::close_report::{catch_panic, poll_catching_panic, CloseReport};
use crate::client::{Inbound, PacketInbound};
use crate::dial::Outbound;
use crate::relay::{tcp, udp, ClosedConnection, ConnectionError};
use crate::tls_fragment::FragmentSettings;
use crate::tracker::Entry;

/// The task of TCP connection `inbound` (reset at once when the manager is already shut down):
/// runs it and reports its close.
///
/// Written by hand rather than as an `async fn`: every idle connection holds this future in its
/// task, and an `async fn` would keep its arguments (and the setup's locals) for the whole life of
/// the connection. This holds only the close report and the [`tcp::Connection`].
pub(super) fn tcp<F: FnOnce(ClosedConnection)>(
    report: CloseReport<F>,
    inbound: Inbound,
    outbound: Arc<dyn Outbound>,
    half_close_timeout: Option<Duration>,
    fragment_defaults: FragmentSettings,
) -> TcpTask<F> {
    TcpTask {
        report,
        connection: tcp::Connection::new(inbound, outbound, half_close_timeout, fragment_defaults),
    }
}

/// The future of [`tcp`].
pub(super) struct TcpTask<F: FnOnce(ClosedConnection)> {
    // Declared first, dropped first: when the runtime drops the task, the sockets close before
    // the report's `Drop` reports the close (as after any other end).
    connection: tcp::Connection,
    report: CloseReport<F>,
}

// Nothing in the task is pinned in place: `on_close` is only ever moved out and called.
impl<F: FnOnce(ClosedConnection)> Unpin for TcpTask<F> {}

impl<F: FnOnce(ClosedConnection)> Future for TcpTask<F> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let TcpTask { connection, report } = self.get_mut();
        // Polled again after it was ready (the runtime never does; a hand-written caller might):
        // nothing left to run.
        if report.is_finished() {
            return Poll::Ready(());
        }
        let result = if !connection.is_started() && report.is_shut_down() {
            connection.refuse();
            Err(ConnectionError::ShutDown)
        } else {
            match poll_catching_panic(|| connection.poll(cx, report.entry())) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(result) => result,
            }
        };
        // After a panic the connection's state is dropped here, before the report (its sockets
        // close first, as after any other end).
        connection.abandon();
        report.finish(result);
        Poll::Ready(())
    }
}

/// Runs UDP session `entry` (ended at once when the manager is already shut down) and reports its
/// close.
pub(super) async fn udp<F: FnOnce(ClosedConnection)>(
    mut report: CloseReport<F>,
    entry: Arc<Entry>,
    inbound: PacketInbound,
    outbound: Arc<dyn Outbound>,
) {
    let result = if report.is_shut_down() {
        Err(ConnectionError::ShutDown)
    } else {
        catch_panic(pin!(udp::run(&entry, inbound, outbound))).await
    };
    report.finish(result);
}

#[cfg(test)]
mod relay_panic_tests;

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::sync::atomic::AtomicBool;
    use std::sync::Arc;

    use super::super::close_report::CloseReport;
    use crate::relay::ClosedConnection;
    use crate::tracker::{Entry, EntryGuard, Tracker};
    use crate::{ClientStream, DirectOutbound, Inbound, Metadata};

    /// What tokio adds around a task's future in its task cell (header, scheduler, id, stage,
    /// trailer; tokio 1.54), which it then rounds up to a multiple of 128 bytes.
    const TASK_CELL_OVERHEAD: usize = 104;

    thread_local! {
        /// Panics on this thread so far, counted by the hook [`count_panics`] installs.
        static PANICS: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
    }

    /// A tracker with one connection's entry, and a client socket connected to a listener (kept
    /// open by the caller) for that connection.
    async fn tracked_client(
    ) -> (Arc<Tracker>, Arc<Entry>, EntryGuard, std::net::TcpListener, tokio::net::TcpStream) {
        let tracker = Arc::new(Tracker::default());
        let (entry, guard) = tracker.insert(Metadata::new("127.0.0.1:1".parse().unwrap()));
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = tokio::net::TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        (tracker, entry, guard, listener, client)
    }

    /// Panics on the calling thread so far, caught or not (the panic hook sees every one).
    fn count_panics() -> usize {
        static HOOK: std::sync::Once = std::sync::Once::new();
        HOOK.call_once(|| {
            let previous = std::panic::take_hook();
            std::panic::set_hook(Box::new(move |info| {
                PANICS.with(|count| count.set(count.get() + 1));
                previous(info);
            }));
        });
        PANICS.with(|count| count.get())
    }

    /// A task polled again after it was ready (as a hand-written caller may) stays ready, without
    /// a panic (caught or not) and without a second report.
    #[tokio::test]
    async fn a_task_polled_after_it_ended_stays_ready_without_a_panic() {
        use std::future::Future;
        use std::sync::atomic::{AtomicUsize, Ordering};
        use std::task::{Context, Poll, Waker};

        let (tracker, entry, guard, _listener, client) = tracked_client().await;
        let reports = Arc::new(AtomicUsize::new(0));
        let counted = reports.clone();
        let on_close = move |_: ClosedConnection| {
            counted.fetch_add(1, Ordering::SeqCst);
        };
        // Shut down already: the first poll ends the connection.
        let report = CloseReport::new(entry, guard, None, on_close, Arc::new(AtomicBool::new(true)));
        let outbound = Arc::new(DirectOutbound::default());
        let mut task = super::tcp(report, Inbound::plain(client), outbound, None, Default::default());
        let mut cx = Context::from_waker(Waker::noop());
        let panics = count_panics();
        assert_eq!(std::pin::Pin::new(&mut task).poll(&mut cx), Poll::Ready(()));
        assert_eq!(std::pin::Pin::new(&mut task).poll(&mut cx), Poll::Ready(()));
        assert_eq!(count_panics(), panics, "polling the ended task panicked");
        assert_eq!(reports.load(Ordering::SeqCst), 1, "on_close calls");
        assert!(tracker.is_empty());
    }

    /// Every idle connection holds its task: the close report and the steady state of the relay,
    /// nothing of the setup (dial, replies, handshakes: boxed, freed once established) and not the
    /// task's arguments. In a release build the future is 272 bytes, a 384-byte task cell (as an
    /// `async fn` it was 1,856 bytes, a 2,048-byte cell). The two sockets are left out of the
    /// bound: a debug build of mio adds 8 bytes to each. The closure is like the SOCKS server's
    /// (it captures the client's address).
    #[tokio::test]
    async fn the_task_of_an_idle_connection_stays_small() {
        let (_tracker, entry, guard, _listener, client) = tracked_client().await;
        let peer: SocketAddr = "127.0.0.1:2".parse().unwrap();
        let on_close = move |closed: ClosedConnection| tracing::debug!(id = closed.id, %peer, "closed");
        let report = CloseReport::new(entry, guard, None, on_close, Arc::new(AtomicBool::new(false)));
        let outbound = Arc::new(DirectOutbound::default());
        let task = super::tcp(report, Inbound::plain(client), outbound, None, Default::default());
        let size = std::mem::size_of_val(&task);
        let sockets = std::mem::size_of::<ClientStream>() + std::mem::size_of::<tokio::net::TcpStream>();
        let cell = (size + TASK_CELL_OVERHEAD).next_multiple_of(128);
        println!("task future: {size} bytes ({sockets} of them the two sockets); task cell: {cell} bytes");
        assert!(size - sockets <= 200, "the task of a connection grew to {size} bytes ({sockets} sockets)");
    }
}
