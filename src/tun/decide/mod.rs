//! The per-connection decision hook of the packet tunnel.
//!
//! Before a connection from the tunnel is dialed — a TCP connection the system stack accepted,
//! or the first datagram of a new UDP session (one per app source) — an optional
//! [`TunDecider`] is asked about it ([`TunFlow`]: protocol, the app's source address, the
//! original destination) and answers with a [`TunDecision`]: block it, or dial it with its own
//! network strategy, network types and TLS fragmentation. On Android the host can look up the
//! owning app with `ConnectivityManager.getConnectionOwnerUid` and, say, keep one app on Wi-Fi.
//! A tunnel without a decider works as before and pays nothing for the hook.
//!
//! - **Never on the runtime's threads**: the decider returns a future; a synchronous lookup (a
//!   binder call can take a millisecond or more) goes in a [`BlockingDecider`], which runs it on
//!   tokio's blocking threads, at most [`BLOCKING_DECISIONS`] at once.
//! - **Bounded**: a decision that takes longer than the hook's deadline
//!   ([`DecisionHook::deadline`], default [`DEFAULT_DECISION_DEADLINE`]), or whose decider
//!   panics, is replaced by the hook's fallback ([`DecisionHook::fallback`], default: dial with
//!   the tunnel's own settings), counted (`decisions_timed_out`, `decisions_panicked` in
//!   [`TunCounters`](super::TunCounters)) and logged at warn level (at most once a second).
//! - **While deciding**: a TCP connection is already established with the kernel (its bytes
//!   wait in the socket); a UDP source's datagrams wait in a queue of the sessions' `queue_len`
//!   (more are dropped and counted as `dropped_udp`).
//! - **Blocked**: a TCP connection is reset (`tcp_blocked`); a UDP source's datagrams are
//!   dropped (`dropped_blocked`) until it has been silent for the idle timeout its session would
//!   have had, then the decider is asked again. A UDP session carries every destination of its
//!   source (endpoint-independent mapping), so the decision about its first datagram holds for
//!   all of them.
//! - **Shown**: the decided options are in the connection's
//!   [`Metadata::options`](crate::Metadata::options), and a short text of what was decided and
//!   why in [`Metadata::decision`](crate::Metadata::decision) (tracker, open observer).
//!
//! The types are plain data so that they map to a host callback interface (uniffi) as they are.

mod ask;
mod udp;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;

pub(crate) use ask::Asker;
pub(crate) use udp::UdpDecisions;

use crate::dial::BoxFuture;
use crate::network::strategy::NetworkStrategy;
use crate::network::NetworkType;
use crate::tracker::TransportProtocol;

/// Default bound of one decision ([`DecisionHook::deadline`]).
pub const DEFAULT_DECISION_DEADLINE: Duration = Duration::from_millis(250);
/// How many calls of one [`BlockingDecider`] may run at once; more wait for a free one (within
/// their deadline).
pub const BLOCKING_DECISIONS: usize = 16;
/// Longest [`TunDecision::label`] kept (longer ones are cut).
pub const MAX_LABEL_LEN: usize = 64;

/// A connection of the tunnel about to be dialed: what a [`TunDecider`] is asked about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct TunFlow {
    /// TCP or UDP.
    pub protocol: TransportProtocol,
    /// The app's socket address (the packets' source): with the destination, what
    /// `getConnectionOwnerUid` takes.
    pub source: SocketAddr,
    /// The original destination (for UDP: of the session's first datagram).
    pub destination: SocketAddr,
}

impl TunFlow {
    /// The flow of a `protocol` connection from `source` to `destination`.
    pub fn new(protocol: TransportProtocol, source: SocketAddr, destination: SocketAddr) -> TunFlow {
        TunFlow { protocol, source, destination }
    }
}

/// What to do with one connection of the tunnel. The default dials it with the tunnel's own
/// settings; every `None` keeps the tunnel's setting.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct TunDecision {
    /// Do not dial: TCP is reset, UDP datagrams are dropped (see the module docs). Default false.
    pub block: bool,
    /// The network strategy of this connection.
    pub network_strategy: Option<NetworkStrategy>,
    /// The preferred network types of this connection (e.g. only Wi-Fi).
    pub network_type: Option<Vec<NetworkType>>,
    /// The fallback network types of this connection (with the `fallback` strategy).
    pub fallback_network_type: Option<Vec<NetworkType>>,
    /// TLS ClientHello fragmentation (segment mode) on (`true`) or off (`false`, even where the
    /// config turns it on) for this connection. TCP only.
    pub tls_fragment: Option<bool>,
    /// A short reason shown in the tracker before the decided options (e.g. the app's name or
    /// uid). Control characters become `?`; cut at [`MAX_LABEL_LEN`] characters.
    pub label: Option<String>,
}

impl TunDecision {
    /// Dial with the tunnel's own settings (the default).
    pub fn allow() -> TunDecision {
        TunDecision::default()
    }

    /// Block the connection.
    pub fn block() -> TunDecision {
        TunDecision { block: true, ..TunDecision::default() }
    }

