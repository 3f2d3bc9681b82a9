//! Name resolution over the network that carries the connection, on loopback: simulated
//! interfaces are loopback source addresses (the simulated binder binds them), each with its own
//! DNS server (the test responder on 127.0.0.1, a free port). Resolvers first (wire, transport,
//! cache, bounds, errors), then whole dials through the direct outbound and the SOCKS server.

#[path = "common/dns_responder.rs"]
mod dns_responder;

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dns_responder::{by_source, Mode, Responder, Zone};
use hickory_proto::rr::RecordType;
use netswitch::dial::direct::{DialSettings, DirectOutbound};
use netswitch::dial::{DialError, FailureKind};
use netswitch::dns::cache::TtlPolicy;
use netswitch::dns::host::{HostAnswer, HostDns, HostDnsError, HostFuture};
use netswitch::dns::{DnsError, DnsSettings, Family, Resolve, ResolverChoice, Resolvers, Source, Via};
use netswitch::network::state::NetworkState;
use netswitch::network::strategy::NetworkStrategy;
use netswitch::network::{InterfaceSnapshot, NetworkInterface, NetworkType};
use netswitch::platform::{BindError, SimulatedBinder, SocketBinder};
use netswitch::{Destination, Metadata, Outbound};
use socket2::{Socket, Type};
use tokio::net::TcpListener;
use tokio::time::Instant;

const NAME: &str = "svc.example.test";
const WAIT: Duration = Duration::from_secs(10);

fn localhost() -> IpAddr {
    "127.0.0.1".parse().unwrap()
}

fn zone() -> Zone {
    Zone::new(NAME, &["192.0.2.1"], &["2001:db8::1"])
}

fn ips(list: &[&str]) -> Vec<IpAddr> {
    list.iter().map(|s| s.parse().unwrap()).collect()
}

fn soon(seconds: u64) -> Instant {
    Instant::now() + Duration::from_secs(seconds)
}

/// "sim-wifi" leaves from 127.0.0.2 (index 2), "sim-cell" from 127.0.0.3 (index 3).
fn sim(name: &str, servers: &[&Responder]) -> NetworkInterface {
    let (index, source, kind) = match name {
        "sim-wifi" => (2, "127.0.0.2", NetworkType::Wifi),
        "sim-cell" => (3, "127.0.0.3", NetworkType::Cellular),
        other => panic!("no simulated interface {other}"),
    };
    let mut interface = NetworkInterface::new(name, index, kind).with_address(source.parse().unwrap(), 8);
    interface.dns_servers = servers.iter().map(|r| r.address()).collect();
    interface
}

fn source_of(name: &str) -> IpAddr {
    sim(name, &[]).addresses[0].ip
}

/// The simulated binder, recording every socket it prepares (its type and destination).
#[derive(Debug, Default)]
struct Recording {
    inner: SimulatedBinder,
    seen: Mutex<Vec<(Type, SocketAddr)>>,
}

impl Recording {
    fn seen(&self) -> Vec<(Type, SocketAddr)> {
        self.seen.lock().unwrap().clone()
    }
}

