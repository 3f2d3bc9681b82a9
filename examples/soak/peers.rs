//! The soak's destinations on loopback, a minimal SOCKS5 client, and deterministic test data.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream, UdpSocket};

use super::Stats;

/// Byte `index` of the data stream named `seed` (any offset can be checked on its own).
pub fn pattern_byte(seed: u64, index: u64) -> u8 {
    let mut z = seed.wrapping_add((index / 8).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    (z >> (8 * (index % 8))) as u8
}

/// Fills `buf` with the stream `seed` from `offset` on.
pub fn fill(seed: u64, offset: u64, buf: &mut [u8]) {
    for (i, byte) in buf.iter_mut().enumerate() {
        *byte = pattern_byte(seed, offset + i as u64);
    }
}

/// The destinations every scenario uses.
#[derive(Debug, Clone, Copy)]
pub struct Peers {
    /// Echoes everything; after the client's EOF, sends EOF.
    pub echo: SocketAddr,
    /// Reads a 16-byte header `N M`, sends N bytes of stream N and EOF, then expects M bytes of
    /// stream M and the client's EOF (the server closes its side first).
    pub download: SocketAddr,
    /// Reads one chunk, then resets the connection (RST).
    pub reset: SocketAddr,
    /// Bound but not listening: every connect is refused.
    pub refused: SocketAddr,
    /// Echoes UDP datagrams.
    pub udp_echo: SocketAddr,
}

/// Starts the destinations. The refusing socket is returned to keep its port reserved.
pub async fn start(stats: Arc<Stats>) -> io::Result<(Peers, TcpSocket)> {
    let echo = TcpListener::bind("127.0.0.1:0").await?;
    let download = TcpListener::bind("127.0.0.1:0").await?;
    let reset = TcpListener::bind("127.0.0.1:0").await?;
    let refused = TcpSocket::new_v4()?;
    refused.bind("127.0.0.1:0".parse().map_err(io::Error::other)?)?;
    let udp = UdpSocket::bind("127.0.0.1:0").await?;
    let peers = Peers {
        echo: echo.local_addr()?,
        download: download.local_addr()?,
        reset: reset.local_addr()?,
        refused: refused.local_addr()?,
        udp_echo: udp.local_addr()?,
    };
    serve(echo, stats.clone(), |stream, _| echo_one(stream));
    serve(download, stats.clone(), download_one);
    serve(reset, stats.clone(), |stream, _| reset_one(stream));
    let udp_stats = stats;
    tokio::spawn(async move {
        let mut buf = vec![0u8; 65_536];
        while let Ok((n, from)) = udp.recv_from(&mut buf).await {
            if udp.send_to(&buf[..n], from).await.is_err() {
                udp_stats.error(format!("UDP echo: send to {from} failed"));
            }
        }
    });
    Ok((peers, refused))
}

/// Accepts forever, each connection on its own task.
fn serve<F, Fut>(listener: TcpListener, stats: Arc<Stats>, handle: F)
where
    F: Fn(TcpStream, Arc<Stats>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    tokio::spawn(async move {
        loop {
            match listener.accept().await {
                Ok((stream, _)) => {
                    tokio::spawn(handle(stream, stats.clone()));
                }
                Err(error) => {
                    stats.error(format!("destination accept failed: {error}"));
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                }
            }
        }
    });
}

async fn echo_one(mut stream: TcpStream) {
    // Errors are the client's to see (resets are part of the churn).
    let (mut reader, mut writer) = stream.split();
    if tokio::io::copy(&mut reader, &mut writer).await.is_ok() {
        let _ = writer.shutdown().await;
        let mut rest = [0u8; 1];
        let _ = reader.read(&mut rest).await;
    }
}

async fn download_one(mut stream: TcpStream, stats: Arc<Stats>) {
    let mut header = [0u8; 16];
    if stream.read_exact(&mut header).await.is_err() {
        return; // the client went away before asking: its own scenario reports that
    }
    let down = u64::from_be_bytes(header[..8].try_into().unwrap_or_default());
    let up = u64::from_be_bytes(header[8..].try_into().unwrap_or_default());
    if let Err(error) = send(&mut stream, down, down).await {
        return stats.error(format!("download server: send {down} bytes: {error}"));
    }
    if let Err(error) = stream.shutdown().await {
        return stats.error(format!("download server: shutdown: {error}"));
    }
    match receive(&mut stream, up).await {
        Ok(got) if got == up => {}
        Ok(got) => stats.error(format!("download server: {got} bytes after its EOF, expected {up}")),
        Err(error) => stats.error(format!("download server: receive {up} bytes: {error}")),
    }
}

async fn reset_one(mut stream: TcpStream) {
    let mut buf = [0u8; 4096];
    let _ = stream.read(&mut buf).await;
    let _ = socket2::SockRef::from(&stream).set_linger(Some(std::time::Duration::ZERO));
}

/// Writes `len` bytes of stream `seed` in chunks.
pub async fn send(stream: &mut (impl AsyncWriteExt + Unpin), seed: u64, len: u64) -> io::Result<()> {
    let mut buf = vec![0u8; 16 * 1024];
    let mut sent = 0;
    while sent < len {
        let n = (len - sent).min(buf.len() as u64) as usize;
        fill(seed, sent, &mut buf[..n]);
        stream.write_all(&buf[..n]).await?;
        sent += n as u64;
    }
    Ok(())
}

/// Reads to EOF, checking the bytes are stream `seed`; returns how many arrived.
pub async fn receive(stream: &mut (impl AsyncReadExt + Unpin), seed: u64) -> io::Result<u64> {
    let mut buf = vec![0u8; 16 * 1024];
    let mut got = 0u64;
    loop {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Ok(got);
        }
        for (i, byte) in buf[..n].iter().enumerate() {
            if *byte != pattern_byte(seed, got + i as u64) {
                let at = got + i as u64;
                return Err(io::Error::new(io::ErrorKind::InvalidData, format!("byte {at} differs")));
            }
        }
        got += n as u64;
    }
}

