//! The SOCKS5 wire format (RFC 1928, RFC 1929 username/password), written once for the server
//! (`inbound::socks`), its UDP ASSOCIATE relay and the upstream client (`dial::socks5`): pure
//! parsing and encoding, no I/O, and no knowledge of dialing (the mapping between reply codes and
//! dial failures lives with the dialer, which knows both).
//!
//! One idea per file: [`address`](parse_address) (`ATYP ADDR PORT`, the part every message
//! shares), the greeting, method choice and username/password sub-negotiation, the request, the
//! reply and its codes, the UDP header.
//!
//! Every parser takes the bytes received so far and answers [`Parsed::Incomplete`] (with a lower
//! bound of the message's length), [`Parsed::Complete`] (value, bytes used) or an error as soon as
//! the offending byte is there; none panics on any input. Every encoder appends to a buffer and
//! refuses (never cuts) a field longer than its one-byte length allows, leaving the buffer as it
//! was.

mod address;
mod error;
mod handshake;
mod reply;
mod request;
mod udp;

pub use address::{parse_address, write_address, AddressError};
pub use error::{EncodeError, ProtocolError};
pub use handshake::{
    encode_auth_status, encode_credentials, encode_greeting, encode_method_choice, parse_auth_status,
    parse_credentials, parse_greeting, parse_method_choice, Credentials, Greeting, AUTH_FAILURE,
    AUTH_SUCCESS, AUTH_VERSION, METHOD_NONE_ACCEPTABLE, METHOD_NO_AUTH, METHOD_USER_PASS,
};
pub use reply::{encode_reply, parse_reply, Reply, ReplyCode, UNSPECIFIED_BOUND};
pub use request::{encode_request, parse_request, Command, Request};
pub use udp::{encode_udp_header, parse_udp_header, UdpHeaderError};

/// The SOCKS protocol version this module speaks.
pub const VERSION: u8 = 0x05;

/// The outcome of parsing a prefix of the received bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed<T> {
    /// The message is not complete yet: read more bytes and parse again. Every complete message
    /// that starts with the bytes given is at least `needed` bytes long (`needed` > the bytes
    /// given), so a reader may read exactly `needed - given` more bytes without ever reading past
    /// the message (the upstream client does: what follows a reply is payload).
    Incomplete {
        /// A lower bound of the whole message's length.
        needed: usize,
    },
    /// The message is complete: its value and how many bytes it used.
    Complete(T, usize),
}

impl<T> Parsed<T> {
    /// The same outcome for a message that starts `offset` bytes further into the buffer, its
    /// value mapped by `f`.
    fn shifted<U>(self, offset: usize, f: impl FnOnce(T) -> U) -> Parsed<U> {
        match self {
            Parsed::Incomplete { needed } => Parsed::Incomplete { needed: offset + needed },
            Parsed::Complete(value, used) => Parsed::Complete(f(value), offset + used),
        }
    }
}

/// `Incomplete { needed }`, for brevity in the parsers.
const fn incomplete<T>(needed: usize) -> Parsed<T> {
    Parsed::Incomplete { needed }
}

/// The bytes of a one-byte-length-prefixed field whose length byte is at `at`: `Ok(bytes)` when
/// all arrived, else `Err(needed)`, the length of the buffer that would hold the field.
fn length_prefixed(buf: &[u8], at: usize) -> Result<&[u8], usize> {
    let Some(&length) = buf.get(at) else { return Err(at + 1) };
    let end = at + 1 + usize::from(length);
    buf.get(at + 1..end).ok_or(end)
}

#[cfg(test)]
pub(crate) mod test_support {
    use super::Parsed;

    /// Every strict prefix of a valid message is incomplete with a `needed` that is more than the
    /// prefix and at most the message; the whole message (plus trailing bytes, which must not be
    /// consumed) is complete with its exact length.
    pub(crate) fn check_prefixes<T: std::fmt::Debug + PartialEq, E: std::fmt::Debug>(
        parse: fn(&[u8]) -> Result<Parsed<T>, E>,
        message: &[u8],
        expected: T,
    ) {
        for end in 0..message.len() {
            match parse(&message[..end]) {
                Ok(Parsed::Incomplete { needed }) => {
                    assert!(end < needed && needed <= message.len(), "prefix of {end} bytes: needed {needed}")
                }
                other => panic!("prefix of {end} bytes: {other:?}"),
            }
        }
        let mut with_tail = message.to_vec();
        with_tail.extend_from_slice(b"tail");
        match parse(&with_tail) {
            Ok(Parsed::Complete(value, used)) => {
                assert_eq!((value, used), (expected, message.len()));
            }
            other => panic!("whole message: {other:?}"),
        }
    }

    /// A pseudo-random byte string generator (xorshift) for the never-panics tests.
    pub(crate) fn garbage(mut each: impl FnMut(&[u8])) {
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
            each(&buf);
        }
    }
}
