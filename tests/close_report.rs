//! The close report cannot be skipped: `on_close` and the close observer run exactly once for
//! every TCP connection and UDP session, also when the runtime running them is dropped while they
//! are live (dialing, relaying, waiting for a first datagram) or was dropped before they came, and
//! when the outbound (or the ingress's handshake) panics.

mod common;

use std::collections::HashMap;
use std::io::Read;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{udp_echo_server, WAIT};
use netswitch::client::{ClientStream, Datagram, InboundHandshake, PacketInbound, PacketSink, UdpTimeouts};
use netswitch::dial::{BoxFuture, DialError, DialedStream, DialedUdp};
use netswitch::tracker::ConnectionState;
use netswitch::{
    ClosedConnection, ConnectionId, ConnectionManager, Destination, DirectOutbound, Inbound, Metadata,
    Outbound, RelaySettings,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

/// Every report a manager made: per connection id, the errors `on_close` got (as text, `None` for
/// a clean end), and how many times the close observer ran.
#[derive(Default)]
struct Reports {
    on_close: Mutex<HashMap<ConnectionId, Vec<Option<String>>>>,
    observed: AtomicUsize,
}

impl Reports {
    fn manager(self: &Arc<Self>, runtime: tokio::runtime::Handle) -> ConnectionManager {
        let reports = self.clone();
        ConnectionManager::with_runtime(RelaySettings::default(), runtime).with_close_observer(Arc::new(
            move |_: &ClosedConnection| {
                reports.observed.fetch_add(1, Ordering::SeqCst);
            },
        ))
    }

    /// An `on_close` that records its report.
    fn on_close(self: &Arc<Self>) -> impl FnOnce(ClosedConnection) + Send + 'static {
        let reports = self.clone();
        move |closed: ClosedConnection| {
            let error = closed.error.as_ref().map(|e| format!("{e:?}"));
            reports.on_close.lock().unwrap().entry(closed.id).or_default().push(error);
        }
    }

    /// Asserts that each of `ids` was reported exactly once, with an error whose debug text starts
    /// with `expected`, and that the observer saw exactly these reports.
    fn assert_once_each(&self, ids: &[ConnectionId], expected: &str) {
        let on_close = self.on_close.lock().unwrap();
        for id in ids {
            let reports = on_close.get(id).map(Vec::as_slice).unwrap_or_default();
            assert_eq!(
                reports.len(),
                1,
                "connection {id}: on_close ran {} times: {reports:?}",
                reports.len()
            );
            let error = reports[0].as_deref().unwrap_or("a clean end");
            assert!(error.starts_with(expected), "connection {id}: expected {expected}, got {error}");
        }
        assert_eq!(on_close.len(), ids.len(), "reports for unknown connections: {on_close:?}");
        assert_eq!(self.observed.load(Ordering::SeqCst), ids.len(), "close observer calls");
    }

    /// Waits until `count` connections were reported (then a little longer, for any second report).
    async fn wait_for(&self, count: usize) {
        tokio::time::timeout(WAIT, async {
            while self.on_close.lock().unwrap().len() < count {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .expect("on_close in time");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// An outbound that never finishes dialing.
struct NeverConnects;

impl Outbound for NeverConnects {
    fn dial_tcp<'a>(&'a self, _: &'a Metadata) -> BoxFuture<'a, Result<DialedStream, DialError>> {
        Box::pin(std::future::pending())
    }
}

/// An outbound that panics: in the call itself, or inside its future after a first await.
struct Panics {
    in_future: bool,
}

impl Outbound for Panics {
    fn dial_tcp<'a>(&'a self, _: &'a Metadata) -> BoxFuture<'a, Result<DialedStream, DialError>> {
        assert!(self.in_future, "outbound dial_tcp panicked on purpose");
        Box::pin(async {
            tokio::task::yield_now().await;
            panic!("outbound dial_tcp future panicked on purpose")
        })
    }

    fn open_udp<'a>(&'a self, _: &'a Metadata) -> BoxFuture<'a, Result<DialedUdp, DialError>> {
        assert!(self.in_future, "outbound open_udp panicked on purpose");
        Box::pin(async {
            tokio::task::yield_now().await;
            panic!("outbound open_udp future panicked on purpose")
        })
    }
}

/// An ingress handshake whose success reply panics.
struct PanickingReply;

impl InboundHandshake for PanickingReply {
    fn succeed<'a>(&'a mut self, _: &'a ClientStream, _: SocketAddr) -> BoxFuture<'a, std::io::Result<()>> {
        panic!("inbound handshake panicked on purpose")
    }

    fn fail<'a>(&'a mut self, _: &'a ClientStream, _: &'a DialError) -> BoxFuture<'a, std::io::Result<()>> {
        Box::pin(async { Ok(()) })
    }
}

/// A loopback TCP server that keeps every connection open and silent.
async fn silent_server() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            held.push(stream);
        }
    });
    address
}