/// Opens a SOCKS5 session to `proxy` and sends CONNECT (or UDP ASSOCIATE) for `target`;
/// `pipelined` sends greeting and request in one write. Returns the stream and the reply.
pub async fn socks_request(
    proxy: SocketAddr,
    command: u8,
    target: SocketAddr,
    pipelined: bool,
) -> io::Result<(TcpStream, u8, SocketAddr)> {
    let mut stream = TcpStream::connect(proxy).await?;
    let mut request = vec![5, command, 0];
    match target {
        SocketAddr::V4(a) => {
            request.push(1);
            request.extend_from_slice(&a.ip().octets());
        }
        SocketAddr::V6(a) => {
            request.push(4);
            request.extend_from_slice(&a.ip().octets());
        }
    }
    request.extend_from_slice(&target.port().to_be_bytes());
    if pipelined {
        let mut both = vec![5, 1, 0];
        both.extend_from_slice(&request);
        stream.write_all(&both).await?;
    } else {
        stream.write_all(&[5, 1, 0]).await?;
    }
    let mut method = [0u8; 2];
    stream.read_exact(&mut method).await?;
    if method != [5, 0] {
        return Err(io::Error::other(format!("method reply {method:?}")));
    }
    if !pipelined {
        stream.write_all(&request).await?;
    }
    let mut head = [0u8; 4];
    stream.read_exact(&mut head).await?;
    let bound = match head[3] {
        1 => {
            let mut rest = [0u8; 6];
            stream.read_exact(&mut rest).await?;
            let ip = std::net::Ipv4Addr::new(rest[0], rest[1], rest[2], rest[3]);
            SocketAddr::new(ip.into(), u16::from_be_bytes([rest[4], rest[5]]))
        }
        4 => {
            let mut rest = [0u8; 18];
            stream.read_exact(&mut rest).await?;
            let octets: [u8; 16] = rest[..16].try_into().map_err(io::Error::other)?;
            SocketAddr::new(std::net::Ipv6Addr::from(octets).into(), u16::from_be_bytes([rest[16], rest[17]]))
        }
        other => return Err(io::Error::other(format!("reply address type {other}"))),
    };
    Ok((stream, head[1], bound))
}
