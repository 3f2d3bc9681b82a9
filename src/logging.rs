//! Logging setup: one global `tracing` subscriber for the whole process.
//!
//! Where records go: human-readable lines on stderr on desktop, os_log on Apple platforms
//! (subsystem `dev.netswitch`), logcat on Android (tag `netswitch`, through the `log` crate), and
//! on every platform to the host's [`LogSink`]s (the FFI subscriptions), batched through a
//! bounded queue: when the host is slow the queue fills and further records are dropped and
//! counted, so logging never blocks a relay.
//!
//! The level applies to every destination and can be changed at any time with
//! [`set_log_level`] (a reloadable filter: records below the level cost one relaxed load).

use std::collections::VecDeque;
use std::fmt;
#[cfg(not(any(target_vendor = "apple", target_os = "android")))]
use std::io::IsTerminal;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock, PoisonError};
use std::time::SystemTime;

use tracing::field::{Field, Visit};
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};
use tracing_subscriber::reload;
use tracing_subscriber::util::SubscriberInitExt;

/// How much to log, from the most verbose to the least.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    /// Everything, including per-read details.
    Trace,
    /// Per-connection events (connection finished, dial attempts).
    Debug,
    /// Service events and connection errors. The default.
    #[default]
    Info,
    /// Problems that do not stop the service.
    Warn,
    /// Only failures.
    Error,
}

impl LogLevel {
    /// Every level's name, as accepted by [`LogLevel::from_str`] and the config file.
    pub const NAMES: [&'static str; 5] = ["trace", "debug", "info", "warn", "error"];

    /// The level's name in lowercase ("info").
    pub fn as_str(self) -> &'static str {
        match self {
            LogLevel::Trace => "trace",
            LogLevel::Debug => "debug",
            LogLevel::Info => "info",
            LogLevel::Warn => "warn",
            LogLevel::Error => "error",
        }
    }

    fn filter(self) -> LevelFilter {
        match self {
            LogLevel::Trace => LevelFilter::TRACE,
            LogLevel::Debug => LevelFilter::DEBUG,
            LogLevel::Info => LevelFilter::INFO,
            LogLevel::Warn => LevelFilter::WARN,
            LogLevel::Error => LevelFilter::ERROR,
        }
    }
}

impl fmt::Display for LogLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A log level name that is not one of trace, debug, info, warn, error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown log level {0:?} (expected one of trace, debug, info, warn, error)")]
pub struct UnknownLogLevel(pub String);

impl FromStr for LogLevel {
    type Err = UnknownLogLevel;

    /// Parses a level name, ignoring ASCII case ("INFO" = "info").
    fn from_str(text: &str) -> Result<LogLevel, UnknownLogLevel> {
        match text.to_ascii_lowercase().as_str() {
            "trace" => Ok(LogLevel::Trace),
            "debug" => Ok(LogLevel::Debug),
            "info" => Ok(LogLevel::Info),
            "warn" => Ok(LogLevel::Warn),
            "error" => Ok(LogLevel::Error),
            _ => Err(UnknownLogLevel(text.to_string())),
        }
    }
}

/// Why logging could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoggingError {
    /// Another global `tracing` subscriber (or `log` logger) was installed by someone else.
    #[error("cannot install the log subscriber: {0}")]
    AlreadyInstalled(#[source] tracing_subscriber::util::TryInitError),
    /// The level filter could not be changed (its subscriber is gone).
    #[error("cannot change the log level: {0}")]
    Reload(#[source] reload::Error),
}

/// Changes the level of the installed subscriber.
type LevelHandle = reload::Handle<LevelFilter, tracing_subscriber::Registry>;

/// The installed subscriber's level handle; `None` until [`init_logging`] succeeded.
static INSTALLED: Mutex<Option<LevelHandle>> = Mutex::new(None);

/// Installs the process-wide log subscriber at `level`: formatted lines on stderr on desktop
/// (colours only when stderr is a terminal), os_log on Apple, logcat on Android, plus the host
/// sinks registered with [`add_log_sink`] everywhere.
///
/// Idempotent: once it succeeded, later calls do nothing and return `Ok` (the level stays as it
/// is; [`set_log_level`] changes it). Fails only when a different global subscriber was
/// installed by someone else.
pub fn init_logging(level: LogLevel) -> Result<(), LoggingError> {
    let mut installed = INSTALLED.lock().unwrap_or_else(PoisonError::into_inner);
    if installed.is_some() {
        return Ok(());
    }
    let (filter, handle) = reload::Layer::new(level.filter());
    let registry = tracing_subscriber::registry().with(filter).with(HostLayer);
    #[cfg(target_vendor = "apple")]
    let result = registry.with(tracing_oslog::OsLogger::new("dev.netswitch", "default")).try_init();
    #[cfg(target_os = "android")]
    let result = {
        android_logger::init_once(
            android_logger::Config::default().with_max_level(log::LevelFilter::Trace).with_tag("netswitch"),
        );
        registry.with(android::LogcatLayer).try_init()
    };
    #[cfg(not(any(target_vendor = "apple", target_os = "android")))]
    let result = registry
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(std::io::stderr().is_terminal()),
        )
        .try_init();
    result.map_err(LoggingError::AlreadyInstalled)?;
    *installed = Some(handle);
    Ok(())
}

