//! Name resolution under a DNS server that never answers (issue 11, finding 10): domain dials
//! fail within `connect_timeout` (a SOCKS client gets reply 0x06 in that time), IP and
//! `localhost` dials are unaffected while lookups hang, and the process's thread count stays
//! bounded.
//!
//! How it runs: the test re-executes itself in a new network and mount namespace
//! (`unshare -n -m`, root only). There it brings `lo` up, binds a UDP socket on 127.0.0.1:53 that
//! reads queries and never answers, and bind-mounts a temporary `resolv.conf` (that server, a
//! 30 s timeout) and `nsswitch.conf` (`hosts: files dns`) over the system's, so `getaddrinfo`
//! asks only that socket and nothing leaves the namespace. Without root or `unshare` it prints
//! why and skips.

use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use netswitch::dial::direct::DirectOutbound;
use netswitch::dial::{DialError, FailureKind};
use netswitch::dns::SystemResolver;
use netswitch::inbound::socks::{SocksServer, SocksSettings};
use netswitch::{ConnectionManager, Destination, Metadata, Outbound, RelaySettings};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Set on the child process the test starts inside the namespaces.
const ROLE: &str = "NETSWITCH_RESOLVE_TEST_ROLE";
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Scheduling slack on a loaded machine; without the deadline a lookup takes 30 s here.
const MARGIN: Duration = Duration::from_secs(3);
/// Domain dials started at once: far more than the resolver's bound.
const DOMAIN_DIALS: usize = 100;
/// Threads the process may gain besides the resolver's (tokio's timer, a blocking-pool thread).
const THREAD_SLACK: usize = 4;

#[test]
fn hanging_dns_fails_domain_dials_by_the_deadline() {
    if std::env::var(ROLE).is_err() {
        return run_in_namespaces("hanging_dns_fails_domain_dials_by_the_deadline");
    }
    let dns = DeadDns::start();
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    runtime.block_on(check_deadlines(&dns));
}

/// What the test checks once the namespaces are set up.
async fn check_deadlines(dns: &DeadDns) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            held.push(stream);
        }
    });
    let outbound = Arc::new(DirectOutbound::new(CONNECT_TIMEOUT));
    let baseline = threads();
    let peak = Arc::new(AtomicUsize::new(baseline));
    let sampler = {
        let peak = peak.clone();
        tokio::spawn(async move {
            loop {
                peak.fetch_max(threads(), Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };

    // First wave: many names at once, every lookup hangs.
    let wave = |first: usize| {
        (first..first + DOMAIN_DIALS)
            .map(|i| {
                let outbound = outbound.clone();
                tokio::spawn(async move {
                    let metadata = Metadata::new(Destination::domain(format!("hang-{i}.test"), 443));
                    let started = Instant::now();
                    let result = outbound.dial_tcp(&metadata).await.map(|_| ());
                    (started.elapsed(), result)
                })
            })
            .collect::<Vec<_>>()
    };
    let first_wave = wave(0);
    // While the lookups hang: IP and localhost dials connect.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let resolver = SystemResolver::shared();
    let in_flight = resolver.in_flight();
    assert_eq!(in_flight, resolver.limit(), "the hanging lookups hold every slot");
    let mut slowest_ip = Duration::ZERO;
    for _ in 0..20 {
        let started = Instant::now();
        outbound.dial_tcp(&Metadata::new(server.into())).await.expect("IP dial while lookups hang");
        slowest_ip = slowest_ip.max(started.elapsed());
    }
    let started = Instant::now();
    let local = Metadata::new(Destination::domain("localhost", server.port()));
    outbound.dial_tcp(&local).await.expect("localhost dial while lookups hang");
    let localhost_took = started.elapsed();
    let (socks_code, socks_took) = socks_connect_to_hanging_name(outbound.clone()).await;
    let first = collect(first_wave).await;
    assert!(dns.queries() > 0, "the lookups reached the dead DNS server (else they did not hang)");

    // Second wave: the first wave's threads are still blocked in getaddrinfo (30 s), so these
    // wait for a slot and fail by their deadline too, without new threads.
    let second = collect(wave(DOMAIN_DIALS)).await;
    let peak = peak.load(Ordering::SeqCst);
    sampler.abort();

    println!(
        "connect_timeout {CONNECT_TIMEOUT:?}; {DOMAIN_DIALS} domain dials per wave; resolver bound {}",
        resolver.limit()
    );
    println!(
        "wave 1 (lookups hang): failed after {:?}..{:?}; wave 2 (no free slot): {:?}..{:?}",
        first.0, first.1, second.0, second.1
    );
    println!("while lookups hung: 20 IP dials, slowest {slowest_ip:?}; localhost dial {localhost_took:?}");
    println!("SOCKS CONNECT to a hanging name: reply {socks_code:#04x} after {socks_took:?}");
    println!(
        "threads: {baseline} before, peak {peak}, lookups in flight {in_flight}; queries at the dead server {}",
        dns.queries()
    );
    assert!(
        peak <= baseline + resolver.limit() + THREAD_SLACK,
        "thread count grew from {baseline} to {peak} (bound {} + {THREAD_SLACK})",
        resolver.limit()
    );
}

/// A SOCKS5 CONNECT to a name nobody answers for: the client gets its reply (0x06, timed out)
/// within the deadline. Returns the reply code and how long it took.
async fn socks_connect_to_hanging_name(outbound: Arc<DirectOutbound>) -> (u8, Duration) {
    let manager = Arc::new(ConnectionManager::new(RelaySettings::default()));
    let mut settings = SocksSettings::default();
    settings.listen = "127.0.0.1:0".parse().unwrap();
    let server = SocksServer::start(settings, manager, outbound).await.unwrap();
    let started = Instant::now();
    let mut client = tokio::net::TcpStream::connect(server.local_addr()).await.unwrap();
    client.write_all(b"\x05\x01\x00\x05\x01\x00\x03\x0fhang-socks.test\x01\xbb").await.unwrap();
    let mut replies = [0u8; 12];
    client.read_exact(&mut replies).await.unwrap();
    let took = started.elapsed();
    assert_eq!(replies[..2], [5, 0], "method reply");
    assert_eq!(replies[3], 0x06, "reply to a CONNECT whose name did not resolve in time");
    assert!(took <= CONNECT_TIMEOUT + MARGIN, "SOCKS reply after {took:?}");
    (replies[3], took)
}

/// Awaits a wave of dials; each must fail as timed out within the deadline. Returns the fastest
/// and slowest failure.
async fn collect(
    wave: Vec<tokio::task::JoinHandle<(Duration, Result<(), DialError>)>>,
) -> (Duration, Duration) {
    let (mut fastest, mut slowest) = (Duration::MAX, Duration::ZERO);
    for task in wave {
        let (elapsed, result) = task.await.unwrap();
        let error = result.expect_err("a name nobody answers for cannot connect");
        assert!(matches!(error, DialError::Resolve { .. }), "{error}");
        assert_eq!(error.kind(), FailureKind::TimedOut, "{error}");
        assert!(elapsed <= CONNECT_TIMEOUT + MARGIN, "failed after {elapsed:?}: {error}");
        fastest = fastest.min(elapsed);
        slowest = slowest.max(elapsed);
    }
    (fastest, slowest)
}

/// The process's thread count (`Threads:` in /proc/self/status).
fn threads() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("Threads:")).unwrap();
    line["Threads:".len()..].trim().parse().unwrap()
}

/// A DNS server on 127.0.0.1:53 that counts queries and never answers, with `resolv.conf` and
/// `nsswitch.conf` pointing `getaddrinfo` at it (bind mounts, undone with the namespace).
struct DeadDns {
    queries: Arc<AtomicUsize>,
    dir: PathBuf,
}

impl DeadDns {
    fn start() -> DeadDns {
        run("ip", &["link", "set", "lo", "up"]);
        let dir = scratch_dir();
        let resolv = dir.join("resolv.conf");
        std::fs::write(&resolv, "nameserver 127.0.0.1\noptions timeout:30 attempts:1\n").unwrap();
        let nsswitch = dir.join("nsswitch.conf");
        std::fs::write(&nsswitch, "hosts: files dns\n").unwrap();
        bind_mount(&resolv, Path::new("/etc/resolv.conf"));
        bind_mount(&nsswitch, Path::new("/etc/nsswitch.conf"));
        let socket = UdpSocket::bind("127.0.0.1:53").unwrap();
        let queries = Arc::new(AtomicUsize::new(0));
        let counter = queries.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 1500];
            while socket.recv_from(&mut buf).is_ok() {
                counter.fetch_add(1, Ordering::SeqCst);
            }
        });
        DeadDns { queries, dir }
    }

    fn queries(&self) -> usize {
        self.queries.load(Ordering::SeqCst)
    }
}

