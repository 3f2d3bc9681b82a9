//! Asking the decider: within the deadline, a panic caught, the fallback otherwise, counted and
//! logged; and what the answer does to a connection's metadata.

use std::any::Any;
use std::future::poll_fn;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::Poll;
use std::time::{Duration, Instant};

use super::{DecisionHook, TunDecision, TunFlow, MAX_LABEL_LEN};
use crate::dial::BoxFuture;
use crate::metadata::Metadata;
use crate::tun::counters::{bump, Counters};

/// Shortest time between two warnings about decisions that missed their deadline or panicked.
const WARNING_INTERVAL: Duration = Duration::from_secs(1);

/// Asks a tunnel's decider (see the module docs of [`super`]).
pub(crate) struct Asker {
    hook: DecisionHook,
    counters: Arc<Counters>,
    warned: Mutex<Option<Instant>>,
}

impl std::fmt::Debug for Asker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Asker").field("hook", &self.hook).finish_non_exhaustive()
    }
}

/// Why the decider's own answer was not used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Missed {
    TimedOut,
    Panicked,
}

/// A decision and its text for the tracker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Decided {
    pub decision: TunDecision,
    pub shown: String,
}

impl Asker {
    /// An asker for `hook`, counting into `counters`.
    pub fn new(hook: DecisionHook, counters: Arc<Counters>) -> Asker {
        Asker { hook, counters, warned: Mutex::new(None) }
    }

    /// The counters the decisions are counted in.
    pub fn counters(&self) -> &Arc<Counters> {
        &self.counters
    }

    /// The decision for `flow`: the decider's within the deadline, else the hook's fallback.
    pub async fn ask(&self, flow: TunFlow) -> Decided {
        bump(&self.counters.decisions);
        let decider = self.hook.decider.clone();
        let answer = tokio::time::timeout(self.hook.deadline, caught(move || decider.decide(flow))).await;
        let (decision, missed) = match answer {
            Ok(Ok(decision)) => (decision, None),
            Ok(Err(panic)) => {
                bump(&self.counters.decisions_panicked);
                self.warn(&flow, &format!("panicked ({panic})"));
                (self.hook.fallback.clone(), Some(Missed::Panicked))
            }
            Err(_) => {
                bump(&self.counters.decisions_timed_out);
                self.warn(&flow, &format!("missed its deadline of {:?}", self.hook.deadline));
                (self.hook.fallback.clone(), Some(Missed::TimedOut))
            }
        };
        let decided = Decided::new(decision, missed);
        tracing::debug!(
            protocol = ?flow.protocol, source = %flow.source, destination = %flow.destination,
            decision = %decided.shown, "TUN connection decided"
        );
        decided
    }

    fn warn(&self, flow: &TunFlow, what: &str) {
        let now = Instant::now();
        let mut warned = self.warned.lock().unwrap_or_else(PoisonError::into_inner);
        if warned.is_some_and(|at| now.duration_since(at) < WARNING_INTERVAL) {
            tracing::debug!(source = %flow.source, destination = %flow.destination, "TUN decider {what}");
            return;
        }
        *warned = Some(now);
        drop(warned);
        let count =
            |counter: &std::sync::atomic::AtomicU64| counter.load(std::sync::atomic::Ordering::Relaxed);
        tracing::warn!(
            protocol = ?flow.protocol, source = %flow.source, destination = %flow.destination,
            timed_out = count(&self.counters.decisions_timed_out),
            panicked = count(&self.counters.decisions_panicked),
            "TUN decider {what}: the connection gets the fallback decision"
        );
    }
}

impl Decided {
    fn new(decision: TunDecision, missed: Option<Missed>) -> Decided {
        let shown = describe(&decision, missed);
        Decided { decision, shown }
    }

    /// True when the connection must not be dialed.
    pub fn blocks(&self) -> bool {
        self.decision.block
    }

    /// Writes the decided options and the text into `metadata`.
    pub fn apply(&self, metadata: &mut Metadata) {
        let (decision, options) = (&self.decision, &mut metadata.options);
        if let Some(strategy) = decision.network_strategy {
            options.network_strategy = Some(strategy);
        }
        if let Some(types) = &decision.network_type {
            options.network_type = Some(types.clone());
        }
        if let Some(types) = &decision.fallback_network_type {
            options.fallback_network_type = Some(types.clone());
        }
        match decision.tls_fragment {
            Some(true) => options.tls_fragment = true,
            Some(false) => options.disable_tls_fragment = true,
            None => {}
        }
        metadata.decision = Some(self.shown.clone());
    }
}

