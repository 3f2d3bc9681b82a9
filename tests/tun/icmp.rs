//! ICMP echo through the tunnel (root, in the namespaces of `main.rs`): the app's echo requests
//! leave over the network the strategy chooses, through ping sockets, and only real replies come
//! back. The app side is a raw ICMP socket bound to the tunnel address (so it sees only what
//! comes out of the tunnel), which checks identifier, sequence, data and checksum of each
//! reply; `ping` itself runs too when it is installed.

use std::net::{IpAddr, SocketAddr};
use std::process::Command;
use std::time::{Duration, Instant};

use etherparse::{Icmpv4Slice, Icmpv4Type, Icmpv6Slice, Icmpv6Type, Ipv4HeaderSlice};
use netswitch::network::{InterfaceSnapshot, NetworkType};
use netswitch::tun::{Stack, TunCounters};
use socket2::{Domain, Protocol, Socket, Type};

use super::topology::{Link, SERVER_V4, SERVER_V6};
use super::{blocking, interface, role, run_in_namespace, Device};

/// Per network namespace: which groups may open ping sockets.
const PING_GROUP_RANGE: &str = "/proc/sys/net/ipv4/ping_group_range";
const TUN_V4: &str = "172.19.0.1";
const TUN_V6: &str = "fdfe::1";
/// How long the app waits for each reply.
const REPLY_WAIT: Duration = Duration::from_secs(2);

/// Lets every group open ping sockets in this namespace, or none (the kernel's default).
fn allow_ping_sockets(allow: bool) {
    std::fs::write(PING_GROUP_RANGE, if allow { "0 2147483647" } else { "1 0" }).unwrap();
}

fn ip(address: &str) -> IpAddr {
    address.parse().unwrap()
}

/// Transmitted packets of `link` so far (from /proc/net/dev, which is this namespace's).
fn tx_packets(link: Link) -> u64 {
    let table = std::fs::read_to_string("/proc/net/dev").unwrap();
    let line = table.lines().find(|l| l.trim_start().starts_with(&format!("{}:", link.name()))).unwrap();
    let fields: Vec<&str> = line.split(':').nth(1).unwrap().split_whitespace().collect();
    fields[9].parse().unwrap()
}

