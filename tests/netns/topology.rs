//! Simulated Wi-Fi + cellular uplinks in network namespaces, modelled on
//! `shared/tools/netns-sim.sh` but needing no `ip netns` (so it works inside `unshare -rn`):
//!
//! ```text
//!   this process's netns:   wifi0 10.200.1.2/24 2001:db8:1::2/64   cell0 10.200.2.2/24 2001:db8:2::2/64
//!                              | veth                                 | veth
//!   server netns (child):   wifi0-peer 10.200.1.1 2001:db8:1::1     cell0-peer 10.200.2.1 2001:db8:2::1
//!                           "internet" host 10.200.9.1 and 2001:db8:9::1 on its lo
//!   routes to the internet host: via wifi0 (metric 100, the unbound choice), via cell0 (metric 200)
//! ```
//!
//! The caller must already be in a fresh network namespace (see `main.rs`). The server is a
//! child process started with `unshare -n`; its namespace lives as long as it does. It answers
//! each TCP connection on port [`PORT`] with `peer=<source ip>\n`.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// TCP port of the server (v4 and v6) inside its namespace.
pub const PORT: u16 = 7000;
/// TCP port of the server's echo service: first `peer=<source ip>\n`, then echoes until EOF.
pub const ECHO_PORT: u16 = 7001;
/// The server's IPv4 address (reachable over either link).
pub const SERVER_V4: &str = "10.200.9.1";
/// The server's IPv6 address.
pub const SERVER_V6: &str = "2001:db8:9::1";

/// One uplink: its client-side name and its number in the address plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Link {
    /// `wifi0`, 10.200.1.0/24.
    Wifi,
    /// `cell0`, 10.200.2.0/24.
    Cell,
}

impl Link {
    /// Client-side interface name.
    pub fn name(self) -> &'static str {
        match self {
            Link::Wifi => "wifi0",
            Link::Cell => "cell0",
        }
    }

    fn number(self) -> u8 {
        match self {
            Link::Wifi => 1,
            Link::Cell => 2,
        }
    }

    /// The client's IPv4 address on this link.
    pub fn client_v4(self) -> String {
        format!("10.200.{}.2", self.number())
    }

    /// The client's IPv6 address on this link.
    pub fn client_v6(self) -> String {
        format!("2001:db8:{}::2", self.number())
    }
}

/// The running topology; dropping it kills the server (and with it the server namespace).
pub struct Topology {
    server: Child,
}

