//! Racing connect attempts: networks against each other (primary set, then fallbacks after a
//! delay) and, inside one network, IPv6 against IPv4 per RFC 8305 (serial within a family).
//!
//! The racing is generic over the network type `N` and a `connect` function, so the same code
//! serves real interfaces, the unbound system route and simulated networks in tests. Losers are
//! cancelled by dropping their futures, which closes their sockets.

use std::future::{poll_fn, Future};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::Poll;
use std::time::{Duration, Instant};

use tokio::net::TcpStream;

use super::{AttemptError, BoxFuture, DialAttempt};

/// Default delay before fallback networks (and the second address family) join the race.
pub const DEFAULT_FALLBACK_DELAY: Duration = Duration::from_millis(300);

/// How long after a fallback network won a race every network keeps being raced at once.
pub const FAST_FALLBACK_WINDOW: Duration = Duration::from_secs(15);

/// A network that attempts are made on: it has a name for error messages (None = system route).
pub trait RaceNetwork: Clone + Send + Sync + 'static {
    /// The interface name shown in errors and logs; `None` for the unbound system route.
    fn name(&self) -> Option<&str>;
}

/// Opens one TCP connection to one address over one network.
pub type ConnectFn<N> =
    Arc<dyn Fn(&N, SocketAddr) -> BoxFuture<'static, Result<TcpStream, AttemptError>> + Send + Sync>;

/// A successful race: the stream, the network it used and the attempts that failed before.
#[derive(Debug)]
#[non_exhaustive]
pub struct RaceWin<N> {
    /// The connected stream.
    pub stream: TcpStream,
    /// The network the winner used.
    pub network: N,
    /// The address the winner connected to.
    pub address: SocketAddr,
    /// True when the winner was a fallback network.
    pub was_fallback: bool,
    /// Attempts that failed before the winner connected.
    pub failed: Vec<DialAttempt>,
    /// Networks still trying when the winner connected (cancelled, or watched for recovery in
    /// the fast-fallback window): their names and how long they had been trying.
    pub abandoned: Vec<(Option<String>, Duration)>,
}

/// Remembers when a fallback network last won, per dialer: for [`FAST_FALLBACK_WINDOW`] after
/// that, primaries and fallbacks start together; a primary that connects within the fallback
/// delay ends the window early.
#[derive(Debug, Default)]
pub struct FallbackMemory {
    last_fallback_win: Mutex<Option<Instant>>,
}

impl FallbackMemory {
    fn in_window(&self) -> bool {
        let last = *self.last_fallback_win.lock().unwrap_or_else(PoisonError::into_inner);
        last.is_some_and(|at| at.elapsed() < FAST_FALLBACK_WINDOW)
    }

    fn set(&self, value: Option<Instant>) {
        *self.last_fallback_win.lock().unwrap_or_else(PoisonError::into_inner) = value;
    }

    /// True while the fast-fallback window is open.
    pub fn is_active(&self) -> bool {
        self.in_window()
    }
}

/// Races `primaries` then `fallbacks` to reach one of `addresses` (already in preference order:
/// the family of the first address is tried first). See the module docs for the rules.
pub async fn race_networks<N: RaceNetwork>(
    primaries: Vec<N>,
    fallbacks: Vec<N>,
    addresses: Vec<SocketAddr>,
    connect: ConnectFn<N>,
    fallback_delay: Duration,
    memory: Arc<FallbackMemory>,
) -> Result<RaceWin<N>, Vec<DialAttempt>> {
    let fast = !fallbacks.is_empty() && memory.in_window();
    let started = Instant::now();
    let addresses: Arc<[SocketAddr]> = addresses.into();
    let mut racers: Vec<Racer<N>> = Vec::new();
    let start = |network: N, fallback: bool| Racer {
        fallback,
        started: Instant::now(),
        network: network.clone(),
        future: Box::pin(dial_one_network(network, addresses.clone(), connect.clone(), fallback_delay)),
    };
    let primary_count = primaries.len();
    racers.extend(primaries.into_iter().map(|n| start(n, false)));
    let mut pending_fallbacks: Vec<N> = fallbacks;
    if fast {
        racers.extend(pending_fallbacks.drain(..).map(|n| start(n, true)));
    }
    let mut timer = Box::pin(tokio::time::sleep(fallback_delay));
    let mut failed_primaries = 0;
    let mut failed: Vec<DialAttempt> = Vec::new();
    let winner = poll_fn(|cx| loop {
        let mut index = 0;
        while index < racers.len() {
            match racers[index].future.as_mut().poll(cx) {
                Poll::Pending => index += 1,
                Poll::Ready(Ok((stream, address, mut attempts))) => {
                    failed.append(&mut attempts);
                    let racer = racers.swap_remove(index);
                    return Poll::Ready(Some((racer, stream, address)));
                }
                Poll::Ready(Err(mut attempts)) => {
                    failed.append(&mut attempts);
                    let racer = racers.swap_remove(index);
                    if !racer.fallback {
                        failed_primaries += 1;
                    }
                }
            }
        }
        let all_primaries_failed = failed_primaries == primary_count;
        if !pending_fallbacks.is_empty() && (all_primaries_failed || timer.as_mut().poll(cx).is_ready()) {
            // Start the fallbacks and poll them at once (next turn of the loop).
            racers.extend(pending_fallbacks.drain(..).map(|n| start(n, true)));
            continue;
        }
        if racers.is_empty() {
            return Poll::Ready(None);
        }
        return Poll::Pending;
    })
    .await;
    let Some((racer, stream, address)) = winner else { return Err(failed) };
    if racer.fallback && !fast {
        memory.set(Some(Instant::now()));
    }
    let abandoned =
        racers.iter().map(|r| (r.network.name().map(str::to_string), r.started.elapsed())).collect();
    if fast {
        watch_primary_recovery(racers, memory, fallback_delay.saturating_sub(started.elapsed()));
    }
    Ok(RaceWin { stream, network: racer.network, address, was_fallback: racer.fallback, failed, abandoned })
}

