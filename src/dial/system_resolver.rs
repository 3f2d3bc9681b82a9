//! The system resolver (`getaddrinfo`) with a deadline and a bound on concurrent lookups.
//!
//! `getaddrinfo` blocks and cannot be cancelled: with a DNS server that never answers, one call
//! takes as long as `resolv.conf`'s timeouts say (up to minutes). So:
//!
//! - every lookup ends by its caller's deadline: waiting for a free slot and for the answer both
//!   count, and a lookup that missed its deadline fails with [`io::ErrorKind::TimedOut`];
//! - at most [`SystemResolver::limit`] lookups run at once, each on its own thread, which holds
//!   its slot (a semaphore permit) until `getaddrinfo` returns, even when the caller gave up and
//!   dropped its future. However many lookups hang, the process never has more than `limit`
//!   resolver threads; tokio's blocking pool is not used;
//! - IP literals and `localhost` / `*.localhost` (RFC 6761 §6.3: `::1` and `127.0.0.1`) are
//!   answered without `getaddrinfo`, so they are never queued behind stuck lookups.
//!
//! A name that does not need a slot never waits; one that does waits only while `limit` lookups
//! are in flight. Answers are returned in the system's order with duplicates removed.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs};
use std::sync::{Arc, OnceLock};

use tokio::sync::{oneshot, Semaphore};
use tokio::time::Instant;

/// How many `getaddrinfo` calls [`SystemResolver::shared`] runs at once.
pub const DEFAULT_MAX_LOOKUPS: usize = 16;

/// The blocking lookup a resolver thread runs (`getaddrinfo` outside tests).
type LookupFn = fn(&str, u16) -> io::Result<Vec<SocketAddr>>;

/// Runs system lookups with a deadline and at most `limit` at once (see the module docs).
#[derive(Debug)]
pub struct SystemResolver {
    permits: Arc<Semaphore>,
    limit: usize,
    lookup: LookupFn,
}

impl SystemResolver {
    /// A resolver that runs at most `limit` (at least 1) `getaddrinfo` calls at once.
    pub fn new(limit: usize) -> SystemResolver {
        SystemResolver::with_lookup(limit, getaddrinfo)
    }

    fn with_lookup(limit: usize, lookup: LookupFn) -> SystemResolver {
        let limit = limit.max(1);
        SystemResolver { permits: Arc::new(Semaphore::new(limit)), limit, lookup }
    }

    /// The process-wide resolver (bound [`DEFAULT_MAX_LOOKUPS`]) every dial without its own
    /// resolver uses: the bound is on the process's threads, so it is shared.
    pub fn shared() -> &'static SystemResolver {
        static SHARED: OnceLock<SystemResolver> = OnceLock::new();
        SHARED.get_or_init(|| SystemResolver::new(DEFAULT_MAX_LOOKUPS))
    }

    /// The most lookups (threads) that run at once.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// How many lookup threads are running now, including those whose caller gave up.
    pub fn in_flight(&self) -> usize {
        self.limit - self.permits.available_permits()
    }

    /// The addresses of `name` with `port` (possibly none), by `deadline`: IP literals and
    /// localhost names at once, anything else from `getaddrinfo` on a resolver thread. Errors:
    /// `TimedOut` when no slot freed up or no answer came by `deadline`, otherwise the system
    /// resolver's. Cancel-safe: dropping the future leaves the thread to finish and free its slot.
    pub async fn lookup(&self, name: &str, port: u16, deadline: Instant) -> io::Result<Vec<SocketAddr>> {
        if let Some(addresses) = answer_locally(name, port) {
            return Ok(addresses);
        }
        let started = Instant::now();
        let permit = match tokio::time::timeout_at(deadline, self.permits.clone().acquire_owned()).await {
            Ok(Ok(permit)) => permit,
            Ok(Err(_)) => return Err(io::Error::other("system resolver closed")),
            Err(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "system resolver busy ({} lookups in flight), no slot within {} ms",
                        self.limit,
                        started.elapsed().as_millis()
                    ),
                ))
            }
        };
        let (sender, receiver) = oneshot::channel();
        let lookup = self.lookup;
        let owned_name = name.to_string();
        std::thread::Builder::new()
            .name("netswitch-resolve".into())
            .spawn(move || {
                let answer = lookup(&owned_name, port);
                // The slot is free once getaddrinfo returned, whether or not anyone still waits.
                drop(permit);
                let _ = sender.send(answer);
            })
            .map_err(|error| io::Error::new(error.kind(), format!("start a resolver thread: {error}")))?;
        match tokio::time::timeout_at(deadline, receiver).await {
            Ok(Ok(answer)) => Ok(deduplicated(answer?)),
            Ok(Err(_)) => Err(io::Error::other("resolver thread ended without an answer")),
            Err(_) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("system resolver gave no answer within {} ms", started.elapsed().as_millis()),
            )),
        }
    }
}

