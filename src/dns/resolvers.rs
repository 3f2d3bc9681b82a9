//! [`Resolvers`]: the resolver each route uses, the shared cache, and keeping both in step with
//! the interface snapshot.
//!
//! Which resolver answers for an interface ([`ResolverChoice`]): `auto` (the default) asks the
//! interface's DNS servers when the host reported some, else the host's resolver when there is
//! one, else the system resolver; `host` asks the host first; `system` always the system
//! resolver. The system resolver is the last resort: using it for an interface is said once per
//! interface in a log line. The unbound system route (no network state: desktop use) uses the
//! system resolver.
//!
//! The cache forgets an interface's answers when the interface goes away (`on_update`, called by
//! the manager for every snapshot) or when it may be on another network: its DNS servers changed,
//! it lost an address, or its validation changed (a captive portal's answers go once the user
//! logged in). Noticed on every snapshot and on every dial.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::sync::Semaphore;

use super::cache::DnsCache;
use super::host::{HostDns, HostResolver};
use super::interface::{InterfaceResolver, QueryOptions};
use super::settings::{DnsSettings, ResolverChoice, DEFAULT_SYSTEM_MAX_LOOKUPS};
use super::system::{SystemResolver, SystemRoute};
use super::Resolve;
use crate::network::{InterfaceId, InterfaceSnapshot, NetworkInterface, SnapshotChange};
use crate::platform::SocketBinder;

/// Picks the resolver of each route; owns the cache and the per-interface bounds. Share one per
/// dialer (and give the same one to the manager, so network changes flush the cache).
pub struct Resolvers {
    settings: DnsSettings,
    cache: Option<Arc<DnsCache>>,
    system: Arc<SystemResolver>,
    host: Option<Arc<dyn HostDns>>,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Interfaces seen, with the servers their cache entries came from.
    known: HashMap<InterfaceId, Known>,
    /// The last snapshot compared against (by pointer).
    last_snapshot: Option<Arc<InterfaceSnapshot>>,
}

struct Known {
    servers: Vec<SocketAddr>,
    addresses: Vec<IpAddr>,
    validated: bool,
    in_flight: Arc<Semaphore>,
    told_system: bool,
}

impl Known {
    /// Takes what `now` says of the interface; returns why its answers must go, when they must
    /// (it may be on another network). A new address alone keeps them (an IPv6 privacy address).
    fn update(&mut self, now: &NetworkInterface) -> Option<&'static str> {
        let why = if self.servers != now.dns_servers {
            Some("its DNS servers changed")
        } else if self.addresses.iter().any(|ip| !now.addresses.iter().any(|a| a.ip == *ip)) {
            Some("it lost an address")
        } else if self.validated != now.validated {
            Some("its validation changed")
        } else {
            None
        };
        self.servers.clone_from(&now.dns_servers);
        self.addresses = now.addresses.iter().map(|a| a.ip).collect();
        self.validated = now.validated;
        why
    }
}

impl std::fmt::Debug for Resolvers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resolvers")
            .field("settings", &self.settings)
            .field("cached", &self.cache.as_ref().map_or(0, |c| c.len()))
            .field("host", &self.host.is_some())
            .finish_non_exhaustive()
    }
}

impl Default for Resolvers {
    fn default() -> Self {
        Resolvers::new(DnsSettings::default())
    }
}

impl Resolvers {
    /// Resolvers with these settings, no host resolver, and the process-wide system resolver
    /// (a resolver of its own when `system_max_lookups` is not the default).
    pub fn new(settings: DnsSettings) -> Resolvers {
        let system = if settings.system_max_lookups == DEFAULT_SYSTEM_MAX_LOOKUPS {
            SystemResolver::shared().clone()
        } else {
            Arc::new(SystemResolver::new(settings.system_max_lookups))
        };
        let cache = (settings.cache_capacity > 0)
            .then(|| Arc::new(DnsCache::new(settings.ttl, settings.cache_capacity)));
        Resolvers { settings, cache, system, host: None, state: Mutex::new(State::default()) }
    }

    /// These resolvers with the host's resolver (used as [`ResolverChoice`] says).
    pub fn with_host(mut self, host: Arc<dyn HostDns>) -> Resolvers {
        self.host = Some(host);
        self
    }

    /// These resolvers with another system resolver (tests inject a blocking lookup).
    pub fn with_system(mut self, system: Arc<SystemResolver>) -> Resolvers {
        self.system = system;
        self
    }

    /// The settings.
    pub fn settings(&self) -> &DnsSettings {
        &self.settings
    }

    /// The cache shared by every interface (`None` when `cache_capacity` is 0).
    pub fn cache(&self) -> Option<&Arc<DnsCache>> {
        self.cache.as_ref()
    }

