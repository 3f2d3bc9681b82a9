//! DNS hijack: the tunnel answers the apps' DNS queries itself, with netswitch's resolver over
//! the network the strategy chooses, instead of relaying them to a DNS address that may not
//! exist (a VPN hands its apps a DNS server inside the tunnel).
//!
//! [`DnsHijack`] says which packets: off (the default), UDP and TCP to port 53 of the tunnel's
//! DNS addresses, or to port 53 of any address. A hijacked UDP query is read from its packet and
//! answered with an IP/UDP packet from the address it was sent to; a TCP connection to a
//! hijacked address and port is accepted by the system stack as usual (the NAT steers it to the
//! listener), then served as DNS over TCP (2-byte length prefix, several queries one after the
//! other, closed after [`TCP_IDLE`] without a query or with a reply not taken) instead of being
//! dialed. The messages are `dns_reply`'s.
//!
//! Lookups go through a [`HijackResolver`]; [`StrategyResolver`] is the dialer's own path
//! ([`DirectOutbound::lookup_name`], as `ConnectionManager.resolve`): each network the strategy
//! picks resolves with its own resolver, an answer from Wi-Fi is never one from cellular. At most
//! [`MAX_IN_FLIGHT`] queries are looked up at once; a UDP query past that is dropped and counted
//! (`dropped_dns`), a TCP one waits for a slot (held for the lookup only, not while its reply is
//! written). Nothing blocks the packet reader.
//!
//! Which DNS address to give the apps: any address the tunnel's routes capture except the
//! tunnel's own (packets to a local address never enter the device). The NAT address
//! ([`super::TunSettings::nat_addresses`], e.g. 172.19.0.2 for 172.19.0.1/30) is the natural
//! choice: it is inside the tunnel's prefix (routed into it with no extra route), needs no other
//! address, and it is what sing-box hands its Android apps. Apps' packets to it are told apart
//! from the NAT's own: the NAT only ever writes packets *from* it to the listener's port.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{watch, Semaphore};

use super::counters::{bump, Counters};
use super::dns_reply::{self, Outcome, Read, TCP_LIMIT};
use super::packet::Udp;
use super::{udp, Io};
use crate::dial::direct::DirectOutbound;
use crate::dial::{BoxFuture, DialError};
use crate::dns::cache::Key;
use crate::dns::{DnsError, Family};
use crate::metadata::{ConnectionOptions, Destination};
use crate::network::state::NetworkState;
use crate::network::DomainStrategy;

/// The DNS port.
pub const DNS_PORT: u16 = 53;
/// Lookups of hijacked queries running at once, per tunnel.
pub const MAX_IN_FLIGHT: usize = 256;
/// How long a DNS-over-TCP connection may stay without a query, or with a reply the client does
/// not take, before it is closed.
pub const TCP_IDLE: Duration = Duration::from_secs(10);

/// Which DNS packets from the apps the tunnel answers itself (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum DnsHijack {
    /// None: DNS is relayed like any UDP flow or TCP connection. The default.
    #[default]
    Off,
    /// UDP and TCP to port 53 of these addresses (one per family, say), the tunnel's DNS
    /// addresses. Any address the tunnel's routes capture, except the tunnel's own.
    Addresses(Vec<IpAddr>),
    /// UDP and TCP to port 53 of every address.
    AllPort53,
}

impl DnsHijack {
    /// True when UDP or TCP to `destination` is answered by the tunnel.
    pub fn matches(&self, destination: SocketAddr) -> bool {
        if destination.port() != DNS_PORT {
            return false;
        }
        match self {
            DnsHijack::Off => false,
            DnsHijack::Addresses(addresses) => addresses.contains(&destination.ip().to_canonical()),
            DnsHijack::AllPort53 => true,
        }
    }

    /// Checks the addresses against the tunnel's own: the reason they cannot be used, if any.
    pub(crate) fn check(&self, own: &[IpAddr]) -> Result<(), String> {
        let DnsHijack::Addresses(addresses) = self else { return Ok(()) };
        if addresses.is_empty() {
            return Err("no DNS address given (AllPort53 answers port 53 of every address)".into());
        }
        for address in addresses.iter().map(|a| a.to_canonical()) {
            if own.contains(&address) {
                return Err(format!(
                    "{address} is the tunnel's own address: packets to it never enter the tunnel (its NAT address is the usual choice)"
                ));
            }
            if address.is_unspecified() || address.is_multicast() || address.is_loopback() {
                return Err(format!("{address} cannot be a DNS address of the tunnel"));
            }
        }
        Ok(())
    }
}

