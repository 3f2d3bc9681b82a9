//! What one soak client does: each scenario is one SOCKS5 session with an outcome it checks.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UdpSocket;

use super::peers::{fill, receive, send, socks_request, Peers};
use super::Rng;

const CONNECT: u8 = 1;
const UDP_ASSOCIATE: u8 = 3;
/// SOCKS reply "connection refused".
const REFUSED: u8 = 5;
/// How long one datagram's echo may take before it counts as lost (loopback: never, unless the
/// relay dropped it).
const DATAGRAM_WAIT: Duration = Duration::from_secs(5);

/// The kinds of session, with how often each is picked (weights out of 100).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Random-size data both ways, the client half-closes first, every byte checked.
    Echo,
    /// The destination sends and half-closes first, then the client sends and closes.
    Download,
    /// The client resets the connection in the middle of a transfer.
    ClientReset,
    /// The destination resets the connection after the first bytes.
    ServerReset,
    /// CONNECT to a port nobody listens on: reply 0x05.
    Refused,
    /// A UDP association with a few datagrams of random sizes, each echoed and checked.
    Udp,
    /// A client that gives up during the handshake or speaks HTTP to the SOCKS port.
    Abort,
}

impl Kind {
    /// Every kind, for reports.
    pub const ALL: [Kind; 7] = [
        Kind::Echo,
        Kind::Download,
        Kind::ClientReset,
        Kind::ServerReset,
        Kind::Refused,
        Kind::Udp,
        Kind::Abort,
    ];
    const WEIGHTS: [u64; 7] = [35, 15, 10, 10, 10, 12, 8];

    /// A kind picked at random by weight.
    pub fn pick(rng: &mut Rng) -> Kind {
        let mut roll = rng.below(Kind::WEIGHTS.iter().sum());
        for (kind, weight) in Kind::ALL.iter().zip(Kind::WEIGHTS) {
            if roll < weight {
                return *kind;
            }
            roll -= weight;
        }
        Kind::Echo
    }

    /// Its position in [`Kind::ALL`].
    pub fn index(self) -> usize {
        Kind::ALL.iter().position(|k| *k == self).unwrap_or(0)
    }
}

/// Bytes a session moved through the relay (client to destination, destination to client).
#[derive(Debug, Default, Clone, Copy)]
pub struct Moved {
    pub up: u64,
    pub down: u64,
}

/// Runs one session of `kind` through the SOCKS server at `proxy`. An error is an unexpected
/// outcome, described for the report.
pub async fn run(kind: Kind, proxy: SocketAddr, peers: &Peers, rng: &mut Rng) -> Result<Moved, String> {
    let result = match kind {
        Kind::Echo => echo(proxy, peers, rng).await,
        Kind::Download => download(proxy, peers, rng).await,
        Kind::ClientReset => client_reset(proxy, peers, rng).await,
        Kind::ServerReset => server_reset(proxy, peers, rng).await,
        Kind::Refused => refused(proxy, peers, rng).await,
        Kind::Udp => udp(proxy, peers, rng).await,
        Kind::Abort => abort(proxy, rng).await,
    };
    result.map_err(|error| format!("{kind:?}: {error}"))
}

/// A size from 0 to 1 MiB, most of them small (log-uniform).
fn size(rng: &mut Rng) -> u64 {
    let bits = rng.below(21);
    rng.below(1 << bits)
}

async fn connect(proxy: SocketAddr, target: SocketAddr, rng: &mut Rng) -> io::Result<tokio::net::TcpStream> {
    let (stream, code, _) = socks_request(proxy, CONNECT, target, rng.below(2) == 0).await?;
    if code != 0 {
        return Err(io::Error::other(format!("CONNECT {target}: reply {code}")));
    }
    Ok(stream)
}

async fn echo(proxy: SocketAddr, peers: &Peers, rng: &mut Rng) -> io::Result<Moved> {
    let mut stream = connect(proxy, peers.echo, rng).await?;
    let (len, seed) = (size(rng), rng.bits());
    let (mut reader, mut writer) = stream.split();
    let sending = async {
        send(&mut writer, seed, len).await?;
        writer.shutdown().await
    };
    let (sent, received) = tokio::join!(sending, receive(&mut reader, seed));
    sent?;
    let got = received?;
    if got != len {
        return Err(io::Error::other(format!("echoed {got} of {len} bytes")));
    }
    Ok(Moved { up: len, down: len })
}

async fn download(proxy: SocketAddr, peers: &Peers, rng: &mut Rng) -> io::Result<Moved> {
    let mut stream = connect(proxy, peers.download, rng).await?;
    let (down, up) = (size(rng), size(rng) / 4);
    let mut header = down.to_be_bytes().to_vec();
    header.extend_from_slice(&up.to_be_bytes());
    stream.write_all(&header).await?;
    // The destination half-closes first; the client's direction stays open and is used after.
    let got = receive(&mut stream, down).await?;
    if got != down {
        return Err(io::Error::other(format!("received {got} of {down} bytes before EOF")));
    }
    send(&mut stream, up, up).await?;
    stream.shutdown().await?;
    Ok(Moved { up: up + 16, down })
}

