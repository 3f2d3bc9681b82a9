//! The same topology with `stack = userspace`: smoltcp inside netswitch terminates the app's TCP
//! connections instead of the kernel. The assertions are the kernel stack's, and a measurement
//! puts both stacks side by side (figures printed, nothing timed asserted).

use std::io::{Read, Write};
use std::net::Shutdown;
use std::time::{Duration, Instant};

use netswitch::tun::{Framing, Stack};

use super::{blocking, connect, pattern, role, run_in_namespace, server, Device, Link, TIMEOUT};

async fn up(stack: Stack) -> Device {
    Device::up_with(|settings| settings.stack = stack).await
}

/// [`super::tun_tcp_and_udp_through_the_kernel_stack`] with the userspace stack.
#[test]
fn tun_tcp_and_udp_through_the_userspace_stack() {
    if role().as_deref() != Some("device") {
        return run_in_namespace("userspace::tun_tcp_and_udp_through_the_userspace_stack");
    }
    super::tcp_and_udp(Stack::Userspace);
}

/// 300 connections open at once through the userspace stack, each echoing, then closed: the
/// stack and the manager are empty again, and the file descriptors back to the baseline
/// ([`super::tun_many_connections_leave_nothing_behind`] with the userspace stack).
#[test]
fn tun_userspace_many_connections_leave_nothing_behind() {
    if role().as_deref() != Some("device") {
        return run_in_namespace("userspace::tun_userspace_many_connections_leave_nothing_behind");
    }
    super::many_connections(Stack::Userspace);
}

/// Runs the ignored measurement `name` inside a new network namespace (root only).
fn measure_in_namespace(name: &str) {
    if let Some(reason) = super::cannot_run() {
        eprintln!("skipped {name}: {reason}");
        return;
    }
    let output = std::process::Command::new("unshare")
        .args(["-n", "--"])
        .arg(std::env::current_exe().unwrap())
        .args(["--exact", name, "--ignored", "--nocapture", "--test-threads=1"])
        .env(super::ROLE, "device")
        .output()
        .unwrap();
    println!("{}", String::from_utf8_lossy(&output.stdout));
    eprintln!("{}", String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "{name} failed inside the network namespace (output above)");
}

/// This process's resident memory in bytes.
fn rss() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    // SAFETY: sysconf has no preconditions.
    pages * unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as u64
}

/// Echoes `len` bytes through `stream` (written and read back at once); returns the seconds.
fn echo_seconds(stream: std::net::TcpStream, len: usize) -> f64 {
    let started = Instant::now();
    let mut writer = stream.try_clone().unwrap();
    let writing = std::thread::spawn(move || {
        let chunk = pattern(256 * 1024, 1);
        let mut left = len;
        while left > 0 {
            let n = left.min(chunk.len());
            writer.write_all(&chunk[..n]).unwrap();
            left -= n;
        }
        writer.shutdown(Shutdown::Write).unwrap();
    });
    let mut reader = stream;
    reader.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let (mut total, mut buf) = (0, vec![0u8; 256 * 1024]);
    loop {
        match reader.read(&mut buf).unwrap() {
            0 => break,
            n => total += n,
        }
    }
    writing.join().unwrap();
    assert_eq!(total, len, "every byte echoed");
    started.elapsed().as_secs_f64()
}

/// Bulk echo and idle memory per connection for one stack on a device with `framing`, and the
/// no-VPN path (the app's socket bound to wifi0) for comparison. Prints; asserts only that every
/// byte came back.
async fn measure(stack: Stack, framing: Framing) {
    const BULK: usize = 256 << 20;
    let device = Device::up_with(|settings| (settings.stack, settings.framing) = (stack, framing)).await;
    blocking(|| connect(super::server::PEER).unwrap().read_to_end(&mut Vec::new()).unwrap()).await;
    let vpn = blocking(|| echo_seconds(connect(super::server::ECHO).unwrap(), BULK)).await;
    let direct = blocking(|| {
        let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        socket.bind_device(Some(Link::Wifi.name().as_bytes())).unwrap();
        socket.connect_timeout(&server(super::server::ECHO).into(), TIMEOUT).unwrap();
        echo_seconds(socket.into(), BULK)
    })
    .await;
    let rate = |seconds: f64| BULK as f64 * 8.0 / seconds / 1e9;
    println!(
        "MEASURE {stack:?} ({framing:?}): echo {} MiB each way at once: {:.2} Gbit/s each way through tun0, {:.2} without the VPN ({:.2}x)",
        BULK >> 20,
        rate(vpn),
        rate(direct),
        direct / vpn
    );
    device.wait_idle().await;
    idle_memory(&device, stack, 1000).await;
}

/// Open files the idle measurement asks for: 10,000 connections of three sockets each, and room.
const WANTED_OPEN_FILES: u64 = 40_000;

/// Raises this process's open-files limit: the hard limit to [`WANTED_OPEN_FILES`] where the
/// process may (root), the soft limit to the hard one; returns the soft limit.
pub(super) fn raise_open_files_limit() -> u64 {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit and setrlimit read and write one rlimit we own.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit), 0);
        if limit.rlim_max < WANTED_OPEN_FILES {
            let raised = libc::rlimit { rlim_cur: WANTED_OPEN_FILES, rlim_max: WANTED_OPEN_FILES };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                return WANTED_OPEN_FILES;
            }
        }
        limit.rlim_cur = limit.rlim_max;
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &limit), 0, "{}", std::io::Error::last_os_error());
    }
    limit.rlim_cur
}

