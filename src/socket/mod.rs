//! Sockets as the relay and the ingresses use them, below both: the byte-stream contract the copy
//! engine drives (`stream.rs`: readiness, non-blocking reads and writes, half-close, an optional
//! kernel descriptor for `splice`), the client's socket as the client contract hands it over
//! ([`ClientStream`]), and whole writes, exact reads and the graceful close on a shared stream
//! (`io.rs`).

mod client;
pub(crate) mod io;
#[cfg(test)]
pub(crate) mod pipe;
pub(crate) mod stream;

pub(crate) use client::set_listener_nodelay;
pub use client::ClientStream;
