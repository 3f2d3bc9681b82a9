//! The uniffi façade: the Kotlin and Swift API. Only this module uses uniffi types; it converts
//! them to the core's types and back.
//!
//! - [`manager::ConnectionManager`]: the object a host creates (`new(config, platform, listener)`);
//! - [`socks::SocksServer`]: a running SOCKS5 ingress, stopped on drop;
//! - [`callbacks`]: the foreign traits `PlatformInterface` (protect / bind every socket) and
//!   `EventListener` (close events, batched logs);
//! - [`config`]: `NetswitchConfig` (every field with its default), `config_from_json`,
//!   per-connection `ConnectionOptions`;
//! - [`types`]: interface snapshot, connection snapshots, close events, traffic, log records;
//! - [`error::NetswitchError`]: the one public error;
//! - `runtime`: the process-wide tokio runtime.
//!
//! Async methods run on netswitch's own runtime and are awaited through a join handle, so any
//! foreign executor (Kotlin coroutines, Swift tasks) can poll them.

pub mod callbacks;
pub mod config;
pub mod error;
mod fd;
pub mod manager;
pub(crate) mod runtime;
pub mod socks;
mod traffic;
pub mod types;

pub use callbacks::{EventListener, PlatformInterface};
pub use config::{ConnectionOptions, NetswitchConfig};
pub use error::NetswitchError;
pub use manager::ConnectionManager;
pub use socks::SocksServer;
