//! The close request's waker slot: the waker of the latest poll is the one woken (a task moved
//! between workers, or a different task, polls with another waker), a request made before the
//! first poll is seen, and a request racing a poll from another thread is never lost.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};

use super::Tracker;
use crate::Metadata;

/// A waker that counts its wakes.
#[derive(Default)]
struct Counting(AtomicUsize);

impl Wake for Counting {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

fn counting() -> (Arc<Counting>, Waker) {
    let counter = Arc::new(Counting::default());
    (counter.clone(), Waker::from(counter))
}

fn entry() -> (Arc<super::Entry>, super::EntryGuard) {
    Arc::new(Tracker::default()).insert(Metadata::new("127.0.0.1:1".parse().unwrap()))
}

#[test]
fn the_waker_of_the_latest_poll_is_woken() {
    let (entry, _guard) = entry();
    let (first, first_waker) = counting();
    let (second, second_waker) = counting();
    assert!(entry.poll_close_requested(&mut Context::from_waker(&first_waker)).is_pending());
    assert!(entry.poll_close_requested(&mut Context::from_waker(&second_waker)).is_pending());
    entry.request_close();
    assert_eq!(second.0.load(Ordering::SeqCst), 1, "the latest waker is woken");
    assert_eq!(first.0.load(Ordering::SeqCst), 0, "a replaced waker is not");
    assert!(entry.poll_close_requested(&mut Context::from_waker(&first_waker)).is_ready());
    entry.request_close();
    assert_eq!(
        second.0.load(Ordering::SeqCst) + first.0.load(Ordering::SeqCst),
        1,
        "no wake without a waiter"
    );
}

#[test]
fn a_request_before_the_first_poll_is_seen() {
    let (entry, _guard) = entry();
    entry.request_close();
    let (_, waker) = counting();
    assert!(entry.poll_close_requested(&mut Context::from_waker(&waker)).is_ready());
}

/// A request from another thread racing the poll: either the poll sees it, or the waker it left
/// is woken (every time, over many rounds, each with a fresh entry and a fresh waker per poll).
#[test]
fn a_request_racing_a_poll_is_never_lost() {
    for round in 0..1_000 {
        let (entry, _guard) = entry();
        let requester = {
            let entry = entry.clone();
            std::thread::spawn(move || {
                for _ in 0..round % 64 {
                    std::hint::spin_loop();
                }
                entry.request_close();
            })
        };
        // The counter of the last poll's waker if that poll was pending.
        let last = loop {
            let (counter, waker) = counting();
            match entry.poll_close_requested(&mut Context::from_waker(&waker)) {
                Poll::Ready(()) => break None,
                Poll::Pending if requester.is_finished() => break Some(counter),
                Poll::Pending => {}
            }
        };
        requester.join().unwrap();
        if let Some(counter) = last {
            assert_eq!(counter.0.load(Ordering::SeqCst), 1, "round {round}: the request was lost");
        }
    }
}
