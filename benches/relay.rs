//! Relay benchmark: a direct connection, a `tokio::io::copy_bidirectional` relay and netswitch's
//! `ConnectionManager`, side by side in one process on loopback.
//!
//! Run: `cargo bench --bench relay`. Prints bulk throughput (1 and 8 streams, upload and
//! download), connection setup latency p50/p99 and heap bytes per idle relayed connection, each
//! as a ratio to the copy_bidirectional baseline. Figures only; nothing is asserted.

use std::alloc::{GlobalAlloc, Layout, System};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use netswitch::dial::direct::connect as dial;
use netswitch::{ConnectionManager, DirectOutbound, Inbound, Metadata, Outbound, RelaySettings};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const MIB: u64 = 1024 * 1024;
/// Bytes moved by the single-stream run, per trial.
const ONE_STREAM_BYTES: u64 = 256 * MIB;
/// Bytes moved by each stream of the 8-stream run, per trial (same total as one stream).
const EIGHT_STREAM_BYTES: u64 = 32 * MIB;
/// Throughput trials per figure; the median is reported. Setups are interleaved per trial.
const TRIALS: usize = 5;
/// Sequential connections measured for setup latency, per setup.
const LATENCY_CONNECTIONS: usize = 2000;
/// The latency connections are split into this many interleaved rounds (noise hits all setups).
const LATENCY_ROUNDS: usize = 10;
/// Idle connections held open for the memory figure.
const IDLE_CONNECTIONS: usize = 1000;
/// Read/write size of the benchmark's own clients and server (identical for every setup).
const CHUNK: usize = 64 * 1024;
/// Bound on one connect or one small exchange.
const OP_TIMEOUT: Duration = Duration::from_secs(10);
/// Bound on one throughput trial, one latency round, or one idle-memory phase.
const PHASE_TIMEOUT: Duration = Duration::from_secs(120);
/// File descriptors needed: 1,000 idle connections through a relay use 4,000 plus listeners.
const FDS_NEEDED: u64 = 4 * IDLE_CONNECTIONS as u64 + 256;

/// What each idle connection sends once (mode byte `E` first); the server echoes it back.
const IDLE_MESSAGE: &[u8] = b"Ehello, idle connection";

/// Makes the binary measure one setup's idle cost in a fresh process (used by the main run).
const CHILD_FLAG: &str = "--idle-child";

static PATTERN: [u8; CHUNK] = [0x5a; CHUNK];

// ---------------------------------------------------------------- counting allocator

/// Wraps the system allocator and keeps the live and peak heap bytes of the whole process
/// (requested sizes; malloc's own per-chunk overhead is not included).
struct CountingAllocator;

static HEAP_NOW: AtomicUsize = AtomicUsize::new(0);
static HEAP_PEAK: AtomicUsize = AtomicUsize::new(0);

fn heap_grew(bytes: usize) {
    let now = HEAP_NOW.fetch_add(bytes, Ordering::Relaxed) + bytes;
    HEAP_PEAK.fetch_max(now, Ordering::Relaxed);
}

// SAFETY: every call is forwarded unchanged to `System`; the counters are only bookkeeping.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let pointer = unsafe { System.alloc(layout) };
        if !pointer.is_null() {
            heap_grew(layout.size());
        }
        pointer
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let pointer = unsafe { System.alloc_zeroed(layout) };
        if !pointer.is_null() {
            heap_grew(layout.size());
        }
        pointer
    }

    unsafe fn dealloc(&self, pointer: *mut u8, layout: Layout) {
        unsafe { System.dealloc(pointer, layout) };
        HEAP_NOW.fetch_sub(layout.size(), Ordering::Relaxed);
    }

    unsafe fn realloc(&self, pointer: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let moved = unsafe { System.realloc(pointer, layout, new_size) };
        if !moved.is_null() {
            if new_size >= layout.size() {
                heap_grew(new_size - layout.size());
            } else {
                HEAP_NOW.fetch_sub(layout.size() - new_size, Ordering::Relaxed);
            }
        }
        moved
    }
}

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

fn heap_now() -> i64 {
    HEAP_NOW.load(Ordering::Relaxed) as i64
}

