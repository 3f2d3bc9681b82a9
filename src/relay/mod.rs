//! Relaying: what a finished connection reports, and the engine that moves its bytes.

pub(crate) mod copy;
pub(crate) mod first_write;
pub mod nat;
pub mod pool;
pub(crate) mod recv_batch;
pub(crate) mod send_batch;
#[cfg(any(target_os = "linux", target_os = "android"))]
pub(crate) mod splice;
#[cfg(any(target_os = "linux", target_os = "android"))]
pub use splice::KEPT_PIPES;
pub(crate) mod tcp;
#[cfg(test)]
mod tests;
pub mod udp;
pub mod udp_lookups;

use std::fmt;
use std::io;
use std::time::Duration;

use crate::dial::DialError;
use crate::metadata::Destination;
use crate::network::Egress;
use crate::tracker::ConnectionId;

/// Which end of a relayed connection an I/O error came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The client (the app's socket handed to netswitch).
    Client,
    /// The destination (the outbound socket netswitch dialed).
    Remote,
}

impl fmt::Display for Side {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Side::Client => "client",
            Side::Remote => "remote",
        })
    }
}

/// Why a connection ended other than by both sides finishing normally. Always the first
/// (root-cause) failure.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectionError {
    /// The destination could not be reached.
    #[error(transparent)]
    Dial(#[from] DialError),
    /// Telling the client that the destination is connected failed.
    #[error("send success reply to client: {0}")]
    Handshake(#[source] io::Error),
    /// Reading from or writing to one side failed (reset, broken pipe…).
    #[error("{side} {operation}: {source}")]
    Io {
        /// The side whose socket failed.
        side: Side,
        /// "read" or "write".
        operation: &'static str,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },
    /// One direction had ended and the other stayed silent for the half-close timeout.
    #[error("half-closed connection silent for {0:?}")]
    HalfCloseTimeout(Duration),
    /// A UDP session saw no traffic in either direction for its idle timeout.
    #[error("UDP session idle for {0:?}")]
    UdpIdle(Duration),
    /// Closed on request (`close(id)`, `close_all()`, a network change).
    #[error("closed by request")]
    Closed,
    /// The manager was shut down (before or while the connection ran), or the runtime running
    /// the connection dropped it.
    #[error("connection manager is shut down")]
    ShutDown,
    /// Code run for the connection panicked (an `Outbound`, an `InboundHandshake`, a
    /// `PacketSink`, or netswitch itself); the text is the panic's message.
    #[error("connection task panicked: {0}")]
    Panicked(String),
}

/// What the manager reports once a connection is over; passed to the `on_close` callback.
#[derive(Debug)]
#[non_exhaustive]
pub struct ClosedConnection {
    /// The connection's id.
    pub id: ConnectionId,
    /// Where it went.
    pub destination: Destination,
    /// The network it left through (default if the dial failed).
    pub egress: Egress,
    /// Bytes relayed client → destination.
    pub bytes_up: u64,
    /// Bytes relayed destination → client.
    pub bytes_down: u64,
    /// How long the connection lived, dial included.
    pub duration: Duration,
    /// `None` when both directions ended normally; otherwise the root-cause error.
    pub error: Option<ConnectionError>,
}
