//! The per-network resolver against a hostile or broken DNS server, an on-path spoofer, a host
//! app that declines to resolve, and network changes mid-lookup. Every server runs on loopback
//! (the test responder, or a few lines of UDP/TCP here for replies it cannot craft).

#[path = "common/dns_responder.rs"]
mod dns_responder;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use dns_responder::{Mode, Responder, Zone};
use hickory_proto::op::{Message, MessageType, Query};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};
use netswitch::dns::cache::{Cached, Key, MAX_ADDRESSES};
use netswitch::dns::host::{HostAnswer, HostDns, HostFuture};
use netswitch::dns::wire::{build_query, parse_name, read_answer, AnswerError};
use netswitch::dns::{DnsError, DnsSettings, Family, Resolve, ResolverChoice, Resolvers};
use netswitch::network::state::NetworkState;
use netswitch::network::{InterfaceSnapshot, NetworkInterface, NetworkType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, UdpSocket};
use tokio::time::Instant;

const NAME: &str = "svc.example.test";

fn localhost() -> IpAddr {
    "127.0.0.1".parse().unwrap()
}

fn soon(seconds: u64) -> Instant {
    Instant::now() + Duration::from_secs(seconds)
}

fn ips(list: &[&str]) -> Vec<IpAddr> {
    list.iter().map(|s| s.parse().unwrap()).collect()
}

/// "sim-wifi" (index 2) with address `address` and `servers`; no binder is used here, so the
/// routing table takes the queries to loopback.
fn wifi(address: &str, servers: &[SocketAddr]) -> NetworkInterface {
    let mut interface =
        NetworkInterface::new("sim-wifi", 2, NetworkType::Wifi).with_address(address.parse().unwrap(), 8);
    interface.dns_servers = servers.to_vec();
    interface
}

fn resolvers_with(change: impl FnOnce(&mut DnsSettings)) -> Resolvers {
    let mut settings = DnsSettings::default();
    change(&mut settings);
    Resolvers::new(settings)
}

fn route(resolvers: &Resolvers, interface: &NetworkInterface) -> Arc<dyn Resolve> {
    resolvers.for_route(Some(interface), false, None)
}

async fn v4(resolver: &Arc<dyn Resolve>, name: &str) -> Result<Vec<IpAddr>, DnsError> {
    resolver.lookup(name, &[Family::V4], soon(5)).all().await.map(|a| a.addresses)
}

/// Makes `interfaces` the network state and tells `resolvers`, as the manager does.
fn push(state: &NetworkState, resolvers: &Resolvers, interfaces: Vec<NetworkInterface>) {
    let default = interfaces.first().map(|i| i.index);
    let change = state.update(InterfaceSnapshot::new(interfaces, default).unwrap());
    resolvers.on_update(&state.snapshot(), &change);
}

