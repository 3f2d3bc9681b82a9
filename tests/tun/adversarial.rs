//! The system stack against apps that behave badly or just slowly (root; skipped with a printed
//! reason otherwise). Each test names the defect it once showed.

use std::io::{Read, Write};
use std::net::Shutdown;
use std::time::Duration;

use crate::{blocking, connect, role, run_in_namespace, server, Device};

/// An app that half-closes first and reads the server's answer only a few seconds after the
/// server closed (busy, backgrounded, reading from a slow consumer): the relay ended the
/// connection as soon as the answer was in the kernel's buffers, but the kernel still holds part
/// of it for the app. The app must get all of it and the end: once the NAT entry had left
/// ([`netswitch::tun::nat::LINGER`] after the connection ended), the rest was stuck in the
/// kernel and the app hung.
#[test]
fn tun_a_late_reader_gets_the_whole_answer_after_the_connection_ended() {
    if role().as_deref() != Some("device") {
        return run_in_namespace(
            "adversarial::tun_a_late_reader_gets_the_whole_answer_after_the_connection_ended",
        );
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    runtime.block_on(async {
        let device = Device::up().await;
        let (received, error) = blocking(|| {
            let mut stream = connect(server::SERVER_FIRST).unwrap();
            stream.shutdown(Shutdown::Write).unwrap();
            std::thread::sleep(netswitch::tun::nat::LINGER + Duration::from_secs(1));
            let mut received = Vec::new();
            let error = stream.read_to_end(&mut received).err();
            (received.len(), error)
        })
        .await;
        println!("counters: {:?}", device.tun.counters());
        assert_eq!(
            (received, error.map(|e| e.kind())),
            (200_000, None),
            "the app got only part of the answer"
        );
        device.wait_idle().await;
    });
}

/// An app that resets its connection and at once connects again from the same port to the same
/// server (a client bound to a fixed port, SO_REUSEADDR, abortive close): the new connection is
/// a new flow. It found the old flow's NAT entry still open (the relay had not yet seen the
/// reset), took its port, and the listener refused it as a stranger: the app's connection was
/// closed at once.
#[test]
fn tun_a_reset_and_reconnect_from_the_same_port_is_a_new_connection() {
    if role().as_deref() != Some("device") {
        return run_in_namespace(
            "adversarial::tun_a_reset_and_reconnect_from_the_same_port_is_a_new_connection",
        );
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    runtime.block_on(async {
        let device = Device::up().await;
        let failures = blocking(|| {
            let mut local = None;
            let mut failures = Vec::new();
            for round in 0..20 {
                let socket =
                    socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
                socket.set_reuse_address(true).unwrap();
                let at = local.unwrap_or_else(|| "172.19.0.1:0".parse().unwrap());
                socket.bind(&socket2::SockAddr::from(at)).unwrap();
                local = socket.local_addr().unwrap().as_socket();
                let echoed = (|| {
                    socket.connect_timeout(&server(server::ECHO).into(), crate::TIMEOUT)?;
                    socket.set_read_timeout(Some(crate::TIMEOUT))?;
                    let mut stream = std::net::TcpStream::from(socket.try_clone()?);
                    let message = format!("round {round}");
                    stream.write_all(message.as_bytes())?;
                    let mut echoed = vec![0u8; message.len()];
                    stream.read_exact(&mut echoed)?;
                    std::io::Result::Ok(echoed == message.as_bytes())
                })();
                if !matches!(echoed, Ok(true)) {
                    failures.push((round, echoed.map_err(|e| e.to_string())));
                }
                // The abortive close: a reset, and the port is free at once.
                socket.set_linger(Some(Duration::ZERO)).unwrap();
                drop(socket);
            }
            failures
        })
        .await;
        println!("counters: {:?}", device.tun.counters());
        assert!(failures.is_empty(), "rounds that failed: {failures:?}");
        device.wait_idle().await;
    });
}

/// A packet longer than the tunnel's MTU (the device's own MTU is larger than the settings say,
/// or a bug in the host): the kernel hands over its first MTU bytes, the reader drops it as
/// malformed, counted, and the tunnel goes on.
#[test]
fn tun_a_packet_longer_than_the_mtu_is_dropped_and_the_tunnel_goes_on() {
    if role().as_deref() != Some("device") {
        return run_in_namespace(
            "adversarial::tun_a_packet_longer_than_the_mtu_is_dropped_and_the_tunnel_goes_on",
        );
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    runtime.block_on(async {
        // tun0's MTU is 9000 (see `Device::up_through`).
        let device = Device::up_with(|settings| settings.mtu = 1500).await;
        let app = std::net::UdpSocket::bind("172.19.0.1:0").unwrap();
        app.set_read_timeout(Some(crate::TIMEOUT)).unwrap();
        let before = device.tun.counters();
        app.send_to(&vec![7u8; 4000], server(server::UDP_ECHO)).unwrap();
        let deadline = std::time::Instant::now() + crate::TIMEOUT;
        while device.tun.counters().dropped_malformed == before.dropped_malformed {
            assert!(std::time::Instant::now() < deadline, "not counted: {:?}", device.tun.counters());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(!device.tun.is_finished(), "the reader stopped");
        let echoed = blocking(move || {
            app.send_to(b"small", server(server::UDP_ECHO)).unwrap();
            let mut buffer = [0u8; 64];
            app.recv(&mut buffer).map(|n| buffer[..n].to_vec())
        })
        .await
        .unwrap();
        assert_eq!(echoed, b"small");
    });
}

/// TCP from sockets whose packets carry IPv4 options or an IPv6 destination-options header: the
/// NAT finds the TCP header behind them and rewrites the right bytes; the echo comes back whole.
#[test]
fn tun_tcp_with_ip_options_and_ipv6_extension_headers() {
    if role().as_deref() != Some("device") {
        return run_in_namespace("adversarial::tun_tcp_with_ip_options_and_ipv6_extension_headers");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    runtime.block_on(async {
        let device = Device::up().await;
        let echoes = blocking(|| {
            use std::os::fd::AsRawFd;
            // IPv4: NOP, NOP, NOP, end of options (the header grows to 24 bytes).
            let nops = [1u8, 1, 1, 0];
            // IPv6: a destination-options header holding one PadN option (8 bytes).
            let padn = [0u8, 0, 1, 4, 0, 0, 0, 0];
            let cases = [
                (crate::server(server::ECHO), libc::IPPROTO_IP, libc::IP_OPTIONS, &nops[..]),
                (crate::server_v6(server::ECHO), libc::IPPROTO_IPV6, libc::IPV6_DSTOPTS, &padn[..]),
            ];
            cases.map(|(to, level, name, value)| {
                let socket =
                    socket2::Socket::new(socket2::Domain::for_address(to), socket2::Type::STREAM, None)?;
                // SAFETY: a valid socket and a buffer of the length given.
                let set = unsafe {
                    libc::setsockopt(
                        socket.as_raw_fd(),
                        level,
                        name,
                        value.as_ptr().cast(),
                        value.len() as u32,
                    )
                };
                assert_eq!(set, 0, "{}", std::io::Error::last_os_error());
                socket.connect_timeout(&to.into(), crate::TIMEOUT)?;
                socket.set_read_timeout(Some(crate::TIMEOUT))?;
                let mut stream = std::net::TcpStream::from(socket);
                let sent = crate::pattern(100_000, 3);
                stream.write_all(&sent)?;
                stream.shutdown(Shutdown::Write)?;
                let mut echoed = Vec::new();
                stream.read_to_end(&mut echoed)?;
                std::io::Result::Ok(echoed == sent)
            })
        })
        .await;
        println!("counters: {:?}", device.tun.counters());
        assert!(echoes.iter().all(|e| matches!(e, Ok(true))), "{echoes:?}");
    });
}

/// A SYN scan from the device (a raw-socket scanner: every SYN from a new port, the kernel
/// resetting each answer): it takes every NAT port. Each entry's flow was reset at once, yet the
/// entries stayed pending for [`netswitch::tun::nat::PENDING_TIMEOUT`], and every app's new TCP
/// connection failed meanwhile. They now leave [`netswitch::tun::nat::LINGER`] after the reset.
#[test]
fn tun_a_syn_scan_that_fills_the_nat_lets_go_of_it_after_the_resets() {
    if role().as_deref() != Some("device") {
        return run_in_namespace(
            "adversarial::tun_a_syn_scan_that_fills_the_nat_lets_go_of_it_after_the_resets",
        );
    }
    use netswitch::tun::nat::{FIRST_PORT, LINGER, PENDING_TIMEOUT};
    use socket2::{Domain, Protocol, Socket, Type};
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    runtime.block_on(async {
        let device = Device::up().await;
        let raw = Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::from(libc::IPPROTO_RAW))).unwrap();
        let target = server(9);
        let syn = |port: u16| {
            let mut packet = Vec::new();
            etherparse::PacketBuilder::ipv4([172, 19, 0, 1], [10, 200, 9, 1], 64)
                .tcp(port, target.port(), 1, 1000)
                .syn()
                .write(&mut packet, &[])
                .unwrap();
            packet
        };
        let started = std::time::Instant::now();
        let before = device.tun.counters().packets_in;
        let mut most = 0;
        // One SYN from each port, in rounds the reader keeps up with (tun0's queue would drop a
        // burst): each SYN, its answer and the reset of the answer read before the next round.
        for round in (1..=u16::MAX).collect::<Vec<_>>().chunks(1000) {
            for &port in round {
                raw.send_to(&syn(port), &target.into()).unwrap();
            }
            let want = before + 3 * u64::from(*round.last().unwrap());
            let deadline = std::time::Instant::now() + Duration::from_millis(300);
            while device.tun.counters().packets_in < want && std::time::Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            most = most.max(device.tun.nat_entries());
        }
        let scanned = started.elapsed();
        println!(
            "a SYN from each of {} ports in {scanned:?}, at most {most} of {} NAT entries held: {:?}",
            u16::MAX,
            usize::from(u16::MAX - FIRST_PORT) + 1,
            device.tun.counters()
        );
        assert!(scanned < PENDING_TIMEOUT - LINGER * 2, "the scan is too slow to show anything");
        // The scanner's SYNs were all reset: a linger (and a sweep) after the scan, the ports
        // are free.
        let deadline = std::time::Instant::now() + LINGER + Duration::from_secs(1);
        while device.tun.nat_entries() > 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "{} NAT entries of reset flows still held {:?} after the scan",
                device.tun.nat_entries(),
                started.elapsed() - scanned
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let echoed = blocking(|| crate::echo_app_fin_first(b"after the scan")).await.unwrap();
        assert_eq!(echoed, b"after the scan");
    });
}
