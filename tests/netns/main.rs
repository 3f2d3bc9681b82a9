//! Real interfaces in network namespaces: a socket bound through netswitch's Linux binder to
//! `cell0` reaches the server from the cellular link's address, one bound to `wifi0` from the
//! Wi-Fi link's, for IPv4 and IPv6; a link that goes down fails bound connects at once while the
//! other link keeps working.
//!
//! How it runs: the test re-executes this binary inside a new network namespace (`unshare -n`
//! as root, `unshare -rn` otherwise), where it builds the topology of `topology.rs` and checks.
//! When neither works (no root, no user namespaces, no `unshare`/`nsenter`/`ip`), it prints why
//! and skips.

mod dns;
#[path = "../common/dns_responder.rs"]
mod dns_responder;
mod strategy;
mod topology;

use std::io::{BufRead, BufReader};
use std::net::{IpAddr, SocketAddr};
use std::process::Command;
use std::time::{Duration, Instant};

use netswitch::network::{NetworkInterface, NetworkType};
use netswitch::platform::linux::LinuxBinder;
use netswitch::platform::{bind_socket, Binding};
use socket2::{Domain, Protocol, Socket, Type};
use topology::{Link, Topology, PORT, SERVER_V4, SERVER_V6};

/// Which part of the test this process plays (set only on the processes the test starts).
const ROLE: &str = "NETSWITCH_NETNS_TEST_ROLE";
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

fn role() -> Option<String> {
    std::env::var(ROLE).ok()
}

/// Entry point of the server process (see `topology::serve`); does nothing when run directly.
#[test]
#[ignore = "entry point of the server process the netns tests start"]
fn netns_server_entry() {
    if role().as_deref() == Some("server") {
        topology::serve();
    }
}

/// The `unshare` flags that give this process a new network namespace, or why there is none.
fn namespace_flags() -> Result<&'static [&'static str], String> {
    for tool in [["ip", "-V"], ["nsenter", "--version"]] {
        if !Command::new(tool[0]).arg(tool[1]).output().is_ok_and(|o| o.status.success()) {
            return Err(format!("`{}` is not available", tool[0]));
        }
    }
    // Root (CI) gets a plain network namespace; otherwise a user + network namespace.
    let mut last_error = String::new();
    for flags in [&["-n"][..], &["-r", "-n"][..]] {
        match Command::new("unshare").args(flags).arg("true").output() {
            Ok(output) if output.status.success() => return Ok(flags),
            Ok(output) => last_error = String::from_utf8_lossy(&output.stderr).trim().to_string(),
            Err(error) => return Err(format!("`unshare` is not available: {error}")),
        }
    }
    Err(format!("neither `unshare -n` nor `unshare -rn` works (no root, no user namespaces?): {last_error}"))
}

/// Runs the test named `name` again inside a new network namespace with role "client", or
/// prints why it cannot and returns.
fn run_in_namespace(name: &str) {
    let flags = match namespace_flags() {
        Ok(flags) => flags,
        Err(reason) => {
            eprintln!("skipped {name}: {reason}");
            return;
        }
    };
    let exe = std::env::current_exe().unwrap();
    let output = Command::new("unshare")
        .args(flags)
        .arg("--")
        .arg(exe)
        .args(["--exact", name, "--nocapture", "--test-threads=1"])
        .env(ROLE, "client")
        .output()
        .unwrap();
    println!("{}", String::from_utf8_lossy(&output.stdout));
    eprintln!("{}", String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "{name} failed inside the network namespace (output above)");
}

fn server_command() -> Command {
    let mut command = Command::new("unshare");
    command
        .args(["-n", "--"])
        .arg(std::env::current_exe().unwrap())
        .args(["--exact", "netns_server_entry", "--ignored", "--nocapture", "--test-threads=1"])
        .env(ROLE, "server");
    command
}

fn interface(link: Link, network_type: NetworkType) -> NetworkInterface {
    let index = nix::net::if_::if_nametoindex(link.name()).unwrap();
    NetworkInterface::new(link.name(), index, network_type)
        .with_address(link.client_v4().parse().unwrap(), 24)
        .with_address(link.client_v6().parse().unwrap(), 64)
}

