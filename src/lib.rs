//! netswitch: a connection manager for mobile VPN apps.
//!
//! A host hands netswitch client connections with their destination; netswitch dials the
//! destination, tells the client the outcome, relays both ways with real half-close, and tracks
//! every live connection so it can be listed and closed.
//!
//! The quickest way in is [`Netswitch::builder`]: a [`Config`] in, a [`ConnectionManager`] and the
//! strategy-aware [`DirectOutbound`] out, wired the way the Kotlin/Swift API and the CLI wire
//! theirs. Everything an embedder needs is re-exported here; the modules hold the details.
//!
//! # Module map
//!
//! In stack order, from the host-facing side down to the platform: a module imports only modules
//! below it (`tests/layers.rs` holds the map to that, and to listing every module).
//!
//! | module | what lives there |
//! |---|---|
//! | `ffi` | the uniffi façade, the Kotlin and Swift API (feature `ffi`, on by default); core code never uses its types |
//! | [`stack`] | the composition root: [`Netswitch`] wires manager, network state, binder and outbound from a [`Config`] |
//! | [`config`] | the JSON configuration shared by the CLI and the host API: keys, defaults, validation, limits |
//! | [`tun`] | the packet-tunnel ingress: TUN packet I/O (offloads on Linux) or a host's packet flow in batches, the kernel-TCP (system) stack and its NAT, the userspace (smoltcp) stack, UDP flows from packets, DNS hijack, ICMP echo, the decision hook, the Apple utun fd finder |
//! | [`inbound`] | ingresses: the SOCKS5 server (CONNECT, UDP ASSOCIATE, auth), its UDP session table, budgets |
//! | [`manager`] | [`ConnectionManager`]: takes connections, runs them, closes them on request and on network changes |
//! | [`relay`] | the copy engine (splice on Linux), UDP sessions and their NAT, what a closed connection reports |
//! | [`tls_fragment`] | ClientHello parsing and splitting (TCP segments, TLS records) for the first write |
//! | [`tracker`] | the live connection table: ids, egress, byte and packet counters, close handles |
//! | [`client`] | the client side the relay consumes: [`Inbound`], [`PacketInbound`], [`Datagram`], UDP timeouts |
//! | [`dial`] | the [`Outbound`] trait, the direct outbound (strategy, RFC 8305 racing), the upstream SOCKS5 outbound |
//! | [`dns`] | names resolved over the network that carries the connection: each interface's DNS servers over sockets bound to it, the host's resolver, the system resolver as the last resort, a TTL cache per interface |
//! | [`socks5`] | the SOCKS5 wire format, once: addresses, greeting and auth, request, reply codes, UDP header |
//! | [`metadata`] | [`Destination`] and per-connection [`Metadata`] / [`ConnectionOptions`] |
//! | [`platform`] | how one socket leaves through one interface: Linux, Apple, the host callback, [`SimulatedBinder`], TCP options |
//! | [`network`] | [`NetworkType`], interfaces and snapshots, what an update changed, [`NetworkStrategy`], address families |
//! | [`socket`] | the stream the relay moves bytes over (`ClientStream`; a crate-private socket trait for kernel and, next, userspace sockets), whole reads/writes and the graceful close |
//! | [`deadline`] | deadlines from configured durations without overflow (a year when one cannot be represented) |
//! | [`logging`] | tracing setup: os_log on Apple, logcat on Android, fmt elsewhere; the level at run time |
//! | `memory` | (private) gives freed heap back to the system after a burst of connections |
//!
//! # Example
//!
//! Hand the manager a client connection and its destination; it dials, relays both ways and
//! reports the close. Everything here stays on loopback.
//!
//! ```
//! use std::sync::Arc;
//! use netswitch::{ConnectionManager, Destination, DirectOutbound, Inbound, Metadata, Outbound, RelaySettings};
//! use tokio::io::{AsyncReadExt, AsyncWriteExt};
//! use tokio::net::{TcpListener, TcpStream};
//!
//! # #[tokio::main] async fn main() -> std::io::Result<()> {
//! // A destination that echoes what it reads.
//! let destination = TcpListener::bind("127.0.0.1:0").await?;
//! let target = destination.local_addr()?;
//! tokio::spawn(async move {
//!     while let Ok((mut socket, _)) = destination.accept().await {
//!         tokio::spawn(async move {
//!             let (mut reader, mut writer) = socket.split();
//!             let _ = tokio::io::copy(&mut reader, &mut writer).await;
//!         });
//!     }
//! });
//!
//! // A client connection the host already has (here: one end of a loopback pair).
//! let front = TcpListener::bind("127.0.0.1:0").await?;
//! let mut app = TcpStream::connect(front.local_addr()?).await?;
//! let (client, _) = front.accept().await?;
//!
//! let manager = Arc::new(ConnectionManager::new(RelaySettings::default()));
//! let outbound: Arc<dyn Outbound> = Arc::new(DirectOutbound::default());
//! let (closed_tx, closed_rx) = tokio::sync::oneshot::channel();
//! let id = manager.new_connection(
//!     Inbound::plain(client),
//!     Metadata::new(Destination::from(target)),
//!     outbound,
//!     move |closed| { let _ = closed_tx.send(closed); },
//! );
//!
//! app.write_all(b"hello").await?;
//! let mut echoed = [0u8; 5];
//! app.read_exact(&mut echoed).await?;
//! assert_eq!(&echoed, b"hello");
//! assert!(manager.get(id).is_some(), "the live connection is tracked");
//!
//! drop(app); // the app closes: the relay ends and reports once
//! let closed = closed_rx.await.expect("on_close runs exactly once");
//! assert_eq!((closed.bytes_up, closed.bytes_down), (5, 5));
//! # Ok(()) }
//! ```

