//! The server namespace's side (this executable as `--child tun-server`): it moves into a new
//! network namespace, puts 10.200.9.1 on its loopback, and serves TCP and UDP on that address
//! until it is killed. The parent links the namespace to its own with the `wifi0` veth.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

/// The server's address (on its loopback, reached over the veth).
pub const SERVER: [u8; 4] = [10, 200, 9, 1];
/// TCP: reads to the end, answers the byte count (u64 big-endian).
pub const SINK: u16 = 5001;
/// TCP: reads a byte count (u64 big-endian), sends that many bytes, closes.
pub const SOURCE: u16 = 5002;
/// TCP: echoes (TCP_NODELAY) until the end.
pub const ECHO: u16 = 5003;
/// TCP: holds the connection, reading, until the end.
pub const HOLD: u16 = 5004;
/// UDP: echoes every datagram.
pub const UDP_ECHO: u16 = 5005;
/// UDP: a request (count u64, size u32, datagrams per second u32) is answered with that many
/// datagrams of that size at that rate, each starting with its sequence number (u32).
pub const UDP_BLAST: u16 = 5006;
/// UDP: receives and discards.
pub const UDP_DISCARD: u16 = 5007;
/// UDP: counts an upload. Each datagram starts with a trial number (u32) and a sequence number
/// (u32); an 8-byte datagram with sequence number `u32::MAX` asks how many distinct datagrams
/// of its trial arrived, answered with that count (u64).
pub const UDP_COUNT: u16 = 5008;
/// The sequence number of a count query to [`UDP_COUNT`].
pub const COUNT_QUERY: u32 = u32::MAX;

/// `addr` on the server.
pub fn at(port: u16) -> SocketAddr {
    SocketAddr::from((SERVER, port))
}

