//! The direct outbound: choose networks by strategy, resolve the name over each chosen network,
//! race networks and address families, bind every socket to its interface, connect.
//!
//! A dial has one deadline, `connect_timeout` after it starts: every lookup (over each network)
//! and every connect attempt (on every address and network) end by it.
//!
//! Without a network state ([`DirectOutbound::with_networks`] not called) sockets are not bound:
//! the operating system's routing table chooses and names are resolved by the system resolver
//! (desktop use). With one, every dial selects its interfaces from the current snapshot with the
//! connection's strategy (per-connection overrides first, then the outbound's settings), each
//! racing network resolves the name with its own resolver ([`Resolvers::for_route`]: its DNS
//! servers over sockets bound to it, the host's resolver, or the system resolver as last resort),
//! and every socket passes the binder before `connect`. Pre-resolved addresses in the metadata
//! and IP destinations are dialed without a lookup.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use socket2::{Protocol, Type};
use tokio::net::{TcpSocket, TcpStream};

use super::icmp::DialedIcmp;
use super::race::{
    race_networks, ConnectFn, FallbackMemory, LookupRecord, ResolveFn, Targets, Timing,
    DEFAULT_CONNECTION_ATTEMPT_DELAY, DEFAULT_FALLBACK_DELAY, RESOLUTION_DELAY,
};
pub use super::route::{families_of, Route};
use super::route::{nonblocking_socket, Plan};
use super::{AttemptError, BoxFuture, DialAttempt, DialError, DialedStream, DialedUdp, Outbound};
use crate::dns::lookup::{is_localhost, most_telling};
use crate::dns::{Resolve, Resolvers};
use crate::metadata::{Host, Metadata};
use crate::network::state::NetworkState;
use crate::network::strategy::{select_interfaces, NetworkStrategy, Selection};
use crate::network::DomainStrategy;
use crate::network::{NetworkInterface, NetworkType};
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
    /// Delay before fallback networks join the race. Default 300 ms.
    pub fallback_delay: Duration,
    /// Delay between two connection attempts on one network (RFC 8305 §5: the next address,
    /// of the other family first, starts after it, or at once when an attempt fails).
    /// Default 250 ms.
    pub connection_attempt_delay: Duration,
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
            connection_attempt_delay: DEFAULT_CONNECTION_ATTEMPT_DELAY,
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
    dns: Arc<Resolvers>,
}

impl Default for DirectOutbound {
    fn default() -> Self {
        DirectOutbound::with_settings(DialSettings::default())
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
    /// Attempts (connects and lookups) that failed before the winner connected.
    pub failed: Vec<DialAttempt>,
    /// Routes still trying when the winner connected (names, time spent): cancelled.
    pub abandoned: Vec<(Option<String>, Duration)>,
    /// The lookups of the networks that finished: per family, who answered and when.
    pub lookups: Vec<LookupRecord>,
}

/// The strategy values in force for one connection: its own overrides, else the outbound's.
pub(crate) struct Effective {
    pub(crate) connect_timeout: Duration,
    strategy: NetworkStrategy,
    network_type: Vec<NetworkType>,
    fallback_network_type: Vec<NetworkType>,
    pub(crate) fallback_delay: Duration,
    pub(crate) domain_strategy: DomainStrategy,
}

impl DirectOutbound {
    /// A direct outbound using the system route, with default settings except the connect timeout.
    pub fn new(connect_timeout: Duration) -> DirectOutbound {
        DirectOutbound::with_settings(DialSettings { connect_timeout, ..DialSettings::default() })
    }

    /// A direct outbound using the system route with these settings and default resolvers.
    pub fn with_settings(settings: DialSettings) -> DirectOutbound {
        DirectOutbound {
            settings,
            networks: None,
            memory: Arc::new(FallbackMemory::default()),
            dns: Arc::new(Resolvers::default()),
        }
    }

    /// Makes this outbound resolve names with `dns` (give the same one to
    /// [`crate::ConnectionManager::with_dns`], so that network changes flush its cache).
    pub fn with_dns(mut self, dns: Arc<Resolvers>) -> DirectOutbound {
        self.dns = dns;
        self
    }

