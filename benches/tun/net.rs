//! The benchmark's topology, like a phone's: this process moves into a new "device" network
//! namespace with a `wifi0` veth to the server's namespace (10.200.9.1, its default route via
//! wifi0), and `netswitch tun` runs in it with tun0 172.19.0.1/30 routing 10.200.9.0/24 into the
//! tunnel (its own sockets bound to wifi0). The same traffic without the VPN comes from sockets
//! bound to wifi0, which the tunnel's route does not capture. One netswitch runs at a time, in
//! one [`Mode`] (stack and offloads); sections restart it to measure the next.

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use socket2::{Domain, Socket, Type};

use crate::common::child::{netswitch_binary, RelayProcess};

/// The tunnel's MTU (as the tests and sing-box's figures in issue 15 use).
pub const TUN_MTU: &str = "9000";

/// One way from the app to the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Path {
    /// Straight over the veth (socket bound to wifi0): no VPN.
    Direct,
    /// Through tun0 and `netswitch tun`.
    Tun,
}

impl Path {
    /// Column name.
    pub fn name(self) -> &'static str {
        match self {
            Path::Direct => "no VPN",
            Path::Tun => "netswitch tun",
        }
    }

    fn bind(self, socket: &Socket) -> std::io::Result<()> {
        match self {
            Path::Direct => socket.bind_device(Some(b"wifi0")),
            Path::Tun => Ok(()),
        }
    }

    /// A TCP connection to `to` over this path (blocking, 10 s timeouts).
    pub fn connect(self, to: SocketAddr) -> Result<TcpStream, String> {
        let socket = Socket::new(Domain::IPV4, Type::STREAM, None).map_err(|e| format!("socket: {e}"))?;
        self.bind(&socket).map_err(|e| format!("bind to wifi0: {e}"))?;
        socket
            .connect_timeout(&to.into(), Duration::from_secs(10))
            .map_err(|e| format!("connect {to} ({}): {e}", self.name()))?;
        let stream: TcpStream = socket.into();
        stream.set_read_timeout(Some(Duration::from_secs(10))).map_err(|e| e.to_string())?;
        stream.set_write_timeout(Some(Duration::from_secs(10))).map_err(|e| e.to_string())?;
        Ok(stream)
    }

    /// A UDP socket for this path (4 MiB buffers, unconnected).
    pub fn udp(self) -> Result<UdpSocket, String> {
        let socket = Socket::new(Domain::IPV4, Type::DGRAM, None).map_err(|e| format!("socket: {e}"))?;
        self.bind(&socket).map_err(|e| format!("bind to wifi0: {e}"))?;
        let _ = socket.set_recv_buffer_size(4 << 20);
        let _ = socket.set_send_buffer_size(4 << 20);
        socket.bind(&SocketAddr::from(([0, 0, 0, 0], 0)).into()).map_err(|e| format!("bind: {e}"))?;
        Ok(socket.into())
    }
}

fn run(program: &str, args: &[&str]) -> Result<(), String> {
    let output = Command::new(program).args(args).output().map_err(|e| format!("{program}: {e}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!("`{program} {}`: {}", args.join(" "), String::from_utf8_lossy(&output.stderr).trim()))
    }
}

/// Why this machine cannot run the benchmark, if it cannot.
pub fn cannot_run() -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("needs root (network namespaces and a TUN device)".into());
    }
    if !std::path::Path::new("/dev/net/tun").exists() {
        return Some("/dev/net/tun does not exist".into());
    }
    if run("ip", &["-V"]).is_err() || run("nsenter", &["--version"]).is_err() {
        return Some("`ip` or `nsenter` is not available".into());
    }
    if let Err(e) = netswitch_binary() {
        return Some(e);
    }
    None
}

/// How `netswitch tun` runs: its TCP stack, and whether tun0 has the device's offloads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// The kernel's TCP (NAT to a listener), tun0 with its offloads: netswitch's default.
    SystemOffload,
    /// The kernel's TCP, tun0 without offloads (`--no-offload`): one packet per read and write.
    SystemNoOffload,
    /// smoltcp inside netswitch (`--stack userspace`), tun0 with its offloads (64 KiB segments
    /// both ways).
    Userspace,
    /// smoltcp, tun0 without offloads (`--stack userspace --no-offload`): what an iOS packet
    /// flow or an Android `VpnService` fd (no virtio-net header) gets.
    UserspaceNoOffload,
}

