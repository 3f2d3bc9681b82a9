//! The `ConnectionManager` object the host creates: config in, platform callbacks bridged to
//! the core's binder, connections and counters out.

use std::net::SocketAddr;
use std::os::fd::RawFd;
use std::sync::Arc;

use tokio::runtime::Runtime;

use super::callbacks::{
    CloseEvents, EventListener, ListenerLogs, LoopbackOffering, PlatformBinder, PlatformInterface,
};
use super::config::{ConnectionOptions, NetswitchConfig};
use super::error::NetswitchError;
use super::socks::SocksServer;
use super::traffic::TrafficTotals;
use super::types::{
    ClosedConnection, ConnectionInfo, InterfaceChange, InterfaceSnapshot, NetworkTraffic, SocksCredentials,
};
use crate::dial::Outbound;
use crate::inbound::socks::{SocksSettings, SocksUser};
use crate::logging::LogSinkId;
use crate::metadata::{Destination, Metadata};
use crate::platform::{os_binder, HostBinder, SocketBinder};
use crate::{relay, Inbound};

/// Relays connections for the host app: dials each destination over the network the strategy
/// picks (offering every socket to the [`PlatformInterface`] first), relays both ways, tracks
/// every live connection, and reports each end to the [`EventListener`].
///
/// Thread-safe; every method may be called from any thread. After `shutdown()` (or when the
/// object is destroyed) every connection is closed and calls that start work fail with
/// `ShutDown`.
#[derive(uniffi::Object)]
pub struct ConnectionManager {
    core: Arc<crate::ConnectionManager>,
    outbound: Arc<dyn Outbound>,
    runtime: &'static Runtime,
    socks: SocksSettings,
    traffic: Arc<TrafficTotals>,
    log_sink: Option<LogSinkId>,
}

#[uniffi::export]
impl ConnectionManager {
    /// Validates `config` (`InvalidConfig` names the bad field), starts logging at its level, and
    /// builds a manager. `platform`: offered every outbound socket before it connects (`None`:
    /// netswitch binds sockets itself). `listener`: receives close events and log records.
    /// Dialing waits for the first `update_interfaces` (until then dials fail with `NoNetwork`).
    #[uniffi::constructor]
    pub fn new(
        config: NetswitchConfig,
        platform: Option<Arc<dyn PlatformInterface>>,
        listener: Option<Arc<dyn EventListener>>,
    ) -> Result<Arc<ConnectionManager>, NetswitchError> {
        let core_config = config.to_core()?;
        let _ = crate::logging::init_logging(core_config.log.level);
        let runtime = super::runtime::runtime(config.lightweight_runtime)?;
        let (events, log_sink) = match listener {
            Some(listener) => (
                Some(CloseEvents::start(listener.clone())?),
                Some(crate::logging::add_log_sink(Arc::new(ListenerLogs(listener)))),
            ),
            None => (None, None),
        };
        let traffic = Arc::new(TrafficTotals::default());
        let core = Arc::new(
            crate::ConnectionManager::with_runtime(core_config.relay_settings(), runtime.handle().clone())
                .with_close_observer(close_observer(traffic.clone(), events.clone())),
        );
        let mut os: Arc<dyn SocketBinder> = os_binder();
        if config.offer_loopback_sockets {
            os = Arc::new(LoopbackOffering(os));
        }
        let binder: Arc<dyn SocketBinder> = match platform {
            Some(platform) => Arc::new(HostBinder::new(Arc::new(PlatformBinder { platform }), os)),
            None => os,
        };
        let outbound = Arc::new(core_config.direct_outbound().with_networks(core.networks().clone(), binder));
        tracing::info!(
            lightweight = config.lightweight_runtime,
            strategy = %core_config.network_strategy,
            "netswitch connection manager created"
        );
        Ok(Arc::new(ConnectionManager {
            core,
            outbound,
            runtime,
            socks: core_config.socks_settings(),
            traffic,
            log_sink,
        }))
    }

    /// Replaces the interface list (call it on every network change). Closes, at once, every
    /// connection whose interface went away, or that used the old default when the default
    /// changed; an empty list pauses dialing and closes nothing. `InvalidArgument` (argument
    /// `snapshot`) for duplicate names/indexes, index 0, a bad address, or an unknown default.
    pub fn update_interfaces(&self, snapshot: InterfaceSnapshot) -> Result<InterfaceChange, NetswitchError> {
        self.check_running()?;
        let snapshot = snapshot.to_core()?;
        Ok(InterfaceChange::from(&self.core.update_interfaces(snapshot)))
    }

