//! One question to one server: over UDP from a socket netswitch creates and prepares with the
//! platform binder (bound to the interface, or protected for the default one), and over TCP
//! through the same binder when the answer is truncated. Nothing is sent from a socket the binder
//! refused.

use std::net::SocketAddr;

use hickory_proto::rr::Name;
use socket2::{Domain, Protocol, Socket, Type};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, UdpSocket};
use tokio::time::{timeout_at, Instant};

use super::wire::{self, AnswerError, Outcome};
use super::{DnsError, Family, Via};
use crate::network::NetworkInterface;
use crate::platform::{bind_socket, SocketBinder};

/// Receive buffer for UDP answers: larger than the EDNS size we advertise, so a server that
/// sends more is still read whole (a datagram cut by the kernel would fail to parse).
const UDP_BUFFER: usize = 4096;
/// How many stray datagrams (another id or question, garbage) one attempt skips before it gives
/// up on the server. The socket is connected, so only the server itself can send them.
const MAX_STRAY: usize = 16;

/// How query sockets leave: bound through `binder` to `interface` (protected only when it is the
/// default interface), or left to the routing table when there is no binder or interface.
#[derive(Debug, Clone, Copy)]
pub struct QueryRoute<'a> {
    /// The platform binder of the dialer.
    pub binder: Option<&'a dyn SocketBinder>,
    /// The interface the queries must leave through.
    pub interface: Option<&'a NetworkInterface>,
    /// True when `interface` is the snapshot's default (protect, do not bind).
    pub is_default: bool,
}

impl QueryRoute<'_> {
    /// The [`Via`] for `server` over this route.
    pub fn via(&self, server: SocketAddr) -> Via {
        Via::Server { server, interface: self.interface.map(|i| i.name.clone()) }
    }
}

/// Asks `server` for `name`/`family` once (UDP, then TCP if the answer is truncated); the answer
/// or a [`DnsError::TimedOut`] comes by `deadline`.
pub async fn ask(
    route: &QueryRoute<'_>,
    server: SocketAddr,
    name: &Name,
    family: Family,
    deadline: Instant,
) -> Result<Outcome, DnsError> {
    let via = route.via(server);
    let started = Instant::now();
    let timed_out = |via: Via| DnsError::TimedOut { via, after: started.elapsed() };
    match timeout_at(deadline, ask_udp(route, &via, server, name, family)).await {
        Err(_) => Err(timed_out(via)),
        Ok(Ok(Outcome::Truncated)) => {
            match timeout_at(deadline, ask_tcp(route, &via, server, name, family)).await {
                Err(_) => Err(timed_out(via)),
                Ok(Ok(Outcome::Truncated)) => {
                    Err(DnsError::BadAnswer { via, reason: "truncated answer over TCP".into() })
                }
                Ok(other) => other,
            }
        }
        Ok(other) => other,
    }
}

/// A non-blocking socket for `server`'s family, prepared by the binder.
fn socket_for(
    route: &QueryRoute<'_>,
    via: &Via,
    server: SocketAddr,
    kind: Type,
    protocol: Protocol,
) -> Result<Socket, DnsError> {
    let io = |source| DnsError::Io { via: via.clone(), operation: "socket", source };
    #[cfg(any(target_os = "linux", target_os = "android"))]
    let socket = Socket::new(Domain::for_address(server), kind.nonblocking(), Some(protocol)).map_err(io)?;
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    let socket = {
        let socket = Socket::new(Domain::for_address(server), kind, Some(protocol)).map_err(io)?;
        socket.set_nonblocking(true).map_err(io)?;
        socket
    };
    if let (Some(binder), Some(interface)) = (route.binder, route.interface) {
        bind_socket(binder, &socket, interface, server, route.is_default)
            .map_err(|source| DnsError::Bind { via: via.clone(), source: Box::new(source) })?;
    }
    Ok(socket)
}

async fn ask_udp(
    route: &QueryRoute<'_>,
    via: &Via,
    server: SocketAddr,
    name: &Name,
    family: Family,
) -> Result<Outcome, DnsError> {
    let io = |operation, source| DnsError::Io { via: via.clone(), operation, source };
    let socket = socket_for(route, via, server, Type::DGRAM, Protocol::UDP)?;
    // Connected: the kernel drops datagrams from anyone but the server, and an ICMP port
    // unreachable comes back as ECONNREFUSED at once instead of a timeout.
    socket.connect(&server.into()).map_err(|e| io("connect", e))?;
    let socket = UdpSocket::from_std(socket.into()).map_err(|e| io("register", e))?;
    let (id, query) = wire::build_query(name, family).map_err(|reason| bad(via, reason))?;
    socket.send(&query).await.map_err(|e| io("send", e))?;
    let mut buffer = vec![0u8; UDP_BUFFER];
    for _ in 0..MAX_STRAY {
        let length = socket.recv(&mut buffer).await.map_err(|e| io("receive", e))?;
        match wire::read_answer(&buffer[..length], id, name, family) {
            Ok(outcome) => return Ok(outcome),
            Err(AnswerError::NotOurs(_)) => continue,
            Err(error) => return Err(answer_error(via, error)),
        }
    }
    Err(bad(via, format!("{MAX_STRAY} datagrams that do not answer the question")))
}

async fn ask_tcp(
    route: &QueryRoute<'_>,
    via: &Via,
    server: SocketAddr,
    name: &Name,
    family: Family,
) -> Result<Outcome, DnsError> {
    let io = |operation, source| DnsError::Io { via: via.clone(), operation, source };
    let socket = socket_for(route, via, server, Type::STREAM, Protocol::TCP)?;
    let socket = TcpSocket::from_std_stream(socket.into());
    let mut stream = socket.connect(server).await.map_err(|e| io("connect (TCP)", e))?;
    let (id, query) = wire::build_query(name, family).map_err(|reason| bad(via, reason))?;
    let length = u16::try_from(query.len()).map_err(|_| bad(via, "query too long".into()))?;
    let mut framed = Vec::with_capacity(query.len() + 2);
    framed.extend_from_slice(&length.to_be_bytes());
    framed.extend_from_slice(&query);
    stream.write_all(&framed).await.map_err(|e| io("send (TCP)", e))?;
    let length = stream.read_u16().await.map_err(|e| io("receive (TCP)", e))?;
    let mut answer = vec![0u8; usize::from(length)];
    stream.read_exact(&mut answer).await.map_err(|e| io("receive (TCP)", e))?;
    wire::read_answer(&answer, id, name, family).map_err(|error| answer_error(via, error))
}

fn bad(via: &Via, reason: String) -> DnsError {
    DnsError::BadAnswer { via: via.clone(), reason }
}

fn answer_error(via: &Via, error: AnswerError) -> DnsError {
    match error {
        AnswerError::NotOurs(reason) | AnswerError::Bad(reason) => bad(via, reason),
        AnswerError::Rcode(rcode) => DnsError::ServerError { via: via.clone(), rcode },
    }
}