/// `"<label>: <options>"`, `"<options> (decider timed out)"`…; the options are `default` when
/// nothing is overridden, else e.g. `strategy=fallback, network=wifi, fallback=cellular`.
fn describe(decision: &TunDecision, missed: Option<Missed>) -> String {
    let types = |types: &[crate::network::NetworkType]| match types {
        [] => "any".to_string(),
        types => types.iter().map(ToString::to_string).collect::<Vec<_>>().join("+"),
    };
    let mut parts = Vec::new();
    if decision.block {
        parts.push("block".to_string());
    }
    if let Some(strategy) = decision.network_strategy {
        parts.push(format!("strategy={strategy}"));
    }
    if let Some(network) = &decision.network_type {
        parts.push(format!("network={}", types(network)));
    }
    if let Some(fallback) = &decision.fallback_network_type {
        parts.push(format!("fallback={}", types(fallback)));
    }
    if let Some(on) = decision.tls_fragment {
        parts.push(format!("tls_fragment={}", if on { "on" } else { "off" }));
    }
    let mut shown = if parts.is_empty() { "default".to_string() } else { parts.join(", ") };
    if let Some(label) = decision.label.as_deref().filter(|label| !label.is_empty()) {
        shown = format!("{}: {shown}", printable(label));
    }
    match missed {
        None => shown,
        Some(Missed::TimedOut) => format!("{shown} (decider timed out)"),
        Some(Missed::Panicked) => format!("{shown} (decider panicked)"),
    }
}

/// `label` without control characters or line separators (it is logged), cut at
/// [`MAX_LABEL_LEN`] characters.
fn printable(label: &str) -> String {
    let unprintable = |c: char| c.is_control() || matches!(c, '\u{2028}' | '\u{2029}');
    label.chars().take(MAX_LABEL_LEN).map(|c| if unprintable(c) { '?' } else { c }).collect()
}

/// Starts and runs the decider's future; a panic in either becomes `Err` with its message
/// instead of unwinding into the runtime.
async fn caught<F>(start: F) -> Result<TunDecision, String>
where
    F: FnOnce() -> BoxFuture<'static, TunDecision>,
{
    let mut future = catch_unwind(AssertUnwindSafe(start)).map_err(|panic| message(panic.as_ref()))?;
    poll_fn(|cx| match catch_unwind(AssertUnwindSafe(|| future.as_mut().poll(cx))) {
        Ok(poll) => poll.map(Ok),
        Err(panic) => Poll::Ready(Err(message(panic.as_ref()))),
    })
    .await
}

