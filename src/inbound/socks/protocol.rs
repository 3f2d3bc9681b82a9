//! The SOCKS5 wire format (RFC 1928, RFC 1929 username/password): pure parsing and encoding,
//! no I/O. Every parser takes the bytes received so far and answers "need more", "complete
//! (value, length consumed)" or a [`ProtocolError`]; none of them panics on any input.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::dial::FailureKind;
use crate::metadata::{Destination, Host};

/// The SOCKS protocol version this module speaks.
pub const VERSION: u8 = 0x05;
/// The version of the RFC 1929 username/password sub-negotiation.
pub const AUTH_VERSION: u8 = 0x01;
/// Method: no authentication.
pub const METHOD_NO_AUTH: u8 = 0x00;
/// Method: username/password (RFC 1929).
pub const METHOD_USER_PASS: u8 = 0x02;
/// Method reply: none of the offered methods is acceptable.
pub const METHOD_NONE_ACCEPTABLE: u8 = 0xFF;
/// RFC 1929 status: authentication succeeded.
pub const AUTH_SUCCESS: u8 = 0x00;
/// RFC 1929 status: authentication failed (any non-zero value means failure).
pub const AUTH_FAILURE: u8 = 0x01;

const CMD_CONNECT: u8 = 0x01;
const CMD_BIND: u8 = 0x02;
const CMD_UDP_ASSOCIATE: u8 = 0x03;
const ATYP_IPV4: u8 = 0x01;
const ATYP_DOMAIN: u8 = 0x03;
const ATYP_IPV6: u8 = 0x04;

/// The outcome of parsing a prefix of the received bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed<T> {
    /// The message is not complete yet; read more bytes and parse again.
    Incomplete,
    /// The message is complete: its value and how many bytes it used.
    Complete(T, usize),
}

/// A message the server cannot accept. [`ProtocolError::reply`] says whether the client gets a
/// reply before the connection is closed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    /// The first byte of a greeting or request is not 0x05.
    #[error("bad SOCKS version {0:#04x} (expected 0x05)")]
    BadVersion(u8),
    /// The username/password sub-negotiation does not start with 0x01.
    #[error("bad username/password sub-negotiation version {0:#04x} (expected 0x01)")]
    BadAuthVersion(u8),
    /// The request's command is not CONNECT, BIND or UDP ASSOCIATE.
    #[error("unknown SOCKS command {0:#04x}")]
    UnknownCommand(u8),
    /// The request's address type is not IPv4, domain or IPv6.
    #[error("unknown SOCKS address type {0:#04x}")]
    BadAddressType(u8),
    /// The request's domain is empty, not UTF-8, or has a control character (never part of a
    /// host name; refused so that it cannot forge log lines).
    #[error("empty, non-UTF-8 or control-character domain name in the SOCKS request")]
    BadDomain,
}

impl ProtocolError {
    /// The reply code sent before closing, or `None` when the connection is closed without a reply
    /// (the client does not speak the protocol, so a reply would be meaningless).
    pub fn reply(&self) -> Option<ReplyCode> {
        match self {
            ProtocolError::BadVersion(_) | ProtocolError::BadAuthVersion(_) => None,
            ProtocolError::UnknownCommand(_) => Some(ReplyCode::CommandNotSupported),
            ProtocolError::BadAddressType(_) => Some(ReplyCode::AddressTypeNotSupported),
            ProtocolError::BadDomain => Some(ReplyCode::GeneralFailure),
        }
    }
}

/// The client's greeting: the authentication methods it offers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Greeting {
    /// The offered method codes, in the client's order (possibly empty).
    pub methods: Vec<u8>,
}

impl Greeting {
    /// The method the server picks: username/password when authentication is required, otherwise
    /// no authentication; [`METHOD_NONE_ACCEPTABLE`] when the client did not offer it.
    pub fn select_method(&self, auth_required: bool) -> u8 {
        let wanted = if auth_required { METHOD_USER_PASS } else { METHOD_NO_AUTH };
        if self.methods.contains(&wanted) {
            wanted
        } else {
            METHOD_NONE_ACCEPTABLE
        }
    }
}

