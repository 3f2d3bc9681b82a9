//! Whole writes and exact reads on a shared stream, driven by readiness: for handshakes and first
//! writes that happen outside the copy engine (which both directions share by `&`); and the
//! graceful close after a final protocol reply. Generic over [`StreamSocket`], so they work on a
//! kernel `TcpStream` and on the client's [`super::ClientStream`] alike.

use std::future::poll_fn;
use std::io;
use std::time::Duration;

use super::stream::StreamSocket;

/// Writes all of `bytes`, waiting for room as needed. A zero-length write from the stream is
/// `WriteZero`.
pub(crate) async fn write_all<S: StreamSocket + ?Sized>(stream: &S, mut bytes: &[u8]) -> io::Result<()> {
    while !bytes.is_empty() {
        poll_fn(|cx| stream.poll_write_ready(cx)).await?;
        match stream.try_write(bytes) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => bytes = &bytes[n..],
            Err(e) if is_retry(&e) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Reads exactly `buf.len()` bytes, never more (what follows stays in the socket for the
/// relay); end of file before that is `UnexpectedEof`.
pub(crate) async fn read_exact<S: StreamSocket + ?Sized>(stream: &S, buf: &mut [u8]) -> io::Result<()> {
    let mut filled = 0;
    while filled < buf.len() {
        match read_once(stream, &mut buf[filled..]).await? {
            0 => return Err(io::ErrorKind::UnexpectedEof.into()),
            n => filled += n,
        }
    }
    Ok(())
}

/// Waits until `stream` is readable and reads once: what is available, 0 at end of file.
pub(crate) async fn read_once<S: StreamSocket + ?Sized>(stream: &S, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        poll_fn(|cx| stream.poll_read_ready(cx)).await?;
        match stream.try_read(buf) {
            Ok(read) => return Ok(read),
            Err(e) if is_retry(&e) => {}
            Err(e) => return Err(e),
        }
    }
}

/// True for the errors after which a non-blocking operation is simply tried again.
pub(crate) fn is_retry(error: &io::Error) -> bool {
    matches!(error.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted)
}

/// At most this many bytes are read and discarded while closing a client after its final reply.
pub const DRAIN_LIMIT: usize = 64 * 1024;
/// At most this long is spent reading and discarding a client's bytes after its final reply.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(1);

/// Ends a connection after its final reply so that the reply survives: sends FIN, then reads and
/// discards what the client still sends until it closes, at most [`DRAIN_LIMIT`] bytes for
/// [`DRAIN_TIMEOUT`]. Closing with unread bytes would make the kernel send a reset, which discards
/// a reply still queued for sending (and makes some clients drop one they already received).
pub(crate) async fn close_gracefully<S: StreamSocket + ?Sized>(stream: &S) {
    if stream.shutdown_write().is_err() {
        return;
    }
    let drain = async {
        let mut scratch = [0u8; 1024];
        let mut drained = 0;
        while drained < DRAIN_LIMIT {
            match read_once(stream, &mut scratch).await {
                Ok(0) | Err(_) => return,
                Ok(read) => drained += read,
            }
        }
    };
    let _ = tokio::time::timeout(DRAIN_TIMEOUT, drain).await;
}
