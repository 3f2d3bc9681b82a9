//! The FFI manager's lifecycle driven like a careless host: managers created and dropped over
//! and over (each with a subscription, a SOCKS server, a tunnel and a live connection), handles
//! kept past their manager, dropped on other threads. Nothing may leak threads or descriptors.
//! Loopback only. One test per file: it counts the process's threads and descriptors.

use std::os::fd::OwnedFd;
use std::os::unix::net::UnixDatagram;
use std::sync::Arc;
use std::time::{Duration, Instant};

use netswitch::ffi::config::NetswitchConfig;
use netswitch::ffi::network::{InterfaceSnapshot, NetworkInterface, NetworkType};
use netswitch::ffi::types::{ClosedConnection, ConnectionInfo, LogRecord};
use netswitch::ffi::{ConnectionManager, EventListener, NetswitchError, TunOptions};

struct Quiet;

impl EventListener for Quiet {
    fn on_connection_opened(&self, _: ConnectionInfo) -> Result<(), NetswitchError> {
        Ok(())
    }
    fn on_connection_closed(&self, _: ClosedConnection) -> Result<(), NetswitchError> {
        Ok(())
    }
    fn on_network_changed(&self, _: netswitch::ffi::network::NetworkChange) -> Result<(), NetswitchError> {
        Ok(())
    }
    fn on_log(&self, _: Vec<LogRecord>, _: u64) -> Result<(), NetswitchError> {
        Ok(())
    }
}

fn count(dir: &str) -> usize {
    std::fs::read_dir(dir).map(|d| d.count()).unwrap_or(0)
}

fn tun_options() -> TunOptions {
    TunOptions {
        ipv4: "127.0.0.5/8".into(),
        ipv6: None,
        mtu: 9000,
        framing: None,
        stack: None,
        udp_session_capacity: None,
        udp_max_sockets: None,
        udp_queue_len: None,
        udp_timeout_ms: None,
        udp_short_timeout_ms: None,
        udp_long_timeout_ms: None,
        dns_hijack: false,
        dns_hijack_all: false,
        decision_deadline_ms: 250,
        decision_fail_closed: false,
    }
}

fn loopback() -> InterfaceSnapshot {
    // SAFETY: a NUL-terminated literal.
    let index = unsafe { libc::if_nametoindex(c"lo".as_ptr()) };
    InterfaceSnapshot {
        interfaces: vec![NetworkInterface {
            name: "lo".into(),
            index,
            network_type: NetworkType::Ethernet,
            addresses: vec!["127.0.0.1/8".into()],
            dns_servers: vec![],
            expensive: false,
            constrained: false,
            validated: true,
        }],
        default_index: Some(index),
    }
}

/// One careless host session: everything started, handles kept or dropped anywhere.
fn session(runtime: &tokio::runtime::Runtime, echo: u16, drop_on_other_thread: bool) {
    let manager = ConnectionManager::new(NetswitchConfig::default(), None).unwrap();
    manager.update_interfaces(loopback()).unwrap();
    let subscription = manager.subscribe(Arc::new(Quiet)).unwrap();
    let socks = runtime.block_on(manager.start_socks("127.0.0.1:0".into(), Some(vec![]))).unwrap();
    let (device, _peer) = UnixDatagram::pair().unwrap();
    let tun = manager.start_tun(OwnedFd::from(device), tun_options()).unwrap();
    let (_ours, theirs) = std::os::unix::net::UnixStream::pair().unwrap();
    manager.relay_tcp_fd(OwnedFd::from(theirs), &format!("127.0.0.1:{echo}"), None).unwrap();
    if drop_on_other_thread {
        std::thread::spawn(move || drop(manager)).join().unwrap();
    } else {
        drop(manager);
    }
    // Handles outliving their manager still answer.
    assert!(!subscription.is_active() && !socks.is_running());
    subscription.cancel();
    socks.stop();
    tun.stop();
    let _ = tun.counters();
}

#[test]
fn managers_created_and_dropped_again_and_again_leak_no_threads_or_descriptors() {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let echo = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let echo_port = echo.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for client in echo.incoming().flatten() {
            held.push(client);
        }
    });
    // Warm up: the process-wide runtime, the log thread, lazily started pools.
    for i in 0..3 {
        session(&runtime, echo_port, i % 2 == 0);
    }
    std::thread::sleep(Duration::from_millis(500));
    let (threads, fds) = (count("/proc/self/task"), count("/proc/self/fd"));
    for i in 0..40 {
        session(&runtime, echo_port, i % 2 == 0);
    }
    // Tunnels close their fds up to 200 ms after stop; subscriptions' threads end after draining.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let now = (count("/proc/self/task"), count("/proc/self/fd"));
        // The echo server holds one accepted socket per session.
        if now.0 <= threads + 2 && now.1 <= fds + 40 + 4 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "leak after 40 sessions: threads {threads} -> {}, fds {fds} -> {}",
            now.0,
            now.1
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