impl SocketBinder for Recording {
    fn protect(&self, socket: &Socket, i: &NetworkInterface, to: SocketAddr) -> Result<(), BindError> {
        self.seen.lock().unwrap().push((socket.r#type().unwrap(), to));
        self.inner.protect(socket, i, to)
    }

    fn bind_to_interface(
        &self,
        socket: &Socket,
        i: &NetworkInterface,
        to: SocketAddr,
    ) -> Result<(), BindError> {
        self.seen.lock().unwrap().push((socket.r#type().unwrap(), to));
        self.inner.bind_to_interface(socket, i, to)
    }

    fn networks_on_loopback(&self) -> bool {
        true
    }
}

fn settings() -> DnsSettings {
    DnsSettings::default()
}

/// The default settings with `change` applied.
fn dns_with(change: impl FnOnce(&mut DnsSettings)) -> DnsSettings {
    let mut settings = DnsSettings::default();
    change(&mut settings);
    settings
}

/// The resolver `resolvers` gives `interface` (not the default), with `binder`.
fn resolver(
    resolvers: &Resolvers,
    interface: &NetworkInterface,
    binder: &Arc<Recording>,
) -> Arc<dyn Resolve> {
    let binder: Arc<dyn SocketBinder> = binder.clone();
    resolvers.for_route(Some(interface), false, Some(&binder))
}

fn both() -> [Family; 2] {
    [Family::V6, Family::V4]
}

async fn lookup_all(
    resolver: &Arc<dyn Resolve>,
    name: &str,
    deadline: Instant,
) -> Result<Vec<IpAddr>, DnsError> {
    resolver.lookup(name, &both(), deadline).all().await.map(|answer| {
        let mut addresses = answer.addresses;
        addresses.sort();
        addresses
    })
}

#[tokio::test]
async fn a_and_aaaa_in_parallel_every_socket_bound_to_its_interface() {
    let server = Responder::start(localhost(), zone()).await.unwrap();
    let binder = Arc::new(Recording::default());
    let resolvers = Resolvers::new(settings());
    let wifi = resolver(&resolvers, &sim("sim-wifi", &[&server]), &binder);
    let answer = wifi.lookup(NAME, &both(), soon(5)).all().await.unwrap();
    assert_eq!(answer.addresses, ips(&["2001:db8::1", "192.0.2.1"]), "preferred family first");
    assert_eq!(server.count("udp", RecordType::A), 1);
    assert_eq!(server.count("udp", RecordType::AAAA), 1);
    assert_eq!(server.count("tcp", RecordType::A), 0);
    assert_eq!(by_source(&server.seen()).get(&source_of("sim-wifi")), Some(&2), "bound, not routed");
    let seen = binder.seen();
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert!(seen.iter().all(|(kind, to)| *kind == Type::DGRAM && *to == server.address()));
    for family_answer in &answer.answers {
        let expected = Via::Server { server: server.address(), interface: Some("sim-wifi".into()) };
        assert_eq!(family_answer.source, Some(Source::Resolver(expected)));
    }
}

#[tokio::test]
async fn each_interface_asks_its_own_servers_and_keeps_its_own_answers() {
    let wifi_dns = Responder::start(localhost(), Zone::new(NAME, &["192.0.2.1"], &[])).await.unwrap();
    let cell_dns = Responder::start(localhost(), Zone::new(NAME, &["198.51.100.7"], &[])).await.unwrap();
    let binder = Arc::new(Recording::default());
    let resolvers = Resolvers::new(settings());
    let wifi = resolver(&resolvers, &sim("sim-wifi", &[&wifi_dns]), &binder);
    let cell = resolver(&resolvers, &sim("sim-cell", &[&cell_dns]), &binder);
    assert_eq!(lookup_all(&wifi, NAME, soon(5)).await.unwrap(), ips(&["192.0.2.1"]));
    assert_eq!(
        lookup_all(&cell, NAME, soon(5)).await.unwrap(),
        ips(&["198.51.100.7"]),
        "cellular never uses Wi-Fi's answer, even from the shared cache"
    );
    assert!(by_source(&cell_dns.seen()).keys().all(|ip| *ip == source_of("sim-cell")));
    assert!(by_source(&wifi_dns.seen()).keys().all(|ip| *ip == source_of("sim-wifi")));
    assert_eq!((wifi_dns.seen().len(), cell_dns.seen().len()), (2, 2));
}

#[tokio::test]
async fn truncated_answers_are_asked_again_over_tcp_through_the_binder() {
    let server = Responder::start(localhost(), zone()).await.unwrap();
    server.set(|z| z.mode = Mode::TruncateUdp);
    let binder = Arc::new(Recording::default());
    let resolvers = Resolvers::new(settings());
    let wifi = resolver(&resolvers, &sim("sim-wifi", &[&server]), &binder);
    assert_eq!(lookup_all(&wifi, NAME, soon(5)).await.unwrap(), ips(&["192.0.2.1", "2001:db8::1"]));
    assert_eq!(server.count("udp", RecordType::A), 1);
    assert_eq!(server.count("tcp", RecordType::A), 1);
    assert_eq!(server.count("tcp", RecordType::AAAA), 1);
    let streams = binder.seen().iter().filter(|(kind, _)| *kind == Type::STREAM).count();
    assert_eq!(streams, 2, "both TCP sockets went through the binder");
    assert!(server.seen().iter().all(|s| s.from.ip() == source_of("sim-wifi")));
}

#[tokio::test]
async fn a_64_kib_answer_is_read_whole() {
    let server = Responder::start(localhost(), zone()).await.unwrap();
    server.set(|z| z.mode = Mode::Huge);
    let resolvers = Resolvers::new(settings());
    let wifi = resolver(&resolvers, &sim("sim-wifi", &[&server]), &Arc::default());
    let mut lookup = wifi.lookup(NAME, &[Family::V4], soon(5));
    let answer = lookup.next().await.unwrap();
    let addresses = answer.result.unwrap();
    assert!(addresses.len() > 3000, "{} addresses", addresses.len());
    println!("64 KiB answer over TCP: {} A records", addresses.len());
}

/// A network state holding `interfaces` (the first one the default), and the change the update
/// made, passed to `resolvers` as the manager does.
fn push(state: &NetworkState, resolvers: &Resolvers, interfaces: Vec<NetworkInterface>) {
    let default = interfaces.first().map(|i| i.index);
    let change = state.update(InterfaceSnapshot::new(interfaces, default).unwrap());
    resolvers.on_update(&state.snapshot(), &change);
}

#[tokio::test]
async fn the_cache_answers_until_the_ttl_runs_out_and_forgets_an_interface_that_went_away() {
    let server = Responder::start(localhost(), zone()).await.unwrap();
    server.set(|z| z.ttl = 1);
    let ttl = TtlPolicy {
        floor: Duration::ZERO,
        cap: Duration::from_secs(60),
        negative_cap: Duration::from_secs(5),
    };
    let resolvers = Resolvers::new(dns_with(|s| s.ttl = ttl));
    let wifi_interface = sim("sim-wifi", &[&server]);
    let wifi = resolver(&resolvers, &wifi_interface, &Arc::default());
    lookup_all(&wifi, NAME, soon(5)).await.unwrap();
    let answer = wifi.lookup(NAME, &both(), soon(5)).all().await.unwrap();
    assert_eq!(server.seen().len(), 2, "the second lookup sent nothing");
    assert!(answer.answers.iter().all(|a| matches!(a.source, Some(Source::Cache(_)))));
    tokio::time::sleep(Duration::from_millis(1100)).await;
    lookup_all(&wifi, NAME, soon(5)).await.unwrap();
    assert_eq!(server.seen().len(), 4, "TTL ran out: asked again");
    lookup_all(&wifi, NAME, soon(5)).await.unwrap();
    assert_eq!(server.seen().len(), 4, "cached again");

    // The interface goes away (and comes back): its answers are forgotten.
    let state = NetworkState::default();
    push(&state, &resolvers, vec![wifi_interface.clone(), sim("sim-cell", &[])]);
    push(&state, &resolvers, vec![sim("sim-cell", &[])]);
    push(&state, &resolvers, vec![wifi_interface.clone(), sim("sim-cell", &[])]);
    let wifi = resolver(&resolvers, &wifi_interface, &Arc::default());
    lookup_all(&wifi, NAME, soon(5)).await.unwrap();
    assert_eq!(server.seen().len(), 6, "the interface went away: asked again");
}

#[tokio::test]
async fn new_dns_servers_flush_the_interface_cache() {
    let first = Responder::start(localhost(), Zone::new(NAME, &["192.0.2.1"], &[])).await.unwrap();
    let second = Responder::start(localhost(), Zone::new(NAME, &["192.0.2.2"], &[])).await.unwrap();
    let resolvers = Resolvers::new(settings());
    let before = resolver(&resolvers, &sim("sim-wifi", &[&first]), &Arc::default());
    assert_eq!(lookup_all(&before, NAME, soon(5)).await.unwrap(), ips(&["192.0.2.1"]));
    // The host reports other servers for the same interface (another Wi-Fi network).
    let after = resolver(&resolvers, &sim("sim-wifi", &[&second]), &Arc::default());
    assert_eq!(lookup_all(&after, NAME, soon(5)).await.unwrap(), ips(&["192.0.2.2"]));
    assert_eq!(second.seen().len(), 2, "the new servers were asked, not the old answers reused");
}

#[tokio::test]
async fn a_silent_server_fails_by_the_deadline_naming_server_and_interface() {
    let server = Responder::start(localhost(), zone()).await.unwrap();
    server.set(|z| z.mode = Mode::Silent);
    let resolvers = Resolvers::new(settings());
    let wifi = resolver(&resolvers, &sim("sim-wifi", &[&server]), &Arc::default());
    let started = Instant::now();
    let error = lookup_all(&wifi, NAME, Instant::now() + Duration::from_millis(300)).await.unwrap_err();
    let message = error.to_string();
    println!("silent server: {message} (after {:?})", started.elapsed());
    assert!(matches!(error, DnsError::TimedOut { .. }), "{message}");
    assert!(message.contains(&format!("DNS {} on sim-wifi", server.address())), "{message}");
    // Generous bound: the deadline is 300 ms; the point is "not the 2 s query timeout × rounds".
    assert!(started.elapsed() < Duration::from_secs(3), "{:?}", started.elapsed());
}

#[tokio::test]
async fn the_next_server_answers_when_the_first_is_silent() {
    let silent = Responder::start(localhost(), zone()).await.unwrap();
    silent.set(|z| z.mode = Mode::Silent);
    let good = Responder::start(localhost(), zone()).await.unwrap();
    let resolvers = Resolvers::new(dns_with(|s| s.query_timeout = Duration::from_millis(200)));
    let wifi = resolver(&resolvers, &sim("sim-wifi", &[&silent, &good]), &Arc::default());
    let answer = wifi.lookup(NAME, &both(), soon(5)).all().await.unwrap();
    assert_eq!(answer.addresses.len(), 2);
    let via = Via::Server { server: good.address(), interface: Some("sim-wifi".into()) };
    assert!(answer.answers.iter().all(|a| a.source == Some(Source::Resolver(via.clone()))));
    assert_eq!(silent.seen().len(), 2);
}

#[tokio::test]
async fn a_closed_port_moves_to_the_next_server_at_once() {
    // Connected UDP: the ICMP port unreachable comes back as ECONNREFUSED, so the first server
    // does not eat the query timeout (here as long as the whole deadline: waiting would fail).
    let closed = std::net::UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let good = Responder::start(localhost(), zone()).await.unwrap();
    let resolvers = Resolvers::new(dns_with(|s| s.query_timeout = Duration::from_secs(20)));
    let mut interface = sim("sim-wifi", &[&good]);
    interface.dns_servers.insert(0, closed);
    let wifi = resolver(&resolvers, &interface, &Arc::default());
    assert_eq!(lookup_all(&wifi, NAME, soon(15)).await.unwrap().len(), 2);
    interface.dns_servers.truncate(1);
    let refused = Resolvers::new(dns_with(|s| s.query_timeout = Duration::from_secs(20)));
    let refused = resolver(&refused, &interface, &Arc::default());
    let error = lookup_all(&refused, NAME, soon(15)).await.unwrap_err();
    assert!(error.to_string().contains("refused"), "{error}");
}

#[tokio::test]
async fn garbage_and_servfail_are_clear_errors() {
    for (mode, expected) in [(Mode::Garbage, "bad answer"), (Mode::ServFail, "Server Failure")] {
        let server = Responder::start(localhost(), zone()).await.unwrap();
        server.set(|z| z.mode = mode);
        let resolvers = Resolvers::new(settings());
        let wifi = resolver(&resolvers, &sim("sim-wifi", &[&server]), &Arc::default());
        let error = lookup_all(&wifi, NAME, soon(5)).await.unwrap_err();
        println!("{mode:?}: {error}");
        assert!(error.to_string().contains(expected), "{mode:?}: {error}");
        assert!(error.to_string().contains("on sim-wifi"), "{error}");
    }
}

#[tokio::test]
async fn nxdomain_is_its_own_error_and_is_cached() {
    let server = Responder::start(localhost(), zone()).await.unwrap();
    let resolvers = Resolvers::new(settings());
    let wifi = resolver(&resolvers, &sim("sim-wifi", &[&server]), &Arc::default());
    let error = lookup_all(&wifi, "nope.example.test", soon(5)).await.unwrap_err();
    assert!(error.is_nxdomain(), "{error}");
    assert!(error.to_string().contains("NXDOMAIN"), "{error}");
    let again = lookup_all(&wifi, "nope.example.test", soon(5)).await.unwrap_err();
    assert!(again.is_nxdomain());
    assert_eq!(server.seen().len(), 2, "the negative answer was cached");
}

#[tokio::test]
async fn one_family_names_resolve_and_no_family_is_no_address() {
    let server = Responder::start(localhost(), Zone::new(NAME, &[], &["2001:db8::5"])).await.unwrap();
    let resolvers = Resolvers::new(dns_with(|s| s.cache_capacity = 0));
    let wifi = resolver(&resolvers, &sim("sim-wifi", &[&server]), &Arc::default());
    assert_eq!(lookup_all(&wifi, NAME, soon(5)).await.unwrap(), ips(&["2001:db8::5"]));
    server.set(|z| z.aaaa.clear());
    let error = lookup_all(&wifi, NAME, soon(5)).await.unwrap_err();
    assert!(matches!(error, DnsError::NoAddress { families: "IPv4 or IPv6", .. }), "{error}");
}

#[tokio::test]
async fn bad_names_fail_before_any_socket_exists() {
    let server = Responder::start(localhost(), zone()).await.unwrap();
    let binder = Arc::new(Recording::default());
    let resolvers = Resolvers::new(settings());
    let wifi = resolver(&resolvers, &sim("sim-wifi", &[&server]), &binder);
    let long = format!("{}.test", vec!["a".repeat(60); 5].join("."));
    assert!(long.len() > 253);
    for name in ["a..invalid", "", ".", &long, &"b".repeat(64), "bücher.example", "a b.test"] {
        let error = lookup_all(&wifi, name, soon(5)).await.unwrap_err();
        assert!(matches!(error, DnsError::InvalidName { .. }), "{name:?}: {error}");
    }
    assert!(binder.seen().is_empty(), "no socket was prepared");
    assert!(server.seen().is_empty(), "nothing was sent");
}

#[tokio::test]
async fn aaaa_is_delivered_while_a_is_still_pending() {
    let server = Responder::start(localhost(), zone()).await.unwrap();
    server.set(|z| z.hold_a = true);
    let resolvers = Resolvers::new(settings());
    let wifi = resolver(&resolvers, &sim("sim-wifi", &[&server]), &Arc::default());
    let mut lookup = wifi.lookup(NAME, &both(), soon(10));
    let first = lookup.next().await.unwrap();
    assert_eq!(first.family, Family::V6);
    assert_eq!(first.result.unwrap(), ips(&["2001:db8::1"]));
    server.set(|z| z.hold_a = false);
    let second = lookup.next().await.unwrap();
    assert_eq!(second.family, Family::V4);
    assert_eq!(second.result.unwrap(), ips(&["192.0.2.1"]));
    assert!(lookup.next().await.is_none());
}

#[tokio::test]
async fn a_bind_failure_sends_nothing_and_names_the_interface() {
    let server = Responder::start(localhost(), zone()).await.unwrap();
    let binder = Arc::new(Recording::default());
    let interface = sim("sim-wifi", &[&server]);
    binder.inner.set_failing(interface.index, true);
    let resolvers = Resolvers::new(settings());
    let wifi = resolver(&resolvers, &interface, &binder);
    let error = lookup_all(&wifi, NAME, soon(5)).await.unwrap_err();
    assert!(matches!(error, DnsError::Bind { .. }), "{error}");
    assert!(error.to_string().contains("sim-wifi"), "{error}");
    assert!(server.seen().is_empty());
}

#[tokio::test]
async fn queries_in_flight_are_bounded_per_interface() {
    let server = Responder::start(localhost(), zone()).await.unwrap();
    server.set(|z| z.mode = Mode::Silent);
    let resolvers = Resolvers::new(dns_with(|s| s.max_concurrent = 2));
    let wifi = resolver(&resolvers, &sim("sim-wifi", &[&server]), &Arc::default());
    let until = Instant::now() + Duration::from_millis(400);
    let lookups: Vec<_> = (0..10)
        .map(|i| {
            let wifi = wifi.clone();
            tokio::spawn(async move {
                wifi.lookup(&format!("n{i}.example.test"), &[Family::V4], until).all().await
            })
        })
        .collect();
    for lookup in lookups {
        assert!(lookup.await.unwrap().is_err());
    }
    assert_eq!(server.seen().len(), 2, "only max_concurrent queries were sent");
}

#[tokio::test]
async fn without_servers_the_system_resolver_answers_and_says_so() {
    let system = Arc::new(netswitch::dns::SystemResolver::with_lookup(1, |_, _| Ok(ips(&["192.0.2.9"]))));
    let resolvers = Resolvers::new(settings()).with_system(system);
    let wifi = resolver(&resolvers, &sim("sim-wifi", &[]), &Arc::default());
    let answer = wifi.lookup(NAME, &[Family::V4], soon(5)).all().await.unwrap();
    assert_eq!(answer.addresses, ips(&["192.0.2.9"]));
    assert_eq!(answer.answers[0].source, Some(Source::Resolver(Via::System)));
}

/// A host resolver that answers fixed addresses (or "resolve yourself") and records the
/// interface and family it was asked for.
#[derive(Default)]
struct FakeHost {
    yourself: bool,
    asked: Mutex<Vec<(String, String, Family)>>,
}

impl HostDns for FakeHost {
    fn resolve(&self, name: &str, interface: &NetworkInterface, family: Family) -> HostFuture {
        self.asked.lock().unwrap().push((name.to_string(), interface.name.clone(), family));
        let answer = if self.yourself {
            Ok(HostAnswer::ResolveYourself)
        } else if name == NAME {
            Ok(HostAnswer::Addresses(ips(&["203.0.113.5", "2001:db8::5"])))
        } else {
            Err(HostDnsError::NotFound(format!("{name}: no such name")))
        };
        Box::pin(async move { answer })
    }
}

#[tokio::test]
async fn the_host_resolver_is_asked_for_the_interface_of_the_route() {
    let host = Arc::new(FakeHost::default());
    let server = Responder::start(localhost(), zone()).await.unwrap();
    let resolvers = Resolvers::new(dns_with(|s| s.resolver = ResolverChoice::Host)).with_host(host.clone());
    let cell = resolver(&resolvers, &sim("sim-cell", &[&server]), &Arc::default());
    let answer = cell.lookup(NAME, &both(), soon(5)).all().await.unwrap();
    assert_eq!(answer.addresses, ips(&["2001:db8::5", "203.0.113.5"]));
    let mut asked = host.asked.lock().unwrap().clone();
    asked.sort_by_key(|a| a.2);
    assert_eq!(
        asked,
        vec![
            (NAME.to_string(), "sim-cell".to_string(), Family::V4),
            (NAME.to_string(), "sim-cell".to_string(), Family::V6)
        ]
    );
    assert!(server.seen().is_empty(), "the host answered: the interface's server was not asked");
    let error = lookup_all(&cell, "nope.example.test", soon(5)).await.unwrap_err();
    assert!(error.is_nxdomain(), "{error}");
    assert!(error.to_string().contains("the host's resolver on sim-cell"), "{error}");

    // A host that leaves resolution to netswitch: the interface's server answers.
    let declining = Arc::new(FakeHost { yourself: true, ..FakeHost::default() });
    let resolvers =
        Resolvers::new(dns_with(|s| s.resolver = ResolverChoice::Host)).with_host(declining.clone());
    let cell = resolver(&resolvers, &sim("sim-cell", &[&server]), &Arc::default());
    assert_eq!(lookup_all(&cell, NAME, soon(5)).await.unwrap(), ips(&["192.0.2.1", "2001:db8::1"]));
    assert_eq!(declining.asked.lock().unwrap().len(), 2);
    assert_eq!(server.seen().len(), 2);
}

// ---- Whole dials through the direct outbound -----------------------------------------------

/// A TCP listener on `ip` (a free port) that accepts and holds connections.
async fn listener_on(ip: &str) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind((ip.parse::<IpAddr>().unwrap(), 0)).await.unwrap();
    let address = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            held.push(stream);
        }
    });
    (address, task)
}

