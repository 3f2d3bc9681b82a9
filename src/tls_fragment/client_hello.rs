//! Recognises a TLS ClientHello in the first bytes written to a remote and finds its server name.
//!
//! Pure parsing, no I/O. [`parse`] accepts any byte slice: it never panics and never reads past
//! the slice; every length field is checked against what is really there.

use std::ops::Range;

/// TLS record content type "handshake".
pub const CONTENT_TYPE_HANDSHAKE: u8 = 22;
/// Handshake message type "client_hello".
const HANDSHAKE_CLIENT_HELLO: u8 = 1;
/// Extension type "server_name" (RFC 6066).
const EXTENSION_SERVER_NAME: u16 = 0;
/// Server name type "host_name".
const NAME_TYPE_HOST_NAME: u8 = 0;
/// Length of a TLS record header: type, legacy version (2), length (2).
pub const RECORD_HEADER_LEN: usize = 5;

/// A recognised ClientHello: the whole buffer is exactly one TLS handshake record holding exactly
/// one complete ClientHello with a `host_name` server name.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ClientHello {
    /// Where the server name's bytes are in the buffer (absolute offsets, never empty).
    pub server_name: Range<usize>,
}

/// Recognises `buf` as one complete ClientHello record and locates its server name.
///
/// Returns `None` (the caller then passes the bytes through untouched) when `buf` is anything
/// else: not a handshake record, a record length that is not exactly the rest of the buffer
/// (truncated, lying, or a second record behind it), a handshake that is not one complete
/// ClientHello, malformed inner lengths, or no non-empty `host_name` server name.
pub fn parse(buf: &[u8]) -> Option<ClientHello> {
    let mut record = Cursor { buf, at: 0 };
    if record.u8()? != CONTENT_TYPE_HANDSHAKE || record.u8()? != 0x03 {
        return None;
    }
    record.skip(1)?; // minor version: any 0x03xx
    let record_len = usize::from(record.u16()?);
    if record_len != buf.len() - RECORD_HEADER_LEN {
        return None;
    }
    if record.u8()? != HANDSHAKE_CLIENT_HELLO {
        return None;
    }
    let hello_len = record.u24()?;
    if hello_len != record_len - 4 {
        return None;
    }
    record.skip(2 + 32)?; // client_version, random
    let session_id_len = usize::from(record.u8()?);
    record.skip(session_id_len)?;
    let cipher_suites_len = usize::from(record.u16()?);
    record.skip(cipher_suites_len)?;
    let compression_len = usize::from(record.u8()?);
    record.skip(compression_len)?;
    let extensions_len = usize::from(record.u16()?);
    if record.at + extensions_len != buf.len() {
        return None;
    }
    let mut server_name = None;
    while record.at < buf.len() {
        let kind = record.u16()?;
        let len = usize::from(record.u16()?);
        let start = record.at;
        record.skip(len)?;
        if kind == EXTENSION_SERVER_NAME && server_name.is_none() {
            server_name = Some(host_name(buf, start, start + len)?);
        }
    }
    Some(ClientHello { server_name: server_name? })
}

/// The first `host_name` entry of a server_name extension whose body is `buf[start..end]`.
fn host_name(buf: &[u8], start: usize, end: usize) -> Option<Range<usize>> {
    let mut list = Cursor { buf: buf.get(..end)?, at: start };
    let list_len = usize::from(list.u16()?);
    if list.at + list_len != end {
        return None;
    }
    while list.at < end {
        let name_type = list.u8()?;
        let len = usize::from(list.u16()?);
        let name_start = list.at;
        list.skip(len)?;
        if name_type == NAME_TYPE_HOST_NAME {
            return (len > 0).then_some(name_start..name_start + len);
        }
    }
    None
}

/// A bounds-checked reader over a byte slice.
struct Cursor<'a> {
    buf: &'a [u8],
    at: usize,
}

