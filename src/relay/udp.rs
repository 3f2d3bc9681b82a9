//! The life of one UDP session: choose its idle timeout from the first datagram, open the remote
//! socket through the outbound (connected or unconnected), translate addresses (NAT), relay
//! datagrams both ways until the session is idle for its timeout, fails hard, or is closed.
//!
//! Guarantees:
//! - the idle timeout is exact: one timer per session, re-armed lazily to `last activity +
//!   timeout` when it fires after traffic (in either direction), so an idle session ends on time
//!   and a busy one costs no timer work per datagram;
//! - a transient send error (ENOBUFS, EAGAIN, EHOSTUNREACH, ENETUNREACH, ECONNREFUSED from an
//!   earlier ICMP error, EMSGSIZE) drops that datagram, is counted in the tracker's `drops` and
//!   logged at debug; the session goes on. Only successful traffic refreshes the timeout, so a
//!   destination that stays unreachable ends with the timeout;
//! - any other I/O error ends the session with that (root-cause) error;
//! - a datagram to a domain the session has not resolved waits for its lookup outside the relay
//!   loop ([`super::udp_lookups`]): replies to other destinations keep flowing meanwhile;
//! - the client's queued datagrams are sent in order, several per system call
//!   (`relay::send_batch`, up to its `BATCH`).

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::nat::Nat;
use super::recv_batch::Batch;
use super::send_batch;
use super::udp_lookups::{pick_for_socket, Route, UdpLookups};
use super::{ConnectionError, Side};
use crate::client::{Datagram, PacketInbound, PacketSink};
use crate::dial::{DialError, DialedUdp, Outbound};
use crate::metadata::{Destination, Host, Metadata};
use crate::tracker::Entry;

/// How many datagrams one readiness event of the remote socket relays before the session looks
/// at its other work again (fairness between directions).
const DOWNLINK_BATCH: usize = 32;

/// Runs one UDP session to its end and returns the root-cause error, if any. `Ok` means the
/// client side went away (every sender of the uplink dropped).
pub(crate) async fn run(
    entry: &Entry,
    inbound: PacketInbound,
    outbound: Arc<dyn Outbound>,
) -> Result<(), ConnectionError> {
    tokio::select! {
        biased;
        _ = entry.close_requested() => Err(ConnectionError::Closed),
        result = run_session(entry, inbound, outbound) => result,
    }
}

async fn run_session(
    entry: &Entry,
    inbound: PacketInbound,
    outbound: Arc<dyn Outbound>,
) -> Result<(), ConnectionError> {
    let PacketInbound { mut uplink, downlink, timeouts } = inbound;
    let metadata = &entry.metadata;
    let per_connection = metadata.options.udp_timeout.filter(|t| !t.is_zero());
    let first_wait = per_connection.unwrap_or(timeouts.default);
    let first = match tokio::time::timeout(first_wait, uplink.recv()).await {
        Err(_) => return Err(ConnectionError::UdpIdle(first_wait)),
        Ok(None) => return Ok(()),
        Ok(Some(first)) => first,
    };
    let (idle, reason) = timeouts.choose(per_connection, &first.payload, metadata.destination.port);
    entry.set_udp_timeout(idle);
    let dialed = outbound.open_udp(&metadata.dial_target()).await?;
    entry.set_egress(dialed.egress.clone().with_local_address(dialed.socket.local_addr().ok()));
    let DialedUdp { socket, connected_to, resolved, resolver, .. } = dialed;
    let resolver = resolver.unwrap_or_else(system_resolver);
    let nat = translation(metadata, connected_to, resolved, &resolver, &socket).await?;
    tracing::debug!(
        id = entry.id, destination = %metadata.destination, via = %entry.egress().unwrap_or_default(),
        connected = ?connected_to, timeout_ms = idle.as_millis() as u64, reason = ?reason,
        "UDP session open"
    );
    let local = socket.local_addr().map_err(|source| ConnectionError::Io {
        side: Side::Remote,
        operation: "local address",
        source,
    })?;
    let lookup_timeout =
        metadata.options.connect_timeout.unwrap_or(crate::dial::direct::DEFAULT_CONNECT_TIMEOUT);
    let mut session = Session {
        entry,
        socket,
        connected: connected_to.is_some(),
        nat,
        lookups: UdpLookups::new(resolver, local, lookup_timeout),
        downlink,
        last_activity: Instant::now(),
        pending: Vec::new(),
    };
    session.send_up(first).await?;
    session.relay(&mut uplink, idle).await
}

/// The resolver of a session whose outbound gave none: the system resolver.
fn system_resolver() -> Arc<dyn crate::dns::Resolve> {
    Arc::new(crate::dns::system::SystemRoute(crate::dns::SystemResolver::shared().clone()))
}