/// A direct outbound over `interfaces` (the first the default) with the simulated binder, the
/// fallback strategy (Wi-Fi, then cellular), and `dns`.
fn outbound(
    interfaces: Vec<NetworkInterface>,
    dns: Arc<Resolvers>,
    connect_timeout: Duration,
) -> DirectOutbound {
    let default = interfaces.first().map(|i| i.index);
    let state = Arc::new(NetworkState::new(InterfaceSnapshot::new(interfaces, default).unwrap()));
    let mut settings = DialSettings::default();
    settings.connect_timeout = connect_timeout;
    settings.network_strategy = NetworkStrategy::Fallback;
    settings.network_type = vec![NetworkType::Wifi];
    settings.fallback_network_type = vec![NetworkType::Cellular];
    settings.fallback_delay = Duration::from_millis(300);
    DirectOutbound::with_settings(settings)
        .with_networks(state, Arc::new(SimulatedBinder::new()))
        .with_dns(dns)
}

#[tokio::test]
async fn the_fallback_lane_resolves_over_its_own_network_and_dials_its_answer() {
    // Wi-Fi's DNS never answers; cellular's answers 127.0.0.30, where the service listens.
    // Wi-Fi's DNS would have said 127.0.0.20 (nothing listens there: using it would fail).
    let (service, _task) = listener_on("127.0.0.30").await;
    let wifi_dns = Responder::start(localhost(), Zone::new(NAME, &["127.0.0.20"], &[])).await.unwrap();
    wifi_dns.set(|z| z.mode = Mode::Silent);
    let cell_dns = Responder::start(localhost(), Zone::new(NAME, &["127.0.0.30"], &[])).await.unwrap();
    let interfaces = vec![sim("sim-wifi", &[&wifi_dns]), sim("sim-cell", &[&cell_dns])];
    let outbound = outbound(interfaces, Arc::new(Resolvers::default()), Duration::from_secs(5));
    let metadata = Metadata::new(Destination::domain(NAME, service.port()));
    let report = tokio::time::timeout(WAIT, outbound.dial_with_report(&metadata)).await.unwrap().unwrap();
    assert_eq!(report.address, service);
    assert_eq!(report.stream.egress.interface.as_deref(), Some("sim-cell"));
    assert!(report.was_fallback);
    assert_eq!(report.stream.stream.local_addr().unwrap().ip(), source_of("sim-cell"));
    let answered: Vec<String> = report.lookups.iter().map(|l| l.answer.to_string()).collect();
    println!("lookups: {answered:?}");
    let expected = Via::Server { server: cell_dns.address(), interface: Some("sim-cell".into()) };
    assert!(report.lookups.iter().any(|l| l.interface.as_deref() == Some("sim-cell")
        && l.answer.source == Some(Source::Resolver(expected.clone()))));
    assert!(cell_dns.seen().iter().all(|s| s.from.ip() == source_of("sim-cell")));
    assert!(wifi_dns.seen().iter().all(|s| s.from.ip() == source_of("sim-wifi")));
    assert!(!wifi_dns.seen().is_empty(), "the Wi-Fi lane asked Wi-Fi's server");
}

