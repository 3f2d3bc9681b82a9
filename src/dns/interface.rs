//! The per-interface resolver: that interface's DNS servers, every query socket prepared by the
//! platform binder for that interface, A and AAAA in parallel with answers delivered per family
//! as they arrive, a deadline on everything, a bound on queries in flight, and the shared cache.
//!
//! Per family: the cache; else a slot (at most `max_concurrent` queries per interface, waiting
//! within the deadline); else the servers in order, each attempt ending by `min(deadline, now +
//! query_timeout)`, the list walked `rounds` times. An answer (addresses, NODATA, NXDOMAIN) ends
//! the walk and is cached; a timeout, SERVFAIL/REFUSED, a garbage answer, a refused port or a
//! bind failure moves on to the next server. The error is the last server's.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use hickory_proto::rr::Name;
use tokio::sync::Semaphore;
use tokio::time::{timeout_at, Instant};

use super::cache::{Cached, DnsCache, Key, Mark};
use super::lookup::{checked_name, local_answer, FamilyFuture};
use super::transport::{self, QueryRoute};
use super::wire::Outcome;
use super::{DnsError, Family, FamilyAnswer, Lookup, Resolve, Source, Via};
use crate::network::NetworkInterface;
use crate::platform::SocketBinder;

/// How an [`InterfaceResolver`] queries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueryOptions {
    /// Time one server gets for one question before the next server is asked.
    pub query_timeout: Duration,
    /// How many times the server list is walked (at least once), within the deadline.
    pub rounds: usize,
}

impl Default for QueryOptions {
    fn default() -> Self {
        QueryOptions {
            query_timeout: super::settings::DEFAULT_QUERY_TIMEOUT,
            rounds: super::settings::DEFAULT_ROUNDS,
        }
    }
}

/// Resolves names with one interface's DNS servers, over sockets bound to that interface.
/// Cheap to clone.
#[derive(Clone)]
pub struct InterfaceResolver {
    inner: Arc<Inner>,
}

struct Inner {
    interface: NetworkInterface,
    is_default: bool,
    servers: Arc<[SocketAddr]>,
    binder: Option<Arc<dyn SocketBinder>>,
    cache: Option<Arc<DnsCache>>,
    /// The cache when the servers were chosen: answers are remembered unless it was flushed since.
    mark: Option<Mark>,
    options: QueryOptions,
    in_flight: Arc<Semaphore>,
}

impl std::fmt::Debug for InterfaceResolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InterfaceResolver")
            .field("interface", &self.inner.interface.name)
            .field("servers", &self.inner.servers)
            .field("is_default", &self.inner.is_default)
            .finish_non_exhaustive()
    }
}

impl InterfaceResolver {
    /// A resolver asking `servers` (in order; `None` when there are none) over `interface`.
    /// Every query socket passes `binder` (protect only when `is_default`, as for dials; no
    /// binder: the routing table decides). `cache` is shared by every interface (`None`: no
    /// caching; answers are not remembered once an interface was flushed after this call, as
    /// `servers` may be the old network's); `in_flight` bounds the queries running at once over
    /// this interface.
    pub fn new(
        interface: NetworkInterface,
        is_default: bool,
        servers: Arc<[SocketAddr]>,
        binder: Option<Arc<dyn SocketBinder>>,
        cache: Option<Arc<DnsCache>>,
        options: QueryOptions,
        in_flight: Arc<Semaphore>,
    ) -> Option<InterfaceResolver> {
        if servers.is_empty() {
            return None;
        }
        let mark = cache.as_ref().map(|c| c.mark());
        let inner = Inner { interface, is_default, servers, binder, cache, mark, options, in_flight };
        Some(InterfaceResolver { inner: Arc::new(inner) })
    }

    /// The servers asked, in order.
    pub fn servers(&self) -> &[SocketAddr] {
        &self.inner.servers
    }
}