    /// The resolvers this outbound uses.
    pub fn dns(&self) -> &Arc<Resolvers> {
        &self.dns
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

    pub(crate) fn effective(&self, metadata: &Metadata) -> Effective {
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

    /// What to dial: the pre-resolved addresses or the IP destination (filtered and ordered by
    /// the domain strategy), else the domain to resolve over each network.
    pub(crate) fn plan(&self, metadata: &Metadata, strategy: DomainStrategy) -> Result<Plan, DialError> {
        let port = metadata.destination.port;
        let fixed: Vec<SocketAddr> = match &metadata.destination.host {
            _ if !metadata.resolved_addresses.is_empty() => {
                metadata.resolved_addresses.iter().map(|ip| SocketAddr::new(*ip, port)).collect()
            }
            Host::Ip(ip) => vec![SocketAddr::new(*ip, port)],
            Host::Domain(name) => {
                return Ok(Plan::Name { name: name.clone(), port, families: families_of(strategy) })
            }
        };
        let ordered = strategy.order(&fixed);
        if ordered.is_empty() {
            return Err(DialError::NoAllowedAddress {
                destination: metadata.destination.to_string(),
                strategy,
            });
        }
        Ok(Plan::Addresses(ordered))
    }

    /// The primary and fallback routes for a connection (an interface in both sets of the
    /// selection only among the primaries). Destinations that never leave the host
    /// (loopback, multicast, `localhost`) take the system route, unless the networks themselves
    /// live on loopback (the simulated binder).
    pub(crate) fn routes(
        &self,
        metadata: &Metadata,
        e: &Effective,
        plan: &Plan,
    ) -> Result<(Vec<Route>, Vec<Route>), DialError> {
        let system = || Ok((vec![Route { interface: None, is_default: false }], Vec::new()));
        let Some(networks) = &self.networks else { return system() };
        let stays_on_host = match plan {
            Plan::Addresses(addresses) => addresses.iter().all(|a| is_virtual_destination(a.ip())),
            Plan::Name { name, .. } => is_localhost(name),
        };
        if !networks.binder.networks_on_loopback() && stays_on_host {
            return system();
        }
        let snapshot = networks.state.snapshot();
        self.dns.sync(&snapshot);
        let selection =
            select_interfaces(&snapshot, e.strategy, &e.network_type, &e.fallback_network_type).map_err(
                |source| DialError::Network { destination: metadata.destination.to_string(), source },
            )?;
        let to_routes = |list: &[NetworkInterface], selection: &Selection| -> Vec<Route> {
            list.iter()
                .map(|i| Route { interface: Some(i.clone()), is_default: selection.is_default(i) })
                .collect()
        };
        // The table lets fallback types overlap the preferred ones: an interface already racing
        // as a primary is not started a second time when the fallback delay passes.
        let fallback: Vec<NetworkInterface> = selection
            .fallback
            .iter()
            .filter(|f| !selection.primary.iter().any(|p| p.index == f.index))
            .cloned()
            .collect();
        Ok((to_routes(&selection.primary, &selection), to_routes(&fallback, &selection)))
    }

    /// The resolver of `route`.
    pub fn resolver_for(&self, route: &Route) -> Arc<dyn Resolve> {
        let binder = self.networks.as_ref().map(|n| n.binder.clone());
        self.dns.for_route(route.interface.as_ref(), route.is_default, binder.as_ref())
    }

    /// The binder every socket passes (`None`: the system route, nothing is bound).
    pub(crate) fn binder(&self) -> Option<&Arc<dyn SocketBinder>> {
        self.networks.as_ref().map(|n| &n.binder)
    }

    fn resolve_fn(&self) -> ResolveFn<Route> {
        let (dns, binder) = (self.dns.clone(), self.networks.as_ref().map(|n| n.binder.clone()));
        Arc::new(move |route: &Route| {
            dns.for_route(route.interface.as_ref(), route.is_default, binder.as_ref())
        })
    }

    /// The error for a dial whose every attempt failed: the lookup's error when no network got
    /// an address to try, else every attempt.
    pub(crate) fn failure(metadata: &Metadata, attempts: Vec<DialAttempt>) -> DialError {
        let host = match &metadata.destination.host {
            Host::Domain(name) => name.clone(),
            Host::Ip(ip) => ip.to_string(),
        };
        if !attempts.is_empty() && attempts.iter().all(|a| matches!(a.error, AttemptError::Resolve(_))) {
            let errors = attempts
                .into_iter()
                .filter_map(|a| match a.error {
                    AttemptError::Resolve(error) => Some(*error),
                    _ => None,
                })
                .collect();
            return DialError::Resolve { host, source: Box::new(most_telling(errors)) };
        }
        DialError::Connect { destination: metadata.destination.to_string(), attempts }
    }

    /// Dials like [`Outbound::dial_tcp`] and also reports the winning address and route, every
    /// attempt and lookup that failed before it, and who answered the lookups (what `netswitch
    /// dial` prints).
    pub async fn dial_with_report(&self, metadata: &Metadata) -> Result<DialReport, DialError> {
        let e = self.effective(metadata);
        let deadline = crate::deadline::from_now(e.connect_timeout);
        let plan = self.plan(metadata, e.domain_strategy)?;
        let (primaries, fallbacks) = self.routes(metadata, &e, &plan)?;
        let targets = match plan {
            Plan::Addresses(addresses) => Targets::Addresses(addresses.into()),
            Plan::Name { name, port, families } => Targets::Name {
                name: name.into(),
                port,
                families: families.into(),
                resolver: self.resolve_fn(),
            },
        };
        let timing = Timing {
            fallback_delay: e.fallback_delay,
            attempt_delay: self.settings.connection_attempt_delay,
            resolution_delay: RESOLUTION_DELAY,
            deadline,
        };
        let connect = self.tcp_connector(deadline);
        let memory = self.memory.clone();
        match race_networks(primaries, fallbacks, targets, connect, timing, memory).await {
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
                    lookups: win.lookups,
                })
            }
            Err(attempts) => Err(DirectOutbound::failure(metadata, attempts)),
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
}

impl Outbound for DirectOutbound {
    fn dial_tcp<'a>(&'a self, metadata: &'a Metadata) -> BoxFuture<'a, Result<DialedStream, DialError>> {
        Box::pin(async move { self.dial_with_report(metadata).await.map(|report| report.stream) })
    }

