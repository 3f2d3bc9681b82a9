//! The hand-written TCP connection task under adversity, over real loopback sockets: close
//! requests arriving while the task is parked in each of its states (dialing, relaying with a
//! spliced direction backed up, in the half-close drain), a slow reader after a half-close, early
//! data and FIN sent before the dial completes, a peer reset in a spliced transfer, and closes
//! racing the task from another thread. After each scenario: `on_close` exactly once, the tracker
//! empty and the process's descriptors back where they were.
//!
//! The tests of this binary run one at a time (`SERIAL`), so that descriptor counts are not
//! disturbed by a neighbour.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use common::*;
use netswitch::dial::{BoxFuture, DialError, DialedStream, LazyHandshake};
use netswitch::relay::Side;
use netswitch::tracker::ConnectionState;
use netswitch::{
    ClosedConnection, ConnectionError, ConnectionId, ConnectionManager, DirectOutbound, Inbound, Metadata,
    Outbound, RelaySettings,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::timeout;

static SERIAL: Mutex<()> = Mutex::new(());

/// Runs `test` on a runtime of its own (two workers), alone: the lock is taken before the runtime
/// exists, so no other test's runtime or sockets come and go while descriptors are counted.
fn run(test: impl std::future::Future<Output = ()>) {
    let _serial: MutexGuard<'_, ()> = SERIAL.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    runtime.block_on(test);
}

/// One `#[test]` per scenario, each run by [`run`].
macro_rules! serial_tests {
    ($($name:ident),* $(,)?) => {
        mod serial {
            $(#[test]
            fn $name() {
                super::run(super::$name());
            })*
        }
    };
}

serial_tests!(
    close_while_dialing_ends_the_connection_promptly,
    close_while_a_backed_up_direction_splices_ends_it_promptly,
    close_during_the_half_close_drain_ends_it_promptly,
    a_slow_reader_after_a_half_close_gets_the_whole_answer,
    early_data_and_fin_before_the_dial_completes_reach_the_server,
    a_client_reset_in_a_spliced_download_ends_the_connection_once,
    closes_racing_the_task_from_another_thread_are_never_lost,
    a_panic_in_the_setup_resets_both_sockets,
);

/// How long a close request may take to end a connection and report it.
const PROMPT: Duration = Duration::from_secs(1);

/// Open descriptors of this process: (pipes, everything else).
fn fds() -> (usize, usize) {
    let Ok(entries) = std::fs::read_dir("/proc/self/fd") else { return (0, 0) };
    let mut pipes = 0;
    let mut others = 0;
    for entry in entries.flatten() {
        match std::fs::read_link(entry.path()) {
            Ok(target) if target.to_string_lossy().starts_with("pipe:") => pipes += 1,
            _ => others += 1,
        }
    }
    (pipes, others)
}

/// Waits until the process holds no more non-pipe descriptors than `baseline` and at most the
/// splice pipes the relay pools (4 per worker thread, 2 descriptors each, 2 workers) beyond it.
async fn assert_fds_back(baseline: (usize, usize)) {
    const POOLED_PIPE_FDS: usize = 2 * 4 * 2;
    let deadline = Instant::now() + WAIT;
    let mut now = fds();
    while (now.1 > baseline.1 || now.0 > baseline.0 + POOLED_PIPE_FDS) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
        now = fds();
    }
    assert!(now.1 <= baseline.1, "descriptors: {} now, {} before (pipes apart)", now.1, baseline.1);
    assert!(now.0 <= baseline.0 + POOLED_PIPE_FDS, "pipe descriptors: {} now, {} before", now.0, baseline.0);
}

/// An outbound that never finishes dialing.
struct NeverConnects;

impl Outbound for NeverConnects {
    fn dial_tcp<'a>(&'a self, _: &'a Metadata) -> BoxFuture<'a, Result<DialedStream, DialError>> {
        Box::pin(std::future::pending())
    }
}

/// The direct outbound, after a delay.
struct SlowDial(Duration);

impl Outbound for SlowDial {
    fn dial_tcp<'a>(&'a self, metadata: &'a Metadata) -> BoxFuture<'a, Result<DialedStream, DialError>> {
        Box::pin(async move {
            tokio::time::sleep(self.0).await;
            DirectOutbound::default().dial_tcp(metadata).await
        })
    }
}

/// The direct outbound with a lazy handshake that panics when it is completed (after the dial,
/// once the client's first bytes were read).
struct PanickingHandshake;