impl Resolve for InterfaceResolver {
    fn lookup(&self, name: &str, families: &[Family], deadline: Instant) -> Lookup {
        if let Some(local) = local_answer(name, families) {
            return local;
        }
        let parsed = match checked_name(name, families) {
            Ok(parsed) => parsed,
            Err(failed) => return failed,
        };
        let started = Instant::now();
        let pending = families
            .iter()
            .map(|&family| {
                let (inner, parsed, display) = (self.inner.clone(), parsed.clone(), name.to_string());
                Box::pin(async move {
                    let (result, source) = inner.lookup_family(&parsed, &display, family, deadline).await;
                    vec![FamilyAnswer { family, result, source, elapsed: started.elapsed() }]
                }) as FamilyFuture
            })
            .collect();
        Lookup::new(families, pending)
    }

    fn interface(&self) -> Option<&str> {
        Some(&self.inner.interface.name)
    }
}

impl Inner {
    fn route(&self) -> QueryRoute<'_> {
        QueryRoute {
            binder: self.binder.as_deref(),
            interface: Some(&self.interface),
            is_default: self.is_default,
        }
    }

    async fn lookup_family(
        &self,
        name: &Name,
        shown: &str,
        family: Family,
        deadline: Instant,
    ) -> (Result<Vec<IpAddr>, DnsError>, Option<Source>) {
        let key = Key::new(Some(self.interface.id()), shown, family);
        if let Some((cached, via)) = self.cache.as_ref().and_then(|c| c.get(&key, Instant::now())) {
            let result = match cached {
                Cached::Addresses(ips) => Ok(ips),
                Cached::NoData => Err(DnsError::NoAddress {
                    name: shown.into(),
                    families: family.label(),
                    via: via.clone(),
                }),
                Cached::NxDomain => Err(DnsError::NxDomain { name: shown.into(), via: via.clone() }),
            };
            return (result, Some(Source::Cache(via)));
        }
        let route = self.route();
        let first = route.via(self.servers[0]);
        let started = Instant::now();
        let Ok(Ok(_slot)) = timeout_at(deadline, self.in_flight.acquire()).await else {
            return (Err(DnsError::TimedOut { via: first, after: started.elapsed() }), None);
        };
        let mut last: Option<DnsError> = None;
        'rounds: for _ in 0..self.options.rounds.max(1) {
            for &server in self.servers.iter() {
                let now = Instant::now();
                if now >= deadline {
                    break 'rounds;
                }
                let attempt_deadline =
                    now.checked_add(self.options.query_timeout).map_or(deadline, |d| d.min(deadline));
                let via = route.via(server);
                match transport::ask(&route, server, name, family, attempt_deadline).await {
                    Ok(Outcome::Addresses { ips, ttl }) => {
                        self.remember(key, Cached::Addresses(ips.clone()), &via, Some(ttl));
                        return (Ok(ips), Some(Source::Resolver(via)));
                    }
                    Ok(Outcome::NoData { ttl }) => {
                        self.remember(key, Cached::NoData, &via, ttl);
                        let error = DnsError::NoAddress {
                            name: shown.into(),
                            families: family.label(),
                            via: via.clone(),
                        };
                        return (Err(error), Some(Source::Resolver(via)));
                    }
                    Ok(Outcome::NxDomain { ttl }) => {
                        self.remember(key, Cached::NxDomain, &via, ttl);
                        let error = DnsError::NxDomain { name: shown.into(), via: via.clone() };
                        return (Err(error), Some(Source::Resolver(via)));
                    }
                    Ok(Outcome::Truncated) => {
                        last = Some(DnsError::BadAnswer { via, reason: "truncated".into() });
                    }
                    Err(error) => {
                        tracing::debug!(name = shown, %family, %error, "DNS query failed, trying the next server");
                        last = Some(error);
                    }
                }
            }
        }
        let error = match last {
            Some(DnsError::TimedOut { via, .. }) => DnsError::TimedOut { via, after: started.elapsed() },
            Some(other) => other,
            None => DnsError::TimedOut { via: first, after: started.elapsed() },
        };
        (Err(error), None)
    }

    fn remember(&self, key: Key, value: Cached, via: &Via, ttl: Option<u32>) {
        if let (Some(cache), Some(mark)) = (&self.cache, self.mark) {
            cache.put_since(mark, key, value, via.clone(), ttl, Instant::now());
        }
    }
}
