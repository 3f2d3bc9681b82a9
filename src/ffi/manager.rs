//! The `ConnectionManager` object the host creates: config in, platform callbacks bridged to
//! the core's binder, connections, counters, SOCKS servers and event subscriptions out.

use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::Arc;

use tokio::runtime::Runtime;

use super::callbacks::{EventListener, LoopbackOffering, PlatformBinder, PlatformInterface};
use super::config::{ConnectionOptions, NetswitchConfig};
use super::dns::{PlatformDns, ResolveResult};
use super::error::NetswitchError;
use super::events::{Event, EventHub, Subscription};
use super::network::{InterfaceChange, InterfaceSnapshot, NetworkChange};
use super::socks::{SocksServer, SocksServers};
use super::traffic::TrafficTotals;
use super::tun::{TunHandle, TunOptions, Tunnels};
use super::types::{ClosedConnection, ConnectionInfo, NetworkTraffic, SocksUser};
use crate::dial::Outbound;
use crate::inbound::socks::SocksSettings;
use crate::metadata::{Destination, Metadata};
use crate::platform::{os_binder, SocketBinder};
use crate::stack::{BuildError, Netswitch};
use crate::{relay, Inbound};

/// Relays connections for the host app: dials each destination over the network the strategy
/// picks (offering every socket to the [`PlatformInterface`] first), relays both ways, tracks
/// every live connection, runs SOCKS servers, and tells every subscribed [`EventListener`].
///
/// Thread-safe; every method may be called from any thread. After `shutdown()` every
/// connection, SOCKS server, tunnel and subscription is ended and calls that start work fail with
/// `ShutDown`. Destroying the object (Kotlin `close()`, or garbage collection; Swift: the last
/// reference going away) shuts it down too; Kotlin then throws `IllegalStateException` ("object
/// has already been destroyed") from any later call on the destroyed object, before netswitch
/// is reached.
#[derive(uniffi::Object)]
pub struct ConnectionManager {
    /// The core manager, its strategy-aware outbound and the config's SOCKS settings.
    netswitch: Netswitch,
    runtime: &'static Runtime,
    servers: Arc<SocksServers>,
    tunnels: Arc<Tunnels>,
    events: Arc<EventHub>,
    traffic: Arc<TrafficTotals>,
}

#[uniffi::export]
impl ConnectionManager {
    /// Validates `config` (`InvalidConfig` names the bad field), starts logging at its level
    /// unless logging already runs, and builds a manager. `platform` is offered every outbound
    /// socket before it connects, to protect (Android `VpnService.protect`) or bind it. On
    /// Android it is required: `None` fails with `InvalidArgument` (argument `platform`), since
    /// unprotected sockets would loop back into the VPN. Elsewhere `None` means netswitch binds
    /// sockets itself (`IP_BOUND_IF` on Apple, `SO_BINDTOIFINDEX` on Linux). Events: `subscribe`.
    /// Dialing waits for the first `update_interfaces` (until then dials fail with `NoNetwork`).
    #[uniffi::constructor]
    pub fn new(
        config: NetswitchConfig,
        platform: Option<Arc<dyn PlatformInterface>>,
    ) -> Result<Arc<ConnectionManager>, NetswitchError> {
        let core_config = config.to_core()?;
        #[cfg(target_os = "android")]
        if platform.is_none() {
            return Err(NetswitchError::InvalidArgument {
                argument: "platform".into(),
                reason: "is required on Android: without VpnService.protect every socket netswitch \
                         opens would be routed back into the VPN"
                    .into(),
            });
        }
        let _ = crate::logging::init_logging(core_config.log.level);
        let strategy = core_config.network_strategy;
        let runtime = super::runtime::runtime(config.lightweight_runtime)?;
        let traffic = Arc::new(TrafficTotals::default());
        let events = Arc::new(EventHub::default());
        let mut os: Arc<dyn SocketBinder> = os_binder();
        if config.offer_loopback_sockets {
            os = Arc::new(LoopbackOffering(os));
        }
        let mut builder = Netswitch::builder(core_config)
            .runtime(runtime.handle().clone())
            .binder(os)
            .close_observer(close_observer(traffic.clone(), events.clone()))
            .open_observer(open_observer(events.clone()))
            .network_observer(network_observer(events.clone()));
        if let Some(platform) = platform {
            builder = builder.host_dns(Arc::new(PlatformDns { platform: platform.clone() }));
            builder = builder.host_binder(Arc::new(PlatformBinder { platform }));
        }
        let netswitch = builder.build().map_err(build_error)?;
        tracing::info!(
            lightweight = config.lightweight_runtime,
            strategy = %strategy,
            "netswitch connection manager created"
        );
        Ok(Arc::new(ConnectionManager {
            netswitch,
            runtime,
            servers: Arc::new(SocksServers::default()),
            tunnels: Arc::new(Tunnels::default()),
            events,
            traffic,
        }))
    }

