//! The steps between "the client was told the destination is connected" and the copy: the kick
//! of a lazy outbound handshake and the TLS-fragmented first write.
//!
//! - **Kick** (reference F6, DESIGN decision 9): an outbound whose handshake is lazy
//!   ([`LazyHandshake`]) completes it together with the first payload: the early data the ingress
//!   already holds, or else whatever the client sends within [`KICK_WAIT`] (read once, as soon as
//!   readable); with nothing, it completes alone, so protocols where the server speaks first
//!   (SMTP, SSH) still work. Outbounds without a lazy handshake never see an empty write.
//! - **TLS fragmentation**: the first payload written to the remote goes through
//!   [`crate::tls_fragment::write_first`]; everything after it through the normal copy.
//!   When both apply, the handshake is completed first with no payload, and the first payload is
//!   then fragmented (a ClientHello glued behind a SOCKS request could not be cut on its own).

use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::net::TcpStream;

use super::{pool, ConnectionError, Side};
use crate::dial::LazyHandshake;
use crate::socket::io::read_once;
use crate::socket::ClientStream;
use crate::tls_fragment::{self, FragmentSettings};
use crate::tracker::Entry;

/// How long the kick waits for the client's first bytes when the ingress holds none.
pub const KICK_WAIT: Duration = Duration::from_millis(300);

/// Completes a lazy outbound handshake with `payload`, counting the payload as uploaded.
pub(crate) async fn complete(
    entry: &Entry,
    remote: &TcpStream,
    handshake: Box<dyn LazyHandshake>,
    payload: &[u8],
) -> Result<(), ConnectionError> {
    handshake.complete(remote, payload).await.map_err(ConnectionError::Dial)?;
    entry.bytes_up.fetch_add(payload.len() as u64, Ordering::Relaxed);
    tracing::debug!(
        id = entry.id, destination = %entry.metadata.destination, early_bytes = payload.len(),
        "lazy outbound handshake completed"
    );
    Ok(())
}

/// The kick with no early data: waits up to [`KICK_WAIT`] for the client's first bytes, then
/// completes the handshake with them (or alone if none came, or the client already ended).
pub(crate) async fn kick(
    entry: &Entry,
    client: &ClientStream,
    remote: &TcpStream,
    handshake: Box<dyn LazyHandshake>,
) -> Result<(), ConnectionError> {
    let mut buffer = pool::take(pool::GROW_AFTER);
    let read = match tokio::time::timeout(KICK_WAIT, read_once(client, &mut buffer)).await {
        Ok(Ok(read)) => read,
        Ok(Err(source)) => {
            pool::give(buffer);
            return Err(ConnectionError::Io { side: Side::Client, operation: "read", source });
        }
        Err(_) => 0,
    };
    let result = complete(entry, remote, handshake, &buffer[..read]).await;
    pool::give(buffer);
    result
}

/// Writes the connection's first payload `data` to the remote through the TLS fragmenter.
pub(crate) async fn write_fragmented(
    entry: &Entry,
    remote: &TcpStream,
    data: &[u8],
    settings: &FragmentSettings,
) -> Result<(), ConnectionError> {
    let outcome = tls_fragment::write_first(remote, data, settings)
        .await
        .map_err(|source| ConnectionError::Io { side: Side::Remote, operation: "write", source })?;
    entry.bytes_up.fetch_add(data.len() as u64, Ordering::Relaxed);
    tracing::debug!(
        id = entry.id, destination = %entry.metadata.destination, bytes = data.len(), ?outcome,
        "first write (TLS fragmentation on)"
    );
    Ok(())
}

/// Reads the client's first bytes (once, as soon as readable) and writes them through the TLS
/// fragmenter. Runs alongside the download direction, so a server that speaks first is not held
/// up. End of file writes nothing (the upload direction then sees it and shuts the remote down).
pub(crate) async fn fragment_first_read(
    entry: &Entry,
    client: &ClientStream,
    remote: &TcpStream,
    settings: FragmentSettings,
) -> Result<(), ConnectionError> {
    let mut buffer = pool::take(pool::GROW_AFTER);
    let result = match read_once(client, &mut buffer).await {
        Ok(0) => Ok(()),
        Ok(read) => write_fragmented(entry, remote, &buffer[..read], &settings).await,
        Err(source) => Err(ConnectionError::Io { side: Side::Client, operation: "read", source }),
    };
    pool::give(buffer);
    result
}
