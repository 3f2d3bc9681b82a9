//! The DNS messages of the tunnel's DNS hijack, through hickory-proto (no hand-written parser):
//! what an app's query asks ([`read_query`]) and the reply to it ([`reply`], [`encode`]).
//!
//! | Query | Reply |
//! |---|---|
//! | one question, class IN, type A or AAAA | after the lookup ([`Outcome`]): the addresses (owned by the name asked), NODATA, NXDOMAIN or SERVFAIL |
//! | one question, class IN, any other type (HTTPS, TXT, MX, PTR…) | NOERROR with no record, at once (see below) |
//! | another opcode than QUERY, another class | NOTIMP |
//! | no question or several, or unparsable after a whole header | FORMERR |
//! | a response (QR set), or less than a header | nothing |
//!
//! Other types get an empty NOERROR answer rather than a forwarded query: the resolvers
//! netswitch uses per network (the interface's DNS servers, the host's resolver for that
//! network, `getaddrinfo`) look up addresses only, so only A and AAAA can be asked over the
//! network the strategy chooses. Empty rather than NOTIMP or SERVFAIL because the common case
//! on a phone is a browser's HTTPS/SVCB query, which then falls back to A/AAAA at once, where an
//! error makes some stub resolvers retry or mark the server bad.
//!
//! A reply echoes the id, the question, RD and CD, sets RA, and carries an OPT record when the
//! query did (payload size [`wire::EDNS_PAYLOAD`]). Over UDP it is cut to the client's payload
//! size (512 bytes without EDNS, at most [`wire::EDNS_PAYLOAD`]): a longer one goes as the
//! header and question with TC set, so the client asks again over TCP.

use std::net::IpAddr;

use hickory_proto::op::{Edns, Message, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA};
use hickory_proto::rr::{DNSClass, RData, Record, RecordType};

use crate::dns::{wire, Family};

/// Size of a DNS header: anything shorter is not answered.
const HEADER_LEN: usize = 12;
/// The largest UDP reply without EDNS (RFC 1035).
pub const UDP_LIMIT: usize = 512;
/// The largest reply over TCP (the 2-byte length prefix).
pub const TCP_LIMIT: usize = u16::MAX as usize;

/// A query the hijack answers: one question of class IN.
#[derive(Debug, Clone)]
pub struct Question {
    id: u16,
    query: Query,
    recursion_desired: bool,
    checking_disabled: bool,
    /// The client's EDNS UDP payload size, when its query had an OPT record.
    edns_payload: Option<u16>,
}

impl Question {
    /// The name asked, in presentation form with the final dot (so that a name that looks like
    /// an IP literal is still looked up as a name).
    pub fn name(&self) -> String {
        self.query.name().to_ascii()
    }

    /// The family to look up: A is IPv4, AAAA IPv6, any other type `None`.
    pub fn family(&self) -> Option<Family> {
        match self.query.query_type() {
            RecordType::A => Some(Family::V4),
            RecordType::AAAA => Some(Family::V6),
            _ => None,
        }
    }

    /// The longest reply this client takes over UDP.
    pub fn udp_limit(&self) -> usize {
        let asked = usize::from(self.edns_payload.unwrap_or(0));
        asked.clamp(UDP_LIMIT, usize::from(wire::EDNS_PAYLOAD))
    }
}

/// What the lookup of a [`Question`] gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// These addresses, to be kept `ttl` seconds.
    Addresses {
        /// The addresses (those of another family than the question's are left out).
        ips: Vec<IpAddr>,
        /// Seconds.
        ttl: u32,
    },
    /// The name has no record of the type asked (NOERROR, no answer).
    NoData,
    /// The name does not exist.
    NxDomain,
    /// The lookup failed (timeout, server error, no network).
    ServFail,
}

/// What an app's query needs (see [`read_query`]).
#[derive(Debug)]
pub enum Read {
    /// A question to look up (or answer NODATA when [`Question::family`] is `None`).
    Ask(Question),
    /// This error reply, at once.
    Refuse(Box<Message>),
    /// No reply at all.
    Ignore,
}

/// Reads an app's query (see the module docs).
pub fn read_query(bytes: &[u8]) -> Read {
    if bytes.len() < HEADER_LEN || bytes[2] & 0x80 != 0 {
        return Read::Ignore;
    }
    let Ok(message) = Message::from_vec(bytes) else {
        let id = u16::from_be_bytes([bytes[0], bytes[1]]);
        return Read::Refuse(Box::new(Message::error_msg(id, OpCode::Query, ResponseCode::FormErr)));
    };
    let error = |code| {
        let mut reply = Message::error_msg(message.id(), message.op_code(), code);
        reply.add_queries(message.queries().iter().cloned());
        reply.set_recursion_desired(message.recursion_desired());
        Read::Refuse(Box::new(reply))
    };
    if message.op_code() != OpCode::Query {
        return error(ResponseCode::NotImp);
    }
    let [query] = message.queries() else { return error(ResponseCode::FormErr) };
    if query.query_class() != DNSClass::IN {
        return error(ResponseCode::NotImp);
    }
    Read::Ask(Question {
        id: message.id(),
        query: query.clone(),
        recursion_desired: message.recursion_desired(),
        checking_disabled: message.checking_disabled(),
        edns_payload: message.extensions().as_ref().map(Edns::max_payload),
    })
}

