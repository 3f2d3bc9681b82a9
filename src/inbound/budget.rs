//! A cap shared by everything that draws from it (e.g. every UDP association of a SOCKS server),
//! with counted refusals.
//!
//! Guarantees:
//! - at most [`Budget::limit`] permits are out at once; a permit is given back when it is dropped,
//!   whatever way its holder ends;
//! - every refusal is counted ([`Budget::refused`]) and logged at warn, at most once per
//!   [`WARNING_INTERVAL`] per budget (with the number refused since the last warning), so a flood
//!   of refusals cannot flood the log.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Shortest time between two refusal warnings of one budget.
pub const WARNING_INTERVAL: Duration = Duration::from_secs(10);

/// A shared cap (see the module docs). Create it with [`Budget::new`], share it in an `Arc`.
#[derive(Debug)]
pub struct Budget {
    what: &'static str,
    limit: usize,
    in_use: AtomicUsize,
    refused: AtomicU64,
    /// When the last warning was logged and the refusal count at that time.
    warned: Mutex<Option<(Instant, u64)>>,
}

/// One unit drawn from a [`Budget`]; gives it back when dropped.
#[derive(Debug)]
pub struct Permit {
    budget: Arc<Budget>,
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.budget.in_use.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Budget {
    /// A budget of `limit` permits (at least 1) for `what` (a plural noun for the log, such as
    /// "SOCKS UDP associations").
    pub fn new(what: &'static str, limit: usize) -> Arc<Budget> {
        Arc::new(Budget {
            what,
            limit: limit.max(1),
            in_use: AtomicUsize::new(0),
            refused: AtomicU64::new(0),
            warned: Mutex::new(None),
        })
    }

    /// Draws one permit, or counts a refusal (and warns, rate-limited) when all are out.
    pub fn try_acquire(self: &Arc<Self>) -> Option<Permit> {
        let taken = self.in_use.fetch_update(Ordering::AcqRel, Ordering::Acquire, |in_use| {
            (in_use < self.limit).then_some(in_use + 1)
        });
        match taken {
            Ok(_) => Some(Permit { budget: self.clone() }),
            Err(_) => {
                let refused = self.refused.fetch_add(1, Ordering::Relaxed) + 1;
                self.warn(refused);
                None
            }
        }
    }

    /// The cap.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Permits out now.
    pub fn in_use(&self) -> usize {
        self.in_use.load(Ordering::Acquire)
    }

    /// Refusals so far.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    fn warn(&self, refused: u64) {
        let now = Instant::now();
        let mut warned = self.warned.lock().unwrap_or_else(PoisonError::into_inner);
        let since = match *warned {
            Some((at, _)) if now.duration_since(at) < WARNING_INTERVAL => return,
            Some((_, before)) => refused - before,
            None => refused,
        };
        *warned = Some((now, refused));
        drop(warned);
        tracing::warn!(
            limit = self.limit,
            refused_since_last_warning = since,
            refused_total = refused,
            "too many {}: refusing new ones until some end",
            self.what
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permits_are_capped_counted_and_given_back() {
        let budget = Budget::new("things", 2);
        let first = budget.try_acquire().expect("first");
        let second = budget.try_acquire().expect("second");
        assert!(budget.try_acquire().is_none());
        assert!(budget.try_acquire().is_none());
        assert_eq!((budget.in_use(), budget.refused()), (2, 2));
        drop(first);
        let third = budget.try_acquire().expect("a dropped permit is given back");
        assert_eq!(budget.in_use(), 2);
        drop((second, third));
        assert_eq!((budget.in_use(), budget.refused()), (0, 2));
        assert_eq!(Budget::new("zero", 0).limit(), 1);
    }
}
