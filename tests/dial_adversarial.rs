//! The strategy dialer and network changes against each other, over simulated networks on
//! loopback (wifi0 = 127.0.0.2, cell0 = 127.0.0.3, the simulated binder binds each socket to its
//! network's source address, so the server sees which network a connection used): a network
//! change that lands while a dial is in flight, and what the dialer says when nothing matches.

mod common;
#[path = "common/dns_responder.rs"]
mod dns_responder;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use dns_responder::{Responder, Zone};
use hickory_proto::rr::RecordType;
use netswitch::dial::direct::DialSettings;
use netswitch::metadata::Destination;
use netswitch::network::strategy::NetworkStrategy;
use netswitch::network::SelectError;
use netswitch::network::{DomainStrategy, InterfaceSnapshot, NetworkInterface, NetworkType};
use netswitch::platform::SimulatedBinder;
use netswitch::{ConnectionError, DialError, DirectOutbound, Metadata, RelaySettings};
use tokio::net::TcpListener;
use tokio::time::timeout;

const WIFI: u32 = 2;
const CELL: u32 = 3;
const NAME: &str = "svc.example.test";

/// Serializes the tests of this file: one of them counts the process's file descriptors.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn interface(name: &str, index: u32, kind: NetworkType, last_octet: u8) -> NetworkInterface {
    NetworkInterface::new(name, index, kind).with_address(IpAddr::from([127, 0, 0, last_octet]), 8)
}

fn wifi() -> NetworkInterface {
    interface("wifi0", WIFI, NetworkType::Wifi, 2)
}

/// cell0, resolving names with `dns`.
fn cell(dns: SocketAddr) -> NetworkInterface {
    let mut cell = interface("cell0", CELL, NetworkType::Cellular, 3);
    cell.dns_servers = vec![dns];
    cell
}

fn snapshot(interfaces: Vec<NetworkInterface>) -> InterfaceSnapshot {
    InterfaceSnapshot::new(interfaces, Some(WIFI)).unwrap()
}

/// A manager whose outbound binds with the simulated binder, a server on 127.0.0.1 and a DNS
/// responder (for cell0) that answers `NAME` with 127.0.0.1.
struct World {
    h: Harness,
    outbound: Arc<DirectOutbound>,
    server: TcpListener,
    dns: Responder,
}

impl World {
    async fn new() -> World {
        World::with_binder(DialSettings::default(), Arc::new(SimulatedBinder::new())).await
    }

    async fn with_binder(settings: DialSettings, binder: Arc<SimulatedBinder>) -> World {
        let h = Harness::new(RelaySettings::default()).await;
        let outbound = Arc::new(
            DirectOutbound::with_settings(settings).with_networks(h.manager.networks().clone(), binder),
        );
        let dns = Responder::start("127.0.0.1".parse().unwrap(), Zone::new(NAME, &["127.0.0.1"], &[]))
            .await
            .unwrap();
        h.manager.update_interfaces(snapshot(vec![wifi(), cell(dns.address())]));
        World { h, outbound, server: TcpListener::bind("127.0.0.1:0").await.unwrap(), dns }
    }

    /// `NAME` at the server's port, over cellular only, IPv4.
    fn over_cellular(&self) -> Metadata {
        let mut metadata = Metadata::new(Destination::domain(NAME, self.server.local_addr().unwrap().port()));
        metadata.options.network_type = Some(vec![NetworkType::Cellular]);
        metadata.options.domain_strategy = Some(DomainStrategy::Ipv4Only);
        metadata
    }