/// Waits (at most 5 s) until `done` holds.
async fn until(mut done: impl FnMut() -> bool) {
    let give_up = Instant::now() + Duration::from_secs(5);
    while !done() && Instant::now() < give_up {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(done(), "did not happen within 5 s");
}

// ---- Spoofing and unrelated records ----------------------------------------------------------

/// A reply to `query` asking `question`, with id `id`, answering `answers`.
fn reply(id: u16, question: Query, answers: Vec<Record>) -> Vec<u8> {
    let mut message = Message::new();
    message.set_id(id).set_message_type(MessageType::Response).set_recursion_available(true);
    message.add_query(question);
    message.add_answers(answers);
    message.to_vec().unwrap()
}

fn a(owner: &Name, ip: [u8; 4]) -> Record {
    Record::from_rdata(owner.clone(), 300, RData::A(A::new(ip[0], ip[1], ip[2], ip[3])))
}

/// Before the real answer, the client gets: the right answer from another port of the server's
/// address, a reply with another id, replies to another name and another type, and a reply of
/// class CHAOS; the real answer carries unrelated records. Only the real address is used, and
/// nothing of the unrelated name is cached. Each query has its own id and source port.
#[tokio::test]
async fn spoofed_and_unrelated_replies_are_ignored() {
    let server = UdpSocket::bind((localhost(), 0)).await.unwrap();
    let spoofer = UdpSocket::bind((localhost(), 0)).await.unwrap();
    let address = server.local_addr().unwrap();
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = seen.clone();
    tokio::spawn(async move {
        let mut buffer = vec![0u8; 2048];
        while let Ok((length, from)) = server.recv_from(&mut buffer).await {
            let Ok(query) = Message::from_vec(&buffer[..length]) else { continue };
            log.lock().unwrap().push((query.id(), from.port()));
            let (id, question) = (query.id(), query.queries()[0].clone());
            let owner = question.name().clone();
            let evil = Name::from_ascii("evil.example.test.").unwrap();
            let other_name = Query::query(evil.clone(), RecordType::A);
            let other_type = Query::query(owner.clone(), RecordType::AAAA);
            let mut chaos = question.clone();
            chaos.set_query_class(DNSClass::CH);
            let spoofs = [
                reply(id ^ 0x5a5a, question.clone(), vec![a(&owner, [6, 6, 6, 2])]),
                reply(id, other_name, vec![a(&evil, [6, 6, 6, 3])]),
                reply(id, other_type, vec![a(&owner, [6, 6, 6, 4])]),
                reply(id, chaos, vec![a(&owner, [6, 6, 6, 5])]),
            ];
            let _ = spoofer.send_to(&reply(id, question.clone(), vec![a(&owner, [6, 6, 6, 1])]), from).await;
            for spoof in spoofs {
                let _ = server.send_to(&spoof, from).await;
            }
            let real = vec![a(&owner, [192, 0, 2, 1]), a(&evil, [6, 6, 6, 6])];
            let _ = server.send_to(&reply(id, question, real), from).await;
        }
    });
    let resolvers = Resolvers::default();
    let interface = wifi("127.0.0.2", &[address]);
    let resolver = route(&resolvers, &interface);
    assert_eq!(v4(&resolver, NAME).await.unwrap(), ips(&["192.0.2.1"]));
    let cache = resolvers.cache().unwrap();
    let evil = Key::new(Some(interface.id()), "evil.example.test", Family::V4);
    assert!(cache.get(&evil, Instant::now()).is_none(), "an unrelated record was cached");
    for i in 0..4 {
        assert_eq!(v4(&resolver, &format!("n{i}.{NAME}")).await.unwrap(), ips(&["192.0.2.1"]));
    }
    let seen = seen.lock().unwrap().clone();
    let distinct = |values: Vec<u16>| values.into_iter().collect::<std::collections::HashSet<_>>().len();
    assert_eq!(seen.len(), 5);
    assert!(distinct(seen.iter().map(|s| s.0).collect()) > 1, "the same id every time: {seen:?}");
    assert!(distinct(seen.iter().map(|s| s.1).collect()) > 1, "the same port every time: {seen:?}");
}

/// Question and records of another class than IN are no answer to an IN question.
#[test]
fn a_reply_of_another_class_is_not_an_answer() {
    let name = parse_name(NAME).unwrap();
    let (id, query) = build_query(&name, Family::V4).unwrap();
    let question = Message::from_vec(&query).unwrap().queries()[0].clone();
    let mut chaos = question.clone();
    chaos.set_query_class(DNSClass::CH);
    let answer = read_answer(&reply(id, chaos, vec![a(&name, [6, 6, 6, 5])]), id, &name, Family::V4);
    assert!(matches!(answer, Err(AnswerError::NotOurs(_))), "{answer:?}");
    let mut record = a(&name, [6, 6, 6, 7]);
    record.set_dns_class(DNSClass::CH);
    let answer = read_answer(&reply(id, question, vec![record]), id, &name, Family::V4);
    assert!(!matches!(answer, Ok(netswitch::dns::wire::Outcome::Addresses { .. })), "{answer:?}");
}

// ---- Broken servers --------------------------------------------------------------------------

/// UDP always says "truncated"; over TCP the server sends a length and then nothing. The lookup
/// fails by the query timeout (each server attempt), not the lookup's much later deadline.
#[tokio::test]
async fn a_tcp_server_that_stalls_after_the_length_fails_by_the_query_timeout() {
    let udp = UdpSocket::bind((localhost(), 0)).await.unwrap();
    let address = udp.local_addr().unwrap();
    let tcp = TcpListener::bind(address).await.unwrap();
    tokio::spawn(async move {
        let mut buffer = vec![0u8; 2048];
        while let Ok((length, from)) = udp.recv_from(&mut buffer).await {
            let Ok(query) = Message::from_vec(&buffer[..length]) else { continue };
            let mut truncated =
                Message::from_vec(&reply(query.id(), query.queries()[0].clone(), vec![])).unwrap();
            truncated.set_truncated(true);
            let _ = udp.send_to(&truncated.to_vec().unwrap(), from).await;
        }
    });
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((mut stream, _)) = tcp.accept().await {
            let mut query = [0u8; 512];
            let _ = stream.read(&mut query).await;
            let _ = stream.write_all(&[0x01, 0x00, 0x12]).await; // 256 bytes announced, 1 sent
            held.push(stream);
        }
    });
    let resolvers = resolvers_with(|s| {
        s.query_timeout = Duration::from_millis(300);
        s.rounds = 2;
    });
    let resolver = route(&resolvers, &wifi("127.0.0.2", &[address]));
    let started = Instant::now();
    let error = resolver.lookup(NAME, &[Family::V4], soon(20)).all().await.unwrap_err();
    println!("stalled TCP: {error} after {:?}", started.elapsed());
    assert!(matches!(error, DnsError::TimedOut { .. }), "{error}");
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
}