type NetworkOutcome = Result<(TcpStream, SocketAddr, Vec<DialAttempt>), Vec<DialAttempt>>;

struct Racer<N> {
    fallback: bool,
    started: Instant,
    network: N,
    future: Pin<Box<dyn Future<Output = NetworkOutcome> + Send>>,
}

/// In the fast-fallback window, keeps the losing primaries running for what is left of the
/// fallback delay: if one connects, primaries have recovered and the window ends. Their sockets
/// are closed either way.
fn watch_primary_recovery<N: RaceNetwork>(
    racers: Vec<Racer<N>>,
    memory: Arc<FallbackMemory>,
    left: Duration,
) {
    let primaries: Vec<Racer<N>> = racers.into_iter().filter(|r| !r.fallback).collect();
    if primaries.is_empty() || left.is_zero() {
        return;
    }
    tokio::spawn(async move {
        let mut primaries = primaries;
        let recovered = poll_fn(|cx| {
            let mut index = 0;
            while index < primaries.len() {
                match primaries[index].future.as_mut().poll(cx) {
                    Poll::Pending => index += 1,
                    Poll::Ready(Ok(_)) => return Poll::Ready(true),
                    Poll::Ready(Err(_)) => {
                        primaries.swap_remove(index);
                    }
                }
            }
            if primaries.is_empty() {
                Poll::Ready(false)
            } else {
                Poll::Pending
            }
        });
        if let Ok(true) = tokio::time::timeout(left, recovered).await {
            tracing::debug!("a preferred network connected again: fast-fallback window ends");
            memory.set(None);
        }
    });
}

/// Happy eyeballs on one network: the family of the first address is tried first, one address
/// after the other; the other family starts after `family_delay` or at once when the first
/// family ran out of addresses. The first connection wins.
async fn dial_one_network<N: RaceNetwork>(
    network: N,
    addresses: Arc<[SocketAddr]>,
    connect: ConnectFn<N>,
    family_delay: Duration,
) -> NetworkOutcome {
    let first_is_v6 = addresses.first().is_some_and(SocketAddr::is_ipv6);
    let (first, second): (Vec<SocketAddr>, Vec<SocketAddr>) =
        addresses.iter().partition(|a| a.is_ipv6() == first_is_v6);
    if second.is_empty() {
        return dial_serial(&network, &first, &connect).await;
    }
    let mut first_family = Some(Box::pin(dial_serial(&network, &first, &connect)));
    let mut second_family = None;
    let mut second_started = false;
    let mut attempts: Vec<DialAttempt> = Vec::new();
    let mut delay = Box::pin(tokio::time::sleep(family_delay));
    poll_fn(|cx| {
        if let Some((stream, address)) = poll_family(&mut first_family, cx, &mut attempts) {
            return Poll::Ready(Ok((stream, address, std::mem::take(&mut attempts))));
        }
        if !second_started && (first_family.is_none() || delay.as_mut().poll(cx).is_ready()) {
            second_started = true;
            second_family = Some(Box::pin(dial_serial(&network, &second, &connect)));
        }
        if let Some((stream, address)) = poll_family(&mut second_family, cx, &mut attempts) {
            return Poll::Ready(Ok((stream, address, std::mem::take(&mut attempts))));
        }
        if first_family.is_none() && second_started && second_family.is_none() {
            return Poll::Ready(Err(std::mem::take(&mut attempts)));
        }
        Poll::Pending
    })
    .await
}

/// Polls one family's serial dial, if it is running: returns its stream when it connected; when
/// it failed, adds its attempts to `attempts` and empties the slot.
fn poll_family<F: Future<Output = NetworkOutcome>>(
    slot: &mut Option<Pin<Box<F>>>,
    cx: &mut std::task::Context<'_>,
    attempts: &mut Vec<DialAttempt>,
) -> Option<(TcpStream, SocketAddr)> {
    let future = slot.as_mut()?;
    match future.as_mut().poll(cx) {
        Poll::Ready(Ok((stream, address, mut failed))) => {
            attempts.append(&mut failed);
            Some((stream, address))
        }
        Poll::Ready(Err(mut failed)) => {
            attempts.append(&mut failed);
            *slot = None;
            None
        }
        Poll::Pending => None,
    }
}

/// Tries `addresses` one after the other on `network`.
async fn dial_serial<N: RaceNetwork>(
    network: &N,
    addresses: &[SocketAddr],
    connect: &ConnectFn<N>,
) -> NetworkOutcome {
    let mut attempts = Vec::new();
    for &address in addresses {
        let started = Instant::now();
        match connect(network, address).await {
            Ok(stream) => return Ok((stream, address, attempts)),
            Err(error) => {
                tracing::debug!(interface = network.name().unwrap_or("system route"), %address, %error, "connect attempt failed");
                attempts.push(DialAttempt {
                    address,
                    interface: network.name().map(str::to_string),
                    elapsed: started.elapsed(),
                    error,
                });
            }
        }
    }
    Err(attempts)
}