    /// Starts delivering every event — connections opened and closed, network changes, log
    /// records at the current level — to `listener`, on a thread of its own (see
    /// [`EventListener`]). Any number of subscriptions may be live; each gets every event. The
    /// subscription lasts until `Subscription.cancel()` or this manager's shutdown, whether or
    /// not the handle is kept. Errors: `ShutDown`; `Io` when no thread can be started.
    pub fn subscribe(&self, listener: Arc<dyn EventListener>) -> Result<Arc<Subscription>, NetswitchError> {
        self.check_running()?;
        self.events.subscribe(listener)
    }

    /// Replaces the interface list (call it on every network change). Closes, at once, every
    /// connection whose interface went away, whose local address went away (an interface
    /// readdressed under the same name), or that used the old default when the default changed;
    /// an empty list pauses dialing and closes nothing. Subscribers get a `NetworkChange` unless
    /// the snapshot is identical. `InvalidArgument` (argument
    /// `snapshot`) for duplicate names/indexes, index 0, a bad address, or an unknown default.
    pub fn update_interfaces(&self, snapshot: InterfaceSnapshot) -> Result<InterfaceChange, NetswitchError> {
        self.check_running()?;
        let snapshot = snapshot.to_core()?;
        Ok(InterfaceChange::from(&self.core().update_interfaces(snapshot)))
    }

    /// Starts a SOCKS5 server on `listen` (`"127.0.0.1:0"` picks a free port). `users`: `None`
    /// (the default) generates one random user from the operating system's random generator —
    /// read it back with `SocksServer.credentials()` and give it to the client, so other apps on
    /// the device cannot use the proxy; a list requires one of those users; an empty list
    /// requires no authentication (then anything on the device that can reach `listen` may use
    /// the proxy). The manager owns the server until `SocksServer.stop()` or `shutdown()`;
    /// dropping the handle does not stop it. Errors: `InvalidArgument` (`listen`, `users`), `Io`
    /// naming the address, `ShutDown`, `Internal` when the random generator fails.
    #[uniffi::method(default(users = None))]
    pub async fn start_socks(
        &self,
        listen: String,
        users: Option<Vec<SocksUser>>,
    ) -> Result<Arc<SocksServer>, NetswitchError> {
        self.check_running()?;
        let address: SocketAddr = listen.parse().map_err(|_| NetswitchError::InvalidArgument {
            argument: "listen".into(),
            reason: format!("{listen:?} is not an ip:port address"),
        })?;
        let users = match users {
            Some(users) => users,
            None => vec![super::socks::generate_user()?],
        };
        let credentials = users.first().cloned();
        let users = users
            .into_iter()
            .map(|u| crate::inbound::socks::SocksUser { username: u.username, password: u.password })
            .collect();
        let settings = SocksSettings { listen: address, users, ..self.netswitch.socks_settings().clone() };
        let netswitch = self.netswitch.clone();
        let task = self.runtime.spawn(async move { netswitch.start_socks(settings).await });
        let server = task
            .await
            .map_err(|e| NetswitchError::Internal { reason: format!("SOCKS start task: {e}") })?
            .map_err(|e| super::socks::start_error(address, e))?;
        self.servers.adopt(server, credentials)
    }