/// Runs a command, failing with its output when it does not succeed.
pub fn run(program: &str, args: &[&str]) -> Result<(), String> {
    let output = Command::new(program).args(args).output().map_err(|e| format!("{program}: {e}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "`{program} {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

impl Topology {
    /// Starts the server (`server_command` must run [`serve`] in a new network namespace, e.g.
    /// `unshare -n -- <test binary> ...`) and builds both links and their routes.
    pub fn up(server_command: Command) -> Result<Topology, String> {
        let mut command = server_command;
        command.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::inherit());
        let mut server = command.spawn().map_err(|e| format!("start server: {e}"))?;
        let stdout = server.stdout.take().ok_or("server has no stdout")?;
        let (ready_tx, ready_rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line.contains("listening") {
                    let _ = ready_tx.send(());
                }
            }
        });
        let topology = Topology { server };
        ready_rx.recv_timeout(Duration::from_secs(10)).map_err(|_| "server did not start within 10 s")?;
        let pid = topology.server.id().to_string();
        let in_server = |args: &[&str]| {
            let mut full = vec!["-t", pid.as_str(), "-n", "--", "ip"];
            full.extend_from_slice(args);
            run("nsenter", &full)
        };
        run("ip", &["link", "set", "lo", "up"])?;
        // Keep IPv6 addresses across `link down`/`up` (the default flushes them), before the
        // links exist so `default` applies to them.
        for conf in ["all", "default"] {
            let path = format!("/proc/sys/net/ipv6/conf/{conf}/keep_addr_on_down");
            std::fs::write(&path, "1").map_err(|e| format!("write {path}: {e}"))?;
        }
        in_server(&["link", "set", "lo", "up"])?;
        in_server(&["addr", "add", &format!("{SERVER_V4}/32"), "dev", "lo"])?;
        in_server(&["addr", "add", &format!("{SERVER_V6}/128"), "dev", "lo"])?;
        for link in [Link::Wifi, Link::Cell] {
            let (name, n) = (link.name(), link.number());
            let peer = format!("{name}-peer");
            run("ip", &["link", "add", name, "type", "veth", "peer", "name", &peer, "netns", &pid])?;
            run("ip", &["addr", "add", &format!("10.200.{n}.2/24"), "dev", name])?;
            run("ip", &["addr", "add", &format!("2001:db8:{n}::2/64"), "dev", name, "nodad"])?;
            in_server(&["addr", "add", &format!("10.200.{n}.1/24"), "dev", &peer])?;
            in_server(&["addr", "add", &format!("2001:db8:{n}::1/64"), "dev", &peer, "nodad"])?;
            run("ip", &["link", "set", name, "up"])?;
            in_server(&["link", "set", &peer, "up"])?;
            topology.add_routes(link)?;
        }
        Ok(topology)
    }

    /// (Re)adds the routes to the server host through `link` (the kernel drops them when the
    /// link goes down).
    pub fn add_routes(&self, link: Link) -> Result<(), String> {
        let (name, n) = (link.name(), link.number());
        let metric = (u32::from(n) * 100).to_string();
        run(
            "ip",
            &[
                "route",
                "replace",
                "10.200.9.0/24",
                "via",
                &format!("10.200.{n}.1"),
                "dev",
                name,
                "metric",
                &metric,
            ],
        )?;
        run(
            "ip",
            &[
                "-6",
                "route",
                "replace",
                "2001:db8:9::/64",
                "via",
                &format!("2001:db8:{n}::1"),
                "dev",
                name,
                "metric",
                &metric,
            ],
        )
    }

    /// Makes the server silently drop everything it would send back over `link` (a blackhole
    /// route for the client's addresses in the server namespace): connects over that link get no
    /// answer, like a Wi-Fi that drops every packet (this kernel has no netem).
    pub fn set_blackhole(&self, link: Link, on: bool) -> Result<(), String> {
        let pid = self.server.id().to_string();
        let action = if on { "add" } else { "del" };
        let v4 = format!("{}/32", link.client_v4());
        let v6 = format!("{}/128", link.client_v6());
        run("nsenter", &["-t", &pid, "-n", "--", "ip", "route", action, "blackhole", &v4])?;
        run("nsenter", &["-t", &pid, "-n", "--", "ip", "-6", "route", action, "blackhole", &v6])
    }

    /// Sets the client side of `link` administratively up or down.
    pub fn set_link(&self, link: Link, up: bool) -> Result<(), String> {
        run("ip", &["link", "set", link.name(), if up { "up" } else { "down" }])?;
        if up {
            self.add_routes(link)?;
        }
        Ok(())
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        let _ = self.server.kill();
        let _ = self.server.wait();
    }
}

/// The server: listens on `[::]` and `0.0.0.0` port [`PORT`], prints `listening` once ready,
/// answers each connection with `peer=<ip>\n`, and exits when its stdin closes (its parent died).
pub fn serve() {
    use std::io::{Read, Write};
    use std::net::{SocketAddr, TcpListener};

    use socket2::{Domain, Socket, Type};

    let listen = |address: SocketAddr| -> TcpListener {
        let socket = Socket::new(Domain::for_address(address), Type::STREAM, None).expect("server socket");
        if address.is_ipv6() {
            socket.set_only_v6(true).expect("IPV6_V6ONLY");
        }
        socket.set_reuse_address(true).expect("SO_REUSEADDR");
        socket.bind(&address.into()).expect("server bind");
        socket.listen(128).expect("server listen");
        socket.into()
    };
    for address in [SocketAddr::from(([0, 0, 0, 0], PORT)), SocketAddr::from(([0u16; 8], PORT))] {
        let listener = listen(address);
        std::thread::spawn(move || {
            for mut stream in listener.incoming().map_while(Result::ok) {
                if let Ok(peer) = stream.peer_addr() {
                    let _ = stream.write_all(format!("peer={}\n", peer.ip()).as_bytes());
                }
            }
        });
    }
    let echo = listen(SocketAddr::from(([0, 0, 0, 0], ECHO_PORT)));
    std::thread::spawn(move || {
        for mut stream in echo.incoming().map_while(Result::ok) {
            std::thread::spawn(move || {
                if let Ok(peer) = stream.peer_addr() {
                    let _ = stream.write_all(format!("peer={}\n", peer.ip()).as_bytes());
                }
                let mut buf = [0u8; 4096];
                while let Ok(n) = stream.read(&mut buf) {
                    if n == 0 || stream.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            });
        }
    });
    println!("listening {PORT}");
    let _ = std::io::stdout().flush();
    let _ = std::io::stdin().read_to_end(&mut Vec::new());
}
