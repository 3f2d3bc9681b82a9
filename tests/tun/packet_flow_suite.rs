//! The TUN suite through the packet-flow API (issue 16: "the packet-flow API runs the same suite
//! through a test host that moves packets between a TUN fd and the API"): every body of the suite
//! that does not need the fd itself, run again with netswitch on tun0's packet flow
//! ([`super::flow_host`]: `Device::up_through` starts `Netswitch::start_packet_flow` and the test
//! host moves tun0's packets), with the userspace stack — the iOS configuration — and with the
//! system stack where the body is cheap. Same topology, same body, same assertions; where a body
//! reads what only one link has, it says so next to the assertion.
//!
//! Not here: the CLI tests (the CLI opens its own device and reads its fd), the offload tests
//! (`Framing::VirtioNet`: the packet flow carries whole IP packets only, so the bodies taking a
//! framing run with `Framing::Raw`), and the measurements. The loss body runs too: its lossy
//! mover sits between tun0 and the fd the test host moves through the packet flow.

use netswitch::tun::{Framing, Stack};

use super::flow_host::{over_flow, run_in_namespace_over_flow};
use super::role;

/// Runs `body` with `stack` over the packet flow, inside a new network namespace (root only).
fn over_the_flow(name: &str, stack: Stack, body: impl FnOnce(Stack)) {
    if role().as_deref() != Some("device") {
        return run_in_namespace_over_flow(&format!("packet_flow_suite::{name}"));
    }
    assert!(over_flow(), "{name} runs over the packet flow");
    body(stack);
}

/// TCP v4/v6 from wifi0, 1 MiB echo with both half-closes, resets, UDP echo and mapping, malformed packets counted, stop resets.
#[test]
fn tun_packet_flow_userspace_tcp_and_udp() {
    over_the_flow("tun_packet_flow_userspace_tcp_and_udp", Stack::Userspace, super::tcp_and_udp);
}

/// TCP v4/v6 from wifi0, 1 MiB echo with both half-closes, resets, UDP echo and mapping, malformed packets counted, stop resets.
#[test]
fn tun_packet_flow_system_tcp_and_udp() {
    over_the_flow("tun_packet_flow_system_tcp_and_udp", Stack::System, super::tcp_and_udp);
}

/// 40 new UDP sources past `max_sockets` 4: three more sessions, 37 drops counted.
#[test]
fn tun_packet_flow_userspace_udp_sessions_are_capped_and_drops_counted() {
    over_the_flow(
        "tun_packet_flow_userspace_udp_sessions_are_capped_and_drops_counted",
        Stack::Userspace,
        super::udp_sessions_are_capped,
    );
}

/// 40 new UDP sources past `max_sockets` 4: three more sessions, 37 drops counted.
#[test]
fn tun_packet_flow_system_udp_sessions_are_capped_and_drops_counted() {
    over_the_flow(
        "tun_packet_flow_system_udp_sessions_are_capped_and_drops_counted",
        Stack::System,
        super::udp_sessions_are_capped,
    );
}

/// 300 connections open at once, then closed: NAT, manager and fds back to the baseline.
#[test]
fn tun_packet_flow_userspace_many_connections_leave_nothing_behind() {
    over_the_flow(
        "tun_packet_flow_userspace_many_connections_leave_nothing_behind",
        Stack::Userspace,
        super::many_connections,
    );
}

/// 300 connections open at once, then closed: NAT, manager and fds back to the baseline.
#[test]
fn tun_packet_flow_system_many_connections_leave_nothing_behind() {
    over_the_flow(
        "tun_packet_flow_system_many_connections_leave_nothing_behind",
        Stack::System,
        super::many_connections,
    );
}

/// 64 MiB each way at once, both half-closes and a reset in the middle (raw packets).
#[test]
fn tun_packet_flow_userspace_64_mib_each_way_at_once_with_half_closes_and_a_reset() {
    over_the_flow(
        "tun_packet_flow_userspace_64_mib_each_way_at_once_with_half_closes_and_a_reset",
        Stack::Userspace,
        |stack| super::scale::bulk_both_ways(Framing::Raw, stack),
    );
}

/// 64 MiB each way at once, both half-closes and a reset in the middle (raw packets).
#[test]
fn tun_packet_flow_system_64_mib_each_way_at_once_with_half_closes_and_a_reset() {
    over_the_flow(
        "tun_packet_flow_system_64_mib_each_way_at_once_with_half_closes_and_a_reset",
        Stack::System,
        |stack| super::scale::bulk_both_ways(Framing::Raw, stack),
    );
}

/// 1,000 connections at once (v4 and v6), all gone afterwards.
#[test]
fn tun_packet_flow_userspace_thousand_connections_at_once_leave_nothing_behind() {
    over_the_flow(
        "tun_packet_flow_userspace_thousand_connections_at_once_leave_nothing_behind",
        Stack::Userspace,
        super::scale::thousand_connections_at_once,
    );
}

