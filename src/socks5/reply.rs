//! The server's reply, `VER REP RSV ATYP BND.ADDR BND.PORT` (RFC 1928 §6), and its reply codes.
//!
//! How a reply code relates to a dial failure (what an upstream's refusal means, what a SOCKS
//! ingress answers for a failed dial) is the dialer's knowledge: that mapping lives in the `dial`
//! module, next to its failure kinds, so this codec stays below it.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use super::{incomplete, parse_address, write_address, Parsed, ProtocolError, VERSION};
use crate::metadata::Destination;

/// Where the address starts: after `VER REP RSV`.
const ADDRESS_AT: usize = 3;

/// A reply code (the `REP` field of a reply).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReplyCode {
    /// 0x00 succeeded.
    Succeeded,
    /// 0x01 general SOCKS server failure.
    GeneralFailure,
    /// 0x02 connection not allowed by ruleset (a rule forbids it).
    NotAllowed,
    /// 0x03 network unreachable.
    NetworkUnreachable,
    /// 0x04 host unreachable.
    HostUnreachable,
    /// 0x05 connection refused.
    ConnectionRefused,
    /// 0x06 TTL expired (used for a connect timeout).
    TtlExpired,
    /// 0x07 command not supported.
    CommandNotSupported,
    /// 0x08 address type not supported.
    AddressTypeNotSupported,
    /// A code RFC 1928 leaves unassigned (0x09-0xFF), as a server sent it. [`ReplyCode::from`]
    /// a byte never makes this variant for an assigned code.
    Unassigned(u8),
}

impl From<u8> for ReplyCode {
    fn from(code: u8) -> ReplyCode {
        match code {
            0x00 => ReplyCode::Succeeded,
            0x01 => ReplyCode::GeneralFailure,
            0x02 => ReplyCode::NotAllowed,
            0x03 => ReplyCode::NetworkUnreachable,
            0x04 => ReplyCode::HostUnreachable,
            0x05 => ReplyCode::ConnectionRefused,
            0x06 => ReplyCode::TtlExpired,
            0x07 => ReplyCode::CommandNotSupported,
            0x08 => ReplyCode::AddressTypeNotSupported,
            other => ReplyCode::Unassigned(other),
        }
    }
}

impl From<ReplyCode> for u8 {
    fn from(code: ReplyCode) -> u8 {
        match code {
            ReplyCode::Succeeded => 0x00,
            ReplyCode::GeneralFailure => 0x01,
            ReplyCode::NotAllowed => 0x02,
            ReplyCode::NetworkUnreachable => 0x03,
            ReplyCode::HostUnreachable => 0x04,
            ReplyCode::ConnectionRefused => 0x05,
            ReplyCode::TtlExpired => 0x06,
            ReplyCode::CommandNotSupported => 0x07,
            ReplyCode::AddressTypeNotSupported => 0x08,
            ReplyCode::Unassigned(code) => code,
        }
    }
}

impl fmt::Display for ReplyCode {
    /// The code and its meaning: `0x05 (connection refused)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let meaning = match self {
            ReplyCode::Succeeded => "succeeded",
            ReplyCode::GeneralFailure => "general failure",
            ReplyCode::NotAllowed => "not allowed by ruleset",
            ReplyCode::NetworkUnreachable => "network unreachable",
            ReplyCode::HostUnreachable => "host unreachable",
            ReplyCode::ConnectionRefused => "connection refused",
            ReplyCode::TtlExpired => "TTL expired",
            ReplyCode::CommandNotSupported => "command not supported",
            ReplyCode::AddressTypeNotSupported => "address type not supported",
            ReplyCode::Unassigned(_) => "unassigned code",
        };
        write!(f, "{:#04x} ({meaning})", u8::from(*self))
    }
}

/// A complete reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The outcome.
    pub code: ReplyCode,
    /// The address the server bound for the client (0.0.0.0:0 in failure replies).
    pub bound: Destination,
}

/// The address carried by failure replies: 0.0.0.0:0.
pub const UNSPECIFIED_BOUND: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0);

/// Encodes a reply; the address type follows `bound`'s family.
pub fn encode_reply(code: ReplyCode, bound: SocketAddr) -> Vec<u8> {
    let mut reply = Vec::with_capacity(22);
    reply.extend_from_slice(&[VERSION, code.into(), 0x00]);
    // An IP address always encodes.
    let _ = write_address(&Destination::from(bound), &mut reply);
    reply
}

/// Parses a reply. The reserved byte is ignored; the bound address is checked like any other
/// address (a broken one is an error).
pub fn parse_reply(buf: &[u8]) -> Result<Parsed<Reply>, ProtocolError> {
    let Some(&version) = buf.first() else { return Ok(incomplete(ADDRESS_AT + 5)) };
    if version != VERSION {
        return Err(ProtocolError::BadVersion(version));
    }
    let Some(&code) = buf.get(1) else { return Ok(incomplete(ADDRESS_AT + 5)) };
    let address = parse_address(buf.get(ADDRESS_AT..).unwrap_or_default())?;
    Ok(address.shifted(ADDRESS_AT, |bound| Reply { code: ReplyCode::from(code), bound }))
}

#[cfg(test)]
mod tests {
    use std::net::Ipv6Addr;

    use super::*;
    use crate::socks5::test_support::{check_prefixes, garbage};

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
    fn replies_round_trip() {
        for (code, bound) in [
            (ReplyCode::Succeeded, "127.0.0.1:4660".parse::<SocketAddr>().unwrap()),
            (ReplyCode::NotAllowed, "[::1]:80".parse().unwrap()),
            (ReplyCode::Unassigned(0x42), UNSPECIFIED_BOUND),
        ] {
            check_prefixes(parse_reply, &encode_reply(code, bound), Reply { code, bound: bound.into() });
        }
        let domain = Reply { code: ReplyCode::Succeeded, bound: Destination::domain("proxy.test", 1080) };
        check_prefixes(parse_reply, b"\x05\x00\x00\x03\x0aproxy.test\x04\x38", domain);
        assert_eq!(parse_reply(&[4]), Err(ProtocolError::BadVersion(4)));
        assert_eq!(parse_reply(&[5, 0, 0, 9]), Err(ProtocolError::BadAddressType(9)));
    }

    #[test]
    fn codes_round_trip_through_their_byte() {
        for byte in 0..=u8::MAX {
            let code = ReplyCode::from(byte);
            assert_eq!(u8::from(code), byte);
            assert_eq!(matches!(code, ReplyCode::Unassigned(_)), byte > 0x08, "{code}");
        }
        assert_eq!(ReplyCode::NotAllowed.to_string(), "0x02 (not allowed by ruleset)");
        assert_eq!(ReplyCode::from(0xff).to_string(), "0xff (unassigned code)");
    }

    #[test]
    fn garbage_never_panics() {
        garbage(|buf| {
            let _ = parse_reply(buf);
        });
    }
}
