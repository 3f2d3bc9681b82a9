//! SOCKS5 UDP ASSOCIATE (RFC 1928 §7): the association (its datagrams' header is
//! [`crate::socks5::parse_udp_header`]).
//!
//! An association binds one relay UDP socket on the address the client reached the server on (in
//! IPv4 form for an IPv4 client of a dual-stack listener) and replies with it. It lives exactly as long as its TCP control connection: when the client
//! closes it (or it fails), every session of the association is closed and the socket with them.
//! When the manager shuts down, the association ends too and closes the control connection, so
//! the client learns it can relay nothing more. Closing sessions (the manager's `close`, a
//! network change) does not end it: the client's next datagram opens a new session.
//!
//! The client's UDP address is learned from the first datagram whose source matches what the
//! client announced in its request (the IP when not unspecified, the port when not 0) — else the
//! control connection's peer IP. From then on only that exact address is served. Each datagram
//! goes to a session of the association's [`UdpSessionTable`] (one per destination); replies carry
//! the source the client addressed (the domain, when it named one). A session's outbound socket
//! is unconnected unless `udp_connect`: datagrams to it from any other host reach the client too,
//! shown with that host's own address (endpoint-independent filtering), and count as traffic for
//! the session's idle timeout.
//!
//! With users configured, a request announcing port 0 is refused (reply 0x02, as RFC 1928 §7
//! allows): the announced port is the only thing that ties the datagrams to the authenticated
//! control connection, and without it any local process that sends first from the client's IP
//! would take the association over. The client must bind its UDP socket before asking and
//! announce its port (the IP may stay unspecified: the control connection's peer IP is used).
//!
//! Resources: an idle association holds its relay socket, its control connection and a few
//! hundred bytes of state, but no receive buffer: it waits for the relay socket to be readable
//! and borrows a batch buffer (see `relay::recv_batch`) only while it reads a batch of datagrams. A server
//! keeps at most [`UdpSettings::max_associations`](crate::inbound::udp_sessions::UdpSettings::max_associations) associations (the next request gets reply
//! 0x01) and at most [`UdpSettings::max_sockets`](crate::inbound::udp_sessions::UdpSettings::max_sockets) sessions across all of them (a datagram that
//! needs one more is dropped); both refusals are counted in [`UdpLimits`](crate::inbound::udp_sessions::UdpLimits) and warned about at
//! most once per 10 s.
//!
//! | Input | Effect |
//! |---|---|
//! | a datagram from any other address than the client's | dropped, counted |
//! | a datagram to a new destination with the socket budget spent | dropped, counted as refused |
//! | FRAG != 0 (fragments are not supported) | dropped, counted |
//! | a header cut short, an unknown address type, an empty or non-UTF-8 domain, port 0 | dropped, counted |
//! | bytes on the control connection | ignored |

use std::io::{self, IoSlice};
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;
use std::sync::{Arc, Mutex, PoisonError};

use nix::sys::socket::{sendmsg, MsgFlags, SockaddrStorage};
use tokio::io::Interest;
use tokio::net::{TcpStream, UdpSocket};

use super::context::Context;
use crate::client::{Datagram, PacketSink};
use crate::dial::{BoxFuture, UDP_RECV_BUFFER};
use crate::inbound::udp_sessions::{Dispatched, UdpSessionTable};
use crate::metadata::{Destination, Host, Metadata};
use crate::relay::recv_batch::Batch;
use crate::socks5::{self, ReplyCode, UdpHeaderError};

/// Largest datagram the relay socket receives (the UDP maximum).
const MAX_DATAGRAM: usize = 65_535;
// Each slot of the batch buffer client datagrams are read into holds the largest one.
const _: () = assert!(crate::relay::recv_batch::SLOT >= MAX_DATAGRAM);
/// How many client datagrams one readiness event of the relay socket reads before the
/// association looks at its control connection again.
const RECEIVE_BATCH: usize = 32;

/// Sends replies to the associated client through the relay socket, with the SOCKS UDP header.
/// No allocation per reply: the header and the payload go out in one `sendmsg` from two slices,
/// and the header is re-encoded only when the shown source changes (one session usually shows
/// one source).
struct SocksSink {
    socket: Arc<UdpSocket>,
    client: SockaddrStorage,
    /// The header last written and the source it shows.
    header: Mutex<(Option<Destination>, Vec<u8>)>,
}

impl SocksSink {
    fn new(socket: Arc<UdpSocket>, client: SocketAddr) -> SocksSink {
        SocksSink { socket, client: SockaddrStorage::from(client), header: Mutex::new((None, Vec::new())) }
    }