/// The NAT table of a session: the destination domain mapped to the address the socket uses
/// (`resolved` by the outbound, else resolved now with `resolver`, before the relay loop).
async fn translation(
    metadata: &Metadata,
    connected_to: Option<SocketAddr>,
    resolved: Option<SocketAddr>,
    resolver: &Arc<dyn crate::dns::Resolve>,
    socket: &UdpSocket,
) -> Result<Nat, DialError> {
    let mut nat = Nat::new();
    if let Some(real) = metadata.options.override_destination {
        nat.map_exact(metadata.destination.clone(), real);
        return Ok(nat);
    }
    let disable = metadata.options.udp_disable_domain_unmapping;
    let destination = &metadata.destination;
    match (connected_to, &destination.host) {
        (Some(peer), host) => nat.map_address(host.clone(), peer.ip(), disable),
        (None, Host::Domain(name)) => {
            let candidates = match resolved {
                Some(address) => vec![address.ip()],
                None if !metadata.resolved_addresses.is_empty() => metadata.resolved_addresses.clone(),
                None => {
                    let families = [crate::dns::Family::V6, crate::dns::Family::V4];
                    let timeout = metadata
                        .options
                        .connect_timeout
                        .unwrap_or(crate::dial::direct::DEFAULT_CONNECT_TIMEOUT);
                    let lookup = resolver.lookup(name, &families, crate::deadline::from_now(timeout));
                    let answer = lookup.all().await.map_err(|source| DialError::Resolve {
                        host: name.clone(),
                        source: Box::new(source),
                    })?;
                    answer.addresses
                }
            };
            let socket_is_v6 = socket.local_addr().is_ok_and(|a| a.is_ipv6());
            let ip = pick_for_socket(&candidates, socket_is_v6)
                .ok_or_else(|| DialError::NoAddress { host: name.clone() })?;
            nat.map_address(destination.host.clone(), ip, disable);
        }
        (None, Host::Ip(_)) => {}
    }
    Ok(nat)
}

/// True for send/receive errors that concern one datagram, not the socket.
pub fn is_transient(error: &io::Error) -> bool {
    use nix::libc;
    error.kind() == io::ErrorKind::WouldBlock
        || matches!(
            error.raw_os_error(),
            Some(
                libc::ENOBUFS
                    | libc::EAGAIN
                    | libc::EHOSTUNREACH
                    | libc::ENETUNREACH
                    | libc::ECONNREFUSED
                    | libc::EMSGSIZE
            )
        )
}

struct Session<'e> {
    entry: &'e Entry,
    socket: UdpSocket,
    connected: bool,
    nat: Nat,
    lookups: UdpLookups,
    downlink: Arc<dyn PacketSink>,
    last_activity: Instant,
    /// Client datagrams with their target (`None`: the connected peer) waiting for one send call.
    pending: Vec<(Datagram, Option<SocketAddr>)>,
}

