//! Names resolved over the network that carries the connection, over real links: a DNS server
//! on the Wi-Fi side (10.200.1.1, 2001:db8:1::1) and one on the cellular side (10.200.2.1,
//! 2001:db8:2::1) answer `svc.test` differently (Wi-Fi: 10.200.9.1 / 2001:db8:9::1, cellular:
//! 10.200.9.2 / 2001:db8:9::2, both on the server host). The server process also runs a UDP echo
//! service and a control port that dumps the query log (who asked which server what).

use std::io::Read;
use std::net::{IpAddr, SocketAddr, TcpStream as StdTcpStream, UdpSocket as StdUdpSocket};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use netswitch::dial::direct::{DialSettings, DirectOutbound};
use netswitch::dial::{FailureKind, Outbound};
use netswitch::dns::{DnsSettings, Family, Resolvers, Source, Via};
use netswitch::network::strategy::NetworkStrategy;
use netswitch::network::{DomainStrategy, InterfaceSnapshot, NetworkInterface, NetworkType};
use netswitch::platform::linux::LinuxBinder;
use netswitch::platform::SocketBinder;
use netswitch::{ConnectionManager, Destination, Metadata, RelaySettings};
use tokio::io::{AsyncBufReadExt, BufReader as AsyncBufReader};
use tokio::time::timeout;

use super::dns_responder::{Responder, Zone};
use super::topology::{self, Link, Topology, PORT, SERVER_V4};
use super::{interface, role, run_in_namespace, wait_until_reachable, ROLE};

/// The name both DNS servers answer.
const NAME: &str = "svc.test";
/// The cellular server's answers (Wi-Fi's are the topology's SERVER_V4 / SERVER_V6).
const CELL_ANSWER_V4: &str = "10.200.9.2";
const CELL_ANSWER_V6: &str = "2001:db8:9::2";
/// UDP echo port on the server host.
const UDP_ECHO_PORT: u16 = 7003;
/// Control port: one line per query seen, `<server ip> <transport> <source ip> <type> <name>`.
const CONTROL_PORT: u16 = 7002;
const WAIT: Duration = Duration::from_secs(10);

/// Entry point of the server process of these tests: the topology's TCP services plus the DNS
/// responders, the UDP echo and the control port. Does nothing when run directly.
#[test]
#[ignore = "entry point of the server process the netns DNS tests start"]
fn netns_dns_server_entry() {
    if role().as_deref() == Some("dns-server") {
        std::thread::spawn(serve_dns);
        topology::serve();
    }
}

fn dns_server_command() -> Command {
    let mut command = Command::new("unshare");
    command
        .args(["-n", "--"])
        .arg(std::env::current_exe().unwrap())
        .args(["--exact", "dns::netns_dns_server_entry", "--ignored", "--nocapture", "--test-threads=1"])
        .env(ROLE, "dns-server");
    command
}

