//! The client's request, `VER CMD RSV ATYP DST.ADDR DST.PORT` (RFC 1928 §4).

use super::{incomplete, parse_address, write_address, EncodeError, Parsed, ProtocolError, VERSION};
use crate::metadata::Destination;

const CMD_CONNECT: u8 = 0x01;
const CMD_BIND: u8 = 0x02;
const CMD_UDP_ASSOCIATE: u8 = 0x03;

/// Where the address starts: after `VER CMD RSV`.
const ADDRESS_AT: usize = 3;

/// A request's command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// CONNECT (0x01): open a TCP connection to the destination.
    Connect,
    /// BIND (0x02): not supported by netswitch.
    Bind,
    /// UDP ASSOCIATE (0x03): relayed by the SOCKS ingress's UDP association (RFC 1928 §7).
    UdpAssociate,
}

impl Command {
    fn code(self) -> u8 {
        match self {
            Command::Connect => CMD_CONNECT,
            Command::Bind => CMD_BIND,
            Command::UdpAssociate => CMD_UDP_ASSOCIATE,
        }
    }
}

/// A complete request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// What the client asks for.
    pub command: Command,
    /// The destination as sent; a domain that is an IP literal becomes an IP. The port may be 0
    /// (meaningful for UDP ASSOCIATE; the server rejects it for CONNECT).
    pub destination: Destination,
}

/// Parses a request. Errors are reported as soon as the offending byte arrives (version, then
/// command, then address type, then domain), without waiting for the rest of the message.
/// The reserved byte is ignored.
pub fn parse_request(buf: &[u8]) -> Result<Parsed<Request>, ProtocolError> {
    let Some(&version) = buf.first() else { return Ok(incomplete(ADDRESS_AT + 5)) };
    if version != VERSION {
        return Err(ProtocolError::BadVersion(version));
    }
    let Some(&command) = buf.get(1) else { return Ok(incomplete(ADDRESS_AT + 5)) };
    let command = match command {
        CMD_CONNECT => Command::Connect,
        CMD_BIND => Command::Bind,
        CMD_UDP_ASSOCIATE => Command::UdpAssociate,
        other => return Err(ProtocolError::UnknownCommand(other)),
    };
    let address = parse_address(buf.get(ADDRESS_AT..).unwrap_or_default())?;
    Ok(address.shifted(ADDRESS_AT, |destination| Request { command, destination }))
}

/// Appends the request `command` `destination` to `out`; a destination that cannot be encoded (a
/// domain longer than 255 bytes) is refused and nothing is appended.
pub fn encode_request(
    command: Command,
    destination: &Destination,
    out: &mut Vec<u8>,
) -> Result<(), EncodeError> {
    let start = out.len();
    out.extend_from_slice(&[VERSION, command.code(), 0x00]);
    write_address(destination, out).inspect_err(|_| out.truncate(start))
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv6Addr, SocketAddr};

    use super::*;
    use crate::socks5::test_support::{check_prefixes, garbage};

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
    fn requests_round_trip() {
        for command in [Command::Connect, Command::Bind, Command::UdpAssociate] {
            let request = Request { command, destination: Destination::domain("example.com", 443) };
            let mut out = Vec::new();
            encode_request(request.command, &request.destination, &mut out).unwrap();
            check_prefixes(parse_request, &out, request);
        }
        let mut out = vec![7];
        let overlong = Destination::domain("x".repeat(256), 1);
        assert!(matches!(
            encode_request(Command::Connect, &overlong, &mut out),
            Err(EncodeError::DomainTooLong(_))
        ));
        assert_eq!(out, [7], "nothing appended on error");
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
        use crate::socks5::ReplyCode;
        assert_eq!(ProtocolError::BadVersion(4).reply(), None);
        assert_eq!(ProtocolError::BadAuthVersion(5).reply(), None);
        assert_eq!(ProtocolError::UnknownCommand(9).reply(), Some(ReplyCode::CommandNotSupported));
        assert_eq!(ProtocolError::BadAddressType(2).reply(), Some(ReplyCode::AddressTypeNotSupported));
        assert_eq!(ProtocolError::BadDomain.reply(), Some(ReplyCode::GeneralFailure));
    }

    #[test]
    fn garbage_never_panics() {
        garbage(|buf| {
            let _ = parse_request(buf);
        });
    }
}
