//! An upstream SOCKS5 outbound (RFC 1928 CONNECT, RFC 1929 username/password) whose handshake is
//! lazy: [`Socks5Outbound::dial_tcp`] only connects to the SOCKS server; the greeting, the
//! credentials, the CONNECT request and the client's first payload then go out together in one
//! write ([`LazyHandshake::complete`], called by the manager's kick), and the replies are read
//! afterwards. The first payload thus reaches the destination one round trip earlier.
//!
//! Replies are read exactly (never past the CONNECT reply: what follows is payload). A refusal
//! by the server maps back to a [`DialError::Connect`] whose [`DialError::kind`] matches the
//! SOCKS reply code (0x05 refused, 0x03 network unreachable, 0x04 host unreachable, 0x06 timed
//! out, anything else "other"), so a SOCKS ingress in front reports the same code to its client.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use tokio::net::TcpStream;

use super::direct::connect;
use super::{AttemptError, BoxFuture, DialAttempt, DialError, DialedStream, LazyHandshake, Outbound};
use crate::inbound::socks::protocol::{
    AUTH_SUCCESS, AUTH_VERSION, METHOD_NO_AUTH, METHOD_USER_PASS, VERSION,
};
use crate::metadata::{Destination, Host, Metadata};
use crate::network::Egress;
use crate::socket::io::{self as socket_io, write_all};

const CMD_CONNECT: u8 = 0x01;
const ATYP_IPV4: u8 = 0x01;
const ATYP_DOMAIN: u8 = 0x03;
const ATYP_IPV6: u8 = 0x04;

/// Dials destinations through an upstream SOCKS5 server, with a lazy handshake (module docs).
#[derive(Clone)]
pub struct Socks5Outbound {
    server: SocketAddr,
    credentials: Option<(String, String)>,
    connect_timeout: Duration,
}

impl std::fmt::Debug for Socks5Outbound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Socks5Outbound")
            .field("server", &self.server)
            .field("username", &self.credentials.as_ref().map(|(user, _)| user))
            .field("connect_timeout", &self.connect_timeout)
            .finish()
    }
}

impl Socks5Outbound {
    /// An outbound through the SOCKS5 server at `server`, authenticating with
    /// `(username, password)` when given (each 1-255 bytes, else the handshake fails), each TCP
    /// connect to the server bounded by `connect_timeout`.
    pub fn new(server: SocketAddr, credentials: Option<(String, String)>, connect_timeout: Duration) -> Self {
        Socks5Outbound { server, credentials, connect_timeout }
    }

    async fn dial(&self, metadata: &Metadata) -> Result<DialedStream, DialError> {
        let started = Instant::now();
        let stream = connect(self.server, self.connect_timeout)
            .await
            .map_err(|error| failure(&metadata.destination, self.server, started, error))?;
        tracing::debug!(
            server = %self.server, destination = %metadata.destination,
            "connected to upstream SOCKS5 server; handshake deferred to the first write"
        );
        let handshake = Socks5Handshake {
            server: self.server,
            destination: metadata.destination.clone(),
            credentials: self.credentials.clone(),
        };
        Ok(DialedStream { stream, egress: Egress::default(), handshake: Some(Box::new(handshake)) })
    }
}

impl Outbound for Socks5Outbound {
    fn dial_tcp<'a>(&'a self, metadata: &'a Metadata) -> BoxFuture<'a, Result<DialedStream, DialError>> {
        Box::pin(self.dial(metadata))
    }
}

/// The pending SOCKS5 handshake of one connection.
struct Socks5Handshake {
    server: SocketAddr,
    destination: Destination,
    credentials: Option<(String, String)>,
}

impl LazyHandshake for Socks5Handshake {
    fn complete<'a>(
        self: Box<Self>,
        stream: &'a TcpStream,
        early_data: &'a [u8],
    ) -> BoxFuture<'a, Result<(), DialError>> {
        Box::pin(async move {
            let started = Instant::now();
            let result = self.run(stream, early_data).await;
            result.map_err(|error| failure(&self.destination, self.server, started, error))
        })
    }
}

impl Socks5Handshake {
    async fn run(&self, stream: &TcpStream, early_data: &[u8]) -> Result<(), AttemptError> {
        let message = self.first_write(early_data)?;
        write_all(stream, &message).await?;
        let mut choice = [0u8; 2];
        read_exact(stream, &mut choice).await?;
        let expected = if self.credentials.is_some() { METHOD_USER_PASS } else { METHOD_NO_AUTH };
        if choice[0] != VERSION || choice[1] != expected {
            return Err(protocol_error(format!(
                "upstream SOCKS5 server answered method {:#04x} (version {:#04x}), expected {expected:#04x}",
                choice[1], choice[0]
            )));
        }
        if self.credentials.is_some() {
            let mut status = [0u8; 2];
            read_exact(stream, &mut status).await?;
            if status[1] != AUTH_SUCCESS {
                return Err(AttemptError::Io(io::Error::new(
                    io::ErrorKind::PermissionDenied,
                    format!("upstream SOCKS5 server rejected the credentials (status {:#04x})", status[1]),
                )));
            }
        }
        let mut head = [0u8; 4];
        read_exact(stream, &mut head).await?;
        if head[0] != VERSION {
            return Err(protocol_error(format!("upstream SOCKS5 reply has version {:#04x}", head[0])));
        }
        // Read the bound address exactly, so no payload byte behind the reply is consumed.
        let rest = match head[3] {
            ATYP_IPV4 => 4 + 2,
            ATYP_IPV6 => 16 + 2,
            ATYP_DOMAIN => {
                let mut len = [0u8; 1];
                read_exact(stream, &mut len).await?;
                usize::from(len[0]) + 2
            }
            other => {
                return Err(protocol_error(format!("upstream SOCKS5 reply has address type {other:#04x}")))
            }
        };
        let mut bound = [0u8; 255 + 2];
        read_exact(stream, &mut bound[..rest]).await?;
        match head[1] {
            0x00 => Ok(()),
            code => Err(AttemptError::Io(io::Error::new(reply_error_kind(code), reply_message(code)))),
        }
    }

