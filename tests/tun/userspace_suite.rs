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
