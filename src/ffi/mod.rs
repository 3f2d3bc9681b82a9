//! The uniffi façade: the Kotlin and Swift API. Only this module uses uniffi types; it converts
//! them to the core's types and back.
//!
//! - [`manager::ConnectionManager`]: the object a host creates (`new(config, platform)`);
//! - [`socks::SocksServer`]: a running SOCKS5 ingress, owned by its manager until `stop()`;
//! - [`tun::TunHandle`]: a running packet tunnel on the host's TUN fd (`start_tun` with
//!   `TunOptions`), owned by its manager until `stop()`;
//! - [`packet_flow::PacketFlowHandle`]: a tunnel on the host's packet flow instead of an fd
//!   (`start_packet_flow`; iOS `NEPacketTunnelFlow`), packets in batches both ways through the
//!   host's `PacketWriter`;
//! - [`events::Subscription`]: a live subscription of an `EventListener`, until `cancel()`;
//! - [`callbacks`]: the foreign traits `PlatformInterface` (protect / bind every socket) and
//!   `EventListener` (connections opened and closed, network changes, batched logs);
//! - [`dns`]: the host's resolver bridged to the core (`PlatformInterface.resolve`), what
//!   `ConnectionManager.resolve` answers, the resolver choice;
//! - [`config`]: `NetswitchConfig` (every field with its default), `config_from_json`,
//!   per-connection `ConnectionOptions`;
//! - [`network`]: network types, the interface snapshot, network changes;
//! - [`types`]: connection snapshots, close events, traffic, log records, SOCKS users, what the
//!   host's resolver answers (`HostResolution`);
//! - [`logs`]: the process-wide log level (`set_log_level`);
//! - `utun`: the utun fd of an Apple packet tunnel ([`find_utun_fd`]), for `start_tun`;
//! - [`error::NetswitchError`]: the one public error;
//! - `runtime`: the process-wide tokio runtime.
//!
//! Async methods run on netswitch's own runtime and are awaited through a join handle, so any
//! foreign executor (Kotlin coroutines, Swift tasks) can poll them.

#[cfg(test)]
mod adversarial_tests;
pub mod callbacks;
pub mod config;
pub mod dns;
pub mod error;
pub mod events;
mod fd;
pub mod logs;
pub mod manager;
pub mod network;
pub mod packet_flow;
pub(crate) mod runtime;
pub mod socks;
mod traffic;
pub mod tun;
pub mod tun_decider;
pub mod types;
mod utun;

pub use callbacks::{EventListener, PlatformInterface};
pub use config::{ConnectionOptions, NetswitchConfig};
pub use error::NetswitchError;
pub use events::Subscription;
pub use logs::set_log_level;
pub use manager::ConnectionManager;
pub use packet_flow::{PacketFlowHandle, PacketWriter};
pub use socks::SocksServer;
pub use tun::{TunHandle, TunOptions, TunStack};
pub use utun::find_utun_fd;
