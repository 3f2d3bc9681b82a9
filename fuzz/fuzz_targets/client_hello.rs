//! Fuzzes the TLS ClientHello reader and the re-framing built on it: no input may panic or read
//! out of bounds, and a recognised ClientHello must re-frame into records that reassemble to it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use netswitch::tls_fragment::client_hello::{parse, RECORD_HEADER_LEN};
use netswitch::tls_fragment::split::{cut_points, records, reframe, split_at};

fuzz_target!(|data: &[u8]| {
    let Some(hello) = parse(data) else { return };
    assert!(hello.server_name.end <= data.len() && !hello.server_name.is_empty());
    let cuts = cut_points(data, hello.server_name, |n| n / 2);
    assert_eq!(split_at(data, &cuts).concat(), data);
    let framed = reframe(data, &cuts).concat();
    let back = records(&framed).expect("re-framed records parse");
    let payload: Vec<u8> = back.iter().flat_map(|(_, p)| p.iter().copied()).collect();
    assert_eq!(&payload[..], &data[RECORD_HEADER_LEN..]);
});
