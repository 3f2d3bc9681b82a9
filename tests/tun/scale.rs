//! The packet tunnel at scale, in the same namespace topology as `main.rs` (root only): 64 MiB
//! each way at once with every byte checked and both half-closes, a reset in the middle of a
//! transfer, 1,000 connections open at once and gone without a trace, 2 × 100,000 UDP datagrams
//! accounted for at every stage, and the strategy through the tunnel (fallback while Wi-Fi drops
//! everything; Wi-Fi lost: exactly its connections reset).
//!
//! Already covered by `main.rs`, not repeated: half-closes one at a time with a server reset after
//! a line, and the endpoint-independent UDP mapping (two destinations see one mapped port).

pub mod server;
mod udp_accounting;

use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::time::{Duration, Instant};

use netswitch::network::strategy::NetworkStrategy;
use netswitch::network::{InterfaceSnapshot, NetworkType};
use netswitch::tun::{Framing, Stack};
use netswitch::{Config, TransportProtocol};

use self::server::{read_checked, send_checked, DOWN_SEED, UP_SEED};
use super::topology::Link;
use super::{blocking, connect, connect_to, interface, non_pipe_fds, role, run_in_namespace, server as at};
use super::{server_v6, Device, TIMEOUT};
use udp_accounting::udp_echo_accounted;

const MIB: u64 = 1 << 20;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

/// One [`server::BOTH_WAYS`] transfer: `up` bytes from the app and `down` from the server at
/// once, each side half-closing when it has sent its share and reading the other's rest.
/// Returns the app's (bytes read, intact) and the server's record.
pub(super) fn both_ways(up: u64, down: u64, token: u64) -> std::io::Result<((u64, bool), String)> {
    let mut stream = connect(server::BOTH_WAYS)?;
    stream.set_read_timeout(Some(server::READ_TIMEOUT))?;
    stream.set_write_timeout(Some(server::READ_TIMEOUT))?;
    let mut header = Vec::new();
    for word in [down, up, token] {
        header.extend_from_slice(&word.to_be_bytes());
    }
    stream.write_all(&header)?;
    let mut writer = stream.try_clone()?;
    let writing = std::thread::spawn(move || {
        send_checked(&mut writer, up, UP_SEED)?;
        writer.shutdown(Shutdown::Write)
    });
    let read = read_checked(&mut stream, DOWN_SEED)?;
    writing.join().unwrap()?;
    // The server records its side once it saw the app's FIN.
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let mut query = connect(server::RESULT)?;
        query.write_all(&token.to_be_bytes())?;
        let mut answer = String::new();
        query.read_to_string(&mut answer)?;
        if answer.trim() != "none" || Instant::now() > deadline {
            return Ok((read, answer.trim().to_string()));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// 64 MiB each way at the same time, every byte checked at both ends, each side half-closing
/// after its share while it still reads the other's; then the two orders of the half-closes with
/// uneven shares at once; then a server reset while both sides are sending reaches the app as a
/// reset. Every NAT entry and connection leaves afterwards.
#[test]
fn tun_64_mib_each_way_at_once_with_half_closes_and_a_reset() {
    if role().as_deref() != Some("device") {
        return run_in_namespace("scale::tun_64_mib_each_way_at_once_with_half_closes_and_a_reset");
    }
    bulk_both_ways(Framing::Raw, Stack::System);
}

/// The same through a device with offloads (TCP super-packets of up to 64 KiB with partial
/// checksums, rewritten by the NAT as one packet).
#[test]
fn tun_offload_64_mib_each_way_at_once_with_half_closes_and_a_reset() {
    if role().as_deref() != Some("device") {
        return run_in_namespace("scale::tun_offload_64_mib_each_way_at_once_with_half_closes_and_a_reset");
    }
    bulk_both_ways(Framing::VirtioNet, Stack::System);
}

/// The same through the userspace stack on a device with offloads (super-packets both ways).
#[test]
fn tun_userspace_offload_64_mib_each_way_at_once_with_half_closes_and_a_reset() {
    if role().as_deref() != Some("device") {
        return run_in_namespace(
            "scale::tun_userspace_offload_64_mib_each_way_at_once_with_half_closes_and_a_reset",
        );
    }
    bulk_both_ways(Framing::VirtioNet, Stack::Userspace);
}

/// The body of the tests above, TCP ending in `stack`.
pub(super) fn bulk_both_ways(framing: Framing, stack: Stack) {
    runtime().block_on(async {
        let device = Device::up_with(|settings| {
            settings.framing = framing;
            settings.stack = stack;
        })
        .await;
        let started = Instant::now();
        let (read, record) = blocking(|| both_ways(64 * MIB, 64 * MIB, 1)).await.unwrap();
        let took = started.elapsed();
        assert_eq!(read, (64 * MIB, true), "the app's 64 MiB download (bytes, intact)");
        assert_eq!(record, format!("{} ok sent", 64 * MIB), "the server's 64 MiB upload");
        println!(
            "{framing:?} {stack:?}: 64 MiB each way at once in {took:?}, every byte checked at both ends"
        );

        // The app's FIN first while the server still sends, and the server's first.
        let app_first = blocking(|| both_ways(MIB, 8 * MIB, 2));
        let server_first = blocking(|| both_ways(8 * MIB, MIB, 3));
        let (app_first, server_first) = tokio::join!(app_first, server_first);
        let (read, record) = app_first.unwrap();
        assert_eq!((read, record.as_str()), ((8 * MIB, true), format!("{MIB} ok sent").as_str()));
        let (read, record) = server_first.unwrap();
        assert_eq!((read, record.as_str()), ((MIB, true), format!("{} ok sent", 8 * MIB).as_str()));
        println!("half-closes at once: the app's FIN before 8 MiB down, the server's before 8 MiB up");

        // A reset after both sides sent 1 MiB at once, the server's still in flight: the app's
        // read ends with the reset. (While the app is still sending too, the relay may pass the
        // remote's reset on as a FIN first and the reset after it: see the report.)
        let (read, error) = blocking(|| {
            let mut stream = connect(server::RESET_MID).unwrap();
            let mut writer = stream.try_clone().unwrap();
            let writing = std::thread::spawn(move || send_checked(&mut writer, MIB, UP_SEED));
            let outcome = read_checked(&mut stream, DOWN_SEED);
            writing.join().unwrap().unwrap();
            outcome
        })
        .await
        .map_or_else(|error| ((0, true), Some(error)), |read| (read, None));
        let error = error.expect("the app's read ends with an error, not an end of stream");
        assert_eq!(error.kind(), ErrorKind::ConnectionReset, "{error}");
        assert!(read.1, "the bytes before the reset are intact");
        println!("server reset after 1 MiB each way at once: the app's read ends with ConnectionReset");

        device.wait_idle().await;
        let counters = device.tun.counters();
        assert_eq!(counters.dropped_nat_full + counters.dropped_malformed, 0, "{counters:?}");
        device.tun.stop();
    });
}

/// Raises this process's soft open-files limit to the hard one (the server it starts inherits it).
fn raise_open_files_limit() -> u64 {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit and setrlimit read and write one rlimit we own.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit), 0);
        limit.rlim_cur = limit.rlim_max;
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &limit), 0);
    }
    limit.rlim_cur
}