#[tokio::test]
async fn a_second_dial_is_answered_from_the_cache_and_preresolved_addresses_win() {
    let (service, _task) = listener_on("127.0.0.30").await;
    let dns = Responder::start(localhost(), Zone::new(NAME, &["127.0.0.30"], &[])).await.unwrap();
    let outbound =
        outbound(vec![sim("sim-wifi", &[&dns])], Arc::new(Resolvers::default()), Duration::from_secs(5));
    let metadata = Metadata::new(Destination::domain(NAME, service.port()));
    outbound.dial_tcp(&metadata).await.unwrap();
    let after_first = dns.seen().len();
    assert_eq!(after_first, 1, "only A: the interface has no IPv6 address to use an AAAA answer with");
    assert_eq!(dns.count("udp", RecordType::A), 1);
    let report = outbound.dial_with_report(&metadata).await.unwrap();
    assert_eq!(dns.seen().len(), after_first, "the second dial made no query");
    assert!(report.lookups.iter().all(|l| matches!(l.answer.source, Some(Source::Cache(_)))));

    let mut preresolved = Metadata::new(Destination::domain("other.example.test", service.port()));
    preresolved.resolved_addresses = vec![service.ip()];
    let report = outbound.dial_with_report(&preresolved).await.unwrap();
    assert_eq!(report.address, service);
    assert!(report.lookups.is_empty());
    assert_eq!(dns.seen().len(), after_first, "pre-resolved addresses need no lookup");
}