    /// Waits until cell0's lookup of `NAME` reached the responder (the dial is in flight, its
    /// route chosen).
    async fn until_looked_up(&self) {
        timeout(WAIT, async {
            while self.dns.count("udp", RecordType::A) == 0 {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        })
        .await
        .expect("cell0 never looked the name up");
    }
}

/// A dial over cellular is in flight (its lookup held by the DNS server) when the host reports
/// cellular gone, the default unchanged; then the answer comes and the dial connects over the
/// interface it chose before (the OS still lets it). The connection must be closed like every
/// other cellular connection, not relay on a network the host said is gone until it dies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dial_that_connects_over_an_interface_removed_meanwhile_is_closed() {
    let _serial = SERIAL.lock().await;
    let mut world = World::new().await;
    world.dns.set(|z| z.hold_a = true);
    let (_client, id) = world.h.connect_via(world.over_cellular(), world.outbound.clone()).await;
    world.until_looked_up().await;
    let change = world.h.manager.update_interfaces(snapshot(vec![wifi()]));
    assert_eq!(change.removed.len(), 1, "cell0 is gone");
    assert!(change.default_change.is_none(), "the default stayed");
    world.dns.set(|z| z.hold_a = false);
    let (_server_end, peer) = timeout(WAIT, world.server.accept()).await.unwrap().unwrap();
    assert_eq!(peer.ip(), IpAddr::from([127, 0, 0, 3]), "the dial connected over cell0");
    let closed = timeout(Duration::from_secs(2), world.h.next_closed())
        .await
        .unwrap_or_else(|_| panic!("still live over the removed cell0: {:?}", world.h.manager.get(id)));
    assert_eq!(closed.id, id);
    assert!(matches!(closed.error, Some(ConnectionError::Closed)), "{:?}", closed.error);
    assert!(world.h.manager.is_empty());
}

/// The same with cellular readdressed (same name and index, 127.0.0.3 replaced by 127.0.0.5)
/// while the dial is in flight: the dial binds the address it chose before, which no interface
/// has any more, so the connection must be closed (the local address is gone).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dial_that_connects_from_an_address_removed_meanwhile_is_closed() {
    let _serial = SERIAL.lock().await;
    let mut world = World::new().await;
    world.dns.set(|z| z.hold_a = true);
    let (_client, id) = world.h.connect_via(world.over_cellular(), world.outbound.clone()).await;
    world.until_looked_up().await;
    let mut readdressed = interface("cell0", CELL, NetworkType::Cellular, 5);
    readdressed.dns_servers = vec![world.dns.address()];
    let change = world.h.manager.update_interfaces(snapshot(vec![wifi(), readdressed]));
    assert_eq!(change.lost_addresses, vec![IpAddr::from([127, 0, 0, 3])]);
    world.dns.set(|z| z.hold_a = false);
    let (_server_end, peer) = timeout(WAIT, world.server.accept()).await.unwrap().unwrap();
    assert_eq!(peer.ip(), IpAddr::from([127, 0, 0, 3]), "the dial connected from the old address");
    let closed = timeout(Duration::from_secs(2), world.h.next_closed())
        .await
        .unwrap_or_else(|_| panic!("still live from a dead address: {:?}", world.h.manager.get(id)));
    assert_eq!(closed.id, id);
    assert!(matches!(closed.error, Some(ConnectionError::Closed)), "{:?}", closed.error);
}

/// Dials over cellular (IP destination, no lookup: each takes well under a millisecond) that
/// finish at every moment around an update removing cellular: before it, during it, after it.
/// Whatever the timing, no connection may be left relaying over the removed cell0: each one
/// either failed its dial (no cellular network any more) or was closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dials_finishing_around_an_update_are_never_left_on_the_removed_interface() {
    let _serial = SERIAL.lock().await;
    const ROUNDS: u32 = 60;
    const PER_ROUND: usize = 4;
    let world = World::new().await;
    let server_addr = world.server.local_addr().unwrap();
    let accept = async {
        let mut ends = Vec::new();
        while let Ok((end, _)) = world.server.accept().await {
            ends.push(end);
        }
    };
    tokio::pin!(accept);
    let mut metadata = Metadata::new(server_addr.into());
    metadata.options.network_type = Some(vec![NetworkType::Cellular]);
    let mut clients = Vec::new();
    for round in 0..ROUNDS {
        world.h.manager.update_interfaces(snapshot(vec![wifi(), cell(world.dns.address())]));
        for _ in 0..PER_ROUND {
            clients.push(world.h.connect_via(metadata.clone(), world.outbound.clone()).await);
        }
        // Spread the update over the dials' lifetime: 0 to ~600 µs after they were handed over.
        let spin = std::time::Instant::now() + Duration::from_micros(u64::from(round) * 10);
        while std::time::Instant::now() < spin {
            std::hint::spin_loop();
        }
        world.h.manager.update_interfaces(snapshot(vec![wifi()]));
        let settled = timeout(Duration::from_secs(2), async {
            loop {
                tokio::select! {
                    _ = &mut accept => unreachable!("the listener does not fail"),
                    _ = tokio::time::sleep(Duration::from_millis(1)) => {}
                }
                if world.h.manager.is_empty() {
                    return;
                }
            }
        })
        .await;
        let left: Vec<_> = world.h.manager.list().into_iter().map(|c| (c.id, c.state, c.egress)).collect();
        assert!(settled.is_ok(), "round {round}: left on the removed cell0: {left:?}");
    }
}

