//! One app connection terminated in user space: a smoltcp interface with a single TCP socket,
//! behind a mutex, and the task that runs its timers.
//!
//! Each connection has its own interface (its address is the app's destination), so that polling
//! one connection costs the same whatever the number of connections: smoltcp's poll walks every
//! socket of its set, and here a set holds one. The interface is polled where something happens:
//! a packet from the app ([`Connection::input`]), a read or write of the relay
//! ([`super::stream`]), and by the [`drive`] task when smoltcp asks for a timer (retransmission,
//! delayed ACK, zero-window probe, releasing idle rings). Outgoing packets go straight to the
//! tunnel.
//!
//! The socket's rings live in [`Rings`]: once the connection has been idle for
//! [`IDLE_RELEASE`] with both rings empty, the driver gives their pages back, so an idle
//! connection costs no ring memory (see `rings.rs`).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::Duration;

use smoltcp::iface::{Config, Interface, SocketHandle, SocketSet};
use smoltcp::socket::tcp;
use smoltcp::time::Instant;
use smoltcp::wire::{HardwareAddress, IpAddress, IpCidr, IpListenEndpoint};
use tokio::sync::Notify;

use super::link::{Link, PacketSink};
use super::reorder::Reordering;
use super::rings::Rings;

/// Bytes buffered per connection from the app (the receive window the app sees).
pub const RECEIVE_BUFFER: usize = 64 * 1024;
/// Bytes buffered per connection towards the app (sent and not yet acknowledged, or not sent).
pub const SEND_BUFFER: usize = 64 * 1024;
/// [`RECEIVE_BUFFER`] and [`SEND_BUFFER`] on an offloading device, where one segment may be
/// 64 KiB: room for 16 in flight each way (256 KiB held one download stream to ~8 Gbit/s, 1 MiB
/// reached 11-13 on the development machine; 4 MiB did no better). Linux only: the iOS and
/// Android fd paths have no offloads.
pub const OFFLOAD_BUFFER: usize = 1024 * 1024;
/// A connection whose app sends nothing for this long while it has bytes of ours to acknowledge
/// (or our SYN-ACK) is aborted (smoltcp's timeout, armed only then: an idle app keeps its
/// connection, see [`Inner::arm_timers`]).
pub(super) const ACK_TIMEOUT: Duration = Duration::from_secs(120);
/// How long a connection the relay let go may wait for the app's FIN (FIN-WAIT-2 has no timer
/// in smoltcp) before it is reset.
const LINGER: Duration = Duration::from_secs(60);
/// While bytes wait to be sent, a probe (a keep-alive segment) this often when nothing is in
/// flight: smoltcp 0.12 sent no zero-window probes (0.14 does; this stays as a second guard), so without it a lost window update from an
/// app that had a full receive window would stall the connection for good.
const PROBE: Duration = Duration::from_millis(500);
/// A connection idle this long with both rings empty gives the rings' pages back.
pub const IDLE_RELEASE: Duration = Duration::from_secs(2);

/// Why a SYN did not make a connection.
#[derive(Debug)]
pub(crate) enum Refused {
    /// smoltcp did not take the packet as a SYN opening the socket.
    NotSyn,
    /// The rings could not be mapped (out of memory or address space).
    Memory(std::io::Error),
}

/// The state under the connection's lock.
pub(crate) struct Inner {
    iface: Interface,
    sockets: SocketSet<'static>,
    handle: SocketHandle,
    /// When the driver polls next on its own (`None`: no timer).
    wake_at: Option<Instant>,
    /// The relay let the stream go: once the socket is closed, the connection is done.
    stream_gone: bool,
    /// When a connection the relay let go is reset if it has not closed by then.
    linger_until: Option<Instant>,
    /// The stream asked for its close to be a reset.
    pub(super) reset_on_close: bool,
    /// The rings may hold touched pages (bytes went through since the last release).
    dirty: bool,
    /// The last time something happened on the connection (a packet, a read, a write).
    active_at: Instant,
    /// Keep-alive probes are on (bytes wait to be sent).
    probing: bool,
    /// smoltcp's timeout is on (bytes or the SYN-ACK wait for the app's acknowledgement).
    timing: bool,
    /// Whether the receive ring may hold bytes out of order (then its pages stay).
    reordering: Reordering,
    /// The socket's ring memory. Declared after `sockets`: dropped after the socket.
    rings: Rings,
}

