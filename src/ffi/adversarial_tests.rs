//! The façade driven like a buggy host app: the same fd handed over twice, fds that are not
//! what the contract asks, callbacks that call back into the manager, out-of-range options.
//! Every test uses loopback only.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::os::fd::{AsRawFd, IntoRawFd};
use std::os::unix::net::{UnixDatagram, UnixStream};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use super::config::{ConnectionOptions, NetswitchConfig};
use super::error::NetswitchError;
use super::manager::ConnectionManager;
use super::network::{InterfaceSnapshot, NetworkInterface, NetworkType};
use super::types::{BindAction, BindDecision, HostResolution};
use super::PlatformInterface;

/// A loopback server that echoes every byte, one thread per client.
fn echo_server() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for client in listener.incoming() {
            let Ok(mut client) = client else { return };
            std::thread::spawn(move || {
                let mut buffer = [0u8; 4096];
                while let Ok(n @ 1..) = client.read(&mut buffer) {
                    if client.write_all(&buffer[..n]).is_err() {
                        return;
                    }
                }
            });
        }
    });
    port
}

fn loopback_snapshot() -> InterfaceSnapshot {
    // SAFETY: a NUL-terminated literal.
    let index = unsafe { libc::if_nametoindex(c"lo".as_ptr()) };
    assert_ne!(index, 0, "no loopback interface");
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

/// Writes `text` into `ours` and reads the echo back (5 s read timeout).
fn round_trip(ours: &mut UnixStream, text: &[u8]) -> std::io::Result<Vec<u8>> {
    ours.set_read_timeout(Some(Duration::from_secs(5)))?;
    ours.write_all(text)?;
    let mut echoed = vec![0u8; text.len()];
    ours.read_exact(&mut echoed)?;
    Ok(echoed)
}

fn argument_of(result: Result<impl std::fmt::Debug, NetswitchError>) -> String {
    match result {
        Err(NetswitchError::InvalidArgument { argument, reason }) => format!("{argument}: {reason}"),
        Err(other) => panic!("not InvalidArgument: {other:?}"),
        Ok(_) => panic!("accepted, not InvalidArgument"),
    }
}

fn is_open(fd: i32) -> bool {
    // SAFETY: F_GETFD only reads the descriptor table.
    unsafe { libc::fcntl(fd, libc::F_GETFD) != -1 }
}

#[test]
fn the_same_fd_handed_over_twice_is_refused_and_the_first_connection_keeps_it() {
    let echo = echo_server();
    let manager = ConnectionManager::new(NetswitchConfig::default(), None).unwrap();
    manager.update_interfaces(loopback_snapshot()).unwrap();
    let (mut ours, theirs) = UnixStream::pair().unwrap();
    let fd = theirs.into_raw_fd();
    let destination = format!("127.0.0.1:{echo}");
    manager.relay_tcp_raw_fd(fd, destination.clone(), None).unwrap();
    assert_eq!(round_trip(&mut ours, b"first").unwrap(), b"first");

    let again = manager.relay_tcp_raw_fd(fd, destination, None);
    let reason = argument_of(again);
    assert!(reason.starts_with("fd: ") && reason.contains("already"), "{reason}");
    assert_eq!(
        round_trip(&mut ours, b"still relayed").unwrap(),
        b"still relayed",
        "the refused second hand-over closed the first connection's socket"
    );
    assert_eq!(manager.connections().len(), 1);
    manager.close_all();
}

/// The record of handed-over sockets forgets a descriptor once it names another socket (tested
/// on a descriptor this test owns throughout: numbers netswitch closes are reused by tests
/// running in parallel).
#[test]
fn a_descriptor_that_names_another_socket_now_may_be_handed_over_again() {
    let (first, _peer) = UnixStream::pair().unwrap();
    let fd = first.as_raw_fd();
    super::fd::claim_socket(fd).unwrap();
    assert!(argument_of(super::fd::claim_socket(fd).map(|_| ())).contains("already"));
    let (second, _second_peer) = UnixStream::pair().unwrap();
    // SAFETY: `fd` is ours (`first`); dup2 atomically makes it name `second`'s socket.
    assert_eq!(unsafe { libc::dup2(second.as_raw_fd(), fd) }, fd);
    super::fd::claim_socket(fd).expect("a descriptor naming a new socket refused");
}

#[test]
fn fds_that_are_not_connected_stream_sockets_are_refused_and_left_open() {
    let manager = ConnectionManager::new(NetswitchConfig::default(), None).unwrap();
    let relay = |fd: i32| manager.relay_tcp_raw_fd(fd, "127.0.0.1:9".into(), None);
    assert_eq!(argument_of(relay(-1)), "fd: -1 is not a file descriptor");
    assert!(argument_of(relay(i32::MAX)).starts_with("fd: fd 2147483647: "));
    let file = std::fs::File::open("Cargo.toml").unwrap();
    assert!(argument_of(relay(file.as_raw_fd())).contains("not a socket"));
    let (datagram, _peer) = UnixDatagram::pair().unwrap();
    assert!(argument_of(relay(datagram.as_raw_fd())).contains("not a stream socket"));
    // A stream socket that is not connected: a listener, a fresh unconnected socket.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    assert!(argument_of(relay(listener.as_raw_fd())).contains("not connected"));
    let fresh = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    assert!(argument_of(relay(fresh.as_raw_fd())).contains("not connected"));
    for fd in [file.as_raw_fd(), datagram.as_raw_fd(), listener.as_raw_fd(), fresh.as_raw_fd()] {
        assert!(is_open(fd), "fd {fd} closed after a refusal");
    }
    assert!(manager.connections().is_empty());
}

/// What a re-entrant platform does from inside `bind_socket`.
#[derive(Clone, Copy, Debug)]
enum Reentry {
    Read,
    CloseAll,
    UpdateInterfaces,
    Shutdown,
}

/// A platform whose `bind_socket` calls the manager it belongs to.
struct ReentrantPlatform {
    manager: OnceLock<Weak<ConnectionManager>>,
    what: Reentry,
    returned: Mutex<Option<mpsc::Sender<()>>>,
}

#[async_trait::async_trait]
impl PlatformInterface for ReentrantPlatform {
    fn bind_socket(
        &self,
        _fd: i32,
        _interface: NetworkInterface,
        _action: BindAction,
    ) -> Result<BindDecision, NetswitchError> {
        if let Some(manager) = self.manager.get().and_then(Weak::upgrade) {
            match self.what {
                Reentry::Read => {
                    let _ = (manager.connections(), manager.traffic(), manager.is_shut_down());
                }
                Reentry::CloseAll => {
                    manager.close_all();
                }
                Reentry::UpdateInterfaces => {
                    let _ = manager
                        .update_interfaces(InterfaceSnapshot { interfaces: vec![], default_index: None });
                    let _ = manager.update_interfaces(loopback_snapshot());
                }
                Reentry::Shutdown => manager.shutdown(),
            }
        }
        if let Some(returned) = self.returned.lock().unwrap().take() {
            let _ = returned.send(());
        }
        Ok(BindDecision::Bound)
    }

    async fn resolve(
        &self,
        _name: String,
        _interface: NetworkInterface,
        _want_ipv4: bool,
        _want_ipv6: bool,
    ) -> Result<HostResolution, NetswitchError> {
        Ok(HostResolution::ResolveYourself)
    }
}

#[test]
fn a_platform_that_calls_the_manager_from_bind_socket_does_not_deadlock() {
    let echo = echo_server();
    for what in [Reentry::Read, Reentry::CloseAll, Reentry::UpdateInterfaces, Reentry::Shutdown] {
        let (returned, done) = mpsc::channel();
        let platform = Arc::new(ReentrantPlatform {
            manager: OnceLock::new(),
            what,
            returned: Mutex::new(Some(returned)),
        });
        let config = NetswitchConfig { offer_loopback_sockets: true, ..NetswitchConfig::default() };
        let manager = ConnectionManager::new(config, Some(platform.clone())).unwrap();
        let _ = platform.manager.set(Arc::downgrade(&manager));
        manager.update_interfaces(loopback_snapshot()).unwrap();
        let (_ours, theirs) = UnixStream::pair().unwrap();
        manager.relay_tcp_raw_fd(theirs.into_raw_fd(), format!("127.0.0.1:{echo}"), None).unwrap();
        assert!(done.recv_timeout(Duration::from_secs(10)).is_ok(), "{what:?}: bind_socket never returned");
        // The manager still answers (no lock left held by the re-entrant call).
        let (answered, answer) = mpsc::channel();
        let probe = manager.clone();
        std::thread::spawn(move || {
            let _ = (probe.connections(), probe.close_all());
            let _ = answered.send(());
        });
        assert!(answer.recv_timeout(Duration::from_secs(10)).is_ok(), "{what:?}: the manager deadlocked");
    }
}

#[test]
fn connection_options_out_of_range_name_the_option() {
    let manager = ConnectionManager::new(NetswitchConfig::default(), None).unwrap();
    manager.update_interfaces(loopback_snapshot()).unwrap();
    let cases = [
        (
            ConnectionOptions { connect_timeout_ms: Some(0), ..Default::default() },
            "options.connect_timeout_ms",
        ),
        (
            ConnectionOptions { connect_timeout_ms: Some(u64::MAX), ..Default::default() },
            "options.connect_timeout_ms",
        ),
        (
            ConnectionOptions { fallback_delay_ms: Some(u64::MAX), ..Default::default() },
            "options.fallback_delay_ms",
        ),
    ];
    for (options, name) in cases {
        let (_ours, theirs) = UnixStream::pair().unwrap();
        let fd = theirs.as_raw_fd();
        let reason = argument_of(manager.relay_tcp_raw_fd(fd, "127.0.0.1:9".into(), Some(options.clone())));
        assert!(reason.starts_with(&format!("{name}: ")), "{reason}");
        assert!(is_open(fd), "an invalid option closed the fd");
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let reason = argument_of(runtime.block_on(manager.resolve("127.0.0.1".into(), Some(options))));
        assert!(reason.starts_with(&format!("{name}: ")), "{reason}");
    }
}

#[test]
fn interface_indexes_no_kernel_can_have_are_refused() {
    let manager = ConnectionManager::new(NetswitchConfig::default(), None).unwrap();
    let mut snapshot = loopback_snapshot();
    snapshot.interfaces[0].index = 0x8000_0000;
    snapshot.default_index = Some(0x8000_0000);
    let reason = argument_of(manager.update_interfaces(snapshot));
    assert!(reason.starts_with("snapshot: ") && reason.contains("2147483648"), "{reason}");
}

/// A listener that, from inside its close callback, subscribes another listener and cancels it,
/// changes the log level, shuts the manager down and releases the last reference to it.
struct ReentrantListener {
    manager: Mutex<Option<Arc<ConnectionManager>>>,
    returned: Mutex<Option<mpsc::Sender<()>>>,
}

impl super::EventListener for ReentrantListener {
    fn on_connection_opened(&self, _: super::types::ConnectionInfo) -> Result<(), NetswitchError> {
        Ok(())
    }
    fn on_connection_closed(&self, _: super::types::ClosedConnection) -> Result<(), NetswitchError> {
        if let Some(manager) = self.manager.lock().unwrap().take() {
            let quiet = Arc::new(ReentrantListener { manager: Mutex::new(None), returned: Mutex::new(None) });
            if let Ok(other) = manager.subscribe(quiet) {
                other.cancel();
            }
            super::set_log_level(super::types::LogLevel::Info);
            manager.shutdown();
            drop(manager);
        }
        if let Some(returned) = self.returned.lock().unwrap().take() {
            let _ = returned.send(());
        }
        Ok(())
    }
    fn on_network_changed(&self, _: super::network::NetworkChange) -> Result<(), NetswitchError> {
        Ok(())
    }
    fn on_log(&self, _: Vec<super::types::LogRecord>, _: u64) -> Result<(), NetswitchError> {
        super::set_log_level(super::types::LogLevel::Info);
        Ok(())
    }
}

#[test]
fn a_listener_that_shuts_down_and_releases_its_manager_from_a_callback() {
    let manager = ConnectionManager::new(NetswitchConfig::default(), None).unwrap();
    let (returned, done) = mpsc::channel();
    let listener = Arc::new(ReentrantListener {
        manager: Mutex::new(Some(manager.clone())),
        returned: Mutex::new(Some(returned)),
    });
    let subscription = manager.subscribe(listener).unwrap();
    manager.update_interfaces(loopback_snapshot()).unwrap();
    let (_ours, theirs) = UnixStream::pair().unwrap();
    // Port 9 on loopback: refused at once, so a close event follows.
    manager.relay_tcp_raw_fd(theirs.into_raw_fd(), "127.0.0.1:9".into(), None).unwrap();
    drop(manager);
    assert!(done.recv_timeout(Duration::from_secs(10)).is_ok(), "the close callback never returned");
    for _ in 0..500 {
        if !subscription.is_active() {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(!subscription.is_active(), "the manager released inside the callback was not shut down");
}

#[test]
fn the_same_tun_fd_handed_over_twice_is_refused() {
    let manager = ConnectionManager::new(NetswitchConfig::default(), None).unwrap();
    let (device, peer) = UnixDatagram::pair().unwrap();
    let fd = device.into_raw_fd();
    let options = tun_options("127.0.0.5/8");
    let first = manager.start_tun_raw_fd(fd, options.clone()).unwrap();
    let reason = argument_of(manager.start_tun_raw_fd(fd, options));
    assert!(reason.starts_with("fd: ") && reason.contains("already"), "{reason}");
    assert!(!first.is_finished() && peer.send(&[0x45, 0, 0]).is_ok(), "the first tunnel lost its fd");
    first.stop();
    // Stopped and finished, its descriptor is free again (checked on a duplicate this test owns:
    // numbers netswitch closes are reused by tests running in parallel).
    let (device, _peer) = UnixDatagram::pair().unwrap();
    let second = manager.start_tun(device.try_clone().unwrap().into(), tun_options("127.0.0.5/8")).unwrap();
    super::tun::hold(device.as_raw_fd(), &second);
    assert!(argument_of(super::tun::check_not_held(device.as_raw_fd()).map(|_| ())).contains("already"));
    second.stop();
    for _ in 0..500 {
        if second.is_finished() {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(second.is_finished());
    super::tun::check_not_held(device.as_raw_fd()).expect("a finished tunnel's fd still held");
}

fn tun_options(ipv4: &str) -> super::TunOptions {
    super::TunOptions::for_tests(ipv4)
}

struct AllowAll;

impl super::tun_decider::TunFlowDecider for AllowAll {
    fn decide(&self, _: super::tun_decider::TunFlowInfo) -> super::tun_decider::TunFlowDecision {
        super::tun_decider::TunFlowDecision::default()
    }
}

/// The largest numbers a host can put in `TunOptions` are refused with the option's name or
/// work; none may panic (a panic in the tunnel's reader would lose the tunnel silently).
#[test]
fn extreme_tun_options_are_refused_by_name_or_work() {
    let echo = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let echo_port = echo.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut buffer = [0u8; 2048];
        while let Ok((n, from)) = echo.recv_from(&mut buffer) {
            let _ = echo.send_to(&buffer[..n], from);
        }
    });
    let manager = ConnectionManager::new(NetswitchConfig::default(), None).unwrap();
    manager.update_interfaces(loopback_snapshot()).unwrap();
    let mut options = tun_options("127.0.0.5/8");
    options.udp_session_capacity = Some(u32::MAX);
    options.udp_max_sockets = Some(u32::MAX);
    options.udp_queue_len = Some(u32::MAX);
    options.udp_timeout_ms = Some(u64::MAX);
    options.udp_short_timeout_ms = Some(u64::MAX);
    options.udp_long_timeout_ms = Some(u64::MAX);
    options.decision_deadline_ms = u64::MAX;
    // A queue bound a 32-bit Android (armeabi-v7a) cannot hold: tokio's channel panics above
    // 2^29 - 1 there, in the tunnel's reader, on the first datagram.
    // (As documented, netswitch has closed the fd after an error naming an option.)
    let (device, _peer) = UnixDatagram::pair().unwrap();
    let refused =
        manager.start_tun_with_decider_raw_fd(device.into_raw_fd(), options.clone(), Arc::new(AllowAll));
    assert!(argument_of(refused).starts_with("options.udp_queue_len: "));
    options.udp_queue_len = Some(super::tun::MAX_UDP_QUEUE_LEN);
    let (device, peer) = UnixDatagram::pair().unwrap();
    let tun =
        manager.start_tun_with_decider_raw_fd(device.into_raw_fd(), options, Arc::new(AllowAll)).unwrap();
    let mut packet = Vec::new();
    etherparse::PacketBuilder::ipv4([127, 0, 0, 5], [127, 0, 0, 1], 64)
        .udp(40000, echo_port)
        .write(&mut packet, b"extreme")
        .unwrap();
    peer.send(&packet).unwrap();
    peer.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut reply = [0u8; 2048];
    let n = peer.recv(&mut reply).expect("no reply through the tunnel");
    assert!(reply[..n].ends_with(b"extreme"), "{:?}", tun.counters());
    tun.stop();
}

/// Runs `future` to completion on this thread, as Kotlin's `runBlocking` does.
fn run_blocking<F: std::future::Future>(future: F) -> F::Output {
    struct Unpark(std::thread::Thread);
    impl std::task::Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = std::task::Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut context = std::task::Context::from_waker(&waker);
    let mut future = std::pin::pin!(future);
    loop {
        if let std::task::Poll::Ready(output) = future.as_mut().poll(&mut context) {
            return output;
        }
        std::thread::park();
    }
}

/// A platform whose `bind_socket` waits (`runBlocking`) for an async call of its manager.
struct BlockingPlatform {
    manager: OnceLock<Weak<ConnectionManager>>,
    answered: Mutex<Option<mpsc::Sender<bool>>>,
}

#[async_trait::async_trait]
impl PlatformInterface for BlockingPlatform {
    fn bind_socket(
        &self,
        _: i32,
        _: NetworkInterface,
        _: BindAction,
    ) -> Result<BindDecision, NetswitchError> {
        if let Some(manager) = self.manager.get().and_then(Weak::upgrade) {
            let resolved = run_blocking(manager.resolve("127.0.0.1".into(), None));
            if let Some(answered) = self.answered.lock().unwrap().take() {
                let _ = answered.send(resolved.is_ok());
            }
        }
        Ok(BindDecision::Bound)
    }

    async fn resolve(
        &self,
        _: String,
        _: NetworkInterface,
        _: bool,
        _: bool,
    ) -> Result<HostResolution, NetswitchError> {
        Ok(HostResolution::ResolveYourself)
    }
}

#[test]
fn a_platform_that_waits_for_the_manager_inside_bind_socket_does_not_stall_it() {
    let echo = echo_server();
    let (answered, answer) = mpsc::channel();
    let platform =
        Arc::new(BlockingPlatform { manager: OnceLock::new(), answered: Mutex::new(Some(answered)) });
    let config = NetswitchConfig { offer_loopback_sockets: true, ..NetswitchConfig::default() };
    let manager = ConnectionManager::new(config, Some(platform.clone())).unwrap();
    let _ = platform.manager.set(Arc::downgrade(&manager));
    manager.update_interfaces(loopback_snapshot()).unwrap();
    let (mut ours, theirs) = UnixStream::pair().unwrap();
    manager.relay_tcp_raw_fd(theirs.into_raw_fd(), format!("127.0.0.1:{echo}"), None).unwrap();
    let resolved = answer.recv_timeout(Duration::from_secs(10));
    assert_eq!(resolved, Ok(true), "the resolve awaited inside bind_socket never finished");
    assert_eq!(round_trip(&mut ours, b"after").unwrap(), b"after");
    manager.shutdown();
}

#[test]
fn bad_socks_arguments_name_the_argument_of_the_call() {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let config = NetswitchConfig { socks_allow_non_loopback: true, ..NetswitchConfig::default() };
    let manager = ConnectionManager::new(config, None).unwrap();
    let start = |listen: &str, users: Option<Vec<super::types::SocksUser>>| {
        runtime.block_on(manager.start_socks(listen.into(), users)).map(|server| server.stop())
    };
    let user = |name: &str, password: &str| super::types::SocksUser {
        username: name.into(),
        password: password.into(),
    };
    assert!(argument_of(start("localhost:1080", None)).starts_with("listen: "));
    assert!(argument_of(start("127.0.0.1:0\0", None)).starts_with("listen: "));
    assert!(argument_of(start("127.0.0.1:0", Some(vec![user("", "p")]))).starts_with("users: "));
    assert!(argument_of(start("127.0.0.1:0", Some(vec![user("u", &"p".repeat(256))]))).starts_with("users: "));
    // No users on an address other apps can reach (192.0.2.1 is refused before any bind).
    assert!(argument_of(start("192.0.2.1:0", Some(vec![]))).starts_with("users: "));
}

#[test]
fn names_no_resolver_can_answer_are_name_not_found() {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let manager = ConnectionManager::new(NetswitchConfig::default(), None).unwrap();
    manager.update_interfaces(loopback_snapshot()).unwrap();
    let too_long = format!("{}.test", "a".repeat(300));
    for name in ["", "a\0b.test", too_long.as_str(), "exa mple.test", "127.0.0.1:80", "-", "."] {
        match runtime.block_on(manager.resolve(name.into(), None)) {
            Err(NetswitchError::NameNotFound { name: named, reason }) => {
                assert_eq!(named, name, "{reason}");
            }
            other => panic!("{name:?}: {other:?}"),
        }
    }
}