    fn open_udp<'a>(&'a self, metadata: &'a Metadata) -> BoxFuture<'a, Result<DialedUdp, DialError>> {
        Box::pin(async move {
            let e = self.effective(metadata);
            let deadline = crate::deadline::from_now(e.connect_timeout);
            let plan = self.plan(metadata, e.domain_strategy)?;
            let (primaries, fallbacks) = self.routes(metadata, &e, &plan)?;
            let routes: Vec<Route> = primaries.into_iter().chain(fallbacks).collect();
            let binder = self.binder().cloned();
            let connect = metadata.options.udp_connect;
            super::udp::open_udp(
                &plan,
                &routes,
                &|route| self.resolver_for(route),
                binder.as_deref(),
                connect,
                deadline,
            )
            .await
            .map_err(|attempts| DirectOutbound::failure(metadata, attempts))
        })
    }

    fn open_icmp<'a>(&'a self, metadata: &'a Metadata) -> BoxFuture<'a, Result<DialedIcmp, DialError>> {
        Box::pin(async move {
            let e = self.effective(metadata);
            let plan = self.plan(metadata, e.domain_strategy)?;
            let Plan::Addresses(addresses) = &plan else {
                return Err(DialError::Unsupported {
                    what: "ICMP echo to a name",
                    destination: metadata.destination.to_string(),
                });
            };
            let Some(destination) = addresses.first().map(SocketAddr::ip) else {
                return Err(DirectOutbound::failure(metadata, Vec::new()));
            };
            let (primaries, fallbacks) = self.routes(metadata, &e, &plan)?;
            let routes: Vec<Route> = primaries.into_iter().chain(fallbacks).collect();
            super::icmp::open_icmp(&routes, self.binder().map(|b| &**b), destination)
                .map_err(|attempts| DirectOutbound::failure(metadata, attempts))
        })
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
