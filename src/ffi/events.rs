//! Subscriptions: each [`EventListener`] a host subscribes gets every event (connection opened,
//! closed, network changed, log records) through its own bounded queue and its own delivery
//! thread, so a listener that is slow, blocks or throws costs netswitch nothing but the events it
//! misses (counted).
//!
//! The relay side only ever pushes into queues (`EventHub::broadcast`: non-blocking, one short
//! lock per subscription); the `netswitch-events` thread of each subscription calls its
//! listener. Log records reach a subscription the same way: its [`LogSink`] only queues them.

use std::collections::VecDeque;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError, Weak};

use super::callbacks::EventListener;
use super::error::NetswitchError;
use super::network::NetworkChange;
use super::types::{ClosedConnection, ConnectionInfo, LogRecord};
use crate::logging::{LogLine, LogSink, LogSinkId};

/// Events that may wait for one subscription's listener; beyond this they are dropped and
/// counted ([`Subscription::dropped_events`]).
pub const EVENT_QUEUE_CAPACITY: usize = 4096;
/// Log records that may wait for one subscription's listener; beyond this they are dropped and
/// counted in the next `on_log` call's `dropped`.
pub const LOG_QUEUE_CAPACITY: usize = crate::logging::HOST_QUEUE_CAPACITY;
/// The most records one `on_log` call carries.
const LOG_BATCH_SIZE: usize = crate::logging::HOST_BATCH_SIZE;

/// One event for a listener.
#[derive(Debug, Clone)]
pub(crate) enum Event {
    Opened(ConnectionInfo),
    Closed(ClosedConnection),
    NetworkChanged(NetworkChange),
}

/// How a subscription ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Running,
    /// The manager shut down: deliver what is queued, accept nothing more, then stop.
    Draining,
    /// `cancel()`: stop at once, discard what is queued.
    Cancelled,
}

#[derive(Debug)]
struct Queue {
    state: State,
    events: VecDeque<Event>,
    logs: VecDeque<LogLine>,
    /// Log records dropped since the last `on_log` call (the global queue's and this one's).
    logs_dropped: u64,
    /// Events dropped since the last warning about it.
    events_dropped: u64,
}

/// One subscription's queue, shared by the hub, its log sink, its thread and its handle.
#[derive(Debug)]
pub(crate) struct Inbox {
    queue: Mutex<Queue>,
    ready: Condvar,
    cancelled: AtomicBool,
    events_dropped: AtomicU64,
    log_sink: Mutex<Option<LogSinkId>>,
}

