//! A minimal SOCKS5 client and test servers for the SOCKS reliability tests: start a proxy, speak
//! the handshake step by step, an echo server and a server that answers in two small writes.
#![allow(dead_code)]

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use netswitch::inbound::socks::{SocksServer, SocksSettings};
use netswitch::{ConnectionManager, DirectOutbound, Outbound, RelaySettings};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

/// Bound on every single wait.
pub const WAIT: Duration = Duration::from_secs(10);

/// A running SOCKS server with its manager.
pub struct Proxy {
    pub server: SocksServer,
    pub manager: Arc<ConnectionManager>,
}

impl Proxy {
    pub fn addr(&self) -> SocketAddr {
        self.server.local_addr()
    }
}

/// Starts a SOCKS server on 127.0.0.1 (port 0) with `settings` otherwise.
pub async fn start_proxy(settings: SocksSettings) -> Proxy {
    start_proxy_via(settings, Arc::new(DirectOutbound::default())).await
}

/// Like [`start_proxy`], dialing through `outbound`.
pub async fn start_proxy_via(mut settings: SocksSettings, outbound: Arc<dyn Outbound>) -> Proxy {
    let manager = Arc::new(ConnectionManager::new(RelaySettings::default()));
    settings.listen = "127.0.0.1:0".parse().unwrap();
    let server = SocksServer::start(settings, manager.clone(), outbound).await.unwrap();
    Proxy { server, manager }
}

/// `VER CMD=CONNECT RSV ATYP ADDR PORT` for an IP destination.
pub fn connect_request(destination: SocketAddr) -> Vec<u8> {
    let mut request = vec![5, 1, 0];
    match destination.ip() {
        IpAddr::V4(ip) => {
            request.push(1);
            request.extend_from_slice(&ip.octets());
        }
        IpAddr::V6(ip) => {
            request.push(4);
            request.extend_from_slice(&ip.octets());
        }
    }
    request.extend_from_slice(&destination.port().to_be_bytes());
    request
}

/// `VER CMD=CONNECT RSV ATYP=domain LEN NAME PORT` (the name's raw bytes, unchecked).
pub fn domain_request(name: &[u8], port: u16) -> Vec<u8> {
    let mut request = vec![5, 1, 0, 3, name.len() as u8];
    request.extend_from_slice(name);
    request.extend_from_slice(&port.to_be_bytes());
    request
}

/// An RFC 1929 username/password message.
pub fn credentials(username: &[u8], password: &[u8]) -> Vec<u8> {
    let mut message = vec![1, username.len() as u8];
    message.extend_from_slice(username);
    message.push(password.len() as u8);
    message.extend_from_slice(password);
    message
}

/// Greets (no auth), sends CONNECT to `destination`, and returns the stream once the success
/// reply arrived. Any failure is an error (nothing panics: flood tests count failures).
pub async fn open_tunnel(proxy: SocketAddr, destination: SocketAddr) -> io::Result<TcpStream> {
    let mut stream = TcpStream::connect(proxy).await?;
    stream.set_nodelay(true)?;
    stream.write_all(&[5, 1, 0]).await?;
    let mut method = [0u8; 2];
    stream.read_exact(&mut method).await?;
    if method != [5, 0] {
        return Err(io::Error::other(format!("method reply {method:?}")));
    }
    stream.write_all(&connect_request(destination)).await?;
    let mut reply = [0u8; 10];
    stream.read_exact(&mut reply).await?;
    if reply[..2] != [5, 0] {
        return Err(io::Error::other(format!("CONNECT reply {reply:?}")));
    }
    Ok(stream)
}

/// Opens a tunnel to the echo server at `echo` and checks one round trip.
pub async fn tunnel_and_echo(proxy: SocketAddr, echo: SocketAddr) -> io::Result<()> {
    let mut stream = open_tunnel(proxy, echo).await?;
    stream.write_all(b"ping through the proxy").await?;
    let mut back = [0u8; 22];
    stream.read_exact(&mut back).await?;
    if &back != b"ping through the proxy" {
        return Err(io::Error::other("echo differs"));
    }
    Ok(())
}

/// An echo server on 127.0.0.1 (with a listen backlog for 4,096 waiting connections, so a burst
/// of relayed connections does not overflow it); returns its address.
pub async fn echo_server() -> SocketAddr {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = socket.listen(4096).unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (mut read, mut write) = stream.split();
                let _ = tokio::io::copy(&mut read, &mut write).await;
            });
        }
    });
    addr
}

/// Reads until the peer closes (or resets); returns the bytes and whether it ended in a reset.
pub async fn read_to_end(stream: &mut TcpStream) -> (Vec<u8>, Option<io::Error>) {
    let mut received = Vec::new();
    let mut chunk = [0u8; 1024];
    loop {
        match timeout(WAIT, stream.read(&mut chunk)).await {
            Err(_) => return (received, Some(io::Error::new(io::ErrorKind::TimedOut, "no close"))),
            Ok(Ok(0)) => return (received, None),
            Ok(Ok(n)) => received.extend_from_slice(&chunk[..n]),
            Ok(Err(error)) => return (received, Some(error)),
        }
    }
}

/// The median of `samples` (sorted in place).
pub fn median(samples: &mut [Duration]) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}
