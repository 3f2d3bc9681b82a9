//! The ranges configured durations must stay in, so that a value a kernel would refuse (every
//! connection failing later with EINVAL) or one too large for clock arithmetic is rejected when
//! the configuration is loaded, with an error naming the key.
//!
//! | key | allowed |
//! |---|---|
//! | every duration | at most [`MAX_DURATION`] (365 days) |
//! | `tcp_keep_alive`, `tcp_keep_alive_interval` (unless `disable_tcp_keep_alive`) | 1 s to [`MAX_TCP_KEEPALIVE`] (32,767 s, the Linux/Android `TCP_KEEPIDLE`/`TCP_KEEPINTVL` maximum); whole seconds are used |
//! | `tcp_user_timeout` | `0s` (system default), or 1 ms to [`MAX_TCP_USER_TIMEOUT`] (2,147,483,647 ms, about 24 days 20 h: Linux reads it as a signed 32-bit count of milliseconds) |

use std::time::Duration;

use super::{Config, ConfigError};

/// The longest duration any key accepts: 365 days.
pub const MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 3600);
/// The longest TCP keepalive idle time and probe interval: 32,767 s (Linux `MAX_TCP_KEEPIDLE`,
/// `MAX_TCP_KEEPINTVL`).
pub const MAX_TCP_KEEPALIVE: Duration = Duration::from_secs(32_767);
/// The longest `TCP_USER_TIMEOUT`: `i32::MAX` milliseconds.
pub const MAX_TCP_USER_TIMEOUT: Duration = Duration::from_millis(i32::MAX as u64);

const TOO_LONG: &str = "must be at most 365d";
const KEEPALIVE_RANGE: &str =
    "must be between 1s and 32767s (9h 6m 7s), the largest TCP keepalive time Linux and Android accept";
const USER_TIMEOUT_RANGE: &str = "must be 0s (the system default) or between 1ms and 2147483647ms \
     (24d 20h 31m 23s), the largest TCP_USER_TIMEOUT Linux and Android accept";

impl Config {
    /// Checks every duration against [`MAX_DURATION`] and the TCP options against the kernels'
    /// ranges (see the module documentation).
    pub(super) fn check_duration_limits(&self) -> Result<(), ConfigError> {
        let invalid =
            |field: &'static str, reason: &'static str| ConfigError::Invalid { file: None, field, reason };
        let durations = [
            ("connect_timeout", self.connect_timeout),
            ("half_close_timeout", self.half_close_timeout),
            ("fallback_delay", self.fallback_delay),
            ("tcp_keep_alive", self.tcp_keep_alive),
            ("tcp_keep_alive_interval", self.tcp_keep_alive_interval),
            ("tcp_user_timeout", self.tcp_user_timeout),
            ("udp_timeout", self.udp_timeout),
            ("tls_fragment_fallback_delay", self.tls_fragment_fallback_delay),
            ("socks.handshake_timeout", self.socks.handshake_timeout),
        ];
        if let Some((field, _)) = durations.iter().find(|(_, value)| *value > MAX_DURATION) {
            return Err(invalid(field, TOO_LONG));
        }
        if !self.disable_tcp_keep_alive {
            let keepalive = Duration::from_secs(1)..=MAX_TCP_KEEPALIVE;
            if !keepalive.contains(&self.tcp_keep_alive) {
                return Err(invalid("tcp_keep_alive", KEEPALIVE_RANGE));
            }
            if !keepalive.contains(&self.tcp_keep_alive_interval) {
                return Err(invalid("tcp_keep_alive_interval", KEEPALIVE_RANGE));
            }
        }
        let user_timeout = self.tcp_user_timeout;
        if !user_timeout.is_zero()
            && !(Duration::from_millis(1)..=MAX_TCP_USER_TIMEOUT).contains(&user_timeout)
        {
            return Err(invalid("tcp_user_timeout", USER_TIMEOUT_RANGE));
        }
        Ok(())
    }
}