#![warn(missing_docs)]

pub mod client;
pub mod config;
pub mod deadline;
pub mod dial;
pub mod dns;
#[cfg(feature = "ffi")]
pub mod ffi;
pub mod inbound;
pub mod logging;
pub mod manager;
mod memory;
pub mod metadata;
pub mod network;
pub mod platform;
pub mod relay;
pub mod socket;
pub mod socks5;
pub mod stack;
pub mod tls_fragment;
pub mod tracker;
pub mod tun;

#[cfg(feature = "ffi")]
uniffi::setup_scaffolding!();

// The composition root and the configuration.
pub use config::{Config, ConfigError};
pub use stack::{BuildError, Netswitch, NetswitchBuilder};
// Connections in: the manager, the client contract, the SOCKS5 ingress.
pub use client::{ClientStream, Datagram, Inbound, InboundHandshake, PacketInbound, PacketSink, UdpTimeouts};
pub use inbound::socks::{SocksError, SocksServer, SocksSettings, SocksUser};
pub use inbound::udp_sessions::UdpSettings;
pub use manager::{
    CloseObserver, ConnectionManager, NetworkObserver, NetworkUpdate, OpenObserver, RelaySettings,
};
pub use metadata::{ConnectionOptions, Destination, Host, Metadata};
pub use tls_fragment::FragmentSettings;
// Connections out: outbounds and how a dial ends.
pub use dial::direct::{DialSettings, DirectOutbound};
pub use dial::socks5::Socks5Outbound;
pub use dial::{BoxFuture, DialAttempt, DialError, DialedStream, DialedUdp, FailureKind, Outbound};
// What the manager reports.
pub use relay::{ClosedConnection, ConnectionError};
pub use tracker::{ConnectionId, ConnectionInfo, ConnectionState, TransportProtocol};
// Network updates from the host.
pub use network::{
    CloseReason, DomainStrategy, Egress, InterfaceSnapshot, NetworkInterface, NetworkState, NetworkStrategy,
    NetworkType, SnapshotChange, SnapshotError,
};
// Binding sockets to networks.
pub use platform::{os_binder, BindDecision, BindError, HostSocketBinder, SimulatedBinder, SocketBinder};