/// A 64 KiB answer over TCP (about 4000 A records) is read whole and given to the dial, but the
/// cache keeps only the first [`MAX_ADDRESSES`]: 1024 such entries would be about 70 MB.
#[tokio::test]
async fn a_huge_answer_is_not_kept_whole_in_the_cache() {
    let server = Responder::start(localhost(), Zone::new(NAME, &["192.0.2.1"], &[])).await.unwrap();
    server.set(|z| z.mode = Mode::Huge);
    let resolvers = Resolvers::default();
    let interface = wifi("127.0.0.2", &[server.address()]);
    let found = v4(&route(&resolvers, &interface), NAME).await.unwrap();
    assert!(found.len() > 3000, "{} addresses", found.len());
    let key = Key::new(Some(interface.id()), NAME, Family::V4);
    let Some((Cached::Addresses(kept), _)) = resolvers.cache().unwrap().get(&key, Instant::now()) else {
        panic!("not cached")
    };
    assert_eq!(kept, found[..MAX_ADDRESSES]);
    let again = v4(&route(&resolvers, &interface), NAME).await.unwrap();
    assert_eq!(again, kept, "the next dial gets the first ones from the cache");
}

/// UDP sockets of this network namespace connected to `server` (from `/proc/net/udp`).
fn sockets_to(server: SocketAddr) -> usize {
    let table = std::fs::read_to_string("/proc/net/udp").unwrap();
    let remote = format!("0100007F:{:04X}", server.port());
    table.lines().filter(|line| line.split_whitespace().nth(2) == Some(remote.as_str())).count()
}

/// A server that never answers: every query socket closes when its lookup times out, and when
/// a lookup still waiting is dropped (a dial that won on another network).
#[tokio::test]
async fn query_sockets_close_when_lookups_time_out_or_are_dropped() {
    let server = Responder::start(localhost(), Zone::new(NAME, &["192.0.2.1"], &[])).await.unwrap();
    server.set(|z| z.mode = Mode::Silent);
    let resolvers = Resolvers::default();
    let resolver = route(&resolvers, &wifi("127.0.0.2", &[server.address()]));
    let both = [Family::V6, Family::V4];
    let until_soon = Instant::now() + Duration::from_millis(300);
    let spawn = |name: String, deadline: Instant| {
        let lookup = resolver.lookup(&name, &both, deadline);
        tokio::spawn(lookup.all())
    };
    let timing_out: Vec<_> = (0..10).map(|i| spawn(format!("t{i}.{NAME}"), until_soon)).collect();
    for lookup in timing_out {
        let result = lookup.await.unwrap();
        assert!(matches!(result, Err(DnsError::TimedOut { .. })), "{result:?}");
    }
    assert_eq!(server.seen().len(), 20);
    assert_eq!(sockets_to(server.address()), 0, "sockets left after the lookups timed out");
    let waiting: Vec<_> = (0..10).map(|i| spawn(format!("d{i}.{NAME}"), soon(20))).collect();
    until(|| server.seen().len() == 40).await;
    assert_eq!(sockets_to(server.address()), 20, "one socket per family and lookup");
    for lookup in waiting {
        lookup.abort();
        assert!(lookup.await.unwrap_err().is_cancelled());
    }
    assert_eq!(sockets_to(server.address()), 0, "sockets left after the lookups were dropped");
}

// ---- The host app's resolver -----------------------------------------------------------------

/// A host that leaves every name to netswitch.
struct Declining;

impl HostDns for Declining {
    fn resolve(&self, _: &str, _: &NetworkInterface, _: Family) -> HostFuture {
        Box::pin(async { Ok(HostAnswer::ResolveYourself) })
    }
}