impl Outbound for PanickingHandshake {
    fn dial_tcp<'a>(&'a self, metadata: &'a Metadata) -> BoxFuture<'a, Result<DialedStream, DialError>> {
        Box::pin(async move {
            let mut dialed = DirectOutbound::default().dial_tcp(metadata).await?;
            dialed.handshake = Some(Box::new(PanicsInComplete));
            Ok(dialed)
        })
    }
}

struct PanicsInComplete;

impl LazyHandshake for PanicsInComplete {
    fn complete<'a>(self: Box<Self>, _: &'a TcpStream, _: &'a [u8]) -> BoxFuture<'a, Result<(), DialError>> {
        panic!("lazy handshake panicked on purpose")
    }
}

/// Reads what `stream` still gives until it ends (end of file or an error); true if it ended.
async fn ends(stream: &mut TcpStream) -> bool {
    let mut buf = vec![0u8; 256 * 1024];
    timeout(WAIT, async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await
    .is_ok()
}

/// Waits until `read` stops growing for 200 ms (the relay's buffers and the kernel's are full).
async fn wait_stalled(read: impl Fn() -> u64) {
    let mut last = read();
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let now = read();
        if now == last {
            return;
        }
        last = now;
    }
}

/// A listener for the scenario's server, and its address.
async fn listen_for_server() -> (TcpListener, std::net::SocketAddr) {
    let server = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = server.local_addr().unwrap();
    (server, address)
}

/// Asks the manager to close connection `id` and returns its report, asserting that it came
/// within [`PROMPT`] and says `Closed`.
async fn close_promptly(h: &mut Harness, id: ConnectionId) -> ClosedConnection {
    let started = Instant::now();
    assert!(h.manager.close(id));
    let closed = h.next_closed().await;
    assert!(started.elapsed() < PROMPT, "closed after {:?}", started.elapsed());
    assert_eq!(closed.id, id);
    assert!(matches!(error_of(&closed), ConnectionError::Closed), "{:?}", closed.error);
    closed
}

async fn close_while_dialing_ends_the_connection_promptly() {
    let mut h = Harness::new(RelaySettings::default()).await;
    let baseline = fds();
    let metadata = Metadata::new(closed_port().await.into());
    let (mut client, id) = h.connect_via(metadata, Arc::new(NeverConnects)).await;
    tokio::time::sleep(Duration::from_millis(50)).await; // the task is parked in the dial
    assert_eq!(h.manager.get(id).map(|c| c.state), Some(ConnectionState::Dialing));
    close_promptly(&mut h, id).await;
    assert!(ends(&mut client).await, "the client sees the close");
    assert!(h.manager.is_empty());
    h.assert_no_more_closed().await;
    drop(client);
    assert_fds_back(baseline).await;
}

/// The download direction is past the splice threshold and backed up (the client reads nothing):
/// on Linux it holds a pipe with bytes in it, parked on the client's writability.
async fn close_while_a_backed_up_direction_splices_ends_it_promptly() {
    let mut h = Harness::new(RelaySettings::default()).await;
    let (server, server_addr) = listen_for_server().await;
    let baseline = fds();
    let (mut client, id) = h.connect(server_addr).await;
    let (s, _) = server.accept().await.unwrap();
    let (mut s_read, mut s_write) = s.into_split();
    let sender = tokio::spawn(async move { send_pattern(&mut s_write, 3, 1 << 30).await });
    let mut first = vec![0u8; 1024 * 1024];
    timeout(WAIT, client.read_exact(&mut first)).await.unwrap().unwrap();
    wait_stalled(|| h.manager.get(id).map_or(0, |c| c.bytes_down)).await;
    close_promptly(&mut h, id).await;
    assert!(ends(&mut client).await, "the client sees the close");
    assert!(timeout(WAIT, sender).await.unwrap().unwrap().is_err(), "the server's writes fail");
    let mut buf = [0u8; 1];
    assert!(matches!(timeout(WAIT, s_read.read(&mut buf)).await.unwrap(), Ok(0) | Err(_)));
    assert!(h.manager.is_empty());
    h.assert_no_more_closed().await;
    drop((client, s_read));
    assert_fds_back(baseline).await;
}