/// Sets the level of every log destination, effective for the next record (a record being
/// delivered is not recalled). Installs the subscriber at `level` when [`init_logging`] has not
/// run yet; fails, like it, only when someone else installed a global subscriber.
pub fn set_log_level(level: LogLevel) -> Result<(), LoggingError> {
    let installed = INSTALLED.lock().unwrap_or_else(PoisonError::into_inner);
    match installed.as_ref() {
        Some(handle) => handle.modify(|filter| *filter = level.filter()).map_err(LoggingError::Reload),
        None => {
            drop(installed);
            init_logging(level)
        }
    }
}

/// The level in force, `None` before [`init_logging`] (or when the level filter is off).
pub fn log_level() -> Option<LogLevel> {
    let installed = INSTALLED.lock().unwrap_or_else(PoisonError::into_inner);
    let filter = installed.as_ref()?.clone_current()?;
    [LogLevel::Trace, LogLevel::Debug, LogLevel::Info, LogLevel::Warn, LogLevel::Error]
        .into_iter()
        .find(|level| level.filter() == filter)
}

/// One log record as a host sink receives it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct LogLine {
    /// The record's level.
    pub level: LogLevel,
    /// The module that logged it (`netswitch::manager`).
    pub target: String,
    /// The message followed by its fields as `key=value`.
    pub message: String,
    /// When it was logged.
    pub timestamp: SystemTime,
}

/// A host that wants log records (the FFI event listener). Called from the `netswitch-log`
/// thread, never from a relay; may be slow (records are queued meanwhile, then dropped and
/// counted once [`HOST_QUEUE_CAPACITY`] are waiting).
pub trait LogSink: Send + Sync {
    /// A batch of records in the order they were logged, and how many records were dropped
    /// (queue full) since the previous batch.
    fn deliver(&self, records: Vec<LogLine>, dropped: u64);
}

/// How many records may wait for the host sinks; beyond this they are dropped and counted.
pub const HOST_QUEUE_CAPACITY: usize = 4096;
/// The most records handed to a sink in one [`LogSink::deliver`] call.
pub const HOST_BATCH_SIZE: usize = 256;

/// Identifies a sink registered with [`add_log_sink`].
pub type LogSinkId = u64;

/// The bounded queue between the tracing layer and the delivery thread.
struct HostQueue {
    active: AtomicBool,
    dropped: AtomicU64,
    next_id: AtomicU64,
    records: Mutex<VecDeque<LogLine>>,
    ready: Condvar,
    sinks: Mutex<Vec<(LogSinkId, Arc<dyn LogSink>)>>,
}

static HOST_QUEUE: HostQueue = HostQueue {
    active: AtomicBool::new(false),
    dropped: AtomicU64::new(0),
    next_id: AtomicU64::new(1),
    records: Mutex::new(VecDeque::new()),
    ready: Condvar::new(),
    sinks: Mutex::new(Vec::new()),
};

static DELIVERY_THREAD: OnceLock<bool> = OnceLock::new();

