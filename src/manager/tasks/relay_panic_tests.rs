//! A panic while a connection relays (in netswitch's own code or in a userspace stack's socket)
//! ends it with `Panicked` and resets the remote, as after any failure not reported to the client:
//! a plain close would look like a clean end of the upload to the server.

use std::io;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::time::timeout;

use crate::relay::{ClosedConnection, ConnectionError};
use crate::socket::pipe::{pipe, PipeEnd};
use crate::socket::stream::StreamSocket;
use crate::socket::ClientStream;
use crate::{ConnectionManager, DirectOutbound, Inbound, Metadata, RelaySettings};

const WAIT: Duration = Duration::from_secs(10);

/// A pipe end whose reads panic once they bring the bytes `panic`.
#[derive(Debug)]
struct PanicsOnRead(PipeEnd);

impl StreamSocket for PanicsOnRead {
    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.0.poll_read_ready(cx)
    }

    fn poll_write_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.0.poll_write_ready(cx)
    }

    fn try_read(&self, buf: &mut [u8]) -> io::Result<usize> {
        let read = self.0.try_read(buf)?;
        assert!(!buf[..read].starts_with(b"panic"), "a client stream panicked on purpose");
        Ok(read)
    }

    fn try_write(&self, buf: &[u8]) -> io::Result<usize> {
        self.0.try_write(buf)
    }

    fn shutdown_write(&self) -> io::Result<()> {
        self.0.shutdown_write()
    }

    fn reset(&self) {
        self.0.reset()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_while_relaying_resets_the_remote() {
    let server = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let manager = ConnectionManager::new(RelaySettings::default());
    let (mut app, client) = pipe(4096);
    let (closed_tx, mut closed_rx) = tokio::sync::mpsc::unbounded_channel::<ClosedConnection>();
    let inbound = Inbound::plain(ClientStream::userspace(PanicsOnRead(client)));
    let destination = Metadata::new(server.local_addr().unwrap().into());
    manager.new_connection(inbound, destination, std::sync::Arc::new(DirectOutbound::default()), move |c| {
        let _ = closed_tx.send(c);
    });
    let (mut s, _) = timeout(WAIT, server.accept()).await.unwrap().unwrap();
    app.write_all(b"hello").await.unwrap();
    let mut buf = [0u8; 5];
    timeout(WAIT, s.read_exact(&mut buf)).await.unwrap().unwrap(); // relaying now
    app.write_all(b"panic").await.unwrap();
    let closed = timeout(WAIT, closed_rx.recv()).await.unwrap().unwrap();
    assert!(matches!(closed.error, Some(ConnectionError::Panicked(_))), "{:?}", closed.error);
    let read = timeout(WAIT, s.read(&mut buf)).await.unwrap();
    assert_eq!(read.map_err(|e| e.kind()), Err(io::ErrorKind::ConnectionReset), "the remote sees a reset");
}
