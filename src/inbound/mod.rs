//! Ingresses: where client connections come from (the SOCKS5 server; a socket handed over by the
//! host goes straight to [`crate::ConnectionManager::new_connection`]). What an ingress hands the
//! manager is the client contract of [`crate::client`].
//!
//! - [`socks`]: the SOCKS5 server (CONNECT and UDP ASSOCIATE);
//! - [`udp_sessions`]: the NAT session table that turns an ingress's datagrams into UDP sessions;
//! - [`budget`]: a shared cap with a refusal counter (UDP associations and sockets).

pub mod budget;
pub mod socks;
pub mod udp_sessions;