/// Starts sending every record that passes the level filter to `sink` (in batches, from the
/// `netswitch-log` thread) until [`remove_log_sink`]. Records are only captured while at least
/// one sink is registered. Needs [`init_logging`] to have run for records to flow.
pub fn add_log_sink(sink: Arc<dyn LogSink>) -> LogSinkId {
    let id = HOST_QUEUE.next_id.fetch_add(1, Ordering::Relaxed);
    let mut sinks = HOST_QUEUE.sinks.lock().unwrap_or_else(PoisonError::into_inner);
    sinks.push((id, sink));
    HOST_QUEUE.active.store(true, Ordering::Release);
    drop(sinks);
    DELIVERY_THREAD.get_or_init(|| {
        std::thread::Builder::new().name("netswitch-log".into()).spawn(deliver_forever).is_ok()
    });
    id
}

/// Stops sending records to the sink `id` (records already queued may still reach it in the
/// batch being delivered). Unknown ids are ignored.
pub fn remove_log_sink(id: LogSinkId) {
    let mut sinks = HOST_QUEUE.sinks.lock().unwrap_or_else(PoisonError::into_inner);
    sinks.retain(|(sink_id, _)| *sink_id != id);
    if sinks.is_empty() {
        HOST_QUEUE.active.store(false, Ordering::Release);
    }
}

/// The delivery thread: waits for records, hands them out in batches, forever.
fn deliver_forever() {
    loop {
        let batch: Vec<LogLine> = {
            let mut records = HOST_QUEUE.records.lock().unwrap_or_else(PoisonError::into_inner);
            while records.is_empty() {
                records = HOST_QUEUE.ready.wait(records).unwrap_or_else(PoisonError::into_inner);
            }
            let take = records.len().min(HOST_BATCH_SIZE);
            records.drain(..take).collect()
        };
        let dropped = HOST_QUEUE.dropped.swap(0, Ordering::Relaxed);
        let sinks: Vec<Arc<dyn LogSink>> = HOST_QUEUE
            .sinks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|(_, sink)| sink.clone())
            .collect();
        for sink in sinks {
            let records = batch.clone();
            // A panicking sink must not kill log delivery for the others.
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| sink.deliver(records, dropped)));
        }
    }
}

/// Queues one record for the host sinks; drops (and counts) it when the queue is full.
fn enqueue(line: LogLine) {
    let mut records = HOST_QUEUE.records.lock().unwrap_or_else(PoisonError::into_inner);
    if records.len() >= HOST_QUEUE_CAPACITY {
        HOST_QUEUE.dropped.fetch_add(1, Ordering::Relaxed);
        return;
    }
    records.push_back(line);
    drop(records);
    HOST_QUEUE.ready.notify_one();
}

/// The tracing layer feeding the host queue (cheap no-op while no sink is registered).
struct HostLayer;

impl<S: tracing::Subscriber> Layer<S> for HostLayer {
    fn on_event(&self, event: &tracing::Event<'_>, _: Context<'_, S>) {
        if !HOST_QUEUE.active.load(Ordering::Acquire) {
            return;
        }
        let metadata = event.metadata();
        enqueue(LogLine {
            level: level_of(metadata.level()),
            target: metadata.target().to_string(),
            message: format_event(event),
            timestamp: SystemTime::now(),
        });
    }
}

fn level_of(level: &tracing::Level) -> LogLevel {
    match *level {
        tracing::Level::TRACE => LogLevel::Trace,
        tracing::Level::DEBUG => LogLevel::Debug,
        tracing::Level::INFO => LogLevel::Info,
        tracing::Level::WARN => LogLevel::Warn,
        tracing::Level::ERROR => LogLevel::Error,
    }
}

/// "message key=value key=value".
fn format_event(event: &tracing::Event<'_>) -> String {
    struct Line(String);
    impl Visit for Line {
        fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
            use std::fmt::Write;
            let separator = if self.0.is_empty() { "" } else { " " };
            let _ = if field.name() == "message" {
                write!(self.0, "{separator}{value:?}")
            } else {
                write!(self.0, "{separator}{}={value:?}", field.name())
            };
        }
        fn record_str(&mut self, field: &Field, value: &str) {
            self.record_debug(field, &format_args!("{value}"));
        }
    }
    let mut line = Line(String::new());
    event.record(&mut line);
    line.0
}

/// Android: every event goes to logcat through the `log` crate (android_logger).
#[cfg(target_os = "android")]
mod android {
    use tracing_subscriber::layer::{Context, Layer};

    /// Forwards tracing events to the `log` facade.
    pub(super) struct LogcatLayer;