async fn close_during_the_half_close_drain_ends_it_promptly() {
    let mut settings = RelaySettings::default();
    settings.half_close_timeout = Some(Duration::from_secs(30));
    let mut h = Harness::new(settings).await;
    let (server, server_addr) = listen_for_server().await;
    let baseline = fds();
    let (mut client, id) = h.connect(server_addr).await;
    let (mut s, _) = server.accept().await.unwrap();
    client.shutdown().await.unwrap();
    let mut buf = [0u8; 16];
    assert_eq!(timeout(WAIT, s.read(&mut buf)).await.unwrap().unwrap(), 0, "the server sees the FIN");
    tokio::time::sleep(Duration::from_millis(50)).await; // the task is parked on the drain timer
    close_promptly(&mut h, id).await;
    assert!(ends(&mut client).await);
    assert!(ends(&mut s).await);
    h.assert_no_more_closed().await;
    drop((client, s));
    assert_fds_back(baseline).await;
}

/// The client sent its request and FIN; the answer is larger than the buffers between the server
/// and the client, and the client pauses reading for longer than the half-close timeout. The
/// server is not silent (its bytes wait for the client): the answer must arrive whole, not be cut
/// by a reset.
async fn a_slow_reader_after_a_half_close_gets_the_whole_answer() {
    const ANSWER: usize = 16 * 1024 * 1024;
    let mut settings = RelaySettings::default();
    settings.half_close_timeout = Some(Duration::from_millis(300));
    let mut h = Harness::new(settings).await;
    let (server, server_addr) = listen_for_server().await;
    let baseline = fds();
    let server_task = tokio::spawn(async move {
        let (mut s, _) = server.accept().await.unwrap();
        let mut request = Vec::new();
        s.read_to_end(&mut request).await.unwrap();
        send_pattern(&mut s, 9, ANSWER).await?;
        s.shutdown().await
    });
    let (mut client, id) = h.connect(server_addr).await;
    client.write_all(b"GET / HTTP/1.0\r\n\r\n").await.unwrap();
    client.shutdown().await.unwrap();
    let mut first = vec![0u8; 64 * 1024];
    timeout(WAIT, client.read_exact(&mut first)).await.unwrap().unwrap();
    wait_stalled(|| h.manager.get(id).map_or(0, |c| c.bytes_down)).await;
    tokio::time::sleep(Duration::from_millis(700)).await; // paused: over twice the timeout
    let mut rest = Vec::new();
    let result = timeout(WAIT, client.read_to_end(&mut rest)).await.unwrap();
    assert!(result.is_ok(), "the answer was cut after {} bytes: {result:?}", first.len() + rest.len());
    let mut expected = vec![0u8; ANSWER];
    Pattern(9).fill(&mut expected);
    first.extend_from_slice(&rest);
    assert!(first == expected, "{} bytes arrived, {} expected", first.len(), ANSWER);
    timeout(WAIT, server_task).await.unwrap().unwrap().unwrap();
    let closed = h.next_closed().await;
    assert!(closed.error.is_none(), "{:?}", closed.error);
    assert_eq!(closed.bytes_down, ANSWER as u64);
    h.assert_no_more_closed().await;
    drop(client);
    assert_fds_back(baseline).await;
}

/// The client sends its request and FIN before the (slow) dial completes: the request reaches the
/// server, then the FIN, and the server's answer still reaches the client.
async fn early_data_and_fin_before_the_dial_completes_reach_the_server() {
    let mut h = Harness::new(RelaySettings::default()).await;
    let (server, server_addr) = listen_for_server().await;
    let baseline = fds();
    let metadata = Metadata::new(server_addr.into());
    let (mut client, id) = h.connect_via(metadata, Arc::new(SlowDial(Duration::from_millis(300)))).await;
    client.write_all(b"request sent before the dial completed").await.unwrap();
    client.shutdown().await.unwrap();
    assert_eq!(h.manager.get(id).map(|c| c.state), Some(ConnectionState::Dialing));
    let (mut s, _) = timeout(WAIT, server.accept()).await.unwrap().unwrap();
    let mut request = Vec::new();
    timeout(WAIT, s.read_to_end(&mut request)).await.unwrap().unwrap();
    assert_eq!(request, b"request sent before the dial completed");
    s.write_all(b"answer after the FIN").await.unwrap();
    s.shutdown().await.unwrap();
    let mut answer = Vec::new();
    timeout(WAIT, client.read_to_end(&mut answer)).await.unwrap().unwrap();
    assert_eq!(answer, b"answer after the FIN");
    let closed = h.next_closed().await;
    assert!(closed.error.is_none(), "{:?}", closed.error);
    assert_eq!((closed.bytes_up, closed.bytes_down), (38, 20));
    h.assert_no_more_closed().await;
    drop((client, s));
    assert_fds_back(baseline).await;
}