#[tokio::test]
async fn nxdomain_fails_the_dial_as_host_unreachable_and_socks_replies_0x04() {
    use netswitch::inbound::socks::{SocksServer, SocksSettings};
    use netswitch::{ConnectionManager, RelaySettings};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let dns = Responder::start(localhost(), zone()).await.unwrap();
    let outbound =
        outbound(vec![sim("sim-wifi", &[&dns])], Arc::new(Resolvers::default()), Duration::from_secs(5));
    let error =
        outbound.dial_tcp(&Metadata::new(Destination::domain("nope.example.test", 80))).await.unwrap_err();
    println!("{error}");
    assert!(matches!(&error, DialError::Resolve { source, .. } if source.is_nxdomain()), "{error}");
    assert_eq!(error.kind(), FailureKind::HostUnreachable);
    assert!(error.to_string().contains(&format!("DNS {} on sim-wifi", dns.address())), "{error}");

    let manager = Arc::new(ConnectionManager::new(RelaySettings::default()));
    let mut settings = SocksSettings::default();
    settings.listen = "127.0.0.1:0".parse().unwrap();
    let server = SocksServer::start(settings, manager, Arc::new(outbound)).await.unwrap();
    let mut client = tokio::net::TcpStream::connect(server.local_addr()).await.unwrap();
    client.write_all(b"\x05\x01\x00\x05\x01\x00\x03\x11nope.example.test\x00\x50").await.unwrap();
    let mut replies = [0u8; 12];
    tokio::time::timeout(WAIT, client.read_exact(&mut replies)).await.unwrap().unwrap();
    assert_eq!(replies[..2], [5, 0], "method reply");
    assert_eq!(replies[3], 0x04, "host unreachable for a name that does not exist");
}

