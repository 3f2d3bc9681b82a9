//! Fuzzes the SOCKS5 message parsers of `netswitch::socks5` (greeting, method choice, RFC 1929
//! credentials and status, request, reply, address): no input may panic, and each parser must
//! behave like a streaming parser: a complete message parses the same without the bytes after it;
//! every strict prefix of it is incomplete with a `needed` above the prefix and at most the
//! message (so an exact reader never reads past it); a prefix of an incomplete input is
//! incomplete; an error stays the same error when more bytes arrive. Encoding what a parser
//! accepted parses back to the same value.
#![no_main]

use std::fmt::Debug;

use libfuzzer_sys::fuzz_target;
use netswitch::socks5::{
    encode_credentials, encode_greeting, encode_reply, encode_request, parse_address, parse_auth_status,
    parse_credentials, parse_greeting, parse_method_choice, parse_reply, parse_request, write_address, Parsed,
};
use netswitch::Host;

type Parser<T, E> = fn(&[u8]) -> Result<Parsed<T>, E>;

fn check<T: Debug + PartialEq, E: Debug + PartialEq + ToString>(parse: Parser<T, E>, data: &[u8]) -> Option<T> {
    match parse(data) {
        Ok(Parsed::Complete(value, used)) => {
            assert!(used > 0 && used <= data.len(), "used {used} of {}", data.len());
            for end in 0..used {
                match parse(&data[..end]) {
                    Ok(Parsed::Incomplete { needed }) => {
                        assert!(end < needed && needed <= used, "prefix of {end} bytes of {used}: needed {needed}")
                    }
                    other => panic!("prefix of {end} bytes of {used}: {other:?}"),
                }
            }
            match parse(&data[..used]) {
                Ok(Parsed::Complete(again, again_used)) => {
                    assert_eq!((&again, again_used), (&value, used));
                }
                other => panic!("the message alone: {other:?}"),
            }
            Some(value)
        }
        Ok(Parsed::Incomplete { needed }) => {
            assert!(needed > data.len(), "needed {needed} with {} bytes given", data.len());
            if let Some(shorter) = data.len().checked_sub(1) {
                assert!(matches!(parse(&data[..shorter]), Ok(Parsed::Incomplete { .. })));
            }
            None
        }
        Err(error) => {
            let _ = error.to_string();
            let mut longer = data.to_vec();
            longer.extend_from_slice(&[0, 0xff]);
            assert_eq!(parse(&longer), Err(error));
            None
        }
    }
}

/// Parses `encoded` completely with `parse`: the value and all of its bytes.
fn reparse<T: Debug, E: Debug>(parse: Parser<T, E>, encoded: &[u8]) -> T {
    match parse(encoded) {
        Ok(Parsed::Complete(value, used)) if used == encoded.len() => value,
        other => panic!("{encoded:?} does not parse back: {other:?}"),
    }
}

fuzz_target!(|data: &[u8]| {
    if let Some(greeting) = check(parse_greeting, data) {
        let mut out = Vec::new();
        encode_greeting(&greeting.methods, &mut out).expect("a parsed greeting encodes");
        assert_eq!(reparse(parse_greeting, &out), greeting);
    }
    check(parse_method_choice, data);
    if let Some(credentials) = check(parse_credentials, data) {
        let mut out = Vec::new();
        encode_credentials(&credentials.username, &credentials.password, &mut out).expect("encodes");
        assert_eq!(reparse(parse_credentials, &out), credentials);
    }
    check(parse_auth_status, data);
    if let Some(request) = check(parse_request, data) {
        if let Host::Domain(name) = &request.destination.host {
            assert!(!name.is_empty() && name.len() <= 255, "{name:?}");
        }
        let mut out = Vec::new();
        encode_request(request.command, &request.destination, &mut out).expect("a parsed request encodes");
        assert_eq!(reparse(parse_request, &out), request);
    }
    if let Some(reply) = check(parse_reply, data) {
        if let Some(bound) = reply.bound.socket_addr() {
            assert_eq!(reparse(parse_reply, &encode_reply(reply.code, bound)), reply);
        }
    }
    if let Some(address) = check(parse_address, data) {
        let mut out = Vec::new();
        write_address(&address, &mut out).expect("a parsed address encodes");
        assert_eq!(reparse(parse_address, &out), address);
    }
});
