//! The client contract: what an ingress hands the manager and the relay. A TCP client is an
//! [`Inbound`] (its [`ClientStream`], early data, and the [`InboundHandshake`] that reports the dial's
//! outcome); a UDP client is a [`PacketInbound`] (its [`Datagram`]s in, a [`PacketSink`] for
//! replies, its [`UdpTimeouts`]). Ingresses (SOCKS5 today, the packet tunnel next) build these;
//! the manager and the relay consume them and never look at the ingress itself.

mod packet;
mod stream;
pub mod udp_timeout;

pub use crate::socket::ClientStream;
pub use packet::{Datagram, PacketInbound, PacketSink};
pub use stream::{Inbound, InboundHandshake};
pub use udp_timeout::UdpTimeouts;