/// Threads of this process.
fn threads() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("Threads:")).unwrap();
    line["Threads:".len()..].trim().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_dns_server_fails_domain_dials_by_connect_timeout_and_nothing_else() {
    let connect_timeout = Duration::from_millis(800);
    let (service, _task) = listener_on("127.0.0.1").await;
    let dns = Responder::start(localhost(), zone()).await.unwrap();
    dns.set(|z| z.mode = Mode::Silent);
    let outbound = Arc::new(outbound(
        vec![sim("sim-wifi", &[&dns])],
        Arc::new(Resolvers::new(dns_with(|s| s.max_concurrent = 4))),
        connect_timeout,
    ));
    let baseline = threads();
    let dials: Vec<_> = (0..50)
        .map(|i| {
            let outbound = outbound.clone();
            tokio::spawn(async move {
                let started = Instant::now();
                let metadata = Metadata::new(Destination::domain(format!("n{i}.example.test"), 443));
                (outbound.dial_tcp(&metadata).await.map(|_| ()), started.elapsed())
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(100)).await;
    // While those lookups hang: an IP dial and a localhost dial connect.
    let started = Instant::now();
    outbound.dial_tcp(&Metadata::new(service.into())).await.expect("IP dial while lookups hang");
    let ip_took = started.elapsed();
    outbound
        .dial_tcp(&Metadata::new(Destination::domain("localhost", service.port())))
        .await
        .expect("localhost dial while lookups hang");
    let peak = threads();
    let mut slowest = Duration::ZERO;
    for dial in dials {
        let (result, took) = dial.await.unwrap();
        let error = result.unwrap_err();
        assert!(matches!(error, DialError::Resolve { .. }), "{error}");
        assert_eq!(error.kind(), FailureKind::TimedOut, "{error}");
        assert!(error.to_string().contains("on sim-wifi"), "{error}");
        slowest = slowest.max(took);
    }
    println!(
        "50 domain dials to a silent DNS server failed by {slowest:?} (connect_timeout {connect_timeout:?}); \
         IP dial meanwhile {ip_took:?}; threads {baseline} -> {peak}; queries sent {}",
        dns.seen().len()
    );
    assert!(slowest < connect_timeout + Duration::from_secs(3), "{slowest:?}");
    assert!(peak <= baseline + 2, "threads grew from {baseline} to {peak}");
    assert!(dns.seen().len() <= 50 * 2 * 2, "each lookup at most rounds x families queries");
}

/// Replies of a UDP session reach the test through a channel.
struct ChannelSink(tokio::sync::mpsc::UnboundedSender<(Vec<u8>, Destination)>);

impl netswitch::client::PacketSink for ChannelSink {
    fn send_to_client<'a>(
        &'a self,
        payload: &'a [u8],
        source: &'a Destination,
    ) -> netswitch::dial::BoxFuture<'a, std::io::Result<()>> {
        let _ = self.0.send((payload.to_vec(), source.clone()));
        Box::pin(async { Ok(()) })
    }
}

/// The next reply of a UDP session (fails the test after WAIT).
async fn next_reply(
    replies: &mut tokio::sync::mpsc::UnboundedReceiver<(Vec<u8>, Destination)>,
) -> (Vec<u8>, Destination) {
    tokio::time::timeout(WAIT, replies.recv()).await.expect("no reply in time").unwrap()
}

/// A UDP echo server on 127.0.0.1.
async fn udp_echo() -> SocketAddr {
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let address = socket.local_addr().unwrap();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 2048];
        while let Ok((n, from)) = socket.recv_from(&mut buf).await {
            let _ = socket.send_to(&buf[..n], from).await;
        }
    });
    address
}

