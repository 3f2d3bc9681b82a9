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
//! - [`ffi`]: the uniffi façade (Kotlin and Swift API); core code never uses its types.

#![warn(missing_docs)]

pub mod config;
pub mod dial;
pub mod ffi;
pub mod inbound;
pub mod logging;
pub mod manager;
mod memory;
pub mod metadata;
pub mod network;
pub mod platform;
pub mod relay;
pub mod tls_fragment;
pub mod tracker;

uniffi::setup_scaffolding!();

pub use dial::direct::DirectOutbound;
pub use dial::{DialError, DialedStream, Outbound};
pub use inbound::Inbound;
pub use manager::{ConnectionManager, RelaySettings};
pub use metadata::{ConnectionOptions, Destination, Host, Metadata};
pub use relay::{ClosedConnection, ConnectionError};
pub use tracker::{ConnectionId, ConnectionInfo};