/// 1,000 connections (half IPv4, half IPv6) opened concurrently and all open at once, each
/// echoing, then closed — half by the app dropping its socket, half by a half-close and the
/// server's FIN: every NAT entry and connection leaves and the process's file descriptors are
/// back to the baseline. (`tun_many_connections_leave_nothing_behind` opens 300 one by one.)
#[test]
fn tun_thousand_connections_at_once_leave_nothing_behind() {
    if role().as_deref() != Some("device") {
        return run_in_namespace("scale::tun_thousand_connections_at_once_leave_nothing_behind");
    }
    thousand_connections_at_once(Stack::System);
}

/// The body of [`tun_thousand_connections_at_once_leave_nothing_behind`], TCP ending in `stack`.
pub(super) fn thousand_connections_at_once(stack: Stack) {
    const CONNECTIONS: usize = 1000;
    let limit = raise_open_files_limit();
    assert!(limit >= 4 * CONNECTIONS as u64, "open-files hard limit {limit} is too low");
    runtime().block_on(async {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let device = Device::up_with(|settings| settings.stack = stack).await;
        blocking(|| connect(super::server::PEER).unwrap().read_to_end(&mut Vec::new()).unwrap()).await;
        blocking(|| {
            connect_to(server_v6(super::server::PEER)).unwrap().read_to_end(&mut Vec::new()).unwrap()
        })
        .await;
        device.wait_idle().await;
        let fds = non_pipe_fds();
        // At most 100 handshakes in flight (the server's accept backlog is std's default).
        let gate = std::sync::Arc::new(tokio::sync::Semaphore::new(100));
        let opening = (0..CONNECTIONS).map(|i| {
            let gate = gate.clone();
            async move {
                let _permit = gate.acquire().await.unwrap();
                let to = if i % 2 == 0 { at(super::server::ECHO) } else { server_v6(super::server::ECHO) };
                let mut stream = tokio::time::timeout(TIMEOUT, tokio::net::TcpStream::connect(to))
                    .await
                    .expect("connect within 5 s")
                    .unwrap();
                let message = format!("connection {i:04}");
                stream.write_all(message.as_bytes()).await.unwrap();
                let mut echoed = vec![0u8; message.len()];
                tokio::time::timeout(TIMEOUT, stream.read_exact(&mut echoed)).await.unwrap().unwrap();
                assert_eq!(echoed, message.as_bytes());
                stream
            }
        });
        let started = Instant::now();
        let streams = futures_join_all(opening).await;
        let opened = started.elapsed();
        assert_eq!(device.tun.nat_entries(), CONNECTIONS, "one NAT entry per open connection");
        assert_eq!(device.netswitch.manager().len(), CONNECTIONS);
        let closing = streams.into_iter().enumerate().map(|(i, mut stream)| async move {
            if i % 2 == 0 {
                drop(stream);
            } else {
                stream.shutdown().await.unwrap();
                let mut rest = Vec::new();
                tokio::time::timeout(TIMEOUT, stream.read_to_end(&mut rest)).await.unwrap().unwrap();
                assert!(rest.is_empty());
            }
        });
        futures_join_all(closing).await;
        device.wait_idle().await;
        assert_eq!(device.netswitch.manager().len(), 0);
        let deadline = Instant::now() + TIMEOUT;
        while non_pipe_fds() > fds && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(non_pipe_fds(), fds, "file descriptors back to the baseline");
        let counters = device.tun.counters();
        println!(
            "{CONNECTIONS} connections open at once (opened and echoed in {opened:?}): NAT entries \
             {CONNECTIONS} -> 0, fds back to {fds}; {counters:?}"
        );
        // (Over the packet flow `dropped_write` is the flow's output queue: see the helper.)
        let write_drops = super::flow_host::device_write_drops(&device, &counters).await;
        assert_eq!(counters.dropped_nat_full + write_drops, 0, "{counters:?}");
        device.tun.stop();
    });
}

