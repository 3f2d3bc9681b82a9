//! Shared helpers for the integration tests: a manager with a front listener, deterministic
//! bulk data, and small socket utilities.
#![allow(dead_code)]

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use netswitch::{
    ClosedConnection, ConnectionError, ConnectionManager, DirectOutbound, Inbound, Metadata, Outbound,
    RelaySettings,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::timeout;

pub const WAIT: Duration = Duration::from_secs(10);

/// A manager plus a front listener: `connect()` gives a client socket whose accepted end has been
/// handed to the manager with `destination`.
pub struct Harness {
    pub manager: Arc<ConnectionManager>,
    front: TcpListener,
    closed_tx: mpsc::UnboundedSender<ClosedConnection>,
    closed_rx: mpsc::UnboundedReceiver<ClosedConnection>,
}

impl Harness {
    pub async fn new(settings: RelaySettings) -> Harness {
        let (closed_tx, closed_rx) = mpsc::unbounded_channel();
        Harness {
            manager: Arc::new(ConnectionManager::new(settings)),
            front: TcpListener::bind("127.0.0.1:0").await.unwrap(),
            closed_tx,
            closed_rx,
        }
    }

    /// Connects a client and hands its accepted end to the manager. Returns the client socket.
    pub async fn connect_with(&self, metadata: Metadata) -> (TcpStream, u64) {
        self.connect_via(metadata, Arc::new(DirectOutbound::default())).await
    }

    /// Like `connect_with`, dialing through `outbound`.
    pub async fn connect_via(&self, metadata: Metadata, outbound: Arc<dyn Outbound>) -> (TcpStream, u64) {
        let client = TcpStream::connect(self.front.local_addr().unwrap()).await.unwrap();
        let (accepted, _) = self.front.accept().await.unwrap();
        let tx = self.closed_tx.clone();
        let id = self.manager.new_connection(Inbound::plain(accepted), metadata, outbound, move |closed| {
            let _ = tx.send(closed);
        });
        (client, id)
    }

    pub async fn connect(&self, destination: SocketAddr) -> (TcpStream, u64) {
        self.connect_with(Metadata::new(destination.into())).await
    }

    /// The next on_close report (fails the test after 10 s).
    pub async fn next_closed(&mut self) -> ClosedConnection {
        timeout(WAIT, self.closed_rx.recv()).await.expect("on_close was not called in time").unwrap()
    }

    /// Asserts that no further on_close report arrives within a short while.
    pub async fn assert_no_more_closed(&mut self) {
        assert!(timeout(Duration::from_millis(200), self.closed_rx.recv()).await.is_err());
    }
}

/// A deterministic byte stream (xorshift) so both ends can check bulk data without storing it.
pub struct Pattern(pub u64);

impl Pattern {
    pub fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            let bytes = self.0.to_le_bytes();
            chunk.copy_from_slice(&bytes[..chunk.len()]);
        }
    }
}

pub async fn send_pattern(
    stream: &mut (impl AsyncWriteExt + Unpin),
    seed: u64,
    total: usize,
) -> io::Result<()> {
    let mut pattern = Pattern(seed);
    let mut buf = vec![0u8; 64 * 1024];
    let mut left = total;
    while left > 0 {
        let n = left.min(buf.len());
        pattern.fill(&mut buf[..n]);
        stream.write_all(&buf[..n]).await?;
        left -= n;
    }
    Ok(())
}

/// Reads to EOF and checks the bytes equal the pattern; returns how many bytes arrived.
pub async fn expect_pattern(stream: &mut (impl AsyncReadExt + Unpin), seed: u64) -> io::Result<usize> {
    let mut pattern = Pattern(seed);
    let mut buf = vec![0u8; 64 * 1024];
    let mut expected = vec![0u8; 64 * 1024];
    let mut total = 0;
    // The pattern is generated in 8-byte words, so compare against a regenerated stream.
    let mut pending: Vec<u8> = Vec::new();
    loop {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        pending.extend_from_slice(&buf[..n]);
        let whole = pending.len() / 8 * 8;
        if whole > 0 {
            let check = whole.min(expected.len());
            pattern.fill(&mut expected[..check]);
            assert_eq!(&pending[..check], &expected[..check], "bytes differ after {total} correct bytes");
            pending.drain(..check);
            total += check;
        }
    }
    let mut tail = [0u8; 8];
    pattern.fill(&mut tail);
    assert_eq!(&pending[..], &tail[..pending.len()], "trailing bytes differ");
    Ok(total + pending.len())
}

pub fn error_of(closed: &ClosedConnection) -> &ConnectionError {
    closed
        .error
        .as_ref()
        .unwrap_or_else(|| panic!("expected an error, connection {} ended cleanly", closed.id))
}

/// A port on 127.0.0.1 with no listener.
pub async fn closed_port() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap()
}

/// A UDP echo server on `ip` (answers every datagram to its sender); returns its address.
pub async fn udp_echo_server(ip: std::net::IpAddr) -> SocketAddr {
    let socket = tokio::net::UdpSocket::bind(SocketAddr::new(ip, 0)).await.unwrap();
    let address = socket.local_addr().unwrap();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 65_536];
        while let Ok((n, from)) = socket.recv_from(&mut buf).await {
            let _ = socket.send_to(&buf[..n], from).await;
        }
    });
    address
}

/// A DNS query for `name`, type A, as a resolver sends it.
pub fn dns_query(id: u16, name: &str) -> Vec<u8> {
    let mut q = id.to_be_bytes().to_vec();
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.split('.') {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    q
}

/// The client side of a UDP session in tests: each reply (payload, source) reaches the test
/// through the channel.
pub struct ChannelSink(pub mpsc::UnboundedSender<(Vec<u8>, netswitch::Destination)>);

impl netswitch::client::PacketSink for ChannelSink {
    fn send_to_client<'a>(
        &'a self,
        payload: &'a [u8],
        source: &'a netswitch::Destination,
    ) -> netswitch::dial::BoxFuture<'a, io::Result<()>> {
        let _ = self.0.send((payload.to_vec(), source.clone()));
        Box::pin(async { Ok(()) })
    }
}