/// Resident set size in bytes, from /proc/self/status (VmRSS).
fn rss_bytes() -> Result<i64, String> {
    let status =
        std::fs::read_to_string("/proc/self/status").map_err(|e| format!("read /proc/self/status: {e}"))?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse::<i64>().ok())
        .map(|kib| kib * 1024)
        .ok_or_else(|| "no VmRSS line in /proc/self/status".to_string())
}

/// The soft RLIMIT_NOFILE, from /proc/self/limits. nix is built without its "resource"
/// feature, so the benchmark cannot raise the limit itself; it checks it instead.
fn open_files_limit() -> Result<u64, String> {
    let limits =
        std::fs::read_to_string("/proc/self/limits").map_err(|e| format!("read /proc/self/limits: {e}"))?;
    let line = limits
        .lines()
        .find(|line| line.starts_with("Max open files"))
        .ok_or_else(|| "no 'Max open files' line in /proc/self/limits".to_string())?;
    let soft = line.split_whitespace().nth(3).unwrap_or("");
    if soft == "unlimited" {
        return Ok(u64::MAX);
    }
    soft.parse().map_err(|_| format!("cannot parse open files limit from {line:?}"))
}

// ---------------------------------------------------------------- the three setups

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Setup {
    Direct,
    CopyBidirectional,
    Netswitch,
}

const SETUPS: [Setup; 3] = [Setup::Direct, Setup::CopyBidirectional, Setup::Netswitch];

impl Setup {
    fn name(self) -> &'static str {
        match self {
            Setup::Direct => "direct",
            Setup::CopyBidirectional => "copy_bidirectional",
            Setup::Netswitch => "netswitch",
        }
    }
}

/// The loopback server, the two relays in front of it, and their live-connection counts.
struct Rig {
    server: SocketAddr,
    baseline: SocketAddr,
    netswitch: SocketAddr,
    server_live: Arc<AtomicUsize>,
    baseline_live: Arc<AtomicUsize>,
    manager: Arc<ConnectionManager>,
    relay_errors: Arc<Mutex<Vec<String>>>,
}

/// Decrements a live-connection count when a connection's task ends, however it ends.
struct LiveGuard(Arc<AtomicUsize>);

impl LiveGuard {
    fn new(count: &Arc<AtomicUsize>) -> LiveGuard {
        count.fetch_add(1, Ordering::SeqCst);
        LiveGuard(count.clone())
    }
}

impl Drop for LiveGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Rig {
    async fn start() -> Result<Rig, String> {
        let server_listener = bind().await?;
        let server = server_listener.local_addr().map_err(|e| format!("server local_addr: {e}"))?;
        let baseline_listener = bind().await?;
        let baseline = baseline_listener.local_addr().map_err(|e| format!("baseline local_addr: {e}"))?;
        let netswitch_listener = bind().await?;
        let netswitch = netswitch_listener.local_addr().map_err(|e| format!("netswitch local_addr: {e}"))?;
        let rig = Rig {
            server,
            baseline,
            netswitch,
            server_live: Arc::new(AtomicUsize::new(0)),
            baseline_live: Arc::new(AtomicUsize::new(0)),
            manager: Arc::new(ConnectionManager::new(RelaySettings::default())),
            relay_errors: Arc::new(Mutex::new(Vec::new())),
        };

        let live = rig.server_live.clone();
        accept_loop(server_listener, "server", move |stream| {
            let guard = LiveGuard::new(&live);
            tokio::spawn(async move {
                let _guard = guard;
                if let Err(e) = serve(stream).await {
                    eprintln!("server connection failed: {e}");
                }
            });
        });

        // The baseline relay: dial exactly as netswitch's DirectOutbound does (TCP_NODELAY on the
        // outbound socket), then copy_bidirectional with its two 8 KiB buffers.
        let (live, errors) = (rig.baseline_live.clone(), rig.relay_errors.clone());
        accept_loop(baseline_listener, "copy_bidirectional relay", move |mut client| {
            let (guard, errors) = (LiveGuard::new(&live), errors.clone());
            tokio::spawn(async move {
                let _guard = guard;
                let result = match dial(server, OP_TIMEOUT).await {
                    Ok(mut remote) => tokio::io::copy_bidirectional(&mut client, &mut remote)
                        .await
                        .map(|_| ())
                        .map_err(|e| e.to_string()),
                    Err(e) => Err(format!("dial {server}: {e}")),
                };
                if let Err(e) = result {
                    push_error(&errors, format!("copy_bidirectional: {e}"));
                }
            });
        });

        let (manager, errors) = (rig.manager.clone(), rig.relay_errors.clone());
        let outbound: Arc<dyn Outbound> = Arc::new(DirectOutbound::default());
        accept_loop(netswitch_listener, "netswitch relay", move |client| {
            let errors = errors.clone();
            manager.new_connection(Inbound::plain(client), Metadata::new(server.into()), outbound.clone(), {
                move |closed| {
                    if let Some(e) = closed.error {
                        push_error(&errors, format!("netswitch: {e}"));
                    }
                }
            });
        });
        Ok(rig)
    }