    /// Takes ownership of `fd`, a connected stream socket (one end of a socketpair, an accepted
    /// TCP socket), dials `destination` (`host:port`) and relays between them. Returns the
    /// connection id at once; the dial's outcome arrives as a close event if it fails.
    /// `InvalidArgument` (`fd`: not an open, connected stream socket, or one netswitch already
    /// relays because it was handed over before; `destination`; `options.connect_timeout_ms`,
    /// `options.fallback_delay_ms`) and `ShutDown` leave the fd with the caller; after any other
    /// error netswitch has closed it.
    ///
    /// (Rust code cannot call this raw-int form: its `relay_tcp_fd` takes an `OwnedFd`.)
    #[uniffi::method(name = "relay_tcp_fd")]
    pub(super) fn relay_tcp_raw_fd(
        &self,
        fd: i32,
        destination: String,
        options: Option<ConnectionOptions>,
    ) -> Result<u64, NetswitchError> {
        self.check_running()?;
        parse_destination(&destination)?;
        if let Some(options) = &options {
            options.validate()?;
        }
        super::fd::check_connected_stream_socket(fd)?;
        super::fd::claim_socket(fd)?;
        // SAFETY: the FFI contract of this method: the host hands over `fd`, an open connected
        // stream socket (checked above) that nothing else will use or close from now on, and
        // that netswitch does not hold already (`claim_socket`).
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        self.relay_tcp_fd(fd, &destination, options)
    }

    /// Starts a packet tunnel on `fd`, the VPN's TUN device: every TCP connection and UDP flow
    /// the device sends into it goes through this manager (strategy, binding, tracker, events)
    /// like a SOCKS or handed-over connection. `options` (see [`TunOptions`]) must carry the
    /// device's own addresses. Returns the handle at once; the manager owns the tunnel until
    /// `TunHandle.stop()` or `shutdown()`.
    ///
    /// **The fd.** netswitch takes `fd` over: it reads and writes it and closes it when the
    /// tunnel stops (`stop()`, `shutdown()`, the manager destroyed). The host must not read,
    /// write or close it afterwards. On Android pass `ParcelFileDescriptor.detachFd()` (after it
    /// the `ParcelFileDescriptor` no longer owns the descriptor); never pass `pfd.fd` of a
    /// `ParcelFileDescriptor` the host keeps and later closes — that would close a descriptor
    /// netswitch still uses, or one already reused for something else. On Apple it must be a
    /// utun fd: pass `find_utun_fd()`'s answer (a duplicate), never the system's descriptor. Errors: `InvalidArgument` with argument `fd` (negative, not open, not a character
    /// device or datagram socket, already the device of a running tunnel) leaves the fd with the
    /// caller; after any other error netswitch has already closed it: `InvalidArgument` naming
    /// the option (`options.ipv4`, `options.mtu`…), `Io` (the device could not be registered,
    /// the listener on the tunnel address could not be bound), `ShutDown`.
    ///
    /// **No loops.** Outbound sockets must not be routed back into the tunnel: on Android
    /// `PlatformInterface.bind_socket` protects every socket (`VpnService.protect`); elsewhere it
    /// must bind it (the `Protect` action included) to a physical interface.
    #[uniffi::method(name = "start_tun")]
    pub(super) fn start_tun_raw_fd(
        &self,
        fd: i32,
        options: TunOptions,
    ) -> Result<Arc<TunHandle>, NetswitchError> {
        super::tun::check_tun_fd(fd)?;
        super::tun::check_not_held(fd)?;
        // SAFETY: the FFI contract of this method: the host hands over `fd`, an open descriptor
        // (checked above, and no running tunnel's) that nothing else will use or close from now on.
        let owned = unsafe { OwnedFd::from_raw_fd(fd) };
        let handle = self.start_tun(owned, options)?;
        super::tun::hold(fd, &handle);
        Ok(handle)
    }

    /// `start_tun` with a decision hook: `decider` is asked about each TCP connection and each
    /// new UDP source before it is dialed (block it, pick its networks, TLS fragmentation; see
    /// `TunFlowDecider`), within `options.decision_deadline_ms`. Same rules and errors as
    /// `start_tun`.
    #[uniffi::method(name = "start_tun_with_decider")]
    pub(super) fn start_tun_with_decider_raw_fd(
        &self,
        fd: i32,
        options: TunOptions,
        decider: Arc<dyn super::tun_decider::TunFlowDecider>,
    ) -> Result<Arc<TunHandle>, NetswitchError> {
        super::tun::check_tun_fd(fd)?;
        super::tun::check_not_held(fd)?;
        // SAFETY: as in `start_tun`: the host hands over `fd`, open (checked above), no running
        // tunnel's, and unused by anything else from now on.
        let owned = unsafe { OwnedFd::from_raw_fd(fd) };
        let handle = self.start_tun_deciding(owned, options, Some(decider))?;
        super::tun::hold(fd, &handle);
        Ok(handle)
    }