/// `fallback`: Wi-Fi preferred, cellular after a fallback delay (1 s here).
fn fallback_settings() -> DialSettings {
    let mut settings = DialSettings::default();
    settings.network_strategy = NetworkStrategy::Fallback;
    settings.network_type = vec![NetworkType::Wifi];
    settings.fallback_network_type = vec![NetworkType::Cellular];
    settings.fallback_delay = Duration::from_secs(1);
    settings.domain_strategy = DomainStrategy::Ipv4Only;
    settings
}

/// After cellular won once (Wi-Fi refused sockets), the fast-fallback window races cellular
/// together with Wi-Fi. Wi-Fi then works again and wins outright, well within the fallback delay:
/// that is a preferred network connecting within the delay, which ends the window (the race's
/// own contract). The next dial must therefore not touch cellular at all, instead of racing
/// metered cellular next to Wi-Fi for every dial of the next 15 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_preferred_network_winning_outright_ends_the_fast_fallback_window() {
    let _serial = SERIAL.lock().await;
    let binder = Arc::new(SimulatedBinder::new());
    let world = World::with_binder(fallback_settings(), binder.clone()).await;
    let wifi_dns =
        Responder::start("127.0.0.1".parse().unwrap(), Zone::new(NAME, &["127.0.0.1"], &[])).await.unwrap();
    let mut wifi = wifi();
    wifi.dns_servers = vec![wifi_dns.address()];
    world.h.manager.update_interfaces(snapshot(vec![wifi, cell(world.dns.address())]));
    let port = world.server.local_addr().unwrap().port();
    let by_ip = Metadata::new(world.server.local_addr().unwrap().into());
    let by_name = Metadata::new(Destination::domain(NAME, port));
    // Every source address that reached the server since the last call.
    let sources = || async {
        let mut seen = Vec::new();
        while let Ok(Ok((_, peer))) = timeout(Duration::from_millis(100), world.server.accept()).await {
            seen.push(peer.ip());
        }
        seen
    };
    let (wifi_ip, cell_ip) = (IpAddr::from([127, 0, 0, 2]), IpAddr::from([127, 0, 0, 3]));

    // Wi-Fi refuses sockets: cellular wins at once and opens the window.
    binder.set_failing(WIFI, true);
    let report = world.outbound.dial_with_report(&by_ip).await.unwrap();
    assert!(report.was_fallback, "cellular won");
    assert_eq!(sources().await, vec![cell_ip]);
    binder.set_failing(WIFI, false);

    // In the window cellular starts at once, but its lookup is held: Wi-Fi wins outright.
    world.dns.set(|z| z.hold_a = true);
    let report = timeout(WAIT, world.outbound.dial_with_report(&by_name)).await.unwrap().unwrap();
    assert!(!report.was_fallback, "Wi-Fi won");
    let raced: Vec<_> = report.abandoned.iter().map(|(name, _)| name.as_deref()).collect();
    assert_eq!(raced, vec![Some("cell0")], "in the window cellular raced at once");
    assert_eq!(sources().await, vec![wifi_ip]);

    // Wi-Fi connected within the fallback delay: the window is over, cellular stays unused.
    let report = timeout(WAIT, world.outbound.dial_with_report(&by_ip)).await.unwrap().unwrap();
    assert!(!report.was_fallback, "Wi-Fi won");
    assert_eq!(sources().await, vec![wifi_ip], "cellular raced again although Wi-Fi had just won outright");
}