    fn address(&self, setup: Setup) -> SocketAddr {
        match setup {
            Setup::Direct => self.server,
            Setup::CopyBidirectional => self.baseline,
            Setup::Netswitch => self.netswitch,
        }
    }

    fn live(&self) -> (usize, usize, usize) {
        (
            self.server_live.load(Ordering::SeqCst),
            self.baseline_live.load(Ordering::SeqCst),
            self.manager.len(),
        )
    }

    /// Waits (bounded) until no connection is live anywhere, then lets the runtime settle.
    async fn settle(&self) -> Result<(), String> {
        wait_until(Duration::from_secs(20), "all connections to end", || self.live() == (0, 0, 0))
            .await
            .map_err(|e| format!("{e}; live (server, copy_bidirectional, netswitch) = {:?}", self.live()))?;
        tokio::time::sleep(Duration::from_millis(100)).await;
        Ok(())
    }
}

fn push_error(errors: &Mutex<Vec<String>>, error: String) {
    if let Ok(mut errors) = errors.lock() {
        errors.push(error);
    }
}

async fn bind() -> Result<TcpListener, String> {
    TcpListener::bind("127.0.0.1:0").await.map_err(|e| format!("bind 127.0.0.1:0: {e}"))
}

fn accept_loop(
    listener: TcpListener,
    what: &'static str,
    mut on_accept: impl FnMut(TcpStream) + Send + 'static,
) {
    tokio::spawn(async move {
        loop {
            match listener.accept().await {
                Ok((stream, _)) => on_accept(stream),
                Err(e) => {
                    eprintln!("{what}: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        }
    });
}

async fn wait_until(limit: Duration, what: &str, mut done: impl FnMut() -> bool) -> Result<(), String> {
    let deadline = Instant::now() + limit;
    while !done() {
        if Instant::now() > deadline {
            return Err(format!("timed out after {limit:?} waiting for {what}"));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(())
}

async fn bounded<T>(
    limit: Duration,
    what: &str,
    work: impl Future<Output = Result<T, String>>,
) -> Result<T, String> {
    tokio::time::timeout(limit, work).await.map_err(|_| format!("{what}: timed out after {limit:?}"))?
}

// ---------------------------------------------------------------- server and client

/// One server connection. The first byte picks the mode: `U` sink until EOF then answer the byte
/// count (8 bytes, big endian); `D` + u64 length: source that many bytes then close; `E` answer `E`
/// at once, then echo until EOF.
async fn serve(mut stream: TcpStream) -> std::io::Result<()> {
    match stream.read_u8().await? {
        b'U' => {
            let mut buffer = vec![0u8; CHUNK];
            let mut total = 0u64;
            loop {
                match stream.read(&mut buffer).await? {
                    0 => break,
                    n => total += n as u64,
                }
            }
            stream.write_u64(total).await?;
        }
        b'D' => {
            let mut left = stream.read_u64().await?;
            while left > 0 {
                let n = left.min(CHUNK as u64) as usize;
                stream.write_all(&PATTERN[..n]).await?;
                left -= n as u64;
            }
        }
        b'E' => {
            stream.write_all(b"E").await?;
            let mut buffer = [0u8; 256];
            loop {
                match stream.read(&mut buffer).await? {
                    0 => break,
                    n => stream.write_all(&buffer[..n]).await?,
                }
            }
        }
        other => eprintln!("server: unknown mode byte {other:#x}"),
    }
    stream.shutdown().await
}

async fn connect(address: SocketAddr) -> Result<TcpStream, String> {
    bounded(OP_TIMEOUT, "connect", async {
        TcpStream::connect(address).await.map_err(|e| format!("connect {address}: {e}"))
    })
    .await
}

#[derive(Debug, Clone, Copy)]
enum Direction {
    Upload,
    Download,
}

/// Moves `bytes` through one connection in `direction` and checks the count arrived whole.
async fn transfer(address: SocketAddr, direction: Direction, bytes: u64) -> Result<(), String> {
    let mut stream = connect(address).await?;
    let io = |e: std::io::Error| format!("{direction:?} via {address}: {e}");
    match direction {
        Direction::Upload => {
            stream.write_u8(b'U').await.map_err(io)?;
            let mut left = bytes;
            while left > 0 {
                let n = left.min(CHUNK as u64) as usize;
                stream.write_all(&PATTERN[..n]).await.map_err(io)?;
                left -= n as u64;
            }
            stream.shutdown().await.map_err(io)?;
            let received = stream.read_u64().await.map_err(io)?;
            if received != bytes {
                return Err(format!("upload via {address}: server got {received} of {bytes} bytes"));
            }
        }
        Direction::Download => {
            stream.write_u8(b'D').await.map_err(io)?;
            stream.write_u64(bytes).await.map_err(io)?;
            let mut buffer = vec![0u8; CHUNK];
            let mut received = 0u64;
            loop {
                match stream.read(&mut buffer).await.map_err(io)? {
                    0 => break,
                    n => received += n as u64,
                }
            }
            if received != bytes {
                return Err(format!("download via {address}: got {received} of {bytes} bytes"));
            }
        }
    }
    Ok(())
}

/// One throughput trial: `streams` parallel transfers of `per_stream` bytes. Returns MiB/s and
/// the heap peak above the start of the trial.
async fn throughput(
    address: SocketAddr,
    direction: Direction,
    streams: usize,
    per_stream: u64,
) -> Result<(f64, i64), String> {
    let heap_start = heap_now();
    HEAP_PEAK.store(HEAP_NOW.load(Ordering::Relaxed), Ordering::Relaxed);
    let started = Instant::now();
    let tasks: Vec<_> =
        (0..streams).map(|_| tokio::spawn(transfer(address, direction, per_stream))).collect();
    bounded(PHASE_TIMEOUT, "throughput trial", async {
        for task in tasks {
            task.await.map_err(|e| format!("transfer task failed: {e}"))??;
        }
        Ok(())
    })
    .await?;
    let seconds = started.elapsed().as_secs_f64();
    let peak = HEAP_PEAK.load(Ordering::Relaxed) as i64 - heap_start;
    Ok(((streams as u64 * per_stream) as f64 / MIB as f64 / seconds, peak))
}

/// Time from connect() start to the first byte of a 1-byte echo.
async fn setup_latency(address: SocketAddr) -> Result<Duration, String> {
    bounded(OP_TIMEOUT, "echo connection", async {
        let started = Instant::now();
        let mut stream = TcpStream::connect(address).await.map_err(|e| format!("connect {address}: {e}"))?;
        stream.write_all(b"E").await.map_err(|e| format!("echo write via {address}: {e}"))?;
        let answer = stream.read_u8().await.map_err(|e| format!("echo read via {address}: {e}"))?;
        let elapsed = started.elapsed();
        if answer != b'E' {
            return Err(format!("echo via {address}: answer {answer:#x}, expected 'E'"));
        }
        Ok(elapsed)
    })
    .await
}

/// Heap and RSS growth per connection with `count` idle connections open through `setup`.
struct IdleCost {
    heap: f64,
    rss: f64,
    leaked: i64,
}

async fn idle_cost(rig: &Rig, setup: Setup, count: usize) -> Result<IdleCost, String> {
    rig.settle().await?;
    let address = rig.address(setup);
    let mut clients = Vec::with_capacity(count);
    let message = IDLE_MESSAGE;
    let mut answer = [0u8; IDLE_MESSAGE.len()];
    let (heap_before, rss_before) = (heap_now(), rss_bytes()?);
    bounded(PHASE_TIMEOUT, "opening idle connections", async {
        for _ in 0..count {
            let mut stream = connect(address).await?;
            bounded(OP_TIMEOUT, "idle exchange", async {
                stream.write_all(message).await.map_err(|e| format!("write via {address}: {e}"))?;
                stream.read_exact(&mut answer).await.map_err(|e| format!("read via {address}: {e}"))
            })
            .await?;
            if answer[1..] != message[1..] {
                return Err(format!("echo via {address} returned different bytes"));
            }
            clients.push(stream);
        }
        Ok(())
    })
    .await?;
    let relayed = |rig: &Rig| match setup {
        Setup::Direct => count,
        Setup::CopyBidirectional => rig.baseline_live.load(Ordering::SeqCst),
        Setup::Netswitch => rig.manager.len(),
    };
    wait_until(OP_TIMEOUT, "every idle connection to be live", || {
        rig.server_live.load(Ordering::SeqCst) == count && relayed(rig) == count
    })
    .await?;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (heap_idle, rss_idle) = (heap_now(), rss_bytes()?);
    drop(clients);
    rig.settle().await?;
    Ok(IdleCost {
        heap: (heap_idle - heap_before) as f64 / count as f64,
        rss: (rss_idle - rss_before) as f64 / count as f64,
        leaked: heap_now() - heap_before,
    })
}

/// Child-process mode: one setup's idle cost in a fresh process, printed as one `IDLE` line.
async fn idle_child(setup: Setup) -> Result<(), String> {
    let rig = Rig::start().await?;
    // A few connections first, so lazily created state (the relay's per-worker buffer pools,
    // tokio's timer) exists before the measurement starts.
    for _ in 0..8 {
        setup_latency(rig.address(setup)).await?;
    }
    let cost = idle_cost(&rig, setup, IDLE_CONNECTIONS).await?;
    println!("IDLE {} {} {}", cost.heap, cost.rss, cost.leaked);
    Ok(())
}

/// Runs [`idle_child`] for `setup` in a child process (this same binary) and reads its figures.
async fn idle_cost_in_child(setup: Setup) -> Result<IdleCost, String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot find this benchmark's binary: {e}"))?;
    let output = bounded(PHASE_TIMEOUT, "idle-memory child process", async {
        tokio::process::Command::new(&exe)
            .args([CHILD_FLAG, setup.name()])
            .stderr(std::process::Stdio::inherit())
            .kill_on_drop(true)
            .output()
            .await
            .map_err(|e| format!("run {} {CHILD_FLAG} {}: {e}", exe.display(), setup.name()))
    })
    .await?;
    if !output.status.success() {
        return Err(format!("idle-memory child for {} failed: {}", setup.name(), output.status));
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let figures: Vec<f64> = stdout
        .lines()
        .find_map(|line| line.strip_prefix("IDLE "))
        .map(|rest| rest.split_whitespace().filter_map(|v| v.parse().ok()).collect())
        .unwrap_or_default();
    match figures[..] {
        [heap, rss, leaked] => Ok(IdleCost { heap, rss, leaked: leaked as i64 }),
        _ => Err(format!("idle-memory child for {} printed no figures: {stdout:?}", setup.name())),
    }
}

// ---------------------------------------------------------------- the run and the table

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(|a, b| a.total_cmp(b));
    values.get(values.len() / 2).copied().unwrap_or(f64::NAN)
}

/// One table row: a figure for direct, copy_bidirectional and netswitch.
struct Row {
    label: String,
    values: [f64; 3],
    vs_direct: bool,
}

fn print_table(title: &str, unit: &str, rows: &[Row]) {
    println!("\n{title} ({unit})");
    println!(
        "  {:<34} {:>11} {:>11} {:>11} {:>10} {:>10} {:>10}",
        "", "direct", "copy_bidir", "netswitch", "ns/copy", "ns/direct", "copy/dir"
    );
    for row in rows {
        let [direct, copy, ours] = row.values;
        let ratio =
            |a: f64, b: f64| if b != 0.0 && b.is_finite() { format!("{:.2}x", a / b) } else { "-".into() };
        let (ns_direct, copy_direct) =
            if row.vs_direct { (ratio(ours, direct), ratio(copy, direct)) } else { ("-".into(), "-".into()) };
        let number = |v: f64| if v.is_finite() { format!("{v:.0}") } else { "-".into() };
        println!(
            "  {:<34} {:>11} {:>11} {:>11} {:>10} {:>10} {:>10}",
            row.label,
            number(direct),
            number(copy),
            number(ours),
            ratio(ours, copy),
            ns_direct,
            copy_direct
        );
    }
}

/// Bulk throughput rows, and the heap peak row of the 8-stream upload. Every trial runs the three
/// setups back to back, so noise from the machine hits them alike.
async fn throughput_phase(rig: &Rig) -> Result<(Vec<Row>, Row), String> {
    let shapes = [
        (Direction::Upload, 1, ONE_STREAM_BYTES),
        (Direction::Upload, 8, EIGHT_STREAM_BYTES),
        (Direction::Download, 1, ONE_STREAM_BYTES),
        (Direction::Download, 8, EIGHT_STREAM_BYTES),
    ];
    let mut throughput_rows = Vec::new();
    let mut peak_row = [0f64; 3];
    for (direction, streams, per_stream) in shapes {
        let mut samples = [Vec::new(), Vec::new(), Vec::new()];
        for _ in 0..TRIALS {
            for (i, setup) in SETUPS.into_iter().enumerate() {
                rig.settle().await?;
                let (mib_s, peak) = throughput(rig.address(setup), direction, streams, per_stream).await?;
                samples[i].push(mib_s);
                if streams == 8 && matches!(direction, Direction::Upload) {
                    peak_row[i] = peak_row[i].max(peak as f64 / 1024.0);
                }
            }
        }
        let label =
            format!("{} {streams} x {} MiB", format!("{direction:?}").to_lowercase(), per_stream / MIB);
        for (setup, values) in SETUPS.iter().zip(&samples) {
            let values: Vec<String> = values.iter().map(|v| format!("{v:.0}")).collect();
            println!("  {label:<20} {:<18} MiB/s per trial: {}", setup.name(), values.join(" "));
        }
        throughput_rows.push(Row { label, values: samples.map(median), vs_direct: true });
    }
    Ok((throughput_rows, Row { label: "peak".into(), values: peak_row, vs_direct: false }))
}

/// Setup latency p50/p99 rows: a warm-up round, then interleaved rounds of sequential connections.
async fn latency_phase(rig: &Rig) -> Result<Vec<Row>, String> {
    let mut latencies: [Vec<Duration>; 3] = [Vec::new(), Vec::new(), Vec::new()];
    for round in 0..=LATENCY_ROUNDS {
        for (i, setup) in SETUPS.into_iter().enumerate() {
            rig.settle().await?;
            let per_round = LATENCY_CONNECTIONS / LATENCY_ROUNDS;
            let address = rig.address(setup);
            let measured = bounded(PHASE_TIMEOUT, "latency round", async {
                let mut measured = Vec::with_capacity(per_round);
                for _ in 0..per_round {
                    measured.push(setup_latency(address).await?);
                }
                Ok(measured)
            })
            .await?;
            if round > 0 {
                latencies[i].extend(measured); // round 0 is the warm-up
            }
        }
    }
    let percentile = |values: &mut Vec<Duration>, p: usize| {
        values.sort();
        values.get(values.len() * p / 100).map_or(f64::NAN, |d| d.as_secs_f64() * 1e6)
    };
    Ok(vec![
        Row { label: "p50".into(), values: latencies.each_mut().map(|v| percentile(v, 50)), vs_direct: true },
        Row { label: "p99".into(), values: latencies.each_mut().map(|v| percentile(v, 99)), vs_direct: true },
    ])
}

/// Idle memory rows: one fresh child process per setup, so RSS is not hidden by memory that the
/// allocator kept from earlier phases.
async fn memory_phase() -> Result<Vec<Row>, String> {
    let mut idle = Vec::new();
    for setup in SETUPS {
        let cost = idle_cost_in_child(setup).await?;
        if cost.leaked.abs() > 64 * 1024 {
            println!(
                "  note: {}: heap after closing all is {} bytes above the start",
                setup.name(),
                cost.leaked
            );
        }
        idle.push(cost);
    }
    let own = |f: fn(&IdleCost) -> f64| [f64::NAN, f(&idle[1]) - f(&idle[0]), f(&idle[2]) - f(&idle[0])];
    Ok(vec![
        Row {
            label: "heap, whole process".into(),
            values: [idle[0].heap, idle[1].heap, idle[2].heap],
            vs_direct: false,
        },
        Row { label: "heap, relay's own (minus direct)".into(), values: own(|c| c.heap), vs_direct: false },
        Row {
            label: "RSS, whole process".into(),
            values: [idle[0].rss, idle[1].rss, idle[2].rss],
            vs_direct: false,
        },
        Row { label: "RSS, relay's own (minus direct)".into(), values: own(|c| c.rss), vs_direct: false },
    ])
}

async fn run() -> Result<(), String> {
    let rig = Rig::start().await?;
    println!(
        "loopback server {}, copy_bidirectional relay {}, netswitch relay {}",
        rig.server, rig.baseline, rig.netswitch
    );
    let (throughput_rows, peak_row) = throughput_phase(&rig).await?;
    let latency_rows = latency_phase(&rig).await?;
    let memory_rows = memory_phase().await?;

    println!("\n=== netswitch relay benchmark: loopback, tokio multi-thread runtime with 2 workers ===");
    print_table(&format!("Bulk throughput, median of {TRIALS} trials"), "MiB/s", &throughput_rows);
    print_table("Heap peak above start during the 8-stream upload", "KiB", &[peak_row]);
    print_table(
        &format!(
            "Connection setup latency, connect() to first echoed byte, {LATENCY_CONNECTIONS} sequential"
        ),
        "µs",
        &latency_rows,
    );
    print_table(
        &format!("Memory per idle connection, {IDLE_CONNECTIONS} connections, fresh process per setup"),
        "bytes",
        &memory_rows,
    );
    let errors = rig.relay_errors.lock().map(|e| e.clone()).unwrap_or_default();
    println!("\nrelay connections that ended with an error: {}", errors.len());
    for error in errors.iter().take(5) {
        println!("  {error}");
    }
    println!("command: cargo bench --bench relay");
    Ok(())
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --all-targets` runs this binary without it.
    if !std::env::args().any(|a| a == "--bench") && !std::env::args().any(|a| a == CHILD_FLAG) {
        println!("benchmark not run: use `cargo bench --bench relay` (built and started by cargo test only)");
        return;
    }
    match open_files_limit() {
        Ok(limit) if limit >= FDS_NEEDED => {}
        Ok(limit) => {
            eprintln!(
                "error: the open files limit is {limit}, this benchmark needs {FDS_NEEDED} \
                 (nix's \"resource\" feature is off, so it cannot raise it): run `ulimit -n 8192` first"
            );
            std::process::exit(1);
        }
        Err(e) => eprintln!("warning: could not read the open files limit ({e}); continuing"),
    }
    let args: Vec<String> = std::env::args().collect();
    let child = args.iter().position(|a| a == CHILD_FLAG).map(|i| args.get(i + 1).map(String::as_str));
    let child = match child {
        None => None,
        Some(name) => match SETUPS.into_iter().find(|s| Some(s.name()) == name) {
            Some(setup) => Some(setup),
            None => {
                eprintln!("error: {CHILD_FLAG} needs one of direct, copy_bidirectional, netswitch");
                std::process::exit(1);
            }
        },
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot build the tokio runtime: {e}");
            std::process::exit(1);
        }
    };
    // The whole run is a task, so every client, relay and server runs on the two workers.
    let outcome = runtime.block_on(async {
        match child {
            Some(setup) => tokio::spawn(idle_child(setup)).await,
            None => tokio::spawn(run()).await,
        }
    });
    match outcome {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
        Err(e) => {
            eprintln!("error: benchmark task failed: {e}");
            std::process::exit(1);
        }
    }
}