impl Mode {
    /// Column name.
    pub fn name(self) -> &'static str {
        match self {
            Mode::SystemOffload => "system",
            Mode::SystemNoOffload => "system no offload",
            Mode::Userspace => "userspace",
            Mode::UserspaceNoOffload => "userspace no offload",
        }
    }

    /// The `--stack` value this mode belongs to.
    pub fn stack(self) -> &'static str {
        match self {
            Mode::SystemOffload | Mode::SystemNoOffload => "system",
            Mode::Userspace | Mode::UserspaceNoOffload => "userspace",
        }
    }

    /// Of `modes`, those of `stack` (all of them when `None`), in order.
    pub fn of(modes: &[Mode], stack: Option<&str>) -> Vec<Mode> {
        modes.iter().copied().filter(|m| stack.is_none_or(|s| m.stack() == s)).collect()
    }

    /// The descriptors netswitch holds per idle TCP connection: the accepted socket and the
    /// outbound one with the system stack; the outbound one only with the userspace stack.
    pub fn fds_per_connection(self) -> usize {
        match self {
            Mode::SystemOffload | Mode::SystemNoOffload => 2,
            Mode::Userspace | Mode::UserspaceNoOffload => 1,
        }
    }

    fn args(self) -> &'static [&'static str] {
        match self {
            Mode::SystemOffload => &[],
            Mode::SystemNoOffload => &["--no-offload"],
            Mode::Userspace => &["--stack", "userspace"],
            Mode::UserspaceNoOffload => &["--stack", "userspace", "--no-offload"],
        }
    }
}

/// The running topology; dropping it stops netswitch and the server.
pub struct Net {
    server: Option<RelayProcess>,
    netswitch: Child,
    log: mpsc::Receiver<String>,
    mode: Mode,
    /// Log lines of the netswitch runs stopped since [`Net::new_log_lines`] last ran.
    stopped: Vec<String>,
    /// The section running now ([`Net::begin`]).
    section: &'static str,
    /// The sections that used the running netswitch (none: fresh).
    served: Vec<&'static str>,
}

/// Starts `netswitch tun` in `mode` and waits until it runs.
fn start_netswitch(mode: Mode) -> Result<(Child, mpsc::Receiver<String>), String> {
    let binary = netswitch_binary()?;
    let mut command = Command::new(&binary);
    command.args(["tun", "--name", "tun0", "--address", "172.19.0.1/30", "--route", "10.200.9.0/24"]).args([
        "--mtu",
        TUN_MTU,
        "--interface-type",
        "wifi0=wifi",
    ]);
    command.args(mode.args());
    let mut netswitch = command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("start {} tun: {e}", binary.display()))?;
    let stderr = netswitch.stderr.take().ok_or("netswitch stderr not captured")?;
    let (tx, log) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut startup = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match log.recv_timeout(left) {
            Ok(line) if line.contains("tunnel running") => return Ok((netswitch, log)),
            Ok(line) => startup.push(line),
            Err(_) => {
                let _ = netswitch.kill();
                let _ = netswitch.wait();
                return Err(format!("netswitch tun did not start: {}", startup.join(" | ")));
            }
        }
    }
}

/// The non-zero fields of the counters netswitch logs as it stops (`counters=TunCounters { .. }`).
fn non_zero_counters(line: &str) -> String {
    let fields = line.split_once("counters=TunCounters {").map_or("", |(_, rest)| rest);
    let fields = fields.split('}').next().unwrap_or_default();
    let kept: Vec<&str> =
        fields.split(',').map(str::trim).filter(|f| !f.is_empty() && !f.ends_with(": 0")).collect();
    kept.join(", ")
}

/// Stops a `netswitch tun` with SIGINT (it removes tun0 and its routes).
fn stop_netswitch(netswitch: &mut Child) -> Result<(), String> {
    // SAFETY: kill with the pid of a child this process started.
    unsafe { libc::kill(netswitch.id() as libc::pid_t, libc::SIGINT) };
    let status = netswitch.wait().map_err(|e| format!("wait for netswitch: {e}"))?;
    if !status.success() {
        return Err(format!("netswitch tun exited with {status}"));
    }
    Ok(())
}

