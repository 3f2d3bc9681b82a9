//! [`Netswitch`]: the composition root. One place wires what every host needs from a [`Config`]:
//! a [`ConnectionManager`] (relay settings, observers, runtime) with its network state, the
//! socket binder, and the strategy-aware [`DirectOutbound`] that chooses among the manager's
//! interfaces and binds every socket through that binder. The uniffi façade and the `netswitch`
//! CLI both build theirs here; a Rust embedder does the same.
//!
//! ```
//! use netswitch::{Config, Netswitch};
//!
//! # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let netswitch = Netswitch::builder(Config::default()).build()?;
//! // Hand client connections to `netswitch.manager()` with `netswitch.outbound()`, push
//! // interface snapshots with `netswitch.manager().update_interfaces(..)`, or start the SOCKS5
//! // ingress: every connection then dials over the network the strategy picks.
//! let mut settings = netswitch.socks_settings().clone();
//! settings.listen = "127.0.0.1:0".parse()?;
//! let server = netswitch.start_socks(settings).await?;
//! server.stop();
//! netswitch.manager().shutdown();
//! # Ok(()) }
//! ```

use std::sync::Arc;

use tokio::runtime::Handle;

use crate::config::{Config, ConfigError};
use crate::dial::direct::DirectOutbound;
use crate::dns::{HostDns, Resolvers};
use crate::inbound::socks::{SocksError, SocksServer, SocksSettings};
use crate::manager::{CloseObserver, ConnectionManager, NetworkObserver, OpenObserver};
use crate::platform::{os_binder, HostBinder, HostSocketBinder, SocketBinder};
use crate::tun::{Tun, TunError, TunSettings};

/// A configured netswitch: the connection manager and the outbound its connections dial
/// through, built together by [`Netswitch::builder`]. Cheap to clone (shared handles).
#[derive(Debug, Clone)]
pub struct Netswitch {
    manager: Arc<ConnectionManager>,
    outbound: Arc<DirectOutbound>,
    socks: SocksSettings,
}

impl Netswitch {
    /// Starts building a netswitch from `config` (validated by [`NetswitchBuilder::build`]).
    pub fn builder(config: Config) -> NetswitchBuilder {
        NetswitchBuilder {
            config,
            binder: None,
            host_binder: None,
            host_dns: None,
            runtime: None,
            close_observer: None,
            open_observer: None,
            network_observer: None,
        }
    }

    /// The connection manager: hand it connections, list and close them, push interface
    /// snapshots ([`ConnectionManager::update_interfaces`]) — the outbound reads the same state.
    pub fn manager(&self) -> &Arc<ConnectionManager> {
        &self.manager
    }

    /// The strategy-aware direct outbound: per dial it picks interfaces from the manager's
    /// current snapshot with the configured strategy and offers every socket to the binder.
    /// Until the first interface snapshot, dials fail with "no network".
    pub fn outbound(&self) -> &Arc<DirectOutbound> {
        &self.outbound
    }

    /// The SOCKS5 server settings from the configuration (`socks.*` and the UDP limits).
    pub fn socks_settings(&self) -> &SocksSettings {
        &self.socks
    }

    /// Starts a SOCKS5 server with `settings` that relays through this manager and outbound
    /// (see [`SocksServer::start`]). Must be awaited inside the manager's runtime.
    pub async fn start_socks(&self, settings: SocksSettings) -> Result<SocksServer, SocksError> {
        SocksServer::start(settings, self.manager.clone(), self.outbound.clone()).await
    }

    /// Starts a packet tunnel on the TUN device `fd` (taken over) that relays its TCP connections
    /// and UDP flows through this manager and outbound (see [`Tun::start`]). Must be called
    /// inside the manager's runtime. On a desktop tunnel whose routes capture the default route,
    /// build with [`BindDefault`](crate::tun::BindDefault) around the binder so that outbound
    /// sockets cannot loop back into the tunnel. Hijacked DNS queries (`settings.dns_hijack`)
    /// are resolved as this outbound's dials resolve ([`StrategyResolver`]).
    ///
    /// [`StrategyResolver`]: crate::tun::StrategyResolver
    pub fn start_tun(&self, fd: std::os::fd::OwnedFd, settings: TunSettings) -> Result<Tun, TunError> {
        let resolver =
            crate::tun::StrategyResolver::new(self.outbound.clone(), self.manager.networks().clone());
        Tun::start_with_resolver(
            fd,
            settings,
            self.manager.clone(),
            self.outbound.clone(),
            Some(Arc::new(resolver)),
        )
    }
}

impl Netswitch {
    /// Starts a packet tunnel on the host's packet flow instead of a TUN fd (see
    /// [`Tun::start_packet_flow`] and [`crate::tun::flow`]): the host feeds the returned input with
    /// the packets it reads, `writer` gets the packets going back. Must be called inside the
    /// manager's runtime. Hijacked DNS queries are resolved as in [`Netswitch::start_tun`].
    pub fn start_packet_flow(
        &self,
        settings: TunSettings,
        writer: Arc<dyn crate::tun::PacketFlowWriter>,
    ) -> Result<(Tun, crate::tun::PacketFlowInput), TunError> {
        let resolver =
            crate::tun::StrategyResolver::new(self.outbound.clone(), self.manager.networks().clone());
        Tun::start_packet_flow(
            settings,
            self.manager.clone(),
            self.outbound.clone(),
            Some(Arc::new(resolver)),
            writer,
        )
    }
}