impl Inner {
    /// The TCP socket.
    pub fn socket(&mut self) -> &mut tcp::Socket<'static> {
        self.sockets.get_mut::<tcp::Socket>(self.handle)
    }

    /// Closes the socket (a FIN after the queued bytes). From now on every segment of the app
    /// is acknowledged at once: the app's FIN takes the socket to TIME-WAIT, where the flow
    /// leaves, and a delayed ACK would leave with it (the app would resend its FIN for good).
    pub fn close(&mut self) {
        let socket = self.socket();
        socket.set_ack_delay(None);
        socket.close();
    }
}

/// One connection (see the module docs).
pub(crate) struct Connection {
    inner: Mutex<Inner>,
    sink: Arc<dyn PacketSink>,
    mtu: usize,
    /// On an offloading device: the app's MSS (see [`Link::segment`]).
    segment: Option<u16>,
    /// Wakes the driver when a poll moved its deadline earlier or the stream went away.
    driver: Notify,
    /// How far tests moved this connection's clock forward (microseconds, see [`Connection::skip`]).
    #[cfg(test)]
    skipped: std::sync::atomic::AtomicI64,
}

impl Connection {
    /// A connection for the app's SYN `packet` from `app` to `destination`: the socket listens on
    /// the destination and the SYN is fed to it, so the SYN-ACK is on its way when this returns.
    /// Refused when smoltcp did not take the SYN, or the rings could not be mapped. `offset`: where
    /// the SYN's TCP header starts in `packet`. `segment`: the app's MSS on an offloading device
    /// (its SYN's MSS already raised, see `offload.rs`).
    pub fn accept(
        packet: &[u8],
        offset: usize,
        destination: SocketAddr,
        mtu: usize,
        segment: Option<u16>,
        sink: Arc<dyn PacketSink>,
    ) -> Result<Arc<Connection>, Refused> {
        let address = IpAddress::from(destination.ip());
        let mut reordering = Reordering::default(); // nothing is sent here
        let mut link = Link { incoming: None, sink: &*sink, mtu, segment, reordering: &mut reordering };
        let mut config = Config::new(HardwareAddress::Ip);
        config.random_seed = random_seed();
        let mut iface = Interface::new(config, &mut link, clock());
        let prefix = if destination.is_ipv4() { 32 } else { 128 };
        iface.update_ip_addrs(|addresses| {
            let _ = addresses.push(IpCidr::new(address, prefix));
        });
        let (receive, send) = match segment {
            Some(_) => (OFFLOAD_BUFFER, OFFLOAD_BUFFER),
            None => (RECEIVE_BUFFER, SEND_BUFFER),
        };
        let rings = Rings::new(receive, send).map_err(Refused::Memory)?;
        // SAFETY: called once; the socket lives in `Inner::sockets`, dropped before
        // `Inner::rings`; `release` runs only with both rings empty (see `drive`).
        let (receive, send) = unsafe { rings.slices() };
        let mut socket = tcp::Socket::new(tcp::SocketBuffer::new(receive), tcp::SocketBuffer::new(send));
        socket.set_congestion_control(tcp::CongestionControl::Cubic);
        // The relay writes what it read in one piece; Nagle would hold a small answer back
        // waiting for the app's delayed ACK (the relay sets TCP_NODELAY on kernel clients too).
        socket.set_nagle_enabled(false);
        socket
            .listen(IpListenEndpoint { addr: Some(address), port: destination.port() })
            .map_err(|_| Refused::NotSyn)?;
        let mut sockets = SocketSet::new(Vec::with_capacity(1));
        let handle = sockets.add(socket);
        let inner = Inner {
            iface,
            sockets,
            handle,
            wake_at: None,
            stream_gone: false,
            linger_until: None,
            reset_on_close: false,
            dirty: false,
            active_at: clock(),
            probing: false,
            timing: false,
            reordering: Reordering::default(),
            rings,
        };
        let connection = Arc::new(Connection {
            inner: Mutex::new(inner),
            sink,
            mtu,
            segment,
            driver: Notify::new(),
            #[cfg(test)]
            skipped: Default::default(),
        });
        connection.input(packet, offset);
        let synchronised = connection.lock().socket().state() == tcp::State::SynReceived;
        if synchronised {
            Ok(connection)
        } else {
            Err(Refused::NotSyn)
        }
    }