/// Looks up the addresses of one family of a name for a hijacked query.
pub trait HijackResolver: Send + Sync + fmt::Debug {
    /// Resolves `name` (presentation form, final dot) for `family`: addresses with the TTL to
    /// give the app, NODATA, NXDOMAIN or SERVFAIL. Ends by the resolver's own deadline.
    fn resolve<'a>(&'a self, name: &'a str, family: Family) -> BoxFuture<'a, Outcome>;
}

/// The dialer's lookup ([`DirectOutbound::lookup_name`]) with the family's domain strategy
/// (`ipv4_only` for A, `ipv6_only` for AAAA). The TTL is how much longer the answering
/// network's cache keeps the answer (the server's TTL, clamped by the cache), else the cache's
/// floor (the system resolver, a cache turned off).
#[derive(Debug, Clone)]
pub struct StrategyResolver {
    outbound: Arc<DirectOutbound>,
    networks: Arc<NetworkState>,
}

impl StrategyResolver {
    /// Resolves with `outbound`; `networks` is the interface state it chooses from (the
    /// manager's, [`crate::ConnectionManager::networks`]), used to find the answer's cache entry.
    pub fn new(outbound: Arc<DirectOutbound>, networks: Arc<NetworkState>) -> StrategyResolver {
        StrategyResolver { outbound, networks }
    }

    async fn lookup(&self, name: &str, family: Family) -> Outcome {
        let options = ConnectionOptions {
            domain_strategy: Some(match family {
                Family::V4 => DomainStrategy::Ipv4Only,
                Family::V6 => DomainStrategy::Ipv6Only,
            }),
            ..ConnectionOptions::default()
        };
        let report = match self.outbound.lookup_name(name, &options).await {
            Ok(report) => report,
            Err(DialError::Resolve { source, .. }) => {
                tracing::debug!(name, %family, error = %source, "hijacked DNS query: lookup failed");
                return match *source {
                    DnsError::NxDomain { .. } => Outcome::NxDomain,
                    DnsError::NoAddress { .. } => Outcome::NoData,
                    _ => Outcome::ServFail,
                };
            }
            Err(DialError::NoAddress { .. } | DialError::NoAllowedAddress { .. }) => return Outcome::NoData,
            Err(error) => {
                tracing::debug!(name, %family, %error, "hijacked DNS query: no lookup");
                return Outcome::ServFail;
            }
        };
        let ips: Vec<IpAddr> = report.addresses.into_iter().filter(|ip| Family::of(*ip) == family).collect();
        if ips.is_empty() {
            return Outcome::NoData;
        }
        let dns = self.outbound.dns();
        let snapshot = self.networks.snapshot();
        let interface = report.interface.and_then(|shown| snapshot.by_name(&shown).map(|i| i.id()));
        let key = Key::new(interface, name, family);
        let left = dns.cache().and_then(|cache| cache.remaining(&key, tokio::time::Instant::now()));
        let ttl = left.unwrap_or(dns.settings().ttl.floor).as_secs().max(1);
        Outcome::Addresses { ips, ttl: u32::try_from(ttl).unwrap_or(u32::MAX) }
    }
}

impl HijackResolver for StrategyResolver {
    fn resolve<'a>(&'a self, name: &'a str, family: Family) -> BoxFuture<'a, Outcome> {
        Box::pin(self.lookup(name, family))
    }
}

/// The hijack of one tunnel: what it takes, its resolver and its bound.
#[derive(Debug)]
pub(crate) struct Hijack {
    mode: DnsHijack,
    resolver: Option<Arc<dyn HijackResolver>>,
    slots: Arc<Semaphore>,
    counters: Arc<Counters>,
    stopped: watch::Sender<bool>,
    /// [`TCP_IDLE`] (tests shorten it).
    tcp_idle: Duration,
}

impl Hijack {
    /// The hijack for `mode`; a mode other than `Off` needs `resolver`.
    pub fn new(
        mode: DnsHijack,
        resolver: Option<Arc<dyn HijackResolver>>,
        counters: Arc<Counters>,
    ) -> Hijack {
        let slots = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
        Hijack { mode, resolver, slots, counters, stopped: watch::Sender::new(false), tcp_idle: TCP_IDLE }
    }

