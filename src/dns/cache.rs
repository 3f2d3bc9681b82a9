//! Answers remembered per (interface, name, family) for their TTL, clamped to a floor and a
//! cap, negative answers (NXDOMAIN, NODATA) for at most the negative cap; flushed per interface
//! when it goes away or its DNS servers change. Bounded: when full, expired entries go first,
//! then the one closest to expiry; an entry keeps at most [`MAX_ADDRESSES`] addresses. One cache serves every interface: the key keeps their answers
//! apart, so cellular never gets Wi-Fi's. An answer to a question asked before a flush is not
//! remembered ([`DnsCache::mark`], [`DnsCache::put_since`]): it may come from the old network.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

use super::{Family, Via};
use crate::network::InterfaceId;

/// Most addresses remembered for one key: the first ones of the answer. A hostile server's 64 KiB
/// answer (about 4000 addresses, 68 KB) would otherwise make each entry that large; a dial never
/// gets to try that many addresses before its deadline.
pub const MAX_ADDRESSES: usize = 64;

/// What is remembered for one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cached {
    /// Addresses of that family.
    Addresses(Vec<IpAddr>),
    /// The name exists but has no address of that family.
    NoData,
    /// The name does not exist.
    NxDomain,
}

/// Cache key: the interface the answer came over (`None`: the system route), the name (lower
/// case, no final dot), the family.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Key {
    /// The interface (name and index).
    pub interface: Option<InterfaceId>,
    /// The normalised name.
    pub name: String,
    /// The family.
    pub family: Family,
}

impl Key {
    /// A key with `name` normalised.
    pub fn new(interface: Option<InterfaceId>, name: &str, family: Family) -> Key {
        let name = name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase();
        Key { interface, name, family }
    }
}

/// How long answers are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TtlPolicy {
    /// Positive answers are kept at least this long (TTL 0 would requery on every dial), and
    /// this long when the resolver gives no TTL (the host's resolver). Default 5 s.
    pub floor: Duration,
    /// Positive answers are kept at most this long. Default 1 h.
    pub cap: Duration,
    /// Negative answers are kept for the SOA's TTL (RFC 2308) but at most this long, and this
    /// long when the server sent no SOA. Default 30 s.
    pub negative_cap: Duration,
}

impl Default for TtlPolicy {
    fn default() -> Self {
        TtlPolicy {
            floor: Duration::from_secs(5),
            cap: Duration::from_secs(3600),
            negative_cap: Duration::from_secs(30),
        }
    }
}

#[derive(Debug)]
struct Entry {
    expires: Instant,
    value: Cached,
    via: Via,
}

/// The cache's number of flushes when a resolver chose its servers ([`DnsCache::mark`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mark(u64);

/// The cache; share it behind an `Arc`.
#[derive(Debug)]
pub struct DnsCache {
    entries: Mutex<HashMap<Key, Entry>>,
    /// Flushes so far; changed only with `entries` locked.
    flushes: AtomicU64,
    policy: TtlPolicy,
    capacity: usize,
}

