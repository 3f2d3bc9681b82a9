//! Early dials of the system stack: the outbound dial of a connection starts when the NAT sees
//! the app's SYN, not after the kernel completed the handshake and the listener accepted it, so
//! the dial runs while the app's handshake and first bytes go through the tunnel.
//!
//! The dial is a task of its own; its result waits in the flow's NAT entry until the accepted
//! connection goes to the manager with an [`EarlyDialed`] outbound, which hands the manager that
//! result (a failed dial then resets the app's connection, as a failed dial after the accept
//! does). A connection that is never accepted drops its entry's dial when the entry leaves
//! (after [`super::nat::PENDING_TIMEOUT`]): the task is aborted, or its socket closed.
//!
//! Not every SYN dials early: not with a decision hook (the decision comes first: it may block
//! the connection or pick its networks), not for DNS over TCP to the hijack's address (served,
//! not dialed), and not past [`MAX_EARLY_DIALS`] whose result no connection took yet (a SYN
//! flood or a port scan does not open a socket per SYN): those dial after the accept, as before.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use tokio::task::JoinHandle;

use super::dns_hijack::Hijack;
use crate::dial::{BoxFuture, DialError, DialedStream, Outbound};
use crate::metadata::{Destination, Metadata};

/// Early dials at most under way or waiting for their connection's accept at once.
pub const MAX_EARLY_DIALS: usize = 256;

/// Starts the early dials of one tunnel (see the module docs).
pub(crate) struct EarlyDialer {
    outbound: Arc<dyn Outbound>,
    dns: Arc<Hijack>,
    /// Early dials whose result no connection took yet.
    waiting: Arc<AtomicUsize>,
}

impl EarlyDialer {
    /// Early dials through `outbound`, except for the destinations `dns` serves itself.
    pub fn new(outbound: Arc<dyn Outbound>, dns: Arc<Hijack>) -> EarlyDialer {
        EarlyDialer { outbound, dns, waiting: Arc::default() }
    }

    /// Starts dialing `original` for the app's flow from `app` on a task (inside the runtime);
    /// `None` when this flow is not dialed early.
    pub fn start(&self, app: SocketAddr, original: SocketAddr) -> Option<EarlyDial> {
        if self.dns.serves_tcp(original) {
            return None;
        }
        let taken = self.waiting.fetch_update(Ordering::AcqRel, Ordering::Acquire, |waiting| {
            (waiting < MAX_EARLY_DIALS).then_some(waiting + 1)
        });
        if taken.is_err() {
            return None;
        }
        let slot = Slot(self.waiting.clone());
        let outbound = self.outbound.clone();
        let metadata = metadata(app, original);
        let task = tokio::spawn(async move { outbound.dial_tcp(&metadata).await });
        Some(EarlyDial { task, _slot: slot })
    }

    /// How many early dials are under way or wait for their connection.
    pub fn waiting(&self) -> usize {
        self.waiting.load(Ordering::Acquire)
    }
}

impl std::fmt::Debug for EarlyDialer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EarlyDialer").field("waiting", &self.waiting()).finish()
    }
}

/// The metadata of an app's flow from `app` to `original`, as the manager gets them (the early
/// dial dials with the same).
pub(crate) fn metadata(app: SocketAddr, original: SocketAddr) -> Metadata {
    Metadata::new(Destination::from(original)).with_source(app)
}

/// One early dial under way or done. Dropped before its connection took it, it aborts the dial
/// (a dialed socket is closed).
#[derive(Debug)]
pub(crate) struct EarlyDial {
    task: JoinHandle<Result<DialedStream, DialError>>,
    _slot: Slot,
}

impl Drop for EarlyDial {
    fn drop(&mut self) {
        // Dropping the handle of a finished task drops its output (the socket) too.
        self.task.abort();
    }
}

