//! A tiny DNS server for tests, on an address the test chooses (127.0.0.1, or a namespace's
//! address): UDP and TCP on the same port, one name answered with configurable A/AAAA records,
//! every other name NXDOMAIN. It counts queries and records who sent them, and can misbehave:
//! stay silent, answer garbage, truncate, answer 64 KiB, hold A answers until released.
//! Built with hickory-proto, like the client (no hand-written parser). Include it with
//! `#[path = "common/dns_responder.rs"] mod dns_responder;`.

#![allow(dead_code)]

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};

use hickory_proto::op::{Message, MessageType, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, SOA};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// How the responder behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Answers correctly.
    Answer,
    /// Reads queries and never answers.
    Silent,
    /// Answers with the query's id followed by bytes that are no DNS message.
    Garbage,
    /// Over UDP: an empty answer with TC set; over TCP: the real answer.
    TruncateUdp,
    /// Over UDP: TC set; over TCP: an answer of close to 64 KiB (about 4000 A records).
    Huge,
    /// SERVFAIL for everything.
    ServFail,
}

/// What the responder answers; change it at any time with [`Responder::set`].
#[derive(Debug, Clone)]
pub struct Zone {
    /// The one name that exists (lower case, no final dot).
    pub name: String,
    /// Its A records.
    pub a: Vec<Ipv4Addr>,
    /// Its AAAA records.
    pub aaaa: Vec<Ipv6Addr>,
    /// TTL of every record (and of the SOA for negative answers).
    pub ttl: u32,
    /// Behaviour.
    pub mode: Mode,
    /// While true, A questions get no answer until it turns false (then they are answered).
    pub hold_a: bool,
}

impl Zone {
    /// `name` with these addresses, TTL 300, answering normally.
    pub fn new(name: &str, a: &[&str], aaaa: &[&str]) -> Zone {
        Zone {
            name: name.to_ascii_lowercase(),
            a: a.iter().map(|s| s.parse().expect("test IPv4 address")).collect(),
            aaaa: aaaa.iter().map(|s| s.parse().expect("test IPv6 address")).collect(),
            ttl: 300,
            mode: Mode::Answer,
            hold_a: false,
        }
    }
}

/// One query as seen by the responder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    /// "udp" or "tcp".
    pub transport: &'static str,
    /// Who sent it.
    pub from: SocketAddr,
    /// Question type (A, AAAA…).
    pub record_type: RecordType,
    /// Question name, lower case without the final dot.
    pub name: String,
}

#[derive(Debug, Default)]
struct Log {
    seen: Vec<Seen>,
}

