//! The life of one TCP connection: dial, tell the client, relay both ways, close.

use std::future::{poll_fn, Future};
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};

use super::copy::{Direction, Failed};
use super::{ConnectionError, Side};
use crate::dial::Outbound;
use crate::inbound::Inbound;
use crate::tracker::Entry;

/// Runs one connection to its end and returns the root-cause error, if any.
/// The sockets are closed when this returns: gracefully after a clean end, with a reset otherwise.
pub(crate) async fn run(
    entry: &Entry,
    inbound: Inbound,
    outbound: Arc<dyn Outbound>,
    half_close_timeout: Option<Duration>,
) -> Result<(), ConnectionError> {
    let Inbound { stream: client, early_data, handshake } = inbound;
    let dialed = tokio::select! {
        biased;
        _ = entry.close_requested() => Err(ConnectionError::Closed),
        dialed = outbound.dial_tcp(&entry.metadata) => dialed.map_err(ConnectionError::Dial),
    };
    let dialed = match dialed {
        Ok(dialed) => dialed,
        Err(error) => {
            match (handshake, &error) {
                (Some(mut handshake), ConnectionError::Dial(dial_error)) => {
                    if let Err(e) = handshake.fail(&client, dial_error).await {
                        tracing::debug!(error = %e, "could not send the failure reply to the client");
                    }
                }
                _ => reset(&client),
            }
            return Err(error);
        }
    };
    let remote = dialed.stream;
    entry.set_egress(dialed.egress);
    let result = relay_after_dial(entry, &client, &remote, handshake, &early_data, half_close_timeout).await;
    if result.is_err() {
        reset(&client);
        reset(&remote);
    }
    result
}

async fn relay_after_dial(
    entry: &Entry,
    client: &TcpStream,
    remote: &TcpStream,
    handshake: Option<Box<dyn crate::inbound::InboundHandshake>>,
    early_data: &[u8],
    half_close_timeout: Option<Duration>,
) -> Result<(), ConnectionError> {
    let work = async {
        if let Some(mut handshake) = handshake {
            let bound = remote.local_addr().map_err(ConnectionError::Handshake)?;
            handshake.succeed(client, bound).await.map_err(ConnectionError::Handshake)?;
        }
        if !early_data.is_empty() {
            write_all(remote, early_data).await.map_err(|source| ConnectionError::Io {
                side: Side::Remote,
                operation: "write",
                source,
            })?;
            entry.bytes_up.fetch_add(early_data.len() as u64, std::sync::atomic::Ordering::Relaxed);
        }
        copy_both_ways(entry, client, remote, half_close_timeout).await
    };
    tokio::select! {
        biased;
        _ = entry.close_requested() => Err(ConnectionError::Closed),
        result = work => result,
    }
}

/// Copies client → remote and remote → client until both directions ended, one failed, or the
/// half-closed remainder stayed silent for `half_close_timeout`.
async fn copy_both_ways(
    entry: &Entry,
    client: &TcpStream,
    remote: &TcpStream,
    half_close_timeout: Option<Duration>,
) -> Result<(), ConnectionError> {
    let mut up = Direction::default();
    let mut down = Direction::default();
    // Armed only once one direction has ended; reset whenever the other one moves bytes.
    let mut drain: Option<(Pin<Box<Sleep>>, u64)> = None;
    poll_fn(|cx| {
        if !up.is_done() {
            if let Poll::Ready(Err((failed, source))) = up.poll_copy(cx, client, remote, &entry.bytes_up) {
                return Poll::Ready(Err(io_error(failed, Side::Client, Side::Remote, source)));
            }
        }
        if !down.is_done() {
            if let Poll::Ready(Err((failed, source))) = down.poll_copy(cx, remote, client, &entry.bytes_down)
            {
                return Poll::Ready(Err(io_error(failed, Side::Remote, Side::Client, source)));
            }
        }
        let remaining = match (up.is_done(), down.is_done()) {
            (true, true) => return Poll::Ready(Ok(())),
            (false, false) => return Poll::Pending,
            (true, false) => &down,
            (false, true) => &up,
        };
        let Some(timeout) = half_close_timeout else { return Poll::Pending };
        let moved = remaining.transferred();
        let (sleep, seen) = drain.get_or_insert_with(|| (Box::pin(tokio::time::sleep(timeout)), moved));
        if *seen != moved {
            *seen = moved;
            sleep.as_mut().reset(Instant::now() + timeout);
        }
        match sleep.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(ConnectionError::HalfCloseTimeout(timeout))),
            Poll::Pending => Poll::Pending,
        }
    })
    .await
}

fn io_error(failed: Failed, source_side: Side, destination_side: Side, source: io::Error) -> ConnectionError {
    match failed {
        Failed::Read => ConnectionError::Io { side: source_side, operation: "read", source },
        Failed::Write => ConnectionError::Io { side: destination_side, operation: "write", source },
    }
}

async fn write_all(stream: &TcpStream, mut bytes: &[u8]) -> io::Result<()> {
    while !bytes.is_empty() {
        stream.writable().await?;
        match stream.try_write(bytes) {
            Ok(n) => bytes = &bytes[n..],
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Makes the coming close send a reset (linger 0) so the peer sees an abort, not a clean end.
fn reset(stream: &TcpStream) {
    let _ = socket2::SockRef::from(stream).set_linger(Some(Duration::ZERO));
}
