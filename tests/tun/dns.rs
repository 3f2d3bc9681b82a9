//! DNS hijack through the tunnel, in network namespaces (root only; skipped with a printed
//! reason otherwise). The server namespace runs the tunnel tests' services plus two DNS servers
//! that answer `svc.test` differently: Wi-Fi's (10.200.1.1, reachable only over wifi0) with
//! 10.200.9.1 / 2001:db8:9::1, cellular's (10.200.2.1, only over cell0) with 10.200.9.2 /
//! 2001:db8:9::2; every other name is NXDOMAIN. netswitch knows each interface's server. An app
//! in the device namespace asks the tunnel's DNS address (the NAT address, 172.19.0.2 /
//! fdfe::2, where no DNS server exists): the answer it gets is Wi-Fi's, so netswitch resolved it
//! over wifi0, the network the default strategy picks. An HTTP server on 10.200.9.1 and
//! 2001:db8:9::1 answers with the peer's address.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, MessageType, Query, ResponseCode};
use hickory_proto::rr::{Name, RecordType};
use netswitch::network::{InterfaceSnapshot, NetworkInterface, NetworkType};
use netswitch::tun::{device, BindDefault, DnsHijack, Stack, TunSettings};
use netswitch::{os_binder, Config, Netswitch};

use super::topology::{self, Link, Topology};
use super::{blocking, connect_to, interface, role, run_in_namespace, Device, ROLE, TIMEOUT};

#[path = "../common/dns_responder.rs"]
mod dns_responder;

use dns_responder::{Responder, Zone};

/// The name both DNS servers answer.
const NAME: &str = "svc.test";
/// Wi-Fi's DNS server and its answers.
const WIFI_DNS: &str = "10.200.1.1:53";
const WIFI_V4: &str = "10.200.9.1";
const WIFI_V6: &str = "2001:db8:9::1";
/// Cellular's DNS server and its answers (addresses on the server host too).
const CELL_DNS: &str = "10.200.2.1:53";
const CELL_V4: &str = "10.200.9.2";
const CELL_V6: &str = "2001:db8:9::2";
/// TTL of the servers' records.
const TTL: u32 = 300;
/// HTTP port on the server host: `HTTP/1.0 200 OK` with body `peer=<source ip>`.
const HTTP: u16 = 8080;
/// The tunnel's DNS addresses: its NAT addresses.
const DNS_V4: &str = "172.19.0.2:53";
const DNS_V6: &str = "[fdfe::2]:53";

/// Entry point of the server process of these tests; does nothing when run directly.
#[test]
#[ignore = "entry point of the server process the tun DNS tests start"]
fn tun_dns_server_entry() {
    if role().as_deref() == Some("dns-server") {
        std::thread::spawn(serve_dns);
        std::thread::spawn(serve_http);
        super::server::serve();
    }
}

fn dns_server_command() -> Command {
    let mut command = Command::new("unshare");
    command
        .args(["-n", "--"])
        .arg(std::env::current_exe().unwrap())
        .args(["--exact", "dns::tun_dns_server_entry", "--ignored", "--nocapture", "--test-threads=1"])
        .env(ROLE, "dns-server");
    command
}

/// Runs in the server namespace: the cellular answers on `lo`, then (once the links' addresses
/// exist) one DNS responder per link.
fn serve_dns() {
    for (address, family) in [(format!("{CELL_V4}/32"), "-4"), (format!("{CELL_V6}/128"), "-6")] {
        let _ = Command::new("ip").args([family, "addr", "add", &address, "dev", "lo"]).output();
    }
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let mut responders = Vec::new();
        for (address, a, aaaa) in [(WIFI_DNS, WIFI_V4, WIFI_V6), (CELL_DNS, CELL_V4, CELL_V6)] {
            let address: SocketAddr = address.parse().unwrap();
            let mut zone = Zone::new(NAME, &[a], &[aaaa]);
            zone.ttl = TTL;
            let started = Instant::now();
            loop {
                match Responder::start_on(address, zone.clone()).await {
                    Ok(responder) => break responders.push(responder),
                    Err(_) if started.elapsed() < Duration::from_secs(10) => {
                        tokio::time::sleep(Duration::from_millis(20)).await
                    }
                    Err(error) => panic!("DNS responder on {address}: {error}"),
                }
            }
        }
        std::future::pending::<()>().await;
    });
}