/// A connection asking for a network type the host does not have fails at once with a typed
/// error that says what was asked and lists what exists; nothing reaches the server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_interface_of_the_requested_type_names_what_was_asked_and_what_exists() {
    let _serial = SERIAL.lock().await;
    let mut world = World::new().await;
    let mut metadata = Metadata::new(world.server.local_addr().unwrap().into());
    metadata.options.network_type = Some(vec![NetworkType::Ethernet]);
    let (_client, id) = world.h.connect_via(metadata, world.outbound.clone()).await;
    let closed = world.h.next_closed().await;
    assert_eq!(closed.id, id);
    let message = closed.error.as_ref().map(ToString::to_string).unwrap_or_default();
    let Some(ConnectionError::Dial(DialError::Network { source, .. })) = &closed.error else {
        panic!("not a network selection error: {message}");
    };
    let SelectError::NoAvailableInterface { network_types, considered, .. } = source else {
        panic!("not 'no available interface': {message}");
    };
    assert_eq!(network_types, &vec![NetworkType::Ethernet]);
    let names: Vec<&str> = considered.iter().map(|(name, _)| name.as_str()).collect();
    assert_eq!(names, vec!["wifi0", "cell0"]);
    assert!(message.contains("network_type [ethernet]"), "{message}");
    assert!(message.contains("wifi0 (wifi), cell0 (cellular)"), "{message}");
    assert!(timeout(Duration::from_millis(100), world.server.accept()).await.is_err(), "nothing dialed");
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map(|d| d.count()).unwrap_or(0)
}

/// Hybrid: Wi-Fi and cellular race every dial. Cellular's DNS answers an address whose listener
/// has a full queue, so its connect attempt is still waiting for a SYN-ACK when Wi-Fi wins: each
/// of those losers must close its socket. After 20 such dials and `close_all`, the process has
/// exactly the file descriptors it had before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn race_losers_with_a_connect_in_flight_close_their_sockets() {
    let _serial = SERIAL.lock().await;
    const N: usize = 20;
    let mut settings = DialSettings::default();
    settings.network_strategy = NetworkStrategy::Hybrid;
    settings.domain_strategy = DomainStrategy::Ipv4Only;
    let mut world = World::with_binder(settings, Arc::new(SimulatedBinder::new())).await;
    let port = world.server.local_addr().unwrap().port();
    let stuck_addr = SocketAddr::from(([127, 0, 0, 10], port));
    let stuck = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    stuck.bind(&stuck_addr.into()).unwrap();
    stuck.listen(0).unwrap();
    let _queued = std::net::TcpStream::connect(stuck_addr).unwrap();
    assert!(
        std::net::TcpStream::connect_timeout(&stuck_addr, Duration::from_millis(200)).is_err(),
        "the stuck listener's queue is full: a SYN gets no answer"
    );
    let wifi_dns =
        Responder::start("127.0.0.1".parse().unwrap(), Zone::new(NAME, &["127.0.0.1"], &[])).await.unwrap();
    world.dns.set(|z| z.a = vec!["127.0.0.10".parse().unwrap()]);
    let mut wifi = wifi();
    wifi.dns_servers = vec![wifi_dns.address()];
    world.h.manager.update_interfaces(snapshot(vec![wifi, cell(world.dns.address())]));
    let by_name = Metadata::new(Destination::domain(NAME, port));

    // One dial first (it fills both networks' DNS caches), then the baseline.
    let report = world.outbound.dial_with_report(&by_name).await.unwrap();
    assert_eq!(report.stream.egress.interface.as_deref(), Some("wifi0"));
    drop(report);
    drop(timeout(WAIT, world.server.accept()).await.unwrap().unwrap());
    tokio::time::sleep(Duration::from_millis(50)).await;
    let fds_before = open_fds();
    // With both answers cached: cellular's attempt is still in flight when Wi-Fi wins.
    let report = world.outbound.dial_with_report(&by_name).await.unwrap();
    let abandoned: Vec<_> = report.abandoned.iter().map(|(name, _)| name.as_deref()).collect();
    assert_eq!(abandoned, vec![Some("cell0")], "cellular was still trying");
    assert!(report.failed.is_empty(), "{:?}", report.failed);
    drop(report);
    drop(timeout(WAIT, world.server.accept()).await.unwrap().unwrap());

    let mut ends = Vec::new();
    for _ in 0..N {
        let (client, id) = world.h.connect_via(by_name.clone(), world.outbound.clone()).await;
        let (server_end, peer) = timeout(WAIT, world.server.accept()).await.unwrap().unwrap();
        assert_eq!(peer.ip(), IpAddr::from([127, 0, 0, 2]), "Wi-Fi won");
        ends.push((client, server_end, id));
    }
    timeout(WAIT, async {
        while world.h.manager.list().iter().filter(|c| c.egress.interface.as_deref() == Some("wifi0")).count()
            < N
        {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    })
    .await
    .expect("every connection relaying over wifi0");
    assert_eq!(world.h.manager.close_all(), N);
    for _ in 0..N {
        assert!(matches!(world.h.next_closed().await.error, Some(ConnectionError::Closed)));
    }
    drop(ends);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(open_fds(), fds_before, "file descriptors back where they were");
}

