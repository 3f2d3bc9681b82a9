//! The header of every UDP ASSOCIATE datagram, `RSV(2) FRAG ATYP DST.ADDR DST.PORT DATA`
//! (RFC 1928 §7). A datagram is whole or nothing: a header cut short is an error, not "need more".

use super::{parse_address, write_address, AddressError, EncodeError, Parsed};
use crate::metadata::Destination;

/// Where the address starts: after `RSV(2) FRAG`.
const ADDRESS_AT: usize = 3;

/// Why a client datagram was not relayed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UdpHeaderError {
    /// The datagram ends inside the header.
    #[error("SOCKS UDP header cut short ({0} bytes)")]
    Truncated(usize),
    /// FRAG is not 0; fragmentation is not supported.
    #[error("SOCKS UDP fragment {0} dropped (fragmentation is not supported)")]
    Fragment(u8),
    /// The address type is not IPv4, domain or IPv6.
    #[error("unknown SOCKS UDP address type {0:#04x}")]
    BadAddressType(u8),
    /// The domain is empty, not UTF-8 or not a valid host.
    #[error("empty or non-UTF-8 domain in a SOCKS UDP header")]
    BadDomain,
    /// The destination port is 0.
    #[error("SOCKS UDP destination {0} has port 0")]
    PortZero(Destination),
}

impl From<AddressError> for UdpHeaderError {
    fn from(error: AddressError) -> Self {
        match error {
            AddressError::BadType(address_type) => UdpHeaderError::BadAddressType(address_type),
            AddressError::BadDomain => UdpHeaderError::BadDomain,
        }
    }
}

/// Parses the header of `datagram`: the destination and where the data starts. The reserved
/// bytes are ignored. Never panics.
pub fn parse_udp_header(datagram: &[u8]) -> Result<(Destination, usize), UdpHeaderError> {
    let truncated = || UdpHeaderError::Truncated(datagram.len());
    // FRAG is judged once the address type is there too (a 3-byte datagram is cut short).
    let (Some(&frag), Some(address)) =
        (datagram.get(2), datagram.get(ADDRESS_AT..).filter(|a| !a.is_empty()))
    else {
        return Err(truncated());
    };
    if frag != 0 {
        return Err(UdpHeaderError::Fragment(frag));
    }
    let (destination, used) = match parse_address(address)? {
        Parsed::Complete(destination, used) => (destination, used),
        Parsed::Incomplete { .. } => return Err(truncated()),
    };
    if destination.port == 0 {
        return Err(UdpHeaderError::PortZero(destination));
    }
    Ok((destination, ADDRESS_AT + used))
}

/// Appends the header `RSV(2) FRAG=0 ATYP ADDR PORT` for `source` to `out`. A domain longer than
/// 255 bytes (which a parsed header never holds) is refused and nothing is appended.
pub fn encode_udp_header(source: &Destination, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    let start = out.len();
    out.extend_from_slice(&[0, 0, 0]);
    write_address(source, out).inspect_err(|_| out.truncate(start))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_round_trip() {
        for destination in [
            "127.0.0.1:53".parse::<Destination>().unwrap(),
            "[::1]:443".parse().unwrap(),
            Destination::domain("dns.test", 53),
        ] {
            let mut datagram = Vec::new();
            encode_udp_header(&destination, &mut datagram).unwrap();
            let header = datagram.len();
            datagram.extend_from_slice(b"payload");
            assert_eq!(parse_udp_header(&datagram), Ok((destination, header)));
        }
        let mut out = vec![1];
        let overlong = Destination::domain("x".repeat(256), 53);
        assert!(matches!(encode_udp_header(&overlong, &mut out), Err(EncodeError::DomainTooLong(_))));
        assert_eq!(out, [1], "nothing appended on error");
    }

    #[test]
    fn bad_headers_are_errors() {
        assert_eq!(parse_udp_header(&[0, 0]), Err(UdpHeaderError::Truncated(2)));
        assert_eq!(parse_udp_header(&[0, 0, 1]), Err(UdpHeaderError::Truncated(3)));
        assert_eq!(parse_udp_header(&[0, 0, 1, 1, 127, 0, 0, 1, 0, 53]), Err(UdpHeaderError::Fragment(1)));
        assert_eq!(parse_udp_header(&[0, 0, 0, 2, 1]), Err(UdpHeaderError::BadAddressType(2)));
        assert_eq!(parse_udp_header(&[0, 0, 0, 1, 127, 0, 0]), Err(UdpHeaderError::Truncated(7)));
        assert_eq!(parse_udp_header(&[0, 0, 0, 3, 0, 0, 53]), Err(UdpHeaderError::BadDomain));
        assert_eq!(parse_udp_header(&[0, 0, 0, 3, 2, 0xff, 0xfe, 0, 53]), Err(UdpHeaderError::BadDomain));
        assert_eq!(parse_udp_header(&[0, 0, 0, 3, 5, b'a']), Err(UdpHeaderError::Truncated(6)));
        assert!(matches!(
            parse_udp_header(&[0, 0, 0, 1, 127, 0, 0, 1, 0, 0]),
            Err(UdpHeaderError::PortZero(_))
        ));
    }
}
