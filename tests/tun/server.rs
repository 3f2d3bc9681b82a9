//! The server namespace's services (10.200.9.1), one thread per connection.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// TCP: answers `peer=<source ip>` and closes.
pub const PEER: u16 = 7000;
/// TCP: echoes until the client's FIN, then closes.
pub const ECHO: u16 = 7001;
/// TCP: echoes like [`ECHO`] without a read timeout (connections held idle by measurements).
pub const ECHO_IDLE: u16 = 7008;
/// TCP: sends 200,000 bytes and half-closes first, then reads the client's bytes until its FIN
/// and records how many and their digest for [`LAST_COUNT`].
pub const SERVER_FIRST: u16 = 7003;
/// TCP: answers `<count> <digest>` of the last [`SERVER_FIRST`] connection.
pub const LAST_COUNT: u16 = 7004;
/// TCP: reads a line, then resets the connection (SO_LINGER 0).
pub const RESET: u16 = 7005;
/// TCP: nothing listens (connections are refused).
pub const CLOSED: u16 = 7999;
/// UDP: echoes every datagram to its sender.
pub const UDP_ECHO: u16 = 7002;
/// UDP: answers each datagram with the sender's address.
pub const WHOAMI_A: u16 = 7006;
/// UDP: the same on another port.
pub const WHOAMI_B: u16 = 7007;

/// A simple order-sensitive digest of a byte stream.
pub fn digest(bytes: &[u8]) -> u64 {
    bytes
        .iter()
        .fold(0xcbf2_9ce4_8422_2325u64, |hash, &b| (hash ^ u64::from(b)).wrapping_mul(0x100_0000_01b3))
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect()
}

fn tcp(port: u16, handler: impl Fn(TcpStream) + Send + Sync + Clone + 'static) {
    // Dual stack: IPv4 clients show as IPv4-mapped IPv6 addresses.
    let listener = TcpListener::bind(SocketAddr::from(([0u16; 8], port))).expect("server bind");
    std::thread::spawn(move || {
        for stream in listener.incoming().map_while(Result::ok) {
            let handler = handler.clone();
            std::thread::spawn(move || {
                let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
                handler(stream)
            });
        }
    });
}

fn udp(address: SocketAddr, answer: impl Fn(&[u8], SocketAddr) -> Vec<u8> + Send + 'static) {
    // Bound to the server address, which the topology adds after the server started: replies
    // come from it, not from the link the route picks.
    std::thread::spawn(move || {
        // (A bind before the address exists may succeed while `lo` is down, and such a socket
        // answers from the link's address.)
        let has_address = || {
            nix::ifaddrs::getifaddrs().is_ok_and(|mut all| {
                all.any(|a| {
                    let Some(found) = a.address else { return false };
                    let v4 = found.as_sockaddr_in().map(|v4| std::net::IpAddr::V4(v4.ip()));
                    let v6 = found.as_sockaddr_in6().map(|v6| std::net::IpAddr::V6(v6.ip()));
                    v4.or(v6) == Some(address.ip())
                })
            })
        };
        // (An IPv6 address may still be tentative for a moment: retry the bind too.)
        let socket = loop {
            if has_address() {
                if let Ok(socket) = UdpSocket::bind(address) {
                    break socket;
                }
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        let mut buf = vec![0u8; 65536];
        while let Ok((n, from)) = socket.recv_from(&mut buf) {
            let _ = socket.send_to(&answer(&buf[..n], from), from);
        }
    });
}

/// Starts every service, prints `listening`, and runs until stdin closes (the parent died).
pub fn serve() {
    tcp(PEER, |mut stream| {
        if let Ok(peer) = stream.peer_addr() {
            let _ = stream.write_all(format!("peer={}\n", peer.ip().to_canonical()).as_bytes());
        }
    });
    let echo = |mut stream: TcpStream| {
        let mut buf = [0u8; 65536];
        while let Ok(n) = stream.read(&mut buf) {
            if n == 0 || stream.write_all(&buf[..n]).is_err() {
                break;
            }
        }
    };
    tcp(ECHO, echo);
    tcp(ECHO_IDLE, move |stream| {
        let _ = stream.set_read_timeout(None);
        echo(stream)
    });
    let last = Arc::new(Mutex::new(String::from("none")));
    let record = last.clone();
    tcp(SERVER_FIRST, move |mut stream| {
        if stream.write_all(&pattern(200_000, 5)).is_err() || stream.shutdown(Shutdown::Write).is_err() {
            return;
        }
        let mut received = Vec::new();
        if stream.read_to_end(&mut received).is_ok() {
            *record.lock().unwrap() = format!("{} {}", received.len(), digest(&received));
        }
    });
    tcp(LAST_COUNT, move |mut stream| {
        let answer = last.lock().unwrap().clone();
        let _ = stream.write_all(format!("{answer}\n").as_bytes());
    });
    tcp(RESET, |mut stream| {
        let mut buf = [0u8; 64];
        let _ = stream.read(&mut buf);
        let _ = socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO));
    });
    for ip in [std::net::IpAddr::from([10, 200, 9, 1]), "2001:db8:9::1".parse().unwrap()] {
        udp(SocketAddr::new(ip, UDP_ECHO), |datagram, _| datagram.to_vec());
    }
    udp(SocketAddr::from(([10, 200, 9, 1], WHOAMI_A)), |_, from| from.to_string().into_bytes());
    udp(SocketAddr::from(([10, 200, 9, 1], WHOAMI_B)), |_, from| from.to_string().into_bytes());
    crate::scale::server::serve();
    crate::udp_flood::serve();
    println!("listening");
    let _ = std::io::stdout().flush();
    let _ = std::io::stdin().read_to_end(&mut Vec::new());
}