/// Parses a greeting: `VER NMETHODS METHODS...`.
pub fn parse_greeting(buf: &[u8]) -> Result<Parsed<Greeting>, ProtocolError> {
    let Some(&version) = buf.first() else { return Ok(Parsed::Incomplete) };
    if version != VERSION {
        return Err(ProtocolError::BadVersion(version));
    }
    let Some(&count) = buf.get(1) else { return Ok(Parsed::Incomplete) };
    let end = 2 + usize::from(count);
    match buf.get(2..end) {
        Some(methods) => Ok(Parsed::Complete(Greeting { methods: methods.to_vec() }, end)),
        None => Ok(Parsed::Incomplete),
    }
}

/// A username and password as the client sent them (raw bytes; may be empty). `Debug` shows
/// neither (only their lengths): a password is sometimes typed into the username field.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The username bytes.
    pub username: Vec<u8>,
    /// The password bytes. Never printed by `Debug`.
    pub password: Vec<u8>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("username_len", &self.username.len())
            .field("password_len", &self.password.len())
            .finish()
    }
}

/// Parses an RFC 1929 sub-negotiation: `VER ULEN UNAME PLEN PASSWD`.
pub fn parse_credentials(buf: &[u8]) -> Result<Parsed<Credentials>, ProtocolError> {
    let Some(&version) = buf.first() else { return Ok(Parsed::Incomplete) };
    if version != AUTH_VERSION {
        return Err(ProtocolError::BadAuthVersion(version));
    }
    let Some(username) = length_prefixed(buf, 1) else { return Ok(Parsed::Incomplete) };
    let password_at = 2 + username.len();
    let Some(password) = length_prefixed(buf, password_at) else { return Ok(Parsed::Incomplete) };
    let end = password_at + 1 + password.len();
    Ok(Parsed::Complete(Credentials { username: username.to_vec(), password: password.to_vec() }, end))
}

/// The bytes of a one-byte-length-prefixed field whose length byte is at `at`, if all arrived.
fn length_prefixed(buf: &[u8], at: usize) -> Option<&[u8]> {
    let length = usize::from(*buf.get(at)?);
    buf.get(at + 1..at + 1 + length)
}

/// A request's command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// CONNECT (0x01): open a TCP connection to the destination.
    Connect,
    /// BIND (0x02): not supported by netswitch.
    Bind,
    /// UDP ASSOCIATE (0x03): relayed by `socks::udp` (RFC 1928 §7).
    UdpAssociate,
}

/// A complete request: `VER CMD RSV ATYP DST.ADDR DST.PORT`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// What the client asks for.
    pub command: Command,
    /// The destination as sent; a domain that is an IP literal becomes [`Host::Ip`]. The port may
    /// be 0 (meaningful for UDP ASSOCIATE; the server rejects it for CONNECT).
    pub destination: Destination,
}