/// Runs in the server namespace: adds the cellular answers to `lo`, then (as soon as the links'
/// addresses exist) the four responders, the UDP echo and the control port.
fn serve_dns() {
    for (address, family) in [(format!("{CELL_ANSWER_V4}/32"), "-4"), (format!("{CELL_ANSWER_V6}/128"), "-6")]
    {
        let _ = Command::new("ip").args([family, "addr", "add", &address, "dev", "lo"]).output();
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    runtime.block_on(async {
        let wifi = Zone::new(NAME, &[topology::SERVER_V4], &[topology::SERVER_V6]);
        let cell = Zone::new(NAME, &[CELL_ANSWER_V4], &[CELL_ANSWER_V6]);
        let plan = [
            ("10.200.1.1:53", wifi.clone()),
            ("[2001:db8:1::1]:53", wifi),
            ("10.200.2.1:53", cell.clone()),
            ("[2001:db8:2::1]:53", cell),
        ];
        let mut responders = Vec::new();
        for (address, zone) in plan {
            let address: SocketAddr = address.parse().unwrap();
            // The links' addresses appear once the client has built them: retry until then.
            let started = Instant::now();
            loop {
                match Responder::start_on(address, zone.clone()).await {
                    Ok(responder) => break responders.push(responder),
                    Err(_) if started.elapsed() < WAIT => tokio::time::sleep(Duration::from_millis(20)).await,
                    Err(error) => panic!("DNS responder on {address}: {error}"),
                }
            }
        }
        let responders = Arc::new(responders);
        // One echo socket per answer address, so every reply leaves from the address asked (an
        // unbound socket would pick the outgoing link's address, which a connected client drops).
        for answer in [topology::SERVER_V4, CELL_ANSWER_V4, topology::SERVER_V6, CELL_ANSWER_V6] {
            let address = SocketAddr::new(ip(answer), UDP_ECHO_PORT);
            let started = Instant::now();
            let echo = loop {
                match tokio::net::UdpSocket::bind(address).await {
                    Ok(echo) => break echo,
                    Err(_) if started.elapsed() < WAIT => tokio::time::sleep(Duration::from_millis(20)).await,
                    Err(error) => panic!("UDP echo on {address}: {error}"),
                }
            };
            tokio::spawn(async move {
                let mut buf = vec![0u8; 2048];
                while let Ok((n, from)) = echo.recv_from(&mut buf).await {
                    let _ = echo.send_to(&buf[..n], from).await;
                }
            });
        }
        let control = tokio::net::TcpListener::bind(("0.0.0.0", CONTROL_PORT)).await.unwrap();
        loop {
            let Ok((mut stream, _)) = control.accept().await else { return };
            let mut dump = String::from("ready\n");
            for responder in responders.iter() {
                for seen in responder.seen() {
                    let line = format!(
                        "{} {} {} {} {}\n",
                        responder.address().ip(),
                        seen.transport,
                        seen.from.ip(),
                        seen.record_type,
                        seen.name
                    );
                    dump.push_str(&line);
                }
            }
            use tokio::io::AsyncWriteExt;
            let _ = stream.write_all(dump.as_bytes()).await;
        }
    });
}

/// One query as the control port reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Query {
    server: IpAddr,
    transport: String,
    source: IpAddr,
    record: String,
}