    /// Resolves `name` (a domain or an IP literal) as a dial with `options` would, without
    /// connecting: over the networks the strategy picks, each with its own resolver (its DNS
    /// servers over sockets bound to it, the host's resolver, or the system resolver as the last
    /// resort; see `dns_resolver`), by `connect_timeout_ms`. Returns the addresses, the
    /// interface whose resolver answered and who answered each family. Errors: `NameNotFound`
    /// (NXDOMAIN, no address of the families allowed, an invalid name), `ResolveFailed`
    /// (timeouts, server errors; names the DNS server and the interface), `NoNetwork`,
    /// `ShutDown`.
    #[uniffi::method(default(options = None))]
    pub async fn resolve(
        &self,
        name: String,
        options: Option<ConnectionOptions>,
    ) -> Result<ResolveResult, NetswitchError> {
        self.check_running()?;
        let options = options.unwrap_or_default();
        options.validate()?;
        let options = options.to_core();
        let outbound = self.netswitch.outbound().clone();
        let task = self.runtime.spawn(async move { outbound.lookup_name(&name, &options).await });
        let report = task
            .await
            .map_err(|e| NetswitchError::Internal { reason: format!("resolve task: {e}") })?
            .map_err(|e| NetswitchError::from(&e))?;
        Ok(ResolveResult::from(&report))
    }

    /// Snapshots of every live connection (any order).
    pub fn connections(&self) -> Vec<ConnectionInfo> {
        self.core().list().iter().map(ConnectionInfo::from).collect()
    }

    /// Closes one connection (idle or busy); its close event reports `Closed`. Returns false when
    /// no live connection has this id.
    pub fn close_connection(&self, id: u64) -> bool {
        self.core().close(id)
    }

    /// Closes every live connection; returns how many were asked to close.
    pub fn close_all(&self) -> u64 {
        self.core().close_all() as u64
    }

    /// Bytes up/down per network type since the manager was created: connections that closed
    /// plus the live ones.
    pub fn traffic(&self) -> Vec<NetworkTraffic> {
        let live = self.core().list();
        self.traffic
            .snapshot(live.iter().map(|c| (c.egress.network_type.map(Into::into), c.bytes_up, c.bytes_down)))
    }

    /// Closes every connection, stops every SOCKS server and tunnel, ends every subscription (each still
    /// delivers the events it had queued; close events of the connections this closes arrive
    /// after that and are not delivered — `traffic()` still counts them), and makes later calls
    /// that start work fail with `ShutDown`. Idempotent.
    pub fn shutdown(&self) {
        self.servers.stop_all();
        self.tunnels.stop_all();
        self.core().shutdown();
        self.events.shut_down();
    }

    /// True after `shutdown()`.
    pub fn is_shut_down(&self) -> bool {
        self.core().is_shut_down()
    }
}

impl ConnectionManager {
    /// Takes ownership of `fd`, a connected stream socket, dials `destination` (`host:port`)
    /// and relays between them; returns the connection id at once (a failed dial arrives as a
    /// close event). On any error `fd` is closed. `InvalidArgument` names `fd` (not a stream
    /// socket) or `destination`; `ShutDown` after shutdown.
    pub fn relay_tcp_fd(
        &self,
        fd: OwnedFd,
        destination: &str,
        options: Option<ConnectionOptions>,
    ) -> Result<u64, NetswitchError> {
        self.check_running()?;
        let destination = parse_destination(destination)?;
        let options = options.unwrap_or_default();
        options.validate()?;
        let stream = {
            let _entered = self.runtime.enter();
            super::fd::adopt_stream_fd(fd)?
        };
        let outbound: Arc<dyn Outbound> = self.netswitch.outbound().clone();
        let mut metadata = Metadata::new(destination);
        metadata.options = options.to_core();
        let id = self.core().new_connection(Inbound::plain(stream), metadata, outbound, |_| {});
        tracing::debug!(id, "relaying a socket handed over by the host");
        Ok(id)
    }

