//! The task of one connection, TCP or UDP: run it with a panic turned into
//! [`ConnectionError::Panicked`], then report its close through its [`CloseReport`] guard (which
//! also reports if the task is dropped before it ends).

use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use super::close_report::{catch_panic, CloseReport};
use crate::client::{Inbound, PacketInbound};
use crate::dial::Outbound;
use crate::relay::{tcp, udp, ClosedConnection, ConnectionError};
use crate::socket::stream::StreamSocket;
use crate::tls_fragment::FragmentSettings;
use crate::tracker::Entry;

/// Runs TCP connection `entry` (reset at once when the manager is already shut down) and reports
/// its close.
pub(super) async fn tcp<F: FnOnce(ClosedConnection)>(
    mut report: CloseReport<F>,
    entry: Arc<Entry>,
    inbound: Inbound,
    outbound: Arc<dyn Outbound>,
    half_close_timeout: Option<Duration>,
    fragment_defaults: FragmentSettings,
) {
    let result = if report.is_shut_down() {
        inbound.stream.reset();
        Err(ConnectionError::ShutDown)
    } else {
        // Pinned in place: moving the relay's future into `catch_panic` would store it twice.
        catch_panic(pin!(tcp::run(&entry, inbound, outbound, half_close_timeout, fragment_defaults))).await
    };
    report.finish(result);
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
mod tests {
    use std::sync::atomic::AtomicBool;
    use std::sync::Arc;

    use super::super::close_report::CloseReport;
    use crate::tracker::Tracker;
    use crate::{DirectOutbound, Inbound, Metadata};

    /// The task around a connection adds little to the relay's own future (which
    /// `relay::tcp::tests::idle_connection_state_stays_small` bounds): every idle connection
    /// holds one. (Moving the relay's future into `catch_panic` instead of pinning it in place
    /// stored it twice: +1,416 bytes.) What it adds is the close report and the arguments.
    #[tokio::test]
    async fn the_task_adds_little_to_the_connection_future() {
        let tracker = Arc::new(Tracker::default());
        let (entry, guard) = tracker.insert(Metadata::new("127.0.0.1:1".parse().unwrap()));
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let connect =
            || async { tokio::net::TcpStream::connect(listener.local_addr().unwrap()).await.unwrap() };
        let outbound = Arc::new(DirectOutbound::default());
        let run = crate::relay::tcp::run(
            &entry,
            Inbound::plain(connect().await),
            outbound.clone(),
            None,
            Default::default(),
        );
        let run_size = std::mem::size_of_val(&run);
        drop(run);
        let report = CloseReport::new(entry.clone(), guard, None, |_| {}, Arc::new(AtomicBool::new(false)));
        let task =
            super::tcp(report, entry, Inbound::plain(connect().await), outbound, None, Default::default());
        let task_size = std::mem::size_of_val(&task);
        println!("connection future: {run_size} bytes; its task: {task_size} bytes");
        assert!(
            task_size <= run_size + 512,
            "the task adds {} bytes to the connection future",
            task_size - run_size
        );
    }
}