    /// Feeds one packet of the app's flow to the socket (`packet` the IP packet, its TCP header
    /// at `offset`).
    pub fn input(&self, packet: &[u8], offset: usize) {
        let note = |inner: &mut Inner| {
            let window = inner.socket().recv_capacity();
            inner.reordering.received(packet, offset, window);
        };
        self.with(note, Some(packet));
    }

    /// Runs `op` on the socket, then polls the interface (with `packet`, if any) so that what
    /// `op` queued leaves now, and tells the driver when its timer must move.
    pub fn with<R>(&self, op: impl FnOnce(&mut Inner) -> R, packet: Option<&[u8]>) -> R {
        let mut inner = self.lock();
        let result = op(&mut inner);
        let (now, next) = self.poll(&mut inner, packet);
        inner.active_at = now;
        let socket = inner.socket();
        if socket.recv_queue() > 0 || socket.send_queue() > 0 {
            inner.dirty = true;
        }
        let next = earliest(next, inner.release_at());
        let earlier = match (next, inner.wake_at) {
            (Some(next), Some(at)) => next < at,
            (Some(_), None) => true,
            (None, _) => false,
        };
        let wake = earlier || (inner.stream_gone && is_closed(inner.socket().state()));
        drop(inner);
        if wake {
            self.driver.notify_one();
        }
        result
    }

    /// The relay let the stream go: closes the socket (FIN after the queued bytes), or resets it
    /// when asked or when the app's bytes were left unread, as a kernel socket would.
    pub fn release(&self) {
        self.with(
            |inner| {
                inner.stream_gone = true;
                inner.linger_until = Some(self.now() + LINGER.into());
                if inner.reset_on_close || inner.socket().recv_queue() > 0 {
                    inner.socket().abort();
                } else {
                    inner.close();
                }
            },
            None,
        );
        self.driver.notify_one();
    }

    /// Resets the connection now (a RST to the app), whoever holds its stream: the stream then
    /// reads and writes a reset.
    pub fn abort(&self) {
        self.with(|inner| inner.socket().abort(), None);
    }

    /// True while the app has not acknowledged the SYN-ACK yet.
    pub fn in_handshake(&self) -> bool {
        self.lock().socket().state() == tcp::State::SynReceived
    }

    /// Locks the state (a panic elsewhere while holding it does not make it unusable).
    pub fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Polls the interface once; returns the time of the poll and when smoltcp wants the next.
    fn poll(&self, inner: &mut Inner, packet: Option<&[u8]>) -> (Instant, Option<Instant>) {
        let now = self.now();
        let Inner { iface, sockets, reordering, .. } = inner;
        let (sink, mtu, segment) = (&*self.sink, self.mtu, self.segment);
        let mut link = Link { incoming: packet, sink, mtu, segment, reordering };
        iface.poll(now, &mut link, sockets);
        inner.arm_timers();
        (now, inner.iface.poll_at(now, &inner.sockets))
    }

    /// The connection's clock: [`clock`], moved forward by [`Connection::skip`] in tests.
    fn now(&self) -> Instant {
        #[cfg(test)]
        return clock()
            + smoltcp::time::Duration::from_micros(
                self.skipped.load(std::sync::atomic::Ordering::Relaxed) as u64
            );
        #[cfg(not(test))]
        clock()
    }

    /// Moves this connection's clock `by` forward and lets its driver look at its timers (tests
    /// of timeouts that would otherwise take minutes).
    #[cfg(test)]
    pub fn skip(&self, by: Duration) {
        self.skipped.fetch_add(by.as_micros() as i64, std::sync::atomic::Ordering::Relaxed);
        self.driver.notify_one();
    }

    /// When the driver polls next on its own (for tests; `None`: no timer).
    #[cfg(test)]
    pub fn wakes_at(&self) -> Option<Instant> {
        self.lock().wake_at
    }