impl Net {
    /// Moves this process into a new network namespace and builds the topology with netswitch
    /// in `mode` (call it before any other thread exists: a namespace change is per thread).
    pub fn up(mode: Mode) -> Result<Net, String> {
        crate::common::procfs::raise_open_files_limit()?;
        // SAFETY: unshare reads its flag only.
        if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
            return Err(format!("unshare(CLONE_NEWNET): {}", std::io::Error::last_os_error()));
        }
        run("ip", &["link", "set", "lo", "up"])?;
        // Short connections by the thousand from one address: reuse TIME_WAIT ports.
        for (key, value) in [("ipv4/tcp_tw_reuse", "1"), ("ipv4/ip_local_port_range", "10000 65000")] {
            std::fs::write(format!("/proc/sys/net/{key}"), value)
                .map_err(|e| format!("sysctl {key}: {e}"))?;
        }
        let server = RelayProcess::baseline("tun-server", &[], None)?;
        let pid = server.pid().to_string();
        run("ip", &["link", "add", "wifi0", "type", "veth", "peer", "name", "wifi0-peer", "netns", &pid])?;
        run("ip", &["addr", "add", "10.200.1.2/24", "dev", "wifi0"])?;
        run("ip", &["link", "set", "wifi0", "up"])?;
        let inside = |args: &[&str]| {
            let mut all = vec!["-t", pid.as_str(), "-n", "--", "ip"];
            all.extend_from_slice(args);
            run("nsenter", &all)
        };
        inside(&["addr", "add", "10.200.1.1/24", "dev", "wifi0-peer"])?;
        inside(&["link", "set", "wifi0-peer", "up"])?;
        run("ip", &["route", "add", "default", "via", "10.200.1.1", "dev", "wifi0"])?;
        let (netswitch, log) = start_netswitch(mode)?;
        let net = Net {
            server: Some(server),
            netswitch,
            log,
            mode,
            stopped: Vec::new(),
            section: "",
            served: Vec::new(),
        };
        Ok(net)
    }

    /// The `netswitch tun` process id.
    pub fn netswitch_pid(&self) -> u32 {
        self.netswitch.id()
    }

    /// The server process id (its network namespace's counters are under /proc/PID/net).
    pub fn server_pid(&self) -> Result<u32, String> {
        self.server.as_ref().map(RelayProcess::pid).ok_or_else(|| String::from("the server is stopped"))
    }

    /// Says which section runs now (netswitch's log lines name the sections each run served).
    pub fn begin(&mut self, section: &'static str) {
        self.section = section;
    }

    /// netswitch's log lines since the last call (warnings, errors, the counters it logs as it
    /// stops), of the runs stopped since and of the running one, each after the run's mode and
    /// the sections it served.
    fn new_log_lines(&mut self) -> Vec<String> {
        let run = format!("{} for {}", self.mode.name(), self.served.join(", "));
        let running = self.log.try_iter().map(|line| format!("{run}: {line}"));
        let mut lines = std::mem::take(&mut self.stopped);
        lines.extend(running);
        lines
    }

    /// Prints netswitch's log lines since the last call: the counters each stopped run logged
    /// (the non-zero ones), then how many other lines and the first three.
    pub fn print_log(&mut self) {
        let (counters, lines): (Vec<_>, Vec<_>) =
            self.new_log_lines().into_iter().partition(|l| l.contains("counters="));
        for line in counters {
            let run = line.split(": ").next().unwrap_or_default();
            println!("  netswitch {run} stopped; counters: {}", non_zero_counters(&line));
        }
        if !lines.is_empty() {
            println!(
                "  netswitch wrote {} more log lines, first: {}",
                lines.len(),
                lines[..lines.len().min(3)].join(" | ")
            );
        }
    }

    /// Stops netswitch and starts a fresh one in `mode`.
    fn restart(&mut self, mode: Mode) -> Result<(), String> {
        stop_netswitch(&mut self.netswitch)?;
        // The stderr reader ends with the process: its last lines (the counters) are queued.
        std::thread::sleep(Duration::from_millis(100));
        let old = self.new_log_lines();
        self.stopped = old;
        let (netswitch, log) = start_netswitch(mode)?;
        (self.netswitch, self.log, self.mode) = (netswitch, log, mode);
        self.served.clear();
        Ok(())
    }

    /// Makes netswitch run in `mode` for a section: restarted unless it already runs so.
    pub fn switch(&mut self, mode: Mode) -> Result<(), String> {
        if self.mode != mode {
            self.restart(mode)?;
        }
        self.serve();
        Ok(())
    }

    /// Makes a fresh netswitch run in `mode` for a section: restarted unless it runs so and no
    /// section has used it yet.
    pub fn fresh(&mut self, mode: Mode) -> Result<(), String> {
        if self.mode != mode || !self.served.is_empty() {
            self.restart(mode)?;
        }
        self.serve();
        Ok(())
    }

    fn serve(&mut self) {
        if !self.served.contains(&self.section) {
            self.served.push(self.section);
        }
    }

    /// Stops netswitch (SIGINT: it removes tun0) and the server.
    pub fn down(mut self) -> Result<(), String> {
        let stopped = stop_netswitch(&mut self.netswitch);
        // Its counters, logged as it stops (packets, and drops by reason).
        std::thread::sleep(Duration::from_millis(100));
        self.print_log();
        let server = self.server.take().map_or(Ok(()), RelayProcess::stop);
        stopped.and(server)
    }
}

impl Drop for Net {
    /// A benchmark that failed half-way leaves no netswitch behind.
    fn drop(&mut self) {
        if let Ok(None) = self.netswitch.try_wait() {
            let _ = self.netswitch.kill();
            let _ = self.netswitch.wait();
        }
    }
}
