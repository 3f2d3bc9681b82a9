//! Fuzzes the SOCKS5 UDP request header parser of `netswitch::socks5`: no input may panic; an
//! accepted header names a destination with a non-zero port, its data offset is inside the
//! datagram, and encoding that destination (as replies do) parses back to the same destination
//! and the same data.
#![no_main]

use libfuzzer_sys::fuzz_target;
use netswitch::socks5::{encode_udp_header, parse_udp_header};

fuzz_target!(|data: &[u8]| {
    let (destination, data_at) = match parse_udp_header(data) {
        Ok(parsed) => parsed,
        Err(error) => {
            let _ = error.to_string();
            return;
        }
    };
    assert!(data_at <= data.len() && destination.port != 0);
    let mut datagram = Vec::new();
    encode_udp_header(&destination, &mut datagram).expect("a parsed destination encodes");
    datagram.extend_from_slice(&data[data_at..]);
    let (again, again_at) = parse_udp_header(&datagram).expect("an encoded header parses");
    assert_eq!(again, destination);
    assert_eq!(&datagram[again_at..], &data[data_at..]);
});
