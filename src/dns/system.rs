//! The system resolver (`getaddrinfo`), the last resort, with a deadline and a bound on
//! concurrent lookups.
//!
//! `getaddrinfo` blocks and cannot be cancelled: with a DNS server that never answers, one call
//! takes as long as `resolv.conf`'s timeouts say (up to minutes). So:
//!
//! - every lookup ends by its caller's deadline: waiting for a free slot and for the answer both
//!   count, and a lookup that missed its deadline fails with [`DnsError::TimedOut`];
//! - at most [`SystemResolver::limit`] lookups run at once, each on its own thread, which holds
//!   its slot (a semaphore permit) until `getaddrinfo` returns, even when the caller gave up and
//!   dropped its future. However many lookups hang, the process never has more than `limit`
//!   resolver threads; tokio's blocking pool is not used;
//! - IP literals and `localhost` / `*.localhost` (RFC 6761 §6.3: `::1` and `127.0.0.1`) are
//!   answered without `getaddrinfo`, so they are never queued behind stuck lookups; invalid
//!   names fail before any thread starts.
//!
//! One `getaddrinfo` call answers every family asked (`AF_UNSPEC`, or the one family). A name
//! the system says does not exist (`EAI_NONAME`) is [`DnsError::NxDomain`]. Answers are in the
//! system's order with duplicates removed.

use std::ffi::{CStr, CString};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::{Arc, OnceLock};

use tokio::sync::{oneshot, Semaphore};
use tokio::time::Instant;

use super::lookup::{checked_name, local_answer, FamilyFuture};
use super::settings::DEFAULT_SYSTEM_MAX_LOOKUPS;
use super::{DnsError, Family, FamilyAnswer, Lookup, Resolve, Source, Via};

/// Why `getaddrinfo` failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SystemLookupError {
    /// The name does not exist (`EAI_NONAME`).
    NotFound,
    /// Anything else, as the system describes it.
    Failed(String),
}

/// The blocking lookup a resolver thread runs (`getaddrinfo` outside tests): the addresses of a
/// name, of one family or (`None`) of every family.
pub type LookupFn = fn(&str, Option<Family>) -> Result<Vec<IpAddr>, SystemLookupError>;

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

    /// A resolver whose threads run `lookup` instead of `getaddrinfo` (tests).
    pub fn with_lookup(limit: usize, lookup: LookupFn) -> SystemResolver {
        let limit = limit.max(1);
        SystemResolver { permits: Arc::new(Semaphore::new(limit)), limit, lookup }
    }

    /// The process-wide resolver (bound [`DEFAULT_SYSTEM_MAX_LOOKUPS`]) that dials use unless
    /// given another: the bound is on the process's threads, so it is shared.
    pub fn shared() -> &'static Arc<SystemResolver> {
        static SHARED: OnceLock<Arc<SystemResolver>> = OnceLock::new();
        SHARED.get_or_init(|| Arc::new(SystemResolver::new(DEFAULT_SYSTEM_MAX_LOOKUPS)))
    }

    /// The most lookups (threads) that run at once.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// How many lookup threads are running now, including those whose caller gave up.
    pub fn in_flight(&self) -> usize {
        self.limit - self.permits.available_permits()
    }

    /// The addresses of `name` of `family` (`None`: every family), by `deadline`. Errors:
    /// `TimedOut` when no slot freed up or no answer came by then, `NxDomain`, `NoAddress`, or
    /// the system's error. Cancel-safe: dropping the future leaves the thread to finish and free
    /// its slot.
    pub async fn resolve(
        &self,
        name: &str,
        family: Option<Family>,
        deadline: Instant,
    ) -> Result<Vec<IpAddr>, DnsError> {
        let started = Instant::now();
        let timed_out = || DnsError::TimedOut { via: Via::System, after: started.elapsed() };
        let permit = match tokio::time::timeout_at(deadline, self.permits.clone().acquire_owned()).await {
            Ok(Ok(permit)) => permit,
            Ok(Err(_)) => return Err(DnsError::System { reason: "closed".into() }),
            Err(_) => {
                tracing::debug!(
                    name,
                    limit = self.limit,
                    "system resolver busy: no free slot by the deadline"
                );
                return Err(timed_out());
            }
        };
        let (sender, receiver) = oneshot::channel();
        let lookup = self.lookup;
        let owned_name = name.to_string();
        std::thread::Builder::new()
            .name("netswitch-resolve".into())
            .spawn(move || {
                let answer = lookup(&owned_name, family);
                // The slot is free once getaddrinfo returned, whether or not anyone still waits.
                drop(permit);
                let _ = sender.send(answer);
            })
            .map_err(|error| DnsError::System { reason: format!("start a resolver thread: {error}") })?;
        let families = family.map_or("IPv4 or IPv6", Family::label);
        match tokio::time::timeout_at(deadline, receiver).await {
            Err(_) => Err(timed_out()),
            Ok(Err(_)) => Err(DnsError::System { reason: "resolver thread ended without an answer".into() }),
            Ok(Ok(Err(SystemLookupError::NotFound))) => {
                Err(DnsError::NxDomain { name: name.into(), via: Via::System })
            }
            Ok(Ok(Err(SystemLookupError::Failed(reason)))) => {
                Err(DnsError::System { reason: format!("{name}: {reason}") })
            }
            Ok(Ok(Ok(found))) => {
                let found = deduplicated(found);
                if found.is_empty() {
                    return Err(DnsError::NoAddress { name: name.into(), families, via: Via::System });
                }
                Ok(found)
            }
        }
    }
}

