//! The relay over streams that are not kernel sockets (the in-memory pipe of
//! `crate::socket::pipe`): half-close both ways, bytes checked, backpressure through small
//! buffers, resets, `WriteZero`; and, on Linux, a bulk direction giving its splice pipe back when
//! it goes quiet.

use std::future::{poll_fn, Ready};
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::time::timeout;

use super::copy::{Direction, Failed};
use super::tcp::copy_both_ways;
use super::{ConnectionError, Side};
use crate::socket::pipe::{pipe, PipeEnd};
use crate::socket::stream::StreamSocket;
use crate::tracker::{Entry, EntryGuard, Tracker};
use crate::{DirectOutbound, Inbound, Metadata};

const WAIT: Duration = Duration::from_secs(10);
/// Bytes each pipe direction buffers: small, so that every write is partial at some point.
const PIPE_CAPACITY: usize = 4096;
/// Uploaded bytes: more than `pool::GROW_AFTER`, so the large buffers are used too.
const UP: usize = 700_000;
/// Downloaded bytes.
const DOWN: usize = 900_001;

type NoFirstRead = Option<Pin<Box<Ready<Result<(), ConnectionError>>>>>;

fn entry(destination: &str) -> (Arc<Entry>, EntryGuard) {
    Arc::new(Tracker::default()).insert(Metadata::new(destination.parse().unwrap()))
}

/// Deterministic bytes (xorshift), different per seed.
fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

/// `writer` sends `bytes` and half-closes; returns what `reader` got until end of file. Run one
/// after the other on the two ends of a relayed connection, the order is the half-close order.
async fn send_then_close<W, R>(writer: &mut W, reader: &mut R, bytes: &[u8]) -> Vec<u8>
where
    W: AsyncWriteExt + Unpin,
    R: AsyncReadExt + Unpin,
{
    let send = async {
        writer.write_all(bytes).await.unwrap();
        writer.shutdown().await.unwrap();
    };
    let mut got = Vec::new();
    let receive = reader.read_to_end(&mut got);
    let ((), read) = tokio::join!(send, receive);
    read.unwrap();
    got
}

/// The copy engine between two in-memory pipes, both half-close orders: every byte arrives, in
/// order, each end sees end of file only after the other's bytes, the counters are exact.
#[tokio::test]
async fn copies_between_pipes_with_half_close_both_ways() {
    for client_first in [true, false] {
        let (entry, _guard) = entry("127.0.0.1:1");
        let (mut app, client) = pipe(PIPE_CAPACITY);
        let (remote, mut server) = pipe(PIPE_CAPACITY);
        let (up, down) = (pattern(1, UP), pattern(2, DOWN));
        let relay = copy_both_ways(&entry, &client, &remote, Some(WAIT), NoFirstRead::None);
        let peers = async {
            if client_first {
                let at_server = send_then_close(&mut app, &mut server, &up).await;
                let at_app = send_then_close(&mut server, &mut app, &down).await;
                (at_server, at_app)
            } else {
                let at_app = send_then_close(&mut server, &mut app, &down).await;
                let at_server = send_then_close(&mut app, &mut server, &up).await;
                (at_server, at_app)
            }
        };
        let (result, (at_server, at_app)) =
            timeout(WAIT, async { tokio::join!(relay, peers) }).await.expect("relay finished");
        assert!(result.is_ok(), "client_first={client_first}: {result:?}");
        assert!(at_server == up, "client_first={client_first}: upload differs ({} bytes)", at_server.len());
        assert!(at_app == down, "client_first={client_first}: download differs ({} bytes)", at_app.len());
        let counted = (entry.bytes_up.load(Ordering::Relaxed), entry.bytes_down.load(Ordering::Relaxed));
        assert_eq!(counted, (UP as u64, DOWN as u64));
    }
}

/// A whole connection (`tcp::run`) whose client is an in-memory pipe and whose remote is a
/// loopback TCP server, both half-close orders: the bytes and the counters are exact and the
/// connection ends cleanly.
#[tokio::test]
async fn runs_a_connection_whose_client_is_a_pipe() {
    for client_first in [true, false] {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (entry, _guard) = entry(&listener.local_addr().unwrap().to_string());
        let (mut app, client) = pipe(PIPE_CAPACITY);
        let outbound = Arc::new(DirectOutbound::default());
        let run = super::tcp::run(&entry, Inbound::plain(client), outbound, Some(WAIT), Default::default());
        let (up, down) = (pattern(3, UP), pattern(4, DOWN));
        let peers = async {
            let (mut server, _) = listener.accept().await.unwrap();
            if client_first {
                let at_server = send_then_close(&mut app, &mut server, &up).await;
                let at_app = send_then_close(&mut server, &mut app, &down).await;
                (at_server, at_app)
            } else {
                let at_app = send_then_close(&mut server, &mut app, &down).await;
                let at_server = send_then_close(&mut app, &mut server, &up).await;
                (at_server, at_app)
            }
        };
        let (result, (at_server, at_app)) =
            timeout(WAIT, async { tokio::join!(run, peers) }).await.expect("connection finished");
        assert!(result.is_ok(), "client_first={client_first}: {result:?}");
        assert!(at_server == up, "client_first={client_first}: upload differs ({} bytes)", at_server.len());
        assert!(at_app == down, "client_first={client_first}: download differs ({} bytes)", at_app.len());
        let counted = (entry.bytes_up.load(Ordering::Relaxed), entry.bytes_down.load(Ordering::Relaxed));
        assert_eq!(counted, (UP as u64, DOWN as u64));
    }
}