/// 1,000 connections at once (v4 and v6), all gone afterwards.
#[test]
fn tun_packet_flow_system_thousand_connections_at_once_leave_nothing_behind() {
    over_the_flow(
        "tun_packet_flow_system_thousand_connections_at_once_leave_nothing_behind",
        Stack::System,
        super::scale::thousand_connections_at_once,
    );
}

/// 2 x 100,000 UDP datagrams echoed, every one accounted for (raw packets).
#[test]
fn tun_packet_flow_userspace_udp_echo_100000_datagrams_accounted_for() {
    over_the_flow(
        "tun_packet_flow_userspace_udp_echo_100000_datagrams_accounted_for",
        Stack::Userspace,
        |stack| super::scale::udp_echo_100000(Framing::Raw, stack),
    );
}

/// 2 x 100,000 UDP datagrams echoed, every one accounted for (raw packets).
#[test]
fn tun_packet_flow_system_udp_echo_100000_datagrams_accounted_for() {
    over_the_flow("tun_packet_flow_system_udp_echo_100000_datagrams_accounted_for", Stack::System, |stack| {
        super::scale::udp_echo_100000(Framing::Raw, stack)
    });
}

/// Fallback over cellular while Wi-Fi drops everything; Wi-Fi lost: exactly its connections reset (raw packets).
#[test]
fn tun_packet_flow_userspace_strategy_fallback_and_wifi_loss() {
    over_the_flow("tun_packet_flow_userspace_strategy_fallback_and_wifi_loss", Stack::Userspace, |stack| {
        super::scale::strategy_fallback_and_wifi_loss(Framing::Raw, stack)
    });
}

/// Fallback over cellular while Wi-Fi drops everything; Wi-Fi lost: exactly its connections reset (raw packets).
#[test]
fn tun_packet_flow_system_strategy_fallback_and_wifi_loss() {
    over_the_flow("tun_packet_flow_system_strategy_fallback_and_wifi_loss", Stack::System, |stack| {
        super::scale::strategy_fallback_and_wifi_loss(Framing::Raw, stack)
    });
}

/// A UDP flood: memory bounded by the settings, every datagram received or counted.
#[test]
fn tun_packet_flow_userspace_udp_flood_memory_is_bounded_and_every_datagram_counted() {
    over_the_flow(
        "tun_packet_flow_userspace_udp_flood_memory_is_bounded_and_every_datagram_counted",
        Stack::Userspace,
        super::udp_flood::flood_is_bounded_and_counted,
    );
}

/// A UDP flood: memory bounded by the settings, every datagram received or counted.
#[test]
fn tun_packet_flow_system_udp_flood_memory_is_bounded_and_every_datagram_counted() {
    over_the_flow(
        "tun_packet_flow_system_udp_flood_memory_is_bounded_and_every_datagram_counted",
        Stack::System,
        super::udp_flood::flood_is_bounded_and_counted,
    );
}

/// ICMP echo relayed over the chosen network.
#[test]
fn tun_packet_flow_userspace_icmp_echo_goes_out_over_the_chosen_network() {
    over_the_flow(
        "tun_packet_flow_userspace_icmp_echo_goes_out_over_the_chosen_network",
        Stack::Userspace,
        super::icmp::echo_goes_out_over_the_chosen_network,
    );
}

/// ICMP echo relayed over the chosen network.
#[test]
fn tun_packet_flow_system_icmp_echo_goes_out_over_the_chosen_network() {
    over_the_flow(
        "tun_packet_flow_system_icmp_echo_goes_out_over_the_chosen_network",
        Stack::System,
        super::icmp::echo_goes_out_over_the_chosen_network,
    );
}

/// Ping sockets denied: echoes dropped and counted; allowed again: relayed.
#[test]
fn tun_packet_flow_userspace_icmp_echo_without_ping_sockets_is_dropped_and_counted() {
    over_the_flow(
        "tun_packet_flow_userspace_icmp_echo_without_ping_sockets_is_dropped_and_counted",
        Stack::Userspace,
        super::icmp::without_ping_sockets,
    );
}

/// Ping sockets denied: echoes dropped and counted; allowed again: relayed.
#[test]
fn tun_packet_flow_system_icmp_echo_without_ping_sockets_is_dropped_and_counted() {
    over_the_flow(
        "tun_packet_flow_system_icmp_echo_without_ping_sockets_is_dropped_and_counted",
        Stack::System,
        super::icmp::without_ping_sockets,
    );
}

/// DNS hijack: UDP and DNS over TCP to the tunnel's DNS address answered, not dialed.
#[test]
fn tun_packet_flow_userspace_dns_queries_to_the_dns_address_are_resolved_over_wifi() {
    over_the_flow(
        "tun_packet_flow_userspace_dns_queries_to_the_dns_address_are_resolved_over_wifi",
        Stack::Userspace,
        super::dns::resolved_over_wifi,
    );
}