/// Builds a [`Netswitch`]; see [`Netswitch::builder`]. Every setter is optional.
#[must_use = "a builder does nothing until build() is called"]
pub struct NetswitchBuilder {
    config: Config,
    binder: Option<Arc<dyn SocketBinder>>,
    host_binder: Option<Arc<dyn HostSocketBinder>>,
    host_dns: Option<Arc<dyn HostDns>>,
    runtime: Option<Handle>,
    close_observer: Option<CloseObserver>,
    open_observer: Option<OpenObserver>,
    network_observer: Option<NetworkObserver>,
}

impl NetswitchBuilder {
    /// Binds outbound sockets with `binder` instead of the operating system's
    /// ([`os_binder`]): e.g. [`SimulatedBinder`](crate::platform::SimulatedBinder) for networks
    /// simulated on loopback.
    pub fn binder(mut self, binder: Arc<dyn SocketBinder>) -> Self {
        self.binder = Some(binder);
        self
    }

    /// Offers every outbound socket to the host first (Android `VpnService.protect`,
    /// `Network.bindSocket`); what the host leaves to netswitch goes to the binder
    /// ([`HostBinder`]).
    pub fn host_binder(mut self, host: Arc<dyn HostSocketBinder>) -> Self {
        self.host_binder = Some(host);
        self
    }

    /// Resolves names with the host's resolver for each network (Android `DnsResolver` on that
    /// `Network`…) as the config's `dns.resolver` says ([`crate::dns::ResolverChoice`]).
    pub fn host_dns(mut self, host: Arc<dyn HostDns>) -> Self {
        self.host_dns = Some(host);
        self
    }

    /// Runs connections on `runtime` (the default is the runtime `build` is called in).
    pub fn runtime(mut self, runtime: Handle) -> Self {
        self.runtime = Some(runtime);
        self
    }

    /// See [`ConnectionManager::with_close_observer`].
    pub fn close_observer(mut self, observer: CloseObserver) -> Self {
        self.close_observer = Some(observer);
        self
    }

    /// See [`ConnectionManager::with_open_observer`].
    pub fn open_observer(mut self, observer: OpenObserver) -> Self {
        self.open_observer = Some(observer);
        self
    }

    /// See [`ConnectionManager::with_network_observer`].
    pub fn network_observer(mut self, observer: NetworkObserver) -> Self {
        self.network_observer = Some(observer);
        self
    }

    /// Validates the configuration and wires the manager, its network state, the binder and
    /// the outbound. Errors: the configuration's first invalid value; no runtime (neither
    /// [`NetswitchBuilder::runtime`] nor a current one).
    pub fn build(self) -> Result<Netswitch, BuildError> {
        self.config.validate()?;
        let runtime = match self.runtime {
            Some(runtime) => runtime,
            None => Handle::try_current().map_err(|_| BuildError::NoRuntime)?,
        };
        // One set of resolvers for the outbound and the manager: network changes flush its cache.
        let mut dns = Resolvers::new(self.config.dns_settings());
        if let Some(host) = self.host_dns {
            dns = dns.with_host(host);
        }
        let dns = Arc::new(dns);
        let mut manager =
            ConnectionManager::with_runtime(self.config.relay_settings(), runtime).with_dns(dns.clone());
        if let Some(observer) = self.close_observer {
            manager = manager.with_close_observer(observer);
        }
        if let Some(observer) = self.open_observer {
            manager = manager.with_open_observer(observer);
        }
        if let Some(observer) = self.network_observer {
            manager = manager.with_network_observer(observer);
        }
        let manager = Arc::new(manager);
        let mut binder = self.binder.unwrap_or_else(os_binder);
        if let Some(host) = self.host_binder {
            binder = Arc::new(HostBinder::new(host, binder));
        }
        let outbound = Arc::new(
            self.config.direct_outbound().with_networks(manager.networks().clone(), binder).with_dns(dns),
        );
        Ok(Netswitch { manager, outbound, socks: self.config.socks_settings() })
    }
}

impl std::fmt::Debug for NetswitchBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NetswitchBuilder")
            .field("config", &self.config)
            .field("binder", &self.binder)
            .field("host_binder", &self.host_binder.is_some())
            .field("host_dns", &self.host_dns.is_some())
            .field("runtime", &self.runtime.is_some())
            .field("close_observer", &self.close_observer.is_some())
            .field("open_observer", &self.open_observer.is_some())
            .field("network_observer", &self.network_observer.is_some())
            .finish()
    }
}

/// Why [`NetswitchBuilder::build`] failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// A configuration value is not allowed (the error names the key).
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// No tokio runtime to run connections on.
    #[error("no tokio runtime: call NetswitchBuilder::runtime, or build inside a runtime")]
    NoRuntime,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn needs_a_runtime_and_a_valid_config() {
        let error = Netswitch::builder(Config::default()).build().unwrap_err();
        assert!(matches!(error, BuildError::NoRuntime), "{error}");

        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let config = Config { connect_timeout: std::time::Duration::ZERO, ..Config::default() };
        let error = Netswitch::builder(config).runtime(runtime.handle().clone()).build().unwrap_err();
        assert_eq!(error.to_string(), "invalid config: `connect_timeout` must be greater than 0");

        let built = Netswitch::builder(Config::default()).runtime(runtime.handle().clone()).build();
        let netswitch = built.expect("a default config builds outside the runtime with a handle");
        assert!(netswitch.manager().networks().snapshot().is_no_network(), "no network until pushed");
    }
}