impl Inbox {
    fn new() -> Inbox {
        Inbox {
            queue: Mutex::new(Queue {
                state: State::Running,
                events: VecDeque::new(),
                logs: VecDeque::new(),
                logs_dropped: 0,
                events_dropped: 0,
            }),
            ready: Condvar::new(),
            cancelled: AtomicBool::new(false),
            events_dropped: AtomicU64::new(0),
            log_sink: Mutex::new(None),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues an event; drops (and counts) it when the queue is full; ignored once ending.
    fn push(&self, event: Event) {
        let mut queue = self.lock();
        if queue.state != State::Running {
            return;
        }
        if queue.events.len() >= EVENT_QUEUE_CAPACITY {
            queue.events_dropped += 1;
            self.events_dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        queue.events.push_back(event);
        drop(queue);
        self.ready.notify_one();
    }

    /// Ends the subscription (idempotent; `Cancelled` wins over `Draining`) and stops its logs.
    fn end(&self, how: State) {
        if let Some(id) = self.log_sink.lock().unwrap_or_else(PoisonError::into_inner).take() {
            crate::logging::remove_log_sink(id);
        }
        let mut queue = self.lock();
        if how == State::Cancelled {
            self.cancelled.store(true, Ordering::Release);
            queue.events.clear();
            queue.logs.clear();
        }
        if queue.state != State::Cancelled {
            queue.state = how;
        }
        drop(queue);
        self.ready.notify_all();
    }

    fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::Acquire)
    }
}

/// Feeds log batches from the global log thread into one inbox (never blocks).
struct InboxLogs(Arc<Inbox>);

impl LogSink for InboxLogs {
    fn deliver(&self, records: Vec<LogLine>, dropped: u64) {
        let mut queue = self.0.lock();
        if queue.state != State::Running {
            return;
        }
        queue.logs_dropped += dropped;
        let room = LOG_QUEUE_CAPACITY.saturating_sub(queue.logs.len());
        let lost = records.len().saturating_sub(room);
        queue.logs_dropped += lost as u64;
        queue.logs.extend(records.into_iter().take(room));
        drop(queue);
        self.0.ready.notify_one();
    }
}

/// What the delivery thread takes from the queue in one go.
struct Batch {
    events: Vec<Event>,
    logs: Vec<LogLine>,
    logs_dropped: u64,
    events_dropped: u64,
}

/// Waits for work; `None` when the subscription ended (and, when draining, the queue is empty).
fn next_batch(inbox: &Inbox) -> Option<Batch> {
    let mut queue = inbox.lock();
    loop {
        let empty = queue.events.is_empty() && queue.logs.is_empty();
        match queue.state {
            State::Cancelled => return None,
            State::Draining if empty => return None,
            _ if !empty => break,
            _ => queue = inbox.ready.wait(queue).unwrap_or_else(PoisonError::into_inner),
        }
    }
    let take_logs = queue.logs.len().min(LOG_BATCH_SIZE);
    let logs: Vec<LogLine> = queue.logs.drain(..take_logs).collect();
    let logs_dropped = if logs.is_empty() { 0 } else { std::mem::take(&mut queue.logs_dropped) };
    Some(Batch {
        events: queue.events.drain(..).collect(),
        logs,
        logs_dropped,
        events_dropped: std::mem::take(&mut queue.events_dropped),
    })
}

/// The `netswitch-events` thread of one subscription: calls the listener until the end.
fn deliver(inbox: Arc<Inbox>, listener: Arc<dyn EventListener>) {
    while let Some(batch) = next_batch(&inbox) {
        if batch.events_dropped > 0 {
            tracing::warn!(
                dropped = batch.events_dropped,
                "event listener too slow: events dropped (its queue holds {EVENT_QUEUE_CAPACITY})"
            );
        }
        for event in batch.events {
            if inbox.is_cancelled() {
                return;
            }
            // A throwing or panicking listener loses this call, nothing else.
            let _ = catch_unwind(AssertUnwindSafe(|| match event {
                Event::Opened(info) => listener.on_connection_opened(info),
                Event::Closed(closed) => listener.on_connection_closed(closed),
                Event::NetworkChanged(change) => listener.on_network_changed(change),
            }));
        }
        if !batch.logs.is_empty() && !inbox.is_cancelled() {
            let records = batch.logs.into_iter().map(LogRecord::from).collect();
            let _ = catch_unwind(AssertUnwindSafe(|| listener.on_log(records, batch.logs_dropped)));
        }
    }
}

/// Every live subscription of one manager.
#[derive(Debug, Default)]
pub(crate) struct EventHub {
    inboxes: Mutex<Hub>,
}

#[derive(Debug, Default)]
struct Hub {
    shut_down: bool,
    inboxes: Vec<Arc<Inbox>>,
}

impl EventHub {
    fn lock(&self) -> MutexGuard<'_, Hub> {
        self.inboxes.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Starts delivering every event and log record to `listener` on a new thread.
    /// `ShutDown` after [`EventHub::shut_down`]; `Io` when the thread cannot start.
    pub fn subscribe(
        self: &Arc<Self>,
        listener: Arc<dyn EventListener>,
    ) -> Result<Arc<Subscription>, NetswitchError> {
        if self.lock().shut_down {
            return Err(NetswitchError::ShutDown);
        }
        let inbox = Arc::new(Inbox::new());
        let worker = inbox.clone();
        std::thread::Builder::new()
            .name("netswitch-events".into())
            .spawn(move || deliver(worker, listener))
            .map_err(|e| NetswitchError::Io {
                context: "start the netswitch-events thread".into(),
                reason: e.to_string(),
            })?;
        let sink = crate::logging::add_log_sink(Arc::new(InboxLogs(inbox.clone())));
        *inbox.log_sink.lock().unwrap_or_else(PoisonError::into_inner) = Some(sink);
        let mut hub = self.lock();
        if hub.shut_down {
            drop(hub);
            inbox.end(State::Cancelled);
            return Err(NetswitchError::ShutDown);
        }
        hub.inboxes.push(inbox.clone());
        Ok(Arc::new(Subscription { inbox, hub: Arc::downgrade(self) }))
    }