/// One of [`MAX_EARLY_DIALS`], given back when dropped.
#[derive(Debug)]
struct Slot(Arc<AtomicUsize>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The outbound of an accepted connection whose dial started early: its one `dial_tcp` returns
/// that dial's result.
pub(crate) struct EarlyDialed {
    dial: Mutex<Option<EarlyDial>>,
}

impl EarlyDialed {
    /// The outbound that hands over `dial`'s result.
    pub fn new(dial: EarlyDial) -> EarlyDialed {
        EarlyDialed { dial: Mutex::new(Some(dial)) }
    }
}

impl Outbound for EarlyDialed {
    fn dial_tcp<'a>(&'a self, metadata: &'a Metadata) -> BoxFuture<'a, Result<DialedStream, DialError>> {
        let dial = self.dial.lock().unwrap_or_else(PoisonError::into_inner).take();
        Box::pin(async move {
            let Some(mut dial) = dial else {
                // Only the manager dials, once per connection: a second dial has nothing to hand.
                return Err(DialError::Unsupported {
                    what: "a second dial of an early-dialed connection",
                    destination: metadata.destination.to_string(),
                });
            };
            match (&mut dial.task).await {
                Ok(dialed) => dialed,
                // The dial panicked: as a panic of the outbound, on the connection's task.
                Err(error) if error.is_panic() => std::panic::resume_unwind(error.into_panic()),
                // Aborted: only by a runtime shutting down.
                Err(_) => Err(DialError::Connect {
                    destination: metadata.destination.to_string(),
                    attempts: Vec::new(),
                }),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, SocketAddr};
    use std::os::fd::OwnedFd;
    use std::os::unix::net::UnixDatagram;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use tokio::io::AsyncReadExt;
    use tokio::net::{TcpListener, TcpStream};

    use super::*;
    use crate::dial::direct::DirectOutbound;
    use crate::dial::FailureKind;
    use crate::manager::{ConnectionManager, RelaySettings};
    use crate::tun::counters::Counters;
    use crate::tun::nat::{NatTable, PENDING_TIMEOUT};
    use crate::tun::test_support::eventually;
    use crate::tun::{DnsHijack, Stack, Tun, TunSettings};

    /// The direct outbound, counting its TCP dials.
    #[derive(Default)]
    struct Counting {
        dials: AtomicUsize,
        direct: DirectOutbound,
    }

    impl Outbound for Counting {
        fn dial_tcp<'a>(&'a self, metadata: &'a Metadata) -> BoxFuture<'a, Result<DialedStream, DialError>> {
            self.dials.fetch_add(1, Ordering::SeqCst);
            self.direct.dial_tcp(metadata)
        }
    }

    fn dialer(outbound: Arc<dyn Outbound>, dns: DnsHijack) -> EarlyDialer {
        EarlyDialer::new(outbound, Arc::new(Hijack::new(dns, None, Arc::new(Counters::default()))))
    }

    /// A loopback port nothing listens on.
    fn closed_port() -> SocketAddr {
        std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap()
    }

    /// Reads `stream` until its peer closes it (EOF or a reset), at most 10 s.
    async fn closed_by_peer(stream: &mut TcpStream) -> bool {
        let mut buf = [0u8; 16];
        matches!(
            tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf)).await,
            Ok(Ok(0) | Err(_))
        )
    }

    const APP: &str = "127.0.0.9:40000";

    /// The accepted connection's outbound hands over the early dial's result, once: a stream
    /// connected to the destination, or the dial's error (a refusal, which resets the app).
    #[tokio::test]
    async fn the_accepted_connection_gets_the_early_dials_result() {
        let server = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let destination = server.local_addr().unwrap();
        let counting = Arc::new(Counting::default());
        let early = dialer(counting.clone(), DnsHijack::Off);
        let dial = early.start(APP.parse().unwrap(), destination).unwrap();
        let (_remote, seen_from) = server.accept().await.unwrap();
        let dialed = EarlyDialed::new(dial);
        let flow = metadata(APP.parse().unwrap(), destination);
        let stream = dialed.dial_tcp(&flow).await.unwrap().stream;
        assert_eq!(stream.local_addr().unwrap(), seen_from, "the connection got the early dial's stream");
        assert!(matches!(dialed.dial_tcp(&flow).await, Err(DialError::Unsupported { .. })));
        assert_eq!(counting.dials.load(Ordering::SeqCst), 1, "dialed once");
        assert_eq!(early.waiting(), 0, "taken: its slot is free");

        let refused = closed_port();
        let dial = early.start(APP.parse().unwrap(), refused).unwrap();
        let error =
            EarlyDialed::new(dial).dial_tcp(&metadata(APP.parse().unwrap(), refused)).await.unwrap_err();
        assert_eq!(error.kind(), FailureKind::Refused, "{error}");
    }

    /// At most [`MAX_EARLY_DIALS`] wait at once (past that a flow dials after its accept), and
    /// DNS over TCP to the hijack's address is never dialed.
    #[tokio::test]
    async fn early_dials_are_bounded_and_skip_the_dns_hijack() {
        let early = dialer(Arc::new(DirectOutbound::default()), DnsHijack::AllPort53);
        let (app, refused) = (APP.parse().unwrap(), closed_port());
        assert!(early.start(app, "127.0.0.1:53".parse().unwrap()).is_none(), "served, not dialed");
        let mut held: Vec<EarlyDial> =
            (0..MAX_EARLY_DIALS).map(|_| early.start(app, refused).unwrap()).collect();
        assert!(early.start(app, refused).is_none(), "past the bound");
        assert_eq!(early.waiting(), MAX_EARLY_DIALS);
        held.pop();
        assert!(early.start(app, refused).is_some(), "a slot came free");
        drop(held);
        assert_eq!(early.waiting(), 0);
    }

    /// A pending NAT entry that is never accepted drops its early dial when it leaves: the
    /// dialed socket closes.
    #[tokio::test]
    async fn a_dial_never_accepted_closes_when_its_entry_leaves() {
        let server = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let destination = server.local_addr().unwrap();
        let early = dialer(Arc::new(DirectOutbound::default()), DnsHijack::Off);
        let mut table = NatTable::default();
        let now = Instant::now();
        let app: SocketAddr = APP.parse().unwrap();
        let port = table.outbound(app, destination, true, now).unwrap();
        assert!(table.wants_dial(port));
        table.set_dial(port, early.start(app, destination).unwrap());
        assert!(!table.wants_dial(port), "a retransmitted SYN does not dial again");
        let (mut remote, _) = server.accept().await.unwrap();
        table.sweep(now + PENDING_TIMEOUT / 2);
        assert_eq!(early.waiting(), 1, "still pending: the dial waits for the accept");
        assert_eq!(table.sweep(now + PENDING_TIMEOUT), 0);
        assert!(table.is_empty());
        assert!(closed_by_peer(&mut remote).await, "the dialed socket was closed");
        assert_eq!(early.waiting(), 0);
    }

    /// Through a tunnel (a datagram socket pair stands in for the device, so the rewritten SYN
    /// never reaches the kernel's listener): the app's SYN alone dials the destination, once for
    /// a retransmitted SYN too; stopping the tunnel closes the dial no connection took.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_syn_dials_at_once_and_a_stopped_tunnel_drops_the_dial() {
        let server = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let destination = server.local_addr().unwrap();
        let counting = Arc::new(Counting::default());
        let manager = Arc::new(ConnectionManager::new(RelaySettings::default()));
        let (ours, device) = UnixDatagram::pair().unwrap();
        let mut settings = TunSettings::inet4(Ipv4Addr::new(127, 0, 0, 5), 8);
        settings.stack = Stack::System;
        let tun = Tun::start(OwnedFd::from(ours), settings, manager, counting.clone()).unwrap();
        let mut syn = Vec::new();
        etherparse::PacketBuilder::ipv4([127, 0, 0, 9], [127, 0, 0, 1], 64)
            .tcp(40000, destination.port(), 1000, 64240)
            .syn()
            .write(&mut syn, &[])
            .unwrap();
        device.send(&syn).unwrap();
        let (mut remote, _) =
            tokio::time::timeout(Duration::from_secs(10), server.accept()).await.unwrap().unwrap();
        device.send(&syn).unwrap();
        eventually("both SYNs translated", || tun.counters().packets_out == 2).await;
        assert_eq!(counting.dials.load(Ordering::SeqCst), 1, "one dial for the flow");
        assert_eq!(tun.nat_entries(), 1, "pending: never accepted");
        tun.stop();
        assert!(closed_by_peer(&mut remote).await, "the stopped tunnel closed the dial");
    }
}
