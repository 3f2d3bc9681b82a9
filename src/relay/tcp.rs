//! The life of one TCP connection: dial, tell the client, kick a lazy outbound handshake, write
//! the first payload (TLS-fragmented when asked), relay both ways, close.

use std::future::{poll_fn, Future};
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};

use super::copy::{Direction, Failed};
use super::{first_write, ConnectionError, Side};
use crate::client::{ClientStream, Inbound, InboundHandshake};
use crate::dial::{DialedStream, LazyHandshake, Outbound};
use crate::socket::io::write_all;
use crate::socket::stream::StreamSocket;
use crate::tls_fragment::FragmentSettings;
use crate::tracker::Entry;

/// One TCP connection, driven by [`Connection::poll`] until it ended: the setup (dial, tell the
/// client, kick a lazy outbound handshake, first write) runs in a heap allocation that is freed
/// once the connection is established; the steady state (the two streams, both copy directions
/// and the half-close drain timer) is kept inline and small, since every idle connection holds it.
///
/// The sockets are closed when it ends: gracefully after a clean end or a failure reported to the
/// client, with a reset otherwise.
pub(crate) struct Connection {
    state: State,
}

enum State {
    /// Not polled yet.
    Start {
        inbound: Inbound,
        outbound: Arc<dyn Outbound>,
        half_close_timeout: Option<Duration>,
        fragment_defaults: FragmentSettings,
    },
    /// Dial, reply, lazy handshake, first write (and, with TLS fragmentation, the first read).
    Setup(Pin<Box<dyn Future<Output = Result<Relay, ConnectionError>> + Send>>),
    /// Established: relaying.
    Relay(Relay),
    /// Ended.
    Done,
}

/// The steady state of an established connection.
struct Relay {
    client: ClientStream,
    remote: TcpStream,
    copy: Copy,
}

impl Connection {
    /// Connection `inbound`, to be dialed through `outbound`. `fragment_defaults` (the
    /// configuration's TLS fragmentation settings) are merged with the connection's options.
    pub(crate) fn new(
        inbound: Inbound,
        outbound: Arc<dyn Outbound>,
        half_close_timeout: Option<Duration>,
        fragment_defaults: FragmentSettings,
    ) -> Connection {
        Connection { state: State::Start { inbound, outbound, half_close_timeout, fragment_defaults } }
    }

    /// True once polled.
    pub(crate) fn is_started(&self) -> bool {
        !matches!(self.state, State::Start { .. })
    }

    /// Ends a connection that was not polled yet (the manager shut down first): its client is
    /// reset.
    pub(crate) fn refuse(&mut self) {
        if let State::Start { inbound, .. } = &self.state {
            inbound.stream.reset();
        }
        self.state = State::Done;
    }

    /// Drops whatever the connection holds (after a panic while polling it, or when it is dropped
    /// before it ended): the sockets close with a reset, as after any failure not reported to the
    /// client (the setup's steps reset their own).
    pub(crate) fn abandon(&mut self) {
        if let State::Relay(relay) = &self.state {
            relay.client.reset();
            relay.remote.reset();
        }
        self.state = State::Done;
    }

    /// Drives connection `entry` (the tracker's entry this connection was made for, always the
    /// same one); ready with the root-cause error, if any, once it ended. A close request ends it
    /// at any point with [`ConnectionError::Closed`].
    pub(crate) fn poll(
        &mut self,
        cx: &mut Context<'_>,
        entry: &Arc<Entry>,
    ) -> Poll<Result<(), ConnectionError>> {
        loop {
            match &mut self.state {
                State::Start { .. } => {
                    let State::Start { inbound, outbound, half_close_timeout, fragment_defaults } =
                        std::mem::replace(&mut self.state, State::Done)
                    else {
                        unreachable!("matched above")
                    };
                    self.state = State::Setup(Box::pin(setup(
                        entry.clone(),
                        inbound,
                        outbound,
                        half_close_timeout,
                        fragment_defaults,
                    )));
                }
                State::Setup(setup) => match setup.as_mut().poll(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(Ok(relay)) => self.state = State::Relay(relay),
                    Poll::Ready(Err(error)) => {
                        self.state = State::Done;
                        return Poll::Ready(Err(error));
                    }
                },
                State::Relay(relay) => {
                    let result = match entry.poll_close_requested(cx) {
                        Poll::Ready(()) => Err(ConnectionError::Closed),
                        Poll::Pending => {
                            ready!(relay.copy.poll(cx, entry, &relay.client, &relay.remote, false))
                        }
                    };
                    if result.is_err() {
                        relay.client.reset();
                        relay.remote.reset();
                    }
                    self.state = State::Done;
                    return Poll::Ready(result);
                }
                State::Done => panic!("a connection polled after it ended"),
            }
        }
    }
}

