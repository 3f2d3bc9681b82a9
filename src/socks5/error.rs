//! What can be wrong with a SOCKS5 message: one that cannot be parsed ([`ProtocolError`]) or one
//! that cannot be encoded ([`EncodeError`]).

use super::{AddressError, ReplyCode};

/// A message that breaks the protocol. [`ProtocolError::reply`] says whether a server sends a
/// reply before closing the connection.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProtocolError {
    /// The first byte of a greeting, method choice, request or reply is not 0x05.
    #[error("bad SOCKS version {0:#04x} (expected 0x05)")]
    BadVersion(u8),
    /// The username/password sub-negotiation does not start with 0x01.
    #[error("bad username/password sub-negotiation version {0:#04x} (expected 0x01)")]
    BadAuthVersion(u8),
    /// The request's command is not CONNECT, BIND or UDP ASSOCIATE.
    #[error("unknown SOCKS command {0:#04x}")]
    UnknownCommand(u8),
    /// The address type is not IPv4, domain or IPv6.
    #[error("unknown SOCKS address type {0:#04x}")]
    BadAddressType(u8),
    /// The domain is empty, not UTF-8, or has a control character (never part of a host name;
    /// refused so that it cannot forge log lines).
    #[error("empty, non-UTF-8 or control-character domain name in a SOCKS message")]
    BadDomain,
}

impl ProtocolError {
    /// The reply code a server sends before closing, or `None` when it closes without a reply
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

impl From<AddressError> for ProtocolError {
    fn from(error: AddressError) -> Self {
        match error {
            AddressError::BadType(address_type) => ProtocolError::BadAddressType(address_type),
            AddressError::BadDomain => ProtocolError::BadDomain,
        }
    }
}

/// A message that cannot be encoded: a field longer than its one-byte length allows.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EncodeError {
    /// A destination's domain is longer than 255 bytes.
    #[error("domain {0:?} is longer than 255 bytes")]
    DomainTooLong(String),
    /// A username, password or method list is longer than 255 bytes (or entries).
    #[error("SOCKS5 {0} longer than 255 bytes")]
    TooLong(&'static str),
}