    impl<S: tracing::Subscriber> Layer<S> for LogcatLayer {
        fn on_event(&self, event: &tracing::Event<'_>, _: Context<'_, S>) {
            let metadata = event.metadata();
            let level = match *metadata.level() {
                tracing::Level::TRACE => log::Level::Trace,
                tracing::Level::DEBUG => log::Level::Debug,
                tracing::Level::INFO => log::Level::Info,
                tracing::Level::WARN => log::Level::Warn,
                tracing::Level::ERROR => log::Level::Error,
            };
            log::log!(target: metadata.target(), level, "{}", super::format_event(event));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_level_name_case_insensitively() {
        for name in LogLevel::NAMES {
            let level: LogLevel = name.parse().unwrap();
            assert_eq!(level.as_str(), name);
            assert_eq!(name.to_uppercase().parse::<LogLevel>().unwrap(), level);
        }
        assert_eq!(LogLevel::default(), LogLevel::Info);
    }

    #[test]
    fn rejects_an_unknown_level_and_names_it() {
        let error = "verbose".parse::<LogLevel>().unwrap_err();
        assert!(error.to_string().contains("\"verbose\""), "{error}");
    }

    /// A sink that blocks until released, then counts marker records and drops.
    struct SlowSink {
        release: Mutex<std::sync::mpsc::Receiver<()>>,
        marker: &'static str,
        delivered: AtomicU64,
        dropped: AtomicU64,
    }

    impl LogSink for SlowSink {
        fn deliver(&self, records: Vec<LogLine>, dropped: u64) {
            let _ = self.release.lock().unwrap().recv_timeout(std::time::Duration::from_secs(10));
            let marked = records.iter().filter(|r| r.message.contains(self.marker)).count() as u64;
            self.delivered.fetch_add(marked, Ordering::SeqCst);
            self.dropped.fetch_add(dropped, Ordering::SeqCst);
        }
    }

    #[test]
    fn a_slow_sink_never_blocks_logging_and_drops_are_counted() {
        init_logging(LogLevel::Info).unwrap();
        let (release, blocked) = std::sync::mpsc::channel();
        let sink = Arc::new(SlowSink {
            release: Mutex::new(blocked),
            marker: "slow-sink-marker",
            delivered: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
        });
        let id = add_log_sink(sink.clone());
        // Error level: passes whatever level another test installed first.
        const COUNT: u64 = HOST_QUEUE_CAPACITY as u64 + 1000;
        // The sink is stuck in its first delivery: logging must still finish (bounded by a thread
        // join with a deadline below) and overflow the queue.
        let logger = std::thread::spawn(|| {
            for i in 0..COUNT {
                tracing::error!(i, "slow-sink-marker");
            }
        });
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while !logger.is_finished() {
            assert!(std::time::Instant::now() < deadline, "logging blocked on a slow sink");
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        for _ in 0..COUNT {
            let _ = release.send(());
        }
        // Everything queued is delivered; everything else was counted as dropped.
        let done = || {
            sink.delivered.load(Ordering::SeqCst) + sink.dropped.load(Ordering::SeqCst) >= COUNT
                && HOST_QUEUE.records.lock().unwrap().is_empty()
        };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while !done() {
            assert!(std::time::Instant::now() < deadline, "records neither delivered nor counted");
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        remove_log_sink(id);
        let delivered = sink.delivered.load(Ordering::SeqCst);
        assert!(delivered > 0, "nothing delivered");
        assert!(
            delivered <= (HOST_QUEUE_CAPACITY + HOST_BATCH_SIZE) as u64,
            "queue not bounded: {delivered}"
        );
        assert!(sink.dropped.load(Ordering::SeqCst) >= COUNT - delivered);
    }

    #[test]
    fn second_init_is_a_no_op_and_the_level_changes_at_runtime() {
        init_logging(LogLevel::Warn).unwrap();
        let first = log_level().expect("installed");
        init_logging(LogLevel::Trace).unwrap();
        assert_eq!(log_level(), Some(first), "a second init keeps the level");
        for level in [LogLevel::Debug, LogLevel::Error, LogLevel::Info] {
            set_log_level(level).unwrap();
            assert_eq!(log_level(), Some(level));
            assert_eq!(LevelFilter::current(), level.filter(), "the global max level follows");
        }
    }
}
