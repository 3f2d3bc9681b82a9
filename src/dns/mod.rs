//! Name resolution over the network that carries the connection (DESIGN §3.10).
//!
//! A name is looked up by the resolver of the route a dial attempt takes, never once for all of
//! them: a fallback lane over cellular asks cellular's DNS servers over sockets bound to
//! cellular, so it never dials an address that Wi-Fi's DNS returned.
//!
//! - [`interface`]: [`InterfaceResolver`], queries to one interface's DNS servers over sockets
//!   opened with the platform binder (UDP, TCP when the answer is truncated), A and AAAA in
//!   parallel, answers per family as they arrive;
//! - [`host`]: [`HostResolver`], the host app's resolver for one network ([`HostDns`]);
//! - [`system`]: [`SystemResolver`], `getaddrinfo` on a bounded set of threads, the last resort;
//! - [`cache`]: [`DnsCache`], answers per (interface, name, family) for their TTL, clamped;
//! - [`resolvers`]: [`Resolvers`], which picks the resolver of a route and owns the cache;
//! - [`wire`] and [`transport`]: the DNS messages (hickory-proto: no hand-written parser) and
//!   one question to one server over one bound socket;
//! - [`lookup`]: [`Lookup`], a lookup in progress, and the local answers (IP literals,
//!   `localhost`).
//!
//! Guarantees of every resolver: a lookup ends by its deadline (the dial's `connect_timeout`),
//! the number of queries or threads in flight is bounded, nothing runs on tokio's blocking pool,
//! an invalid name fails before any socket exists, and errors name the resolver asked
//! ([`Via`]). Dropping a [`Lookup`] cancels it (its sockets close).

pub mod cache;
pub mod error;
pub mod host;
pub mod interface;
pub mod lookup;
pub mod resolvers;
pub mod settings;
pub mod system;
pub mod transport;
pub mod wire;

use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

use tokio::time::Instant;

pub use cache::DnsCache;
pub use error::{DnsError, Via};
pub use host::{HostDns, HostResolver};
pub use interface::InterfaceResolver;
pub use lookup::{Answer, Lookup};
pub use resolvers::Resolvers;
pub use settings::{DnsSettings, ResolverChoice};
pub use system::SystemResolver;

/// An address family to look up: A (IPv4) or AAAA (IPv6) records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Family {
    /// IPv4: A records.
    V4,
    /// IPv6: AAAA records.
    V6,
}

impl Family {
    /// The family of `ip` (an IPv4-mapped IPv6 address counts as IPv6).
    pub fn of(ip: IpAddr) -> Family {
        if ip.is_ipv4() {
            Family::V4
        } else {
            Family::V6
        }
    }

    /// "IPv4" / "IPv6".
    pub fn label(self) -> &'static str {
        match self {
            Family::V4 => "IPv4",
            Family::V6 => "IPv6",
        }
    }

    /// "A" / "AAAA", the record type asked for.
    pub fn record(self) -> &'static str {
        match self {
            Family::V4 => "A",
            Family::V6 => "AAAA",
        }
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.record())
    }
}

/// Who answered one family of a lookup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// An earlier answer of `via`, still within its TTL: nothing was sent.
    Cache(Via),
    /// `via` answered now.
    Resolver(Via),
    /// Answered without asking anyone: an IP literal or a `localhost` name (RFC 6761 §6.3).
    Local,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Cache(via) => write!(f, "cache ({via})"),
            Source::Resolver(via) => write!(f, "{via}"),
            Source::Local => f.write_str("local (IP literal or localhost)"),
        }
    }
}

/// The answer for one family of a lookup.
#[derive(Debug)]
pub struct FamilyAnswer {
    /// Which family.
    pub family: Family,
    /// The addresses (never empty), or why there are none.
    pub result: Result<Vec<IpAddr>, DnsError>,
    /// Who answered; `None` when nobody did (a timeout, a bind failure, an invalid name).
    pub source: Option<Source>,
    /// Time from the start of the lookup to this answer.
    pub elapsed: Duration,
}

impl fmt::Display for FamilyAnswer {
    /// "AAAA from DNS 10.0.0.1 on wlan0 in 3 ms: 2001:db8::1" or "A: <error> (2000 ms)".
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.elapsed.as_millis();
        match (&self.result, &self.source) {
            (Ok(ips), source) => {
                let list: Vec<String> = ips.iter().map(ToString::to_string).collect();
                match source {
                    Some(source) => write!(f, "{} from {source} in {ms} ms: {}", self.family, list.join(" ")),
                    None => write!(f, "{} in {ms} ms: {}", self.family, list.join(" ")),
                }
            }
            (Err(error), _) => write!(f, "{}: {error} ({ms} ms)", self.family),
        }
    }
}

/// A resolver for one route: an interface's DNS servers, the host's resolver for it, or the
/// system resolver. Cheap to share (`Arc<dyn Resolve>`).
pub trait Resolve: Send + Sync + fmt::Debug {
    /// Starts looking `name` up for `families` (all at once); every family's answer arrives by
    /// `deadline`. An invalid name is answered at once with [`DnsError::InvalidName`] for every
    /// family, before any socket exists. IP literals and `localhost` names are answered locally.
    fn lookup(&self, name: &str, families: &[Family], deadline: Instant) -> Lookup;

    /// The interface this resolver asks over (`None`: the system route).
    fn interface(&self) -> Option<&str>;
}