    /// Starts a packet tunnel on `fd` (taken over: closed when the tunnel stops, or at once on
    /// any error) with `options`; see `start_tun` of the FFI for the rules.
    pub fn start_tun(&self, fd: OwnedFd, options: TunOptions) -> Result<Arc<TunHandle>, NetswitchError> {
        self.start_tun_deciding(fd, options, None)
    }

    /// [`Self::start_tun`] with the host's decision hook, if any.
    pub fn start_tun_deciding(
        &self,
        fd: OwnedFd,
        options: TunOptions,
        decider: Option<Arc<dyn super::tun_decider::TunFlowDecider>>,
    ) -> Result<Arc<TunHandle>, NetswitchError> {
        let raw = fd.as_raw_fd();
        let tunnel = format!("TUN device fd {raw}");
        self.start_tunnel(&options, decider, &tunnel, |netswitch, settings| netswitch.start_tun(fd, settings))
    }

    /// Starts a tunnel with `start` on `options` (and the host's decision hook, if any) inside
    /// the runtime, and hands it to the manager's tunnels. `tunnel` names its link in errors
    /// and logs. Shared by `start_tun` and `start_packet_flow`.
    pub(crate) fn start_tunnel(
        &self,
        options: &TunOptions,
        decider: Option<Arc<dyn super::tun_decider::TunFlowDecider>>,
        tunnel: &str,
        start: impl FnOnce(&Netswitch, crate::tun::TunSettings) -> Result<crate::tun::Tun, crate::tun::TunError>,
    ) -> Result<Arc<TunHandle>, NetswitchError> {
        self.check_running()?;
        let mut settings = options.to_core(&self.netswitch.socks_settings().udp)?;
        if let Some(decider) = decider {
            let deadline = std::time::Duration::from_millis(options.decision_deadline_ms);
            settings.decision =
                Some(super::tun_decider::hook(decider, deadline, options.decision_fail_closed));
        }
        let tun = {
            let _entered = self.runtime.enter();
            start(&self.netswitch, settings).map_err(|e| super::tun::start_error(tunnel, e))?
        };
        tracing::info!(tunnel, ipv4 = %options.ipv4, ipv6 = ?options.ipv6, "packet tunnel started");
        self.tunnels.adopt(tun)
    }

    fn core(&self) -> &Arc<crate::ConnectionManager> {
        self.netswitch.manager()
    }

    fn check_running(&self) -> Result<(), NetswitchError> {
        if self.core().is_shut_down() {
            return Err(NetswitchError::ShutDown);
        }
        Ok(())
    }
}

/// The builder validates again what `to_core` validated; a config error names its field.
fn build_error(error: BuildError) -> NetswitchError {
    match error {
        BuildError::Config(error) => error.into(),
        other => NetswitchError::Internal { reason: other.to_string() },
    }
}

fn parse_destination(destination: &str) -> Result<Destination, NetswitchError> {
    destination.parse().map_err(|e: crate::metadata::DestinationError| NetswitchError::InvalidArgument {
        argument: "destination".into(),
        reason: e.to_string(),
    })
}

/// Sees every connection that ends (SOCKS, handed-over sockets, UDP): counts its bytes per
/// network type and tells the subscribers.
fn close_observer(traffic: Arc<TrafficTotals>, events: Arc<EventHub>) -> crate::manager::CloseObserver {
    Arc::new(move |closed: &relay::ClosedConnection| {
        let closed = ClosedConnection::from(closed);
        traffic.add_closed(closed.network_type, closed.bytes_up, closed.bytes_down);
        events.broadcast(|| Event::Closed(closed));
    })
}

/// Tells the subscribers about every connection that reached its destination.
fn open_observer(events: Arc<EventHub>) -> crate::manager::OpenObserver {
    Arc::new(move |info: &crate::tracker::ConnectionInfo| {
        events.broadcast(|| Event::Opened(ConnectionInfo::from(info)));
    })
}

/// Tells the subscribers about every interface update that changed something.
fn network_observer(events: Arc<EventHub>) -> crate::manager::NetworkObserver {
    Arc::new(move |update: &crate::manager::NetworkUpdate| {
        events.broadcast(|| Event::NetworkChanged(NetworkChange::from(update)));
    })
}

impl Drop for ConnectionManager {
    fn drop(&mut self) {
        self.shutdown();
    }
}
