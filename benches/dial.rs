//! Dial time to a domain destination on loopback: the per-interface resolver with a cold cache
//! (every dial asks the DNS server), with the cache warm, and the system resolver path
//! (`getaddrinfo` on a bounded thread, glibc asking the same DNS server), against an IP dial (no
//! lookup) in the same run. The DNS server is the tests' hickory-proto responder on
//! 127.0.0.1:53; every dial connects to a listener on 127.0.0.1. IPv4 only, so each lookup is
//! one A query on every path.
//!
//! The system path needs `/etc/resolv.conf` to point at the responder: the benchmark re-runs
//! itself in a new network and mount namespace (`unshare -n -m`, root) with a bind-mounted
//! resolv.conf and nsswitch.conf, so nothing leaves the namespace. Without root it says so and
//! stops. Run: `cargo bench --bench dial`.

#[path = "../tests/common/dns_responder.rs"]
mod dns_responder;

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dns_responder::{Responder, Zone};
use netswitch::dial::direct::{DialSettings, DirectOutbound};
use netswitch::dns::{DnsSettings, Resolvers};
use netswitch::network::state::NetworkState;
use netswitch::network::{DomainStrategy, InterfaceSnapshot, NetworkInterface, NetworkType};
use netswitch::platform::SimulatedBinder;
use netswitch::{Destination, Metadata, Outbound};
use tokio::net::TcpListener;

const NAME: &str = "svc.bench.test";
const DIALS: usize = 2000;
const ROLE: &str = "NETSWITCH_DIAL_BENCH_ROLE";

fn main() {
    // `cargo bench` passes --bench; `cargo test --all-targets` runs this binary without it.
    if !std::env::args().any(|a| a == "--bench") {
        println!("benchmark not run: use `cargo bench --bench dial` (built and started by cargo test only)");
        return;
    }
    if std::env::var(ROLE).is_err() {
        return rerun_in_namespaces();
    }
    setup_namespace();
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    runtime.block_on(measure());
}

/// Dials `metadata` DIALS times through `outbound`; returns (mean, p50, p99) per dial.
async fn time_dials(outbound: &DirectOutbound, metadata: &Metadata) -> (Duration, Duration, Duration) {
    let mut times = Vec::with_capacity(DIALS);
    for _ in 0..DIALS {
        let started = Instant::now();
        let stream = outbound.dial_tcp(metadata).await.expect("dial");
        times.push(started.elapsed());
        drop(stream);
    }
    times.sort();
    let mean = times.iter().sum::<Duration>() / DIALS as u32;
    (mean, times[DIALS / 2], times[DIALS * 99 / 100])
}

async fn measure() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let service = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            drop(stream);
        }
    });
    let dns = Responder::start_on("127.0.0.1:53".parse().unwrap(), Zone::new(NAME, &["127.0.0.1"], &[]))
        .await
        .expect("DNS responder on 127.0.0.1:53");

    let mut settings = DialSettings::default();
    settings.domain_strategy = DomainStrategy::Ipv4Only;
    // One simulated interface on loopback whose DNS server is the responder.
    let mut bench0 =
        NetworkInterface::new("bench0", 1, NetworkType::Wifi).with_address("127.0.0.1".parse().unwrap(), 8);
    bench0.dns_servers = vec![dns.address()];
    let state = Arc::new(NetworkState::new(
        InterfaceSnapshot::new(vec![bench0.clone()], Some(bench0.index)).unwrap(),
    ));
    let per_interface = |cache_capacity: usize| {
        let mut dns_settings = DnsSettings::default();
        dns_settings.cache_capacity = cache_capacity;
        let dns = Arc::new(Resolvers::new(dns_settings));
        DirectOutbound::with_settings(settings.clone())
            .with_networks(state.clone(), Arc::new(SimulatedBinder::new()))
            .with_dns(dns)
    };
    let system = DirectOutbound::with_settings(settings.clone());

    let by_ip = Metadata::new(service.into());
    let by_name = Metadata::new(Destination::domain(NAME, service.port()));
    // Warm up every path once (and check the system path really asks the responder).
    for outbound in [&per_interface(0), &system] {
        outbound.dial_tcp(&by_name).await.expect("warm-up dial");
    }
    let before = dns.seen().len();
    system.dial_tcp(&by_name).await.unwrap();
    assert!(dns.seen().len() > before, "getaddrinfo did not ask the responder (resolv.conf not in effect)");

    println!("dial time on loopback, {DIALS} dials per row, IPv4 only; DNS server: hickory-proto responder on 127.0.0.1:53");
    println!("{:<44} | {:>9} | {:>9} | {:>9} | {:>7}", "path", "mean", "p50", "p99", "vs IP");
    let ip = per_interface(1024);
    let (base, p50, p99) = time_dials(&ip, &by_ip).await;
    let row = |label: &str, (mean, p50, p99): (Duration, Duration, Duration)| {
        println!(
            "{label:<44} | {:>7.1}µs | {:>7.1}µs | {:>7.1}µs | {:>6.2}x",
            mean.as_secs_f64() * 1e6,
            p50.as_secs_f64() * 1e6,
            p99.as_secs_f64() * 1e6,
            mean.as_secs_f64() / base.as_secs_f64()
        );
    };
    row("IP destination (no lookup)", (base, p50, p99));
    let queries = dns.seen().len();
    row("domain, per-interface resolver, cache warm", time_dials(&ip, &by_name).await);
    let warm_queries = dns.seen().len() - queries;
    let cold = per_interface(0);
    let queries = dns.seen().len();
    row("domain, per-interface resolver, no cache", time_dials(&cold, &by_name).await);
    let cold_queries = dns.seen().len() - queries;
    let queries = dns.seen().len();
    row("domain, system resolver (getaddrinfo thread)", time_dials(&system, &by_name).await);
    let system_queries = dns.seen().len() - queries;
    println!(
        "queries at the DNS server: cache warm {warm_queries} (first dial only), no cache {cold_queries}, system {system_queries}"
    );
}

/// In the namespaces: `lo` up, resolv.conf and nsswitch.conf pointing getaddrinfo at 127.0.0.1.
fn setup_namespace() {
    run("ip", &["link", "set", "lo", "up"]);
    let dir = std::env::temp_dir().join(format!("netswitch-dial-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let resolv = dir.join("resolv.conf");
    std::fs::write(&resolv, "nameserver 127.0.0.1\noptions timeout:2 attempts:1\n").unwrap();
    let nsswitch = dir.join("nsswitch.conf");
    std::fs::write(&nsswitch, "hosts: files dns\n").unwrap();
    for (source, target) in [(&resolv, "/etc/resolv.conf"), (&nsswitch, "/etc/nsswitch.conf")] {
        if Path::new(target).exists() {
            run("mount", &["--bind", source.to_str().unwrap(), target]);
        }
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

/// Re-runs this benchmark as root in a new network + mount namespace, or says why it cannot.
fn rerun_in_namespaces() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        println!("benchmark not run: needs root (unshare -n -m and a bind-mounted resolv.conf)");
        return;
    }
    let status = Command::new("unshare")
        .args(["-n", "-m", "--"])
        .arg(std::env::current_exe().unwrap())
        .arg("--bench")
        .env(ROLE, "child")
        .status();
    match status {
        Ok(status) if status.success() => {}
        Ok(status) => panic!("the benchmark failed inside the namespaces: {status}"),
        Err(error) => println!("benchmark not run: cannot start unshare: {error}"),
    }
}