/// A running responder; dropping it stops it.
#[derive(Debug)]
pub struct Responder {
    address: SocketAddr,
    zone: watch::Sender<Zone>,
    log: Arc<Mutex<Log>>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Responder {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl Responder {
    /// Starts on `ip` (UDP and TCP, same free port).
    pub async fn start(ip: IpAddr, zone: Zone) -> std::io::Result<Responder> {
        let (udp, tcp) = bind_pair(ip).await?;
        Responder::serve(udp, tcp, zone)
    }

    /// Starts on exactly `address` (UDP and TCP), e.g. port 53 inside a network namespace.
    pub async fn start_on(address: SocketAddr, zone: Zone) -> std::io::Result<Responder> {
        let udp = UdpSocket::bind(address).await?;
        let tcp = TcpListener::bind(address).await?;
        Responder::serve(udp, tcp, zone)
    }

    fn serve(udp: UdpSocket, tcp: TcpListener, zone: Zone) -> std::io::Result<Responder> {
        let address = udp.local_addr()?;
        let (zone_tx, zone_rx) = watch::channel(zone);
        let log = Arc::new(Mutex::new(Log::default()));
        let udp = Arc::new(udp);
        let udp_task = tokio::spawn(serve_udp(udp, zone_rx.clone(), log.clone()));
        let tcp_task = tokio::spawn(serve_tcp(tcp, zone_rx, log.clone()));
        Ok(Responder { address, zone: zone_tx, log, tasks: vec![udp_task, tcp_task] })
    }

    /// Where it listens (UDP and TCP).
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Changes what it answers from now on (held A questions see the change).
    pub fn set(&self, change: impl FnOnce(&mut Zone)) {
        self.zone.send_modify(change);
    }

    /// Every query so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.log.lock().unwrap_or_else(PoisonError::into_inner).seen.clone()
    }

    /// Number of queries so far of `record_type` over `transport` ("udp"/"tcp"/"" for both).
    pub fn count(&self, transport: &str, record_type: RecordType) -> usize {
        self.seen()
            .iter()
            .filter(|s| s.record_type == record_type && (transport.is_empty() || s.transport == transport))
            .count()
    }
}

async fn bind_pair(ip: IpAddr) -> std::io::Result<(UdpSocket, TcpListener)> {
    let mut last = None;
    for _ in 0..16 {
        let udp = UdpSocket::bind(SocketAddr::new(ip, 0)).await?;
        match TcpListener::bind(udp.local_addr()?).await {
            Ok(tcp) => return Ok((udp, tcp)),
            Err(error) => last = Some(error),
        }
    }
    Err(last.unwrap_or_else(|| std::io::Error::other("no free port")))
}

fn record(log: &Mutex<Log>, transport: &'static str, from: SocketAddr, query: &Message) {
    if let Some(q) = query.queries().first() {
        let name = q.name().to_ascii().trim_end_matches('.').to_ascii_lowercase();
        let seen = Seen { transport, from, record_type: q.query_type(), name };
        log.lock().unwrap_or_else(PoisonError::into_inner).seen.push(seen);
    }
}

/// Waits while A answers are held; returns the zone to answer with.
async fn zone_for(zone: &mut watch::Receiver<Zone>, query: &Message) -> Zone {
    let is_a = query.queries().first().is_some_and(|q| q.query_type() == RecordType::A);
    if is_a {
        let _ = zone.wait_for(|z| !z.hold_a).await;
    }
    zone.borrow().clone()
}

async fn serve_udp(socket: Arc<UdpSocket>, zone: watch::Receiver<Zone>, log: Arc<Mutex<Log>>) {
    let mut buffer = vec![0u8; 65535];
    loop {
        let Ok((length, from)) = socket.recv_from(&mut buffer).await else { return };
        let Ok(query) = Message::from_vec(&buffer[..length]) else { continue };
        record(&log, "udp", from, &query);
        let (socket, mut zone, bytes) = (socket.clone(), zone.clone(), buffer[..length].to_vec());
        tokio::spawn(async move {
            let z = zone_for(&mut zone, &query).await;
            if let Some(answer) = answer(&z, &query, &bytes, false) {
                let _ = socket.send_to(&answer, from).await;
            }
        });
    }
}

async fn serve_tcp(listener: TcpListener, zone: watch::Receiver<Zone>, log: Arc<Mutex<Log>>) {
    loop {
        let Ok((stream, from)) = listener.accept().await else { return };
        tokio::spawn(serve_tcp_client(stream, from, zone.clone(), log.clone()));
    }
}

async fn serve_tcp_client(
    mut stream: TcpStream,
    from: SocketAddr,
    mut zone: watch::Receiver<Zone>,
    log: Arc<Mutex<Log>>,
) {
    loop {
        let Ok(length) = stream.read_u16().await else { return };
        let mut bytes = vec![0u8; usize::from(length)];
        if stream.read_exact(&mut bytes).await.is_err() {
            return;
        }
        let Ok(query) = Message::from_vec(&bytes) else { return };
        record(&log, "tcp", from, &query);
        let z = zone_for(&mut zone, &query).await;
        let Some(answer) = answer(&z, &query, &bytes, true) else { continue };
        let Ok(length) = u16::try_from(answer.len()) else { return };
        let mut framed = length.to_be_bytes().to_vec();
        framed.extend_from_slice(&answer);
        if stream.write_all(&framed).await.is_err() {
            return;
        }
    }
}

/// The bytes to send back for `query` (None = stay silent).
fn answer(zone: &Zone, query: &Message, raw: &[u8], over_tcp: bool) -> Option<Vec<u8>> {
    let question = query.queries().first()?.clone();
    let mut reply = Message::new();
    reply
        .set_id(query.id())
        .set_message_type(MessageType::Response)
        .set_op_code(query.op_code())
        .set_recursion_desired(query.recursion_desired())
        .set_recursion_available(true)
        .add_query(question.clone());
    let asked = question.name().to_ascii().trim_end_matches('.').to_ascii_lowercase();
    match zone.mode {
        Mode::Silent => return None,
        Mode::Garbage => {
            let mut junk = raw.get(..2)?.to_vec();
            junk.extend_from_slice(b"\x81\x80\xff\xff this is not a DNS message");
            return Some(junk);
        }
        Mode::ServFail => {
            reply.set_response_code(ResponseCode::ServFail);
            return reply.to_vec().ok();
        }
        Mode::TruncateUdp | Mode::Huge if !over_tcp => {
            reply.set_truncated(true);
            return reply.to_vec().ok();
        }
        _ => {}
    }
    let owner = question.name().clone();
    if asked != zone.name {
        reply.set_response_code(ResponseCode::NXDomain);
        reply.add_name_server(soa(zone.ttl));
        return reply.to_vec().ok();
    }
    let mut records: Vec<Record> = match question.query_type() {
        RecordType::A => {
            zone.a.iter().map(|ip| Record::from_rdata(owner.clone(), zone.ttl, RData::A(A(*ip)))).collect()
        }
        RecordType::AAAA => zone
            .aaaa
            .iter()
            .map(|ip| Record::from_rdata(owner.clone(), zone.ttl, RData::AAAA(AAAA(*ip))))
            .collect(),
        _ => Vec::new(),
    };
    if zone.mode == Mode::Huge && question.query_type() == RecordType::A {
        // As many distinct A records as fit in one 64 KiB TCP message.
        records = (0..5000u32)
            .map(|i| {
                Record::from_rdata(owner.clone(), zone.ttl, RData::A(A(Ipv4Addr::from(0x0a00_0000 + i))))
            })
            .collect();
        loop {
            let mut huge = reply.clone();
            huge.add_answers(records.clone());
            match huge.to_vec() {
                // hickory's encoder drops what does not fit and sets TC: keep shrinking until it fits whole.
                Ok(bytes) if bytes.len() <= 65535 && bytes[2] & 0x02 == 0 => return Some(bytes),
                _ => {
                    let keep = records.len() * 95 / 100;
                    records.truncate(keep);
                }
            }
        }
    }
    if records.is_empty() {
        reply.add_name_server(soa(zone.ttl));
    }
    reply.add_answers(records);
    reply.to_vec().ok()
}

fn soa(ttl: u32) -> Record {
    let zone = Name::from_ascii("test.").unwrap_or_else(|_| Name::root());
    let data = SOA::new(zone.clone(), zone.clone(), 1, 3600, 600, 86400, ttl);
    Record::from_rdata(zone, ttl, RData::SOA(data))
}

/// How many queries the responder saw from each source IP.
pub fn by_source(seen: &[Seen]) -> HashMap<IpAddr, usize> {
    let mut counts = HashMap::new();
    for s in seen {
        *counts.entry(s.from.ip()).or_insert(0) += 1;
    }
    counts
}