/// Parses a request. Errors are reported as soon as the offending byte arrives (version, then
/// command, then address type, then domain), without waiting for the rest of the message.
/// The reserved byte is ignored.
pub fn parse_request(buf: &[u8]) -> Result<Parsed<Request>, ProtocolError> {
    let Some(&version) = buf.first() else { return Ok(Parsed::Incomplete) };
    if version != VERSION {
        return Err(ProtocolError::BadVersion(version));
    }
    let Some(&command) = buf.get(1) else { return Ok(Parsed::Incomplete) };
    let command = match command {
        CMD_CONNECT => Command::Connect,
        CMD_BIND => Command::Bind,
        CMD_UDP_ASSOCIATE => Command::UdpAssociate,
        other => return Err(ProtocolError::UnknownCommand(other)),
    };
    let Some(&address_type) = buf.get(3) else { return Ok(Parsed::Incomplete) };
    let (host, port_at) = match address_type {
        ATYP_IPV4 => match buf.get(4..8).and_then(|b| <[u8; 4]>::try_from(b).ok()) {
            Some(octets) => (Host::Ip(IpAddr::V4(Ipv4Addr::from(octets))), 8),
            None => return Ok(Parsed::Incomplete),
        },
        ATYP_IPV6 => match buf.get(4..20).and_then(|b| <[u8; 16]>::try_from(b).ok()) {
            Some(octets) => (Host::Ip(IpAddr::V6(Ipv6Addr::from(octets))), 20),
            None => return Ok(Parsed::Incomplete),
        },
        ATYP_DOMAIN => {
            if buf.get(4) == Some(&0) {
                return Err(ProtocolError::BadDomain);
            }
            let Some(name) = length_prefixed(buf, 4) else { return Ok(Parsed::Incomplete) };
            let name = std::str::from_utf8(name).map_err(|_| ProtocolError::BadDomain)?;
            let host = Host::parse(name).map_err(|_| ProtocolError::BadDomain)?;
            (host, 5 + name.len())
        }
        other => return Err(ProtocolError::BadAddressType(other)),
    };
    let Some(port) = buf.get(port_at..port_at + 2) else { return Ok(Parsed::Incomplete) };
    let port = u16::from_be_bytes([port[0], port[1]]);
    Ok(Parsed::Complete(Request { command, destination: Destination { host, port } }, port_at + 2))
}

/// A reply code (the `REP` field of a reply).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum ReplyCode {
    /// 0x00 succeeded.
    Succeeded = 0x00,
    /// 0x01 general SOCKS server failure.
    GeneralFailure = 0x01,
    /// 0x02 connection not allowed by ruleset (a local rule forbids it).
    NotAllowed = 0x02,
    /// 0x03 network unreachable.
    NetworkUnreachable = 0x03,
    /// 0x04 host unreachable.
    HostUnreachable = 0x04,
    /// 0x05 connection refused.
    ConnectionRefused = 0x05,
    /// 0x06 TTL expired (used for a connect timeout).
    TtlExpired = 0x06,
    /// 0x07 command not supported.
    CommandNotSupported = 0x07,
    /// 0x08 address type not supported.
    AddressTypeNotSupported = 0x08,
}

impl From<FailureKind> for ReplyCode {
    fn from(kind: FailureKind) -> ReplyCode {
        match kind {
            FailureKind::Refused => ReplyCode::ConnectionRefused,
            FailureKind::NetworkUnreachable => ReplyCode::NetworkUnreachable,
            FailureKind::HostUnreachable => ReplyCode::HostUnreachable,
            FailureKind::TimedOut => ReplyCode::TtlExpired,
            FailureKind::Prohibited => ReplyCode::NotAllowed,
            FailureKind::Other => ReplyCode::GeneralFailure,
        }
    }
}

/// The address carried by failure replies: 0.0.0.0:0.
pub const UNSPECIFIED_BOUND: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0);