/// Waits until connection `id` relays and returns the interface it left through.
async fn relaying_over(world: &World, id: u64) -> Option<String> {
    timeout(WAIT, async {
        loop {
            match world.h.manager.get(id) {
                Some(info) if info.state == netswitch::ConnectionState::Relaying => {
                    return info.egress.interface
                }
                _ => tokio::time::sleep(Duration::from_millis(2)).await,
            }
        }
    })
    .await
    .expect("the connection relays")
}

/// A connection bound to cellular (it asked for cellular while Wi-Fi was the default) keeps
/// leaving through cellular whatever the default is: the default moving to cellular and back to
/// Wi-Fi must not close it. What the flip back closes is the connection made while cellular was
/// the default: that one was protected, not bound, and follows the default route.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_default_change_keeps_connections_bound_to_another_interface() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let _serial = SERIAL.lock().await;
    let mut world = World::new().await;
    let cell = cell(world.dns.address());
    let mut over_cell = Metadata::new(world.server.local_addr().unwrap().into());
    over_cell.options.network_type = Some(vec![NetworkType::Cellular]);

    // Wi-Fi is the default: this one is bound to cell0.
    let (mut bound_client, bound) = world.h.connect_via(over_cell.clone(), world.outbound.clone()).await;
    let (mut bound_server, _) = timeout(WAIT, world.server.accept()).await.unwrap().unwrap();
    assert_eq!(relaying_over(&world, bound).await.as_deref(), Some("cell0"));

    // Cellular becomes the default: this one is protected, not bound.
    world
        .h
        .manager
        .update_interfaces(InterfaceSnapshot::new(vec![wifi(), cell.clone()], Some(CELL)).unwrap());
    let (_client, protected) = world.h.connect_via(over_cell, world.outbound.clone()).await;
    let (_server_end, _) = timeout(WAIT, world.server.accept()).await.unwrap().unwrap();
    assert_eq!(relaying_over(&world, protected).await.as_deref(), Some("cell0"));

    // Back to Wi-Fi: only the protected one followed the old default.
    world.h.manager.update_interfaces(InterfaceSnapshot::new(vec![wifi(), cell], Some(WIFI)).unwrap());
    let closed = world.h.next_closed().await;
    assert_eq!(closed.id, protected, "the connection on the old default route is closed");
    world.h.assert_no_more_closed().await;
    assert!(world.h.manager.get(bound).is_some(), "the connection bound to cell0 stays");
    bound_client.write_all(b"ping").await.unwrap();
    let mut buf = [0u8; 4];
    timeout(WAIT, bound_server.read_exact(&mut buf)).await.unwrap().unwrap();
    assert_eq!(&buf, b"ping");
}