/// The client resets its socket in the middle of a spliced download: the connection ends with the
/// client's error, the server sees the end, nothing leaks.
async fn a_client_reset_in_a_spliced_download_ends_the_connection_once() {
    let mut h = Harness::new(RelaySettings::default()).await;
    let (server, server_addr) = listen_for_server().await;
    let baseline = fds();
    let (mut client, id) = h.connect(server_addr).await;
    let (s, _) = server.accept().await.unwrap();
    let (mut s_read, mut s_write) = s.into_split();
    let sender = tokio::spawn(async move { send_pattern(&mut s_write, 4, 1 << 30).await });
    let mut first = vec![0u8; 2 * 1024 * 1024];
    timeout(WAIT, client.read_exact(&mut first)).await.unwrap().unwrap();
    socket2::SockRef::from(&client).set_linger(Some(Duration::ZERO)).unwrap();
    drop(client); // RST, with bytes in flight towards it
    let closed = h.next_closed().await;
    assert_eq!(closed.id, id);
    match error_of(&closed) {
        ConnectionError::Io { side, .. } => assert_eq!(*side, Side::Client),
        other => panic!("expected a client I/O error, got {other}"),
    }
    assert!(timeout(WAIT, sender).await.unwrap().unwrap().is_err(), "the server's writes fail");
    let mut buf = [0u8; 1];
    assert!(matches!(timeout(WAIT, s_read.read(&mut buf)).await.unwrap(), Ok(0) | Err(_)));
    assert!(h.manager.is_empty());
    h.assert_no_more_closed().await;
    drop(s_read);
    assert_fds_back(baseline).await;
}

