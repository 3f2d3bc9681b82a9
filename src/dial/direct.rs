//! The direct outbound: resolve, choose networks by strategy, race networks and address
//! families, bind every socket to its interface, connect.
//!
//! A dial has one deadline, `connect_timeout` after it starts: resolving the name (the bounded
//! [`SystemResolver`]) and every connect attempt end by it.
//!
//! Without a network state ([`DirectOutbound::with_networks`] not called) sockets are not bound:
//! the operating system's routing table chooses (desktop use). With one, every dial selects its
//! interfaces from the current snapshot with the connection's strategy (per-connection overrides
//! first, then the outbound's settings) and every socket passes the binder before `connect`.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::{TcpSocket, TcpStream, UdpSocket};

use super::race::{race_networks, ConnectFn, FallbackMemory, RaceNetwork, DEFAULT_FALLBACK_DELAY};
use super::system_resolver::SystemResolver;
use super::{AttemptError, BoxFuture, DialAttempt, DialError, DialedStream, DialedUdp, Outbound};
use crate::metadata::{Host, Metadata};
use crate::network::state::NetworkState;
use crate::network::strategy::{select_interfaces, NetworkStrategy, Selection};
use crate::network::DomainStrategy;
use crate::network::{Egress, NetworkInterface, NetworkType};
use crate::platform::{bind_socket, is_virtual_destination, SocketBinder, TcpSocketOptions};

/// Default deadline of a dial (name resolution and connect attempts).
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How the direct outbound dials when a connection does not say otherwise.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct DialSettings {
    /// Deadline of the whole dial: name resolution and every connect attempt (on every address
    /// and network) end within it. Default 5 s.
    pub connect_timeout: Duration,
    /// Network strategy. Default `default` (the default interface).
    pub network_strategy: NetworkStrategy,
    /// Preferred network types; empty = no preference. Default empty.
    pub network_type: Vec<NetworkType>,
    /// Fallback network types for the `fallback` strategy; empty = every other interface.
    pub fallback_network_type: Vec<NetworkType>,
    /// Delay before fallback networks and the second address family start. Default 300 ms.
    pub fallback_delay: Duration,
    /// Address-family policy. Default `prefer_ipv6` (RFC 8305).
    pub domain_strategy: DomainStrategy,
    /// Options set on every outbound TCP socket (no-delay, keepalive, user timeout).
    pub tcp: TcpSocketOptions,
}

impl Default for DialSettings {
    fn default() -> Self {
        DialSettings {
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            network_strategy: NetworkStrategy::Default,
            network_type: Vec::new(),
            fallback_network_type: Vec::new(),
            fallback_delay: DEFAULT_FALLBACK_DELAY,
            domain_strategy: DomainStrategy::default(),
            tcp: TcpSocketOptions::default(),
        }
    }
}

/// The interfaces a dial may use and how sockets are bound to them.
#[derive(Debug, Clone)]
struct Networks {
    state: Arc<NetworkState>,
    binder: Arc<dyn SocketBinder>,
}

/// Dials destinations directly, over the networks the strategy picks (see the module docs).
#[derive(Debug, Clone)]
pub struct DirectOutbound {
    settings: DialSettings,
    networks: Option<Networks>,
    memory: Arc<FallbackMemory>,
}

impl Default for DirectOutbound {
    fn default() -> Self {
        DirectOutbound::with_settings(DialSettings::default())
    }
}

/// One route an attempt can take: an interface of the snapshot, or the unbound system route.
#[derive(Debug, Clone)]
pub struct Route {
    /// The interface, `None` for the system route.
    pub interface: Option<NetworkInterface>,
    /// True for the snapshot's default interface (protected, not bound).
    pub is_default: bool,
}

impl RaceNetwork for Route {
    fn name(&self) -> Option<&str> {
        self.interface.as_ref().map(|i| i.name.as_str())
    }
}