    /// Queues the event `make` builds for every subscription; `make` runs only when there is
    /// one. Never blocks on a listener.
    pub fn broadcast(&self, make: impl FnOnce() -> Event) {
        let hub = self.lock();
        let Some((last, others)) = hub.inboxes.split_last() else { return };
        let event = make();
        for inbox in others {
            inbox.push(event.clone());
        }
        last.push(event);
    }

    /// Ends every subscription: each delivers what it already queued, then its thread stops;
    /// later subscribe calls fail with `ShutDown`. Idempotent.
    pub fn shut_down(&self) {
        let inboxes = {
            let mut hub = self.lock();
            hub.shut_down = true;
            std::mem::take(&mut hub.inboxes)
        };
        for inbox in inboxes {
            inbox.end(State::Draining);
        }
    }

    fn remove(&self, inbox: &Arc<Inbox>) {
        self.lock().inboxes.retain(|i| !Arc::ptr_eq(i, inbox));
    }
}

/// A live subscription (`ConnectionManager.subscribe`). It lasts until `cancel()` or the
/// manager's shutdown (`shutdown()`, `close()`), whichever comes first; releasing this handle
/// (Kotlin `close()`, garbage collection, Swift's last reference) does not end it.
#[derive(Debug, uniffi::Object)]
pub struct Subscription {
    inbox: Arc<Inbox>,
    hub: Weak<EventHub>,
}

#[uniffi::export]
impl Subscription {
    /// Stops the deliveries: no callback starts after this returns, except that a call already
    /// running (or, when cancelling from another thread, about to start) completes. Events still
    /// queued are discarded. Idempotent; may be called from inside a callback.
    pub fn cancel(&self) {
        self.inbox.end(State::Cancelled);
        if let Some(hub) = self.hub.upgrade() {
            hub.remove(&self.inbox);
        }
    }

    /// True until `cancel()` or the manager's shutdown.
    pub fn is_active(&self) -> bool {
        self.inbox.lock().state == State::Running
    }

