//! Whole writes and exact reads on a shared `&TcpStream`, driven by readiness: for handshakes
//! and first writes that happen outside the copy engine (which both directions share by `&`);
//! and the graceful close after a final protocol reply.

use std::io;
use std::net::Shutdown;
use std::time::Duration;

use tokio::net::TcpStream;

/// Writes all of `bytes`, waiting for room as needed. A zero-length write from the kernel is
/// `WriteZero`.
pub async fn write_all(stream: &TcpStream, mut bytes: &[u8]) -> io::Result<()> {
    while !bytes.is_empty() {
        stream.writable().await?;
        match stream.try_write(bytes) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => bytes = &bytes[n..],
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Reads exactly `buf.len()` bytes, never more (what follows stays in the socket for the
/// relay); end of file before that is `UnexpectedEof`.
pub async fn read_exact(stream: &TcpStream, buf: &mut [u8]) -> io::Result<()> {
    let mut filled = 0;
    while filled < buf.len() {
        stream.readable().await?;
        match stream.try_read(&mut buf[filled..]) {
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// At most this many bytes are read and discarded while closing a client after its final reply.
pub const DRAIN_LIMIT: usize = 64 * 1024;
/// At most this long is spent reading and discarding a client's bytes after its final reply.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(1);

/// Ends a connection after its final reply so that the reply survives: sends FIN, then reads and
/// discards what the client still sends until it closes, at most [`DRAIN_LIMIT`] bytes for
/// [`DRAIN_TIMEOUT`]. Closing with unread bytes would make the kernel send a reset, which discards
/// a reply still queued for sending (and makes some clients drop one they already received).
pub async fn close_gracefully(stream: &TcpStream) {
    if socket2::SockRef::from(stream).shutdown(Shutdown::Write).is_err() {
        return;
    }
    let drain = async {
        let mut scratch = [0u8; 1024];
        let mut drained = 0;
        while drained < DRAIN_LIMIT {
            if stream.readable().await.is_err() {
                return;
            }
            match stream.try_read(&mut scratch) {
                Ok(0) => return,
                Ok(read) => drained += read,
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => {}
                Err(_) => return,
            }
        }
    };
    let _ = tokio::time::timeout(DRAIN_TIMEOUT, drain).await;
}