    /// The system resolver used as the last resort.
    pub fn system(&self) -> &Arc<SystemResolver> {
        &self.system
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The resolver for a route: `interface` (`None`: the unbound system route), whether it is
    /// the default interface, and the binder that prepares the query sockets.
    pub fn for_route(
        &self,
        interface: Option<&NetworkInterface>,
        is_default: bool,
        binder: Option<&Arc<dyn SocketBinder>>,
    ) -> Arc<dyn Resolve> {
        let system = || Arc::new(SystemRoute(self.system.clone())) as Arc<dyn Resolve>;
        let Some(interface) = interface else { return system() };
        let (in_flight, told_system) = self.note(interface);
        let servers: Arc<[SocketAddr]> = interface.dns_servers.clone().into();
        let options =
            QueryOptions { query_timeout: self.settings.query_timeout, rounds: self.settings.rounds };
        let own = || {
            InterfaceResolver::new(
                interface.clone(),
                is_default,
                servers.clone(),
                binder.cloned(),
                self.cache.clone(),
                options,
                in_flight.clone(),
            )
            .map(|r| Arc::new(r) as Arc<dyn Resolve>)
        };
        let host = |fallback: Arc<dyn Resolve>| {
            self.host.as_ref().map(|host| {
                let resolver = HostResolver::new(
                    host.clone(),
                    interface.clone(),
                    self.cache.clone(),
                    in_flight.clone(),
                    fallback,
                );
                Arc::new(resolver) as Arc<dyn Resolve>
            })
        };
        let chosen = match self.settings.resolver {
            ResolverChoice::System => return system(),
            ResolverChoice::Host => host(own().unwrap_or_else(system)).or_else(own),
            ResolverChoice::Auto | ResolverChoice::Interface => own().or_else(|| host(system())),
        };
        chosen.unwrap_or_else(|| {
            if !told_system {
                tracing::info!(
                    interface = %interface.name,
                    "no DNS servers known for {} and no host resolver: using the system resolver (not bound to the interface)",
                    interface.name
                );
            }
            system()
        })
    }

    /// Records `interface`, its servers and addresses (flushing its cache entries when it may be
    /// on another network: [`Known::update`]); returns its in-flight bound and whether the system-resolver line was logged
    /// (it counts as logged from now on).
    fn note(&self, interface: &NetworkInterface) -> (Arc<Semaphore>, bool) {
        let mut state = self.lock();
        let id = interface.id();
        if let Some(known) = state.known.get_mut(&id) {
            if let Some(why) = known.update(interface) {
                self.flush(&id, why);
            }
            let told = std::mem::replace(&mut known.told_system, interface.dns_servers.is_empty());
            return (known.in_flight.clone(), told);
        }
        let in_flight = Arc::new(Semaphore::new(self.settings.max_concurrent.max(1)));
        let known = Known {
            servers: interface.dns_servers.clone(),
            addresses: interface.addresses.iter().map(|a| a.ip).collect(),
            validated: interface.validated,
            in_flight: in_flight.clone(),
            told_system: interface.dns_servers.is_empty(),
        };
        state.known.insert(id, known);
        (in_flight, false)
    }

    fn flush(&self, id: &InterfaceId, why: &str) {
        if let Some(cache) = &self.cache {
            let flushed = cache.flush_interface(id);
            tracing::debug!(interface = %id, flushed, "DNS cache flushed: {why}");
        }
    }

    /// Brings the cache in step with `snapshot` when it is not the one last seen: forgets the
    /// answers of interfaces that are gone and of those that may be on another network. Cheap when
    /// nothing changed (a pointer comparison); the dialer calls it on every dial.
    pub fn sync(&self, snapshot: &Arc<InterfaceSnapshot>) {
        let mut state = self.lock();
        if state.last_snapshot.as_ref().is_some_and(|last| Arc::ptr_eq(last, snapshot)) {
            return;
        }
        state.last_snapshot = Some(snapshot.clone());
        if snapshot.is_no_network() {
            return; // a pause: nothing is gone yet
        }
        let mut gone = Vec::new();
        for (id, known) in state.known.iter_mut() {
            match snapshot.by_index(id.index).filter(|i| i.name == id.name) {
                None => gone.push(id.clone()),
                Some(now) => {
                    if let Some(why) = known.update(now) {
                        self.flush(id, why);
                    }
                }
            }
        }
        for id in gone {
            state.known.remove(&id);
            self.flush(&id, "the interface is gone");
        }
    }

    /// Called for every interface update (`ConnectionManager::update_interfaces` does it):
    /// forgets the answers of every interface `change` reports removed (even one that came back
    /// in the same update under a new index) and of those that may be on another network.
    pub fn on_update(&self, snapshot: &Arc<InterfaceSnapshot>, change: &SnapshotChange) {
        {
            let mut state = self.lock();
            for id in &change.removed {
                state.known.remove(id);
            }
        }
        for id in &change.removed {
            self.flush(id, "the interface is gone");
        }
        self.sync(snapshot);
    }
}