impl DnsCache {
    /// An empty cache of at most `capacity` entries (at least 1). Capacity 0 in the settings
    /// turns caching off: see [`crate::dns::DnsSettings::cache_capacity`].
    pub fn new(policy: TtlPolicy, capacity: usize) -> DnsCache {
        DnsCache {
            entries: Mutex::new(HashMap::new()),
            flushes: AtomicU64::new(0),
            policy,
            capacity: capacity.max(1),
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<Key, Entry>> {
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The live entry for `key` at `now` and who gave it, if any.
    pub fn get(&self, key: &Key, now: Instant) -> Option<(Cached, Via)> {
        let mut entries = self.lock();
        match entries.get(key) {
            Some(entry) if entry.expires > now => Some((entry.value.clone(), entry.via.clone())),
            Some(_) => {
                entries.remove(key);
                None
            }
            None => None,
        }
    }

    /// How much longer the live entry for `key` is kept at `now` (`None`: no live entry). The
    /// TUN's DNS hijack gives it to apps as the TTL of its answers.
    pub fn remaining(&self, key: &Key, now: Instant) -> Option<Duration> {
        let entries = self.lock();
        entries
            .get(key)
            .map(|entry| entry.expires.saturating_duration_since(now))
            .filter(|left| !left.is_zero())
    }

    /// Where the cache stands now: take it when choosing the servers (the route) to ask, and put
    /// their answers with [`DnsCache::put_since`].
    pub fn mark(&self) -> Mark {
        Mark(self.flushes.load(Ordering::Acquire))
    }

    /// As [`DnsCache::put`], unless an interface was flushed since `mark` was taken: the answer
    /// may then come from the network that was just forgotten (its old DNS servers, or a route
    /// of an older snapshot), and is not remembered (returns zero). Any interface's flush
    /// counts: flushes are rare, and a lost entry only costs a query.
    pub fn put_since(
        &self,
        mark: Mark,
        key: Key,
        value: Cached,
        via: Via,
        ttl: Option<u32>,
        now: Instant,
    ) -> Duration {
        self.insert(Some(mark), key, value, via, ttl, now)
    }

    /// Remembers `value` (answered by `via`) for `key`; `ttl` is the answer's TTL in seconds
    /// (`None`: no TTL known). Returns how long it will be kept.
    pub fn put(&self, key: Key, value: Cached, via: Via, ttl: Option<u32>, now: Instant) -> Duration {
        self.insert(None, key, value, via, ttl, now)
    }

    fn insert(
        &self,
        mark: Option<Mark>,
        key: Key,
        value: Cached,
        via: Via,
        ttl: Option<u32>,
        now: Instant,
    ) -> Duration {
        let value = match value {
            Cached::Addresses(mut ips) if ips.len() > MAX_ADDRESSES => {
                ips.truncate(MAX_ADDRESSES);
                ips.shrink_to_fit();
                Cached::Addresses(ips)
            }
            other => other,
        };
        let p = self.policy;
        let keep = match (&value, ttl) {
            (Cached::Addresses(_), Some(ttl)) => {
                Duration::from_secs(ttl.into()).clamp(p.floor, p.cap.max(p.floor))
            }
            (Cached::Addresses(_), None) => p.floor,
            (_, Some(ttl)) => Duration::from_secs(ttl.into()).min(p.negative_cap),
            (_, None) => p.negative_cap,
        };
        let Some(expires) = now.checked_add(keep).filter(|_| !keep.is_zero()) else { return Duration::ZERO };
        let mut entries = self.lock();
        if mark.is_some_and(|mark| mark != self.mark()) {
            return Duration::ZERO;
        }
        if entries.len() >= self.capacity && !entries.contains_key(&key) {
            entries.retain(|_, entry| entry.expires > now);
            if entries.len() >= self.capacity {
                let soonest = entries.iter().min_by_key(|(_, e)| e.expires).map(|(k, _)| k.clone());
                if let Some(soonest) = soonest {
                    entries.remove(&soonest);
                }
            }
        }
        entries.insert(key, Entry { expires, value, via });
        keep
    }

    /// Forgets everything learnt over `interface`; returns how many entries went.
    pub fn flush_interface(&self, interface: &InterfaceId) -> usize {
        let mut entries = self.lock();
        self.flushes.fetch_add(1, Ordering::AcqRel);
        let before = entries.len();
        entries.retain(|key, _| key.interface.as_ref() != Some(interface));
        before - entries.len()
    }

    /// Number of entries (live or expired but not yet purged).
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4(ip: &str) -> Cached {
        Cached::Addresses(vec![ip.parse().unwrap()])
    }

    fn id(name: &str) -> Option<InterfaceId> {
        Some(InterfaceId { name: name.into(), index: 3 })
    }

    #[test]
    fn ttl_floor_cap_and_expiry() {
        let policy = TtlPolicy {
            floor: Duration::from_secs(5),
            cap: Duration::from_secs(60),
            negative_cap: Duration::from_secs(10),
        };
        let cache = DnsCache::new(policy, 16);
        let now = Instant::now();
        let key = |name| Key::new(id("wlan0"), name, Family::V4);
        let put = |name, value, ttl| cache.put(key(name), value, Via::System, ttl, now);
        assert_eq!(put("zero.test", v4("192.0.2.1"), Some(0)), Duration::from_secs(5));
        assert_eq!(put("big.test", v4("192.0.2.2"), Some(86400)), Duration::from_secs(60));
        assert_eq!(put("host.test", v4("192.0.2.3"), None), Duration::from_secs(5));
        assert_eq!(put("nx.test", Cached::NxDomain, Some(900)), Duration::from_secs(10));
        assert_eq!(put("nodata.test", Cached::NoData, None), Duration::from_secs(10));
        let get = |name, after| cache.get(&key(name), now + Duration::from_secs(after)).map(|(v, _)| v);
        assert_eq!(get("ZERO.test.", 4), Some(v4("192.0.2.1")));
        assert_eq!(get("zero.test", 5), None);
        assert_eq!(get("big.test", 59), Some(v4("192.0.2.2")));
        assert_eq!(get("nx.test", 9), Some(Cached::NxDomain));
        let left = |name, after| cache.remaining(&key(name), now + Duration::from_secs(after));
        assert_eq!(left("big.test", 20), Some(Duration::from_secs(40)));
        assert_eq!(left("zero.test", 5), None, "expired");
        assert_eq!(left("never.test", 0), None);
    }

    #[test]
    fn keyed_by_interface_and_family_and_flushed_per_interface() {
        let cache = DnsCache::new(TtlPolicy::default(), 16);
        let now = Instant::now();
        cache.put(Key::new(id("wlan0"), "a.test", Family::V4), v4("192.0.2.1"), Via::System, Some(60), now);
        cache.put(
            Key::new(id("rmnet0"), "a.test", Family::V4),
            v4("198.51.100.1"),
            Via::System,
            Some(60),
            now,
        );
        let get = |i, f| cache.get(&Key::new(id(i), "a.test", f), now).map(|(v, _)| v);
        assert_eq!(get("rmnet0", Family::V4), Some(v4("198.51.100.1")));
        assert_eq!(get("wlan0", Family::V6), None);
        assert_eq!(cache.flush_interface(&InterfaceId { name: "wlan0".into(), index: 3 }), 1);
        assert_eq!(get("wlan0", Family::V4), None);
        assert_eq!(get("rmnet0", Family::V4), Some(v4("198.51.100.1")));
    }

    #[test]
    fn bounded() {
        let cache = DnsCache::new(TtlPolicy::default(), 2);
        let now = Instant::now();
        for (i, ttl) in [(1, 100), (2, 50), (3, 200)] {
            let key = Key::new(id("e"), &format!("n{i}.test"), Family::V4);
            cache.put(key, v4("192.0.2.1"), Via::System, Some(ttl), now);
        }
        assert_eq!(cache.len(), 2);
        assert!(
            cache.get(&Key::new(id("e"), "n2.test", Family::V4), now).is_none(),
            "soonest to expire went"
        );
    }
}