/// A remote that resets mid-stream: the connection ends with the remote's read error and the
/// pipe client is reset too (it reads `ConnectionReset`, not a clean end of file).
#[tokio::test]
async fn a_remote_reset_resets_the_pipe_client() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (entry, _guard) = entry(&listener.local_addr().unwrap().to_string());
    let (mut app, client) = pipe(PIPE_CAPACITY);
    let outbound = Arc::new(DirectOutbound::default());
    let run = super::tcp::run(&entry, Inbound::plain(client), outbound, Some(WAIT), Default::default());
    let peers = async {
        let (mut server, _) = listener.accept().await.unwrap();
        app.write_all(b"ping").await.unwrap();
        let mut ping = [0u8; 4];
        server.read_exact(&mut ping).await.unwrap();
        socket2::SockRef::from(&server).set_linger(Some(Duration::ZERO)).unwrap();
        drop(server);
    };
    let (result, ()) = timeout(WAIT, async { tokio::join!(run, peers) }).await.expect("connection finished");
    match result {
        Err(ConnectionError::Io { side: Side::Remote, operation: "read", source }) => {
            assert_eq!(source.kind(), io::ErrorKind::ConnectionReset)
        }
        other => panic!("expected the remote's reset, got {other:?}"),
    }
    let mut byte = [0u8; 1];
    let read = timeout(WAIT, app.read(&mut byte)).await.unwrap();
    assert_eq!(read.map_err(|e| e.kind()), Err(io::ErrorKind::ConnectionReset));
}

/// A destination that takes no byte of a non-empty write: the direction fails with `WriteZero`
/// (it would otherwise spin forever).
#[tokio::test]
async fn a_write_of_zero_bytes_is_write_zero() {
    struct TakesNothing;
    impl StreamSocket for TakesNothing {
        fn poll_read_ready(&self, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Pending
        }
        fn poll_write_ready(&self, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn try_read(&self, _: &mut [u8]) -> io::Result<usize> {
            Err(io::ErrorKind::WouldBlock.into())
        }
        fn try_write(&self, _: &[u8]) -> io::Result<usize> {
            Ok(0)
        }
        fn shutdown_write(&self) -> io::Result<()> {
            Ok(())
        }
        fn reset(&self) {}
    }
    let (app, client): (PipeEnd, PipeEnd) = pipe(PIPE_CAPACITY);
    assert_eq!(StreamSocket::try_write(&app, b"bytes").unwrap(), 5);
    let mut direction = Direction::default();
    let counter = AtomicU64::new(0);
    let result = timeout(WAIT, poll_fn(|cx| direction.poll_copy(cx, &client, &TakesNothing, &counter)))
        .await
        .expect("the direction ended");
    match result {
        Err((Failed::Write, error)) => assert_eq!(error.kind(), io::ErrorKind::WriteZero),
        other => panic!("expected WriteZero, got {other:?}"),
    }
    assert_eq!(counter.load(Ordering::Relaxed), 0);
}

/// Linux: a direction that went bulk splices through a pipe and gives it back (to this thread's
/// pool) as soon as its source is drained; when bytes come again it takes the pooled pipe.
#[cfg(any(target_os = "linux", target_os = "android"))]
#[tokio::test]
async fn a_quiet_bulk_direction_gives_its_pipe_back() {
    use super::splice;
    async fn pair() -> (tokio::net::TcpStream, tokio::net::TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let connect = tokio::net::TcpStream::connect(listener.local_addr().unwrap());
        let (connected, accepted) = tokio::join!(connect, listener.accept());
        (connected.unwrap(), accepted.unwrap().0)
    }
    let (mut sender, source) = pair().await;
    let (destination, mut receiver) = pair().await;
    let mut direction = Direction::default();
    let counter = AtomicU64::new(0);
    let kept_before = splice::kept();
    for (round, bulk) in [(1, 2 * 1024 * 1024), (2, 300_000)] {
        let data = pattern(round, bulk);
        let expected = counter.load(Ordering::Relaxed) + bulk as u64;
        let mut received = vec![0u8; bulk];
        let relay = poll_fn(|cx| {
            if let Poll::Ready(result) = direction.poll_copy(cx, &source, &destination, &counter) {
                panic!("the direction ended: {result:?}");
            }
            // Pending with everything moved: the source is drained, the direction quiet.
            if counter.load(Ordering::Relaxed) == expected {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        });
        let send = async { sender.write_all(&data).await.unwrap() };
        let receive = async { receiver.read_exact(&mut received).await.unwrap() };
        timeout(WAIT, async { tokio::join!(relay, send, receive) }).await.expect("round finished");
        assert!(received == data, "round {round}: bytes differ");
        assert!(!direction.holds_pipe(), "round {round}: a quiet direction holds no pipe");
        // One pipe was made (the direction went past the threshold) and is back in the pool.
        assert_eq!(splice::kept(), kept_before + 1, "round {round}: its pipe waits in the pool");
    }
}
