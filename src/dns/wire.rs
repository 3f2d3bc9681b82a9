//! The DNS wire format, through hickory-proto: build an A or AAAA query, read its answer.
//! No parsing by hand: hickory's `Message` does it; this module only decides what an answer
//! means for an address lookup.

use std::net::IpAddr;

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{DNSClass, Name, RData, RecordType};

use super::Family;

/// The UDP payload size we advertise with EDNS(0) (the 2020 DNS flag day value: no IP
/// fragmentation on any sane path).
pub const EDNS_PAYLOAD: u16 = 1232;

/// Longest name in presentation form without the final dot (RFC 1035: 255 bytes on the wire).
pub const MAX_NAME_LEN: usize = 253;

fn record_type(family: Family) -> RecordType {
    match family {
        Family::V4 => RecordType::A,
        Family::V6 => RecordType::AAAA,
    }
}

/// Checks `name` (a host name in presentation form, optional final dot) and turns it into a
/// fully qualified hickory `Name` (no search domains are ever appended). Errors say what is
/// wrong in words; nothing is sent for an invalid name.
pub fn parse_name(name: &str) -> Result<Name, String> {
    let trimmed = name.strip_suffix('.').unwrap_or(name);
    if trimmed.is_empty() {
        return Err("empty name".into());
    }
    if trimmed.len() > MAX_NAME_LEN {
        return Err(format!("{} bytes long (at most {MAX_NAME_LEN})", trimmed.len()));
    }
    for label in trimmed.split('.') {
        if label.is_empty() {
            return Err("empty label".into());
        }
        if label.len() > 63 {
            return Err(format!("label of {} bytes (at most 63)", label.len()));
        }
    }
    if !trimmed.is_ascii() {
        return Err("not ASCII (give the punycode form, xn--…)".into());
    }
    let mut parsed = Name::from_ascii(trimmed).map_err(|e| e.to_string())?;
    parsed.set_fqdn(true);
    Ok(parsed)
}

/// A query for `name`'s addresses of `family`, with a random id and EDNS(0): its id and bytes.
pub fn build_query(name: &Name, family: Family) -> Result<(u16, Vec<u8>), String> {
    let id: u16 = rand::random();
    let mut message = Message::new();
    message
        .set_id(id)
        .set_message_type(MessageType::Query)
        .set_op_code(OpCode::Query)
        .set_recursion_desired(true)
        .add_query(Query::query(name.clone(), record_type(family)));
    let mut edns = Edns::new();
    edns.set_max_payload(EDNS_PAYLOAD);
    message.set_edns(edns);
    let bytes = message.to_vec().map_err(|e| e.to_string())?;
    Ok((id, bytes))
}

/// What an answer says about the question.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Addresses (following CNAMEs from the question's name) and the smallest TTL on the way.
    Addresses {
        /// The addresses, in the server's order, duplicates removed.
        ips: Vec<IpAddr>,
        /// Seconds the answer may be cached.
        ttl: u32,
    },
    /// The name exists but has no record of this family (NODATA). `ttl` from the SOA, if any.
    NoData {
        /// Negative-caching TTL (RFC 2308), when the server sent an SOA.
        ttl: Option<u32>,
    },
    /// The name does not exist. `ttl` from the SOA, if any.
    NxDomain {
        /// Negative-caching TTL (RFC 2308), when the server sent an SOA.
        ttl: Option<u32>,
    },
    /// The answer did not fit (TC bit): ask again over TCP.
    Truncated,
}

/// Why an answer is not usable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AnswerError {
    /// Not a reply to our question (other id, not a response, other question): ignore it and
    /// keep waiting (UDP), or fail (TCP).
    NotOurs(String),
    /// A reply to our question that is malformed or says the server failed.
    Bad(String),
    /// The server answered with this error code (SERVFAIL, REFUSED…).
    Rcode(String),
}