impl Cursor<'_> {
    fn take(&mut self, n: usize) -> Option<&[u8]> {
        let end = self.at.checked_add(n)?;
        let bytes = self.buf.get(self.at..end)?;
        self.at = end;
        Some(bytes)
    }

    fn skip(&mut self, n: usize) -> Option<()> {
        self.take(n).map(|_| ())
    }

    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }

    fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_be_bytes([b[0], b[1]]))
    }

    fn u24(&mut self) -> Option<usize> {
        self.take(3).map(|b| usize::from(b[0]) << 16 | usize::from(b[1]) << 8 | usize::from(b[2]))
    }
}

/// Builds a syntactically valid ClientHello record for `server_name` (tests, fuzzing, examples).
/// `padding` adds an extension of that many bytes before the server name, so callers can vary
/// where the name sits.
pub fn build_client_hello(server_name: &str, padding: usize) -> Vec<u8> {
    let name = server_name.as_bytes();
    let mut extensions = Vec::new();
    if padding > 0 {
        extensions.extend_from_slice(&21u16.to_be_bytes()); // padding extension
        extensions.extend_from_slice(&(padding as u16).to_be_bytes());
        extensions.extend(std::iter::repeat_n(0u8, padding));
    }
    extensions.extend_from_slice(&EXTENSION_SERVER_NAME.to_be_bytes());
    extensions.extend_from_slice(&((name.len() + 5) as u16).to_be_bytes());
    extensions.extend_from_slice(&((name.len() + 3) as u16).to_be_bytes());
    extensions.push(NAME_TYPE_HOST_NAME);
    extensions.extend_from_slice(&(name.len() as u16).to_be_bytes());
    extensions.extend_from_slice(name);
    let mut body = vec![0x03, 0x03];
    body.extend_from_slice(&[0x5a; 32]);
    body.push(32);
    body.extend_from_slice(&[0x11; 32]);
    body.extend_from_slice(&[0x00, 0x04, 0x13, 0x01, 0x13, 0x02]);
    body.extend_from_slice(&[0x01, 0x00]);
    body.extend_from_slice(&(extensions.len() as u16).to_be_bytes());
    body.extend_from_slice(&extensions);
    let mut record = vec![CONTENT_TYPE_HANDSHAKE, 0x03, 0x01];
    record.extend_from_slice(&((body.len() + 4) as u16).to_be_bytes());
    record.push(HANDSHAKE_CLIENT_HELLO);
    record.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
    record.extend_from_slice(&body);
    record
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_server_name() {
        for padding in [0, 1, 300] {
            let hello = build_client_hello("www.example.com", padding);
            let parsed = parse(&hello).unwrap();
            assert_eq!(&hello[parsed.server_name], b"www.example.com");
        }
    }

    #[test]
    fn rejects_everything_else() {
        let hello = build_client_hello("a.example.org", 0);
        // Every strict prefix (a ClientHello split across writes) and a second record behind it.
        for end in 0..hello.len() {
            assert_eq!(parse(&hello[..end]), None, "prefix of {end}");
        }
        let mut two = hello.clone();
        two.extend_from_slice(&hello);
        assert_eq!(parse(&two), None);
        // Lying lengths: record, handshake.
        for (at, delta) in [(4usize, 1i16), (4, -1), (8, 1), (8, -1)] {
            let mut bad = hello.clone();
            bad[at] = (bad[at] as i16 + delta) as u8;
            assert_eq!(parse(&bad), None, "byte {at} {delta:+}");
        }
        // Not a handshake record / not a ClientHello / not TLS at all.
        let mut alert = hello.clone();
        alert[0] = 21;
        assert_eq!(parse(&alert), None);
        let mut server_hello = hello.clone();
        server_hello[5] = 2;
        assert_eq!(parse(&server_hello), None);
        assert_eq!(parse(b"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n"), None);
        assert_eq!(parse(&[]), None);
    }
}
