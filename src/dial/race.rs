//! Racing networks against each other: the primary set at once, the fallbacks after a delay (or
//! at once when every primary failed, or during the fast-fallback window). Inside one network the
//! name is resolved over that network and the address families race per RFC 8305
//! ([`super::eyeballs`]).
//!
//! The racing is generic over the network type `N`, a `connect` function and a per-network
//! resolver, so the same code serves real interfaces, the unbound system route and simulated
//! networks in tests. Losers are cancelled by dropping their futures, which closes their sockets.

use std::future::{poll_fn, Future};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::Poll;
use std::time::{Duration, Instant};

use tokio::net::TcpStream;

use super::eyeballs::{dial_one_network, LaneOutcome};
pub use super::eyeballs::{
    ConnectFn, LookupRecord, RaceNetwork, ResolveFn, Targets, Timing, DEFAULT_CONNECTION_ATTEMPT_DELAY,
    RESOLUTION_DELAY,
};
use super::DialAttempt;

/// Default delay before fallback networks join the race.
pub const DEFAULT_FALLBACK_DELAY: Duration = Duration::from_millis(300);

/// How long after a fallback network won a race every network keeps being raced at once.
pub const FAST_FALLBACK_WINDOW: Duration = Duration::from_secs(15);

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
    /// The lookups of the networks that finished (the winner's included): who answered, when.
    pub lookups: Vec<LookupRecord>,
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

/// Races `primaries` then `fallbacks` to reach `targets`, each network resolving a name with
/// its own resolver. See the module docs for the rules. On failure: every failed connect attempt
/// and lookup, of every network.
pub async fn race_networks<N: RaceNetwork>(
    primaries: Vec<N>,
    fallbacks: Vec<N>,
    targets: Targets<N>,
    connect: ConnectFn<N>,
    timing: Timing,
    memory: Arc<FallbackMemory>,
) -> Result<RaceWin<N>, Vec<DialAttempt>> {
    let fast = !fallbacks.is_empty() && memory.in_window();
    let started = Instant::now();
    let fallback_delay = timing.fallback_delay;
    let mut racers: Vec<Racer<N>> = Vec::new();
    let start = |network: N, fallback: bool| Racer {
        fallback,
        started: Instant::now(),
        network: network.clone(),
        future: Box::pin(dial_one_network(network, targets.clone(), connect.clone(), timing)),
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
    let mut lookups: Vec<LookupRecord> = Vec::new();
    let winner = poll_fn(|cx| loop {
        let mut index = 0;
        while index < racers.len() {
            match racers[index].future.as_mut().poll(cx) {
                Poll::Pending => index += 1,
                Poll::Ready(Ok((stream, address, mut attempts, mut found))) => {
                    failed.append(&mut attempts);
                    lookups.append(&mut found);
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
    } else if fast && !racer.fallback && started.elapsed() <= fallback_delay {
        // A primary won outright within the fallback delay: it has recovered, the window ends
        // (as when a losing primary connects in time, see `watch_primary_recovery`).
        tracing::debug!("a preferred network won within the fallback delay: fast-fallback window ends");
        memory.set(None);
    }
    let abandoned =
        racers.iter().map(|r| (r.network.name().map(str::to_string), r.started.elapsed())).collect();
    if fast {
        watch_primary_recovery(racers, memory, fallback_delay.saturating_sub(started.elapsed()));
    }
    Ok(RaceWin {
        stream,
        network: racer.network,
        address,
        was_fallback: racer.fallback,
        failed,
        abandoned,
        lookups,
    })
}

struct Racer<N> {
    fallback: bool,
    started: Instant,
    network: N,
    future: Pin<Box<dyn Future<Output = LaneOutcome> + Send>>,
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
