//! Happy eyeballs on one network (RFC 8305): the name is resolved with *this network's*
//! resolver, A and AAAA at once; addresses are tried as they arrive, the families interleaved
//! (preferred family first, then the other, alternating: §4); the next attempt starts when the
//! connection-attempt delay has passed (250 ms by default, §5) or at once when an attempt fails;
//! when the other family answers first, the preferred family gets the resolution delay (50 ms,
//! §3) before the first attempt starts. The first connection wins; dropping the lane cancels the
//! attempts still running (their sockets close) and the lookup.

use std::collections::VecDeque;
use std::future::{poll_fn, Future};
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::net::TcpStream;
use tokio::time::Sleep;

use super::{AttemptError, BoxFuture, DialAttempt};
use crate::dns::{Family, FamilyAnswer, Lookup, Resolve};

/// Default delay between two connection attempts on one network (RFC 8305 §8: 250 ms).
pub const DEFAULT_CONNECTION_ATTEMPT_DELAY: Duration = Duration::from_millis(250);
/// How long the preferred family may still answer after the other family did (RFC 8305 §8).
pub const RESOLUTION_DELAY: Duration = Duration::from_millis(50);

/// A network that attempts are made on: it has a name for error messages (None = system route).
pub trait RaceNetwork: Clone + Send + Sync + 'static {
    /// The interface name shown in errors and logs; `None` for the unbound system route.
    fn name(&self) -> Option<&str>;

    /// Whether this network can carry `family` at all (it has an address of that family): a name
    /// is not looked up for a family its network cannot carry. Addresses given before the dial
    /// (IP destinations) are dialed anyway (464XLAT carries IPv4 over an IPv6-only network).
    /// Default: every family.
    fn supports(&self, family: crate::dns::Family) -> bool {
        let _ = family;
        true
    }
}

/// Opens one TCP connection to one address over one network.
pub type ConnectFn<N> =
    Arc<dyn Fn(&N, SocketAddr) -> BoxFuture<'static, Result<TcpStream, AttemptError>> + Send + Sync>;

/// The resolver a network's lane uses (each network its own).
pub type ResolveFn<N> = Arc<dyn Fn(&N) -> Arc<dyn Resolve> + Send + Sync>;

/// What the lanes dial.
pub enum Targets<N> {
    /// Addresses known before the race (an IP destination, pre-resolved addresses), in
    /// preference order: the family of the first one is preferred.
    Addresses(Arc<[SocketAddr]>),
    /// A name every network resolves with its own resolver.
    Name {
        /// The name.
        name: Arc<str>,
        /// The port to connect to.
        port: u16,
        /// The families to look up and try, preferred first (from the domain strategy).
        families: Arc<[Family]>,
        /// The resolver of each network.
        resolver: ResolveFn<N>,
    },
}

impl<N> Clone for Targets<N> {
    fn clone(&self) -> Self {
        match self {
            Targets::Addresses(list) => Targets::Addresses(list.clone()),
            Targets::Name { name, port, families, resolver } => Targets::Name {
                name: name.clone(),
                port: *port,
                families: families.clone(),
                resolver: resolver.clone(),
            },
        }
    }
}

/// The delays and the deadline of a race.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// Delay before the fallback networks join.
    pub fallback_delay: Duration,
    /// Delay between two connection attempts on one network.
    pub attempt_delay: Duration,
    /// How long the preferred family may still answer after the other family did.
    pub resolution_delay: Duration,
    /// Every lookup ends by then (connect attempts end by the deadline their connector sets).
    pub deadline: tokio::time::Instant,
}

/// One family's answer of a lookup a lane made, with the network it was made on.
#[derive(Debug)]
pub struct LookupRecord {
    /// The network's name (`None`: the system route).
    pub interface: Option<String>,
    /// The answer (addresses, who answered, when).
    pub answer: FamilyAnswer,
}

/// What a lane ends with: the stream, its address, the attempts that failed before it and the
/// lookups it made; or every failure (connect attempts and failed lookups).
pub(crate) type LaneOutcome =
    Result<(TcpStream, SocketAddr, Vec<DialAttempt>, Vec<LookupRecord>), Vec<DialAttempt>>;

struct Running {
    address: SocketAddr,
    started: Instant,
    future: BoxFuture<'static, Result<TcpStream, AttemptError>>,
}

struct Lane<N: RaceNetwork> {
    network: N,
    connect: ConnectFn<N>,
    timing: Timing,
    port: u16,
    preferred: Option<Family>,
    preferred_queue: VecDeque<SocketAddr>,
    other_queue: VecDeque<SocketAddr>,
    last_family: Option<Family>,
    running: Vec<Running>,
    lookup: Option<Lookup>,
    preferred_answered: bool,
    resolution_wait: Option<Pin<Box<Sleep>>>,
    next_attempt: Option<Pin<Box<Sleep>>>,
    started_any: bool,
    failed: Vec<DialAttempt>,
    lookups: Vec<LookupRecord>,
}