/// The reply to `question` saying `outcome`.
pub fn reply(question: &Question, outcome: &Outcome) -> Message {
    let code = match outcome {
        Outcome::Addresses { .. } | Outcome::NoData => ResponseCode::NoError,
        Outcome::NxDomain => ResponseCode::NXDomain,
        Outcome::ServFail => ResponseCode::ServFail,
    };
    let mut message = Message::error_msg(question.id, OpCode::Query, code);
    message
        .set_recursion_desired(question.recursion_desired)
        .set_recursion_available(true)
        .set_checking_disabled(question.checking_disabled)
        .add_query(question.query.clone());
    if let Outcome::Addresses { ips, ttl } = outcome {
        let owner = question.query.name();
        for ip in ips {
            let data = match (ip, question.query.query_type()) {
                (IpAddr::V4(v4), RecordType::A) => RData::A(A(*v4)),
                (IpAddr::V6(v6), RecordType::AAAA) => RData::AAAA(AAAA(*v6)),
                _ => continue,
            };
            message.add_answer(Record::from_rdata(owner.clone(), *ttl, data));
        }
    }
    if question.edns_payload.is_some() {
        let mut edns = Edns::new();
        edns.set_max_payload(wire::EDNS_PAYLOAD);
        message.set_edns(edns);
    }
    message
}

/// The bytes of `message`, at most `limit` long: a longer message goes as its header and
/// question with TC set. `None` when hickory cannot encode it.
pub fn encode(message: &Message, limit: usize) -> Option<Vec<u8>> {
    let bytes = message.to_vec().ok()?;
    if bytes.len() <= limit {
        return Some(bytes);
    }
    message.truncate().to_vec().ok().filter(|bytes| bytes.len() <= limit)
}