/// A [`Resolve`] over a [`SystemResolver`]: one `getaddrinfo` call for every family asked.
#[derive(Debug, Clone)]
pub struct SystemRoute(pub Arc<SystemResolver>);

impl Resolve for SystemRoute {
    fn lookup(&self, name: &str, families: &[Family], deadline: Instant) -> Lookup {
        if let Some(local) = local_answer(name, families) {
            return local;
        }
        if let Err(failed) = checked_name(name, families) {
            return failed;
        }
        let (resolver, name, asked) = (self.0.clone(), name.to_string(), families.to_vec());
        let started = Instant::now();
        let answers: FamilyFuture = Box::pin(async move {
            let family = match asked.as_slice() {
                [one] => Some(*one),
                _ => None,
            };
            let result = resolver.resolve(&name, family, deadline).await;
            let elapsed = started.elapsed();
            asked
                .iter()
                .map(|&family| {
                    let result = match &result {
                        Ok(all) => {
                            let ips: Vec<IpAddr> =
                                all.iter().copied().filter(|ip| Family::of(*ip) == family).collect();
                            if ips.is_empty() {
                                Err(DnsError::NoAddress {
                                    name: name.clone(),
                                    families: family.label(),
                                    via: Via::System,
                                })
                            } else {
                                Ok(ips)
                            }
                        }
                        Err(error) => Err(copy_error(error)),
                    };
                    let answered =
                        !matches!(&result, Err(DnsError::TimedOut { .. } | DnsError::System { .. }));
                    let source = answered.then_some(Source::Resolver(Via::System));
                    FamilyAnswer { family, result, source, elapsed }
                })
                .collect()
        });
        Lookup::new(families, vec![answers])
    }

    fn interface(&self) -> Option<&str> {
        None
    }
}

/// The same error again, for the second family of one `getaddrinfo` answer.
fn copy_error(error: &DnsError) -> DnsError {
    match error {
        DnsError::NxDomain { name, via } => DnsError::NxDomain { name: name.clone(), via: via.clone() },
        DnsError::NoAddress { name, families, via } => {
            DnsError::NoAddress { name: name.clone(), families, via: via.clone() }
        }
        DnsError::TimedOut { via, after } => DnsError::TimedOut { via: via.clone(), after: *after },
        other => DnsError::System { reason: other.to_string() },
    }
}