    /// Greeting, credentials, CONNECT request and early data, concatenated.
    fn first_write(&self, early_data: &[u8]) -> Result<Vec<u8>, AttemptError> {
        let mut message = Vec::with_capacity(64 + early_data.len());
        match &self.credentials {
            None => message.extend_from_slice(&[VERSION, 1, METHOD_NO_AUTH]),
            Some((username, password)) => {
                let (user, pass) = (username.as_bytes(), password.as_bytes());
                let (Ok(user_len), Ok(pass_len)) = (u8::try_from(user.len()), u8::try_from(pass.len()))
                else {
                    return Err(protocol_error("SOCKS5 username or password longer than 255 bytes".into()));
                };
                message.extend_from_slice(&[VERSION, 1, METHOD_USER_PASS, AUTH_VERSION, user_len]);
                message.extend_from_slice(user);
                message.push(pass_len);
                message.extend_from_slice(pass);
            }
        }
        message.extend_from_slice(&[VERSION, CMD_CONNECT, 0x00]);
        match &self.destination.host {
            Host::Ip(IpAddr::V4(ip)) => {
                message.push(ATYP_IPV4);
                message.extend_from_slice(&ip.octets());
            }
            Host::Ip(IpAddr::V6(ip)) => {
                message.push(ATYP_IPV6);
                message.extend_from_slice(&ip.octets());
            }
            Host::Domain(name) => {
                let Ok(len) = u8::try_from(name.len()) else {
                    return Err(protocol_error(format!("domain {name:?} is longer than 255 bytes")));
                };
                message.extend_from_slice(&[ATYP_DOMAIN, len]);
                message.extend_from_slice(name.as_bytes());
            }
        }
        message.extend_from_slice(&self.destination.port.to_be_bytes());
        message.extend_from_slice(early_data);
        Ok(message)
    }
}

/// The I/O error kind whose [`crate::dial::FailureKind`] matches a SOCKS reply code.
fn reply_error_kind(code: u8) -> io::ErrorKind {
    match code {
        0x03 => io::ErrorKind::NetworkUnreachable,
        0x04 => io::ErrorKind::HostUnreachable,
        0x05 => io::ErrorKind::ConnectionRefused,
        0x06 => io::ErrorKind::TimedOut,
        _ => io::ErrorKind::Other,
    }
}

fn reply_message(code: u8) -> String {
    let meaning = match code {
        0x01 => "general failure",
        0x02 => "not allowed by ruleset",
        0x03 => "network unreachable",
        0x04 => "host unreachable",
        0x05 => "connection refused",
        0x06 => "TTL expired",
        0x07 => "command not supported",
        0x08 => "address type not supported",
        _ => "unknown code",
    };
    format!("upstream SOCKS5 server replied {code:#04x} ({meaning})")
}

fn protocol_error(message: String) -> AttemptError {
    AttemptError::Io(io::Error::new(io::ErrorKind::InvalidData, message))
}

/// A dial error naming the destination and the SOCKS server that failed it.
fn failure(
    destination: &Destination,
    server: SocketAddr,
    started: Instant,
    error: AttemptError,
) -> DialError {
    DialError::Connect {
        destination: destination.to_string(),
        attempts: vec![DialAttempt {
            address: Some(server),
            interface: None,
            elapsed: started.elapsed(),
            error,
        }],
    }
}

/// Reads exactly `buf.len()` bytes of the server's replies (never more: what follows is payload).
async fn read_exact(stream: &TcpStream, buf: &mut [u8]) -> io::Result<()> {
    socket_io::read_exact(stream, buf).await.map_err(|e| match e.kind() {
        io::ErrorKind::UnexpectedEof => io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "upstream SOCKS5 server closed the connection during the handshake",
        ),
        _ => e,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dial::FailureKind;

    #[test]
    fn reply_codes_map_to_failure_kinds() {
        for (code, kind) in [
            (0x05, FailureKind::Refused),
            (0x03, FailureKind::NetworkUnreachable),
            (0x04, FailureKind::HostUnreachable),
            (0x06, FailureKind::TimedOut),
            (0x01, FailureKind::Other),
            (0x02, FailureKind::Other),
        ] {
            let error = AttemptError::Io(io::Error::new(reply_error_kind(code), reply_message(code)));
            let server: SocketAddr = "127.0.0.1:1080".parse().unwrap();
            let dial = failure(&Destination::domain("a.example", 443), server, Instant::now(), error);
            assert_eq!(dial.kind(), kind, "code {code:#04x}");
            assert!(dial.to_string().contains("127.0.0.1:1080"), "{dial}");
        }
    }

    #[test]
    fn first_write_carries_everything() {
        let handshake = Socks5Handshake {
            server: "127.0.0.1:1".parse().unwrap(),
            destination: Destination::domain("example.com", 443),
            credentials: Some(("user".into(), "pw".into())),
        };
        let message = handshake.first_write(b"hello").unwrap();
        let mut expected = vec![5, 1, 2, 1, 4];
        expected.extend_from_slice(b"user\x02pw\x05\x01\x00\x03\x0bexample.com\x01\xbbhello");
        assert_eq!(message, expected);
    }
}