    /// One `sendmsg` of header and payload if the socket takes it now; `WouldBlock` otherwise.
    fn send_now(&self, payload: &[u8], source: &Destination) -> io::Result<()> {
        let mut header = self.header.lock().unwrap_or_else(PoisonError::into_inner);
        let (shown, bytes) = &mut *header;
        if shown.as_ref() != Some(source) {
            *shown = None;
            bytes.clear();
            socks5::encode_udp_header(source, bytes)
                .map_err(|error| io::Error::new(io::ErrorKind::InvalidInput, error))?;
            *shown = Some(source.clone());
        }
        let slices = [IoSlice::new(bytes), IoSlice::new(payload)];
        self.socket
            .try_io(Interest::WRITABLE, || {
                sendmsg(self.socket.as_raw_fd(), &slices, &[], MsgFlags::empty(), Some(&self.client))
                    .map_err(io::Error::from)
            })
            .map(|_| ())
    }
}

impl PacketSink for SocksSink {
    fn try_send_to_client(&self, payload: &[u8], source: &Destination) -> Option<io::Result<()>> {
        match self.send_now(payload, source) {
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => None,
            result => Some(result),
        }
    }

    fn send_to_client<'a>(
        &'a self,
        payload: &'a [u8],
        source: &'a Destination,
    ) -> BoxFuture<'a, io::Result<()>> {
        Box::pin(async move {
            loop {
                self.socket.writable().await?;
                match self.send_now(payload, source) {
                    Err(error) if error.kind() == io::ErrorKind::WouldBlock => {}
                    result => return result,
                }
            }
        })
    }
}

/// Drops counted by one association (logged when it ends).
#[derive(Debug, Default)]
struct Counters {
    relayed: u64,
    strangers: u64,
    fragments: u64,
    malformed: u64,
    refused: u64,
}

/// Serves one UDP ASSOCIATE request until its control connection closes.
pub(super) async fn associate(
    mut control: TcpStream,
    peer: SocketAddr,
    announced: Destination,
    context: Arc<Context>,
) {
    if !context.users.is_empty() && announced.port == 0 {
        // With port 0, the first datagram from any port of the client's IP would claim the
        // association: under authentication the client must say which port it sends from.
        tracing::info!(
            client = %peer,
            "SOCKS UDP ASSOCIATE refused: with authentication on, the request must announce the client's UDP port (it announced port 0)"
        );
        refuse(&mut control, ReplyCode::NotAllowed).await;
        return;
    }
    let Some(permit) = context.udp_limits.associations.try_acquire() else {
        tracing::debug!(client = %peer, "SOCKS UDP ASSOCIATE refused: association limit reached");
        refuse(&mut control, ReplyCode::GeneralFailure).await;
        return;
    };
    // An IPv4 client of a dual-stack listener reached it at ::ffff:a.b.c.d: its relay socket is
    // an IPv4 one on a.b.c.d, an address the client can send to (and is told in IPv4 form).
    let bind_ip = match control.local_addr() {
        Ok(local) => local.ip().to_canonical(),
        Err(error) => {
            tracing::debug!(client = %peer, %error, "SOCKS UDP ASSOCIATE: control connection already gone");
            return;
        }
    };
    let socket = match bind_relay_socket(SocketAddr::new(bind_ip, 0)).and_then(|s| Ok((s.local_addr()?, s))) {
        Ok((bound, socket)) => {
            if let Err(error) = reply(&control, ReplyCode::Succeeded, bound).await {
                tracing::debug!(client = %peer, %error, "SOCKS UDP ASSOCIATE: could not send the reply");
                return;
            }
            tracing::debug!(client = %peer, relay = %bound, announced = %announced, "SOCKS UDP association open");
            Arc::new(socket)
        }
        Err(error) => {
            tracing::warn!(client = %peer, address = %bind_ip, %error, "SOCKS UDP ASSOCIATE: bind relay socket failed");
            refuse(&mut control, ReplyCode::GeneralFailure).await;
            return;
        }
    };
    let table = UdpSessionTable::new(context.manager.clone(), context.outbound.clone(), context.udp.clone())
        .with_socket_budget(context.udp_limits.sockets.clone());
    let mut association = Association::new(peer, &announced, &socket, &table);
    let end = tokio::select! {
        end = association.relay(control) => end,
        () = context.manager.wait_shut_down() => "the manager shut down".to_string(),
    };
    let sessions = table.close_all();
    let counters = association.counters;
    tracing::debug!(
        client = %peer, end = %end, sessions, relayed = counters.relayed, strangers = counters.strangers,
        fragments = counters.fragments, malformed = counters.malformed, refused = counters.refused,
        overflow = table.overflow_drops(), "SOCKS UDP association closed"
    );
    drop(permit);
}

/// Sends a failure reply and closes the control connection without losing the reply
/// (the drain is bounded by the server's own drain limits.)
async fn refuse(control: &mut TcpStream, code: ReplyCode) {
    if reply(control, code, socks5::UNSPECIFIED_BOUND).await.is_ok() {
        crate::socket::io::close_gracefully(control).await;
    }
}

/// The state of one open association: who its client is and where its datagrams go.
struct Association<'a> {
    peer: SocketAddr,
    /// The source IP client datagrams must come from: the announced one, or the control
    /// connection's peer when the announced one is unspecified.
    expected_ip: IpAddr,
    /// The source port client datagrams must come from; 0 = any (never with authentication).
    expected_port: u16,
    /// The client's address, learned from its first datagram.
    client: Option<SocketAddr>,
    socket: &'a Arc<UdpSocket>,
    table: &'a UdpSessionTable,
    counters: Counters,
}

