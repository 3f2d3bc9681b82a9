//! The benchmark's UDP client: how its datagrams reach the echo server (directly, through the
//! baseline relay, or through netswitch's SOCKS5 UDP ASSOCIATE with the RFC 1928 header), on one
//! blocking socket with a 4 MiB receive buffer.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream, UdpSocket};
use std::time::Duration;

use crate::echo::enlarge;

/// One client socket, connected to where its datagrams go.
pub struct Peer {
    /// The client socket, connected to `target`.
    pub socket: UdpSocket,
    /// Where to send (the echo server or a relay).
    pub target: SocketAddr,
    /// Bytes in front of every payload (the SOCKS5 UDP header), both ways.
    header: Vec<u8>,
    /// The SOCKS5 control connection: the association lives as long as it is open.
    _control: Option<TcpStream>,
}

fn bind() -> Result<UdpSocket, String> {
    let socket = UdpSocket::bind("127.0.0.1:0").map_err(|e| format!("client bind 127.0.0.1:0: {e}"))?;
    enlarge(&socket)?;
    Ok(socket)
}

impl Peer {
    /// Plain datagrams to `target` (the echo server, or the baseline relay in front of it).
    pub fn plain(target: SocketAddr) -> Result<Peer, String> {
        let socket = bind()?;
        socket.connect(target).map_err(|e| format!("connect the client socket to {target}: {e}"))?;
        Ok(Peer { socket, target, header: Vec::new(), _control: None })
    }

    /// A SOCKS5 UDP association through `proxy` (no authentication) to the IPv4 `echo`.
    pub fn socks(proxy: SocketAddr, echo: SocketAddrV4) -> Result<Peer, String> {
        let socket = bind()?;
        let SocketAddr::V4(client) = socket.local_addr().map_err(|e| format!("client local_addr: {e}"))?
        else {
            return Err("client socket is not IPv4".into());
        };
        let io = |e: std::io::Error| format!("SOCKS5 UDP ASSOCIATE via {proxy}: {e}");
        let mut control = TcpStream::connect_timeout(&proxy, Duration::from_secs(5)).map_err(io)?;
        control.set_read_timeout(Some(Duration::from_secs(5))).map_err(io)?;
        control.write_all(&[5, 1, 0]).map_err(io)?;
        let mut method = [0u8; 2];
        control.read_exact(&mut method).map_err(io)?;
        if method != [5, 0] {
            return Err(format!("SOCKS5 via {proxy}: method reply {method:?}"));
        }
        let mut request = vec![5, 3, 0, 1];
        request.extend_from_slice(&client.ip().octets());
        request.extend_from_slice(&client.port().to_be_bytes());
        control.write_all(&request).map_err(io)?;
        let mut reply = [0u8; 10];
        control.read_exact(&mut reply).map_err(io)?;
        if reply[..4] != [5, 0, 0, 1] {
            return Err(format!("SOCKS5 UDP ASSOCIATE via {proxy}: reply {reply:?}"));
        }
        let mut relay = Ipv4Addr::new(reply[4], reply[5], reply[6], reply[7]);
        if relay.is_unspecified() {
            relay = Ipv4Addr::LOCALHOST;
        }
        let target = SocketAddr::from((relay, u16::from_be_bytes([reply[8], reply[9]])));
        socket.connect(target).map_err(|e| format!("connect the client socket to {target}: {e}"))?;
        let mut header = vec![0, 0, 0, 1];
        header.extend_from_slice(&echo.ip().octets());
        header.extend_from_slice(&echo.port().to_be_bytes());
        Ok(Peer { socket, target, header, _control: Some(control) })
    }

    /// The datagram to send for a payload of `size` bytes (header included).
    pub fn datagram(&self, size: usize) -> Vec<u8> {
        let mut datagram = self.header.clone();
        datagram.resize(self.header.len() + size, 0x5a);
        datagram
    }
}
