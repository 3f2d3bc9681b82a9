//! Writing the first payload of a connection with the ClientHello cut into pieces.

use std::io;
use std::time::Duration;

use tokio::net::TcpStream;

use super::ack::wait_for_ack;
use super::client_hello;
use super::split::{cut_points, reframe, split_at};
use super::FragmentSettings;
use crate::socket::io::write_all;

/// What [`write_first`] did with the bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FirstWrite {
    /// Not one complete ClientHello (or fragmentation off): written unchanged in one go.
    PassedThrough,
    /// Fragmented into this many pieces: records (record mode) and/or TCP segments (segment mode).
    Fragmented {
        /// Number of pieces written.
        pieces: usize,
    },
}

/// Writes `data`, the first payload of a connection, to `stream` with the ClientHello cut at every
/// label of its server name, as `settings` asks:
/// - record mode: the pieces are re-framed as TLS records and all written at once;
/// - segment mode: `TCP_NODELAY` is turned on, each piece is written on its own and, before the
///   next, the peer's acknowledgement is awaited (bounded by the fallback delay); the socket's
///   previous `TCP_NODELAY` is restored afterwards, even when a write failed.
///
/// Anything that is not exactly one complete ClientHello is written unchanged, as is everything
/// when both modes are off. Returns what was done, or the first write error.
pub async fn write_first(
    stream: &TcpStream,
    data: &[u8],
    settings: &FragmentSettings,
) -> io::Result<FirstWrite> {
    let hello = match client_hello::parse(data) {
        Some(hello) if settings.is_enabled() => hello,
        _ => {
            write_all(stream, data).await?;
            return Ok(FirstWrite::PassedThrough);
        }
    };
    let mut random = Random::new();
    let cuts = cut_points(data, hello.server_name, |n| random.below(n));
    let records = settings.record.then(|| reframe(data, &cuts));
    if !settings.segment {
        let framed = records.unwrap_or_default();
        let pieces = framed.len();
        write_all(stream, &framed.concat()).await?;
        return Ok(FirstWrite::Fragmented { pieces });
    }
    let pieces: Vec<&[u8]> = match &records {
        Some(framed) => framed.iter().map(Vec::as_slice).collect(),
        None => split_at(data, &cuts),
    };
    let previous = stream.nodelay()?;
    stream.set_nodelay(true)?;
    let written = write_segments(stream, &pieces, settings.fallback_delay).await;
    let restored = stream.set_nodelay(previous);
    written?;
    restored?;
    Ok(FirstWrite::Fragmented { pieces: pieces.len() })
}

/// Writes each piece, waiting for the peer's acknowledgement between pieces (not after the last).
async fn write_segments(stream: &TcpStream, pieces: &[&[u8]], fallback_delay: Duration) -> io::Result<()> {
    for (index, piece) in pieces.iter().enumerate() {
        write_all(stream, piece).await?;
        if index + 1 < pieces.len() && !wait_for_ack(stream, fallback_delay).await {
            tracing::debug!(
                piece = index,
                fallback_delay_ms = fallback_delay.as_millis() as u64,
                "TLS fragment: no acknowledgement seen within the fallback delay; writing the next piece"
            );
        }
    }
    Ok(())
}

/// A small xorshift generator seeded from the standard library's per-process random hasher keys:
/// cut positions only need to differ between connections, not to be secret.
struct Random(u64);

impl Random {
    fn new() -> Random {
        use std::hash::{BuildHasher, Hasher};
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        hasher.write_u64(0x9e37_79b9_7f4a_7c15);
        Random(hasher.finish() | 1)
    }

    /// A number in `0..n` (0 when `n` is 0).
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        if n == 0 {
            0
        } else {
            (self.0 % n as u64) as usize
        }
    }
}