/// A client socket (blocking, std) and its accepted end, registered with the current runtime.
fn client_pair(front: &std::net::TcpListener) -> (std::net::TcpStream, tokio::net::TcpStream) {
    let client = std::net::TcpStream::connect(front.local_addr().unwrap()).unwrap();
    let (accepted, _) = front.accept().unwrap();
    accepted.set_nonblocking(true).unwrap();
    (client, tokio::net::TcpStream::from_std(accepted).unwrap())
}

/// Asserts that the relay let go of the client: a read ends (end of file or reset) instead of
/// waiting.
fn assert_released(client: &mut std::net::TcpStream) {
    client.set_read_timeout(Some(WAIT)).unwrap();
    let mut byte = [0u8; 1];
    match client.read(&mut byte) {
        Ok(0) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        other => panic!("the client socket is still held by the relay: {other:?}"),
    }
}

/// Replies of a UDP session reach the test through a channel.
struct ChannelSink(mpsc::UnboundedSender<Vec<u8>>);

impl PacketSink for ChannelSink {
    fn send_to_client<'a>(
        &'a self,
        payload: &'a [u8],
        _: &'a Destination,
    ) -> BoxFuture<'a, std::io::Result<()>> {
        let _ = self.0.send(payload.to_vec());
        Box::pin(async { Ok(()) })
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

