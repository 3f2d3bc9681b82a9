//! The system stack: the kernel's TCP terminates the app's connections (sing-tun's
//! `stack_system.go` technique, our own code).
//!
//! Per address family the tunnel has an address `S` (e.g. 172.19.0.1/30) and netswitch owns a
//! listener on `S:L`; the next address `N` (172.19.0.2) is the NAT address. An app packet
//! `A:a -> D:d` of a flow gets a NAT port `n` ([`NatTable`]) and goes back into the device as
//! `N:n -> S:L`: the kernel delivers it to the listener, whose accepted socket is the app's
//! connection — handed to the manager as a plain inbound with the original destination `D:d`
//! and the app's source `A:a` in its metadata. The kernel's answers leave through the device as
//! `S:L -> N:n` and are rewritten to `D:d -> A:a`. Checksums are updated incrementally.
//!
//! The app sees its connection established by the kernel before netswitch dials; a dial that
//! fails resets the accepted socket, and the reset reaches the app through the NAT (its entry
//! lingers for that, see [`super::nat`]). When the connection ends its entry leaves.
//!
//! A connection whose original destination the DNS hijack takes (port 53 of the tunnel's DNS
//! address) is not dialed: it is served as DNS over TCP ([`super::dns_hijack`]).

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio::task::JoinSet;

use super::counters::{bump, Counters};
use super::decide::{Asker, TunFlow};
use super::device::Offload;
use super::nat::{self, NatTable};
use super::packet::Tcp;
use super::Io;
use crate::client::Inbound;
use crate::dial::Outbound;
use crate::manager::ConnectionManager;
use crate::metadata::{Destination, Metadata};
use crate::socket::stream::StreamSocket;
use crate::socket::ClientStream;
use crate::tracker::TransportProtocol;

/// How often lingering and pending NAT entries are looked at while there are any.
const SWEEP_EVERY: Duration = Duration::from_millis(500);
/// Pause after an accept error (e.g. out of file descriptors) before accepting again.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// The system stack of one address family.
#[derive(Debug)]
pub(crate) struct Family {
    /// The tunnel's own address, where the listener is.
    server: IpAddr,
    /// The address the NAT shows the kernel as the peer of every app connection.
    nat: IpAddr,
    /// The listener's port.
    port: u16,
    table: Mutex<NatTable>,
}

impl Family {
    /// Binds the listener on `server` (any free port) and returns it with its family state.
    pub fn listen(server: IpAddr, nat: IpAddr) -> std::io::Result<(Family, TcpListener)> {
        let address = SocketAddr::new(server, 0);
        let socket =
            socket2::Socket::new(socket2::Domain::for_address(address), socket2::Type::STREAM, None)?;
        // The address may still be tentative (IPv6 duplicate address detection) when the
        // tunnel starts: bind anyway, packets reach it once it is usable.
        #[cfg(any(target_os = "linux", target_os = "android"))]
        if server.is_ipv4() {
            socket.set_freebind_v4(true)?;
        } else {
            socket.set_freebind_v6(true)?;
        }
        socket.set_nonblocking(true)?;
        // Every accepted socket inherits it: not set again per connection.
        crate::socket::set_listener_nodelay(&socket)?;
        socket.bind(&address.into())?;
        socket.listen(1024)?;
        let listener = TcpListener::from_std(socket.into())?;
        let port = listener.local_addr()?.port();
        Ok((Family { server, nat, port, table: Mutex::default() }, listener))
    }

    /// The listener's address.
    pub fn listener(&self) -> SocketAddr {
        SocketAddr::new(self.server, self.port)
    }

    /// How many NAT entries the family holds.
    pub fn nat_entries(&self) -> usize {
        lock(&self.table).len()
    }

    /// Translates one TCP packet read from the device and writes it back (see the module docs),
    /// with its offload state (a super-packet stays one).
    pub fn translate(&self, packet: &mut [u8], tcp: &Tcp, offload: &Offload, io: &Io, sweeper: &Notify) {
        let packet = &mut packet[..tcp.len];
        let segment = nat::Segment::read(packet, tcp);
        let (source, destination) = if tcp.source == self.listener() {
            // The kernel's answer to NAT port n: back to the app, from the original destination.
            let flow = match tcp.destination.ip() == self.nat {
                true => lock(&self.table).inbound(tcp.destination.port(), &segment, Instant::now()),
                false => None,
            };
            let Some((app, original)) = flow else {
                bump(&io.counters.dropped_no_flow);
                return;
            };
            (original, app)
        } else {
            let now = Instant::now();
            let port = {
                let mut table = lock(&self.table);
                let port = table.outbound(tcp.source, tcp.destination, tcp.opens, now);
                if let Some(port) = port {
                    table.from_app(port, &segment, now);
                }
                port
            };
            let Some(port) = port else {
                bump(if tcp.opens { &io.counters.dropped_nat_full } else { &io.counters.dropped_no_flow });
                return;
            };
            if tcp.opens {
                sweeper.notify_one();
            }
            (SocketAddr::new(self.nat, port), self.listener())
        };
        if nat::rewrite_with(packet, tcp, source, destination, offload.partial_checksum()) {
            io.send_with(packet, offload);
        } else {
            bump(&io.counters.dropped_unsupported);
        }
    }