fn run(program: &str, args: &[&str]) -> Result<(), String> {
    let output =
        std::process::Command::new(program).args(args).output().map_err(|e| format!("{program}: {e}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!("`{program} {}`: {}", args.join(" "), String::from_utf8_lossy(&output.stderr).trim()))
    }
}

fn tcp(port: u16, handler: fn(TcpStream) -> std::io::Result<()>) -> Result<(), String> {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
        .map_err(|e| format!("socket: {e}"))?;
    socket.set_reuse_address(true).map_err(|e| format!("SO_REUSEADDR: {e}"))?;
    socket.bind(&at(port).into()).map_err(|e| format!("bind {}: {e}", at(port)))?;
    socket.listen(4096).map_err(|e| format!("listen {}: {e}", at(port)))?;
    let listener: TcpListener = socket.into();
    std::thread::spawn(move || {
        for stream in listener.incoming().map_while(Result::ok) {
            // Small stacks: the idle section holds 9,000 connections, a thread each.
            let _ = std::thread::Builder::new().stack_size(64 * 1024).spawn(move || handler(stream));
        }
    });
    println!("LISTEN tcp{port} {}", at(port));
    Ok(())
}

fn udp(port: u16, serve: fn(UdpSocket)) -> Result<(), String> {
    let socket = UdpSocket::bind(at(port)).map_err(|e| format!("bind UDP {}: {e}", at(port)))?;
    let _ = socket2::SockRef::from(&socket).set_recv_buffer_size(4 << 20);
    let _ = socket2::SockRef::from(&socket).set_send_buffer_size(4 << 20);
    std::thread::spawn(move || serve(socket));
    println!("LISTEN udp{port} {}", at(port));
    Ok(())
}

/// The child's entry point (`--child tun-server`): runs until killed.
pub fn serve(_args: &[String]) -> Result<(), String> {
    // SAFETY: unshare with a flag; this process is still single-threaded.
    if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
        return Err(format!("unshare(CLONE_NEWNET): {}", std::io::Error::last_os_error()));
    }
    run("ip", &["link", "set", "lo", "up"])?;
    run("ip", &["addr", "add", "10.200.9.1/32", "dev", "lo"])?;
    tcp(SINK, |mut stream| {
        let mut buf = vec![0u8; 1 << 20];
        let mut total = 0u64;
        loop {
            match stream.read(&mut buf)? {
                0 => break,
                n => total += n as u64,
            }
        }
        stream.write_all(&total.to_be_bytes())
    })?;
    tcp(SOURCE, |mut stream| {
        let mut word = [0u8; 8];
        stream.read_exact(&mut word)?;
        let mut left = u64::from_be_bytes(word);
        let buf = vec![0x5au8; 1 << 20];
        while left > 0 {
            let n = left.min(buf.len() as u64) as usize;
            stream.write_all(&buf[..n])?;
            left -= n as u64;
        }
        Ok(())
    })?;
    tcp(ECHO, |mut stream| {
        stream.set_nodelay(true)?;
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf)? {
                0 => return Ok(()),
                n => stream.write_all(&buf[..n])?,
            }
        }
    })?;
    tcp(HOLD, |mut stream| {
        let mut buf = [0u8; 64];
        while stream.read(&mut buf)? > 0 {}
        Ok(())
    })?;
    udp(UDP_ECHO, |socket| {
        let mut buf = vec![0u8; 65536];
        while let Ok((n, from)) = socket.recv_from(&mut buf) {
            let _ = socket.send_to(&buf[..n], from);
        }
    })?;
    udp(UDP_BLAST, |socket| {
        let mut request = [0u8; 16];
        while let Ok((n, from)) = socket.recv_from(&mut request) {
            if n == 16 {
                let count = u64::from_be_bytes(request[..8].try_into().unwrap_or_default());
                let size = u32::from_be_bytes(request[8..12].try_into().unwrap_or_default()) as usize;
                let rate = u32::from_be_bytes(request[12..].try_into().unwrap_or_default());
                blast(&socket, from, count, size.clamp(4, 65000), f64::from(rate.max(1)));
            }
        }
    })?;
    udp(UDP_DISCARD, |socket| {
        let mut buf = vec![0u8; 65536];
        while socket.recv_from(&mut buf).is_ok() {}
    })?;
    udp(UDP_COUNT, |socket| {
        let mut buf = vec![0u8; 65536];
        let (mut trial, mut seen, mut count) = (u32::MAX, Vec::<bool>::new(), 0u64);
        while let Ok((n, from)) = socket.recv_from(&mut buf) {
            if n < 8 {
                continue;
            }
            let word = |at: usize| u32::from_be_bytes([buf[at], buf[at + 1], buf[at + 2], buf[at + 3]]);
            let (this, seq) = (word(0), word(4));
            if this != trial {
                (trial, count) = (this, 0);
                seen.clear();
            }
            if seq == COUNT_QUERY {
                let _ = socket.send_to(&count.to_be_bytes(), from);
            } else if seq < 1 << 24 {
                let seq = seq as usize;
                if seq >= seen.len() {
                    seen.resize(seq + 1, false);
                }
                if !std::mem::replace(&mut seen[seq], true) {
                    count += 1;
                }
            }
        }
    })?;
    println!("READY");
    let _ = std::io::stdout().flush();
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

/// Sends `count` datagrams of `size` bytes to `to` at `rate` per second (in 1 ms steps).
fn blast(socket: &UdpSocket, to: SocketAddr, count: u64, size: usize, rate: f64) {
    let mut datagram = vec![0x33u8; size];
    let started = Instant::now();
    let mut sent = 0u64;
    while sent < count {
        let due = ((started.elapsed().as_secs_f64() * rate) as u64 + 1).min(count);
        while sent < due {
            datagram[..4].copy_from_slice(&(sent as u32).to_be_bytes());
            let _ = socket.send_to(&datagram, to);
            sent += 1;
        }
        std::thread::sleep(Duration::from_micros(500));
    }
}
