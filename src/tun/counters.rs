//! What a packet tunnel counts: packets and bytes each way, flows, and drops by reason.

use std::sync::atomic::{AtomicU64, Ordering};

use super::packet::Drop;

/// A snapshot of a tunnel's counters ([`super::Tun::counters`]). Every dropped packet is in
/// exactly one `dropped_*` counter.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct TunCounters {
    /// IP packets read from the device.
    pub packets_in: u64,
    /// Bytes of those packets.
    pub bytes_in: u64,
    /// IP packets written to the device (translated TCP, UDP replies).
    pub packets_out: u64,
    /// Bytes of those packets.
    pub bytes_out: u64,
    /// TCP connections accepted from the tunnel and handed to the manager.
    pub tcp_connections: u64,
    /// UDP datagrams from the tunnel handed to a UDP session.
    pub udp_datagrams: u64,
    /// Dropped: IP fragments (not reassembled).
    pub dropped_fragments: u64,
    /// Dropped: truncated or inconsistent headers.
    pub dropped_malformed: u64,
    /// Dropped: a wrong IPv4 header or UDP checksum.
    pub dropped_bad_checksum: u64,
    /// Dropped: other protocols, ICMP other than echo requests, a family without a tunnel
    /// address, UDP or ICMP echo to a multicast or broadcast address, echo to the tunnel's own
    /// or NAT address.
    pub dropped_unsupported: u64,
    /// Dropped: a TCP segment of no known flow (not a SYN), or a reply to a NAT port that left.
    pub dropped_no_flow: u64,
    /// Dropped: a SYN that found every NAT port taken.
    pub dropped_nat_full: u64,
    /// Dropped: UDP datagrams that found their session's queue full or the socket budget spent,
    /// or came after the tunnel stopped.
    pub dropped_udp: u64,
    /// Dropped: packets the device refused to take (its queue was full).
    pub dropped_write: u64,
    /// Dropped: UDP datagrams of an app source the decision hook blocked.
    pub dropped_blocked: u64,
    /// TCP connections the decision hook blocked (reset, not handed to the manager).
    pub tcp_blocked: u64,
    /// Decisions asked of the decision hook.
    pub decisions: u64,
    /// Decisions that missed the hook's deadline (the connection got the fallback decision).
    pub decisions_timed_out: u64,
    /// Decisions whose decider panicked (the connection got the fallback decision).
    pub decisions_panicked: u64,
    /// Hijacked DNS queries (UDP and TCP) answered from a lookup: addresses, NODATA or NXDOMAIN
    /// (see [`super::DnsHijack`]).
    pub dns_answered: u64,
    /// Hijacked DNS queries that failed: answered SERVFAIL (the lookup failed), FORMERR or
    /// NOTIMP, or not answerable at all.
    pub dns_failed: u64,
    /// Dropped: hijacked UDP DNS queries that found every lookup slot taken
    /// ([`super::dns_hijack::MAX_IN_FLIGHT`]).
    pub dropped_dns: u64,
    /// ICMP echo requests from the tunnel sent on a ping socket ([`super::icmp`]).
    pub icmp_echoes: u64,
    /// ICMP echo replies written back to the tunnel.
    pub icmp_replies: u64,
    /// Dropped: echo requests that found no network, the echo flows or their queue full, that
    /// their socket refused, or that came after the tunnel stopped.
    pub dropped_icmp: u64,
    /// Dropped: echo requests with no ping socket to take them (Linux: the process's group is
    /// not in `net.ipv4.ping_group_range`; an outbound without ICMP).
    pub dropped_icmp_denied: u64,
}

/// The live counters behind [`TunCounters`].
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub packets_in: AtomicU64,
    pub bytes_in: AtomicU64,
    pub packets_out: AtomicU64,
    pub bytes_out: AtomicU64,
    pub tcp_connections: AtomicU64,
    pub udp_datagrams: AtomicU64,
    pub dropped_fragments: AtomicU64,
    pub dropped_malformed: AtomicU64,
    pub dropped_bad_checksum: AtomicU64,
    pub dropped_unsupported: AtomicU64,
    pub dropped_no_flow: AtomicU64,
    pub dropped_nat_full: AtomicU64,
    pub dropped_udp: AtomicU64,
    pub dropped_write: AtomicU64,
    pub dropped_blocked: AtomicU64,
    pub tcp_blocked: AtomicU64,
    pub decisions: AtomicU64,
    pub decisions_timed_out: AtomicU64,
    pub decisions_panicked: AtomicU64,
    pub dns_answered: AtomicU64,
    pub dns_failed: AtomicU64,
    pub dropped_dns: AtomicU64,
    pub icmp_echoes: AtomicU64,
    pub icmp_replies: AtomicU64,
    pub dropped_icmp: AtomicU64,
    pub dropped_icmp_denied: AtomicU64,
}

/// Adds one to a counter.
pub(crate) fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

impl Counters {
    /// Counts a packet dropped by the parser.
    pub fn dropped(&self, reason: Drop) {
        bump(match reason {
            Drop::Fragment => &self.dropped_fragments,
            Drop::Malformed => &self.dropped_malformed,
            Drop::BadChecksum => &self.dropped_bad_checksum,
            Drop::Unsupported => &self.dropped_unsupported,
        });
    }

    /// A snapshot of every counter.
    pub fn snapshot(&self) -> TunCounters {
        let get = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        TunCounters {
            packets_in: get(&self.packets_in),
            bytes_in: get(&self.bytes_in),
            packets_out: get(&self.packets_out),
            bytes_out: get(&self.bytes_out),
            tcp_connections: get(&self.tcp_connections),
            udp_datagrams: get(&self.udp_datagrams),
            dropped_fragments: get(&self.dropped_fragments),
            dropped_malformed: get(&self.dropped_malformed),
            dropped_bad_checksum: get(&self.dropped_bad_checksum),
            dropped_unsupported: get(&self.dropped_unsupported),
            dropped_no_flow: get(&self.dropped_no_flow),
            dropped_nat_full: get(&self.dropped_nat_full),
            dropped_udp: get(&self.dropped_udp),
            dropped_write: get(&self.dropped_write),
            dropped_blocked: get(&self.dropped_blocked),
            tcp_blocked: get(&self.tcp_blocked),
            decisions: get(&self.decisions),
            decisions_timed_out: get(&self.decisions_timed_out),
            decisions_panicked: get(&self.decisions_panicked),
            dns_answered: get(&self.dns_answered),
            dns_failed: get(&self.dns_failed),
            dropped_dns: get(&self.dropped_dns),
            icmp_echoes: get(&self.icmp_echoes),
            icmp_replies: get(&self.icmp_replies),
            dropped_icmp: get(&self.dropped_icmp),
            dropped_icmp_denied: get(&self.dropped_icmp_denied),
        }
    }
}