/// Opens `count` connections through the tunnel (100 handshakes at a time), each echoing one
/// message, and prints the process's RSS growth per connection once they have been idle for
/// longer than the userspace stack's ring release. Asserts only that every echo came back.
async fn idle_memory(device: &Device, stack: Stack, count: usize) {
    // The app's socket and the outbound one; the system stack's accepted socket too.
    let per_connection = if stack == Stack::System { 3 } else { 2 };
    let fit = (raise_open_files_limit().saturating_sub(1000) / per_connection) as usize;
    if fit < count {
        println!("MEASURE {stack:?}: the open-files limit fits {fit} connections, not {count}");
    }
    let count = count.min(fit);
    let before = rss();
    let streams = super::idle_apps::open(count).await;
    assert_eq!(device.netswitch.manager().len(), count);
    // Longer than the userspace stack's idle release of its rings.
    tokio::time::sleep(netswitch::tun::userspace::IDLE_RELEASE + Duration::from_secs(1)).await;
    let after = rss();
    println!(
        "MEASURE {stack:?}: {count} idle connections (one echo each): RSS {} -> {} KiB, {:.1} KiB per connection (process, app side included)",
        before >> 10,
        after >> 10,
        (after.saturating_sub(before)) as f64 / count as f64 / 1024.0
    );
    drop(streams);
    device.wait_idle().await;
}

/// Idle memory at 10,000 connections (the figure) for `stack`: the apps in a process
/// of their own ([`super::idle_apps`]), so this process's RSS growth is netswitch's alone (its
/// outbound sockets, the system stack's accepted ones, the stacks' state) and its open files
/// are netswitch's (one or two per connection).
fn measure_idle_10000(stack: Stack) {
    const COUNT: usize = 10_000;
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    runtime.block_on(async {
        let device = up(stack).await;
        blocking(|| connect(super::server::PEER).unwrap().read_to_end(&mut Vec::new()).unwrap()).await;
        device.wait_idle().await;
        let per_connection = if stack == Stack::System { 2 } else { 1 };
        let fit = (raise_open_files_limit().saturating_sub(1000) / per_connection) as usize;
        if fit < COUNT {
            println!("MEASURE {stack:?}: the open-files limit fits {fit} connections, not {COUNT}");
        }
        let count = COUNT.min(fit);
        let before = rss();
        let apps = blocking(move || super::idle_apps::Apps::open(count)).await;
        assert_eq!(device.netswitch.manager().len(), count);
        // Longer than the userspace stack's idle release of its rings.
        tokio::time::sleep(netswitch::tun::userspace::IDLE_RELEASE + Duration::from_secs(1)).await;
        let after = rss();
        println!(
            "MEASURE {stack:?}: {count} idle connections, the apps in another process: netswitch's RSS {} -> {} KiB, {:.1} KiB per connection",
            before >> 10,
            after >> 10,
            (after.saturating_sub(before)) as f64 / count as f64 / 1024.0
        );
        blocking(move || drop(apps)).await;
        device.wait_idle().await;
    });
}

#[test]
#[ignore = "measurement (about 20 s): cargo test --test tun measure_ -- --ignored --nocapture"]
fn tun_measure_idle_10000_system_stack() {
    if role().as_deref() != Some("device") {
        return measure_in_namespace("userspace::tun_measure_idle_10000_system_stack");
    }
    measure_idle_10000(Stack::System);
}

#[test]
#[ignore = "measurement (about 20 s): cargo test --test tun measure_ -- --ignored --nocapture"]
fn tun_measure_idle_10000_userspace_stack() {
    if role().as_deref() != Some("device") {
        return measure_in_namespace("userspace::tun_measure_idle_10000_userspace_stack");
    }
    measure_idle_10000(Stack::Userspace);
}

#[test]
#[ignore = "measurement (about 20 s): cargo test --test tun measure_ -- --ignored --nocapture"]
fn tun_measure_system_stack() {
    if role().as_deref() != Some("device") {
        return measure_in_namespace("userspace::tun_measure_system_stack");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    runtime.block_on(measure(Stack::System, Framing::Raw));
}

#[test]
#[ignore = "measurement (about 20 s): cargo test --test tun measure_ -- --ignored --nocapture"]
fn tun_measure_userspace_stack() {
    if role().as_deref() != Some("device") {
        return measure_in_namespace("userspace::tun_measure_userspace_stack");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    runtime.block_on(measure(Stack::Userspace, Framing::Raw));
}

#[test]
#[ignore = "measurement (about 20 s): cargo test --test tun measure_ -- --ignored --nocapture"]
fn tun_measure_system_stack_offload() {
    if role().as_deref() != Some("device") {
        return measure_in_namespace("userspace::tun_measure_system_stack_offload");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    runtime.block_on(measure(Stack::System, Framing::VirtioNet));
}

#[test]
#[ignore = "measurement (about 20 s): cargo test --test tun measure_ -- --ignored --nocapture"]
fn tun_measure_userspace_stack_offload() {
    if role().as_deref() != Some("device") {
        return measure_in_namespace("userspace::tun_measure_userspace_stack_offload");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    runtime.block_on(measure(Stack::Userspace, Framing::VirtioNet));
}
