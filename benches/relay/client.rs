//! The benchmark's TCP client side: how a connection reaches the server (directly, through a
//! plain forward, or through a SOCKS5 CONNECT), bulk transfers and the echo exchange.

use std::net::{SocketAddr, SocketAddrV4};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::server::{CHUNK, PATTERN};

/// Bound on one connect, handshake or small exchange.
pub const OP_TIMEOUT: Duration = Duration::from_secs(10);

/// How a client connection reaches the server.
#[derive(Debug, Clone, Copy)]
pub enum Route {
    /// Straight to the server.
    Direct(SocketAddr),
    /// To a relay that forwards every connection to the server (no handshake).
    Forward(SocketAddr),
    /// To a SOCKS5 relay: greeting (no authentication), then CONNECT to `target`.
    Socks { proxy: SocketAddr, target: SocketAddrV4 },
}

/// A connection ready for the server's protocol.
pub struct Opened {
    /// The connection.
    pub stream: TcpStream,
    /// For SOCKS: from the start of connect() to the whole CONNECT reply.
    pub reply: Option<Duration>,
    /// When connect() started.
    pub started: Instant,
}

/// Connects along `route` (for SOCKS: waits for the method reply, then for the CONNECT reply, as
/// a SOCKS client does).
pub async fn open(route: Route) -> Result<Opened, String> {
    let address = match route {
        Route::Direct(a) | Route::Forward(a) => a,
        Route::Socks { proxy, .. } => proxy,
    };
    let started = Instant::now();
    let work = async {
        let mut stream = TcpStream::connect(address).await.map_err(|e| format!("connect {address}: {e}"))?;
        let Route::Socks { target, .. } = route else {
            return Ok(Opened { stream, reply: None, started });
        };
        let io = |e: std::io::Error| format!("SOCKS5 via {address}: {e}");
        stream.write_all(&[5, 1, 0]).await.map_err(io)?;
        let mut method = [0u8; 2];
        stream.read_exact(&mut method).await.map_err(io)?;
        if method != [5, 0] {
            return Err(format!("SOCKS5 via {address}: method reply {method:?}"));
        }
        let mut request = vec![5, 1, 0, 1];
        request.extend_from_slice(&target.ip().octets());
        request.extend_from_slice(&target.port().to_be_bytes());
        stream.write_all(&request).await.map_err(io)?;
        let mut head = [0u8; 4];
        stream.read_exact(&mut head).await.map_err(io)?;
        if head[..3] != [5, 0, 0] {
            return Err(format!("SOCKS5 CONNECT {target} via {address}: reply {head:?}"));
        }
        let rest = match head[3] {
            1 => 4 + 2,
            4 => 16 + 2,
            other => return Err(format!("SOCKS5 via {address}: reply address type {other}")),
        };
        let mut bound = [0u8; 18];
        stream.read_exact(&mut bound[..rest]).await.map_err(io)?;
        Ok(Opened { stream, reply: Some(started.elapsed()), started })
    };
    tokio::time::timeout(OP_TIMEOUT, work).await.map_err(|_| format!("open via {address}: timed out"))?
}

/// Sends `message` (mode byte `E` first) and checks the echo; returns when it has arrived.
pub async fn echo(stream: &mut TcpStream, message: &[u8]) -> Result<(), String> {
    let work = async {
        stream.write_all(message).await.map_err(|e| format!("echo write: {e}"))?;
        let mut answer = vec![0u8; message.len()];
        stream.read_exact(&mut answer).await.map_err(|e| format!("echo read: {e}"))?;
        if answer != message {
            return Err(format!("echo returned {answer:?} for {message:?}"));
        }
        Ok(())
    };
    tokio::time::timeout(OP_TIMEOUT, work).await.map_err(|_| "echo: timed out".to_string())?
}

/// Direction of a bulk transfer, seen from the client.
#[derive(Debug, Clone, Copy)]
pub enum Direction {
    Upload,
    Download,
}

/// Moves `bytes` through one connection along `route` and checks the count arrived whole.
pub async fn transfer(route: Route, direction: Direction, bytes: u64) -> Result<(), String> {
    let mut stream = open(route).await?.stream;
    let io = |e: std::io::Error| format!("{direction:?} via {route:?}: {e}");
    match direction {
        Direction::Upload => {
            stream.write_u8(b'U').await.map_err(io)?;
            let mut left = bytes;
            while left > 0 {
                let n = left.min(CHUNK as u64) as usize;
                stream.write_all(&PATTERN[..n]).await.map_err(io)?;
                left -= n as u64;
            }
            stream.shutdown().await.map_err(io)?;
            let received = stream.read_u64().await.map_err(io)?;
            if received != bytes {
                return Err(format!("upload via {route:?}: server got {received} of {bytes} bytes"));
            }
        }
        Direction::Download => {
            stream.write_u8(b'D').await.map_err(io)?;
            stream.write_u64(bytes).await.map_err(io)?;
            let mut buffer = vec![0u8; CHUNK];
            let mut received = 0u64;
            loop {
                match stream.read(&mut buffer).await.map_err(io)? {
                    0 => break,
                    n => received += n as u64,
                }
            }
            if received != bytes {
                return Err(format!("download via {route:?}: got {received} of {bytes} bytes"));
            }
        }
    }
    Ok(())
}
