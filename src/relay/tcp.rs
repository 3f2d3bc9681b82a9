//! The life of one TCP connection: dial, tell the client, kick a lazy outbound handshake, write
//! the first payload (TLS-fragmented when asked), relay both ways, close.

use std::future::{poll_fn, Future};
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::Poll;
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

/// Runs one connection to its end and returns the root-cause error, if any. `fragment_defaults`
/// (the configuration's TLS fragmentation settings) are merged with the connection's options.
/// The sockets are closed when this returns: gracefully after a clean end or a failure reported
/// to the client, with a reset otherwise.
pub(crate) async fn run(
    entry: &Entry,
    inbound: Inbound,
    outbound: Arc<dyn Outbound>,
    half_close_timeout: Option<Duration>,
    fragment_defaults: FragmentSettings,
) -> Result<(), ConnectionError> {
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
    let steps = Steps { entry, client: &client, remote: &remote, local, fragment, half_close_timeout };
    let work = steps.run(handshake, lazy, early_data);
    let result = tokio::select! {
        biased;
        _ = entry.close_requested() => Err(Failure::Other(ConnectionError::Closed)),
        result = work => result,
    };
    match result {
        Ok(()) => Ok(()),
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
}

impl Steps<'_> {
    /// Reports success to the client, kicks a lazy outbound handshake, writes the first payload
    /// (fragmented when asked), then copies both ways.
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
    ) -> Result<(), Failure> {
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
        let mut first_read = None;
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
            first_read = Some(Box::pin(first_write::fragment_first_read(
                self.entry,
                self.client,
                self.remote,
                self.fragment,
            )));
        }
        Ok(copy_both_ways(self.entry, self.client, self.remote, self.half_close_timeout, first_read).await?)
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
/// half-closed remainder stayed silent for `half_close_timeout`.
///
/// `first_read`, when given, handles the upload direction's first read and write (the TLS
/// fragmenter); the normal upload copy starts once it finished. The download copy runs meanwhile.
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
    let mut up = Direction::default();
    let mut down = Direction::default();
    // Armed only once one direction has ended; reset whenever the other one moves bytes.
    let mut drain: Option<(Pin<Box<Sleep>>, u64)> = None;
    poll_fn(|cx| {
        if let Some(first) = first_read.as_mut() {
            match first.as_mut().poll(cx) {
                Poll::Ready(Ok(())) => first_read = None,
                Poll::Ready(Err(error)) => return Poll::Ready(Err(error)),
                Poll::Pending => {}
            }
        }
        if first_read.is_none() && !up.is_done() {
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
            (true, false) => &down,
            (false, true) => &up,
        };
        let Some(timeout) = half_close_timeout else { return Poll::Pending };
        let moved = remaining.transferred();
        let (sleep, seen) = drain.get_or_insert_with(|| (Box::pin(tokio::time::sleep(timeout)), moved));
        if *seen != moved {
            *seen = moved;
            // A timeout too long to add to the clock (through the Rust API) keeps its far deadline.
            if let Some(deadline) = Instant::now().checked_add(timeout) {
                sleep.as_mut().reset(deadline);
            }
        }
        match sleep.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(ConnectionError::HalfCloseTimeout(timeout))),
            Poll::Pending => Poll::Pending,
        }
    })
    .await
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

    use crate::tracker::Tracker;
    use crate::{DirectOutbound, Inbound, Metadata};

    /// Every idle connection holds its task's future: keep the relay's state small (the rarely
    /// used steps — lazy handshakes, TLS fragmentation — are boxed only when used).
    #[tokio::test]
    async fn idle_connection_state_stays_small() {
        let tracker = Arc::new(Tracker::default());
        let (entry, _guard) = tracker.insert(Metadata::new("127.0.0.1:1".parse().unwrap()));
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = tokio::net::TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        let outbound = Arc::new(DirectOutbound::default());
        let run = super::run(&entry, Inbound::plain(client), outbound, None, Default::default());
        let size = std::mem::size_of_val(&run);
        println!("connection future: {size} bytes");
        assert!(size <= 1536, "the per-connection future grew to {size} bytes");
    }
}
