//! netswitch: a connection manager for mobile VPN apps.
//!
//! A host hands netswitch client connections with their destination; netswitch dials the
//! destination, tells the client the outcome, relays both ways with real half-close, and tracks
//! every live connection so it can be listed and closed.
//!
//! Module map:
//! - [`metadata`]: destinations and per-connection options;
//! - [`dial`]: the [`Outbound`] trait and the direct outbound;
//! - [`relay`]: the copy engine and what a finished connection reports;
//! - [`tracker`]: the live connection table;
//! - [`manager`]: [`ConnectionManager`], which ties them together;
//! - [`inbound`]: ingresses (SOCKS5);
//! - [`network`]: network types and the egress a connection used;
//! - [`config`]: the JSON configuration shared by the CLI and the host API;
//! - `ffi` (feature `ffi`, on by default): the uniffi façade (Kotlin and Swift API); core code
//!   never uses its types.
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
pub mod tls_fragment;
pub mod tracker;

#[cfg(feature = "ffi")]
uniffi::setup_scaffolding!();

pub use client::{Datagram, Inbound, InboundHandshake, PacketInbound, PacketSink, UdpTimeouts};
pub use dial::direct::DirectOutbound;
pub use dial::{DialError, DialedStream, Outbound};
pub use manager::{ConnectionManager, RelaySettings};
pub use metadata::{ConnectionOptions, Destination, Host, Metadata};
pub use relay::{ClosedConnection, ConnectionError};
pub use tracker::{ConnectionId, ConnectionInfo};