    /// This decision with network strategy `strategy`.
    pub fn with_network_strategy(mut self, strategy: NetworkStrategy) -> TunDecision {
        self.network_strategy = Some(strategy);
        self
    }

    /// This decision with preferred network types `types`.
    pub fn with_network_type(mut self, types: Vec<NetworkType>) -> TunDecision {
        self.network_type = Some(types);
        self
    }

    /// This decision with fallback network types `types`.
    pub fn with_fallback_network_type(mut self, types: Vec<NetworkType>) -> TunDecision {
        self.fallback_network_type = Some(types);
        self
    }

    /// This decision with TLS fragmentation on or off.
    pub fn with_tls_fragment(mut self, on: bool) -> TunDecision {
        self.tls_fragment = Some(on);
        self
    }

    /// This decision with the reason `label` (see [`TunDecision::label`]).
    pub fn with_label(mut self, label: impl Into<String>) -> TunDecision {
        self.label = Some(label.into());
        self
    }
}

/// Decides, per connection of the tunnel, whether and how it is dialed (see the module docs).
pub trait TunDecider: Send + Sync + 'static {
    /// The decision for `flow`. Called on the runtime once per TCP connection and once per new
    /// UDP session; the future must not block the thread that polls it (wrap a synchronous
    /// lookup in a [`BlockingDecider`]). It is dropped when the hook's deadline passes.
    fn decide(&self, flow: TunFlow) -> BoxFuture<'static, TunDecision>;
}

/// A [`TunDecider`] for a synchronous function (a host lookup that blocks): each call runs on
/// tokio's blocking threads, at most [`BLOCKING_DECISIONS`] at once. A call past its deadline
/// still finishes on its thread; its answer is dropped. A call that waits for a free slot past
/// its deadline is never made.
pub struct BlockingDecider<F> {
    decide: Arc<F>,
    slots: Arc<Semaphore>,
}

impl<F> BlockingDecider<F>
where
    F: Fn(TunFlow) -> TunDecision + Send + Sync + 'static,
{
    /// A decider that calls `decide` on a blocking thread.
    pub fn new(decide: F) -> BlockingDecider<F> {
        BlockingDecider { decide: Arc::new(decide), slots: Arc::new(Semaphore::new(BLOCKING_DECISIONS)) }
    }
}

impl<F> std::fmt::Debug for BlockingDecider<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlockingDecider").field("free_slots", &self.slots.available_permits()).finish()
    }
}

impl<F> TunDecider for BlockingDecider<F>
where
    F: Fn(TunFlow) -> TunDecision + Send + Sync + 'static,
{
    fn decide(&self, flow: TunFlow) -> BoxFuture<'static, TunDecision> {
        let (decide, slots) = (self.decide.clone(), self.slots.clone());
        Box::pin(async move {
            // The semaphore is never closed.
            let Ok(slot) = slots.acquire_owned().await else { return TunDecision::default() };
            let call = tokio::task::spawn_blocking(move || {
                let _slot = slot;
                decide(flow)
            });
            match call.await {
                Ok(decision) => decision,
                // Re-raised here, where the asker catches it and counts it.
                Err(error) if error.is_panic() => std::panic::resume_unwind(error.into_panic()),
                // The runtime is shutting down: nothing will be dialed anyway.
                Err(_) => TunDecision::default(),
            }
        })
    }
}

/// A tunnel's decision hook: the decider, its deadline and the decision used without an answer.
#[derive(Clone)]
#[non_exhaustive]
pub struct DecisionHook {
    /// The decider.
    pub decider: Arc<dyn TunDecider>,
    /// How long one decision may take. Default [`DEFAULT_DECISION_DEADLINE`].
    pub deadline: Duration,
    /// The decision when the decider missed the deadline or panicked. Default: allow (dial with
    /// the tunnel's own settings); [`TunDecision::block`] fails closed instead.
    pub fallback: TunDecision,
}

impl DecisionHook {
    /// A hook asking `decider`, with the default deadline and fallback.
    pub fn new(decider: Arc<dyn TunDecider>) -> DecisionHook {
        DecisionHook { decider, deadline: DEFAULT_DECISION_DEADLINE, fallback: TunDecision::default() }
    }

    /// This hook with deadline `deadline`.
    pub fn with_deadline(mut self, deadline: Duration) -> DecisionHook {
        self.deadline = deadline;
        self
    }

    /// This hook with fallback decision `fallback`.
    pub fn with_fallback(mut self, fallback: TunDecision) -> DecisionHook {
        self.fallback = fallback;
        self
    }
}

impl std::fmt::Debug for DecisionHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DecisionHook")
            .field("deadline", &self.deadline)
            .field("fallback", &self.fallback)
            .finish_non_exhaustive()
    }
}

/// Two hooks are equal when they ask the same decider with the same deadline and fallback.
impl PartialEq for DecisionHook {
    fn eq(&self, other: &DecisionHook) -> bool {
        Arc::ptr_eq(&self.decider, &other.decider)
            && self.deadline == other.deadline
            && self.fallback == other.fallback
    }
}

impl Eq for DecisionHook {}
