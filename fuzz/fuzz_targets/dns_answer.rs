//! Fuzzes what netswitch reads from a DNS server (`netswitch::dns::wire`): any bytes a server
//! sends back, read as the answer to an A and to an AAAA question for `svc.example.test` (the id
//! is taken from the input's first two bytes, so inputs get past the id check), and any text
//! given as a name. No input may panic. An answer read as addresses has at least one, all of the
//! family asked, without duplicates; `Truncated` only with the TC bit set; a name `parse_name`
//! accepts is ASCII, 1..=253 bytes without the final dot, has no empty label, and makes a query
//! for both families. Seeds (`fuzz/corpus/dns_answer/`): answers assembled by hand (two A
//! records, AAAA, a CNAME chain, NXDOMAIN and NODATA with an SOA, TC, SERVFAIL, EDNS OPT) and a
//! name.
#![no_main]

use libfuzzer_sys::fuzz_target;
use netswitch::dns::wire::{build_query, parse_name, read_answer, Outcome, MAX_NAME_LEN};
use netswitch::dns::Family;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(name) = parse_name(text) {
            let bare = text.strip_suffix('.').unwrap_or(text);
            assert!(!bare.is_empty() && bare.len() <= MAX_NAME_LEN && bare.is_ascii(), "{text:?}");
            assert!(bare.split('.').all(|label| !label.is_empty() && label.len() <= 63), "{text:?}");
            for family in [Family::V4, Family::V6] {
                build_query(&name, family).expect("an accepted name makes a query");
            }
        }
    }

    let question = parse_name("svc.example.test").expect("a valid name");
    let id = match data {
        [a, b, ..] => u16::from_be_bytes([*a, *b]),
        _ => 0,
    };
    for family in [Family::V4, Family::V6] {
        match read_answer(data, id, &question, family) {
            Ok(Outcome::Addresses { ips, .. }) => {
                assert!(!ips.is_empty());
                assert!(ips.iter().all(|ip| ip.is_ipv4() == (family == Family::V4)), "{ips:?}");
                for (i, ip) in ips.iter().enumerate() {
                    assert!(!ips[..i].contains(ip), "duplicate {ip}");
                }
            }
            Ok(Outcome::Truncated) => assert!(data.len() > 2 && data[2] & 0x02 != 0, "TC bit not set"),
            Ok(Outcome::NoData { .. } | Outcome::NxDomain { .. }) => {}
            Err(error) => {
                let _ = format!("{error:?}");
            }
        }
    }
});