impl Session<'_> {
    /// Relays both ways until the client side is gone, the session idles for `idle`, or a hard
    /// error. One timer, re-armed only when it fires.
    async fn relay(
        &mut self,
        uplink: &mut mpsc::Receiver<Datagram>,
        idle: Duration,
    ) -> Result<(), ConnectionError> {
        let sleep = tokio::time::sleep_until(crate::deadline::after(self.last_activity, idle));
        tokio::pin!(sleep);
        loop {
            tokio::select! {
                () = &mut sleep => {
                    let deadline = crate::deadline::after(self.last_activity, idle);
                    if deadline <= Instant::now() {
                        return Err(ConnectionError::UdpIdle(idle));
                    }
                    sleep.as_mut().reset(deadline);
                }
                datagram = uplink.recv() => match datagram {
                    Some(datagram) => self.send_up_queued(datagram, uplink).await?,
                    None => return Ok(()),
                },
                ready = self.socket.readable() => {
                    ready.map_err(|source| ConnectionError::Io { side: Side::Remote, operation: "read", source })?;
                    self.relay_down().await?;
                }
                routes = self.lookups.next_done(), if self.lookups.is_running() => {
                    for route in routes {
                        self.send_routed(route).await?;
                    }
                }
            }
        }
    }

    /// Sends one client datagram to its destination (the connected peer in connected mode); a
    /// datagram to a domain not resolved yet waits for its lookup (see [`UdpLookups`]).
    async fn send_up(&mut self, datagram: Datagram) -> Result<(), ConnectionError> {
        if self.connected {
            return self.send_to(datagram, None).await;
        }
        if let Some(address) = self.nat.outgoing(&datagram.destination) {
            return self.send_to(datagram, Some(address)).await;
        }
        let route = match &datagram.destination.host {
            Host::Domain(name) => {
                let name = name.clone();
                self.lookups.route(&name, datagram)
            }
            Host::Ip(_) => Route::Drop(datagram, "no address for the destination"),
        };
        self.send_routed(route).await
    }

    /// Sends `first` and what else the client queued (up to [`send_batch::BATCH`] in all), in
    /// order: datagrams whose target is known go out several per system call; one that needs
    /// a lookup goes through [`Session::send_up`] after those before it.
    async fn send_up_queued(
        &mut self,
        first: Datagram,
        uplink: &mut mpsc::Receiver<Datagram>,
    ) -> Result<(), ConnectionError> {
        let mut next = Some(first);
        let mut taken = 0;
        while let Some(datagram) = next.take() {
            taken += 1;
            let target =
                if self.connected { Some(None) } else { self.nat.outgoing(&datagram.destination).map(Some) };
            match target {
                Some(target) => self.pending.push((datagram, target)),
                None => {
                    self.flush().await?;
                    self.send_up(datagram).await?;
                }
            }
            if taken < send_batch::BATCH {
                next = uplink.try_recv().ok();
            }
        }
        self.flush().await
    }

    /// Sends every pending datagram, in order (see [`Session::send_to`] for the errors).
    async fn flush(&mut self) -> Result<(), ConnectionError> {
        let mut sent = 0;
        while sent < self.pending.len() {
            match send_batch::try_send_batch(&self.socket, &self.pending[sent..]) {
                Ok(count) => {
                    let bytes: usize =
                        self.pending[sent..sent + count].iter().map(|(d, _)| d.payload.len()).sum();
                    self.entry.packets_up.fetch_add(count as u64, Ordering::Relaxed);
                    self.entry.bytes_up.fetch_add(bytes as u64, Ordering::Relaxed);
                    self.last_activity = Instant::now();
                    sent += count;
                }
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
                    if let Err(source) = self.socket.writable().await {
                        self.pending.clear();
                        return Err(ConnectionError::Io { side: Side::Remote, operation: "write", source });
                    }
                }
                Err(error) if is_transient(&error) => {
                    let destination = self.pending[sent].0.destination.clone();
                    self.drop_datagram("send to destination failed", &destination, Some(&error));
                    sent += 1;
                }
                Err(source) => {
                    self.pending.clear();
                    return Err(ConnectionError::Io { side: Side::Remote, operation: "write", source });
                }
            }
        }
        self.pending.clear();
        Ok(())
    }

    async fn send_routed(&mut self, route: Route) -> Result<(), ConnectionError> {
        match route {
            Route::Send(datagram, address) => self.send_to(datagram, Some(address)).await,
            Route::Drop(datagram, why) => {
                self.drop_datagram(why, &datagram.destination, None);
                Ok(())
            }
            Route::Waiting => Ok(()),
        }
    }

    /// Sends `datagram` to `target` (`None`: the connected peer).
    async fn send_to(
        &mut self,
        datagram: Datagram,
        target: Option<SocketAddr>,
    ) -> Result<(), ConnectionError> {
        let Datagram { destination, payload } = datagram;
        let sent = match target {
            None => self.socket.send(&payload).await,
            Some(target) => self.socket.send_to(&payload, target).await,
        };
        match sent {
            Ok(_) => {
                self.entry.packets_up.fetch_add(1, Ordering::Relaxed);
                self.entry.bytes_up.fetch_add(payload.len() as u64, Ordering::Relaxed);
                self.last_activity = Instant::now();
                Ok(())
            }
            Err(error) if is_transient(&error) => {
                self.drop_datagram("send to destination failed", &destination, Some(&error));
                Ok(())
            }
            Err(source) => Err(ConnectionError::Io { side: Side::Remote, operation: "write", source }),
        }
    }

    /// Relays the replies waiting on the remote socket (at most [`DOWNLINK_BATCH`]) to the
    /// client, several received per system call into a borrowed batch buffer.
    async fn relay_down(&mut self) -> Result<(), ConnectionError> {
        let mut batch = Batch::take();
        let mut seen = 0;
        while seen < DOWNLINK_BATCH {
            let count = match batch.receive(&self.socket) {
                Ok(count) => count,
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(error) if is_transient(&error) => {
                    tracing::debug!(id = self.entry.id, %error, "UDP receive error from the destination ignored");
                    seen += 1;
                    continue;
                }
                Err(source) => {
                    return Err(ConnectionError::Io { side: Side::Remote, operation: "read", source })
                }
            };
            seen += count;
            self.last_activity = Instant::now();
            for index in 0..count {
                if let (payload, Some(source)) = batch.get(index) {
                    self.send_down(payload, source).await?;
                }
            }
        }
        Ok(())
    }

    /// Sends one reply from `source` to the client, shown through the NAT.
    async fn send_down(&mut self, payload: &[u8], source: SocketAddr) -> Result<(), ConnectionError> {
        let shown = self.nat.incoming(source);
        let sent = match self.downlink.try_send_to_client(payload, &shown) {
            Some(sent) => sent,
            None => self.downlink.send_to_client(payload, &shown).await,
        };
        match sent {
            Ok(()) => {
                self.entry.packets_down.fetch_add(1, Ordering::Relaxed);
                self.entry.bytes_down.fetch_add(payload.len() as u64, Ordering::Relaxed);
            }
            Err(error) if is_transient(&error) => {
                self.drop_datagram("send to client failed", &shown, Some(&error));
            }
            Err(source) => {
                return Err(ConnectionError::Io { side: Side::Client, operation: "write", source })
            }
        }
        Ok(())
    }

    fn drop_datagram(&self, what: &str, peer: &Destination, error: Option<&io::Error>) {
        let drops = self.entry.drops.fetch_add(1, Ordering::Relaxed) + 1;
        tracing::debug!(
            id = self.entry.id, %peer, error = error.map(tracing::field::display), drops,
            "UDP datagram dropped: {what}"
        );
    }
}