/// A connection dropped before it ended (the runtime dropped its task) resets its sockets, as any
/// failure not reported to the client (the setup's steps reset their own).
impl Drop for Connection {
    fn drop(&mut self) {
        self.abandon();
    }
}

/// Runs connection `entry` to its end (see [`Connection`]).
#[cfg(test)]
pub(crate) async fn run(
    entry: &Arc<Entry>,
    inbound: Inbound,
    outbound: Arc<dyn Outbound>,
    half_close_timeout: Option<Duration>,
    fragment_defaults: FragmentSettings,
) -> Result<(), ConnectionError> {
    let mut connection = Connection::new(inbound, outbound, half_close_timeout, fragment_defaults);
    poll_fn(|cx| connection.poll(cx, entry)).await
}

/// The setup of a connection, up to the steady state: the dial (ended by a close request), then
/// the steps after it (see [`Steps::run`]).
async fn setup(
    entry: Arc<Entry>,
    inbound: Inbound,
    outbound: Arc<dyn Outbound>,
    half_close_timeout: Option<Duration>,
    fragment_defaults: FragmentSettings,
) -> Result<Relay, ConnectionError> {
    let entry = &*entry;
    let Inbound { stream: client, early_data, handshake } = inbound;
    // Every client stream passes here (SOCKS, a socket handed over by the host). Without
    // TCP_NODELAY an answer relayed in two small writes waits ~40 ms for the client's delayed ACK.
    // A socket that is not TCP (a Unix socketpair from the host) has no such option: ignored.
    if let Err(error) = client.set_nodelay() {
        tracing::trace!(%error, "TCP_NODELAY not set on the client socket");
    }
    let target = entry.metadata.dial_target();
    let dialed = tokio::select! {
        biased;
        _ = entry.close_requested() => Err(ConnectionError::Closed),
        dialed = outbound.dial_tcp(&target) => dialed.map_err(ConnectionError::Dial),
    };
    drop(target);
    let dialed = match dialed {
        Ok(dialed) => dialed,
        Err(error) => {
            report_failure(&client, handshake, &error).await;
            return Err(error);
        }
    };
    let DialedStream { stream: remote, egress, handshake: lazy } = dialed;
    // Read once: the egress records it and the success reply carries it.
    let local = remote.local_addr().ok();
    entry.set_egress(egress.with_local_address(local));
    let fragment = fragment_defaults.for_connection(&entry.metadata.options);
    let steps = Steps {
        entry,
        client: &client,
        remote: &remote,
        local,
        fragment,
        half_close_timeout,
        ended: AtomicBool::new(false),
    };
    let work = steps.run(handshake, lazy, early_data);
    let result = tokio::select! {
        biased;
        _ = entry.close_requested() => Err(Failure::Other(ConnectionError::Closed)),
        result = work => result,
    };
    steps.ended.store(true, Ordering::Relaxed);
    drop(steps);
    match result {
        Ok(copy) => Ok(Relay { client, remote, copy }),
        Err(Failure::Reported(error)) => {
            remote.reset();
            Err(error)
        }
        Err(Failure::Other(error)) => {
            client.reset();
            remote.reset();
            Err(error)
        }
    }
}

/// Tells the client a dial failed: the ingress's failure reply, or a reset without one.
async fn report_failure(
    client: &ClientStream,
    handshake: Option<Box<dyn InboundHandshake>>,
    error: &ConnectionError,
) {
    match (handshake, error) {
        (Some(mut handshake), ConnectionError::Dial(dial_error)) => {
            if let Err(e) = handshake.fail(client, dial_error).await {
                tracing::debug!(error = %e, "could not send the failure reply to the client");
            }
        }
        _ => client.reset(),
    }
}

/// How a connection failed after the dial.
enum Failure {
    /// The client already got a failure reply: close it gracefully so the reply is not lost.
    Reported(ConnectionError),
    /// Anything else: reset both sides.
    Other(ConnectionError),
}

impl From<ConnectionError> for Failure {
    fn from(error: ConnectionError) -> Failure {
        Failure::Other(error)
    }
}

/// What the steps after a successful dial work on.
struct Steps<'a> {
    entry: &'a Entry,
    client: &'a ClientStream,
    remote: &'a TcpStream,
    /// The outbound socket's local address, when it could be read.
    local: Option<SocketAddr>,
    fragment: FragmentSettings,
    half_close_timeout: Option<Duration>,
    /// False until the steps ended on one of their paths (which close the sockets their own way).
    ended: AtomicBool,
}

/// Steps dropped before they ended (a panic in the code they run, the runtime dropping the task)
/// reset both sockets, as any failure not reported to the client: a plain close would look like a
/// clean end to both peers.
impl Drop for Steps<'_> {
    fn drop(&mut self) {
        if !self.ended.load(Ordering::Relaxed) {
            self.client.reset();
            self.remote.reset();
        }
    }
}