/// Encodes a reply `VER REP RSV ATYP BND.ADDR BND.PORT`; the address type follows `bound`'s family.
pub fn encode_reply(code: ReplyCode, bound: SocketAddr) -> Vec<u8> {
    let mut reply = Vec::with_capacity(22);
    reply.extend_from_slice(&[VERSION, code as u8, 0x00]);
    match bound.ip() {
        IpAddr::V4(ip) => {
            reply.push(ATYP_IPV4);
            reply.extend_from_slice(&ip.octets());
        }
        IpAddr::V6(ip) => {
            reply.push(ATYP_IPV6);
            reply.extend_from_slice(&ip.octets());
        }
    }
    reply.extend_from_slice(&bound.port().to_be_bytes());
    reply
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every strict prefix of a valid message is incomplete; the whole message (plus trailing
    /// bytes, which must not be consumed) is complete with its exact length.
    fn check_prefixes<T: std::fmt::Debug + PartialEq>(
        parse: fn(&[u8]) -> Result<Parsed<T>, ProtocolError>,
        message: &[u8],
        expected: T,
    ) {
        for end in 0..message.len() {
            assert_eq!(parse(&message[..end]), Ok(Parsed::Incomplete), "prefix of {end} bytes");
        }
        let mut with_tail = message.to_vec();
        with_tail.extend_from_slice(b"tail");
        assert_eq!(parse(&with_tail), Ok(Parsed::Complete(expected, message.len())));
    }

    #[test]
    fn greeting() {
        check_prefixes(parse_greeting, &[5, 2, 0, 2], Greeting { methods: vec![0, 2] });
        check_prefixes(parse_greeting, &[5, 0], Greeting { methods: vec![] });
        assert_eq!(parse_greeting(&[4, 1, 0]), Err(ProtocolError::BadVersion(4)));
        assert_eq!(parse_greeting(b"GET / HTTP/1.1"), Err(ProtocolError::BadVersion(b'G')));
    }

    #[test]
    fn method_selection() {
        let both = Greeting { methods: vec![METHOD_NO_AUTH, METHOD_USER_PASS] };
        assert_eq!(both.select_method(false), METHOD_NO_AUTH);
        assert_eq!(both.select_method(true), METHOD_USER_PASS);
        let no_auth = Greeting { methods: vec![METHOD_NO_AUTH] };
        assert_eq!(no_auth.select_method(true), METHOD_NONE_ACCEPTABLE);
        let user_pass = Greeting { methods: vec![METHOD_USER_PASS] };
        assert_eq!(user_pass.select_method(false), METHOD_NONE_ACCEPTABLE);
        assert_eq!(Greeting { methods: vec![] }.select_method(false), METHOD_NONE_ACCEPTABLE);
    }

    #[test]
    fn credentials() {
        let expected = Credentials { username: b"user".to_vec(), password: b"secret".to_vec() };
        check_prefixes(parse_credentials, b"\x01\x04user\x06secret", expected);
        let empty = Credentials { username: vec![], password: vec![] };
        check_prefixes(parse_credentials, &[1, 0, 0], empty);
        assert_eq!(parse_credentials(&[5, 1, b'u']), Err(ProtocolError::BadAuthVersion(5)));
        let shown =
            format!("{:?}", Credentials { username: b"hunter3".to_vec(), password: b"hunter2".to_vec() });
        assert!(!shown.contains("hunter2") && !shown.contains("hunter3"), "{shown}");
    }

    #[test]
    fn requests() {
        let v4 = Request { command: Command::Connect, destination: "127.0.0.1:80".parse().unwrap() };
        check_prefixes(parse_request, &[5, 1, 0, 1, 127, 0, 0, 1, 0, 80], v4);
        let mut v6 = vec![5, 1, 0, 4];
        v6.extend_from_slice(&Ipv6Addr::LOCALHOST.octets());
        v6.extend_from_slice(&443u16.to_be_bytes());
        let expected = Request { command: Command::Connect, destination: "[::1]:443".parse().unwrap() };
        check_prefixes(parse_request, &v6, expected);
        let domain =
            Request { command: Command::Bind, destination: Destination::domain("example.com", 8080) };
        check_prefixes(parse_request, b"\x05\x02\x00\x03\x0bexample.com\x1f\x90", domain);
        // An IP literal sent as a domain becomes an IP destination.
        let literal = Request {
            command: Command::UdpAssociate,
            destination: SocketAddr::from(([10, 0, 0, 1], 0)).into(),
        };
        check_prefixes(parse_request, b"\x05\x03\x00\x03\x0810.0.0.1\x00\x00", literal);
    }

    #[test]
    fn request_errors_are_reported_early() {
        assert_eq!(parse_request(&[4]), Err(ProtocolError::BadVersion(4)));
        assert_eq!(parse_request(&[5, 9]), Err(ProtocolError::UnknownCommand(9)));
        assert_eq!(parse_request(&[5, 0]), Err(ProtocolError::UnknownCommand(0)));
        assert_eq!(parse_request(&[5, 1, 0, 2]), Err(ProtocolError::BadAddressType(2)));
        assert_eq!(parse_request(&[5, 1, 0, 3, 0]), Err(ProtocolError::BadDomain));
        assert_eq!(parse_request(&[5, 1, 0, 3, 2, 0xff, 0xfe]), Err(ProtocolError::BadDomain));
        for name in [&b"a\nb"[..], b"a\rb", b"a\x1bb", b"a\x7fb"] {
            let mut request = vec![5, 1, 0, 3, name.len() as u8];
            request.extend_from_slice(name);
            request.extend_from_slice(&[0, 80]);
            assert_eq!(parse_request(&request), Err(ProtocolError::BadDomain), "{name:?}");
        }
        // The reserved byte is ignored.
        assert!(matches!(parse_request(&[5, 1, 7, 1, 1, 2, 3, 4, 0, 1]), Ok(Parsed::Complete(_, 10))));
    }

    #[test]
    fn error_replies() {
        assert_eq!(ProtocolError::BadVersion(4).reply(), None);
        assert_eq!(ProtocolError::BadAuthVersion(5).reply(), None);
        assert_eq!(ProtocolError::UnknownCommand(9).reply(), Some(ReplyCode::CommandNotSupported));
        assert_eq!(ProtocolError::BadAddressType(2).reply(), Some(ReplyCode::AddressTypeNotSupported));
        assert_eq!(ProtocolError::BadDomain.reply(), Some(ReplyCode::GeneralFailure));
    }

    #[test]
    fn garbage_never_panics() {
        // Every byte string of length <= 3 plus a pseudo-random sample of longer ones.
        let mut state: u32 = 0x1234_5678;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            state
        };
        for _ in 0..20_000 {
            let length = (next() % 40) as usize;
            let mut buf: Vec<u8> = (0..length).map(|_| next() as u8).collect();
            if let Some(first) = buf.first_mut() {
                if next() % 2 == 0 {
                    *first = 5;
                }
            }
            let _ = parse_greeting(&buf);
            let _ = parse_credentials(&buf);
            let _ = parse_request(&buf);
        }
    }

    #[test]
    fn replies() {
        assert_eq!(
            encode_reply(ReplyCode::Succeeded, "127.0.0.1:4660".parse().unwrap()),
            [5, 0, 0, 1, 127, 0, 0, 1, 0x12, 0x34]
        );
        let mut v6 = vec![5, 5, 0, 4];
        v6.extend_from_slice(&Ipv6Addr::LOCALHOST.octets());
        v6.extend_from_slice(&[0, 80]);
        assert_eq!(encode_reply(ReplyCode::ConnectionRefused, "[::1]:80".parse().unwrap()), v6);
        assert_eq!(
            encode_reply(ReplyCode::CommandNotSupported, UNSPECIFIED_BOUND),
            [5, 7, 0, 1, 0, 0, 0, 0, 0, 0]
        );
    }

    #[test]
    fn failure_kinds_map_to_reply_codes() {
        assert_eq!(ReplyCode::from(FailureKind::Refused) as u8, 0x05);
        assert_eq!(ReplyCode::from(FailureKind::NetworkUnreachable) as u8, 0x03);
        assert_eq!(ReplyCode::from(FailureKind::HostUnreachable) as u8, 0x04);
        assert_eq!(ReplyCode::from(FailureKind::TimedOut) as u8, 0x06);
        assert_eq!(ReplyCode::from(FailureKind::Prohibited) as u8, 0x02);
        assert_eq!(ReplyCode::from(FailureKind::Other) as u8, 0x01);
    }
}