/// The host's resolver and the interface's own share the interface's bound on queries in flight:
/// the host's question must give its slot back before the fallback asks the interface's servers,
/// or a full bound (here 1) waits for itself until the deadline.
#[tokio::test]
async fn a_host_that_leaves_resolution_to_netswitch_does_not_starve_the_fallback() {
    let server = Responder::start(localhost(), Zone::new(NAME, &["192.0.2.1"], &[])).await.unwrap();
    let resolvers = resolvers_with(|s| {
        s.resolver = ResolverChoice::Host;
        s.max_concurrent = 1;
    })
    .with_host(Arc::new(Declining));
    let resolver = route(&resolvers, &wifi("127.0.0.2", &[server.address()]));
    let answer = resolver.lookup(NAME, &[Family::V4], soon(2)).all().await;
    assert_eq!(answer.map(|a| a.addresses).map_err(|e| e.to_string()), Ok(ips(&["192.0.2.1"])));
}

// ---- Network changes -------------------------------------------------------------------------

/// A lookup is in flight when the interface gets other DNS servers (another Wi-Fi network): its
/// late answer, from the old network's server, must not land in the cache the flush just emptied.
#[tokio::test]
async fn an_answer_that_arrives_after_the_servers_changed_is_not_cached() {
    let old = Responder::start(localhost(), Zone::new(NAME, &["192.0.2.1"], &[])).await.unwrap();
    let new = Responder::start(localhost(), Zone::new(NAME, &["192.0.2.2"], &[])).await.unwrap();
    old.set(|z| z.hold_a = true);
    let resolvers = Arc::new(Resolvers::default());
    let before = route(&resolvers, &wifi("127.0.0.2", &[old.address()]));
    let late = tokio::spawn(async move { v4(&before, NAME).await });
    until(|| old.seen().len() == 1).await;
    let after = route(&resolvers, &wifi("127.0.0.2", &[new.address()]));
    old.set(|z| z.hold_a = false);
    assert_eq!(late.await.unwrap().unwrap(), ips(&["192.0.2.1"]), "the old lookup gets its answer");
    assert_eq!(v4(&after, NAME).await.unwrap(), ips(&["192.0.2.2"]), "the new network's answer");
    assert_eq!(new.seen().len(), 1);
}

/// Same interface, same DNS server address (192.168.1.1 is everyone's router), but the interface
/// lost its address and got another: another network. Its answers are asked again.
#[tokio::test]
async fn a_new_address_with_the_same_servers_flushes_the_interface_cache() {
    let server = Responder::start(localhost(), Zone::new(NAME, &["192.0.2.1"], &[])).await.unwrap();
    let resolvers = Resolvers::default();
    let state = NetworkState::default();
    let home = wifi("127.0.0.2", &[server.address()]);
    push(&state, &resolvers, vec![home.clone()]);
    v4(&route(&resolvers, &home), NAME).await.unwrap();
    v4(&route(&resolvers, &home), NAME).await.unwrap();
    assert_eq!(server.seen().len(), 1, "cached on the same network");
    let cafe = wifi("127.0.0.4", &[server.address()]);
    push(&state, &resolvers, vec![cafe.clone()]);
    v4(&route(&resolvers, &cafe), NAME).await.unwrap();
    assert_eq!(server.seen().len(), 2, "another network: asked again");
    // A dial that still holds the old snapshot's interface does not flush again and again.
    let mut roamed = cafe.clone();
    roamed.addresses.push(netswitch::network::InterfaceAddress::new("127.0.0.5".parse().unwrap(), 8));
    push(&state, &resolvers, vec![roamed.clone()]);
    v4(&route(&resolvers, &roamed), NAME).await.unwrap();
    assert_eq!(server.seen().len(), 2, "an address added (IPv6 privacy address): nothing flushed");
}

/// Behind a captive portal (not validated) the network's DNS answers the portal's address for
/// every name. Once the user logged in and the network is validated, those answers go.
#[tokio::test]
async fn answers_learnt_behind_a_captive_portal_go_when_the_network_is_validated() {
    let server = Responder::start(localhost(), Zone::new(NAME, &["10.0.0.1"], &[])).await.unwrap();
    let resolvers = Resolvers::default();
    let state = NetworkState::default();
    let mut portal = wifi("127.0.0.2", &[server.address()]);
    portal.validated = false;
    push(&state, &resolvers, vec![portal.clone()]);
    assert_eq!(v4(&route(&resolvers, &portal), NAME).await.unwrap(), ips(&["10.0.0.1"]));
    server.set(|z| z.a = vec!["192.0.2.1".parse().unwrap()]);
    let validated = wifi("127.0.0.2", &[server.address()]);
    push(&state, &resolvers, vec![validated.clone()]);
    assert_eq!(v4(&route(&resolvers, &validated), NAME).await.unwrap(), ips(&["192.0.2.1"]));
}