/// Reads `bytes` as the answer to query `id` for `name`/`family`, class IN (a question or a
/// record of another class answers nothing).
pub fn read_answer(bytes: &[u8], id: u16, name: &Name, family: Family) -> Result<Outcome, AnswerError> {
    let message = Message::from_vec(bytes).map_err(|e| {
        // A malformed datagram might not even be ours: only trust its id if it has one.
        if bytes.len() >= 2 && u16::from_be_bytes([bytes[0], bytes[1]]) == id {
            AnswerError::Bad(format!("cannot parse {} bytes: {e}", bytes.len()))
        } else {
            AnswerError::NotOurs(format!("unparsable datagram of {} bytes", bytes.len()))
        }
    })?;
    if message.id() != id || message.message_type() != MessageType::Response {
        return Err(AnswerError::NotOurs(format!("id {} / type {:?}", message.id(), message.message_type())));
    }
    if message.truncated() {
        return Ok(Outcome::Truncated);
    }
    let question_matches = message.queries().len() == 1
        && message.queries()[0].query_type() == record_type(family)
        && message.queries()[0].query_class() == DNSClass::IN
        && message.queries()[0].name().eq_ignore_root_case(name);
    if !question_matches {
        return Err(AnswerError::NotOurs("answer to another question".into()));
    }
    let negative_ttl = || {
        message.name_servers().iter().find_map(|record| match record.data() {
            RData::SOA(soa) => Some(record.ttl().min(soa.minimum())),
            _ => None,
        })
    };
    match message.response_code() {
        ResponseCode::NoError => {}
        ResponseCode::NXDomain => return Ok(Outcome::NxDomain { ttl: negative_ttl() }),
        other => return Err(AnswerError::Rcode(other.to_string())),
    }
    // Follow the CNAME chain from the question's name; collect addresses of the owner at its end.
    let mut owner = name.clone();
    let mut ttl = u32::MAX;
    for _ in 0..8 {
        let cname = message.answers().iter().find_map(|record| match record.data() {
            RData::CNAME(target)
                if record.dns_class() == DNSClass::IN && record.name().eq_ignore_root_case(&owner) =>
            {
                Some((target.0.clone(), record.ttl()))
            }
            _ => None,
        });
        let Some((target, cname_ttl)) = cname else { break };
        owner = target;
        ttl = ttl.min(cname_ttl);
    }
    let mut ips: Vec<IpAddr> = Vec::new();
    for record in message.answers() {
        if record.dns_class() != DNSClass::IN || !record.name().eq_ignore_root_case(&owner) {
            continue;
        }
        let ip = match (record.data(), family) {
            (RData::A(a), Family::V4) => IpAddr::V4(a.0),
            (RData::AAAA(aaaa), Family::V6) => IpAddr::V6(aaaa.0),
            _ => continue,
        };
        ttl = ttl.min(record.ttl());
        if !ips.contains(&ip) {
            ips.push(ip);
        }
    }
    if ips.is_empty() {
        return Ok(Outcome::NoData { ttl: negative_ttl() });
    }
    Ok(Outcome::Addresses { ips, ttl })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(parse_name("example.com").is_ok());
        assert!(parse_name("example.com.").is_ok());
        assert_eq!(parse_name("a..invalid").unwrap_err(), "empty label");
        assert_eq!(parse_name("").unwrap_err(), "empty name");
        let long = vec!["a".repeat(63); 4].join(".") + ".com";
        assert!(parse_name(&long).unwrap_err().contains("bytes long"), "{long}");
        assert!(parse_name(&"a".repeat(64)).unwrap_err().contains("label of 64"));
        assert!(parse_name("bücher.de").unwrap_err().contains("punycode"));
        assert!(parse_name("xn--bcher-kva.de").is_ok());
        let longest = vec!["a".repeat(61); 4].join(".") + ".b"; // 4 × 61 + 3 dots + 2 = 249
        let longest = format!("{}.{longest}", "c".repeat(253 - longest.len() - 1));
        assert_eq!(longest.len(), 253);
        assert!(parse_name(&longest).is_ok());
        assert!(parse_name(&format!("d{longest}")).unwrap_err().contains("254 bytes long"));
    }

    /// A real answer (with a CNAME, an A record and an SOA) to corrupt in the property test.
    fn sample_answer() -> (u16, Vec<u8>) {
        use hickory_proto::rr::rdata::{A, CNAME, SOA};
        use hickory_proto::rr::Record;
        let name = parse_name("www.example.test").unwrap();
        let target = parse_name("cdn.example.test").unwrap();
        let (id, query) = build_query(&name, Family::V4).unwrap();
        let mut reply = Message::from_vec(&query).unwrap();
        reply.set_message_type(MessageType::Response);
        reply.add_answer(Record::from_rdata(name.clone(), 300, RData::CNAME(CNAME(target.clone()))));
        reply.add_answer(Record::from_rdata(target.clone(), 60, RData::A(A::new(192, 0, 2, 7))));
        let soa = SOA::new(target.clone(), target.clone(), 1, 2, 3, 4, 5);
        reply.add_name_server(Record::from_rdata(target, 5, RData::SOA(soa)));
        (id, reply.to_vec().unwrap())
    }

    proptest::proptest! {
        /// Whatever arrives (garbage, or a real answer with bytes changed, cut or appended),
        /// reading it gives an outcome or an error, never a panic.
        #[test]
        fn any_datagram_is_an_outcome_or_an_error(
            garbage in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..600),
            flips in proptest::collection::vec((0usize..200, proptest::prelude::any::<u8>()), 0..8),
            cut in 0usize..200,
        ) {
            let name = parse_name("www.example.test").unwrap();
            let _ = read_answer(&garbage, 7, &name, Family::V4);
            let (id, mut answer) = sample_answer();
            for (at, value) in flips {
                if let Some(byte) = answer.get_mut(at) {
                    *byte = value;
                }
            }
            let _ = read_answer(&answer, id, &name, Family::V4);
            answer.truncate(cut);
            let _ = read_answer(&answer, id, &name, Family::V6);
            answer.extend_from_slice(&garbage);
            let _ = read_answer(&answer, id, &name, Family::V4);
        }
    }

    #[test]
    fn negative_answers_carry_the_soa_ttl() {
        let (id, answer) = sample_answer();
        let name = parse_name("www.example.test").unwrap();
        let mut reply = Message::from_vec(&answer).unwrap();
        reply.take_answers();
        reply.set_response_code(ResponseCode::NXDomain);
        let bytes = reply.to_vec().unwrap();
        assert_eq!(read_answer(&bytes, id, &name, Family::V4), Ok(Outcome::NxDomain { ttl: Some(5) }));
    }

    #[test]
    fn follows_the_cname_chain_and_takes_the_smallest_ttl() {
        use hickory_proto::rr::rdata::{A, CNAME};
        use hickory_proto::rr::Record;
        let name = parse_name("www.example.test").unwrap();
        let target = parse_name("cdn.example.test").unwrap();
        let (id, query) = build_query(&name, Family::V4).unwrap();
        let mut reply = Message::from_vec(&query).unwrap();
        reply.set_message_type(MessageType::Response);
        reply.add_answer(Record::from_rdata(name.clone(), 300, RData::CNAME(CNAME(target.clone()))));
        reply.add_answer(Record::from_rdata(target.clone(), 60, RData::A(A::new(192, 0, 2, 7))));
        // A record of another owner: ignored.
        reply.add_answer(Record::from_rdata(
            parse_name("evil.test").unwrap(),
            60,
            RData::A(A::new(6, 6, 6, 6)),
        ));
        let outcome = read_answer(&reply.to_vec().unwrap(), id, &name, Family::V4).unwrap();
        assert_eq!(outcome, Outcome::Addresses { ips: vec!["192.0.2.7".parse().unwrap()], ttl: 60 });
        // Another id: not ours.
        assert!(matches!(
            read_answer(&reply.to_vec().unwrap(), id ^ 1, &name, Family::V4),
            Err(AnswerError::NotOurs(_))
        ));
    }
}
