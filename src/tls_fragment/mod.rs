//! TLS ClientHello fragmentation: cut the first ClientHello of a connection inside every label of
//! its server name, so that middleboxes reading the name from one packet or one record cannot.
//!
//! - [`client_hello`]: recognises one complete ClientHello record in the first write and finds
//!   the server name; anything else passes through untouched (fragmentation is then off for that
//!   connection).
//! - [`split`]: where to cut and how to re-frame the pieces as TLS records.
//! - [`writer`]: writes the pieces (record mode: all at once; segment mode: one TCP segment each,
//!   waiting for the peer's acknowledgement between them).
//!
//! Only the first payload written to the remote is inspected; everything after it goes through
//! the normal copy engine untouched.

mod ack;
pub mod client_hello;
pub mod split;
pub mod writer;

use std::time::Duration;

use crate::metadata::ConnectionOptions;

pub use writer::{write_first, FirstWrite};

/// Default bound of the wait for the peer's acknowledgement between segments (the reference's
/// `TLSFragmentFallbackDelay`).
pub const DEFAULT_FALLBACK_DELAY: Duration = Duration::from_millis(500);

/// How (and whether) a connection's ClientHello is fragmented. Both modes may be on together.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct FragmentSettings {
    /// Segment mode (`tls_fragment`): each piece in its own TCP segment. Default off.
    pub segment: bool,
    /// Record mode (`tls_record_fragment`): each piece re-framed as its own TLS record. Default off.
    pub record: bool,
    /// Bound of the wait for an acknowledgement between segments (`tls_fragment_fallback_delay`);
    /// where acknowledgements cannot be observed, the delay slept instead. Default 500 ms.
    pub fallback_delay: Duration,
}

impl Default for FragmentSettings {
    fn default() -> Self {
        FragmentSettings { segment: false, record: false, fallback_delay: DEFAULT_FALLBACK_DELAY }
    }
}

impl FragmentSettings {
    /// True when either mode is on.
    pub fn is_enabled(&self) -> bool {
        self.segment || self.record
    }

    /// The settings for one connection: these (configuration-level) defaults merged with the
    /// connection's own options. A mode is on when either turns it on, unless the connection's
    /// `disable_tls_fragment` turns both off; the connection's fallback delay, when set, replaces
    /// the default.
    pub fn for_connection(&self, options: &ConnectionOptions) -> FragmentSettings {
        let allowed = !options.disable_tls_fragment;
        FragmentSettings {
            segment: allowed && (self.segment || options.tls_fragment),
            record: allowed && (self.record || options.tls_record_fragment),
            fallback_delay: options.tls_fragment_fallback_delay.unwrap_or(self.fallback_delay),
        }
    }
}