    /// This hijack with DNS-over-TCP connections closed after `idle` instead of [`TCP_IDLE`].
    #[cfg(test)]
    fn with_tcp_idle(mut self, idle: Duration) -> Hijack {
        self.tcp_idle = idle;
        self
    }

    /// Takes the UDP datagram if it is a hijacked query (true): answers it on a task, or drops
    /// and counts it when [`MAX_IN_FLIGHT`] lookups are running. False: not for the hijack.
    pub fn intercept_udp(self: &Arc<Self>, datagram: &Udp<'_>, io: &Arc<Io>) -> bool {
        if !self.mode.matches(datagram.destination) {
            return false;
        }
        let Ok(slot) = self.slots.clone().try_acquire_owned() else {
            bump(&self.counters.dropped_dns);
            return true;
        };
        let (hijack, io, query) = (self.clone(), io.clone(), datagram.payload.to_vec());
        let (server, client) = (Destination::from(datagram.destination), datagram.source);
        tokio::spawn(async move {
            let reply = hijack.answer(&query, true).await;
            drop(slot);
            let Some(reply) = reply else { return };
            match udp::reply_packet(&reply, &server, client) {
                Ok(packet) => {
                    io.send(&packet);
                }
                Err(error) => tracing::debug!(%error, %client, "hijacked DNS reply not sent"),
            }
        });
        true
    }

    /// True when a TCP connection to `destination` is served as DNS over TCP.
    pub fn serves_tcp(&self, destination: SocketAddr) -> bool {
        self.mode.matches(destination)
    }

    /// Serves the accepted `stream` as DNS over TCP on a task; `on_end` runs when it closes.
    /// (`stream`: the system stack's accepted socket, or a userspace stack's stream.)
    pub fn serve_tcp<S>(self: &Arc<Self>, stream: S, on_end: impl FnOnce() + Send + 'static)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (hijack, mut stopped) = (self.clone(), self.stopped.subscribe());
        tokio::spawn(async move {
            tokio::select! {
                () = hijack.serve_connection(stream) => {}
                _ = stopped.wait_for(|stopped| *stopped) => {}
            }
            on_end();
        });
    }

    /// Closes every DNS-over-TCP connection (the tunnel stops).
    pub fn stop(&self) {
        self.stopped.send_replace(true);
    }

    async fn serve_connection(&self, mut stream: impl AsyncRead + AsyncWrite + Unpin) {
        loop {
            let length = match tokio::time::timeout(self.tcp_idle, stream.read_u16()).await {
                Ok(Ok(length)) => usize::from(length),
                _ => return, // idle, closed or reset
            };
            let mut query = vec![0u8; length];
            if !matches!(tokio::time::timeout(self.tcp_idle, stream.read_exact(&mut query)).await, Ok(Ok(_)))
            {
                return;
            }
            // The slot is the lookup's only: a client slow to take its reply keeps none.
            let Ok(slot) = self.slots.acquire().await else { return };
            let reply = self.answer(&query, false).await;
            drop(slot);
            let Some(reply) = reply else { continue };
            let Ok(length) = u16::try_from(reply.len()) else { return };
            let mut framed = Vec::with_capacity(reply.len() + 2);
            framed.extend_from_slice(&length.to_be_bytes());
            framed.extend_from_slice(&reply);
            // A client that does not take its reply within the idle timeout is gone too.
            if !matches!(tokio::time::timeout(self.tcp_idle, stream.write_all(&framed)).await, Ok(Ok(()))) {
                return;
            }
        }
    }