/// Runs every future on this task and returns their outputs in order.
async fn futures_join_all<T: Send + 'static>(
    futures: impl Iterator<Item = impl std::future::Future<Output = T> + Send + 'static>,
) -> Vec<T> {
    let tasks: Vec<_> = futures.map(tokio::spawn).collect();
    let mut outputs = Vec::with_capacity(tasks.len());
    for task in tasks {
        outputs.push(task.await.unwrap());
    }
    outputs
}

/// 100,000 datagrams of 64 bytes and 100,000 of 1,200 bytes echoed through the tunnel (a device
/// with offloads), at most
/// 64 in flight: every datagram that did not come back intact is in a drop counter of one stage
/// (the tunnel's queue to netswitch, netswitch's counters, the session's drops, the server's and
/// this namespace's UDP receive errors), and none came back twice or changed.
#[test]
fn tun_udp_echo_100000_datagrams_accounted_for() {
    if role().as_deref() != Some("device") {
        return run_in_namespace("scale::tun_udp_echo_100000_datagrams_accounted_for");
    }
    // With offloads: the kernel's partial UDP checksums are completed on reading.
    udp_echo_100000(Framing::VirtioNet, Stack::System);
}

/// The body of [`tun_udp_echo_100000_datagrams_accounted_for`] on a device with `framing`, TCP
/// (the server's counter queries) ending in `stack`.
pub(super) fn udp_echo_100000(framing: Framing, stack: Stack) {
    runtime().block_on(async {
        let device = Device::up_with(|settings| {
            settings.framing = framing;
            settings.stack = stack;
        })
        .await;
        for size in [64usize, 1200] {
            udp_echo_accounted(&device, size, 100_000).await;
        }
        device.tun.stop();
    });
}

/// The strategy through the tunnel (a device with offloads; fallback to cellular): with Wi-Fi working, connections go
/// over wifi0; while Wi-Fi drops everything, new ones fall back to cell0; when Wi-Fi leaves the
/// interface snapshot, exactly its connections close — the apps' sockets read a reset — and the
/// cellular ones keep echoing.
#[test]
fn tun_strategy_fallback_and_wifi_loss() {
    if role().as_deref() != Some("device") {
        return run_in_namespace("scale::tun_strategy_fallback_and_wifi_loss");
    }
    strategy_fallback_and_wifi_loss(Framing::VirtioNet, Stack::System);
}