/// `getaddrinfo` for `name` (`family`: `AF_INET`/`AF_INET6`, `None`: `AF_UNSPEC`), stream
/// sockets only (one entry per address).
fn getaddrinfo(name: &str, family: Option<Family>) -> Result<Vec<IpAddr>, SystemLookupError> {
    let c_name = CString::new(name).map_err(|_| SystemLookupError::Failed("name contains NUL".into()))?;
    // SAFETY: an all-zero addrinfo is the documented "no hints" value; we then set plain fields.
    let mut hints: libc::addrinfo = unsafe { std::mem::zeroed() };
    hints.ai_family = match family {
        Some(Family::V4) => libc::AF_INET,
        Some(Family::V6) => libc::AF_INET6,
        None => libc::AF_UNSPEC,
    };
    hints.ai_socktype = libc::SOCK_STREAM;
    let mut list: *mut libc::addrinfo = std::ptr::null_mut();
    // SAFETY: `c_name` is a NUL-terminated string, `hints` a valid addrinfo, `list` a valid out
    // pointer; on success the list is freed below with freeaddrinfo, exactly once.
    let code = unsafe { libc::getaddrinfo(c_name.as_ptr(), std::ptr::null(), &hints, &mut list) };
    if code != 0 {
        return Err(gai_error(code));
    }
    let mut found = Vec::new();
    let mut entry = list;
    while !entry.is_null() {
        // SAFETY: `entry` is a node of the list getaddrinfo returned, not yet freed.
        let info = unsafe { &*entry };
        if !info.ai_addr.is_null() {
            match info.ai_family {
                libc::AF_INET => {
                    // SAFETY: for AF_INET, ai_addr points to a sockaddr_in.
                    let sin = unsafe { &*(info.ai_addr as *const libc::sockaddr_in) };
                    found.push(IpAddr::V4(Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr))));
                }
                libc::AF_INET6 => {
                    // SAFETY: for AF_INET6, ai_addr points to a sockaddr_in6.
                    let sin6 = unsafe { &*(info.ai_addr as *const libc::sockaddr_in6) };
                    found.push(IpAddr::V6(Ipv6Addr::from(sin6.sin6_addr.s6_addr)));
                }
                _ => {}
            }
        }
        entry = info.ai_next;
    }
    // SAFETY: `list` came from a successful getaddrinfo and is freed once.
    unsafe { libc::freeaddrinfo(list) };
    Ok(found)
}

fn gai_error(code: libc::c_int) -> SystemLookupError {
    if code == libc::EAI_NONAME {
        return SystemLookupError::NotFound;
    }
    if code == libc::EAI_SYSTEM {
        return SystemLookupError::Failed(std::io::Error::last_os_error().to_string());
    }
    // SAFETY: gai_strerror returns a pointer to a static NUL-terminated string for any code.
    let text = unsafe { CStr::from_ptr(libc::gai_strerror(code)) };
    SystemLookupError::Failed(text.to_string_lossy().into_owned())
}

