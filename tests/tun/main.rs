//! The packet tunnel end to end, in network namespaces (root only; skipped with a printed
//! reason otherwise):
//!
//! ```text
//!   this test's netns ("device"):  app sockets -> tun0 172.19.0.1/30 (routes 10.200.9.0/24 and
//!                                  default into tun0) -> netswitch reads tun0 -> outbound bound
//!                                  to wifi0 (default) / cell0 veths
//!   server netns (child):          10.200.9.1: TCP and UDP services below
//! ```
//!
//! The app's connections reach the server from wifi0's address (10.200.1.2): netswitch carried
//! them, its own sockets did not loop back into tun0.

#[path = "../netns/topology.rs"]
#[allow(dead_code)]
mod topology;

mod adversarial;
mod decide;
mod dns;
mod flow_host;
mod icmp;
mod idle_apps;
mod packet_flow;
mod packet_flow_suite;
mod scale;
mod server;
mod stack_option;
mod udp_flood;
mod userspace;
mod userspace_loss;
mod userspace_offload;
mod userspace_suite;

use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr, TcpStream, UdpSocket};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use netswitch::network::{InterfaceSnapshot, NetworkInterface, NetworkType};
use netswitch::tun::{device, BindDefault, Framing, Stack, Tun, TunSettings};
use netswitch::{os_binder, Config, Netswitch};
use topology::{Link, Topology, SERVER_V4, SERVER_V6};

/// Which part of the test this process plays (set only on the processes the test starts).
const ROLE: &str = "NETSWITCH_TUN_TEST_ROLE";
const TIMEOUT: Duration = Duration::from_secs(5);

fn role() -> Option<String> {
    std::env::var(ROLE).ok()
}

/// Entry point of the server process; does nothing when run directly.
#[test]
#[ignore = "entry point of the server process the tun tests start"]
fn tun_server_entry() {
    if role().as_deref() == Some("server") {
        server::serve();
    }
}

/// Why this machine cannot run the test, if it cannot.
fn cannot_run() -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("needs root (a TUN device and network namespaces)".into());
    }
    for tool in [["ip", "-V"], ["nsenter", "--version"], ["unshare", "--version"]] {
        if !Command::new(tool[0]).arg(tool[1]).output().is_ok_and(|o| o.status.success()) {
            return Some(format!("`{}` is not available", tool[0]));
        }
    }
    if !std::path::Path::new("/dev/net/tun").exists() {
        return Some("/dev/net/tun does not exist".into());
    }
    None
}

/// Runs the test `name` again inside a new network namespace with role "device", or prints why
/// it cannot and returns.
fn run_in_namespace(name: &str) {
    run_in_namespace_with(name, &[]);
}

/// [`run_in_namespace`] with `env` set on the namespaced process too.
fn run_in_namespace_with(name: &str, env: &[(&str, &str)]) {
    if let Some(reason) = cannot_run() {
        eprintln!("skipped {name}: {reason}");
        return;
    }
    let output = Command::new("unshare")
        .args(["-n", "--"])
        .arg(std::env::current_exe().unwrap())
        .args(["--exact", name, "--nocapture", "--test-threads=1"])
        .env(ROLE, "device")
        .envs(env.iter().copied())
        .output()
        .unwrap();
    println!("{}", String::from_utf8_lossy(&output.stdout));
    eprintln!("{}", String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "{name} failed inside the network namespace (output above)");
    let ran = String::from_utf8_lossy(&output.stdout).contains("test result: ok. 1 passed");
    assert!(ran, "{name} did not run inside the network namespace (a wrong test path?)");
}

fn server_command() -> Command {
    let mut command = Command::new("unshare");
    command
        .args(["-n", "--"])
        .arg(std::env::current_exe().unwrap())
        .args(["--exact", "tun_server_entry", "--ignored", "--nocapture", "--test-threads=1"])
        .env(ROLE, "server");
    command
}