/// RFC 1071 checksum of `bytes`.
fn checksum(bytes: &[u8]) -> u16 {
    let mut sum: u32 =
        bytes.chunks(2).map(|w| u32::from(u16::from_be_bytes([w[0], *w.get(1).unwrap_or(&0)]))).sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// The data of echo `sequence`.
fn data(sequence: u16) -> Vec<u8> {
    (0..56u16).map(|i| (i.wrapping_mul(7).wrapping_add(sequence)) as u8).collect()
}

/// Sends `count` echo requests with identifier `id` from the tunnel address `from` to `to`
/// through a raw socket (as `ping` does), waiting up to [`REPLY_WAIT`] for each reply; returns
/// how many came back with the right identifier, sequence, data and checksum.
fn ping(from: IpAddr, to: IpAddr, id: u16, count: u16) -> u16 {
    let (domain, protocol) = match to {
        IpAddr::V4(_) => (Domain::IPV4, Protocol::ICMPV4),
        IpAddr::V6(_) => (Domain::IPV6, Protocol::ICMPV6),
    };
    let socket = Socket::new(domain, Type::RAW, Some(protocol)).unwrap();
    // Bound to the tunnel address and connected: only packets from `to` to the tunnel address.
    socket.bind(&SocketAddr::new(from, 0).into()).unwrap();
    socket.connect(&SocketAddr::new(to, 0).into()).unwrap();
    let mut replies = 0;
    for sequence in 1..=count {
        let request_type = if to.is_ipv4() { 8 } else { 128 };
        let mut message = vec![request_type, 0, 0, 0];
        message.extend_from_slice(&id.to_be_bytes());
        message.extend_from_slice(&sequence.to_be_bytes());
        message.extend_from_slice(&data(sequence));
        if to.is_ipv4() {
            // (The kernel computes the ICMPv6 checksum of a raw ICMPv6 socket.)
            let sum = checksum(&message);
            message[2..4].copy_from_slice(&sum.to_be_bytes());
        }
        socket.send(&message).unwrap();
        let deadline = Instant::now() + REPLY_WAIT;
        while let Some(left) = deadline.checked_duration_since(Instant::now()).filter(|d| !d.is_zero()) {
            socket.set_read_timeout(Some(left)).unwrap();
            let mut buf = [0u8; 2048];
            let Ok(n) = std::io::Read::read(&mut &socket, &mut buf) else { break };
            if is_reply(&buf[..n], from, to, id, sequence) {
                replies += 1;
                break;
            }
        }
    }
    replies
}

/// True when `received` (IPv4: with its IP header) is the echo reply `id`/`sequence` from `to`
/// to `from` with the request's data and a valid checksum.
fn is_reply(received: &[u8], from: IpAddr, to: IpAddr, id: u16, sequence: u16) -> bool {
    let echo = match (from, to) {
        (IpAddr::V4(from), IpAddr::V4(to)) => {
            let Ok(header) = Ipv4HeaderSlice::from_slice(received) else { return false };
            if header.source_addr() != to || header.destination_addr() != from {
                return false;
            }
            let message = &received[header.slice().len()..];
            let Ok(icmp) = Icmpv4Slice::from_slice(message) else { return false };
            let Icmpv4Type::EchoReply(echo) = icmp.icmp_type() else { return false };
            assert_eq!(checksum(message), 0, "the reply's ICMP checksum verifies");
            (echo.id, echo.seq, icmp.payload())
        }
        (IpAddr::V6(from), IpAddr::V6(to)) => {
            let Ok(icmp) = Icmpv6Slice::from_slice(received) else { return false };
            let Icmpv6Type::EchoReply(echo) = icmp.icmp_type() else { return false };
            assert!(
                icmp.is_checksum_valid(to.octets(), from.octets()),
                "the reply's ICMPv6 checksum verifies"
            );
            (echo.id, echo.seq, icmp.payload())
        }
        _ => return false,
    };
    echo.0 == id && echo.1 == sequence && {
        assert_eq!(echo.2, &data(sequence)[..], "the reply carries the request's data");
        true
    }
}

/// The tunnel's counters once `done` holds for them (the app may read a reply a moment before
/// the tunnel counts it), at most 5 s.
async fn counted(device: &Device, done: impl Fn(&TunCounters) -> bool) -> TunCounters {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let counters = device.tun.counters();
        if done(&counters) || Instant::now() > deadline {
            return counters;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Runs `ping` with `args` and returns its output, or `None` (printed) when it is not installed.
fn ping_command(args: &[&str]) -> Option<String> {
    match Command::new("ping").args(args).output() {
        Ok(output) => {
            let text = String::from_utf8_lossy(&output.stdout).to_string();
            assert!(
                output.status.success(),
                "ping {}: {text}{}",
                args.join(" "),
                String::from_utf8_lossy(&output.stderr)
            );
            Some(text)
        }
        Err(error) => {
            println!(
                "skipped the `ping {}` run: {error} (the raw-socket pings cover the same path)",
                args.join(" ")
            );
            None
        }
    }
}

/// Pings from the device namespace reach the server over wifi0 (replies to cellular's
/// addresses are blackholed on the server) and come back with the app's identifier; after the
/// snapshot changes to cellular only, a new flow leaves over cell0 (wifi0's replies
/// blackholed now). Nothing answers for the NAT address or a host that does not exist.
#[test]
fn tun_icmp_echo_goes_out_over_the_chosen_network() {
    if role().as_deref() != Some("device") {
        return run_in_namespace("icmp::tun_icmp_echo_goes_out_over_the_chosen_network");
    }
    echo_goes_out_over_the_chosen_network(Stack::System);
}

/// The body of [`tun_icmp_echo_goes_out_over_the_chosen_network`], TCP ending in `stack`.
pub(super) fn echo_goes_out_over_the_chosen_network(stack: Stack) {
    allow_ping_sockets(true);
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    runtime.block_on(async {
        let device = Device::up_with(|settings| settings.stack = stack).await;
        device._topology.set_blackhole(Link::Cell, true).unwrap();
        let (wifi, cell) = (tx_packets(Link::Wifi), tx_packets(Link::Cell));
        let replies = blocking(|| {
            (ping(ip(TUN_V4), ip(SERVER_V4), 0x5151, 3), ping(ip(TUN_V6), ip(SERVER_V6), 0x5151, 3))
        })
        .await;
        let counters = counted(&device, |c| c.icmp_replies >= 6).await;
        let sent = (tx_packets(Link::Wifi) - wifi, tx_packets(Link::Cell) - cell);
        println!(
            "over wifi0: replies v4 {} v6 {} of 3 each; wifi0/cell0 sent {sent:?}; {counters:?}",
            replies.0, replies.1
        );
        assert_eq!(replies, (3, 3), "every echo answered through the tunnel");
        assert!(sent.0 >= 6, "the echoes left over wifi0: {sent:?}");
        assert_eq!((counters.icmp_echoes, counters.icmp_replies), (6, 6), "{counters:?}");
        assert_eq!((counters.dropped_icmp, counters.dropped_icmp_denied), (0, 0), "{counters:?}");
        assert_eq!(device.tun.icmp_flows(), 2, "one flow per (app, identifier, destination)");

        if let Some(output) = ping_command(&["-c", "3", "-W", "2", SERVER_V4]) {
            assert!(output.contains("3 received"), "{output}");
            let output = ping_command(&["-6", "-c", "3", "-W", "2", SERVER_V6]).unwrap();
            assert!(output.contains("3 received"), "{output}");
            println!("ping(8) through the tunnel: 3 of 3 answered over each family");
        }

        // Nothing made up: the NAT address is not relayed, a host that is not there is silent.
        let before = counted(&device, |c| c.icmp_replies == c.icmp_echoes).await;
        let flows = device.tun.icmp_flows();
        let silent = blocking(|| {
            (ping(ip(TUN_V4), ip("172.19.0.2"), 0x5151, 1), ping(ip(TUN_V4), ip("10.200.9.77"), 0x5151, 1))
        })
        .await;
        let after = device.tun.counters();
        assert_eq!(silent, (0, 0), "no reply for the NAT address or an absent host");
        // The userspace stack has no NAT address: 172.19.0.2 is a host like any other there.
        let nat = u64::from(stack == Stack::Userspace);
        if stack == Stack::System {
            // (The device's kernel sends other packets into the tunnel too, e.g. MLD reports.)
            assert!(after.dropped_unsupported > before.dropped_unsupported, "{after:?}");
        }
        assert_eq!(
            device.tun.icmp_flows() as u64,
            flows as u64 + 1 + nat,
            "a flow for the absent host, none for the NAT address"
        );
        assert_eq!(
            (after.icmp_echoes - before.icmp_echoes, after.icmp_replies),
            (1 + nat, before.icmp_replies)
        );

        // The strategy decides per flow: with cellular the only network, a new flow uses cell0.
        let cell_only = interface(Link::Cell, NetworkType::Cellular);
        let index = cell_only.index;
        device
            .netswitch
            .manager()
            .update_interfaces(InterfaceSnapshot::new(vec![cell_only], Some(index)).unwrap());
        device._topology.set_blackhole(Link::Cell, false).unwrap();
        device._topology.set_blackhole(Link::Wifi, true).unwrap();
        let cell = tx_packets(Link::Cell);
        let replies = blocking(|| ping(ip(TUN_V4), ip(SERVER_V4), 0x5252, 3)).await;
        let sent = tx_packets(Link::Cell) - cell;
        println!("over cell0 after the switch: {replies} of 3 answered, cell0 sent {sent}");
        assert_eq!(replies, 3);
        assert!(sent >= 3, "the new flow's echoes left over cell0: {sent}");

        device.tun.stop();
        assert_eq!(device.tun.icmp_flows(), 0, "stopping the tunnel closes its echo flows");
    });
}

/// Where the namespace denies ping sockets, echoes are dropped and counted (no reply, no
/// panic, a warning logged once); allowing them later takes effect for the next echo.
#[test]
fn tun_icmp_echo_without_ping_sockets_is_dropped_and_counted() {
    if role().as_deref() != Some("device") {
        return run_in_namespace("icmp::tun_icmp_echo_without_ping_sockets_is_dropped_and_counted");
    }
    without_ping_sockets(Stack::System);
}

/// The body of [`tun_icmp_echo_without_ping_sockets_is_dropped_and_counted`], TCP ending in
/// `stack`.
pub(super) fn without_ping_sockets(stack: Stack) {
    allow_ping_sockets(false);
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    runtime.block_on(async {
        let device = Device::up_with(|settings| settings.stack = stack).await;
        let replies = blocking(|| {
            ping(ip(TUN_V4), ip(SERVER_V4), 0x6161, 2) + ping(ip(TUN_V6), ip(SERVER_V6), 0x6161, 1)
        })
        .await;
        let counters = device.tun.counters();
        println!("{stack:?}: ping sockets denied: {replies} replies; {counters:?}");
        assert_eq!(replies, 0);
        assert_eq!(
            (counters.dropped_icmp_denied, counters.icmp_echoes, counters.icmp_replies),
            (3, 0, 0),
            "{counters:?}"
        );
        assert_eq!(device.tun.icmp_flows(), 0);

        allow_ping_sockets(true);
        let replies = blocking(|| ping(ip(TUN_V4), ip(SERVER_V4), 0x6161, 1)).await;
        assert_eq!(replies, 1, "allowed again: the next echo is relayed");
        assert_eq!(counted(&device, |c| c.icmp_replies >= 1).await.icmp_replies, 1);
        device.tun.stop();
    });
}
