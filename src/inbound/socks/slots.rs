//! Handshake slots: how many SOCKS clients may be in their handshake at once, and who yields.
//!
//! At most `capacity` clients are in their handshake. While every slot is taken the server stops
//! accepting, so new clients wait in the kernel's listen backlog instead of being reset. A
//! handshake whose client has sent nothing at all (no byte waiting either) for [`EVICTION_AGE`]
//! yields its slot to a waiting client: the server accepts the newcomer and closes that idle
//! handshake, oldest first. So idle sockets cannot starve valid clients, a burst of valid clients
//! larger than the cap is served from the backlog, and a client that is talking (however slowly,
//! e.g. on a starved CPU) is never evicted: its handshake is bounded by `handshake_timeout`.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::task::AbortHandle;
use tokio::time::Instant;

/// A handshake idle this long is closed when a new client is waiting for a slot.
pub(super) const EVICTION_AGE: Duration = Duration::from_secs(1);
/// While every slot is taken by talking clients, how often to look for newly idle ones.
const RECHECK: Duration = Duration::from_millis(250);
/// At most one warning about evictions per this interval.
const WARNING_INTERVAL: Duration = Duration::from_secs(10);

/// Set by a handshake task while it waits for its client's first byte with none received.
#[derive(Debug, Clone, Default)]
pub(super) struct IdleFlag(Arc<AtomicBool>);

impl IdleFlag {
    /// Marks the handshake idle (waiting for a first byte) or not.
    pub(super) fn set(&self, idle: bool) {
        self.0.store(idle, Ordering::Relaxed);
    }

    fn get(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// One handshake in progress.
struct Entry {
    started: Instant,
    handle: AbortHandle,
    idle: IdleFlag,
}

/// The handshakes in progress, oldest first.
pub(super) struct Slots {
    capacity: usize,
    /// Handshakes in the order they were admitted; finished ones are removed at the next admission.
    admitted: VecDeque<Entry>,
    /// Handshakes closed for a newcomer since the last warning.
    evicted: u64,
    last_warning: Option<Instant>,
}

/// Whether the accept loop may accept now, or when to look again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Admission {
    /// A slot is free, or an idle handshake may be evicted for a newcomer.
    Accept,
    /// Every slot is taken and none may be evicted yet: look again at this instant (or when a
    /// handshake finishes).
    Wait(Instant),
}

impl Admission {
    /// True when the accept loop should accept the next client.
    pub(super) fn may_accept(self) -> bool {
        self == Admission::Accept
    }

    /// When to look again while waiting.
    pub(super) fn recheck_at(self) -> Option<Instant> {
        match self {
            Admission::Accept => None,
            Admission::Wait(at) => Some(at),
        }
    }
}

impl Slots {
    /// Slots for `capacity` handshakes at once (at least 1).
    pub(super) fn new(capacity: usize) -> Slots {
        Slots { capacity: capacity.max(1), admitted: VecDeque::new(), evicted: 0, last_warning: None }
    }

    /// Whether to accept now, given `live` handshake tasks.
    pub(super) fn admission(&mut self, live: usize, now: Instant) -> Admission {
        if live < self.capacity {
            return Admission::Accept;
        }
        let recheck = now.checked_add(RECHECK).unwrap_or(now);
        match self.oldest_idle() {
            Some(index) => {
                let evictable_at = self.admitted[index].started.checked_add(EVICTION_AGE).unwrap_or(now);
                if evictable_at <= now {
                    Admission::Accept
                } else {
                    Admission::Wait(evictable_at.min(recheck))
                }
            }
            None => Admission::Wait(recheck),
        }
    }

    /// Called with a newly accepted client: when every slot is taken, closes the oldest handshake
    /// that has been idle for [`EVICTION_AGE`] so that the newcomer gets its slot. (When none
    /// qualifies any more, the newcomer is admitted beyond the cap; it happens only when the
    /// candidate started talking in the meantime.)
    pub(super) fn make_room(&mut self, live: usize, newcomer: SocketAddr) {
        if live < self.capacity {
            return;
        }
        let now = Instant::now();
        let Some(index) = self.oldest_idle() else { return };
        if now.saturating_duration_since(self.admitted[index].started) < EVICTION_AGE {
            return;
        }
        if let Some(entry) = self.admitted.remove(index) {
            entry.handle.abort();
            self.evicted += 1;
        }
        if self.last_warning.is_none_or(|at| now.saturating_duration_since(at) >= WARNING_INTERVAL) {
            tracing::warn!(
                limit = self.capacity, evicted = self.evicted, %newcomer,
                "every SOCKS handshake slot is taken: closing clients idle for {} ms to serve waiting ones",
                EVICTION_AGE.as_millis()
            );
            self.last_warning = Some(now);
            self.evicted = 0;
        }
    }

