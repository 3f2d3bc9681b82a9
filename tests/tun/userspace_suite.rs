//! The TUN suite's tests again with `stack = userspace` (issue 16: "every test of the TUN suite
//! runs with stack = userspace too"): the same topology and assertions, from the helpers the
//! system-stack tests run with `Stack::System`.

use netswitch::tun::{Framing, Stack};

use super::{role, run_in_namespace};

/// Runs `body` with the userspace stack inside a new network namespace (root only).
fn userspace(name: &str, body: fn(Stack)) {
    if role().as_deref() != Some("device") {
        return run_in_namespace(&format!("userspace_suite::{name}"));
    }
    body(Stack::Userspace);
}

/// DNS hijack: UDP and DNS over TCP to the tunnel's DNS address answered, not dialed.
#[test]
fn userspace_dns_queries_to_the_dns_address_are_resolved_over_wifi() {
    userspace(
        "userspace_dns_queries_to_the_dns_address_are_resolved_over_wifi",
        super::dns::resolved_over_wifi,
    );
}

/// DNS hijack of port 53 of every address, over UDP and TCP; other ports relayed.
#[test]
fn userspace_dns_all_port_53_answers_any_address_and_relays_the_rest() {
    userspace("userspace_dns_all_port_53_answers_any_address_and_relays_the_rest", super::dns::all_port_53);
}

/// curl resolves through the hijack and fetches a page through the userspace stack.
#[test]
fn userspace_dns_curl_by_name_through_the_hijack() {
    userspace("userspace_dns_curl_by_name_through_the_hijack", super::dns::curl_by_name);
}

/// The decision hook blocks (a reset), reroutes and defaults userspace TCP connections too.
#[test]
fn userspace_decider_blocks_reroutes_and_defaults() {
    userspace("userspace_decider_blocks_reroutes_and_defaults", super::decide::blocks_reroutes_and_defaults);
}

/// ICMP echo takes the same path with either stack.
#[test]
fn userspace_icmp_echo_goes_out_over_the_chosen_network() {
    userspace(
        "userspace_icmp_echo_goes_out_over_the_chosen_network",
        super::icmp::echo_goes_out_over_the_chosen_network,
    );
}

/// 1,000 connections at once through the userspace stack, all gone afterwards.
#[test]
fn userspace_thousand_connections_at_once_leave_nothing_behind() {
    userspace(
        "userspace_thousand_connections_at_once_leave_nothing_behind",
        super::scale::thousand_connections_at_once,
    );
}

/// 64 MiB each way at once with both half-closes and a reset in the middle.
#[test]
fn userspace_64_mib_each_way_at_once_with_half_closes_and_a_reset() {
    userspace("userspace_64_mib_each_way_at_once_with_half_closes_and_a_reset", |stack| {
        super::scale::bulk_both_ways(Framing::Raw, stack)
    });
}

/// A UDP flood from 40 new sources past `max_sockets` 4: three more sessions, 37 drops counted.
#[test]
fn tun_userspace_udp_sessions_are_capped_and_drops_counted() {
    userspace("tun_userspace_udp_sessions_are_capped_and_drops_counted", super::udp_sessions_are_capped);
}

/// 2 × 100,000 UDP datagrams echoed, every one accounted for (a device without offloads: the
/// userspace stack takes no super-packets).
#[test]
fn tun_userspace_udp_echo_100000_datagrams_accounted_for() {
    userspace("tun_userspace_udp_echo_100000_datagrams_accounted_for", |stack| {
        super::scale::udp_echo_100000(Framing::Raw, stack)
    });
}

/// Fallback over cellular while Wi-Fi drops everything; Wi-Fi lost: exactly its connections
/// reset, the cellular ones keep echoing (a device without offloads).
#[test]
fn tun_userspace_strategy_fallback_and_wifi_loss() {
    userspace("tun_userspace_strategy_fallback_and_wifi_loss", |stack| {
        super::scale::strategy_fallback_and_wifi_loss(Framing::Raw, stack)
    });
}

/// A UDP flood: memory bounded by the settings, every datagram received or counted.
#[test]
fn tun_userspace_udp_flood_memory_is_bounded_and_every_datagram_counted() {
    userspace(
        "tun_userspace_udp_flood_memory_is_bounded_and_every_datagram_counted",
        super::udp_flood::flood_is_bounded_and_counted,
    );
}

/// Ping sockets denied: echoes dropped and counted; allowed again: the next one is relayed.
#[test]
fn tun_userspace_icmp_echo_without_ping_sockets_is_dropped_and_counted() {
    userspace(
        "tun_userspace_icmp_echo_without_ping_sockets_is_dropped_and_counted",
        super::icmp::without_ping_sockets,
    );
}

/// Without the hijack, a query to the DNS address is relayed as a UDP flow and not answered.
#[test]
fn tun_userspace_dns_without_the_hijack_the_dns_address_does_not_answer() {
    userspace(
        "tun_userspace_dns_without_the_hijack_the_dns_address_does_not_answer",
        super::dns::without_the_hijack,
    );
}

/// With Wi-Fi dropping everything, the hijacked query is answered over cellular (fallback).
#[test]
fn tun_userspace_dns_the_fallback_network_resolves_when_wifi_drops_everything() {
    userspace(
        "tun_userspace_dns_the_fallback_network_resolves_when_wifi_drops_everything",
        super::dns::fallback_resolves,
    );
}

/// `netswitch tun --dns-hijack --stack userspace` answers on the NAT address (UDP and TCP).
#[test]
fn tun_userspace_cli_dns_hijack_answers_on_the_nat_address() {
    userspace("tun_userspace_cli_dns_hijack_answers_on_the_nat_address", super::dns::cli_dns_hijack);
}