    /// Starts a SOCKS5 server on `listen` (`"127.0.0.1:0"` picks a free port). With
    /// `credentials`, username/password authentication is required. The server stops on
    /// `stop()` or when the returned object is destroyed; its connections stay with the manager.
    /// Errors: `InvalidArgument` (`listen`, `credentials`), `Io` naming the address, `ShutDown`.
    pub async fn start_socks(
        &self,
        listen: String,
        credentials: Vec<SocksCredentials>,
    ) -> Result<Arc<SocksServer>, NetswitchError> {
        self.check_running()?;
        let address: SocketAddr = listen.parse().map_err(|_| NetswitchError::InvalidArgument {
            argument: "listen".into(),
            reason: format!("{listen:?} is not an ip:port address"),
        })?;
        let users = credentials
            .into_iter()
            .map(|c| SocksUser { username: c.username, password: c.password })
            .collect();
        let settings = SocksSettings { listen: address, users, ..self.socks.clone() };
        let (core, outbound) = (self.core.clone(), self.outbound.clone());
        let task = self.runtime.spawn(crate::inbound::socks::SocksServer::start(settings, core, outbound));
        let server = task
            .await
            .map_err(|e| NetswitchError::Internal { reason: format!("SOCKS start task: {e}") })?
            .map_err(|e| super::socks::start_error(address, e))?;
        Ok(Arc::new(SocksServer::new(server)))
    }

    /// Takes ownership of `fd`, a connected stream socket (one end of a socketpair, an accepted
    /// TCP socket), dials `destination` (`host:port`) and relays between them. Returns the
    /// connection id at once; the dial's outcome arrives as a close event if it fails.
    /// `InvalidArgument` (`fd`: not a stream socket; `destination`) leaves the fd with the
    /// caller; `ShutDown` too.
    pub fn relay_tcp_fd(
        &self,
        fd: i32,
        destination: String,
        options: Option<ConnectionOptions>,
    ) -> Result<u64, NetswitchError> {
        self.check_running()?;
        let destination: Destination =
            destination.parse().map_err(|e: crate::metadata::DestinationError| {
                NetswitchError::InvalidArgument { argument: "destination".into(), reason: e.to_string() }
            })?;
        let fd: RawFd = fd;
        let stream = {
            let _entered = self.runtime.enter();
            super::fd::adopt_stream_fd(fd)?
        };
        let mut metadata = Metadata::new(destination);
        metadata.options = options.unwrap_or_default().to_core();
        let id = self.core.new_connection(Inbound::plain(stream), metadata, self.outbound.clone(), |_| {});
        tracing::debug!(id, fd, "relaying a socket handed over by the host");
        Ok(id)
    }

    /// Snapshots of every live connection (any order).
    pub fn connections(&self) -> Vec<ConnectionInfo> {
        self.core.list().iter().map(ConnectionInfo::from).collect()
    }

    /// Closes one connection (idle or busy); its close event reports `Closed`. Returns false when
    /// no live connection has this id.
    pub fn close_connection(&self, id: u64) -> bool {
        self.core.close(id)
    }

    /// Closes every live connection; returns how many were asked to close.
    pub fn close_all(&self) -> u64 {
        self.core.close_all() as u64
    }

    /// Bytes up/down per network type since the manager was created: connections that closed
    /// (as reported to the listener) plus the live ones.
    pub fn traffic(&self) -> Vec<NetworkTraffic> {
        let live = self.core.list();
        self.traffic
            .snapshot(live.iter().map(|c| (c.egress.network_type.map(Into::into), c.bytes_up, c.bytes_down)))
    }

    /// Closes every connection, stops log delivery to the listener, and makes later calls that
    /// start work fail with `ShutDown`. Idempotent.
    pub fn shutdown(&self) {
        self.core.shutdown();
        if let Some(id) = self.log_sink {
            crate::logging::remove_log_sink(id);
        }
    }

    /// True after `shutdown()`.
    pub fn is_shut_down(&self) -> bool {
        self.core.is_shut_down()
    }
}

impl ConnectionManager {
    fn check_running(&self) -> Result<(), NetswitchError> {
        if self.core.is_shut_down() {
            return Err(NetswitchError::ShutDown);
        }
        Ok(())
    }
}

/// Sees every connection that ends (SOCKS, handed-over sockets, UDP): counts its bytes per
/// network type and tells the listener.
fn close_observer(traffic: Arc<TrafficTotals>, events: Option<CloseEvents>) -> crate::manager::CloseObserver {
    Arc::new(move |closed: &relay::ClosedConnection| {
        let closed = ClosedConnection::from(closed);
        traffic.add_closed(closed.network_type, closed.bytes_up, closed.bytes_down);
        if let Some(events) = &events {
            events.send(closed);
        }
    })
}

impl Drop for ConnectionManager {
    fn drop(&mut self) {
        self.shutdown();
    }
}