/// Cellular flaps (gone, back, gone…) 30 times with a connection over it each time, while one
/// Wi-Fi connection (the default, untouched) lives through all of it: each cellular connection is
/// reported exactly once, the Wi-Fi one never until it is closed, and afterwards the process has
/// the file descriptors it had before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flapping_interface_closes_each_of_its_connections_once_and_leaks_nothing() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let _serial = SERIAL.lock().await;
    const FLAPS: usize = 30;
    let mut world = World::new().await;
    let both = || snapshot(vec![wifi(), cell(world.dns.address())]);
    let server_addr = world.server.local_addr().unwrap();
    let mut over_cell = Metadata::new(server_addr.into());
    over_cell.options.network_type = Some(vec![NetworkType::Cellular]);
    // Warm up (lazy state), then the baseline.
    let (client, id) = world.h.connect_via(over_cell.clone(), world.outbound.clone()).await;
    let server_end = timeout(WAIT, world.server.accept()).await.unwrap().unwrap();
    relaying_over(&world, id).await;
    world.h.manager.close(id);
    world.h.next_closed().await;
    drop((client, server_end));
    tokio::time::sleep(Duration::from_millis(50)).await;
    let fds_before = open_fds();

    let (mut wifi_client, wifi_id) =
        world.h.connect_via(Metadata::new(server_addr.into()), world.outbound.clone()).await;
    let (mut wifi_server, _) = timeout(WAIT, world.server.accept()).await.unwrap().unwrap();
    assert_eq!(relaying_over(&world, wifi_id).await.as_deref(), Some("wifi0"));
    let mut ends = Vec::new();
    let mut expected = std::collections::BTreeSet::new();
    for _ in 0..FLAPS {
        let (client, id) = world.h.connect_via(over_cell.clone(), world.outbound.clone()).await;
        let (server_end, _) = timeout(WAIT, world.server.accept()).await.unwrap().unwrap();
        assert_eq!(relaying_over(&world, id).await.as_deref(), Some("cell0"));
        ends.push((client, server_end));
        expected.insert(id);
        world.h.manager.update_interfaces(snapshot(vec![wifi()]));
        world.h.manager.update_interfaces(both());
    }
    let mut reported = std::collections::BTreeSet::new();
    for _ in 0..FLAPS {
        let closed = world.h.next_closed().await;
        assert!(matches!(closed.error, Some(ConnectionError::Closed)), "{:?}", closed.error);
        assert!(reported.insert(closed.id), "connection {} reported twice", closed.id);
    }
    assert_eq!(reported, expected, "exactly the cellular connections were closed");
    world.h.assert_no_more_closed().await;
    wifi_client.write_all(b"ping").await.unwrap();
    let mut buf = [0u8; 4];
    timeout(WAIT, wifi_server.read_exact(&mut buf)).await.unwrap().unwrap();
    assert_eq!(world.h.manager.len(), 1, "only the Wi-Fi connection is left");
    world.h.manager.close(wifi_id);
    assert_eq!(world.h.next_closed().await.id, wifi_id);
    drop((ends, wifi_client, wifi_server));
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(open_fds(), fds_before, "file descriptors back where they were");
}

/// `fallback` with cellular both preferred and a fallback type (the selection table lets the two
/// sets overlap): cellular is raced once, not a second time when the fallback delay passes.
/// Cellular's lookup is held past the delay; when it is answered, one connection reaches the
/// server over cellular, and no second cellular attempt was left running.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interface_in_both_sets_is_raced_once() {
    let _serial = SERIAL.lock().await;
    let mut settings = fallback_settings();
    settings.network_type = vec![NetworkType::Wifi, NetworkType::Cellular];
    settings.fallback_delay = Duration::from_millis(100);
    let binder = Arc::new(SimulatedBinder::new());
    let world = World::with_binder(settings, binder.clone()).await;
    binder.set_failing(WIFI, true);
    world.dns.set(|z| z.hold_a = true);
    let port = world.server.local_addr().unwrap().port();
    let by_name = Metadata::new(Destination::domain(NAME, port));
    let dial = world.outbound.dial_with_report(&by_name);
    tokio::pin!(dial);
    assert!(timeout(Duration::from_millis(300), &mut dial).await.is_err(), "held past the fallback delay");
    world.dns.set(|z| z.hold_a = false);
    let report = timeout(WAIT, dial).await.unwrap().unwrap();
    assert_eq!(report.stream.egress.interface.as_deref(), Some("cell0"));
    let abandoned: Vec<_> = report.abandoned.iter().map(|(name, _)| name.as_deref()).collect();
    assert!(abandoned.is_empty(), "a second cellular lane was racing: {abandoned:?}");
    let mut sources = Vec::new();
    while let Ok(Ok((_, peer))) = timeout(Duration::from_millis(100), world.server.accept()).await {
        sources.push(peer.ip());
    }
    assert_eq!(sources, vec![IpAddr::from([127, 0, 0, 3])], "one connection over cellular");
}
