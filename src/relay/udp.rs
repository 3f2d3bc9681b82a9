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
//! - any other I/O error ends the session with that (root-cause) error.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::nat::Nat;
use super::recv_batch::Batch;
use super::{ConnectionError, Side};
use crate::client::{Datagram, PacketInbound, PacketSink};
use crate::dial::{DialError, DialedUdp, Outbound};
use crate::metadata::{Destination, Host, Metadata};
use crate::tracker::Entry;

/// How many datagrams one readiness event of the remote socket relays before the session looks
/// at its other work again (fairness between directions).
const DOWNLINK_BATCH: usize = 32;
/// How many per-datagram domain resolutions a session remembers.
const RESOLVED_CACHE: usize = 64;

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
    let DialedUdp { socket, connected_to, .. } = dialed;
    let nat = translation(metadata, connected_to, &socket).await?;
    tracing::debug!(
        id = entry.id, destination = %metadata.destination, via = %entry.egress().unwrap_or_default(),
        connected = ?connected_to, timeout_ms = idle.as_millis() as u64, reason = ?reason,
        "UDP session open"
    );
    let mut session = Session {
        entry,
        socket,
        connected: connected_to.is_some(),
        nat,
        resolved: HashMap::new(),
        downlink,
        last_activity: Instant::now(),
    };
    session.send_up(first).await?;
    session.relay(&mut uplink, idle).await
}

/// The NAT table of a session: the destination domain mapped to the address the socket uses.
async fn translation(
    metadata: &Metadata,
    connected_to: Option<SocketAddr>,
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
            let candidates = resolve(name, destination.port, &metadata.resolved_addresses).await?;
            let ip = pick_family(&candidates, socket)
                .ok_or_else(|| DialError::NoAddress { host: name.clone() })?;
            nat.map_address(destination.host.clone(), ip, disable);
        }
        (None, Host::Ip(_)) => {}
    }
    Ok(nat)
}

/// The pre-resolved addresses, or what the system resolver answers for `name`.
async fn resolve(name: &str, port: u16, preresolved: &[IpAddr]) -> Result<Vec<IpAddr>, DialError> {
    if !preresolved.is_empty() {
        return Ok(preresolved.to_vec());
    }
    let found = tokio::net::lookup_host((name, port))
        .await
        .map_err(|source| DialError::Resolve { host: name.to_string(), source })?;
    Ok(found.map(|a| a.ip()).collect())
}

/// The first candidate the socket can send to: same family, or IPv4 mapped on an IPv6 socket.
fn pick_family(candidates: &[IpAddr], socket: &UdpSocket) -> Option<IpAddr> {
    let local = socket.local_addr().ok()?;
    let same = candidates.iter().find(|ip| ip.is_ipv4() == local.is_ipv4()).copied();
    same.or_else(|| match (local.ip(), candidates.first()) {
        (IpAddr::V6(_), Some(IpAddr::V4(v4))) => Some(IpAddr::V6(v4.to_ipv6_mapped())),
        _ => None,
    })
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
    resolved: HashMap<String, Option<IpAddr>>,
    downlink: Arc<dyn PacketSink>,
    last_activity: Instant,
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
                    Some(datagram) => self.send_up(datagram).await?,
                    None => return Ok(()),
                },
                ready = self.socket.readable() => {
                    ready.map_err(|source| ConnectionError::Io { side: Side::Remote, operation: "read", source })?;
                    self.relay_down().await?;
                }
            }
        }
    }

    /// Sends one client datagram to its destination (the connected peer in connected mode).
    async fn send_up(&mut self, datagram: Datagram) -> Result<(), ConnectionError> {
        let Datagram { destination, payload } = datagram;
        let sent = if self.connected {
            self.socket.send(&payload).await
        } else {
            match self.target(&destination).await {
                Some(target) => self.socket.send_to(&payload, target).await,
                None => {
                    self.drop_datagram("no address for the destination", &destination, None);
                    return Ok(());
                }
            }
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

    /// The address a datagram for `destination` is sent to: through the NAT, else resolved (and
    /// remembered) for a domain the session has not seen.
    async fn target(&mut self, destination: &Destination) -> Option<SocketAddr> {
        if let Some(address) = self.nat.outgoing(destination) {
            return Some(address);
        }
        let Host::Domain(name) = &destination.host else { return None };
        if let Some(known) = self.resolved.get(name) {
            return known.map(|ip| SocketAddr::new(ip, destination.port));
        }
        let ip = match resolve(name, destination.port, &[]).await {
            Ok(candidates) => pick_family(&candidates, &self.socket),
            Err(error) => {
                tracing::debug!(id = self.entry.id, %error, "UDP datagram destination not resolved");
                None
            }
        };
        if self.resolved.len() >= RESOLVED_CACHE {
            self.resolved.clear();
        }
        self.resolved.insert(name.clone(), ip);
        ip.map(|ip| SocketAddr::new(ip, destination.port))
    }

    fn drop_datagram(&self, what: &str, peer: &Destination, error: Option<&io::Error>) {
        let drops = self.entry.drops.fetch_add(1, Ordering::Relaxed) + 1;
        tracing::debug!(
            id = self.entry.id, %peer, error = error.map(tracing::field::display), drops,
            "UDP datagram dropped: {what}"
        );
    }
}