/// Dials `targets` over `network` as the module docs say.
pub(crate) async fn dial_one_network<N: RaceNetwork>(
    network: N,
    targets: Targets<N>,
    connect: ConnectFn<N>,
    timing: Timing,
) -> LaneOutcome {
    let mut lane = Lane {
        network,
        connect,
        timing,
        port: 0,
        preferred: None,
        preferred_queue: VecDeque::new(),
        other_queue: VecDeque::new(),
        last_family: None,
        running: Vec::new(),
        lookup: None,
        preferred_answered: false,
        resolution_wait: None,
        next_attempt: None,
        started_any: false,
        failed: Vec::new(),
        lookups: Vec::new(),
    };
    match targets {
        Targets::Addresses(addresses) => {
            lane.preferred = addresses.first().map(|a| Family::of(a.ip()));
            lane.preferred_answered = true;
            for &address in addresses.iter() {
                lane.queue(address);
            }
        }
        Targets::Name { name, port, families, resolver } => {
            lane.port = port;
            // Only the families this network can carry (all of them if it seems to carry none):
            // an IPv6-only network is not asked for A records (with NAT64 its DNS64 answers AAAA).
            let usable: Vec<Family> =
                families.iter().copied().filter(|f| lane.network.supports(*f)).collect();
            let families: &[Family] = if usable.is_empty() { &families } else { &usable };
            lane.preferred = families.first().copied();
            let resolver = resolver(&lane.network);
            lane.lookup = Some(resolver.lookup(&name, families, timing.deadline));
        }
    }
    poll_fn(|cx| lane.poll(cx)).await
}

impl<N: RaceNetwork> Lane<N> {
    fn queue(&mut self, address: SocketAddr) {
        let family = Family::of(address.ip());
        if Some(family) == self.preferred {
            self.preferred_queue.push_back(address);
        } else {
            self.other_queue.push_back(address);
        }
    }

    fn interface(&self) -> Option<String> {
        self.network.name().map(str::to_string)
    }

    /// Takes one family's answer: queues its addresses, or records why it has none.
    fn take(&mut self, answer: FamilyAnswer) {
        let preferred = Some(answer.family) == self.preferred;
        match &answer.result {
            Ok(ips) => {
                let ips: Vec<IpAddr> = ips.clone();
                for ip in ips {
                    self.queue(SocketAddr::new(ip, self.port));
                }
                if !preferred
                    && !self.preferred_answered
                    && !self.started_any
                    && self.resolution_wait.is_none()
                {
                    self.resolution_wait = Some(Box::pin(tokio::time::sleep(self.timing.resolution_delay)));
                }
                tracing::debug!(interface = self.network.name().unwrap_or("system route"), %answer, "lookup answered");
                self.lookups.push(LookupRecord { interface: self.interface(), answer });
            }
            Err(_) => {
                let FamilyAnswer { result, elapsed, .. } = answer;
                if let Err(error) = result {
                    tracing::debug!(interface = self.network.name().unwrap_or("system route"), %error, "lookup failed");
                    self.failed.push(DialAttempt {
                        address: None,
                        interface: self.interface(),
                        elapsed,
                        error: AttemptError::Resolve(Box::new(error)),
                    });
                }
            }
        }
        if preferred {
            self.preferred_answered = true;
            self.resolution_wait = None;
        }
    }

    /// The next address: the preferred family first, then alternating while both have some.
    fn next_address(&mut self) -> Option<SocketAddr> {
        let other_turn = self.last_family.is_some() && self.last_family == self.preferred;
        let address = if (other_turn && !self.other_queue.is_empty()) || self.preferred_queue.is_empty() {
            self.other_queue.pop_front()
        } else {
            self.preferred_queue.pop_front()
        }?;
        self.last_family = Some(Family::of(address.ip()));
        Some(address)
    }

    /// Whether the next attempt may start now (registers the timers that say when, if not).
    fn may_start(&mut self, cx: &mut Context<'_>) -> bool {
        if self.preferred_queue.is_empty() && self.other_queue.is_empty() {
            return false;
        }
        if let Some(wait) = &mut self.resolution_wait {
            if !self.preferred_answered && wait.as_mut().poll(cx).is_pending() {
                return false;
            }
            self.resolution_wait = None;
        }
        if let Some(delay) = &mut self.next_attempt {
            if delay.as_mut().poll(cx).is_pending() {
                return false;
            }
            self.next_attempt = None;
        }
        true
    }

    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<LaneOutcome> {
        loop {
            if let Some(lookup) = &mut self.lookup {
                match lookup.poll_next(cx) {
                    Poll::Ready(Some(answer)) => {
                        self.take(answer);
                        continue;
                    }
                    Poll::Ready(None) => self.lookup = None,
                    Poll::Pending => {}
                }
            }
            let mut index = 0;
            while index < self.running.len() {
                match self.running[index].future.as_mut().poll(cx) {
                    Poll::Pending => index += 1,
                    Poll::Ready(Ok(stream)) => {
                        let address = self.running[index].address;
                        let (failed, lookups) =
                            (std::mem::take(&mut self.failed), std::mem::take(&mut self.lookups));
                        return Poll::Ready(Ok((stream, address, failed, lookups)));
                    }
                    Poll::Ready(Err(error)) => {
                        let attempt = self.running.swap_remove(index);
                        tracing::debug!(
                            interface = self.network.name().unwrap_or("system route"), address = %attempt.address,
                            %error, "connect attempt failed"
                        );
                        self.failed.push(DialAttempt {
                            address: Some(attempt.address),
                            interface: self.interface(),
                            elapsed: attempt.started.elapsed(),
                            error,
                        });
                        // An attempt failed: the next one starts at once (RFC 8305 §5).
                        self.next_attempt = None;
                    }
                }
            }
            if self.may_start(cx) {
                if let Some(address) = self.next_address() {
                    self.started_any = true;
                    let future = (self.connect)(&self.network, address);
                    self.running.push(Running { address, started: Instant::now(), future });
                    self.next_attempt = Some(Box::pin(tokio::time::sleep(self.timing.attempt_delay)));
                    continue;
                }
            }
            let queued = !(self.preferred_queue.is_empty() && self.other_queue.is_empty());
            if self.lookup.is_none() && !queued && self.running.is_empty() {
                return Poll::Ready(Err(std::mem::take(&mut self.failed)));
            }
            return Poll::Pending;
        }
    }
}