/// The device namespace: the server topology, tun0 with its routes, and netswitch on it (on
/// tun0's fd, or on the packet flow with the test host moving tun0's packets: [`flow_host`]).
struct Device {
    /// The packet-flow host, when on the packet flow (first: its mover stops first on drop).
    host: Option<flow_host::Host>,
    _topology: Topology,
    netswitch: Netswitch,
    tun: Tun,
}

fn interface(link: Link, network_type: NetworkType) -> NetworkInterface {
    let index = nix::net::if_::if_nametoindex(link.name()).unwrap();
    NetworkInterface::new(link.name(), index, network_type)
        .with_address(link.client_v4().parse().unwrap(), 24)
        .with_address(link.client_v6().parse().unwrap(), 64)
}

impl Device {
    async fn up() -> Device {
        Device::up_with(|_| {}).await
    }

    async fn up_with(adjust: impl FnOnce(&mut TunSettings)) -> Device {
        Device::up_config(Config::default(), adjust).await
    }

    async fn up_config(config: Config, adjust: impl FnOnce(&mut TunSettings)) -> Device {
        Device::up_through(config, adjust, |fd| fd).await
    }

    /// [`Device::up_config`] where `through` gets tun0's fd and returns the one netswitch reads
    /// (a test's packet mover between the two) — or, when this process runs over the packet
    /// flow ([`flow_host::over_flow`]), the one the test host moves through the packet flow.
    async fn up_through(
        config: Config,
        adjust: impl FnOnce(&mut TunSettings),
        through: impl FnOnce(std::os::fd::OwnedFd) -> std::os::fd::OwnedFd,
    ) -> Device {
        let topology = Topology::up(server_command()).unwrap();
        let mut settings =
            TunSettings::inet4("172.19.0.1".parse().unwrap(), 30).with_inet6("fdfe::1".parse().unwrap(), 126);
        adjust(&mut settings);
        let fd = match settings.framing {
            Framing::VirtioNet => device::create_linux_offload("tun0").unwrap(),
            _ => device::create_linux("tun0").unwrap(),
        };
        topology::run("ip", &["addr", "add", "172.19.0.1/30", "dev", "tun0"]).unwrap();
        topology::run("ip", &["link", "set", "tun0", "mtu", "9000", "up"]).unwrap();
        // The app's traffic goes into the tunnel: the server's prefix (more specific than the
        // veth routes' metric) and the default route.
        topology::run("ip", &["route", "add", "10.200.9.0/24", "dev", "tun0", "metric", "10"]).unwrap();
        topology::run("ip", &["route", "add", "default", "dev", "tun0"]).unwrap();
        topology::run("ip", &["-6", "addr", "add", "fdfe::1/126", "dev", "tun0", "nodad"]).unwrap();
        topology::run("ip", &["-6", "route", "add", "2001:db8:9::/64", "dev", "tun0", "metric", "10"])
            .unwrap();

        let netswitch =
            Netswitch::builder(config).binder(Arc::new(BindDefault(os_binder()))).build().unwrap();
        let wifi = interface(Link::Wifi, NetworkType::Wifi);
        let wifi_index = wifi.index;
        let snapshot = InterfaceSnapshot::new(
            vec![wifi, interface(Link::Cell, NetworkType::Cellular)],
            Some(wifi_index),
        )
        .unwrap();
        netswitch.manager().update_interfaces(snapshot);
        let (tun, host) = flow_host::start(&netswitch, through(fd), settings);
        Device { host, _topology: topology, netswitch, tun }
    }