impl Route {
    fn egress(&self) -> Egress {
        match &self.interface {
            Some(i) => Egress::through(i),
            None => Egress::default(),
        }
    }
}

/// A successful dial with what it took (see [`DirectOutbound::dial_with_report`]).
#[derive(Debug)]
#[non_exhaustive]
pub struct DialReport {
    /// The connected stream and its egress.
    pub stream: DialedStream,
    /// The address it connected to.
    pub address: SocketAddr,
    /// True when a fallback network won.
    pub was_fallback: bool,
    /// Attempts that failed before the winner connected.
    pub failed: Vec<DialAttempt>,
    /// Routes still trying when the winner connected (names, time spent): cancelled.
    pub abandoned: Vec<(Option<String>, Duration)>,
}

/// The strategy values in force for one connection: its own overrides, else the outbound's.
struct Effective {
    connect_timeout: Duration,
    strategy: NetworkStrategy,
    network_type: Vec<NetworkType>,
    fallback_network_type: Vec<NetworkType>,
    fallback_delay: Duration,
    domain_strategy: DomainStrategy,
}

impl DirectOutbound {
    /// A direct outbound using the system route, with default settings except the connect timeout.
    pub fn new(connect_timeout: Duration) -> DirectOutbound {
        DirectOutbound::with_settings(DialSettings { connect_timeout, ..DialSettings::default() })
    }

    /// A direct outbound using the system route with these settings.
    pub fn with_settings(settings: DialSettings) -> DirectOutbound {
        DirectOutbound { settings, networks: None, memory: Arc::new(FallbackMemory::default()) }
    }

    /// Makes this outbound choose interfaces from `state` (shared with the manager, which the
    /// host updates) and bind every socket with `binder`.
    pub fn with_networks(
        mut self,
        state: Arc<NetworkState>,
        binder: Arc<dyn SocketBinder>,
    ) -> DirectOutbound {
        self.networks = Some(Networks { state, binder });
        self
    }

    /// The settings connections use unless they override them.
    pub fn settings(&self) -> &DialSettings {
        &self.settings
    }

    fn effective(&self, metadata: &Metadata) -> Effective {
        let o = &metadata.options;
        let s = &self.settings;
        Effective {
            connect_timeout: o.connect_timeout.unwrap_or(s.connect_timeout),
            strategy: o.network_strategy.unwrap_or(s.network_strategy),
            network_type: o.network_type.clone().unwrap_or_else(|| s.network_type.clone()),
            fallback_network_type: o
                .fallback_network_type
                .clone()
                .unwrap_or_else(|| s.fallback_network_type.clone()),
            fallback_delay: o.fallback_delay.unwrap_or(s.fallback_delay),
            domain_strategy: o.domain_strategy.unwrap_or(s.domain_strategy),
        }
    }

    /// The primary and fallback routes for a connection. Destinations that never leave the host
    /// (loopback, multicast) take the system route, unless the networks themselves live on
    /// loopback (the simulated binder).
    fn routes(
        &self,
        metadata: &Metadata,
        e: &Effective,
        addresses: &[SocketAddr],
    ) -> Result<(Vec<Route>, Vec<Route>), DialError> {
        let system = || Ok((vec![Route { interface: None, is_default: false }], Vec::new()));
        let Some(networks) = &self.networks else { return system() };
        if !networks.binder.networks_on_loopback() && addresses.iter().all(|a| is_virtual_destination(a.ip()))
        {
            return system();
        }
        let snapshot = networks.state.snapshot();
        let selection =
            select_interfaces(&snapshot, e.strategy, &e.network_type, &e.fallback_network_type).map_err(
                |source| DialError::Network { destination: metadata.destination.to_string(), source },
            )?;
        let to_routes = |list: &[NetworkInterface], selection: &Selection| -> Vec<Route> {
            list.iter()
                .map(|i| Route { interface: Some(i.clone()), is_default: selection.is_default(i) })
                .collect()
        };
        Ok((to_routes(&selection.primary, &selection), to_routes(&selection.fallback, &selection)))
    }