/// The query log, read through `via` (a server address reachable now), once the responders run.
fn queries(via: &str) -> Vec<Query> {
    let deadline = Instant::now() + WAIT;
    loop {
        let read = || -> std::io::Result<String> {
            let address = SocketAddr::new(via.parse().unwrap(), CONTROL_PORT);
            let mut stream = StdTcpStream::connect_timeout(&address, Duration::from_secs(2))?;
            stream.set_read_timeout(Some(Duration::from_secs(2)))?;
            let mut text = String::new();
            stream.read_to_string(&mut text)?;
            Ok(text)
        };
        match read() {
            Ok(text) if text.starts_with("ready") => {
                return text
                    .lines()
                    .skip(1)
                    .map(|line| {
                        let parts: Vec<&str> = line.split(' ').collect();
                        Query {
                            server: parts[0].parse().unwrap(),
                            transport: parts[1].to_string(),
                            source: parts[2].parse().unwrap(),
                            record: parts[3].to_string(),
                        }
                    })
                    .collect();
            }
            other => {
                assert!(Instant::now() < deadline, "control port via {via} not ready: {other:?}");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

/// Waits until `server` answers TCP over `link` (a fresh link's first IPv6 packets can wait about
/// a second for neighbour discovery): so the times printed are the dial's, not the link's.
fn warm_up(link: Link, server: &str) {
    let address = SocketAddr::new(ip(server), PORT);
    let deadline = Instant::now() + WAIT;
    loop {
        let socket =
            socket2::Socket::new(socket2::Domain::for_address(address), socket2::Type::STREAM, None).unwrap();
        socket.bind_device(Some(link.name().as_bytes())).unwrap();
        match socket.connect_timeout(&address.into(), Duration::from_secs(2)) {
            Ok(()) => return,
            Err(error) => {
                assert!(Instant::now() < deadline, "{server} unreachable over {}: {error}", link.name());
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

fn sources_seen_by(log: &[Query], server: &str) -> Vec<IpAddr> {
    let server: IpAddr = server.parse().unwrap();
    let mut sources: Vec<IpAddr> = log.iter().filter(|q| q.server == server).map(|q| q.source).collect();
    sources.dedup();
    sources
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

/// `link`'s interface with its peer as DNS server (IPv4 unless `v6`).
fn with_dns(link: Link, network_type: NetworkType, v6: bool) -> NetworkInterface {
    let mut interface = interface(link, network_type);
    let n = if link == Link::Wifi { 1 } else { 2 };
    let server = if v6 { format!("[2001:db8:{n}::1]:53") } else { format!("10.200.{n}.1:53") };
    interface.dns_servers = vec![server.parse().unwrap()];
    interface
}

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

/// Reads the `peer=<ip>` line the TCP service sends first.
async fn read_peer(stream: tokio::net::TcpStream) -> IpAddr {
    let mut reader = AsyncBufReader::new(stream);
    let mut line = String::new();
    timeout(WAIT, reader.read_line(&mut line)).await.unwrap().unwrap();
    line.trim()
        .strip_prefix("peer=")
        .and_then(|ip| ip.parse().ok())
        .unwrap_or_else(|| panic!("bad line {line:?}"))
}

#[test]
fn fallback_lane_resolves_over_cellular() {
    if role().as_deref() != Some("client") {
        return run_in_namespace("dns::fallback_lane_resolves_over_cellular");
    }
    let topology = Topology::up(dns_server_command()).unwrap();
    wait_until_reachable(SocketAddr::new(ip(SERVER_V4), PORT));
    queries("10.200.2.1");
    let wifi = with_dns(Link::Wifi, NetworkType::Wifi, false);
    let cell = with_dns(Link::Cell, NetworkType::Cellular, false);
    runtime().block_on(async {
        let dns = Arc::new(Resolvers::new(DnsSettings::default()));
        let manager = ConnectionManager::new(RelaySettings::default()).with_dns(dns.clone());
        manager.update_interfaces(
            InterfaceSnapshot::new(vec![wifi.clone(), cell.clone()], Some(wifi.index)).unwrap(),
        );
        let mut settings = DialSettings::default();
        settings.network_strategy = NetworkStrategy::Fallback;
        settings.network_type = vec![NetworkType::Wifi];
        settings.fallback_network_type = vec![NetworkType::Cellular];
        settings.fallback_delay = Duration::from_millis(300);
        let outbound = DirectOutbound::with_settings(settings)
            .with_networks(manager.networks().clone(), Arc::new(LinuxBinder))
            .with_dns(dns);

        // Wi-Fi drops everything, DNS replies included.
        topology.set_blackhole(Link::Wifi, true).unwrap();
        let started = Instant::now();
        let metadata = Metadata::new(Destination::domain(NAME, PORT));
        let report = timeout(WAIT, outbound.dial_with_report(&metadata)).await.unwrap().unwrap();
        let took = started.elapsed();
        for lookup in &report.lookups {
            println!(
                "  lookup via {}: {}",
                lookup.interface.as_deref().unwrap_or("system route"),
                lookup.answer
            );
        }
        println!("fallback dial to {NAME} under Wi-Fi packet drop: {} via cell0 in {took:?}", report.address);
        assert_eq!(report.stream.egress.interface.as_deref(), Some("cell0"));
        assert!(report.was_fallback);
        assert!(
            [ip(CELL_ANSWER_V4), ip(CELL_ANSWER_V6)].contains(&report.address.ip()),
            "dialed {} instead of cellular's answer",
            report.address
        );
        let expected = if report.address.is_ipv4() { Link::Cell.client_v4() } else { Link::Cell.client_v6() };
        assert_eq!(read_peer(report.stream.stream).await, ip(&expected));
        let cell_dns =
            Via::Server { server: "10.200.2.1:53".parse().unwrap(), interface: Some("cell0".into()) };
        assert!(
            report.lookups.iter().any(|l| l.answer.source == Some(Source::Resolver(cell_dns.clone()))),
            "the report shows DNS 10.200.2.1 on cell0"
        );
    });
    let log = queries("10.200.2.1");
    println!("queries: {log:?}");
    assert_eq!(sources_seen_by(&log, "10.200.1.1"), [ip(&Link::Wifi.client_v4())], "Wi-Fi's server");
    assert_eq!(sources_seen_by(&log, "10.200.2.1"), [ip(&Link::Cell.client_v4())], "cellular's server");
}

#[test]
fn queries_leave_from_each_link_address() {
    if role().as_deref() != Some("client") {
        return run_in_namespace("dns::queries_leave_from_each_link_address");
    }
    let _topology = Topology::up(dns_server_command()).unwrap();
    wait_until_reachable(SocketAddr::new(ip(SERVER_V4), PORT));
    queries("10.200.1.1");
    // A host route that sends anything unbound for cellular's DNS server over Wi-Fi.
    topology::run("ip", &["route", "add", "10.200.2.1/32", "via", "10.200.1.1", "dev", "wifi0"]).unwrap();
    let control = StdUdpSocket::bind("0.0.0.0:0").unwrap();
    control
        .send_to(
            b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x03svc\x04test\x00\x00\x01\x00\x01",
            "10.200.2.1:53",
        )
        .unwrap();
    let deadline = Instant::now() + WAIT;
    let routed = loop {
        let log = queries("10.200.1.1");
        if !log.is_empty() {
            break log;
        }
        assert!(Instant::now() < deadline, "the unbound query never arrived");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(
        sources_seen_by(&routed, "10.200.2.1"),
        [ip(&Link::Wifi.client_v4())],
        "unbound: routed over Wi-Fi"
    );

    let wifi = with_dns(Link::Wifi, NetworkType::Wifi, false);
    let cell = with_dns(Link::Cell, NetworkType::Cellular, false);
    runtime().block_on(async {
        let resolvers = Resolvers::new(DnsSettings::default());
        let binder: Arc<dyn SocketBinder> = Arc::new(LinuxBinder);
        let deadline = tokio::time::Instant::now() + WAIT;
        let over_cell = resolvers.for_route(Some(&cell), false, Some(&binder));
        let answer = over_cell.lookup(NAME, &[Family::V6, Family::V4], deadline).all().await.unwrap();
        assert_eq!(answer.addresses, [ip(CELL_ANSWER_V6), ip(CELL_ANSWER_V4)]);
        let over_wifi = resolvers.for_route(Some(&wifi), true, Some(&binder));
        let answer = over_wifi.lookup(NAME, &[Family::V6, Family::V4], deadline).all().await.unwrap();
        assert_eq!(answer.addresses, [ip(topology::SERVER_V6), ip(SERVER_V4)]);
    });
    let mut after = queries("10.200.1.1");
    for earlier in &routed {
        if let Some(position) = after.iter().position(|q| q == earlier) {
            after.remove(position);
        }
    }
    println!("queries after the control one: {after:?}");
    assert_eq!(
        sources_seen_by(&after, "10.200.2.1"),
        [ip(&Link::Cell.client_v4())],
        "bound to cell0, not routed"
    );
    assert_eq!(
        sources_seen_by(&after, "10.200.1.1"),
        [ip(&Link::Wifi.client_v4())],
        "Wi-Fi (default, protected)"
    );
    assert_eq!(after.len(), 4, "A and AAAA on each server, over UDP");
}

/// Dials `NAME` over `cell`-or-`wifi` (the non-default `only` interface) with `strategy`: TCP,
/// then UDP connected and unconnected; returns the addresses used. Prints time to first byte.
async fn dial_everything(outbound: &DirectOutbound, label: &str) -> (IpAddr, IpAddr, IpAddr) {
    let started = Instant::now();
    let report = outbound.dial_with_report(&Metadata::new(Destination::domain(NAME, PORT))).await.unwrap();
    let tcp_address = report.address.ip();
    for attempt in &report.failed {
        println!("  {label} TCP: {attempt}");
    }
    for lookup in &report.lookups {
        println!("  {label} lookup: {}", lookup.answer);
    }
    let peer = read_peer(report.stream.stream).await;
    println!("{label}: TCP to {tcp_address} (server saw {peer}), time to first byte {:?}", started.elapsed());

    let mut udp_addresses = Vec::new();
    for connected in [true, false] {
        let mut metadata = Metadata::new(Destination::domain(NAME, UDP_ECHO_PORT));
        metadata.options.udp_connect = connected;
        let started = Instant::now();
        let dialed = outbound.open_udp(&metadata).await.unwrap();
        let target = if connected { dialed.connected_to.unwrap() } else { dialed.resolved.unwrap() };
        println!("  {label}: UDP socket {:?} for {target}", dialed.socket.local_addr());
        if connected {
            dialed.socket.send(b"ping").await.unwrap();
        } else {
            dialed.socket.send_to(b"ping", target).await.unwrap();
        }
        let mut buf = [0u8; 16];
        let (n, from) = timeout(WAIT, dialed.socket.recv_from(&mut buf)).await.unwrap().unwrap();
        assert_eq!(&buf[..n], b"ping");
        assert_eq!(from, target);
        let mode = if connected { "connected" } else { "unconnected" };
        println!("{label}: UDP {mode} to {target}, time to first byte {:?}", started.elapsed());
        udp_addresses.push(target.ip());
    }
    (tcp_address, udp_addresses[0], udp_addresses[1])
}

#[test]
fn single_family_networks() {
    if role().as_deref() != Some("client") {
        return run_in_namespace("dns::single_family_networks");
    }
    let _topology = Topology::up(dns_server_command()).unwrap();
    wait_until_reachable(SocketAddr::new(ip(SERVER_V4), PORT));
    queries("10.200.1.1");
    // Cellular loses IPv4 (an IPv6-only network, its DNS server reached over IPv6); Wi-Fi loses
    // IPv6 (IPv4 only).
    topology::run("ip", &["addr", "del", "10.200.2.2/24", "dev", "cell0"]).unwrap();
    topology::run("ip", &["-6", "addr", "del", "2001:db8:1::2/64", "dev", "wifi0"]).unwrap();
    // The kernel may keep routes through a gateway whose prefix went: without them a bound
    // connect of the missing family fails at once (ENETUNREACH), as on a real single-stack link.
    let _ = topology::run("ip", &["-6", "route", "del", "2001:db8:9::/64", "dev", "wifi0"]);
    let _ = topology::run("ip", &["route", "del", "10.200.9.0/24", "dev", "cell0"]);
    warm_up(Link::Cell, CELL_ANSWER_V6);
    let mut cell = with_dns(Link::Cell, NetworkType::Cellular, true);
    cell.addresses.retain(|a| a.ip.is_ipv6());
    let mut wifi = with_dns(Link::Wifi, NetworkType::Wifi, false);
    wifi.addresses.retain(|a| a.ip.is_ipv4());
    runtime().block_on(async {
        let over = |only: NetworkType, strategy: DomainStrategy, default: &NetworkInterface| {
            let snapshot =
                InterfaceSnapshot::new(vec![wifi.clone(), cell.clone()], Some(default.index)).unwrap();
            let mut settings = DialSettings::default();
            settings.network_type = vec![only];
            settings.domain_strategy = strategy;
            DirectOutbound::with_settings(settings).with_networks(
                Arc::new(netswitch::network::NetworkState::new(snapshot)),
                Arc::new(LinuxBinder),
            )
        };
        // IPv6-only cellular, IPv4 preferred: the A answer cannot be reached, AAAA is used.
        let outbound = over(NetworkType::Cellular, DomainStrategy::PreferIpv4, &wifi);
        let used = dial_everything(&outbound, "IPv6-only cell0").await;
        assert_eq!(used, (ip(CELL_ANSWER_V6), ip(CELL_ANSWER_V6), ip(CELL_ANSWER_V6)));
        // IPv4-only Wi-Fi, IPv6 preferred: the AAAA answer cannot be reached, A is used.
        let outbound = over(NetworkType::Wifi, DomainStrategy::PreferIpv6, &cell);
        let used = dial_everything(&outbound, "IPv4-only wifi0").await;
        assert_eq!(used, (ip(SERVER_V4), ip(SERVER_V4), ip(SERVER_V4)));

        // The same IPv4-only Wi-Fi as the default interface (protected, not bound) whose host
        // does not report addresses, and no IPv6 route anywhere: both families are asked, the
        // IPv6 attempts fail at once with ENETUNREACH and IPv4 takes over.
        let _ = topology::run("ip", &["-6", "route", "del", "2001:db8:9::/64", "dev", "cell0"]);
        let mut bare = wifi.clone();
        bare.addresses.clear();
        let snapshot = InterfaceSnapshot::new(vec![bare.clone()], Some(bare.index)).unwrap();
        let outbound = DirectOutbound::with_settings(DialSettings::default())
            .with_networks(Arc::new(netswitch::network::NetworkState::new(snapshot)), Arc::new(LinuxBinder));
        let report =
            outbound.dial_with_report(&Metadata::new(Destination::domain(NAME, PORT))).await.unwrap();
        let v6_failure = report.failed.iter().find(|a| a.address.is_some_and(|a| a.is_ipv6()));
        let v6_failure = v6_failure.expect("the IPv6 address was tried first");
        println!("no IPv6 route: {v6_failure}");
        assert_eq!(v6_failure.error.kind(), FailureKind::NetworkUnreachable);
        let used = dial_everything(&outbound, "wifi0 without IPv6 route").await;
        assert_eq!(used, (ip(SERVER_V4), ip(SERVER_V4), ip(SERVER_V4)));
    });
    let log = queries("10.200.1.1");
    assert!(log.iter().any(|q| q.server == ip("2001:db8:2::1") && q.source == ip(&Link::Cell.client_v6())));
    assert!(!log.iter().any(|q| q.server == ip("10.200.2.1")), "cellular's IPv4 server was not used");
}

#[test]
fn interface_gone_flushes_its_cached_answers() {
    if role().as_deref() != Some("client") {
        return run_in_namespace("dns::interface_gone_flushes_its_cached_answers");
    }
    let topology = Topology::up(dns_server_command()).unwrap();
    wait_until_reachable(SocketAddr::new(ip(SERVER_V4), PORT));
    queries("10.200.1.1");
    let wifi = with_dns(Link::Wifi, NetworkType::Wifi, false);
    let cell = with_dns(Link::Cell, NetworkType::Cellular, false);
    let cell_queries = || queries("10.200.1.1").iter().filter(|q| q.server == ip("10.200.2.1")).count();
    runtime().block_on(async {
        let dns = Arc::new(Resolvers::new(DnsSettings::default()));
        let manager = ConnectionManager::new(RelaySettings::default()).with_dns(dns.clone());
        let both = InterfaceSnapshot::new(vec![wifi.clone(), cell.clone()], Some(wifi.index)).unwrap();
        manager.update_interfaces(both.clone());
        let mut settings = DialSettings::default();
        settings.network_type = vec![NetworkType::Cellular];
        settings.domain_strategy = DomainStrategy::Ipv4Only;
        let outbound = DirectOutbound::with_settings(settings)
            .with_networks(manager.networks().clone(), Arc::new(LinuxBinder))
            .with_dns(dns);
        let metadata = Metadata::new(Destination::domain(NAME, PORT));
        outbound.dial_tcp(&metadata).await.unwrap();
        outbound.dial_tcp(&metadata).await.unwrap();
        assert_eq!(cell_queries(), 1, "the second dial was answered from the cache");

        topology.set_link(Link::Cell, false).unwrap();
        manager.update_interfaces(InterfaceSnapshot::new(vec![wifi.clone()], Some(wifi.index)).unwrap());
        let error = outbound.dial_tcp(&metadata).await.unwrap_err();
        assert_eq!(error.kind(), FailureKind::NetworkUnreachable, "{error}");
        topology.set_link(Link::Cell, true).unwrap();
        manager.update_interfaces(both);
        wait_until_reachable(SocketAddr::new(ip(CELL_ANSWER_V4), PORT));
        let stream = timeout(WAIT, outbound.dial_tcp(&metadata)).await.unwrap().unwrap();
        assert_eq!(read_peer(stream.stream).await, ip(&Link::Cell.client_v4()));
    });
    assert_eq!(cell_queries(), 2, "cell0 went away and came back: its answer was asked for again");
}

#[test]
fn cli_resolve_and_dial_show_the_dns_server() {
    if role().as_deref() != Some("client") {
        return run_in_namespace("dns::cli_resolve_and_dial_show_the_dns_server");
    }
    let topology = Topology::up(dns_server_command()).unwrap();
    wait_until_reachable(SocketAddr::new(ip(SERVER_V4), PORT));
    queries("10.200.2.1");
    topology.set_blackhole(Link::Wifi, true).unwrap();
    let flags = [
        "--network-strategy",
        "fallback",
        "--network-type",
        "wifi",
        "--fallback-network-type",
        "cellular",
        "--fallback-delay",
        "300ms",
        "--interface-type",
        "wifi0=wifi",
        "--interface-type",
        "cell0=cellular",
        "--interface-dns",
        "wifi0=10.200.1.1",
        "--interface-dns",
        "cell0=10.200.2.1:53",
        "--domain-strategy",
        "ipv4_only",
    ];
    let run = |args: &[&str]| {
        let output = Command::new(env!("CARGO_BIN_EXE_netswitch")).args(args).args(flags).output().unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout).to_string();
        println!("$ netswitch {}\n{stdout}", args.join(" "));
        eprintln!("{}", String::from_utf8_lossy(&output.stderr));
        (output.status.success(), stdout)
    };
    let (ok, stdout) = run(&["resolve", NAME]);
    assert!(ok, "netswitch resolve failed");
    assert!(stdout.contains("dns 10.200.1.1"), "interfaces listed with their DNS servers");
    assert!(stdout.contains("cell0: A from DNS 10.200.2.1 on cell0"), "cellular's server answered");
    assert!(stdout.contains(&format!("{NAME}: {CELL_ANSWER_V4} via cell0")));

    let (ok, stdout) = run(&["dial", &format!("{NAME}:{PORT}")]);
    assert!(ok, "netswitch dial failed");
    assert!(stdout.contains("lookup via cell0: A from DNS 10.200.2.1 on cell0"), "the lookup is shown");
    assert!(stdout.contains(&format!("won: cell0 (cellular) to {CELL_ANSWER_V4}:{PORT}")));

    let (ok, stdout) = run(&["resolve", "nope.test"]);
    assert!(!ok);
    assert!(stdout.contains("nope.test does not exist (NXDOMAIN)"), "NXDOMAIN is named");
}