async fn client_reset(proxy: SocketAddr, peers: &Peers, rng: &mut Rng) -> io::Result<Moved> {
    let mut stream = connect(proxy, peers.echo, rng).await?;
    let len = rng.below(64 * 1024) + 1;
    send(&mut stream, 7, len).await?;
    let mut some = vec![0u8; rng.below(len) as usize + 1];
    let read = stream.read(&mut some).await?;
    socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO))?;
    drop(stream);
    Ok(Moved { up: len, down: read as u64 })
}

async fn server_reset(proxy: SocketAddr, peers: &Peers, rng: &mut Rng) -> io::Result<Moved> {
    let mut stream = connect(proxy, peers.reset, rng).await?;
    let len = rng.below(4096) + 1;
    send(&mut stream, 9, len).await?;
    let mut buf = [0u8; 1024];
    match stream.read(&mut buf).await {
        Ok(0) => Ok(Moved { up: len, down: 0 }),
        Ok(_) => Err(io::Error::other("data from a destination that sends nothing")),
        Err(error) if error.kind() == io::ErrorKind::ConnectionReset => Ok(Moved { up: len, down: 0 }),
        Err(error) => Err(error),
    }
}

async fn refused(proxy: SocketAddr, peers: &Peers, rng: &mut Rng) -> io::Result<Moved> {
    let (mut stream, code, _) = socks_request(proxy, CONNECT, peers.refused, rng.below(2) == 0).await?;
    if code != REFUSED {
        return Err(io::Error::other(format!("CONNECT {}: reply {code}, expected {REFUSED}", peers.refused)));
    }
    let mut rest = [0u8; 16];
    let n = stream.read(&mut rest).await?;
    if n != 0 {
        return Err(io::Error::other(format!("{n} bytes after a failure reply")));
    }
    Ok(Moved::default())
}

async fn udp(proxy: SocketAddr, peers: &Peers, rng: &mut Rng) -> io::Result<Moved> {
    let socket = UdpSocket::bind("127.0.0.1:0").await?;
    let announce = if rng.below(2) == 0 {
        socket.local_addr()?
    } else {
        "0.0.0.0:0".parse().map_err(io::Error::other)?
    };
    let (control, code, relay) = socks_request(proxy, UDP_ASSOCIATE, announce, rng.below(2) == 0).await?;
    if code != 0 {
        return Err(io::Error::other(format!("UDP ASSOCIATE: reply {code}")));
    }
    let SocketAddr::V4(echo) = peers.udp_echo else { return Err(io::Error::other("UDP echo is not IPv4")) };
    let mut header = vec![0, 0, 0, 1];
    header.extend_from_slice(&echo.ip().octets());
    header.extend_from_slice(&echo.port().to_be_bytes());
    let mut moved = Moved::default();
    let mut reply = vec![0u8; 65_536];
    for _ in 0..rng.below(10) + 1 {
        let len = if rng.below(10) == 0 { rng.below(16_000) + 1 } else { rng.below(1400) + 1 } as usize;
        let mut datagram = header.clone();
        datagram.resize(header.len() + len, 0);
        fill(rng.bits(), 0, &mut datagram[header.len()..]);
        socket.send_to(&datagram, relay).await?;
        let n = match tokio::time::timeout(DATAGRAM_WAIT, socket.recv(&mut reply)).await {
            Ok(received) => received?,
            Err(_) => return Err(io::Error::other(format!("no echo of a {len}-byte datagram"))),
        };
        if reply[..n] != datagram[..] {
            return Err(io::Error::other(format!("echo of a {len}-byte datagram differs ({n} bytes)")));
        }
        moved.up += len as u64;
        moved.down += len as u64;
    }
    drop(control);
    Ok(moved)
}

async fn abort(proxy: SocketAddr, rng: &mut Rng) -> io::Result<Moved> {
    let mut stream = tokio::net::TcpStream::connect(proxy).await?;
    match rng.below(4) {
        0 => {} // connect and close
        1 => stream.write_all(&[5]).await?,
        2 => stream.write_all(&[5, 1, 0, 5, 1, 0, 3, 20, b'a']).await?,
        _ => {
            // Not SOCKS: the server closes without a reply.
            stream.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await?;
            let mut rest = Vec::new();
            match stream.read_to_end(&mut rest).await {
                Ok(_) if rest.is_empty() => {}
                Ok(_) => return Err(io::Error::other(format!("{} bytes answered to HTTP", rest.len()))),
                Err(error) if error.kind() == io::ErrorKind::ConnectionReset => {}
                Err(error) => return Err(error),
            }
        }
    }
    Ok(Moved::default())
}
