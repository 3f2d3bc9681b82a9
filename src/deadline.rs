//! Deadlines from durations that come from configuration or the host, without overflow: a
//! duration too large for the clock (`"500000000000y"`) means "a year from now", never a panic.

use std::time::Duration;

use tokio::time::Instant;

/// How far a deadline that cannot be represented is placed instead: a year.
pub const FAR_FUTURE: Duration = Duration::from_secs(365 * 24 * 3600);

/// `now + timeout`, or `now + FAR_FUTURE` when that cannot be represented.
pub fn after(now: Instant, timeout: Duration) -> Instant {
    now.checked_add(timeout).or_else(|| now.checked_add(FAR_FUTURE)).unwrap_or(now)
}

/// [`after`] from the current instant.
pub fn from_now(timeout: Duration) -> Instant {
    after(Instant::now(), timeout)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn huge_durations_become_a_year() {
        let now = Instant::now();
        assert_eq!(after(now, Duration::from_secs(5)), now + Duration::from_secs(5));
        assert_eq!(after(now, Duration::MAX), now + FAR_FUTURE);
    }
}