/// `getaddrinfo` through the standard library.
fn getaddrinfo(name: &str, port: u16) -> io::Result<Vec<SocketAddr>> {
    Ok((name, port).to_socket_addrs()?.collect())
}

/// The answer for names that need no resolver: an IP literal, or a localhost name (RFC 6761).
fn answer_locally(name: &str, port: u16) -> Option<Vec<SocketAddr>> {
    if let Ok(ip) = name.parse::<IpAddr>() {
        return Some(vec![SocketAddr::new(ip, port)]);
    }
    let name = name.strip_suffix('.').unwrap_or(name);
    let is_localhost = name.eq_ignore_ascii_case("localhost")
        || name.len() > ".localhost".len()
            && name
                .get(name.len() - ".localhost".len()..)
                .is_some_and(|t| t.eq_ignore_ascii_case(".localhost"));
    is_localhost.then(|| {
        vec![
            SocketAddr::new(Ipv6Addr::LOCALHOST.into(), port),
            SocketAddr::new(Ipv4Addr::LOCALHOST.into(), port),
        ]
    })
}

fn deduplicated(found: Vec<SocketAddr>) -> Vec<SocketAddr> {
    let mut addresses: Vec<SocketAddr> = Vec::with_capacity(found.len());
    for address in found {
        if !addresses.contains(&address) {
            addresses.push(address);
        }
    }
    addresses
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::time::Duration;

    use super::*;

    /// Lookups that block until the test opens the gate; they count as they start.
    static GATE: Mutex<bool> = Mutex::new(false);
    static STARTED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

    fn blocking_lookup(_name: &str, port: u16) -> io::Result<Vec<SocketAddr>> {
        STARTED.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        while !*GATE.lock().unwrap() {
            std::thread::sleep(Duration::from_millis(5));
        }
        Ok(vec![SocketAddr::from(([192, 0, 2, 1], port)), SocketAddr::from(([192, 0, 2, 1], port))])
    }

    fn soon(ms: u64) -> Instant {
        Instant::now() + Duration::from_millis(ms)
    }

    #[tokio::test]
    async fn literals_and_localhost_need_no_lookup() {
        // A resolver whose only slot is taken by a lookup that never returns in this test.
        let resolver = SystemResolver::with_lookup(1, |_, _| {
            std::thread::sleep(Duration::from_secs(3600));
            Ok(Vec::new())
        });
        let stuck = resolver.lookup("stuck.test", 1, soon(50)).await.unwrap_err();
        assert_eq!(stuck.kind(), io::ErrorKind::TimedOut, "{stuck}");
        assert_eq!(resolver.in_flight(), 1);
        let v4: SocketAddr = "127.0.0.1:80".parse().unwrap();
        let v6: SocketAddr = "[::1]:80".parse().unwrap();
        assert_eq!(resolver.lookup("127.0.0.1", 80, soon(50)).await.unwrap(), [v4]);
        assert_eq!(resolver.lookup("::1", 80, soon(50)).await.unwrap(), [v6]);
        for name in ["localhost", "LocalHost.", "a.b.localhost", "x.LOCALHOST."] {
            assert_eq!(resolver.lookup(name, 80, soon(50)).await.unwrap(), [v6, v4], "{name}");
        }
        for name in ["notlocalhost", ".localhost", "localhost.com"] {
            assert!(answer_locally(name, 80).is_none(), "{name}");
        }
        let busy = resolver.lookup("other.test", 1, soon(50)).await.unwrap_err();
        assert_eq!(busy.kind(), io::ErrorKind::TimedOut);
        assert!(busy.to_string().contains("busy"), "{busy}");
    }

    /// A caller that gives up does not free the slot while its thread is still in the lookup:
    /// the bound is on threads, not on waiting futures.
    #[tokio::test]
    async fn slot_is_held_by_the_thread_until_the_lookup_returns() {
        let resolver = SystemResolver::with_lookup(2, blocking_lookup);
        for name in ["a.test", "b.test", "c.test"] {
            let error = resolver.lookup(name, 7, soon(100)).await.unwrap_err();
            assert_eq!(error.kind(), io::ErrorKind::TimedOut, "{name}: {error}");
        }
        // Two threads are blocked; the third caller never got a slot, so never started a thread.
        assert_eq!(resolver.in_flight(), 2);
        assert_eq!(STARTED.load(std::sync::atomic::Ordering::SeqCst), 2);
        *GATE.lock().unwrap() = true;
        let addresses = resolver.lookup("d.test", 7, soon(10_000)).await.unwrap();
        assert_eq!(addresses, [SocketAddr::from(([192, 0, 2, 1], 7))], "duplicates removed");
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while resolver.in_flight() > 0 && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(resolver.in_flight(), 0, "every thread freed its slot once its lookup returned");
    }
}