fn message(panic: &(dyn Any + Send)) -> String {
    if let Some(message) = panic.downcast_ref::<&str>() {
        printable(message)
    } else if let Some(message) = panic.downcast_ref::<String>() {
        printable(message)
    } else {
        "a panic without a message".to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::super::{BlockingDecider, TunDecider};
    use super::*;
    use crate::network::strategy::NetworkStrategy;
    use crate::network::NetworkType;
    use crate::tls_fragment::FragmentSettings;
    use crate::tracker::TransportProtocol;
    use std::sync::atomic::{AtomicBool, Ordering};

    fn flow(source_port: u16) -> TunFlow {
        TunFlow::new(
            TransportProtocol::Tcp,
            format!("172.19.0.1:{source_port}").parse().unwrap(),
            "10.200.9.1:443".parse().unwrap(),
        )
    }

    /// An async decider: by source port, cellular (1), block (2), sleep 10 s (3), panic in the
    /// future (4) or before it (5); the default otherwise.
    struct ByPort;

    impl TunDecider for ByPort {
        fn decide(&self, flow: TunFlow) -> BoxFuture<'static, TunDecision> {
            assert!(flow.source.port() != 5, "decider panicked before its future");
            Box::pin(async move {
                match flow.source.port() {
                    1 => TunDecision::allow()
                        .with_network_type(vec![NetworkType::Cellular])
                        .with_label("app 1"),
                    2 => TunDecision::block(),
                    3 => {
                        tokio::time::sleep(Duration::from_secs(10)).await;
                        TunDecision::block()
                    }
                    4 => panic!("decider panicked in its future"),
                    _ => TunDecision::allow(),
                }
            })
        }
    }

    fn asker(decider: Arc<dyn TunDecider>, deadline: Duration) -> (Asker, Arc<Counters>) {
        let counters = Arc::new(Counters::default());
        (Asker::new(DecisionHook::new(decider).with_deadline(deadline), counters.clone()), counters)
    }

    #[tokio::test]
    async fn answers_are_used_and_misses_get_the_fallback_counted() {
        let (patient, counters) = asker(Arc::new(ByPort), Duration::from_secs(30));
        let cellular = patient.ask(flow(1)).await;
        assert_eq!(cellular.shown, "app 1: network=cellular");
        assert!(!cellular.blocks());
        assert!(patient.ask(flow(2)).await.blocks());
        assert_eq!(patient.ask(flow(9)).await.shown, "default");
        for port in [4, 5] {
            let panicked = patient.ask(flow(port)).await;
            assert_eq!((panicked.blocks(), panicked.shown.as_str()), (false, "default (decider panicked)"));
        }
        let counters = counters.snapshot();
        assert_eq!(
            (counters.decisions, counters.decisions_timed_out, counters.decisions_panicked),
            (5, 0, 2),
            "{counters:?}"
        );

        let (hasty, counters) = asker(Arc::new(ByPort), Duration::from_millis(100));
        let late = hasty.ask(flow(3)).await;
        assert_eq!((late.blocks(), late.shown.as_str()), (false, "default (decider timed out)"));
        assert_eq!(counters.snapshot().decisions_timed_out, 1);
    }

    #[tokio::test]
    async fn a_failing_closed_hook_blocks_on_a_miss() {
        let counters = Arc::new(Counters::default());
        let hook = DecisionHook::new(Arc::new(ByPort))
            .with_deadline(Duration::from_millis(50))
            .with_fallback(TunDecision::block());
        let asker = Asker::new(hook, counters);
        let late = asker.ask(flow(3)).await;
        assert_eq!((late.blocks(), late.shown.as_str()), (true, "block (decider timed out)"));
    }

    /// A blocking decider runs off the runtime: on a one-thread runtime, its deadline passes
    /// while it is still blocked (which it could not if it blocked the runtime's only thread).
    #[test]
    fn a_blocking_decider_runs_off_the_runtime_and_a_late_one_gets_the_fallback() {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let (release, released) = std::sync::mpsc::channel::<()>();
        let released = Mutex::new(released);
        let finished = Arc::new(AtomicBool::new(false));
        let done = finished.clone();
        let decider = BlockingDecider::new(move |flow: TunFlow| {
            if flow.source.port() == 3 {
                let _ = released.lock().unwrap().recv_timeout(Duration::from_secs(20));
                done.store(true, Ordering::SeqCst);
                return TunDecision::block();
            }
            assert!(flow.source.port() != 4, "a blocking decider panicked");
            TunDecision::allow().with_tls_fragment(false)
        });
        let decider: Arc<dyn TunDecider> = Arc::new(decider);
        let (patient, counters) = asker(decider.clone(), Duration::from_secs(30));
        let (hasty, hasty_counters) = asker(decider, Duration::from_millis(100));
        runtime.block_on(async {
            assert_eq!(patient.ask(flow(1)).await.shown, "tls_fragment=off");
            assert_eq!(patient.ask(flow(4)).await.shown, "default (decider panicked)");
            let late = hasty.ask(flow(3)).await;
            assert_eq!(late.shown, "default (decider timed out)");
            assert!(!finished.load(Ordering::SeqCst), "the decider is still blocked on its thread");
            release.send(()).unwrap();
        });
        let counters = counters.snapshot();
        assert_eq!((counters.decisions_timed_out, counters.decisions_panicked), (0, 1), "{counters:?}");
        assert_eq!(hasty_counters.snapshot().decisions_timed_out, 1);
    }

    #[test]
    fn the_decision_lands_in_the_metadata_and_turns_fragmentation_on_or_off() {
        let decided = |decision: TunDecision| Decided::new(decision, None);
        let mut metadata = Metadata::new("10.200.9.1:443".parse().unwrap());
        decided(
            TunDecision::allow()
                .with_network_strategy(NetworkStrategy::Fallback)
                .with_network_type(vec![NetworkType::Wifi])
                .with_fallback_network_type(vec![NetworkType::Cellular])
                .with_tls_fragment(true)
                .with_label("uid\n10123"),
        )
        .apply(&mut metadata);
        let options = &metadata.options;
        assert_eq!(options.network_strategy, Some(NetworkStrategy::Fallback));
        assert_eq!(options.network_type, Some(vec![NetworkType::Wifi]));
        assert_eq!(options.fallback_network_type, Some(vec![NetworkType::Cellular]));
        assert!(FragmentSettings::default().for_connection(options).segment);
        assert_eq!(
            metadata.decision.as_deref(),
            Some("uid?10123: strategy=fallback, network=wifi, fallback=cellular, tls_fragment=on")
        );

        // Off beats the configuration's on, both modes.
        let mut metadata = Metadata::new("10.200.9.1:443".parse().unwrap());
        decided(TunDecision::allow().with_tls_fragment(false)).apply(&mut metadata);
        let config = FragmentSettings { segment: true, record: true, ..FragmentSettings::default() };
        assert!(!config.for_connection(&metadata.options).is_enabled());
        assert!(config.for_connection(&crate::ConnectionOptions::default()).is_enabled());

        // Nothing overridden: the options stay the tunnel's.
        let mut metadata = Metadata::new("10.200.9.1:443".parse().unwrap());
        decided(TunDecision::allow().with_network_type(Vec::new())).apply(&mut metadata);
        assert_eq!(metadata.decision.as_deref(), Some("network=any"));
        assert_eq!(metadata.options.network_strategy, None);
        let long = "x".repeat(200);
        assert_eq!(
            describe(&TunDecision::allow().with_label(long), None).len(),
            MAX_LABEL_LEN + ": default".len()
        );
    }
}