    /// Waits until every NAT entry and connection is gone.
    async fn wait_idle(&self) {
        let deadline = Instant::now() + Duration::from_secs(8);
        while self.tun.nat_entries() > 0
            || !self
                .netswitch
                .manager()
                .list()
                .iter()
                .all(|c| c.protocol == netswitch::TransportProtocol::Udp)
        {
            assert!(
                Instant::now() < deadline,
                "NAT entries left: {}, connections: {:?}",
                self.tun.nat_entries(),
                self.netswitch.manager().list()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn server(port: u16) -> SocketAddr {
    SocketAddr::new(SERVER_V4.parse().unwrap(), port)
}

fn server_v6(port: u16) -> SocketAddr {
    SocketAddr::new(SERVER_V6.parse().unwrap(), port)
}

/// Connects the app to `port` of the server through the tunnel (blocking socket, timeouts set).
fn connect(port: u16) -> std::io::Result<TcpStream> {
    connect_to(server(port))
}

fn connect_to(address: SocketAddr) -> std::io::Result<TcpStream> {
    let stream = TcpStream::connect_timeout(&address, TIMEOUT)?;
    stream.set_read_timeout(Some(TIMEOUT))?;
    stream.set_write_timeout(Some(TIMEOUT))?;
    Ok(stream)
}

/// A deterministic test pattern of `len` bytes.
fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect()
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.unwrap()
}

#[test]
fn tun_tcp_and_udp_through_the_kernel_stack() {
    if role().as_deref() != Some("device") {
        return run_in_namespace("tun_tcp_and_udp_through_the_kernel_stack");
    }
    tcp_and_udp(Stack::System);
}

/// The body of [`tun_tcp_and_udp_through_the_kernel_stack`], TCP ending in `stack`.
pub(crate) fn tcp_and_udp(stack: Stack) {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    runtime.block_on(async {
        let device = Device::up_with(|settings| settings.stack = stack).await;

        // The server sees the connection from wifi0: netswitch carried it, bound to wifi0.
        let peer = blocking(|| {
            let mut stream = connect(server::PEER)?;
            assert_eq!(stream.local_addr()?.ip(), "172.19.0.1".parse::<IpAddr>().unwrap());
            let mut line = String::new();
            stream.read_to_string(&mut line)?;
            std::io::Result::Ok(line)
        })
        .await
        .unwrap();
        assert_eq!(peer.trim(), format!("peer={}", Link::Wifi.client_v4()));
        assert_eq!(device.tun.counters().tcp_connections, 1);
        println!("{stack:?}: TCP through tun0 arrives from wifi0 ({})", peer.trim());

        // IPv6: the same path with the IPv6 listener and NAT address.
        let (peer, echoed) = blocking(|| {
            let mut stream = connect_to(server_v6(server::PEER))?;
            assert_eq!(stream.local_addr()?.ip(), "fdfe::1".parse::<IpAddr>().unwrap());
            let mut peer = String::new();
            stream.read_to_string(&mut peer)?;
            let mut stream = connect_to(server_v6(server::ECHO))?;
            stream.write_all(&pattern(100_000, 9))?;
            stream.shutdown(Shutdown::Write)?;
            let mut echoed = Vec::new();
            stream.read_to_end(&mut echoed)?;
            let socket = UdpSocket::bind("[::]:0")?;
            let (answer, from) = udp_roundtrip(&socket, b"over IPv6", server_v6(server::UDP_ECHO));
            assert_eq!((&answer[..], from), (&b"over IPv6"[..], server_v6(server::UDP_ECHO)));
            std::io::Result::Ok((peer, echoed))
        })
        .await
        .unwrap();
        assert_eq!(peer.trim(), format!("peer={}", Link::Wifi.client_v6()));
        assert!(echoed == pattern(100_000, 9), "IPv6 echo differs ({} bytes)", echoed.len());
        println!("IPv6: TCP from wifi0 ({}), 100000 bytes echoed, a UDP datagram echoed", peer.trim());

        // Echo, the app half-closes first: every byte back, then the server's FIN.
        let sent = pattern(1 << 20, 7);
        let expected = sent.clone();
        let echoed = blocking(move || echo_app_fin_first(&sent)).await.unwrap();
        assert!(echoed == expected, "echo differs: {} bytes back of {}", echoed.len(), expected.len());
        println!("1 MiB echoed through the tunnel, app half-closed first");

        // The server half-closes first; the app still sends, and the server counts it.
        let (received, answer) = blocking(|| {
            let mut stream = connect(server::SERVER_FIRST)?;
            let mut received = Vec::new();
            stream.read_to_end(&mut received)?;
            stream.write_all(&pattern(300_000, 3))?;
            stream.shutdown(Shutdown::Write)?;
            // The server records what it read once it saw the app's FIN.
            let deadline = Instant::now() + TIMEOUT;
            loop {
                let mut answer = String::new();
                connect(server::LAST_COUNT)?.read_to_string(&mut answer)?;
                if answer.trim() != "none" || Instant::now() > deadline {
                    return std::io::Result::Ok((received, answer));
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        })
        .await
        .unwrap();
        assert!(received == pattern(200_000, 5), "server-first bytes differ ({} bytes)", received.len());
        assert_eq!(answer.trim(), format!("{} {}", 300_000, server::digest(&pattern(300_000, 3))));
        println!("server half-closed first: 200000 bytes down, then 300000 up after the FIN");

        // A reset from the server reaches the app's socket as a reset.
        let error = blocking(|| {
            let mut stream = connect(server::RESET).unwrap();
            stream.write_all(b"reset me\n").unwrap();
            let mut buf = [0u8; 16];
            match stream.read(&mut buf) {
                Ok(n) => panic!("read {n} bytes instead of a reset"),
                Err(error) => error,
            }
        })
        .await;
        assert_eq!(error.kind(), ErrorKind::ConnectionReset, "{error}");
        // A refused dial resets the app's connection (the kernel accepted it before the dial).
        let error = blocking(|| {
            // The reset may even beat the app's wakeup from connect(): then connect reports it.
            let mut stream = match connect(server::CLOSED) {
                Ok(stream) => stream,
                Err(error) => return error,
            };
            let mut buf = [0u8; 16];
            match stream.read(&mut buf) {
                Ok(n) => panic!("read {n} bytes instead of a reset"),
                Err(error) => error,
            }
        })
        .await;
        assert_eq!(error.kind(), ErrorKind::ConnectionReset, "{error}");
        println!("server reset and refused dial: the app's socket reads ConnectionReset");

        // UDP echo: every datagram back, from the server's address, in windows of 32.
        let (sent, received) = blocking(udp_echo).await;
        assert_eq!(received, sent, "UDP datagrams echoed");
        // Endpoint-independent mapping: two destinations see the same mapped port.
        let mapped = blocking(|| {
            let socket = UdpSocket::bind("0.0.0.0:0").unwrap();
            socket.set_read_timeout(Some(TIMEOUT)).unwrap();
            let mut seen = Vec::new();
            for port in [server::WHOAMI_A, server::WHOAMI_B] {
                let (answer, from) = udp_roundtrip(&socket, b"who", server(port));
                assert_eq!(from, server(port));
                seen.push(String::from_utf8_lossy(&answer).to_string());
            }
            seen
        })
        .await;
        assert_eq!(mapped[0], mapped[1], "one mapped address for both destinations");
        assert!(mapped[0].starts_with(&Link::Wifi.client_v4()), "{mapped:?}");
        println!("UDP: {received} of {sent} datagrams echoed; both destinations saw {}", mapped[0]);

        device.wait_idle().await;
        let counters = device.tun.counters();
        println!("{stack:?}: counters after the traffic: {counters:?}");
        // The system stack's NAT entries linger after a close, so every late segment finds one.
        // smoltcp's flow leaves at once: a segment of the app still in flight when a reset (the
        // refused dial, the server's reset) closed its flow finds none and is counted here.
        let no_flow = match stack {
            Stack::System => counters.dropped_no_flow,
            _ => 0,
        };
        // (Over the packet flow `dropped_write` is the flow's output queue: see the helper.)
        let write_drops = flow_host::device_write_drops(&device, &counters).await;
        assert_eq!(no_flow + counters.dropped_nat_full + write_drops, 0, "{counters:?}");
        assert_eq!(counters.dropped_udp, 0, "{counters:?}");

        malformed_packets_are_counted(&device).await;

        // Stopping the tunnel closes its connections: the app's socket reads a reset.
        let mut stream = blocking(|| connect(server::ECHO).unwrap()).await;
        let (mut stream, buf) = blocking(move || {
            stream.write_all(b"ping").unwrap();
            let mut buf = [0u8; 4];
            stream.read_exact(&mut buf).unwrap();
            (stream, buf)
        })
        .await;
        assert_eq!(&buf, b"ping");
        device.tun.stop();
        let error = blocking(move || {
            let mut buf = [0u8; 4];
            match stream.read(&mut buf) {
                Ok(n) => panic!("read {n} bytes after the tunnel stopped instead of a reset"),
                Err(error) => error,
            }
        })
        .await;
        assert_eq!(error.kind(), ErrorKind::ConnectionReset, "{error}");
        println!("tunnel stopped: its open connection was reset");
    });
}

/// Sends `payload` to `to` until an answer comes (the server's UDP sockets open shortly after
/// the topology is up), at most 5 times 1 s; returns the answer and where it came from.
fn udp_roundtrip(socket: &UdpSocket, payload: &[u8], to: SocketAddr) -> (Vec<u8>, SocketAddr) {
    socket.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
    let mut buf = [0u8; 2048];
    for _ in 0..5 {
        socket.send_to(payload, to).unwrap();
        if let Ok((n, from)) = socket.recv_from(&mut buf) {
            socket.set_read_timeout(Some(TIMEOUT)).unwrap();
            return (buf[..n].to_vec(), from);
        }
    }
    panic!("no UDP answer from {to} in 5 s");
}

/// 2 × 1,000 datagrams of 64 and 1,200 bytes with sequence numbers, at most 32 in flight;
/// returns (sent, received intact).
fn udp_echo() -> (usize, usize) {
    let socket = UdpSocket::bind("0.0.0.0:0").unwrap();
    udp_roundtrip(&socket, b"warm-up", server(server::UDP_ECHO));
    let (mut sent, mut received) = (0, 0);
    for size in [64usize, 1200] {
        for window in 0..1000 / 32 + 1 {
            let first = window * 32;
            let last = (first + 32).min(1000);
            for seq in first..last {
                let mut datagram = pattern(size, seq as u8);
                datagram[..4].copy_from_slice(&(seq as u32).to_be_bytes());
                socket.send_to(&datagram, server(server::UDP_ECHO)).unwrap();
                sent += 1;
            }
            let mut buf = [0u8; 2048];
            for _ in first..last {
                let (n, from) = socket.recv_from(&mut buf).expect("an echoed datagram within 5 s");
                assert_eq!(from, server(server::UDP_ECHO), "replies come from the server's address");
                let seq = u32::from_be_bytes(buf[..4].try_into().unwrap()) as usize;
                let mut expected = pattern(size, seq as u8);
                expected[..4].copy_from_slice(&(seq as u32).to_be_bytes());
                assert!(buf[..n] == expected[..], "datagram {seq} of {size} bytes differs");
                received += 1;
            }
        }
    }
    (sent, received)
}

/// Malformed packets sent into tun0 through a raw socket are counted by reason, and the tunnel
/// still carries connections afterwards.
async fn malformed_packets_are_counted(device: &Device) {
    use socket2::{Domain, Protocol, Socket, Type};
    let before = device.tun.counters();
    let raw = Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::from(libc::IPPROTO_RAW))).unwrap();
    let destination: SocketAddr = server(9);
    let ip = |protocol: u8, flags: u8, payload: &[u8]| {
        let mut packet =
            vec![0x45, 0, 0, 0, 0, 1, flags, 0, 64, protocol, 0, 0, 172, 19, 0, 1, 10, 200, 9, 1];
        let len = (packet.len() + payload.len()) as u16;
        packet[2..4].copy_from_slice(&len.to_be_bytes());
        packet.extend_from_slice(payload);
        packet
    };
    let udp_bad_sum = [0x9c, 0x40, 0x1b, 0x5a, 0, 12, 0xde, 0xad, b'b', b'a', b'd', b'!'];
    let packets = [
        ip(17, 0, &udp_bad_sum),     // UDP with a wrong checksum
        ip(6, 0, &[0x9c, 0x40, 0]),  // TCP header cut short
        ip(17, 0x20, &udp_bad_sum),  // more fragments: a fragment
        ip(253, 0, b"experimental"), // a protocol the tunnel does not carry
    ];
    for packet in &packets {
        raw.send_to(packet, &destination.into()).unwrap();
    }
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let now = device.tun.counters();
        let grew = |a: u64, b: u64| a > b;
        if grew(now.dropped_bad_checksum, before.dropped_bad_checksum)
            && grew(now.dropped_malformed, before.dropped_malformed)
            && grew(now.dropped_fragments, before.dropped_fragments)
            && grew(now.dropped_unsupported, before.dropped_unsupported)
        {
            println!("malformed packets counted: {now:?}");
            break;
        }
        assert!(Instant::now() < deadline, "not all malformed packets were counted: {now:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let echoed = blocking(|| {
        let mut stream = connect(server::ECHO)?;
        stream.write_all(b"still alive")?;
        stream.shutdown(Shutdown::Write)?;
        let mut echoed = Vec::new();
        stream.read_to_end(&mut echoed)?;
        std::io::Result::Ok(echoed)
    })
    .await
    .unwrap();
    assert_eq!(echoed, b"still alive");
}

/// Sends `sent` to the echo server through the tunnel while reading, half-closes after the last
/// byte (the app's FIN first), and returns everything echoed until the server's FIN.
pub(crate) fn echo_app_fin_first(sent: &[u8]) -> std::io::Result<Vec<u8>> {
    echo_app_fin_first_to(server(server::ECHO), sent)
}

/// [`echo_app_fin_first`] to the echo service at `address`.
pub(crate) fn echo_app_fin_first_to(address: SocketAddr, sent: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut stream = connect_to(address)?;
    let mut writer = stream.try_clone()?;
    let sent = sent.to_vec();
    let writing = std::thread::spawn(move || {
        writer.write_all(&sent)?;
        writer.shutdown(Shutdown::Write)
    });
    let mut echoed = Vec::new();
    stream.read_to_end(&mut echoed)?;
    writing.join().map_err(|_| std::io::Error::other("the writer thread panicked"))??;
    Ok(echoed)
}

/// The CLI, killed if the test fails before it is stopped (else it would outlive the test and
/// keep the outer test waiting on its output).
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `netswitch tun` creates and configures its device, carries the app's connections over the
/// physical default (wifi0) with the default strategy — its own sockets never enter the tunnel
/// — and removes the device when it stops on SIGINT.
#[test]
fn tun_cli_creates_the_device_and_relays() {
    if role().as_deref() != Some("device") {
        return run_in_namespace("tun_cli_creates_the_device_and_relays");
    }
    cli_relays(Stack::System);
}

/// The command-line flag that chooses `stack` (none for the default, the system stack).
pub(crate) fn stack_flag(stack: Stack) -> &'static [&'static str] {
    match stack {
        Stack::Userspace => &["--stack", "userspace"],
        _ => &[],
    }
}

/// `device`'s addresses (`ip -o addr show`) once none is tentative any more: until the kernel's
/// address configuration finished (asynchronously, after the link came up), an app's socket
/// would take another interface's IPv6 address as its source.
pub(crate) fn usable_addresses(device: &str) -> String {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let link = Command::new("ip").args(["-o", "addr", "show", "dev", device]).output().unwrap();
        let link = String::from_utf8_lossy(&link.stdout).to_string();
        if !link.contains("tentative") || Instant::now() > deadline {
            return link;
        }
        println!("{device}: an address is still tentative: {link}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The body of [`tun_cli_creates_the_device_and_relays`], TCP ending in `stack` (`--stack`).
pub(crate) fn cli_relays(stack: Stack) {
    let _topology = Topology::up(server_command()).unwrap();
    topology::run("ip", &["route", "add", "default", "via", "10.200.1.1", "dev", "wifi0"]).unwrap();
    let mut cli = KillOnDrop(
        Command::new(env!("CARGO_BIN_EXE_netswitch"))
            .args(["tun", "--name", "tun1", "--address", "172.19.0.5/30", "--address", "fdfe::5/126"])
            .args(["--route", "10.200.9.0/24", "--route", "2001:db8:9::/64", "--mtu", "1500"])
            .args(["--interface-type", "wifi0=wifi", "--interface-type", "cell0=cellular"])
            .args(stack_flag(stack))
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let cli = &mut cli.0;
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
    assert!(running.contains(&format!("stack={stack:?}")), "the CLI chose the {stack:?} stack: {running}");
    let link = usable_addresses("tun1");
    assert!(link.contains("172.19.0.5/30") && link.contains("fdfe::5/126"), "{link}");

    for (address, from) in
        [(server(server::PEER), Link::Wifi.client_v4()), (server_v6(server::PEER), Link::Wifi.client_v6())]
    {
        let mut stream = connect_to(address).unwrap();
        let local = stream.local_addr().unwrap().ip();
        assert!(
            ["172.19.0.5", "fdfe::5"].contains(&local.to_string().as_str()),
            "the app's side is the tunnel: {local}"
        );
        let mut line = String::new();
        stream.read_to_string(&mut line).unwrap();
        assert_eq!(line.trim(), format!("peer={from}"));
    }
    // 1 MiB echoed, the app half-closes first: every byte back, then the server's FIN.
    let sent = pattern(1 << 20, 11);
    let echoed = echo_app_fin_first(&sent).unwrap();
    assert!(echoed == sent, "echo differs: {} bytes back of {}", echoed.len(), sent.len());
    let socket = UdpSocket::bind("0.0.0.0:0").unwrap();
    let (answer, from) = udp_roundtrip(&socket, b"through the CLI", server(server::UDP_ECHO));
    assert_eq!((&answer[..], from), (&b"through the CLI"[..], server(server::UDP_ECHO)));

    // SAFETY: kill with a pid this test spawned.
    assert_eq!(unsafe { libc::kill(cli.id() as libc::pid_t, libc::SIGINT) }, 0);
    let status = cli.wait().unwrap();
    let log = log.join().unwrap();
    assert!(status.success(), "{status}: {log:?}");
    let gone = Command::new("ip").args(["link", "show", "tun1"]).output().unwrap();
    assert!(!gone.status.success(), "tun1 still exists after netswitch stopped");
    println!(
        "netswitch tun ({stack:?}): v4 and v6 TCP from wifi0, 1 MiB echoed with a half-close, UDP \
         echoed, tun1 gone after SIGINT"
    );
}

/// A UDP flood from many app sources is bounded: at most `max_sockets` sessions (outbound
/// sockets) exist, every datagram past it is dropped and counted, and the sessions that exist
/// keep working.
#[test]
fn tun_udp_sessions_are_capped_and_drops_counted() {
    if role().as_deref() != Some("device") {
        return run_in_namespace("tun_udp_sessions_are_capped_and_drops_counted");
    }
    udp_sessions_are_capped(Stack::System);
}

/// The body of [`tun_udp_sessions_are_capped_and_drops_counted`], TCP ending in `stack`.
pub(crate) fn udp_sessions_are_capped(stack: Stack) {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    runtime.block_on(async {
        let device = Device::up_with(|settings| {
            settings.udp.max_sockets = 4;
            settings.stack = stack;
        })
        .await;
        let (answer, answered) = blocking(|| {
            let first = UdpSocket::bind("0.0.0.0:0").unwrap();
            udp_roundtrip(&first, b"first", server(server::UDP_ECHO));
            let others: Vec<UdpSocket> = (0..40).map(|_| UdpSocket::bind("0.0.0.0:0").unwrap()).collect();
            for socket in &others {
                socket.send_to(b"flood", server(server::UDP_ECHO)).unwrap();
            }
            // The first source's session still answers.
            let (answer, _) = udp_roundtrip(&first, b"still there", server(server::UDP_ECHO));
            // The admitted sources' answers: waited for together, up to 5 s.
            let deadline = Instant::now() + TIMEOUT;
            let mut answered = vec![false; others.len()];
            while answered.iter().filter(|a| **a).count() < 3 && Instant::now() < deadline {
                for (socket, answered) in others.iter().zip(answered.iter_mut()) {
                    socket.set_nonblocking(true).unwrap();
                    *answered |= socket.recv_from(&mut [0u8; 64]).is_ok();
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            // Anything more would have arrived by now too.
            std::thread::sleep(Duration::from_millis(200));
            for (socket, answered) in others.iter().zip(answered.iter_mut()) {
                *answered |= socket.recv_from(&mut [0u8; 64]).is_ok();
            }
            let answered = answered.iter().filter(|a| **a).count();
            (answer, answered)
        })
        .await;
        assert_eq!(answer, b"still there");
        let counters = device.tun.counters();
        println!("{stack:?}: 40 new sources with max_sockets 4: {answered} answered; {counters:?}");
        assert_eq!(answered, 3, "three more sessions fit under the cap of 4");
        assert_eq!(device.tun.udp_sessions(), 4);
        assert_eq!(counters.dropped_udp, 37, "every refused datagram is counted");
        device.tun.stop();
    });
}

/// File descriptors of this process that are not pipes (the relay keeps a few splice pipes per
/// runtime thread on purpose: `netswitch::relay::KEPT_PIPES`).
fn non_pipe_fds() -> usize {
    let Ok(entries) = std::fs::read_dir("/proc/self/fd") else { return 0 };
    entries
        .flatten()
        .filter(|entry| {
            std::fs::read_link(entry.path())
                .is_ok_and(|target| !target.to_string_lossy().starts_with("pipe:"))
        })
        .count()
}

/// 300 connections through the tunnel open at once, each echoing, then closed: every NAT entry
/// leaves, the manager is empty, and the process has the file descriptors it had before.
#[test]
fn tun_many_connections_leave_nothing_behind() {
    if role().as_deref() != Some("device") {
        return run_in_namespace("tun_many_connections_leave_nothing_behind");
    }
    many_connections(Stack::System);
}

/// The body of [`tun_many_connections_leave_nothing_behind`], TCP ending in `stack`.
pub(crate) fn many_connections(stack: Stack) {
    const CONNECTIONS: usize = 300;
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    runtime.block_on(async {
        let device = Device::up_with(|settings| settings.stack = stack).await;
        // Warm up (the first connection through a fresh link, lazily built state), then measure.
        blocking(|| connect(server::PEER).unwrap().read_to_end(&mut Vec::new()).unwrap()).await;
        device.wait_idle().await;
        let fds = non_pipe_fds();
        let mut streams = Vec::new();
        for _ in 0..CONNECTIONS {
            let stream = tokio::time::timeout(TIMEOUT, tokio::net::TcpStream::connect(server(server::ECHO)))
                .await
                .unwrap()
                .unwrap();
            streams.push(stream);
        }
        for (i, stream) in streams.iter_mut().enumerate() {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let message = format!("connection {i:04}");
            stream.write_all(message.as_bytes()).await.unwrap();
            let mut echoed = vec![0u8; message.len()];
            tokio::time::timeout(TIMEOUT, stream.read_exact(&mut echoed)).await.unwrap().unwrap();
            assert_eq!(echoed, message.as_bytes());
        }
        let peak = device.tun.nat_entries();
        assert_eq!(peak, CONNECTIONS, "one NAT entry per open connection");
        assert_eq!(device.netswitch.manager().len(), CONNECTIONS);
        drop(streams);
        device.wait_idle().await;
        assert_eq!(device.netswitch.manager().len(), 0);
        // Sockets closing in the background may take a moment to leave the fd table.
        let deadline = Instant::now() + TIMEOUT;
        while non_pipe_fds() > fds && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(non_pipe_fds(), fds, "file descriptors back to the baseline");
        let counters = device.tun.counters();
        println!(
            "{stack:?}: {CONNECTIONS} connections at once: NAT entries {peak} -> 0, fds back to {fds}; {counters:?}"
        );
        // (Over the packet flow `dropped_write` is the flow's output queue: see the helper.)
        let write_drops = flow_host::device_write_drops(&device, &counters).await;
        assert_eq!(counters.dropped_no_flow + counters.dropped_nat_full + write_drops, 0, "{counters:?}");
        device.tun.stop();
    });
}