    /// The manager's connections that came through this family and are still open.
    pub fn connections(&self) -> Vec<crate::tracker::ConnectionId> {
        lock(&self.table).connections()
    }

    /// Removes NAT entries that are done; returns how many still wait to leave.
    fn sweep(&self, now: Instant) -> usize {
        lock(&self.table).sweep(now)
    }
}

/// What the accept loop looks at before it hands a connection to the manager: the DNS hijack
/// (answers DNS over TCP itself) and the decision hook (may block the connection).
pub(crate) struct AcceptHooks {
    /// The decision hook, when the tunnel has one.
    pub decider: Option<Arc<Asker>>,
    /// The DNS hijack (off unless configured).
    pub dns: Arc<super::dns_hijack::Hijack>,
}

/// Accepts the connections the NAT steers to `listener` and hands each to the manager with its
/// original destination — with a decision hook (`decider`), once it decided, or resets them when
/// it blocks them. Runs until aborted (which abandons the decisions under way).
pub(crate) async fn accept(
    family: Arc<Family>,
    listener: TcpListener,
    manager: Arc<ConnectionManager>,
    outbound: Arc<dyn Outbound>,
    counters: Arc<Counters>,
    sweeper: Arc<Notify>,
    hooks: AcceptHooks,
) {
    let AcceptHooks { decider, dns } = hooks;
    let mut deciding = JoinSet::new();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            Some(_) = deciding.join_next(), if !deciding.is_empty() => continue,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                tracing::warn!(listener = %family.listener(), %error, "TUN TCP listener: accept failed");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        let flow = match peer.ip() == family.nat {
            true => lock(&family.table).accept(peer.port()),
            false => None,
        };
        let Some((app, original)) = flow else {
            // Not a connection the NAT made (another local process reached the listener).
            tracing::debug!(listener = %family.listener(), %peer, "TUN TCP listener: stranger refused");
            drop(stream);
            continue;
        };
        if dns.serves_tcp(original) {
            // DNS over TCP to the tunnel's DNS address: answered here, not dialed.
            let (weak, sweeper, port) = (Arc::downgrade(&family), sweeper.clone(), peer.port());
            dns.serve_tcp(stream, move || {
                if let Some(family) = weak.upgrade() {
                    lock(&family.table).close(port, Instant::now());
                    sweeper.notify_one();
                }
            });
            continue;
        }
        let mut metadata = Metadata::new(Destination::from(original)).with_source(app);
        let port = peer.port();
        let Some(decider) = &decider else {
            hand_over(&family, &manager, &outbound, &counters, &sweeper, stream, port, metadata);
            continue;
        };
        let (family, manager, outbound, counters, sweeper, decider) = (
            family.clone(),
            manager.clone(),
            outbound.clone(),
            counters.clone(),
            sweeper.clone(),
            decider.clone(),
        );
        deciding.spawn(async move {
            let decided = decider.ask(TunFlow::new(TransportProtocol::Tcp, app, original)).await;
            if decided.blocks() {
                bump(&counters.tcp_blocked);
                StreamSocket::reset(&stream);
                drop(stream);
                lock(&family.table).close(port, Instant::now());
                sweeper.notify_one();
            } else {
                decided.apply(&mut metadata);
                hand_over(&family, &manager, &outbound, &counters, &sweeper, stream, port, metadata);
            }
        });
    }
}

/// Hands the accepted connection of NAT port `port` to the manager.
#[allow(clippy::too_many_arguments)]
fn hand_over(
    family: &Arc<Family>,
    manager: &ConnectionManager,
    outbound: &Arc<dyn Outbound>,
    counters: &Counters,
    sweeper: &Arc<Notify>,
    stream: TcpStream,
    port: u16,
    metadata: Metadata,
) {
    bump(&counters.tcp_connections);
    let (weak, sweeper) = (Arc::downgrade(family), sweeper.clone());
    let client = ClientStream::accepted_with_nodelay(stream);
    let id = manager.new_connection(Inbound::plain(client), metadata, outbound.clone(), move |_| {
        if let Some(family) = weak.upgrade() {
            lock(&family.table).close(port, Instant::now());
            sweeper.notify_one();
        }
    });
    // (A connection that already ended left its entry closed: then this does nothing.)
    lock(&family.table).set_connection(port, id);
}

/// Removes lingering and never-accepted NAT entries: wakes every [`SWEEP_EVERY`] while there
/// are any, and sleeps on `wake` otherwise (no timer while every entry is open). Runs until
/// aborted.
pub(crate) async fn sweep(families: Vec<Arc<Family>>, wake: Arc<Notify>) {
    loop {
        let now = Instant::now();
        let waiting: usize = families.iter().map(|family| family.sweep(now)).sum();
        if waiting > 0 {
            tokio::time::sleep(SWEEP_EVERY).await;
        } else {
            wake.notified().await;
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
