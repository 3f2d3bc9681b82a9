//! Fuzzes the SOCKS5 handshake parsers (greeting, RFC 1929 credentials, request): no input may
//! panic, and each parser must behave like a streaming parser: a complete message parses the same
//! without the bytes after it and every strict prefix of it is incomplete; a prefix of an
//! incomplete input is incomplete; an error stays the same error when more bytes arrive.
#![no_main]

use std::fmt::Debug;

use libfuzzer_sys::fuzz_target;
use netswitch::inbound::socks::protocol::{
    parse_credentials, parse_greeting, parse_request, Parsed, ProtocolError,
};
use netswitch::Host;

type Parser<T> = fn(&[u8]) -> Result<Parsed<T>, ProtocolError>;

fn check<T: Debug + PartialEq>(parse: Parser<T>, data: &[u8]) {
    match parse(data) {
        Ok(Parsed::Complete(value, used)) => {
            assert!(used > 0 && used <= data.len(), "used {used} of {}", data.len());
            for end in 0..used {
                assert_eq!(parse(&data[..end]), Ok(Parsed::Incomplete), "prefix of {end} bytes");
            }
            assert_eq!(parse(&data[..used]), Ok(Parsed::Complete(value, used)));
        }
        Ok(Parsed::Incomplete) => {
            if let Some(shorter) = data.len().checked_sub(1) {
                assert_eq!(parse(&data[..shorter]), Ok(Parsed::Incomplete));
            }
        }
        Err(error) => {
            let _ = (error.to_string(), error.reply());
            let mut longer = data.to_vec();
            longer.extend_from_slice(&[0, 0xff]);
            assert_eq!(parse(&longer), Err(error));
        }
    }
}

fuzz_target!(|data: &[u8]| {
    check(parse_greeting, data);
    check(parse_credentials, data);
    check(parse_request, data);
    if let Ok(Parsed::Complete(request, _)) = parse_request(data) {
        if let Host::Domain(name) = &request.destination.host {
            assert!(!name.is_empty() && name.len() <= 255, "{name:?}");
        }
    }
});
