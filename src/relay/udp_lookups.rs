//! The names an unconnected UDP session sends to, resolved outside its relay loop.
//!
//! A datagram to a domain the session has not resolved yet waits here while a lookup runs as a
//! task of its own (over the session socket's network: the resolver the outbound gave with the
//! socket), so replies to other destinations keep flowing. When the lookup ends, the waiting
//! datagrams are handed back with their address, or dropped (counted) when there is none.
//!
//! Bounds: at most [`MAX_WAITING_NAMES`] names waiting, [`MAX_WAITING_PER_NAME`] datagrams each
//! (more are dropped as "resolving"); [`MAX_KNOWN`] names remembered (forgotten all at once when
//! full); a name that did not resolve is remembered for [`NEGATIVE_TTL`]. Every lookup ends by
//! its deadline; dropping this (the session ends) cancels them.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::client::Datagram;
use crate::dns::{DnsError, Family, Resolve};

/// Names a session waits for at once.
pub const MAX_WAITING_NAMES: usize = 64;
/// Datagrams held per name while it resolves.
pub const MAX_WAITING_PER_NAME: usize = 16;
/// Resolved names a session remembers.
pub const MAX_KNOWN: usize = 64;
/// How long a name that did not resolve is remembered (its datagrams dropped at once).
pub const NEGATIVE_TTL: Duration = Duration::from_secs(10);

/// What to do with a datagram to a domain.
#[derive(Debug)]
pub enum Route {
    /// Send it to this address.
    Send(Datagram, SocketAddr),
    /// Drop it, for this reason.
    Drop(Datagram, &'static str),
    /// It waits for its name's lookup (see [`UdpLookups::next_done`]).
    Waiting,
}

/// The lookups of one session.
pub struct UdpLookups {
    resolver: Arc<dyn Resolve>,
    families: Vec<Family>,
    socket_is_v6: bool,
    timeout: Duration,
    known: HashMap<String, (Option<IpAddr>, Instant)>,
    waiting: HashMap<String, VecDeque<Datagram>>,
    running: JoinSet<(String, Result<Vec<IpAddr>, DnsError>)>,
}

impl std::fmt::Debug for UdpLookups {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UdpLookups")
            .field("resolver", &self.resolver)
            .field("known", &self.known.len())
            .field("waiting", &self.waiting.len())
            .finish_non_exhaustive()
    }
}

impl UdpLookups {
    /// Lookups with `resolver` for a socket of local address `local` (an IPv4 socket can only
    /// use A records; an IPv6 one prefers AAAA and sends to IPv4 as mapped addresses), each
    /// ending `timeout` after it starts.
    pub fn new(resolver: Arc<dyn Resolve>, local: SocketAddr, timeout: Duration) -> UdpLookups {
        let socket_is_v6 = local.is_ipv6();
        let families = if socket_is_v6 { vec![Family::V6, Family::V4] } else { vec![Family::V4] };
        UdpLookups {
            resolver,
            families,
            socket_is_v6,
            timeout,
            known: HashMap::new(),
            waiting: HashMap::new(),
            running: JoinSet::new(),
        }
    }

    /// True while a lookup runs (the session then also waits for [`UdpLookups::next_done`]).
    pub fn is_running(&self) -> bool {
        !self.running.is_empty()
    }

    /// Where `datagram` (to domain `name`) goes: a known address, a drop, or it waits for a
    /// lookup (started now if none runs for `name`).
    pub fn route(&mut self, name: &str, datagram: Datagram) -> Route {
        let now = Instant::now();
        if let Some((known, until)) = self.known.get(name) {
            match known {
                Some(ip) => {
                    let target = SocketAddr::new(*ip, datagram.destination.port);
                    return Route::Send(datagram, target);
                }
                None if *until > now => return Route::Drop(datagram, "its name did not resolve"),
                None => {
                    self.known.remove(name);
                }
            }
        }
        if let Some(queue) = self.waiting.get_mut(name) {
            if queue.len() >= MAX_WAITING_PER_NAME {
                return Route::Drop(datagram, "too many datagrams wait for its name to resolve");
            }
            queue.push_back(datagram);
            return Route::Waiting;
        }
        if self.waiting.len() >= MAX_WAITING_NAMES {
            return Route::Drop(datagram, "too many names are resolving");
        }
        self.waiting.insert(name.to_string(), VecDeque::from([datagram]));
        let lookup = self.resolver.lookup(name, &self.families, crate::deadline::after(now, self.timeout));
        let name = name.to_string();
        self.running.spawn(async move {
            let result = lookup.all().await.map(|answer| answer.addresses);
            (name, result)
        });
        Route::Waiting
    }

    /// Waits for the next lookup to end; returns its waiting datagrams with their route (every
    /// one `Send` or `Drop`). Pending forever while no lookup runs: guard with
    /// [`UdpLookups::is_running`].
    pub async fn next_done(&mut self) -> Vec<Route> {
        let (name, result) = match self.running.join_next().await {
            Some(Ok(done)) => done,
            // A lookup task that panicked or was cancelled: its datagrams wait no more.
            Some(Err(_)) | None => {
                return self
                    .waiting
                    .drain()
                    .flat_map(|(_, q)| q)
                    .map(|d| Route::Drop(d, "lookup task failed"))
                    .collect()
            }
        };
        let ip = match result {
            Ok(addresses) => self.pick(&addresses),
            Err(error) => {
                tracing::debug!(name, %error, "UDP destination did not resolve");
                None
            }
        };
        if self.known.len() >= MAX_KNOWN {
            self.known.clear();
        }
        self.known.insert(name.clone(), (ip, Instant::now() + NEGATIVE_TTL));
        let queue = self.waiting.remove(&name).unwrap_or_default();
        queue
            .into_iter()
            .map(|datagram| match ip {
                Some(ip) => {
                    let target = SocketAddr::new(ip, datagram.destination.port);
                    Route::Send(datagram, target)
                }
                None => Route::Drop(datagram, "its name did not resolve"),
            })
            .collect()
    }

    /// The first address the socket can send to: its own family first, IPv4 mapped on an IPv6
    /// socket.
    fn pick(&self, addresses: &[IpAddr]) -> Option<IpAddr> {
        pick_for_socket(addresses, self.socket_is_v6)
    }
}

/// The first of `addresses` a socket (IPv6 when `socket_is_v6`) can send to: the socket's family
/// first, else an IPv4 address mapped into IPv6 on an IPv6 socket.
pub fn pick_for_socket(addresses: &[IpAddr], socket_is_v6: bool) -> Option<IpAddr> {
    let same = addresses.iter().find(|ip| ip.is_ipv6() == socket_is_v6).copied();
    same.or_else(|| match addresses.iter().find(|ip| ip.is_ipv4()) {
        Some(IpAddr::V4(v4)) if socket_is_v6 => Some(IpAddr::V6(v4.to_ipv6_mapped())),
        _ => None,
    })
}