impl Drop for DeadDns {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn scratch_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("netswitch-resolve-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Mounts `source` over `target` in this mount namespace. A missing `target` is left alone:
/// glibc's defaults (nameserver 127.0.0.1, DNS for hosts) already lead to the dead server.
fn bind_mount(source: &Path, target: &Path) {
    if target.exists() {
        run("mount", &["--bind", source.to_str().unwrap(), target.to_str().unwrap()]);
    }
}

fn run(program: &str, args: &[&str]) {
    let output = Command::new(program).args(args).output().unwrap();
    assert!(
        output.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&output.stderr).trim()
    );
}

/// Re-runs `name` as root in a new network + mount namespace, or prints why it cannot.
fn run_in_namespaces(name: &str) {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped {name}: needs root (unshare -n -m and bind mounts over /etc)");
        return;
    }
    for tool in [["ip", "-V"], ["mount", "--version"], ["unshare", "--version"]] {
        if !Command::new(tool[0]).arg(tool[1]).output().is_ok_and(|o| o.status.success()) {
            eprintln!("skipped {name}: `{}` is not available", tool[0]);
            return;
        }
    }
    match Command::new("unshare").args(["-n", "-m", "true"]).output() {
        Ok(output) if output.status.success() => {}
        Ok(output) => {
            let reason = String::from_utf8_lossy(&output.stderr);
            eprintln!("skipped {name}: `unshare -n -m` does not work here: {}", reason.trim());
            return;
        }
        Err(error) => {
            eprintln!("skipped {name}: cannot run unshare: {error}");
            return;
        }
    }
    let output = Command::new("unshare")
        .args(["-n", "-m", "--"])
        .arg(std::env::current_exe().unwrap())
        .args(["--exact", name, "--nocapture", "--test-threads=1"])
        .env(ROLE, "child")
        .output()
        .unwrap();
    println!("{}", String::from_utf8_lossy(&output.stdout));
    eprintln!("{}", String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "{name} failed inside the namespaces (output above)");
}
