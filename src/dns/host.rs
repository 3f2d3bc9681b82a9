//! The host app's resolver for one network: Android `DnsResolver.query` (or
//! `Network.getAllByName`) on that interface's `Network`, the Network Extension's resolver on
//! Apple (outside the tunnel). The FFI implements [`HostDns`] over
//! `PlatformInterface.resolve`; core code sees only this trait.
//!
//! Each family is asked for separately (so one that answers first is dialed first), within the
//! lookup's deadline. A host that does not resolve for netswitch answers
//! [`HostAnswer::ResolveYourself`]: the lookup then goes to the fallback resolver (the
//! interface's DNS servers, else the system resolver), said once per interface in a log line.
//! Host answers are cached for the TTL floor (the host gives no TTL).

use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio::sync::Semaphore;
use tokio::time::{timeout_at, Instant};

use super::cache::{Cached, DnsCache, Key, Mark};
use super::lookup::{checked_name, local_answer, FamilyFuture};
use super::{DnsError, Family, FamilyAnswer, Lookup, Resolve, Source, Via};
use crate::network::NetworkInterface;

/// What the host answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostAnswer {
    /// These addresses (possibly of other families too: netswitch keeps the one asked for).
    Addresses(Vec<IpAddr>),
    /// The host does not resolve for netswitch: use netswitch's own resolver.
    ResolveYourself,
}

/// Why the host could not resolve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostDnsError {
    /// The name does not exist (the host saw NXDOMAIN).
    NotFound(String),
    /// Anything else, in the host's words.
    Failed(String),
}

/// The host's answer, still to come.
pub type HostFuture = Pin<Box<dyn Future<Output = Result<HostAnswer, HostDnsError>> + Send + 'static>>;

/// The host side of resolution, implemented by the FFI layer.
pub trait HostDns: Send + Sync {
    /// Resolves `name` for `family` on `interface`'s network. Must not block the caller: the work
    /// happens in the returned future (netswitch stops waiting at its deadline).
    fn resolve(&self, name: &str, interface: &NetworkInterface, family: Family) -> HostFuture;
}

/// A [`Resolve`] that asks the host for one interface.
#[derive(Clone)]
pub struct HostResolver {
    inner: Arc<Inner>,
}

struct Inner {
    host: Arc<dyn HostDns>,
    interface: NetworkInterface,
    cache: Option<Arc<DnsCache>>,
    /// The cache when this resolver was made: answers are remembered unless it was flushed since.
    mark: Option<Mark>,
    in_flight: Arc<Semaphore>,
    fallback: Arc<dyn Resolve>,
    told_fallback: AtomicBool,
}

impl std::fmt::Debug for HostResolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostResolver")
            .field("interface", &self.inner.interface.name)
            .field("fallback", &self.inner.fallback)
            .finish_non_exhaustive()
    }
}

impl HostResolver {
    /// Asks `host` for names on `interface`; at most `in_flight` questions at once; answers
    /// cached in `cache` (unless it is flushed after this call); `fallback` answers when the host
    /// says "resolve yourself".
    pub fn new(
        host: Arc<dyn HostDns>,
        interface: NetworkInterface,
        cache: Option<Arc<DnsCache>>,
        in_flight: Arc<Semaphore>,
        fallback: Arc<dyn Resolve>,
    ) -> HostResolver {
        let mark = cache.as_ref().map(|c| c.mark());
        let told_fallback = AtomicBool::new(false);
        let inner = Inner { host, interface, cache, mark, in_flight, fallback, told_fallback };
        HostResolver { inner: Arc::new(inner) }
    }
}

impl Resolve for HostResolver {
    fn lookup(&self, name: &str, families: &[Family], deadline: Instant) -> Lookup {
        if let Some(local) = local_answer(name, families) {
            return local;
        }
        if let Err(failed) = checked_name(name, families) {
            return failed;
        }
        let started = Instant::now();
        let pending = families
            .iter()
            .map(|&family| {
                let (inner, name) = (self.inner.clone(), name.to_string());
                Box::pin(async move { inner.lookup_family(&name, family, deadline, started).await })
                    as FamilyFuture
            })
            .collect();
        Lookup::new(families, pending)
    }

    fn interface(&self) -> Option<&str> {
        Some(&self.inner.interface.name)
    }
}

impl Inner {
    fn via(&self) -> Via {
        Via::Host { interface: self.interface.name.clone() }
    }

    async fn lookup_family(
        &self,
        name: &str,
        family: Family,
        deadline: Instant,
        started: Instant,
    ) -> Vec<FamilyAnswer> {
        let answer =
            |result, source| vec![FamilyAnswer { family, result, source, elapsed: started.elapsed() }];
        let key = Key::new(Some(self.interface.id()), name, family);
        if let Some((cached, via)) = self.cache.as_ref().and_then(|c| c.get(&key, Instant::now())) {
            let result = match cached {
                Cached::Addresses(ips) => Ok(ips),
                Cached::NoData => {
                    Err(DnsError::NoAddress { name: name.into(), families: family.label(), via: via.clone() })
                }
                Cached::NxDomain => Err(DnsError::NxDomain { name: name.into(), via: via.clone() }),
            };
            return answer(result, Some(Source::Cache(via)));
        }
        let via = self.via();
        let timed_out = || DnsError::TimedOut { via: self.via(), after: started.elapsed() };
        // The slot is given back before a fallback lookup, which takes one of the same bound.
        let reply = {
            let Ok(Ok(_slot)) = timeout_at(deadline, self.in_flight.acquire()).await else {
                return answer(Err(timed_out()), None);
            };
            match timeout_at(deadline, self.host.resolve(name, &self.interface, family)).await {
                Err(_) => return answer(Err(timed_out()), None),
                Ok(reply) => reply,
            }
        };
        let now = Instant::now();
        let remember = |value, via: &Via| {
            if let (Some(cache), Some(mark)) = (&self.cache, self.mark) {
                cache.put_since(mark, key.clone(), value, via.clone(), None, now);
            }
        };
        let result = match reply {
            Ok(HostAnswer::ResolveYourself) => {
                if !self.told_fallback.swap(true, Ordering::Relaxed) {
                    tracing::info!(
                        interface = %self.interface.name, fallback = ?self.fallback,
                        "the host does not resolve names for netswitch; using netswitch's own resolver"
                    );
                }
                let mut lookup = self.fallback.lookup(name, &[family], deadline);
                let mut answers = Vec::new();
                while let Some(answer) = lookup.next().await {
                    answers.push(answer);
                }
                return answers;
            }
            Ok(HostAnswer::Addresses(all)) => {
                let mut ips: Vec<IpAddr> = Vec::new();
                for ip in all.into_iter().filter(|ip| Family::of(*ip) == family) {
                    if !ips.contains(&ip) {
                        ips.push(ip);
                    }
                }
                if ips.is_empty() {
                    remember(Cached::NoData, &via);
                    Err(DnsError::NoAddress { name: name.into(), families: family.label(), via: via.clone() })
                } else {
                    remember(Cached::Addresses(ips.clone()), &via);
                    Ok(ips)
                }
            }
            Err(HostDnsError::NotFound(_)) => {
                remember(Cached::NxDomain, &via);
                Err(DnsError::NxDomain { name: name.into(), via: via.clone() })
            }
            Err(HostDnsError::Failed(reason)) => return answer(Err(DnsError::Host { via, reason }), None),
        };
        answer(result, Some(Source::Resolver(via)))
    }
}