    /// Dials like [`Outbound::dial_tcp`] and also reports the winning address and route and every
    /// attempt that failed before it (what `netswitch dial` prints).
    pub async fn dial_with_report(&self, metadata: &Metadata) -> Result<DialReport, DialError> {
        let e = self.effective(metadata);
        let deadline = deadline_after(e.connect_timeout);
        let addresses = ordered_addresses(metadata, e.domain_strategy, deadline).await?;
        let (primaries, fallbacks) = self.routes(metadata, &e, &addresses)?;
        let connect = self.tcp_connector(deadline);
        let memory = self.memory.clone();
        match race_networks(primaries, fallbacks, addresses, connect, e.fallback_delay, memory).await {
            Ok(win) => {
                let egress = win.network.egress();
                tracing::debug!(
                    destination = %metadata.destination, address = %win.address, via = %egress,
                    fallback = win.was_fallback, failed_attempts = win.failed.len(), "connected"
                );
                Ok(DialReport {
                    stream: DialedStream::plain(win.stream, egress),
                    address: win.address,
                    was_fallback: win.was_fallback,
                    failed: win.failed,
                    abandoned: win.abandoned,
                })
            }
            Err(attempts) => {
                Err(DialError::Connect { destination: metadata.destination.to_string(), attempts })
            }
        }
    }

    /// Connects attempts that all end by `deadline` (an attempt reports the time it had left).
    fn tcp_connector(&self, deadline: tokio::time::Instant) -> ConnectFn<Route> {
        let binder = self.networks.as_ref().map(|n| n.binder.clone());
        let options = self.settings.tcp;
        Arc::new(move |route: &Route, address: SocketAddr| {
            let prepared = prepare_tcp_socket(&options, binder.as_deref(), route, address);
            Box::pin(async move {
                let socket = prepared?;
                let budget = deadline.saturating_duration_since(tokio::time::Instant::now());
                match tokio::time::timeout_at(deadline, socket.connect(address)).await {
                    Ok(result) => Ok(result?),
                    Err(_) => Err(AttemptError::TimedOut(budget)),
                }
            })
        })
    }

    async fn open_udp_socket(&self, metadata: &Metadata) -> Result<DialedUdp, DialError> {
        let e = self.effective(metadata);
        let addresses =
            ordered_addresses(metadata, e.domain_strategy, deadline_after(e.connect_timeout)).await?;
        let (primaries, fallbacks) = self.routes(metadata, &e, &addresses)?;
        let binder = self.networks.as_ref().map(|n| n.binder.clone());
        let connect = metadata.options.udp_connect;
        let mut attempts = Vec::new();
        // UDP sockets cannot time out while binding: try routes in order, addresses in order.
        for route in primaries.iter().chain(&fallbacks) {
            for &address in &addresses {
                let started = Instant::now();
                match open_udp_on(binder.as_deref(), route, address, connect) {
                    Ok(socket) => {
                        return Ok(DialedUdp {
                            socket,
                            connected_to: connect.then_some(address),
                            egress: route.egress(),
                        })
                    }
                    Err(error) => attempts.push(DialAttempt {
                        address,
                        interface: route.name().map(str::to_string),
                        elapsed: started.elapsed(),
                        error,
                    }),
                }
            }
        }
        Err(DialError::Connect { destination: metadata.destination.to_string(), attempts })
    }
}

impl Outbound for DirectOutbound {
    fn dial_tcp<'a>(&'a self, metadata: &'a Metadata) -> BoxFuture<'a, Result<DialedStream, DialError>> {
        Box::pin(async move { self.dial_with_report(metadata).await.map(|report| report.stream) })
    }

    fn open_udp<'a>(&'a self, metadata: &'a Metadata) -> BoxFuture<'a, Result<DialedUdp, DialError>> {
        Box::pin(self.open_udp_socket(metadata))
    }
}