/// Closes race the tasks from a thread outside the runtime, at every moment of their life
/// (before the first poll, dialing, replying, relaying, between two polls of a busy connection):
/// every connection ends promptly and is reported exactly once.
async fn closes_racing_the_task_from_another_thread_are_never_lost() {
    const CONNECTIONS: u64 = 200;
    let manager = Arc::new(ConnectionManager::new(RelaySettings::default()));
    let front = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (server, server_addr) = listen_for_server().await;
    let baseline = fds();
    // An echo server: every connection is busy both ways until it is closed.
    let echo = tokio::spawn(async move {
        while let Ok((s, _)) = server.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = s.into_split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    let reports: Arc<Mutex<HashMap<ConnectionId, Vec<Option<String>>>>> = Arc::default();
    let mut clients = Vec::new();
    let (close_tx, close_rx) = std::sync::mpsc::channel::<(ConnectionId, Duration)>();
    let closer = {
        let manager = manager.clone();
        std::thread::spawn(move || {
            for (id, after) in close_rx {
                std::thread::sleep(after);
                manager.close(id);
            }
        })
    };
    for i in 0..CONNECTIONS {
        let client = TcpStream::connect(front.local_addr().unwrap()).await.unwrap();
        let (accepted, _) = front.accept().await.unwrap();
        let reports = reports.clone();
        let on_close = move |closed: ClosedConnection| {
            let error = closed.error.as_ref().map(|e| format!("{e:?}"));
            reports.lock().unwrap().entry(closed.id).or_default().push(error);
        };
        // Every third connection dials slowly, so that some closes land in the dial.
        let outbound: Arc<dyn Outbound> = match i % 3 {
            0 => Arc::new(SlowDial(Duration::from_millis(i % 7))),
            _ => Arc::new(DirectOutbound::default()),
        };
        let id = manager.new_connection(
            Inbound::plain(accepted),
            Metadata::new(server_addr.into()),
            outbound,
            on_close,
        );
        // Keep the connection busy: the client writes and reads its echo.
        let (mut r, mut w) = client.into_split();
        let pump = tokio::spawn(async move {
            let chunk = vec![i as u8; 16 * 1024];
            let mut buf = vec![0u8; 16 * 1024];
            loop {
                if w.write_all(&chunk).await.is_err() || matches!(r.read(&mut buf).await, Ok(0) | Err(_)) {
                    return;
                }
            }
        });
        clients.push(pump);
        close_tx.send((id, Duration::from_micros((i * 37) % 3000))).unwrap();
    }
    drop(close_tx);
    closer.join().unwrap();
    let started = Instant::now();
    timeout(WAIT, async {
        while reports.lock().unwrap().len() < CONNECTIONS as usize {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .unwrap_or_else(|_| {
        panic!("only {} of {CONNECTIONS} connections reported in time", reports.lock().unwrap().len())
    });
    println!("the last close was reported {:?} after the last request", started.elapsed());
    tokio::time::sleep(Duration::from_millis(200)).await;
    let reports = reports.lock().unwrap().clone();
    for (id, errors) in &reports {
        assert_eq!(errors.len(), 1, "connection {id} reported {} times: {errors:?}", errors.len());
        let error = errors[0].as_deref().unwrap_or("a clean end");
        assert!(error.starts_with("Closed"), "connection {id}: {error}");
    }
    assert!(manager.is_empty());
    for pump in clients {
        timeout(WAIT, pump).await.expect("every client sees its connection end").unwrap();
    }
    echo.abort();
    let _ = echo.await;
    assert_fds_back(baseline).await;
}

/// Code run in the setup (here an outbound's lazy handshake, after the client's first bytes were
/// read) panics: the connection ends with `Panicked`, and both sockets are reset, as after any
/// failure that was not reported to the client. A plain close would look like a clean end of an
/// empty answer to the client, and like a clean end of the request to the server.
async fn a_panic_in_the_setup_resets_both_sockets() {
    let mut h = Harness::new(RelaySettings::default()).await;
    let (server, server_addr) = listen_for_server().await;
    let baseline = fds();
    let metadata = Metadata::new(server_addr.into());
    let (mut client, id) = h.connect_via(metadata, Arc::new(PanickingHandshake)).await;
    let (mut s, _) = timeout(WAIT, server.accept()).await.unwrap().unwrap();
    client.write_all(b"first bytes, read by the kick").await.unwrap();
    let closed = h.next_closed().await;
    assert_eq!(closed.id, id);
    assert!(matches!(error_of(&closed), ConnectionError::Panicked(_)), "{:?}", closed.error);
    let mut buf = [0u8; 16];
    let client_read = timeout(WAIT, client.read(&mut buf)).await.unwrap();
    assert_eq!(client_read.map_err(|e| e.kind()), Err(std::io::ErrorKind::ConnectionReset), "client");
    let server_read = timeout(WAIT, s.read(&mut buf)).await.unwrap();
    assert_eq!(server_read.map_err(|e| e.kind()), Err(std::io::ErrorKind::ConnectionReset), "server");
    h.assert_no_more_closed().await;
    drop((client, s));
    assert_fds_back(baseline).await;
}

/// The runtime running an established connection is dropped (the host stopped it): the
/// connection is reported once with `ShutDown`, and both peers see a reset, as after a
/// `shutdown()` of the manager, rather than a clean end of what they were sent.
#[test]
fn a_runtime_dropped_while_relaying_resets_both_sockets() {
    use std::io::{Read, Write};

    let _serial: MutexGuard<'_, ()> = SERIAL.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let front = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let server = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let baseline = fds();
    let manager = ConnectionManager::with_runtime(RelaySettings::default(), runtime.handle().clone());
    let reports: Arc<Mutex<Vec<Option<String>>>> = Arc::default();
    let mut client = std::net::TcpStream::connect(front.local_addr().unwrap()).unwrap();
    let (accepted, _) = front.accept().unwrap();
    accepted.set_nonblocking(true).unwrap();
    let accepted = {
        let _entered = runtime.enter();
        TcpStream::from_std(accepted).unwrap()
    };
    let recorded = reports.clone();
    manager.new_connection(
        Inbound::plain(accepted),
        Metadata::new(server.local_addr().unwrap().into()),
        Arc::new(DirectOutbound::default()),
        move |closed: ClosedConnection| {
            recorded.lock().unwrap().push(closed.error.as_ref().map(|e| format!("{e:?}")));
        },
    );
    let (mut s, _) = server.accept().unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    client.set_read_timeout(Some(WAIT)).unwrap();
    client.write_all(b"ping").unwrap();
    let mut buf = [0u8; 4];
    s.read_exact(&mut buf).unwrap();
    s.write_all(b"pong").unwrap();
    client.read_exact(&mut buf).unwrap(); // relaying
    drop(runtime);
    assert_eq!(*reports.lock().unwrap(), [Some("ShutDown".to_string())]);
    assert_eq!(
        client.read(&mut buf).map_err(|e| e.kind()),
        Err(std::io::ErrorKind::ConnectionReset),
        "client"
    );
    assert_eq!(s.read(&mut buf).map_err(|e| e.kind()), Err(std::io::ErrorKind::ConnectionReset), "server");
    assert!(manager.is_empty());
    drop((client, s));
    let now = fds();
    assert!(now.1 <= baseline.1, "descriptors: {} now, {} before (pipes apart)", now.1, baseline.1);
}