/// A one-line HTTP server on every address of the server host (dual stack).
fn serve_http() {
    let listener = std::net::TcpListener::bind(SocketAddr::from(([0u16; 8], HTTP))).expect("HTTP bind");
    for mut stream in listener.incoming().map_while(Result::ok) {
        std::thread::spawn(move || {
            let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
            let mut request = Vec::new();
            let mut buf = [0u8; 1024];
            while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                match stream.read(&mut buf) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => request.extend_from_slice(&buf[..n]),
                }
            }
            let Ok(peer) = stream.peer_addr() else { return };
            let body = format!("peer={}\n", peer.ip().to_canonical());
            let head =
                format!("HTTP/1.0 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len());
            let _ = stream.write_all(format!("{head}{body}").as_bytes());
        });
    }
}

/// Waits until both DNS servers answer (asked straight over the links), so that netswitch
/// never asks one that is not there yet.
fn wait_for_dns_servers() {
    for server in [WIFI_DNS, CELL_DNS] {
        let deadline = Instant::now() + Duration::from_secs(10);
        while ask_udp(server.parse().unwrap(), NAME, RecordType::A).is_err() {
            assert!(Instant::now() < deadline, "DNS server {server} does not answer");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// `link`'s interface with its DNS server.
fn with_dns(link: Link, network_type: NetworkType) -> NetworkInterface {
    let mut interface = interface(link, network_type);
    let server = if link == Link::Wifi { WIFI_DNS } else { CELL_DNS };
    interface.dns_servers = vec![server.parse().unwrap()];
    interface
}

/// The device namespace as `Device::up` builds it, with the DNS servers and `hijack`, TCP
/// ending in `stack`.
async fn up_with_stack(
    config: Config,
    stack: Stack,
    hijack: impl FnOnce(&TunSettings) -> DnsHijack,
) -> Device {
    let topology = Topology::up(dns_server_command()).unwrap();
    let fd = device::create_linux("tun0").unwrap();
    topology::run("ip", &["addr", "add", "172.19.0.1/30", "dev", "tun0"]).unwrap();
    topology::run("ip", &["link", "set", "tun0", "mtu", "9000", "up"]).unwrap();
    topology::run("ip", &["route", "add", "10.200.9.0/24", "dev", "tun0", "metric", "10"]).unwrap();
    topology::run("ip", &["route", "add", "default", "dev", "tun0"]).unwrap();
    topology::run("ip", &["-6", "addr", "add", "fdfe::1/126", "dev", "tun0", "nodad"]).unwrap();
    topology::run("ip", &["-6", "route", "add", "2001:db8:9::/64", "dev", "tun0", "metric", "10"]).unwrap();
    blocking(wait_for_dns_servers).await;

    let netswitch = Netswitch::builder(config).binder(Arc::new(BindDefault(os_binder()))).build().unwrap();
    let wifi = with_dns(Link::Wifi, NetworkType::Wifi);
    let wifi_index = wifi.index;
    let snapshot =
        InterfaceSnapshot::new(vec![wifi, with_dns(Link::Cell, NetworkType::Cellular)], Some(wifi_index))
            .unwrap();
    netswitch.manager().update_interfaces(snapshot);
    let mut settings =
        TunSettings::inet4("172.19.0.1".parse().unwrap(), 30).with_inet6("fdfe::1".parse().unwrap(), 126);
    settings.dns_hijack = hijack(&settings);
    settings.stack = stack;
    let (tun, host) = super::flow_host::start(&netswitch, fd, settings);
    Device { host, _topology: topology, netswitch, tun }
}

fn query(id: u16, name: &str, kind: RecordType) -> Vec<u8> {
    let mut message = Message::new();
    message
        .set_id(id)
        .set_message_type(MessageType::Query)
        .set_recursion_desired(true)
        .add_query(Query::query(Name::from_ascii(name).unwrap(), kind));
    message.to_vec().unwrap()
}

/// One query over UDP to `server`, sent up to three times 2 s apart as a stub resolver does
/// (the machine is shared and slow at times); its answer, or the last error.
/// Queries [`ask_udp`] sent again after 2 s without an answer (each may be answered too).
static RESENT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

fn ask_udp(server: SocketAddr, name: &str, kind: RecordType) -> std::io::Result<Message> {
    let socket = UdpSocket::bind(if server.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" })?;
    socket.set_read_timeout(Some(Duration::from_secs(2)))?;
    socket.connect(server)?;
    let id = rand_id();
    let bytes = query(id, name, kind);
    let mut buf = vec![0u8; 4096];
    let mut last = None;
    for attempt in 0..3 {
        if attempt > 0 {
            RESENT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        socket.send(&bytes)?;
        match socket.recv(&mut buf) {
            Ok(n) => {
                let message = Message::from_vec(&buf[..n]).map_err(std::io::Error::other)?;
                if message.id() == id {
                    return Ok(message);
                }
            }
            Err(error) => last = Some(error),
        }
    }
    let error = last.unwrap_or_else(|| std::io::Error::other("only answers to other ids"));
    Err(std::io::Error::new(error.kind(), format!("{kind} {name} via {server}: {error}")))
}

fn rand_id() -> u16 {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    (nanos.subsec_nanos() >> 8) as u16
}

/// Every query over one TCP connection to `server`, answered in order.
fn ask_tcp(server: SocketAddr, questions: &[(&str, RecordType)]) -> std::io::Result<Vec<Message>> {
    let mut stream = connect_to(server)?;
    let mut framed = Vec::new();
    for (index, (name, kind)) in questions.iter().enumerate() {
        let bytes = query(index as u16 + 1, name, *kind);
        framed.extend_from_slice(&(bytes.len() as u16).to_be_bytes());
        framed.extend_from_slice(&bytes);
    }
    stream.write_all(&framed)?;
    let mut answers = Vec::new();
    for index in 0..questions.len() {
        let mut length = [0u8; 2];
        stream.read_exact(&mut length)?;
        let mut bytes = vec![0u8; usize::from(u16::from_be_bytes(length))];
        stream.read_exact(&mut bytes)?;
        let message = Message::from_vec(&bytes).map_err(std::io::Error::other)?;
        assert_eq!(message.id(), index as u16 + 1, "answers in order");
        answers.push(message);
    }
    Ok(answers)
}

/// The addresses of an answer and their smallest TTL.
fn addresses(message: &Message) -> (Vec<IpAddr>, u32) {
    let ips = message.answers().iter().filter_map(|r| r.data().ip_addr()).collect();
    let ttl = message.answers().iter().map(|r| r.ttl()).min().unwrap_or(0);
    (ips, ttl)
}

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

#[test]
fn queries_to_the_dns_address_are_resolved_over_wifi() {
    if role().as_deref() != Some("device") {
        return run_in_namespace("dns::queries_to_the_dns_address_are_resolved_over_wifi");
    }
    resolved_over_wifi(Stack::System);
}

/// The body of [`queries_to_the_dns_address_are_resolved_over_wifi`], TCP ending in `stack`.
pub(super) fn resolved_over_wifi(stack: Stack) {
    runtime().block_on(async {
        let device =
            up_with_stack(Config::default(), stack, |s| DnsHijack::Addresses(s.nat_addresses())).await;
        let (v4, v6, nx, tcp) = blocking(|| {
            let started = Instant::now();
            let v4 = ask_udp(DNS_V4.parse().unwrap(), NAME, RecordType::A)?;
            let first = started.elapsed();
            let started = Instant::now();
            let again = ask_udp(DNS_V4.parse().unwrap(), NAME, RecordType::A)?;
            println!("UDP A {NAME}: {first:?} (asked over wifi0), again {:?} (cached)", started.elapsed());
            assert_eq!(addresses(&again).0, addresses(&v4).0);
            let v6 = ask_udp(DNS_V6.parse().unwrap(), NAME, RecordType::AAAA)?;
            let nx = ask_udp(DNS_V4.parse().unwrap(), "nothing.test", RecordType::A)?;
            let tcp = ask_tcp(
                DNS_V4.parse().unwrap(),
                &[(NAME, RecordType::A), ("nothing.test", RecordType::AAAA), (NAME, RecordType::AAAA)],
            )?;
            std::io::Result::Ok((v4, v6, nx, tcp))
        })
        .await
        .unwrap();
        println!("UDP A {NAME} via {DNS_V4}: {:?}", addresses(&v4));
        println!("UDP AAAA {NAME} via {DNS_V6}: {:?}", addresses(&v6));
        assert_eq!(v4.response_code(), ResponseCode::NoError);
        let (ips, ttl) = addresses(&v4);
        assert_eq!(ips, [ip(WIFI_V4)], "Wi-Fi's server answered (cellular's says {CELL_V4})");
        assert!(ttl > 0 && ttl <= TTL, "TTL {ttl} from the cache of a {TTL} s answer");
        assert_eq!(addresses(&v6).0, [ip(WIFI_V6)], "AAAA over the IPv6 DNS address, Wi-Fi's answer");
        assert_eq!((nx.response_code(), nx.answers().len()), (ResponseCode::NXDomain, 0));
        println!("UDP A nothing.test: {}", nx.response_code());
        let codes: Vec<(ResponseCode, Vec<IpAddr>)> =
            tcp.iter().map(|m| (m.response_code(), addresses(m).0)).collect();
        println!("TCP, three queries on one connection: {codes:?}");
        assert_eq!(
            codes,
            [
                (ResponseCode::NoError, vec![ip(WIFI_V4)]),
                (ResponseCode::NXDomain, vec![]),
                (ResponseCode::NoError, vec![ip(WIFI_V6)])
            ]
        );
        let counters = device.tun.counters();
        println!("counters: {counters:?}");
        // Seven queries; a query resent on a slow machine may be answered twice.
        let resent = RESENT.load(std::sync::atomic::Ordering::Relaxed);
        assert!((7..=7 + resent).contains(&counters.dns_answered), "{counters:?}, {resent} resent");
        assert_eq!((counters.dns_failed, counters.dropped_dns), (0, 0));
        assert_eq!(counters.udp_datagrams, 0, "no query was relayed as a UDP flow");
        assert_eq!(counters.tcp_connections, 0, "the TCP connection was served, not dialed");
        // The DNS connection's NAT entry leaves with it.
        device.wait_idle().await;
    });
}

/// The control: without the hijack, a query to the same address is relayed as a UDP flow to
/// an address where no DNS server exists, and no answer comes.
#[test]
fn without_the_hijack_the_dns_address_does_not_answer() {
    if role().as_deref() != Some("device") {
        return run_in_namespace("dns::without_the_hijack_the_dns_address_does_not_answer");
    }
    without_the_hijack(Stack::System);
}

/// The body of [`without_the_hijack_the_dns_address_does_not_answer`], TCP ending in `stack`.
pub(super) fn without_the_hijack(stack: Stack) {
    runtime().block_on(async {
        let device = up_with_stack(Config::default(), stack, |_| DnsHijack::Off).await;
        let error = blocking(|| ask_udp(DNS_V4.parse().unwrap(), NAME, RecordType::A)).await.unwrap_err();
        println!("{stack:?}: hijack off: UDP A {NAME} via {DNS_V4}: {error}");
        let counters = device.tun.counters();
        assert_eq!(
            (counters.udp_datagrams, counters.dns_answered),
            (3, 0),
            "three tries relayed: {counters:?}"
        );
    });
}

#[test]
fn curl_by_name_through_the_hijack() {
    if role().as_deref() != Some("device") {
        return run_in_namespace("dns::curl_by_name_through_the_hijack");
    }
    curl_by_name(Stack::System);
}

/// The body of [`curl_by_name_through_the_hijack`], TCP ending in `stack`.
pub(super) fn curl_by_name(stack: Stack) {
    if !Command::new("curl").arg("--version").output().is_ok_and(|o| o.status.success()) {
        return eprintln!("skipped curl_by_name ({stack:?}): `curl` is not available");
    }
    runtime().block_on(async {
        let device =
            up_with_stack(Config::default(), stack, |s| DnsHijack::Addresses(s.nat_addresses())).await;
        // curl resolves with the system's resolver (getaddrinfo): /etc/resolv.conf, in a mount
        // namespace of its own, names the tunnel's DNS address and nothing else.
        let resolv = std::env::temp_dir().join(format!("netswitch-tun-dns-{}.conf", std::process::id()));
        std::fs::write(&resolv, "nameserver 172.19.0.2\noptions timeout:2 attempts:2\n").unwrap();
        let script = format!(
            "mount --bind {} /etc/resolv.conf && exec curl -sS --max-time 10 http://{NAME}:{HTTP}/",
            resolv.display()
        );
        let output =
            blocking(move || Command::new("unshare").args(["-m", "--", "sh", "-c", &script]).output())
                .await
                .unwrap();
        let _ = std::fs::remove_file(&resolv);
        let body = String::from_utf8_lossy(&output.stdout).to_string();
        println!(
            "curl http://{NAME}:{HTTP}/ -> {body:?} ({})",
            String::from_utf8_lossy(&output.stderr).trim()
        );
        assert!(output.status.success(), "curl failed: {}", String::from_utf8_lossy(&output.stderr));
        let peer = body.trim().strip_prefix("peer=").unwrap_or_else(|| panic!("not the page: {body:?}"));
        assert!(
            [Link::Wifi.client_v4(), Link::Wifi.client_v6()].contains(&peer.to_string()),
            "the server saw {peer}, not wifi0"
        );
        let counters = device.tun.counters();
        println!("counters: {counters:?}");
        assert!(counters.dns_answered >= 2, "curl's A and AAAA queries were answered: {counters:?}");
        assert!(counters.tcp_connections >= 1, "the page came through the tunnel");
    });
}

#[test]
fn all_port_53_answers_any_address_and_relays_the_rest() {
    if role().as_deref() != Some("device") {
        return run_in_namespace("dns::all_port_53_answers_any_address_and_relays_the_rest");
    }
    all_port_53(Stack::System);
}

/// The body of [`all_port_53_answers_any_address_and_relays_the_rest`], TCP ending in `stack`.
pub(super) fn all_port_53(stack: Stack) {
    runtime().block_on(async {
        let device = up_with_stack(Config::default(), stack, |_| DnsHijack::AllPort53).await;
        let (udp, tcp, echo) = blocking(|| {
            // No DNS server exists at 10.200.9.53 (nor that address).
            let udp = ask_udp("10.200.9.53:53".parse().unwrap(), NAME, RecordType::A)?;
            let tcp = ask_tcp("[2001:db8:9::53]:53".parse().unwrap(), &[(NAME, RecordType::AAAA)])?;
            // Another port of the same address is still relayed (the server's UDP echo).
            let socket = UdpSocket::bind("0.0.0.0:0")?;
            socket.set_read_timeout(Some(TIMEOUT))?;
            let echo_at = SocketAddr::new(ip(WIFI_V4), super::server::UDP_ECHO);
            socket.send_to(b"not DNS", echo_at)?;
            let mut buf = [0u8; 64];
            let (n, from) = socket.recv_from(&mut buf)?;
            assert_eq!(from, echo_at);
            std::io::Result::Ok((udp, tcp, buf[..n].to_vec()))
        })
        .await
        .unwrap();
        assert_eq!(addresses(&udp).0, [ip(WIFI_V4)]);
        assert_eq!(addresses(&tcp[0]).0, [ip(WIFI_V6)]);
        assert_eq!(echo, b"not DNS");
        let counters = device.tun.counters();
        println!("any address port 53 answered (UDP and TCP), UDP echo relayed: {counters:?}");
        assert_eq!((counters.dns_answered, counters.udp_datagrams), (2, 1));
    });
}

#[test]
fn the_fallback_network_resolves_when_wifi_drops_everything() {
    if role().as_deref() != Some("device") {
        return run_in_namespace("dns::the_fallback_network_resolves_when_wifi_drops_everything");
    }
    fallback_resolves(Stack::System);
}

/// The body of [`the_fallback_network_resolves_when_wifi_drops_everything`], TCP ending in
/// `stack`.
pub(super) fn fallback_resolves(stack: Stack) {
    runtime().block_on(async {
        let mut config = Config::default();
        config.network_strategy = netswitch::network::strategy::NetworkStrategy::Fallback;
        config.network_type = vec![NetworkType::Wifi];
        config.fallback_network_type = vec![NetworkType::Cellular];
        config.fallback_delay = Duration::from_millis(300);
        let device = up_with_stack(config, stack, |s| DnsHijack::Addresses(s.nat_addresses())).await;
        device._topology.set_blackhole(Link::Wifi, true).unwrap();
        let answer = blocking(|| ask_udp(DNS_V4.parse().unwrap(), NAME, RecordType::A)).await.unwrap();
        println!("{stack:?}: Wi-Fi blackholed: A {NAME} -> {:?} (cellular's answer)", addresses(&answer));
        assert_eq!(addresses(&answer).0, [ip(CELL_V4)], "cellular's server answered over cell0");
    });
}

/// `netswitch tun --dns-hijack` answers on the NAT address (172.19.0.6 for 172.19.0.5/30),
/// which it logs as the apps' DNS server, with Wi-Fi's answer.
#[test]
fn tun_cli_dns_hijack_answers_on_the_nat_address() {
    if role().as_deref() != Some("device") {
        return run_in_namespace("dns::tun_cli_dns_hijack_answers_on_the_nat_address");
    }
    cli_dns_hijack(Stack::System);
}

/// The body of [`tun_cli_dns_hijack_answers_on_the_nat_address`], TCP ending in `stack`
/// (`--stack`).
pub(super) fn cli_dns_hijack(stack: Stack) {
    let _topology = Topology::up(dns_server_command()).unwrap();
    topology::run("ip", &["route", "add", "default", "via", "10.200.1.1", "dev", "wifi0"]).unwrap();
    wait_for_dns_servers();
    let mut cli = Command::new(env!("CARGO_BIN_EXE_netswitch"))
        .args(["tun", "--name", "tun1", "--address", "172.19.0.5/30", "--address", "fdfe::5/126"])
        .args(["--route", "10.200.9.0/24", "--route", "2001:db8:9::/64", "--dns-hijack"])
        .args(["--interface-type", "wifi0=wifi", "--interface-type", "cell0=cellular"])
        .args([
            "--interface-dns",
            &format!("wifi0={WIFI_DNS}"),
            "--interface-dns",
            &format!("cell0={CELL_DNS}"),
        ])
        .args(super::stack_flag(stack))
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = cli.stderr.take().unwrap();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let log = std::thread::spawn(move || {
        let mut lines = Vec::new();
        for line in std::io::BufRead::lines(std::io::BufReader::new(stderr)).map_while(Result::ok) {
            if line.contains("tunnel running") {
                let _ = ready_tx.send(line.clone());
            }
            lines.push(line);
        }
        lines
    });
    let Ok(running) = ready_rx.recv_timeout(Duration::from_secs(10)) else {
        let _ = cli.kill();
        panic!("netswitch tun did not start: {:?}", log.join().unwrap());
    };
    super::usable_addresses("tun1");
    let asked = (|| {
        let v4 = ask_udp("172.19.0.6:53".parse().unwrap(), NAME, RecordType::A)?;
        let v6 = ask_tcp("[fdfe::6]:53".parse().unwrap(), &[(NAME, RecordType::AAAA)])?;
        std::io::Result::Ok((v4, v6))
    })();
    // SAFETY: kill with a pid this test spawned.
    assert_eq!(unsafe { libc::kill(cli.id() as libc::pid_t, libc::SIGINT) }, 0);
    let status = cli.wait().unwrap();
    let log = log.join().unwrap();
    assert!(status.success(), "{status}: {log:?}");
    let (v4, v6) = asked.unwrap_or_else(|error| panic!("no DNS answer from the tunnel: {error}; {log:?}"));
    assert!(running.contains(&format!("stack={stack:?}")), "the CLI chose the {stack:?} stack: {running}");
    assert_eq!(addresses(&v4).0, [ip(WIFI_V4)]);
    assert_eq!(addresses(&v6[0]).0, [ip(WIFI_V6)]);
    let told = log.iter().find(|line| line.contains("DNS hijack")).cloned().unwrap_or_default();
    assert!(
        told.contains("172.19.0.6") && told.contains("fdfe::6"),
        "the log names the DNS addresses: {log:?}"
    );
    println!(
        "netswitch tun --dns-hijack ({stack:?}): UDP 172.19.0.6 and TCP fdfe::6 answered with Wi-Fi's answers; {told}"
    );
}