    /// Events dropped so far because the listener was too slow (its queue was full).
    pub fn dropped_events(&self) -> u64 {
        self.inbox.events_dropped.load(Ordering::Relaxed)
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        if self.is_active() {
            tracing::debug!(
                "subscription handle released; the subscription lasts until cancel() or shutdown"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;
    use std::time::{Duration, Instant};

    use super::*;

    /// Records closed ids; blocks in every call while `gate` holds a receiver that is not fed.
    struct Listener {
        closed: Mutex<Vec<u64>>,
        gate: Option<Mutex<mpsc::Receiver<()>>>,
        entered: AtomicU64,
        throws: bool,
    }

    impl Listener {
        fn new(gate: Option<mpsc::Receiver<()>>, throws: bool) -> Arc<Listener> {
            let gate = gate.map(Mutex::new);
            Arc::new(Listener { closed: Mutex::new(Vec::new()), gate, entered: AtomicU64::new(0), throws })
        }
        fn closed(&self) -> Vec<u64> {
            self.closed.lock().unwrap().clone()
        }
    }

    impl EventListener for Listener {
        fn on_connection_opened(&self, _: ConnectionInfo) -> Result<(), NetswitchError> {
            Ok(())
        }
        fn on_connection_closed(&self, closed: ClosedConnection) -> Result<(), NetswitchError> {
            self.entered.fetch_add(1, Ordering::SeqCst);
            if let Some(gate) = &self.gate {
                let _ = gate.lock().unwrap().recv_timeout(Duration::from_secs(30));
            }
            self.closed.lock().unwrap().push(closed.id);
            if self.throws {
                return Err(NetswitchError::Callback { reason: "listener threw".into() });
            }
            Ok(())
        }
        fn on_network_changed(&self, _: NetworkChange) -> Result<(), NetswitchError> {
            Ok(())
        }
        fn on_log(&self, _: Vec<LogRecord>, _: u64) -> Result<(), NetswitchError> {
            Ok(())
        }
    }

    fn closed(id: u64) -> Event {
        Event::Closed(ClosedConnection {
            id,
            destination: "127.0.0.1:9".into(),
            network_type: None,
            interface: None,
            bytes_up: 0,
            bytes_down: 0,
            duration_ms: 0,
            error: None,
        })
    }

    fn wait_until(what: &str, condition: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !condition() {
            assert!(Instant::now() < deadline, "timed out waiting for: {what}");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn a_blocked_listener_loses_only_its_own_events_and_counts_them() {
        let hub = Arc::new(EventHub::default());
        let (release, gate) = mpsc::channel();
        let blocked = Listener::new(Some(gate), false);
        let throwing = Listener::new(None, true);
        let healthy = Listener::new(None, false);
        let blocked_sub = hub.subscribe(blocked.clone()).unwrap();
        let throwing_sub = hub.subscribe(throwing.clone()).unwrap();
        let healthy_sub = hub.subscribe(healthy.clone()).unwrap();
        let total = EVENT_QUEUE_CAPACITY as u64 + 100;
        hub.broadcast(|| closed(0));
        wait_until("the blocked listener is in its first call", || {
            blocked.entered.load(Ordering::SeqCst) == 1
        });
        // The blocked listener is stuck in its first call: broadcasting must still finish.
        let sender = {
            let hub = hub.clone();
            std::thread::spawn(move || (1..total).for_each(|id| hub.broadcast(|| closed(id))))
        };
        wait_until("broadcasting finished despite a blocked listener", || sender.is_finished());
        wait_until("the healthy listener got every event", || healthy.closed().len() as u64 == total);
        assert_eq!(healthy.closed(), (0..total).collect::<Vec<_>>(), "in order");
        wait_until("the throwing listener got every event", || throwing.closed().len() as u64 == total);
        assert_eq!(healthy_sub.dropped_events(), 0);
        assert_eq!(throwing_sub.dropped_events(), 0);
        for _ in 0..total {
            let _ = release.send(());
        }
        wait_until("the blocked listener caught up", || {
            blocked.closed().len() as u64 + blocked_sub.dropped_events() == total
        });
        // The event it was stuck in, then a full queue; the rest was dropped and counted.
        assert_eq!(blocked.closed().len(), EVENT_QUEUE_CAPACITY + 1);
        assert_eq!(blocked_sub.dropped_events(), total - 1 - EVENT_QUEUE_CAPACITY as u64);
    }

    #[test]
    fn cancel_and_shutdown_end_subscriptions() {
        let hub = Arc::new(EventHub::default());
        let first = Listener::new(None, false);
        let second = Listener::new(None, false);
        let first_sub = hub.subscribe(first.clone()).unwrap();
        let second_sub = hub.subscribe(second.clone()).unwrap();
        hub.broadcast(|| closed(1));
        wait_until("both got event 1", || first.closed() == [1] && second.closed() == [1]);
        first_sub.cancel();
        first_sub.cancel();
        assert!(!first_sub.is_active() && second_sub.is_active());
        hub.broadcast(|| closed(2));
        wait_until("the live one got event 2", || second.closed() == [1, 2]);
        assert_eq!(first.closed(), [1], "a cancelled subscription gets nothing");
        hub.shut_down();
        assert!(!second_sub.is_active());
        hub.broadcast(|| closed(3));
        assert!(matches!(hub.subscribe(Listener::new(None, false)), Err(NetswitchError::ShutDown)));
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(second.closed(), [1, 2], "nothing after shutdown");
    }
}