#[test]
fn tcp_connections_are_reported_once_when_the_runtime_is_dropped() {
    let runtime = runtime();
    let reports = Arc::new(Reports::default());
    let manager = reports.manager(runtime.handle().clone());
    let front = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut clients = Vec::new();
    let mut ids = Vec::new();
    runtime.block_on(async {
        let server = silent_server().await;
        for _ in 0..3 {
            let (client, accepted) = client_pair(&front);
            let outbound = Arc::new(DirectOutbound::default());
            ids.push(manager.new_connection(
                Inbound::plain(accepted),
                Metadata::new(server.into()),
                outbound,
                reports.on_close(),
            ));
            clients.push(client);
        }
        let (client, accepted) = client_pair(&front);
        let dialing = Metadata::new("127.0.0.1:9".parse::<SocketAddr>().unwrap().into());
        ids.push(manager.new_connection(
            Inbound::plain(accepted),
            dialing,
            Arc::new(NeverConnects),
            reports.on_close(),
        ));
        clients.push(client);
        tokio::time::timeout(WAIT, async {
            while manager.list().iter().filter(|c| c.state == ConnectionState::Relaying).count() < 3 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .expect("three connections relaying");
        assert_eq!(manager.len(), 4, "three relaying, one dialing");
    });
    assert!(reports.on_close.lock().unwrap().is_empty(), "nothing ended before the runtime was dropped");
    drop(runtime);
    reports.assert_once_each(&ids, "ShutDown");
    assert!(manager.is_empty(), "the tracker is empty");
    for client in &mut clients {
        assert_released(client);
    }
    // The runtime is gone: a connection handed over now is reported at once, and only once.
    let (client, accepted) = {
        let helper = self::runtime();
        let _entered = helper.enter();
        client_pair(&front)
    };
    ids.push(manager.new_connection(
        Inbound::plain(accepted),
        Metadata::new("127.0.0.1:9".parse::<SocketAddr>().unwrap().into()),
        Arc::new(DirectOutbound::default()),
        reports.on_close(),
    ));
    reports.assert_once_each(&ids, "ShutDown");
    drop(client);
}

#[test]
fn udp_sessions_are_reported_once_when_the_runtime_is_dropped() {
    let runtime = runtime();
    let reports = Arc::new(Reports::default());
    let manager = reports.manager(runtime.handle().clone());
    let mut uplinks = Vec::new();
    let mut ids = Vec::new();
    runtime.block_on(async {
        let echo = udp_echo_server(Ipv4Addr::LOCALHOST.into()).await;
        let destination = Destination::from(echo);
        // One session relaying (its datagram echoed), one still waiting for its first datagram.
        for relaying in [true, false] {
            let (tx, mut replies) = mpsc::unbounded_channel();
            let (uplink, inbound) =
                PacketInbound::channel(Arc::new(ChannelSink(tx)), UdpTimeouts::default(), 8);
            let outbound = Arc::new(DirectOutbound::default());
            ids.push(manager.new_packet_connection(
                inbound,
                Metadata::new(destination.clone()),
                outbound,
                reports.on_close(),
            ));
            if relaying {
                let datagram = Datagram { destination: destination.clone(), payload: b"ping".to_vec() };
                uplink.send(datagram).await.unwrap();
                let echoed = tokio::time::timeout(WAIT, replies.recv()).await.expect("echo in time");
                assert_eq!(echoed.as_deref(), Some(&b"ping"[..]));
            }
            uplinks.push(uplink);
        }
        assert_eq!(manager.len(), 2);
    });
    assert!(reports.on_close.lock().unwrap().is_empty(), "nothing ended before the runtime was dropped");
    drop(runtime);
    reports.assert_once_each(&ids, "ShutDown");
    assert!(manager.is_empty(), "the tracker is empty");
    // The runtime is gone: a session handed over now is reported at once, and only once.
    let (_uplink, inbound) =
        PacketInbound::channel(Arc::new(ChannelSink(mpsc::unbounded_channel().0)), UdpTimeouts::default(), 8);
    let destination = Destination::from("127.0.0.1:9".parse::<SocketAddr>().unwrap());
    ids.push(manager.new_packet_connection(
        inbound,
        Metadata::new(destination),
        Arc::new(DirectOutbound::default()),
        reports.on_close(),
    ));
    reports.assert_once_each(&ids, "ShutDown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_outbound_or_handshake_ends_a_tcp_connection_once() {
    let reports = Arc::new(Reports::default());
    let manager = reports.manager(tokio::runtime::Handle::current());
    let front = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = silent_server().await;
    let mut ids = Vec::new();
    let mut clients = Vec::new();
    for case in 0..3 {
        let client = tokio::net::TcpStream::connect(front.local_addr().unwrap()).await.unwrap();
        let (accepted, _) = front.accept().await.unwrap();
        let (inbound, outbound): (Inbound, Arc<dyn Outbound>) = match case {
            0 => (Inbound::plain(accepted), Arc::new(Panics { in_future: false })),
            1 => (Inbound::plain(accepted), Arc::new(Panics { in_future: true })),
            _ => {
                let mut inbound = Inbound::plain(accepted);
                inbound.handshake = Some(Box::new(PanickingReply));
                (inbound, Arc::new(DirectOutbound::default()))
            }
        };
        ids.push(manager.new_connection(inbound, Metadata::new(server.into()), outbound, reports.on_close()));
        clients.push(client);
    }
    reports.wait_for(ids.len()).await;
    reports.assert_once_each(&ids, "Panicked(");
    let on_close = reports.on_close.lock().unwrap().clone();
    for (id, expected) in
        ids.iter().zip(["dial_tcp panicked", "dial_tcp future panicked", "handshake panicked"])
    {
        let error = on_close[id][0].clone().unwrap_or_default();
        assert!(error.contains(expected), "connection {id}: the panic's message is reported: {error}");
    }
    assert!(manager.is_empty(), "the tracker is empty");
    for client in &mut clients {
        let mut byte = [0u8; 1];
        let read = tokio::time::timeout(WAIT, client.read(&mut byte)).await.expect("the client is let go");
        assert!(matches!(read, Ok(0) | Err(_)), "no byte expected: {read:?}");
    }
    // The runtime survived the panics: the next connection relays.
    let echo = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let echo_address = echo.local_addr().unwrap();
    let mut client = tokio::net::TcpStream::connect(front.local_addr().unwrap()).await.unwrap();
    let (accepted, _) = front.accept().await.unwrap();
    let id = manager.new_connection(
        Inbound::plain(accepted),
        Metadata::new(echo_address.into()),
        Arc::new(DirectOutbound::default()),
        reports.on_close(),
    );
    let (mut server_end, _) = echo.accept().await.unwrap();
    client.write_all(b"after").await.unwrap();
    let mut got = [0u8; 5];
    server_end.read_exact(&mut got).await.unwrap();
    assert_eq!(&got, b"after");
    drop((client, server_end));
    ids.push(id);
    reports.wait_for(ids.len()).await;
    assert_eq!(reports.on_close.lock().unwrap()[&id], vec![None], "a clean end");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_outbound_ends_a_udp_session_once() {
    let reports = Arc::new(Reports::default());
    let manager = reports.manager(tokio::runtime::Handle::current());
    let destination = Destination::from("127.0.0.1:9".parse::<SocketAddr>().unwrap());
    let mut ids = Vec::new();
    let mut uplinks = Vec::new();
    for in_future in [false, true] {
        let (uplink, inbound) = PacketInbound::channel(
            Arc::new(ChannelSink(mpsc::unbounded_channel().0)),
            UdpTimeouts::default(),
            8,
        );
        let outbound = Arc::new(Panics { in_future });
        ids.push(manager.new_packet_connection(
            inbound,
            Metadata::new(destination.clone()),
            outbound,
            reports.on_close(),
        ));
        // The socket is opened for the first datagram.
        uplink.send(Datagram { destination: destination.clone(), payload: b"x".to_vec() }).await.unwrap();
        uplinks.push(uplink);
    }
    reports.wait_for(ids.len()).await;
    reports.assert_once_each(&ids, "Panicked(");
    let on_close = reports.on_close.lock().unwrap().clone();
    for (id, expected) in ids.iter().zip(["open_udp panicked", "open_udp future panicked"]) {
        let error = on_close[id][0].clone().unwrap_or_default();
        assert!(error.contains(expected), "session {id}: the panic's message is reported: {error}");
    }
    assert!(manager.is_empty(), "the tracker is empty");
}
