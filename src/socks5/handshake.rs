//! The opening of a SOCKS5 connection: the client's greeting (`VER NMETHODS METHODS`), the
//! server's method choice (`VER METHOD`) and the RFC 1929 username/password sub-negotiation
//! (`VER ULEN UNAME PLEN PASSWD`, answered by `VER STATUS`).

use super::{incomplete, length_prefixed, EncodeError, Parsed, ProtocolError, VERSION};

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
    let Some(&version) = buf.first() else { return Ok(incomplete(2)) };
    if version != VERSION {
        return Err(ProtocolError::BadVersion(version));
    }
    match length_prefixed(buf, 1) {
        Ok(methods) => Ok(Parsed::Complete(Greeting { methods: methods.to_vec() }, 2 + methods.len())),
        Err(needed) => Ok(incomplete(needed.max(2))),
    }
}

/// Appends a greeting offering `methods` to `out`; more than 255 methods are refused and nothing
/// is appended.
pub fn encode_greeting(methods: &[u8], out: &mut Vec<u8>) -> Result<(), EncodeError> {
    let count = u8::try_from(methods.len()).map_err(|_| EncodeError::TooLong("method list"))?;
    out.extend_from_slice(&[VERSION, count]);
    out.extend_from_slice(methods);
    Ok(())
}

/// The server's method choice, `VER METHOD`.
pub fn encode_method_choice(method: u8) -> [u8; 2] {
    [VERSION, method]
}

/// Parses the server's method choice: the chosen method.
pub fn parse_method_choice(buf: &[u8]) -> Result<Parsed<u8>, ProtocolError> {
    match buf {
        [] => Ok(incomplete(2)),
        [version, ..] if *version != VERSION => Err(ProtocolError::BadVersion(*version)),
        [_] => Ok(incomplete(2)),
        [_, method, ..] => Ok(Parsed::Complete(*method, 2)),
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
    let Some(&version) = buf.first() else { return Ok(incomplete(3)) };
    if version != AUTH_VERSION {
        return Err(ProtocolError::BadAuthVersion(version));
    }
    let username = match length_prefixed(buf, 1) {
        Ok(username) => username,
        // The password's length byte follows whatever the username is.
        Err(needed) => return Ok(incomplete(needed.max(2) + 1)),
    };
    let password_at = 2 + username.len();
    let password = match length_prefixed(buf, password_at) {
        Ok(password) => password,
        Err(needed) => return Ok(incomplete(needed)),
    };
    let end = password_at + 1 + password.len();
    Ok(Parsed::Complete(Credentials { username: username.to_vec(), password: password.to_vec() }, end))
}

/// Appends an RFC 1929 sub-negotiation for `username` and `password` to `out`; a field longer
/// than 255 bytes is refused and nothing is appended.
pub fn encode_credentials(username: &[u8], password: &[u8], out: &mut Vec<u8>) -> Result<(), EncodeError> {
    let user_length = u8::try_from(username.len()).map_err(|_| EncodeError::TooLong("username"))?;
    let pass_length = u8::try_from(password.len()).map_err(|_| EncodeError::TooLong("password"))?;
    out.extend_from_slice(&[AUTH_VERSION, user_length]);
    out.extend_from_slice(username);
    out.push(pass_length);
    out.extend_from_slice(password);
    Ok(())
}

/// The server's answer to the sub-negotiation, `VER STATUS`.
pub fn encode_auth_status(status: u8) -> [u8; 2] {
    [AUTH_VERSION, status]
}

/// Parses the server's answer to the sub-negotiation: the status ([`AUTH_SUCCESS`] or a
/// failure). The version byte is not checked: servers in the wild answer 0x05 there, and the
/// status alone decides (as curl does).
pub fn parse_auth_status(buf: &[u8]) -> Result<Parsed<u8>, ProtocolError> {
    match buf {
        [_, status, ..] => Ok(Parsed::Complete(*status, 2)),
        _ => Ok(incomplete(2)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::socks5::test_support::{check_prefixes, garbage};

    #[test]
    fn greeting() {
        check_prefixes(parse_greeting, &[5, 2, 0, 2], Greeting { methods: vec![0, 2] });
        check_prefixes(parse_greeting, &[5, 0], Greeting { methods: vec![] });
        assert_eq!(parse_greeting(&[4, 1, 0]), Err(ProtocolError::BadVersion(4)));
        assert_eq!(parse_greeting(b"GET / HTTP/1.1"), Err(ProtocolError::BadVersion(b'G')));
        let mut out = Vec::new();
        encode_greeting(&[METHOD_NO_AUTH, METHOD_USER_PASS], &mut out).unwrap();
        check_prefixes(parse_greeting, &out, Greeting { methods: vec![0, 2] });
        assert_eq!(encode_greeting(&[0; 256], &mut out), Err(EncodeError::TooLong("method list")));
        assert_eq!(out, [5, 2, 0, 2], "nothing appended on error");
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
    fn method_choice() {
        check_prefixes(parse_method_choice, &encode_method_choice(METHOD_USER_PASS), METHOD_USER_PASS);
        assert_eq!(encode_method_choice(METHOD_NONE_ACCEPTABLE), [5, 0xff]);
        assert_eq!(parse_method_choice(&[4]), Err(ProtocolError::BadVersion(4)));
    }

    #[test]
    fn credentials() {
        let expected = Credentials { username: b"user".to_vec(), password: b"secret".to_vec() };
        check_prefixes(parse_credentials, b"\x01\x04user\x06secret", expected.clone());
        let mut out = Vec::new();
        encode_credentials(b"user", b"secret", &mut out).unwrap();
        check_prefixes(parse_credentials, &out, expected);
        let empty = Credentials { username: vec![], password: vec![] };
        check_prefixes(parse_credentials, &[1, 0, 0], empty);
        assert_eq!(parse_credentials(&[5, 1, b'u']), Err(ProtocolError::BadAuthVersion(5)));
        assert_eq!(encode_credentials(&[b'u'; 256], b"p", &mut out), Err(EncodeError::TooLong("username")));
        assert_eq!(encode_credentials(b"u", &[b'p'; 256], &mut out), Err(EncodeError::TooLong("password")));
        let shown =
            format!("{:?}", Credentials { username: b"hunter3".to_vec(), password: b"hunter2".to_vec() });
        assert!(!shown.contains("hunter2") && !shown.contains("hunter3"), "{shown}");
    }

    #[test]
    fn auth_status() {
        check_prefixes(parse_auth_status, &encode_auth_status(AUTH_FAILURE), AUTH_FAILURE);
        assert_eq!(encode_auth_status(AUTH_SUCCESS), [1, 0]);
        assert_eq!(parse_auth_status(&[5, 0]), Ok(Parsed::Complete(AUTH_SUCCESS, 2)), "any version byte");
    }

    #[test]
    fn garbage_never_panics() {
        garbage(|buf| {
            let _ = parse_greeting(buf);
            let _ = parse_method_choice(buf);
            let _ = parse_credentials(buf);
            let _ = parse_auth_status(buf);
        });
    }
}
