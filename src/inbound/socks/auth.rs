//! Constant-time checking of RFC 1929 credentials against the configured users.

use subtle::{Choice, ConstantTimeEq};

use super::SocksUser;
use crate::socks5::Credentials;

/// A field padded to a fixed size (length byte + 255 bytes) so that comparing two fields takes
/// the same time whatever their lengths and contents.
type Padded = [u8; 256];

fn pad(bytes: &[u8]) -> Padded {
    let mut padded = [0u8; 256];
    // Fields longer than 255 bytes cannot come off the wire; a longer one is cut and its length
    // byte saturates, so it can only match a user that the server refused to start with.
    let length = bytes.len().min(255);
    padded[0] = u8::try_from(bytes.len()).unwrap_or(u8::MAX);
    padded[1..=length].copy_from_slice(&bytes[..length]);
    padded
}

/// The configured users, kept padded for constant-time comparison.
pub(crate) struct UserTable {
    users: Vec<(Padded, Padded)>,
}

impl UserTable {
    /// A table of the given users (validated by the caller: 1-255 bytes each field).
    pub(crate) fn new(users: &[SocksUser]) -> UserTable {
        UserTable {
            users: users.iter().map(|u| (pad(u.username.as_bytes()), pad(u.password.as_bytes()))).collect(),
        }
    }

    /// True when no authentication is configured.
    pub(crate) fn is_empty(&self) -> bool {
        self.users.is_empty()
    }

    /// True when the credentials match one user. Every user is compared, each in constant time,
    /// so the time taken does not reveal which user (or which field, or how many bytes) matched.
    pub(crate) fn check(&self, credentials: &Credentials) -> bool {
        let username = pad(&credentials.username);
        let password = pad(&credentials.password);
        let mut found = Choice::from(0);
        for (user, pass) in &self.users {
            found |= user.ct_eq(&username) & pass.ct_eq(&password);
        }
        found.into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(name: &str, password: &str) -> SocksUser {
        SocksUser { username: name.into(), password: password.into() }
    }

    fn creds(name: &[u8], password: &[u8]) -> Credentials {
        Credentials { username: name.to_vec(), password: password.to_vec() }
    }

    #[test]
    fn matches_exactly_one_configured_pair() {
        let table = UserTable::new(&[user("alice", "wonder"), user("bob", "builder")]);
        assert!(table.check(&creds(b"alice", b"wonder")));
        assert!(table.check(&creds(b"bob", b"builder")));
        assert!(!table.check(&creds(b"alice", b"builder")));
        assert!(!table.check(&creds(b"alice", b"wonder\0")));
        assert!(!table.check(&creds(b"alic", b"wonder")));
        assert!(!table.check(&creds(b"", b"")));
        assert!(!table.check(&creds(&[b'a'; 300], b"wonder")));
    }

    #[test]
    fn an_empty_table_matches_nothing() {
        let table = UserTable::new(&[]);
        assert!(table.is_empty());
        assert!(!table.check(&creds(b"", b"")));
    }
}
