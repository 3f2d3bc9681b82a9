//! The plain direct outbound: system resolver, addresses tried in order, one connect timeout each.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use tokio::net::{TcpSocket, TcpStream};

use super::{AttemptError, BoxFuture, DialAttempt, DialError, DialedStream, DialedUdp, Outbound};
use crate::metadata::{Host, Metadata};
use crate::network::Egress;

/// Default timeout of one connect attempt.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Dials destinations directly through the operating system's routing table.
///
/// Domains are resolved with the system resolver unless `Metadata::resolved_addresses` is set;
/// the addresses are tried one after the other, each with the connect timeout.
#[derive(Debug, Clone)]
pub struct DirectOutbound {
    connect_timeout: Duration,
}

impl Default for DirectOutbound {
    fn default() -> Self {
        DirectOutbound { connect_timeout: DEFAULT_CONNECT_TIMEOUT }
    }
}

impl DirectOutbound {
    /// A direct outbound whose connect attempts time out after `connect_timeout` unless a
    /// connection's own options say otherwise.
    pub fn new(connect_timeout: Duration) -> DirectOutbound {
        DirectOutbound { connect_timeout }
    }

    async fn dial(&self, metadata: &Metadata) -> Result<DialedStream, DialError> {
        let timeout = metadata.options.connect_timeout.unwrap_or(self.connect_timeout);
        let addresses = resolve(metadata).await?;
        let mut attempts = Vec::new();
        for address in addresses {
            let started = Instant::now();
            match connect(address, timeout).await {
                Ok(stream) => {
                    return Ok(DialedStream::plain(stream, Egress::default()));
                }
                Err(error) => {
                    tracing::debug!(%address, %error, "connect attempt failed");
                    attempts.push(DialAttempt {
                        address,
                        interface: None,
                        elapsed: started.elapsed(),
                        error,
                    });
                }
            }
        }
        Err(DialError::Connect { destination: metadata.destination.to_string(), attempts })
    }
}

impl Outbound for DirectOutbound {
    fn dial_tcp<'a>(&'a self, metadata: &'a Metadata) -> BoxFuture<'a, Result<DialedStream, DialError>> {
        Box::pin(self.dial(metadata))
    }

    fn open_udp<'a>(&'a self, metadata: &'a Metadata) -> BoxFuture<'a, Result<DialedUdp, DialError>> {
        Box::pin(async move {
            let addresses = resolve(metadata).await?;
            let mut attempts = Vec::new();
            for address in addresses {
                let started = Instant::now();
                match open_udp_socket(address, metadata.options.udp_connect).await {
                    Ok(socket) => {
                        let connected_to = metadata.options.udp_connect.then_some(address);
                        return Ok(DialedUdp { socket, connected_to, egress: Egress::default() });
                    }
                    Err(error) => attempts.push(DialAttempt {
                        address,
                        interface: None,
                        elapsed: started.elapsed(),
                        error: AttemptError::Io(error),
                    }),
                }
            }
            Err(DialError::Connect { destination: metadata.destination.to_string(), attempts })
        })
    }
}

/// A UDP socket of `address`'s family bound to the unspecified address; connected to `address`
/// when `connect` is set.
async fn open_udp_socket(address: SocketAddr, connect: bool) -> std::io::Result<tokio::net::UdpSocket> {
    let local: SocketAddr = match address {
        SocketAddr::V4(_) => (std::net::Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (std::net::Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let socket = tokio::net::UdpSocket::bind(local).await?;
    if connect {
        socket.connect(address).await?;
    }
    Ok(socket)
}

/// The addresses to try for a connection, in order: the pre-resolved ones, the IP destination,
/// or what the system resolver answers for the domain.
pub async fn resolve(metadata: &Metadata) -> Result<Vec<SocketAddr>, DialError> {
    let port = metadata.destination.port;
    if !metadata.resolved_addresses.is_empty() {
        return Ok(metadata.resolved_addresses.iter().map(|ip| SocketAddr::new(*ip, port)).collect());
    }
    match &metadata.destination.host {
        Host::Ip(ip) => Ok(vec![SocketAddr::new(*ip, port)]),
        Host::Domain(name) => {
            let found = tokio::net::lookup_host((name.as_str(), port))
                .await
                .map_err(|source| DialError::Resolve { host: name.clone(), source })?;
            let mut addresses: Vec<SocketAddr> = Vec::new();
            for address in found {
                if !addresses.contains(&address) {
                    addresses.push(address);
                }
            }
            if addresses.is_empty() {
                return Err(DialError::NoAddress { host: name.clone() });
            }
            Ok(addresses)
        }
    }
}

/// Connects one TCP socket to `address` within `timeout`, with `TCP_NODELAY` set.
pub async fn connect(address: SocketAddr, timeout: Duration) -> Result<TcpStream, AttemptError> {
    let socket = match address.ip() {
        IpAddr::V4(_) => TcpSocket::new_v4()?,
        IpAddr::V6(_) => TcpSocket::new_v6()?,
    };
    socket.set_nodelay(true)?;
    match tokio::time::timeout(timeout, socket.connect(address)).await {
        Ok(result) => Ok(result?),
        Err(_) => Err(AttemptError::TimedOut(timeout)),
    }
}