/// Connects to the server through `binder rules` (or unbound) and returns the source address
/// the server saw.
fn peer_seen(via: Option<(&NetworkInterface, bool)>, server: SocketAddr) -> std::io::Result<IpAddr> {
    let socket = Socket::new(Domain::for_address(server), Type::STREAM, Some(Protocol::TCP))?;
    if let Some((interface, is_default)) = via {
        let binding = bind_socket(&LinuxBinder, &socket, interface, server, is_default)?;
        assert_eq!(binding, if is_default { Binding::Protected } else { Binding::Bound });
    }
    socket.connect_timeout(&server.into(), CONNECT_TIMEOUT)?;
    socket.set_read_timeout(Some(CONNECT_TIMEOUT))?;
    let mut line = String::new();
    BufReader::new(std::net::TcpStream::from(socket)).read_line(&mut line)?;
    line.trim().strip_prefix("peer=").and_then(|ip| ip.parse().ok()).ok_or_else(|| {
        std::io::Error::new(std::io::ErrorKind::InvalidData, format!("unexpected server answer {line:?}"))
    })
}

/// The first connect over a fresh link may race IPv6 neighbour discovery: retry for up to 5 s.
fn wait_until_reachable(server: SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while let Err(error) = peer_seen(None, server) {
        assert!(Instant::now() < deadline, "server {server} unreachable over the links: {error}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn bound_sockets_leave_through_their_link() {
    if role().as_deref() != Some("client") {
        return run_in_namespace("bound_sockets_leave_through_their_link");
    }
    let topology = Topology::up(server_command()).unwrap();
    let wifi = interface(Link::Wifi, NetworkType::Wifi);
    let cell = interface(Link::Cell, NetworkType::Cellular);
    for server in [SERVER_V4, SERVER_V6] {
        let server = SocketAddr::new(server.parse().unwrap(), PORT);
        wait_until_reachable(server);
        let (wifi_ip, cell_ip) = if server.is_ipv4() {
            (Link::Wifi.client_v4(), Link::Cell.client_v4())
        } else {
            (Link::Wifi.client_v6(), Link::Cell.client_v6())
        };
        let (wifi_ip, cell_ip): (IpAddr, IpAddr) = (wifi_ip.parse().unwrap(), cell_ip.parse().unwrap());
        // Unbound, the routing table picks Wi-Fi (lower metric): so arriving from the cellular
        // address below is the binder's doing.
        assert_eq!(peer_seen(None, server).unwrap(), wifi_ip, "unbound to {server}");
        assert_eq!(peer_seen(Some((&cell, false)), server).unwrap(), cell_ip, "bound to cell0, {server}");
        assert_eq!(peer_seen(Some((&wifi, false)), server).unwrap(), wifi_ip, "bound to wifi0, {server}");
        // The default (Wi-Fi) is protected, not bound: it still leaves through the default route.
        assert_eq!(peer_seen(Some((&wifi, true)), server).unwrap(), wifi_ip, "default wifi0, {server}");
        println!("{server}: unbound and wifi0 arrive from {wifi_ip}, cell0 from {cell_ip}");
    }

    // Wi-Fi goes down: a socket bound to it fails at once, cellular keeps working.
    topology.set_link(Link::Wifi, false).unwrap();
    let server = SocketAddr::new(SERVER_V4.parse().unwrap(), PORT);
    let started = Instant::now();
    let error = peer_seen(Some((&wifi, false)), server).unwrap_err();
    println!("wifi0 down: bound connect failed after {:?}: {error}", started.elapsed());
    assert_eq!(error.kind(), std::io::ErrorKind::NetworkUnreachable, "{error}");
    assert_eq!(
        peer_seen(Some((&cell, false)), server).unwrap(),
        Link::Cell.client_v4().parse::<IpAddr>().unwrap()
    );
    topology.set_link(Link::Wifi, true).unwrap();
    wait_until_reachable(server);
    assert_eq!(
        peer_seen(Some((&wifi, false)), server).unwrap(),
        Link::Wifi.client_v4().parse::<IpAddr>().unwrap()
    );
}