fn deduplicated(found: Vec<IpAddr>) -> Vec<IpAddr> {
    let mut addresses: Vec<IpAddr> = Vec::with_capacity(found.len());
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

    /// How long a test waits for something that must happen.
    const TEST_WAIT: Duration = Duration::from_secs(10);

    /// Lookups that block until the test opens the gate; they count as they start.
    static GATE: Mutex<bool> = Mutex::new(false);
    static STARTED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

    fn blocking_lookup(_name: &str, _: Option<Family>) -> Result<Vec<IpAddr>, SystemLookupError> {
        STARTED.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        while !*GATE.lock().unwrap() {
            std::thread::sleep(Duration::from_millis(5));
        }
        Ok(vec!["192.0.2.1".parse().unwrap(), "192.0.2.1".parse().unwrap(), "2001:db8::1".parse().unwrap()])
    }

    fn soon(ms: u64) -> Instant {
        Instant::now() + Duration::from_millis(ms)
    }

    #[tokio::test]
    async fn literals_and_localhost_need_no_slot() {
        // A resolver whose only slot is taken by a lookup that never returns in this test.
        let resolver = Arc::new(SystemResolver::with_lookup(1, |_, _| {
            std::thread::sleep(Duration::from_secs(3600));
            Ok(Vec::new())
        }));
        let route = SystemRoute(resolver.clone());
        let both = [Family::V6, Family::V4];
        let stuck = route.lookup("stuck.test", &both, soon(50)).all().await.unwrap_err();
        assert!(matches!(stuck, DnsError::TimedOut { .. }), "{stuck}");
        assert_eq!(resolver.in_flight(), 1);
        let answer = route.lookup("localhost", &both, soon(50)).all().await.unwrap();
        assert_eq!(answer.addresses, ["::1".parse::<IpAddr>().unwrap(), "127.0.0.1".parse().unwrap()]);
        let answer = route.lookup("127.0.0.1", &both, soon(50)).all().await.unwrap();
        assert_eq!(answer.addresses, ["127.0.0.1".parse::<IpAddr>().unwrap()]);
        let bad = route.lookup("a..invalid", &both, soon(50)).all().await.unwrap_err();
        assert!(matches!(bad, DnsError::InvalidName { .. }), "{bad}");
        let busy = route.lookup("other.test", &both, soon(50)).all().await.unwrap_err();
        assert!(matches!(busy, DnsError::TimedOut { via: Via::System, .. }), "{busy}");
        assert_eq!(resolver.in_flight(), 1, "no second thread for a lookup without a slot");
    }

    /// A caller that gives up does not free the slot while its thread is still in the lookup:
    /// the bound is on threads, not on waiting futures.
    #[tokio::test]
    async fn slot_is_held_by_the_thread_until_the_lookup_returns() {
        let resolver = Arc::new(SystemResolver::with_lookup(2, blocking_lookup));
        for name in ["a.test", "b.test", "c.test"] {
            let error = resolver.resolve(name, None, soon(100)).await.unwrap_err();
            assert!(matches!(error, DnsError::TimedOut { .. }), "{name}: {error}");
        }
        // Two threads are blocked; the third caller never got a slot, so never started a thread.
        assert_eq!(resolver.in_flight(), 2);
        assert_eq!(STARTED.load(std::sync::atomic::Ordering::SeqCst), 2);
        *GATE.lock().unwrap() = true;
        let route = SystemRoute(resolver.clone());
        let mut lookup = route.lookup("d.test", &[Family::V4, Family::V6], Instant::now() + TEST_WAIT);
        let first = lookup.next().await.unwrap();
        let second = lookup.next().await.unwrap();
        assert_eq!(first.result.unwrap(), ["192.0.2.1".parse::<IpAddr>().unwrap()], "duplicates removed");
        assert_eq!(second.result.unwrap(), ["2001:db8::1".parse::<IpAddr>().unwrap()]);
        assert_eq!(first.source, Some(Source::Resolver(Via::System)));
        let deadline = std::time::Instant::now() + TEST_WAIT;
        while resolver.in_flight() > 0 && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(resolver.in_flight(), 0, "every thread freed its slot once its lookup returned");
    }

    #[test]
    fn getaddrinfo_reads_the_hosts_file() {
        // "localhost" is in every /etc/hosts (or answered by nss-myhostname): no DNS traffic.
        let found = getaddrinfo("localhost", Some(Family::V4)).unwrap();
        assert!(found.iter().all(|ip| ip.is_loopback()) && !found.is_empty(), "{found:?}");
        assert!(matches!(getaddrinfo("bad\0name", None), Err(SystemLookupError::Failed(_))));
    }
}