impl<'a> Association<'a> {
    fn new(
        peer: SocketAddr,
        announced: &Destination,
        socket: &'a Arc<UdpSocket>,
        table: &'a UdpSessionTable,
    ) -> Self {
        let expected_ip = match announced.host {
            Host::Ip(ip) if !ip.is_unspecified() => ip.to_canonical(),
            _ => peer.ip().to_canonical(),
        };
        Association {
            peer,
            expected_ip,
            expected_port: announced.port,
            client: None,
            socket,
            table,
            counters: Counters::default(),
        }
    }

    /// Relays client datagrams into sessions until the control connection ends; returns why it
    /// ended. Holds no buffer while idle: a batch buffer is borrowed only while
    /// datagrams are read.
    async fn relay(&mut self, control: TcpStream) -> String {
        loop {
            tokio::select! {
                ready = control.readable() => {
                    if let Err(error) = ready {
                        return format!("control connection failed: {error}");
                    }
                    let mut ignored = [0u8; 64];
                    match control.try_read(&mut ignored) {
                        Ok(0) => return "control connection closed".to_string(),
                        Ok(_) => {}
                        Err(error) if error.kind() == io::ErrorKind::WouldBlock => {}
                        Err(error) => return format!("control connection failed: {error}"),
                    }
                }
                ready = self.socket.readable() => {
                    if let Err(error) = ready.and_then(|()| self.receive_batch()) {
                        return format!("relay socket failed: {error}");
                    }
                }
            }
        }
    }

    /// Reads the datagrams waiting on the relay socket (at most [`RECEIVE_BATCH`]), several per
    /// system call, into a borrowed batch buffer.
    fn receive_batch(&mut self) -> io::Result<()> {
        let mut batch = Batch::take();
        let mut seen = 0;
        while seen < RECEIVE_BATCH {
            match batch.receive(self.socket) {
                Ok(count) => {
                    seen += count;
                    for index in 0..count {
                        if let (datagram, Some(source)) = batch.get(index) {
                            self.handle(datagram, source);
                        }
                    }
                }
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => break,
                Err(error) if crate::relay::udp::is_transient(&error) => seen += 1,
                Err(error) => return Err(error),
            }
        }
        Ok(())
    }

    /// Checks one datagram's source and header and dispatches it to its session.
    fn handle(&mut self, datagram: &[u8], source: SocketAddr) {
        let source = SocketAddr::new(source.ip().to_canonical(), source.port());
        let is_client = match self.client {
            Some(client) => client == source,
            None => {
                source.ip() == self.expected_ip
                    && (self.expected_port == 0 || source.port() == self.expected_port)
            }
        };
        if !is_client {
            self.counters.strangers += 1;
            tracing::debug!(client = %self.peer, stranger = %source, "SOCKS UDP datagram from a stranger dropped");
            return;
        }
        let client = *self.client.get_or_insert(source);
        let (destination, data_at) = match socks5::parse_udp_header(datagram) {
            Ok(parsed) => parsed,
            Err(error) => {
                match error {
                    UdpHeaderError::Fragment(_) => self.counters.fragments += 1,
                    _ => self.counters.malformed += 1,
                }
                tracing::debug!(client = %client, %error, "SOCKS UDP datagram dropped");
                return;
            }
        };
        let datagram = Datagram { destination, payload: datagram[data_at..].to_vec() };
        let socket = self.socket;
        let dispatched = self.table.dispatch(
            client,
            datagram,
            |d| Metadata::new(d.clone()),
            || Arc::new(SocksSink::new(socket.clone(), client)),
        );
        match dispatched {
            Dispatched::Refused => self.counters.refused += 1,
            Dispatched::Queued { .. } | Dispatched::Dropped { .. } => self.counters.relayed += 1,
        }
    }
}

async fn reply(control: &TcpStream, code: ReplyCode, bound: SocketAddr) -> io::Result<()> {
    crate::socket::io::write_all(control, &socks5::encode_reply(code, bound)).await
}

/// The association's relay socket on `address`, asking for a receive buffer of
/// [`UDP_RECV_BUFFER`] (as outbound UDP sockets do) so that a client's burst waits in the kernel
/// while the association's task waits for a CPU, instead of being dropped at the usual 208 KiB.
/// Best effort: the kernel caps it at `net.core.rmem_max`.
fn bind_relay_socket(address: SocketAddr) -> io::Result<UdpSocket> {
    let socket = socket2::Socket::new(socket2::Domain::for_address(address), socket2::Type::DGRAM, None)?;
    socket.set_nonblocking(true)?;
    if let Err(error) = socket.set_recv_buffer_size(UDP_RECV_BUFFER) {
        tracing::debug!(%address, %error, "SOCKS UDP relay socket receive buffer not raised");
    }
    socket.bind(&address.into())?;
    UdpSocket::from_std(socket.into())
}