    /// Resident pages of the rings (for tests).
    #[cfg(test)]
    pub fn rings_resident(&self) -> usize {
        self.lock().rings.resident()
    }
}

impl Inner {
    /// Turns keep-alive probes on while bytes wait to be sent and off otherwise: a keep-alive
    /// (sent only when nothing is in flight) makes the app answer with its current window, so it
    /// stands in for the zero-window probe smoltcp 0.12 lacked (a second guard with 0.14). Idle
    /// connections send nothing.
    ///
    /// Arms smoltcp's [`ACK_TIMEOUT`] the same way, and during the handshake: smoltcp's timeout
    /// counts from the app's last packet whatever is queued, so armed for good it would abort
    /// every connection whose app stays silent that long (an idle SSH session, a push channel).
    /// Armed only while something waits for the app's acknowledgement it aborts an app that
    /// stopped answering, as a kernel's retransmission limit does. smoltcp restarts the count when
    /// bytes are queued on an empty ring, so arming it then does not count the idle time before.
    fn arm_timers(&mut self) {
        let socket = self.sockets.get_mut::<tcp::Socket>(self.handle);
        let queued = socket.send_queue() > 0;
        if queued != self.probing {
            socket.set_keep_alive(queued.then(|| PROBE.into()));
            self.probing = queued;
        }
        let waiting = queued || socket.state() == tcp::State::SynReceived;
        if waiting != self.timing {
            socket.set_timeout(waiting.then(|| ACK_TIMEOUT.into()));
            self.timing = waiting;
        }
    }

    /// When the rings' pages go back if nothing happens until then (`None`: nothing to give).
    fn release_at(&self) -> Option<Instant> {
        self.dirty.then(|| self.active_at + IDLE_RELEASE.into())
    }

    /// Gives the rings' pages back if the connection has been idle long enough with both rings
    /// empty (bytes received out of order included, see `reorder.rs`); with bytes still in a
    /// ring, looks again after another idle period.
    fn release_if_idle(&mut self, now: Instant) {
        if self.release_at().is_none_or(|at| now < at) {
            return;
        }
        let socket = self.sockets.get_mut::<tcp::Socket>(self.handle);
        if socket.recv_queue() == 0 && socket.send_queue() == 0 && !self.reordering.holds_bytes() {
            // A refused remap leaves the pages: the connection only stays as it was.
            self.dirty = !self.rings.release();
        } else {
            self.active_at = now;
        }
    }
}

/// True once the socket has nothing left to do: closed, or in TIME-WAIT (the app's last ACK
/// arrived; a retransmitted FIN from the app then finds no flow and is dropped).
fn is_closed(state: tcp::State) -> bool {
    matches!(state, tcp::State::Closed | tcp::State::TimeWait)
}

/// Runs the connection's timers until the relay let it go and the socket is closed; then
/// returns (the caller removes the flow).
pub(crate) async fn drive(connection: Arc<Connection>) {
    loop {
        let at = {
            let mut inner = connection.lock();
            if inner.linger_until.is_some_and(|until| connection.now() >= until) {
                inner.socket().abort();
            }
            let (now, at) = connection.poll(&mut inner, None);
            if inner.stream_gone && is_closed(inner.socket().state()) {
                return;
            }
            inner.release_if_idle(now);
            let at = earliest(earliest(at, inner.linger_until), inner.release_at());
            inner.wake_at = at;
            at
        };
        let notified = connection.driver.notified();
        match at {
            Some(at) => {
                let wait = Duration::from(at - connection.now().min(at));
                let _ = tokio::time::timeout(wait, notified).await;
            }
            None => notified.await,
        }
    }
}

/// The earlier of two optional deadlines.
fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// smoltcp's clock: microseconds since the first use.
fn clock() -> Instant {
    static START: OnceLock<std::time::Instant> = OnceLock::new();
    let start = *START.get_or_init(std::time::Instant::now);
    Instant::from_micros(start.elapsed().as_micros() as i64)
}

/// The seed of an interface's initial sequence numbers and ports: not guessable by the app.
fn random_seed() -> u64 {
    rand::random()
}