#[tokio::test]
async fn a_udp_datagram_to_a_new_domain_waits_for_its_lookup_without_stalling_other_replies() {
    use netswitch::client::udp_timeout::UdpTimeouts;
    use netswitch::client::{Datagram, PacketInbound};
    use netswitch::{ConnectionManager, RelaySettings};

    let (first, second) = (udp_echo().await, udp_echo().await);
    let dns = Responder::start(localhost(), Zone::new(NAME, &["127.0.0.1"], &[])).await.unwrap();
    dns.set(|z| z.hold_a = true);
    let outbound =
        outbound(vec![sim("sim-wifi", &[&dns])], Arc::new(Resolvers::default()), Duration::from_secs(5));
    let manager = ConnectionManager::new(RelaySettings::default());
    let (tx, mut replies) = tokio::sync::mpsc::unbounded_channel();
    let (uplink, inbound) = PacketInbound::channel(Arc::new(ChannelSink(tx)), UdpTimeouts::default(), 64);
    manager.new_packet_connection(inbound, Metadata::new(first.into()), Arc::new(outbound), |_| {});
    let send = |destination: Destination, payload: &'static [u8]| {
        let uplink = uplink.clone();
        async move { uplink.send(Datagram { destination, payload: payload.to_vec() }).await.unwrap() }
    };
    send(first.into(), b"one").await;
    assert_eq!(next_reply(&mut replies).await, (b"one".to_vec(), first.into()));

    // A datagram to the domain: its lookup is held at the DNS server.
    let by_name = Destination::domain(NAME, second.port());
    send(by_name.clone(), b"to the name").await;
    let deadline = Instant::now() + WAIT;
    while dns.count("udp", RecordType::A) == 0 {
        assert!(Instant::now() < deadline, "the session never asked for the name");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Meanwhile the session keeps relaying to (and from) the other destination.
    for payload in [&b"two"[..], b"three"] {
        send(first.into(), payload).await;
        assert_eq!(
            next_reply(&mut replies).await,
            (payload.to_vec(), first.into()),
            "replies flow while the name resolves"
        );
    }
    // The answer arrives: the waiting datagram goes out (its reply comes from the address).
    dns.set(|z| z.hold_a = false);
    assert_eq!(next_reply(&mut replies).await, (b"to the name".to_vec(), second.into()));
    // Later datagrams to the name use the remembered address: no second query.
    send(by_name.clone(), b"again").await;
    assert_eq!(next_reply(&mut replies).await, (b"again".to_vec(), second.into()));
    assert_eq!(dns.count("udp", RecordType::A), 1);
    assert!(
        dns.seen().iter().all(|s| s.from.ip() == source_of("sim-wifi")),
        "asked over the session's network"
    );
}