    /// Records a handshake that just started.
    pub(super) fn admitted(&mut self, handle: AbortHandle, idle: IdleFlag, now: Instant) {
        // Handshakes finish in any order: drop the finished ones at every admission. An
        // `AbortHandle` keeps its finished task's memory allocated, so holding on to them would
        // keep a burst's worth of tasks alive (at most `capacity` entries are live: cheap to scan).
        self.admitted.retain(|entry| !entry.handle.is_finished());
        self.admitted.push_back(Entry { started: now, handle, idle });
    }

    /// The position of the oldest unfinished handshake that is idle.
    fn oldest_idle(&mut self) -> Option<usize> {
        while self.admitted.front().is_some_and(|entry| entry.handle.is_finished()) {
            self.admitted.pop_front();
        }
        self.admitted.iter().position(|entry| entry.idle.get() && !entry.handle.is_finished())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn forever() -> AbortHandle {
        tokio::spawn(std::future::pending::<()>()).abort_handle()
    }

    fn idle(value: bool) -> IdleFlag {
        let flag = IdleFlag::default();
        flag.set(value);
        flag
    }

    fn peer() -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 40000))
    }

    #[tokio::test]
    async fn free_slots_accept() {
        let mut slots = Slots::new(2);
        let now = Instant::now();
        assert_eq!(slots.admission(0, now), Admission::Accept);
        slots.admitted(forever(), idle(true), now);
        assert_eq!(slots.admission(1, now), Admission::Accept);
    }

    #[tokio::test]
    async fn full_slots_wait_until_an_idle_handshake_is_old_enough() {
        let mut slots = Slots::new(3);
        let start = Instant::now();
        let talking = forever();
        slots.admitted(talking.clone(), idle(false), start);
        let oldest_idle = forever();
        slots.admitted(oldest_idle.clone(), idle(true), start + Duration::from_millis(10));
        slots.admitted(forever(), idle(true), start + Duration::from_millis(20));
        let young = start + Duration::from_millis(500);
        assert_eq!(slots.admission(3, young), Admission::Wait(young + RECHECK));
        let almost = start + Duration::from_millis(900);
        assert_eq!(
            slots.admission(3, almost),
            Admission::Wait(start + Duration::from_millis(10) + EVICTION_AGE)
        );
        tokio::time::sleep_until(start + Duration::from_millis(10) + EVICTION_AGE).await;
        assert_eq!(slots.admission(3, Instant::now()), Admission::Accept);
        slots.make_room(3, peer());
        tokio::task::yield_now().await;
        assert!(oldest_idle.is_finished(), "the oldest idle handshake was not closed");
        assert!(!talking.is_finished(), "a talking handshake was closed");
    }

    #[tokio::test]
    async fn talking_handshakes_are_never_evicted() {
        let mut slots = Slots::new(1);
        let start = Instant::now();
        let talking = forever();
        slots.admitted(talking.clone(), idle(false), start);
        let later = start + EVICTION_AGE * 5;
        assert_eq!(slots.admission(1, later), Admission::Wait(later + RECHECK));
        slots.make_room(1, peer());
        tokio::task::yield_now().await;
        assert!(!talking.is_finished());
        assert_eq!(slots.evicted, 0);
    }

    #[tokio::test]
    async fn finished_handshakes_are_not_candidates() {
        let mut slots = Slots::new(1);
        let start = Instant::now();
        let done = tokio::spawn(async {});
        let handle = done.abort_handle();
        done.await.unwrap();
        slots.admitted(handle, idle(true), start);
        let later = start + EVICTION_AGE;
        assert_eq!(slots.admission(1, later), Admission::Wait(later + RECHECK));
        slots.make_room(1, peer());
        assert_eq!(slots.evicted, 0);
    }
}