impl Steps<'_> {
    /// Reports success to the client, kicks a lazy outbound handshake, writes the first payload
    /// (fragmented when asked); returns the copy state to relay with. With TLS fragmentation and
    /// no early data, the client's first bytes are read and fragmented here, while the download
    /// direction already runs.
    ///
    /// With a lazy handshake, when there is no payload to wait for (the ingress holds early data,
    /// or fragmentation is on so the handshake completes alone), it is completed *before* the
    /// success reply: a refusal by an upstream proxy then reaches the client as the matching
    /// failure reply (e.g. SOCKS 0x05). Otherwise the reply goes first and the kick waits up to
    /// [`first_write::KICK_WAIT`] for the client's first bytes, which the client only sends once
    /// it has the reply; a failure then can only reset the client.
    async fn run(
        &self,
        reply: Option<Box<dyn InboundHandshake>>,
        lazy: Option<Box<dyn LazyHandshake>>,
        early_data: Vec<u8>,
    ) -> Result<Copy, Failure> {
        let fragmenting = self.fragment.is_enabled();
        // With fragmentation on, a lazy handshake completes alone and the early data is fragmented.
        let handshake_payload: &[u8] = if fragmenting { &[] } else { &early_data };
        let mut pending: &[u8] = &early_data;
        let complete_now = fragmenting || !early_data.is_empty();
        let lazy = match lazy {
            Some(handshake) if complete_now => {
                if let Err(error) =
                    Box::pin(first_write::complete(self.entry, self.remote, handshake, handshake_payload))
                        .await
                {
                    return Err(match (reply, &error) {
                        (Some(mut reply), ConnectionError::Dial(dial_error)) => {
                            if let Err(e) = reply.fail(self.client, dial_error).await {
                                tracing::debug!(error = %e, "could not send the failure reply to the client");
                            }
                            Failure::Reported(error)
                        }
                        _ => Failure::Other(error),
                    });
                }
                pending = &pending[handshake_payload.len()..];
                None
            }
            other => other,
        };
        if let Some(reply) = reply {
            self.succeed(reply).await?;
        }
        if let Some(handshake) = lazy {
            Box::pin(first_write::kick(self.entry, self.client, self.remote, handshake)).await?;
        }
        let mut copy = Copy::new(self.half_close_timeout);
        if !pending.is_empty() {
            if fragmenting {
                Box::pin(first_write::write_fragmented(self.entry, self.remote, pending, &self.fragment))
                    .await?;
            } else {
                write_all(self.remote, pending).await.map_err(|source| ConnectionError::Io {
                    side: Side::Remote,
                    operation: "write",
                    source,
                })?;
                self.entry.bytes_up.fetch_add(pending.len() as u64, Ordering::Relaxed);
            }
        } else if fragmenting {
            // Boxed: the fragmenter's state is only paid for by connections that use it.
            let mut first_read = Box::pin(first_write::fragment_first_read(
                self.entry,
                self.client,
                self.remote,
                self.fragment,
            ));
            // Until it finished, the upload direction waits; the download copy runs meanwhile.
            poll_fn(|cx| match first_read.as_mut().poll(cx) {
                Poll::Ready(result) => Poll::Ready(result),
                Poll::Pending => copy.poll(cx, self.entry, self.client, self.remote, true),
            })
            .await?;
        }
        Ok(copy)
    }

    async fn succeed(&self, mut reply: Box<dyn InboundHandshake>) -> Result<(), ConnectionError> {
        let bound = match self.local {
            Some(local) => local,
            // Read again for the error itself.
            None => self.remote.local_addr().map_err(ConnectionError::Handshake)?,
        };
        reply.succeed(self.client, bound).await.map_err(ConnectionError::Handshake)
    }
}

/// Copies client → remote and remote → client until both directions ended, one failed, or the
/// half-closed remainder stayed silent for `half_close_timeout` (waiting for its source: bytes it
/// holds for a slow destination are not silence).
///
/// `first_read`, when given, handles the upload direction's first read and write (the TLS
/// fragmenter); the normal upload copy starts once it finished. The download copy runs meanwhile.
#[cfg(test)]
pub(super) async fn copy_both_ways<C, R, F>(
    entry: &Entry,
    client: &C,
    remote: &R,
    half_close_timeout: Option<Duration>,
    mut first_read: Option<Pin<Box<F>>>,
) -> Result<(), ConnectionError>
where
    C: StreamSocket + ?Sized,
    R: StreamSocket + ?Sized,
    F: Future<Output = Result<(), ConnectionError>>,
{
    let mut copy = Copy::new(half_close_timeout);
    poll_fn(|cx| {
        if let Some(first) = first_read.as_mut() {
            match first.as_mut().poll(cx) {
                Poll::Ready(Ok(())) => first_read = None,
                Poll::Ready(Err(error)) => return Poll::Ready(Err(error)),
                Poll::Pending => {}
            }
        }
        copy.poll(cx, entry, client, remote, first_read.is_some())
    })
    .await
}

