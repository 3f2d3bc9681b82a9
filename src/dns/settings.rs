//! How names are resolved: which resolver a route uses, per-query timeout, rounds, cache TTL
//! bounds, and the bounds on work in flight (config section `dns`).

use std::time::Duration;

use super::cache::TtlPolicy;

/// Which resolver answers for an interface.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ResolverChoice {
    /// The interface's DNS servers when it has some, else the host's resolver when the host
    /// gave one, else the system resolver (said in a log line). The default.
    #[default]
    Auto,
    /// The interface's DNS servers (as `auto` when it has none).
    Interface,
    /// The host's resolver for every interface (Android `DnsResolver` / `Network.getAllByName`,
    /// the Network Extension's resolver on Apple); the interface's servers when the host gave
    /// none, else the system resolver.
    Host,
    /// The system resolver (`getaddrinfo`) for everything: the old behaviour, for desktops.
    System,
}

impl std::fmt::Display for ResolverChoice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ResolverChoice::Auto => "auto",
            ResolverChoice::Interface => "interface",
            ResolverChoice::Host => "host",
            ResolverChoice::System => "system",
        })
    }
}

/// Default time one DNS server gets for one question before the next server is asked.
pub const DEFAULT_QUERY_TIMEOUT: Duration = Duration::from_secs(2);
/// Default number of walks through an interface's server list within a lookup's deadline.
pub const DEFAULT_ROUNDS: usize = 2;
/// Default number of cached answers, all interfaces together.
pub const DEFAULT_CACHE_CAPACITY: usize = 1024;
/// Default number of queries in flight at once per interface.
pub const DEFAULT_MAX_CONCURRENT: usize = 64;
/// Default number of `getaddrinfo` calls (threads) the system resolver runs at once.
pub const DEFAULT_SYSTEM_MAX_LOOKUPS: usize = 16;

/// Resolver settings. Every lookup also ends by the dial's deadline (`connect_timeout`).
/// Build it from `DnsSettings::default()` and set fields (it will grow).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct DnsSettings {
    /// Which resolver answers for an interface. Default `auto`.
    pub resolver: ResolverChoice,
    /// Time one server gets for one question before the next one is asked. Default 2 s.
    pub query_timeout: Duration,
    /// How many times the server list is walked within the deadline (at least 1). Default 2.
    pub rounds: usize,
    /// TTL floor and cap, negative-answer cap. Defaults 5 s, 1 h, 30 s.
    pub ttl: TtlPolicy,
    /// Cached answers, all interfaces together; 0 turns the cache off. Default 1024.
    pub cache_capacity: usize,
    /// Queries in flight at once per interface (at least 1); more wait for a slot within their
    /// deadline. Default 64.
    pub max_concurrent: usize,
    /// `getaddrinfo` calls (each on its own thread) the system resolver runs at once (at least
    /// 1); more wait for a slot within their deadline. Default 16.
    pub system_max_lookups: usize,
}

impl Default for DnsSettings {
    fn default() -> Self {
        DnsSettings {
            resolver: ResolverChoice::Auto,
            query_timeout: DEFAULT_QUERY_TIMEOUT,
            rounds: DEFAULT_ROUNDS,
            ttl: TtlPolicy::default(),
            cache_capacity: DEFAULT_CACHE_CAPACITY,
            max_concurrent: DEFAULT_MAX_CONCURRENT,
            system_max_lookups: DEFAULT_SYSTEM_MAX_LOOKUPS,
        }
    }
}
