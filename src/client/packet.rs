//! A client's UDP side: its datagrams in, its replies out, and its idle timeouts.

use std::io;
use std::sync::Arc;

use tokio::sync::mpsc;

use super::udp_timeout::UdpTimeouts;
use crate::dial::BoxFuture;
use crate::metadata::Destination;

/// One datagram from the client: where it goes and its payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Datagram {
    /// The destination the client addressed (a domain or an IP).
    pub destination: Destination,
    /// The payload.
    pub payload: Vec<u8>,
}

/// Delivers replies to the client of a UDP session (e.g. a SOCKS5 UDP association's socket).
pub trait PacketSink: Send + Sync + 'static {
    /// Sends one reply to the client, shown as coming from `source`. A transient error (see the
    /// module docs) drops the reply and is counted; any other error ends the session.
    fn send_to_client<'a>(
        &'a self,
        payload: &'a [u8],
        source: &'a Destination,
    ) -> BoxFuture<'a, io::Result<()>>;

    /// Sends one reply at once if that needs no waiting: `Some` with the outcome (as for
    /// [`PacketSink::send_to_client`]), or `None` when the sink would have to wait, and then the
    /// relay calls [`PacketSink::send_to_client`] for the same reply. The relay tries this first
    /// for every reply, so a sink that can send without a future saves one per reply. The
    /// default always answers `None`.
    fn try_send_to_client(&self, payload: &[u8], source: &Destination) -> Option<io::Result<()>> {
        let _ = (payload, source);
        None
    }
}

/// The client side of a UDP session, handed to [`crate::ConnectionManager::new_packet_connection`].
pub struct PacketInbound {
    /// The client's datagrams, in order. The session ends cleanly when every sender is dropped.
    pub uplink: mpsc::Receiver<Datagram>,
    /// Where replies go.
    pub downlink: Arc<dyn PacketSink>,
    /// The idle timeouts of the ingress (its default and the protocol timeouts).
    pub timeouts: UdpTimeouts,
}

impl PacketInbound {
    /// A client side fed through a bounded queue of `queue_len` (at least 1) datagrams: push the
    /// client's datagrams into the returned sender (`try_send`, counting a full queue as a drop).
    pub fn channel(
        downlink: Arc<dyn PacketSink>,
        timeouts: UdpTimeouts,
        queue_len: usize,
    ) -> (mpsc::Sender<Datagram>, PacketInbound) {
        let (sender, uplink) = mpsc::channel(queue_len.max(1));
        (sender, PacketInbound { uplink, downlink, timeouts })
    }
}

impl std::fmt::Debug for PacketInbound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PacketInbound")
            .field("queued", &self.uplink.len())
            .field("timeouts", &self.timeouts)
            .finish()
    }
}