/// DNS hijack: UDP and DNS over TCP to the tunnel's DNS address answered, not dialed.
#[test]
fn tun_packet_flow_system_dns_queries_to_the_dns_address_are_resolved_over_wifi() {
    over_the_flow(
        "tun_packet_flow_system_dns_queries_to_the_dns_address_are_resolved_over_wifi",
        Stack::System,
        super::dns::resolved_over_wifi,
    );
}

/// Without the hijack, a query to the DNS address is relayed and not answered.
#[test]
fn tun_packet_flow_userspace_dns_without_the_hijack_the_dns_address_does_not_answer() {
    over_the_flow(
        "tun_packet_flow_userspace_dns_without_the_hijack_the_dns_address_does_not_answer",
        Stack::Userspace,
        super::dns::without_the_hijack,
    );
}

/// Without the hijack, a query to the DNS address is relayed and not answered.
#[test]
fn tun_packet_flow_system_dns_without_the_hijack_the_dns_address_does_not_answer() {
    over_the_flow(
        "tun_packet_flow_system_dns_without_the_hijack_the_dns_address_does_not_answer",
        Stack::System,
        super::dns::without_the_hijack,
    );
}

/// curl resolves through the hijack and fetches a page.
#[test]
fn tun_packet_flow_userspace_dns_curl_by_name_through_the_hijack() {
    over_the_flow(
        "tun_packet_flow_userspace_dns_curl_by_name_through_the_hijack",
        Stack::Userspace,
        super::dns::curl_by_name,
    );
}

/// curl resolves through the hijack and fetches a page.
#[test]
fn tun_packet_flow_system_dns_curl_by_name_through_the_hijack() {
    over_the_flow(
        "tun_packet_flow_system_dns_curl_by_name_through_the_hijack",
        Stack::System,
        super::dns::curl_by_name,
    );
}

/// Hijack of port 53 of every address, UDP and TCP; other ports relayed.
#[test]
fn tun_packet_flow_userspace_dns_all_port_53_answers_any_address_and_relays_the_rest() {
    over_the_flow(
        "tun_packet_flow_userspace_dns_all_port_53_answers_any_address_and_relays_the_rest",
        Stack::Userspace,
        super::dns::all_port_53,
    );
}

/// Hijack of port 53 of every address, UDP and TCP; other ports relayed.
#[test]
fn tun_packet_flow_system_dns_all_port_53_answers_any_address_and_relays_the_rest() {
    over_the_flow(
        "tun_packet_flow_system_dns_all_port_53_answers_any_address_and_relays_the_rest",
        Stack::System,
        super::dns::all_port_53,
    );
}

/// With Wi-Fi dropping everything, the hijacked query is answered over cellular.
#[test]
fn tun_packet_flow_userspace_dns_the_fallback_network_resolves_when_wifi_drops_everything() {
    over_the_flow(
        "tun_packet_flow_userspace_dns_the_fallback_network_resolves_when_wifi_drops_everything",
        Stack::Userspace,
        super::dns::fallback_resolves,
    );
}

/// With Wi-Fi dropping everything, the hijacked query is answered over cellular.
#[test]
fn tun_packet_flow_system_dns_the_fallback_network_resolves_when_wifi_drops_everything() {
    over_the_flow(
        "tun_packet_flow_system_dns_the_fallback_network_resolves_when_wifi_drops_everything",
        Stack::System,
        super::dns::fallback_resolves,
    );
}

/// The decision hook blocks (a reset), reroutes and defaults connections.
#[test]
fn tun_packet_flow_userspace_decider_blocks_reroutes_and_defaults() {
    over_the_flow(
        "tun_packet_flow_userspace_decider_blocks_reroutes_and_defaults",
        Stack::Userspace,
        super::decide::blocks_reroutes_and_defaults,
    );
}

/// The decision hook blocks (a reset), reroutes and defaults connections.
#[test]
fn tun_packet_flow_system_decider_blocks_reroutes_and_defaults() {
    over_the_flow(
        "tun_packet_flow_system_decider_blocks_reroutes_and_defaults",
        Stack::System,
        super::decide::blocks_reroutes_and_defaults,
    );
}

/// 16 MiB each way at once at 1 % and 5 % loss (the loss mover between tun0 and the test host),
/// the app's FIN after its upload, while netswitch still sends.
#[test]
fn tun_packet_flow_userspace_16_mib_each_way_at_1_and_5_percent_loss() {
    over_the_flow(
        "tun_packet_flow_userspace_16_mib_each_way_at_1_and_5_percent_loss",
        Stack::Userspace,
        |stack| {
            super::userspace_loss::transfers_under_loss(stack, super::userspace_loss::AppFin::AfterUpload)
        },
    );
}