/// The body of [`tun_strategy_fallback_and_wifi_loss`] on a device with `framing`, TCP ending
/// in `stack`.
pub(super) fn strategy_fallback_and_wifi_loss(framing: Framing, stack: Stack) {
    let mut config = Config::default();
    config.network_strategy = NetworkStrategy::Fallback;
    config.network_type = vec![NetworkType::Wifi];
    config.fallback_network_type = vec![NetworkType::Cellular];
    config.fallback_delay = Duration::from_millis(300);
    runtime().block_on(async {
        let device = Device::up_config(config, |settings| {
            settings.framing = framing;
            settings.stack = stack;
        })
        .await;
        let peer = || {
            let mut line = String::new();
            connect(super::server::PEER)?.read_to_string(&mut line)?;
            std::io::Result::Ok(line.trim().to_string())
        };
        assert_eq!(blocking(peer).await.unwrap(), format!("peer={}", Link::Wifi.client_v4()));
        let echo_three = || (0..3).map(|_| connect(super::server::ECHO)).collect::<std::io::Result<Vec<_>>>();
        let mut wifi = blocking(echo_three).await.unwrap();
        wifi = blocking(move || echo_all(wifi, b"over wifi")).await;
        let egress = egress_by_port(&device);

        device._topology.set_blackhole(Link::Wifi, true).unwrap();
        let started = Instant::now();
        assert_eq!(blocking(peer).await.unwrap(), format!("peer={}", Link::Cell.client_v4()));
        println!(
            "{stack:?}: Wi-Fi blackholed: a TUN connection fell back to cell0 in {:?}",
            started.elapsed()
        );
        let mut cell = blocking(echo_three).await.unwrap();
        cell = blocking(move || echo_all(cell, b"over cell")).await;
        device._topology.set_blackhole(Link::Wifi, false).unwrap();
        let egress = egress.into_iter().chain(egress_by_port(&device)).collect::<HashMap<_, _>>();
        let interface_of = |stream: &std::net::TcpStream| {
            egress.get(&stream.local_addr().unwrap()).cloned().unwrap_or_default()
        };
        assert!(wifi.iter().all(|s| interface_of(s) == "wifi0"), "{egress:?}");
        assert!(cell.iter().all(|s| interface_of(s) == "cell0"), "{egress:?}");

        // Wi-Fi leaves: its three connections reset, the cellular ones go on.
        let cell_only = InterfaceSnapshot::new(
            vec![interface(Link::Cell, NetworkType::Cellular)],
            Some(interface(Link::Cell, NetworkType::Cellular).index),
        )
        .unwrap();
        device.netswitch.manager().update_interfaces(cell_only);
        let errors = blocking(move || {
            wifi.into_iter()
                .map(|mut stream| {
                    let mut buf = [0u8; 16];
                    match stream.read(&mut buf) {
                        Ok(n) => panic!("a Wi-Fi connection read {n} bytes instead of a reset"),
                        Err(error) => error.kind(),
                    }
                })
                .collect::<Vec<_>>()
        })
        .await;
        assert_eq!(errors, vec![ErrorKind::ConnectionReset; 3]);
        let cell = blocking(move || echo_all(cell, b"still over cell")).await;
        let left: Vec<_> = device
            .netswitch
            .manager()
            .list()
            .into_iter()
            .filter(|c| c.protocol == TransportProtocol::Tcp)
            .map(|c| c.egress.interface.unwrap_or_default())
            .collect();
        assert_eq!(left, vec!["cell0"; 3], "only the cellular connections are left");
        println!("{stack:?}: Wi-Fi gone: its 3 TUN connections reset, the 3 over cell0 still echo");
        drop(cell);
        device.tun.stop();
    });
}

/// Echoes `message` on every stream (blocking) and returns them.
fn echo_all(streams: Vec<std::net::TcpStream>, message: &[u8]) -> Vec<std::net::TcpStream> {
    for mut stream in streams.iter() {
        stream.write_all(message).unwrap();
        let mut echoed = vec![0u8; message.len()];
        stream.read_exact(&mut echoed).unwrap();
        assert_eq!(echoed, message);
    }
    streams
}

/// The egress interface of each open TCP connection, by the app's source address.
fn egress_by_port(device: &Device) -> HashMap<SocketAddr, String> {
    device
        .netswitch
        .manager()
        .list()
        .into_iter()
        .filter_map(|c| Some((c.metadata.source?, c.egress.interface?)))
        .collect()
}