/// A non-blocking, close-on-exec socket for `address`'s family (one syscall where the platform
/// takes `SOCK_NONBLOCK`; socket2 always sets close-on-exec).
fn nonblocking_socket(address: SocketAddr, kind: Type, protocol: Protocol) -> std::io::Result<Socket> {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    return Socket::new(Domain::for_address(address), kind.nonblocking(), Some(protocol));
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    {
        let socket = Socket::new(Domain::for_address(address), kind, Some(protocol))?;
        socket.set_nonblocking(true)?;
        Ok(socket)
    }
}

/// Creates a TCP socket for `address`, applies the options and binds it to the route.
fn prepare_tcp_socket(
    options: &TcpSocketOptions,
    binder: Option<&dyn SocketBinder>,
    route: &Route,
    address: SocketAddr,
) -> Result<TcpSocket, AttemptError> {
    let socket = nonblocking_socket(address, Type::STREAM, Protocol::TCP)?;
    options.apply(&socket)?;
    if let (Some(binder), Some(interface)) = (binder, &route.interface) {
        bind_socket(binder, &socket, interface, address, route.is_default)?;
    }
    Ok(TcpSocket::from_std_stream(std::net::TcpStream::from(socket)))
}

/// Creates a UDP socket for `address`'s family, binds it to the route, and connects it when asked.
fn open_udp_on(
    binder: Option<&dyn SocketBinder>,
    route: &Route,
    address: SocketAddr,
    connect: bool,
) -> Result<UdpSocket, AttemptError> {
    let socket = nonblocking_socket(address, Type::DGRAM, Protocol::UDP)?;
    if let (Some(binder), Some(interface)) = (binder, &route.interface) {
        bind_socket(binder, &socket, interface, address, route.is_default)?;
    }
    if connect {
        socket.connect(&address.into())?;
    }
    Ok(UdpSocket::from_std(std::net::UdpSocket::from(socket))?)
}

/// `timeout` from now; a timeout too large for the clock (`"500000000000y"`) is a year.
fn deadline_after(timeout: Duration) -> tokio::time::Instant {
    const YEAR: Duration = Duration::from_secs(365 * 24 * 3600);
    let now = tokio::time::Instant::now();
    now.checked_add(timeout).unwrap_or(now + YEAR)
}

/// The addresses to try, filtered and ordered by the domain strategy, resolved by `deadline`.
async fn ordered_addresses(
    metadata: &Metadata,
    strategy: DomainStrategy,
    deadline: tokio::time::Instant,
) -> Result<Vec<SocketAddr>, DialError> {
    let resolved = resolve(metadata, deadline).await?;
    let ordered = strategy.order(&resolved);
    if ordered.is_empty() {
        return Err(DialError::NoAllowedAddress { destination: metadata.destination.to_string(), strategy });
    }
    Ok(ordered)
}

/// The addresses to try for a connection, in the resolver's order: the pre-resolved ones, the IP
/// destination, or what the shared [`SystemResolver`] answers for the domain by `deadline`
/// (duplicates removed; `TimedOut` when it has not answered by then).
pub async fn resolve(
    metadata: &Metadata,
    deadline: tokio::time::Instant,
) -> Result<Vec<SocketAddr>, DialError> {
    let port = metadata.destination.port;
    if !metadata.resolved_addresses.is_empty() {
        return Ok(metadata.resolved_addresses.iter().map(|ip| SocketAddr::new(*ip, port)).collect());
    }
    match &metadata.destination.host {
        Host::Ip(ip) => Ok(vec![SocketAddr::new(*ip, port)]),
        Host::Domain(name) => {
            let addresses = SystemResolver::shared()
                .lookup(name, port, deadline)
                .await
                .map_err(|source| DialError::Resolve { host: name.clone(), source })?;
            if addresses.is_empty() {
                return Err(DialError::NoAddress { host: name.clone() });
            }
            Ok(addresses)
        }
    }
}

/// Connects one unbound TCP socket to `address` within `timeout`, with `TCP_NODELAY` set.
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