    /// The reply to one query (`None`: nothing to send), counted as answered or failed.
    async fn answer(&self, query: &[u8], over_udp: bool) -> Option<Vec<u8>> {
        let question = match dns_reply::read_query(query) {
            Read::Ask(question) => question,
            Read::Refuse(reply) => {
                bump(&self.counters.dns_failed);
                return dns_reply::encode(&reply, dns_reply::UDP_LIMIT);
            }
            Read::Ignore => {
                bump(&self.counters.dns_failed);
                return None;
            }
        };
        let outcome = match (question.family(), &self.resolver) {
            (None, _) => Outcome::NoData,
            (Some(family), Some(resolver)) => resolver.resolve(&question.name(), family).await,
            (Some(_), None) => Outcome::ServFail,
        };
        bump(if outcome == Outcome::ServFail {
            &self.counters.dns_failed
        } else {
            &self.counters.dns_answered
        });
        let limit = if over_udp { question.udp_limit() } else { TCP_LIMIT };
        dns_reply::encode(&dns_reply::reply(&question, &outcome), limit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::op::{Message, ResponseCode};
    use hickory_proto::rr::RecordType;
    use std::sync::atomic::Ordering;
    use tokio::net::TcpStream;

    /// Answers `svc.test` with 192.0.2.7 / 2001:db8::7 (TTL 30), `slow.test` never, NXDOMAIN
    /// otherwise.
    #[derive(Debug)]
    struct Fake;

    impl HijackResolver for Fake {
        fn resolve<'a>(&'a self, name: &'a str, family: Family) -> BoxFuture<'a, Outcome> {
            Box::pin(async move {
                match (name, family) {
                    ("svc.test.", Family::V4) => {
                        Outcome::Addresses { ips: vec!["192.0.2.7".parse().unwrap()], ttl: 30 }
                    }
                    ("svc.test.", Family::V6) => {
                        Outcome::Addresses { ips: vec!["2001:db8::7".parse().unwrap()], ttl: 30 }
                    }
                    ("slow.test.", _) => std::future::pending().await,
                    _ => Outcome::NxDomain,
                }
            })
        }
    }

    fn hijack(mode: DnsHijack) -> (Arc<Hijack>, Arc<Counters>) {
        let counters = Arc::new(Counters::default());
        (Arc::new(Hijack::new(mode, Some(Arc::new(Fake)), counters.clone())), counters)
    }

    #[test]
    fn which_packets_are_hijacked() {
        let at = |text: &str| text.parse::<SocketAddr>().unwrap();
        let addresses = DnsHijack::Addresses(vec!["172.19.0.2".parse().unwrap(), "fdfe::2".parse().unwrap()]);
        assert!(addresses.matches(at("172.19.0.2:53")));
        assert!(addresses.matches(at("[fdfe::2]:53")));
        assert!(!addresses.matches(at("172.19.0.2:5353")));
        assert!(!addresses.matches(at("10.0.0.1:53")));
        assert!(DnsHijack::AllPort53.matches(at("10.0.0.1:53")));
        assert!(!DnsHijack::AllPort53.matches(at("10.0.0.1:54")));
        assert!(!DnsHijack::Off.matches(at("172.19.0.2:53")));
        let own = ["172.19.0.1".parse().unwrap()];
        assert_eq!(addresses.check(&own), Ok(()));
        let local = DnsHijack::Addresses(vec!["172.19.0.1".parse().unwrap()]).check(&own).unwrap_err();
        assert!(local.contains("172.19.0.1 is the tunnel's own address"), "{local}");
        assert!(DnsHijack::Addresses(Vec::new()).check(&own).is_err());
        assert!(DnsHijack::Addresses(vec!["0.0.0.0".parse().unwrap()]).check(&own).is_err());
    }

    #[tokio::test]
    async fn queries_are_answered_through_the_resolver_and_counted() {
        let (hijack, counters) = hijack(DnsHijack::AllPort53);
        let ask = |name: &str, kind| {
            let hijack = hijack.clone();
            let query = dns_reply::query_bytes(name, kind, None);
            async move { Message::from_vec(&hijack.answer(&query, true).await.unwrap()).unwrap() }
        };
        let reply = ask("svc.test", RecordType::AAAA).await;
        assert_eq!(reply.response_code(), ResponseCode::NoError);
        assert_eq!(reply.answers()[0].ttl(), 30);
        assert_eq!(reply.answers()[0].data().ip_addr(), Some("2001:db8::7".parse().unwrap()));
        assert_eq!(ask("nx.test", RecordType::A).await.response_code(), ResponseCode::NXDomain);
        let other = ask("svc.test", RecordType::TXT).await;
        assert_eq!((other.response_code(), other.answers().len()), (ResponseCode::NoError, 0));
        assert_eq!(hijack.answer(&[1, 2, 3], true).await, None, "no reply to less than a header");
        let get = |counter: &std::sync::atomic::AtomicU64| counter.load(Ordering::Relaxed);
        assert_eq!((get(&counters.dns_answered), get(&counters.dns_failed)), (3, 1));
        let no_resolver = Hijack::new(DnsHijack::AllPort53, None, counters.clone());
        let query = dns_reply::query_bytes("svc.test", RecordType::A, None);
        let reply = Message::from_vec(&no_resolver.answer(&query, true).await.unwrap()).unwrap();
        assert_eq!(reply.response_code(), ResponseCode::ServFail);
        assert_eq!(get(&counters.dns_failed), 2);
    }

    #[tokio::test]
    async fn dns_over_tcp_answers_several_queries_per_connection() {
        let (hijack, _) = hijack(DnsHijack::AllPort53);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut client = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        let (server, _) = listener.accept().await.unwrap();
        let (ended_tx, ended) = tokio::sync::oneshot::channel();
        hijack.serve_tcp(server, move || {
            let _ = ended_tx.send(());
        });
        // Two queries in one write, then one more: three answers in order.
        let framed = |name: &str, kind| {
            let query = dns_reply::query_bytes(name, kind, None);
            let mut bytes = u16::try_from(query.len()).unwrap().to_be_bytes().to_vec();
            bytes.extend_from_slice(&query);
            bytes
        };
        let mut both = framed("svc.test", RecordType::A);
        both.extend(framed("nx.test", RecordType::A));
        client.write_all(&both).await.unwrap();
        client.write_all(&framed("svc.test", RecordType::AAAA)).await.unwrap();
        let mut codes = Vec::new();
        for _ in 0..3 {
            let length = client.read_u16().await.unwrap();
            let mut reply = vec![0u8; usize::from(length)];
            client.read_exact(&mut reply).await.unwrap();
            let reply = Message::from_vec(&reply).unwrap();
            codes.push((reply.response_code(), reply.answers().len()));
        }
        assert_eq!(
            codes,
            [(ResponseCode::NoError, 1), (ResponseCode::NXDomain, 0), (ResponseCode::NoError, 1)]
        );
        // The client half-closes: the server closes too and `on_end` runs.
        client.shutdown().await.unwrap();
        ended.await.unwrap();
        assert_eq!(client.read(&mut [0u8; 1]).await.unwrap(), 0);
    }

    #[tokio::test]
    async fn stop_closes_dns_over_tcp_connections() {
        let (hijack, _) = hijack(DnsHijack::AllPort53);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut client = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        let (server, _) = listener.accept().await.unwrap();
        let (ended_tx, ended) = tokio::sync::oneshot::channel();
        hijack.serve_tcp(server, move || {
            let _ = ended_tx.send(());
        });
        hijack.stop();
        ended.await.unwrap();
        assert_eq!(client.read(&mut [0u8; 1]).await.unwrap(), 0, "closed");
    }

    #[tokio::test]
    async fn udp_queries_past_the_cap_are_dropped_and_counted() {
        let (hijack, counters) = hijack(DnsHijack::AllPort53);
        // Every slot held by a lookup that never ends.
        let held: Vec<_> =
            (0..MAX_IN_FLIGHT).map(|_| hijack.slots.clone().try_acquire_owned().unwrap()).collect();
        let (fd, peer) = std::os::unix::net::UnixDatagram::pair().unwrap();
        let device = super::super::TunDevice::new(fd.into(), super::super::Framing::Raw).unwrap();
        let io = Arc::new(Io::on_device(device, counters.clone()));
        let payload = dns_reply::query_bytes("svc.test", RecordType::A, None);
        let datagram = Udp {
            source: "172.19.0.1:40000".parse().unwrap(),
            destination: "10.0.0.1:53".parse().unwrap(),
            payload: &payload,
        };
        assert!(hijack.intercept_udp(&datagram, &io));
        assert_eq!(counters.dropped_dns.load(Ordering::Relaxed), 1);
        let not_dns = Udp { destination: "10.0.0.1:54".parse().unwrap(), ..datagram };
        assert!(!hijack.intercept_udp(&not_dns, &io), "not port 53: relayed");
        drop(held);
        // With a free slot: the reply comes back into the device from the address asked.
        assert!(hijack.intercept_udp(&datagram, &io));
        let peer = tokio::net::UnixDatagram::from_std({
            peer.set_nonblocking(true).unwrap();
            peer
        })
        .unwrap();
        let mut packet = vec![0u8; 2048];
        let length = peer.recv(&mut packet).await.unwrap();
        let super::super::packet::Packet::Udp(reply) = super::super::packet::parse(&packet[..length]) else {
            panic!("not a UDP packet")
        };
        assert_eq!((reply.source, reply.destination), (datagram.destination, datagram.source));
        let message = Message::from_vec(reply.payload).unwrap();
        assert_eq!(message.answers()[0].data().ip_addr(), Some("192.0.2.7".parse().unwrap()));
        assert_eq!(counters.dns_answered.load(Ordering::Relaxed), 1);
    }

    /// A DNS-over-TCP client that sends queries and never reads the replies (a hostile or hung
    /// app): the server's writes stall. The stalled connection must not keep a lookup slot (with
    /// every slot held that way, every app's UDP query would be dropped), and it is closed once
    /// a reply waited the idle timeout to be taken (else its socket and NAT entry stay forever).
    #[tokio::test]
    async fn a_client_that_never_reads_holds_no_lookup_slot_and_is_closed() {
        let counters = Arc::new(Counters::default());
        let idle = Duration::from_secs(2);
        let hijack = Arc::new(
            Hijack::new(DnsHijack::AllPort53, Some(Arc::new(Fake)), counters.clone()).with_tcp_idle(idle),
        );
        let (fd, peer) = std::os::unix::net::UnixDatagram::pair().unwrap();
        let device = super::super::TunDevice::new(fd.into(), super::super::Framing::Raw).unwrap();
        let io = Arc::new(Io::on_device(device, counters.clone()));
        let udp_query = |name: &str| dns_reply::query_bytes(name, RecordType::A, None);
        let (slow, svc) = (udp_query("slow.test"), udp_query("svc.test"));
        let datagram = |payload| Udp {
            source: "172.19.0.1:40000".parse().unwrap(),
            destination: "10.0.0.1:53".parse().unwrap(),
            payload,
        };
        // Every slot but one held by lookups that never end.
        for _ in 1..MAX_IN_FLIGHT {
            assert!(hijack.intercept_udp(&datagram(&slow), &io));
        }
        assert_eq!(counters.dropped_dns.load(Ordering::Relaxed), 0);
        // The client: small buffers (the stall comes after a few hundred replies), never reads.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        let mut client = socket.connect(listener.local_addr().unwrap()).await.unwrap();
        let (server, _) = listener.accept().await.unwrap();
        socket2::SockRef::from(&server).set_send_buffer_size(4096).unwrap();
        let (ended_tx, mut ended) = tokio::sync::oneshot::channel();
        hijack.serve_tcp(server, move || {
            let _ = ended_tx.send(());
        });
        let query = dns_reply::query_bytes("nx.test", RecordType::A, None);
        let mut framed = Vec::new();
        for _ in 0..64 {
            framed.extend_from_slice(&u16::try_from(query.len()).unwrap().to_be_bytes());
            framed.extend_from_slice(&query);
        }
        // Queries until the server stops reading them (it is stuck writing replies).
        let mut sent = 0;
        while tokio::time::timeout(Duration::from_millis(300), client.write_all(&framed)).await.is_ok() {
            sent += 1;
            assert!(sent < 100_000, "the server never stalled");
        }
        assert!(ended.try_recv().is_err(), "still open while stalled");
        // Another app's UDP query finds a free slot and is answered.
        assert!(hijack.intercept_udp(&datagram(&svc), &io));
        assert_eq!(
            counters.dropped_dns.load(Ordering::Relaxed),
            0,
            "a stalled TCP client holds a lookup slot"
        );
        let peer = tokio::net::UnixDatagram::from_std({
            peer.set_nonblocking(true).unwrap();
            peer
        })
        .unwrap();
        let mut packet = vec![0u8; 2048];
        let length =
            tokio::time::timeout(Duration::from_secs(5), peer.recv(&mut packet)).await.unwrap().unwrap();
        assert!(matches!(
            super::super::packet::parse(&packet[..length]),
            super::super::packet::Packet::Udp(_)
        ));
        // The stalled connection is closed within the idle timeout (and a bit).
        let closed = tokio::time::timeout(idle * 3, ended).await;
        assert!(closed.is_ok(), "the stalled DNS-over-TCP connection was never closed");
    }
}
