//! Helpers for the tunnel's unit tests.

use std::time::{Duration, Instant};

/// Polls `done` every 10 ms until it is true; panics naming `what` after 10 s.
pub(crate) async fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(Instant::now() < deadline, "not within 10 s: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