/// The bytes of a query for `name`/`kind` with id 0x1234 (tests).
#[cfg(test)]
pub(crate) fn query_bytes(name: &str, kind: RecordType, edns: Option<u16>) -> Vec<u8> {
    use hickory_proto::op::MessageType;
    let mut message = Message::new();
    message
        .set_id(0x1234)
        .set_message_type(MessageType::Query)
        .set_recursion_desired(true)
        .add_query(Query::query(wire::parse_name(name).unwrap(), kind));
    if let Some(size) = edns {
        let mut extension = Edns::new();
        extension.set_max_payload(size);
        message.set_edns(extension);
    }
    message.to_vec().unwrap()
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::op::MessageType;

    fn answer(bytes: &[u8]) -> Message {
        Message::from_vec(bytes).unwrap()
    }

    fn ask(bytes: &[u8]) -> Question {
        match read_query(bytes) {
            Read::Ask(question) => question,
            other => panic!("{other:?}"),
        }
    }

    fn many(n: u8) -> Outcome {
        Outcome::Addresses { ips: (0..n).map(|i| IpAddr::from([192, 0, 2, i])).collect(), ttl: 42 }
    }

    #[test]
    fn addresses_echo_the_question_with_the_ttl() {
        let question = ask(&query_bytes("Svc.Test", RecordType::A, None));
        assert_eq!((question.name(), question.family()), ("Svc.Test.".to_string(), Some(Family::V4)));
        let mut outcome = many(2);
        if let Outcome::Addresses { ips, .. } = &mut outcome {
            ips.push("2001:db8::1".parse().unwrap()); // another family: left out
        }
        let bytes = encode(&reply(&question, &outcome), question.udp_limit()).unwrap();
        let message = answer(&bytes);
        assert_eq!(message.id(), 0x1234);
        assert_eq!(message.message_type(), MessageType::Response);
        assert_eq!(message.response_code(), ResponseCode::NoError);
        assert!(message.recursion_desired() && message.recursion_available() && !message.truncated());
        assert_eq!(message.queries(), std::slice::from_ref(&question.query));
        let answers: Vec<(String, u32, RData)> =
            message.answers().iter().map(|r| (r.name().to_ascii(), r.ttl(), r.data().clone())).collect();
        assert_eq!(
            answers,
            [
                ("Svc.Test.".into(), 42, RData::A(A::new(192, 0, 2, 0))),
                ("Svc.Test.".into(), 42, RData::A(A::new(192, 0, 2, 1)))
            ]
        );
        assert!(message.extensions().is_none(), "no OPT without one in the query");
    }

    #[test]
    fn negative_and_failed_lookups_carry_their_rcode() {
        let question = ask(&query_bytes("nx.test", RecordType::AAAA, Some(4096)));
        assert_eq!(question.family(), Some(Family::V6));
        for (outcome, code) in [
            (Outcome::NxDomain, ResponseCode::NXDomain),
            (Outcome::NoData, ResponseCode::NoError),
            (Outcome::ServFail, ResponseCode::ServFail),
        ] {
            let message = answer(&encode(&reply(&question, &outcome), TCP_LIMIT).unwrap());
            assert_eq!((message.response_code(), message.answers().len()), (code, 0), "{outcome:?}");
            let edns = message.extensions().as_ref().expect("OPT echoed");
            assert_eq!(edns.max_payload(), wire::EDNS_PAYLOAD);
        }
    }

    #[test]
    fn a_udp_reply_over_its_limit_is_truncated() {
        // 40 A records: 12 + 13 + 40 × 16 = 665 bytes, over 512.
        let question = ask(&query_bytes("big.test", RecordType::A, None));
        assert_eq!(question.udp_limit(), UDP_LIMIT);
        let full = reply(&question, &many(40));
        let bytes = encode(&full, question.udp_limit()).unwrap();
        assert!(bytes.len() <= UDP_LIMIT, "{}", bytes.len());
        let cut = answer(&bytes);
        assert!(cut.truncated(), "TC set");
        assert_eq!((cut.id(), cut.answers().len()), (0x1234, 0));
        assert_eq!(cut.queries(), std::slice::from_ref(&question.query), "the question stays");
        let whole = answer(&encode(&full, TCP_LIMIT).unwrap());
        assert!(!whole.truncated());
        assert_eq!(whole.answers().len(), 40, "over TCP it fits");
        // With EDNS the client takes more (up to our own 1232 bytes).
        let question = ask(&query_bytes("big.test", RecordType::A, Some(4096)));
        assert_eq!(question.udp_limit(), usize::from(wire::EDNS_PAYLOAD));
        let fits = answer(&encode(&reply(&question, &many(40)), question.udp_limit()).unwrap());
        assert_eq!((fits.truncated(), fits.answers().len()), (false, 40));
        let over = answer(&encode(&reply(&question, &many(80)), question.udp_limit()).unwrap());
        assert_eq!((over.truncated(), over.answers().len()), (true, 0), "80 × 16 bytes > 1232");
        let small = ask(&query_bytes("big.test", RecordType::A, Some(100)));
        assert_eq!(small.udp_limit(), UDP_LIMIT, "never below 512");
    }

    #[test]
    fn odd_queries_get_error_replies_or_none() {
        let question = ask(&query_bytes("svc.test", RecordType::HTTPS, None));
        assert_eq!(question.family(), None, "answered NODATA by the caller");
        assert!(matches!(read_query(&[0; 11]), Read::Ignore), "shorter than a header");
        let mut response = query_bytes("svc.test", RecordType::A, None);
        response[2] |= 0x80;
        assert!(matches!(read_query(&response), Read::Ignore), "a response");
        let mut garbage = query_bytes("svc.test", RecordType::A, None);
        garbage.truncate(HEADER_LEN + 3);
        let code = |result: Read| match result {
            Read::Refuse(reply) => (reply.id(), reply.response_code()),
            other => panic!("{other:?}"),
        };
        assert_eq!(code(read_query(&garbage)), (0x1234, ResponseCode::FormErr));
        let mut two = Message::from_vec(&query_bytes("svc.test", RecordType::A, None)).unwrap();
        two.add_query(Query::query(wire::parse_name("b.test").unwrap(), RecordType::A));
        assert_eq!(code(read_query(&two.to_vec().unwrap())), (0x1234, ResponseCode::FormErr));
        let mut update = Message::from_vec(&query_bytes("svc.test", RecordType::A, None)).unwrap();
        update.set_op_code(OpCode::Update);
        assert_eq!(code(read_query(&update.to_vec().unwrap())), (0x1234, ResponseCode::NotImp));
        let mut chaos = Message::from_vec(&query_bytes("version.bind", RecordType::TXT, None)).unwrap();
        let mut query = chaos.take_queries().remove(0);
        query.set_query_class(DNSClass::CH);
        chaos.add_query(query);
        assert_eq!(code(read_query(&chaos.to_vec().unwrap())), (0x1234, ResponseCode::NotImp));
    }

    proptest::proptest! {
        /// Any bytes: a question, an error reply or nothing, never a panic; every reply encodes.
        #[test]
        fn any_datagram_is_read_without_panic(
            bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300),
        ) {
            match read_query(&bytes) {
                Read::Ask(question) => {
                    let reply = reply(&question, &many(3));
                    proptest::prop_assert!(encode(&reply, question.udp_limit()).is_some());
                }
                Read::Refuse(reply) => proptest::prop_assert!(encode(&reply, UDP_LIMIT).is_some()),
                Read::Ignore => {}
            }
        }
    }
}
