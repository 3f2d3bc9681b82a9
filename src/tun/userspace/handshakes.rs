//! The cap on connections in their handshake (the SYN-ACK sent, the app's ACK not in yet).
//!
//! A SYN makes a connection at once; one never acknowledged (a SYN flood, a scanner, SYNs from
//! addresses that answer nothing) would hold its slot for the two minutes of smoltcp's timeout,
//! and enough of them would take every slot of the stack. So at most [`MAX_HANDSHAKES`] are in
//! their handshake at once. A SYN past that takes the slot of the oldest one if it has waited
//! [`GRACE`] (an app answers a SYN-ACK within its round trip; one that has not by then most likely
//! never will), which is reset; else the SYN is dropped, as a kernel's full SYN queue drops it,
//! and the app sends it again a second later (a burst of more than [`MAX_HANDSHAKES`] SYNs at
//! once from a working app loses no connection).

use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// Connections in their handshake the stack holds at most (the kernel's SYN queue is of this
/// order).
pub const MAX_HANDSHAKES: usize = 1024;

/// How long a connection stays in its handshake before a new SYN may take its slot: the initial
/// retransmission timeout of a SYN (RFC 6298), so a dropped SYN comes back after it.
pub const GRACE: Duration = Duration::from_secs(1);

/// What a new SYN finds (see the module docs).
pub(crate) enum Room<K> {
    /// A slot is free.
    Free,
    /// No slot: the oldest handshake, `K`, has waited long enough and gives its slot.
    Oldest(K),
    /// No slot, and the oldest handshake is too young: the SYN is dropped.
    Full,
}

/// The connections in their handshake, by their flow `K`.
#[derive(Debug)]
pub(crate) struct Handshakes<K> {
    inner: Mutex<Inner<K>>,
}

#[derive(Debug)]
struct Inner<K> {
    /// How many handshakes are under way (counted out by [`Handshakes::ended`]).
    count: usize,
    /// Their flows and start, oldest first, with flows whose handshake ended among them (skipped,
    /// and dropped when the queue grows past twice the cap).
    order: VecDeque<(K, Instant)>,
}

impl<K: Clone> Handshakes<K> {
    /// No handshake under way.
    pub fn new() -> Handshakes<K> {
        Handshakes { inner: Mutex::new(Inner { count: 0, order: VecDeque::new() }) }
    }

    /// Room for a new handshake; `waiting(flow)` tells whether that flow is still in its
    /// handshake (it may lock the flow table and the connection).
    pub fn room(&self, waiting: impl Fn(&K) -> bool) -> Room<K> {
        let mut inner = self.lock();
        if inner.count < MAX_HANDSHAKES {
            return Room::Free;
        }
        while let Some((flow, since)) = inner.order.front().cloned() {
            if !waiting(&flow) {
                inner.order.pop_front();
            } else if since.elapsed() < GRACE {
                return Room::Full;
            } else {
                inner.order.pop_front();
                return Room::Oldest(flow);
            }
        }
        Room::Free // the count is behind handshakes that just ended
    }

    /// A handshake of `flow` started.
    pub fn started(&self, flow: K, waiting: impl Fn(&K) -> bool) {
        let mut inner = self.lock();
        inner.count += 1;
        inner.order.push_back((flow, Instant::now()));
        if inner.order.len() > 2 * MAX_HANDSHAKES {
            inner.order.retain(|(flow, _)| waiting(flow));
        }
    }

    /// A handshake ended (completed, reset or timed out).
    pub fn ended(&self) {
        let mut inner = self.lock();
        inner.count = inner.count.saturating_sub(1);
    }

    fn lock(&self) -> MutexGuard<'_, Inner<K>> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn past_the_cap_the_oldest_gives_its_slot_once_it_waited_the_grace() {
        let handshakes = Handshakes::new();
        let all = |_: &usize| true;
        for flow in 0..MAX_HANDSHAKES {
            assert!(matches!(handshakes.room(all), Room::Free));
            handshakes.started(flow, all);
        }
        assert!(matches!(handshakes.room(all), Room::Full), "the oldest is too young");
        // Flows 0 and 1 ended without their count out yet: skipped, the next one is the oldest.
        let young = |flow: &usize| *flow > 1;
        assert!(matches!(handshakes.room(young), Room::Full));
        handshakes.ended();
        assert!(matches!(handshakes.room(all), Room::Free));
        handshakes.started(MAX_HANDSHAKES, all);
        std::thread::sleep(GRACE);
        assert!(matches!(handshakes.room(all), Room::Oldest(2)));
        assert!(matches!(handshakes.room(all), Room::Oldest(3)));
        // The queue never grows past twice the cap.
        for flow in 0..3 * MAX_HANDSHAKES {
            handshakes.started(flow, |flow: &usize| flow.is_multiple_of(2));
        }
        assert!(handshakes.lock().order.len() <= 2 * MAX_HANDSHAKES);
    }
}