/// Both copy directions of a connection and its half-close drain timer.
pub(super) struct Copy {
    up: Direction,
    down: Direction,
    /// Armed only once one direction has ended; reset whenever the other one moves bytes.
    drain: Option<Pin<Box<Sleep>>>,
    half_close_timeout: Option<Duration>,
}

impl Copy {
    fn new(half_close_timeout: Option<Duration>) -> Copy {
        Copy { up: Direction::default(), down: Direction::default(), drain: None, half_close_timeout }
    }

    /// Copies both ways; ready once both directions ended, one failed, or the half-closed
    /// remainder stayed silent for the half-close timeout. With `upload_held` the upload
    /// direction is not polled (its first read is in other hands) and counts as not ended.
    fn poll<C, R>(
        &mut self,
        cx: &mut Context<'_>,
        entry: &Entry,
        client: &C,
        remote: &R,
        upload_held: bool,
    ) -> Poll<Result<(), ConnectionError>>
    where
        C: StreamSocket + ?Sized,
        R: StreamSocket + ?Sized,
    {
        let Copy { up, down, drain, half_close_timeout } = self;
        if !upload_held && !up.is_done() {
            if let Poll::Ready(Err((failed, source))) = up.poll_copy(cx, client, remote, &entry.bytes_up) {
                return Poll::Ready(Err(io_error(failed, Side::Client, Side::Remote, source)));
            }
        }
        if !down.is_done() {
            if let Poll::Ready(Err((failed, source))) = down.poll_copy(cx, remote, client, &entry.bytes_down)
            {
                return Poll::Ready(Err(io_error(failed, Side::Remote, Side::Client, source)));
            }
        }
        let remaining = match (up.is_done(), down.is_done()) {
            (true, true) => return Poll::Ready(Ok(())),
            (false, false) => return Poll::Pending,
            (true, false) => down,
            (false, true) => up,
        };
        let Some(timeout) = *half_close_timeout else { return Poll::Pending };
        // Bytes moved before the timer was armed do not count: it starts now.
        let moved = remaining.take_moved();
        let sleep = match drain {
            None => drain.insert(Box::pin(tokio::time::sleep(timeout))),
            Some(sleep) => {
                // A timeout too long to add to the clock (through the Rust API) keeps its far
                // deadline.
                if let (true, Some(deadline)) = (moved, Instant::now().checked_add(timeout)) {
                    sleep.as_mut().reset(deadline);
                }
                sleep
            }
        };
        // Bytes waiting for a slow destination (the client paused reading): the remainder is not
        // silent. The timer is not looked at until they are written, which resets it.
        if remaining.holds_bytes() {
            return Poll::Pending;
        }
        match sleep.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(ConnectionError::HalfCloseTimeout(timeout))),
            Poll::Pending => Poll::Pending,
        }
    }
}

fn io_error(failed: Failed, source_side: Side, destination_side: Side, source: io::Error) -> ConnectionError {
    match failed {
        Failed::Read => ConnectionError::Io { side: source_side, operation: "read", source },
        Failed::Write => ConnectionError::Io { side: destination_side, operation: "write", source },
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::Connection;
    use crate::tracker::Tracker;
    use crate::{ClientStream, DirectOutbound, Inbound, Metadata};

    /// Every idle connection holds its steady state: the two sockets, both copy directions and the
    /// drain timer (120 bytes beside the sockets; 192 in all in a release build, where a debug
    /// build of mio adds 8 bytes to each socket). The setup is boxed and freed once the connection
    /// is established; it is bounded too, as every connection being set up holds it.
    #[tokio::test]
    async fn idle_connection_state_stays_small() {
        let tracker = Arc::new(Tracker::default());
        let (entry, _guard) = tracker.insert(Metadata::new("127.0.0.1:1".parse().unwrap()));
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let connect =
            || async { tokio::net::TcpStream::connect(listener.local_addr().unwrap()).await.unwrap() };
        let outbound = Arc::new(DirectOutbound::default());
        let sockets = std::mem::size_of::<ClientStream>() + std::mem::size_of::<tokio::net::TcpStream>();
        let steady = std::mem::size_of::<Connection>();
        let setup = super::setup(entry, Inbound::plain(connect().await), outbound, None, Default::default());
        let setup_size = std::mem::size_of_val(&setup);
        println!(
            "connection: {steady} bytes ({sockets} of them the two sockets); its setup: {setup_size} bytes"
        );
        assert!(
            steady - sockets <= 120,
            "the per-connection state grew to {steady} bytes ({sockets} sockets)"
        );
        assert!(setup_size <= 1600, "the setup of a connection grew to {setup_size} bytes");
    }
}
