//! TLS ClientHello fragmentation through the manager over loopback: record mode seen by a raw
//! server (several records, a cut inside every server-name label, reassembly equals the
//! original), segment mode counted by the receiving kernel (one data segment per piece), both
//! modes together, pass-through of anything that is not one complete ClientHello, and real TLS
//! handshakes (openssl s_server, curl) in each mode.

mod common;

use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use netswitch::tls_fragment::client_hello::{build_client_hello, parse, RECORD_HEADER_LEN};
use netswitch::tls_fragment::split::records;
use netswitch::{ConnectionManager, ConnectionOptions, DirectOutbound, Inbound, Metadata, RelaySettings};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::timeout;

const NAME: &str = "www.blocked-site.example.com";

fn options(segment: bool, record: bool) -> ConnectionOptions {
    let mut options = ConnectionOptions::default();
    options.tls_fragment = segment;
    options.tls_record_fragment = record;
    options.tls_fragment_fallback_delay = Some(Duration::from_millis(200));
    options
}

/// Sends `writes` (each its own write, 50 ms apart) through the manager to a raw server and
/// returns what the server received before the client's EOF, and the server socket's count of
/// data segments received (Linux), measured after the connection is established.
async fn through_manager(opts: ConnectionOptions, writes: Vec<Vec<u8>>) -> (Vec<u8>, Option<u32>) {
    let mut h = Harness::new(RelaySettings::default()).await;
    let server = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut metadata = Metadata::new(server.local_addr().unwrap().into());
    metadata.options = opts;
    let (mut client, _) = h.connect_with(metadata).await;
    let (mut accepted, _) = timeout(WAIT, server.accept()).await.unwrap().unwrap();
    let before = data_segments_in(&accepted);
    for (i, write) in writes.iter().enumerate() {
        if i > 0 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        client.write_all(write).await.unwrap();
    }
    client.shutdown().await.unwrap();
    let mut received = Vec::new();
    timeout(WAIT, accepted.read_to_end(&mut received)).await.unwrap().unwrap();
    let segments = data_segments_in(&accepted).zip(before).map(|(after, before)| after - before);
    drop(accepted);
    let closed = h.next_closed().await;
    assert!(closed.error.is_none(), "{:?}", closed.error);
    assert_eq!(closed.bytes_up as usize, writes.iter().map(Vec::len).sum::<usize>());
    (received, segments)
}

/// Data-carrying TCP segments received on `stream` so far (`tcpi_data_segs_in`, Linux >= 4.6).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn data_segments_in(stream: &TcpStream) -> Option<u32> {
    use std::os::fd::AsRawFd;
    // SAFETY: tcp_info is plain data; the kernel writes at most `len` bytes into it.
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    let rc = unsafe {
        libc::getsockopt(
            stream.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&mut info as *mut libc::tcp_info).cast(),
            &mut len,
        )
    };
    (rc == 0).then_some(info.tcpi_data_segs_in)
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn data_segments_in(_stream: &TcpStream) -> Option<u32> {
    None
}

/// Asserts the payload of `stream` (TLS records) equals `hello`'s and that a record boundary falls
/// strictly inside every label of length >= 2 of the server name. Returns the record count.
fn check_records(stream: &[u8], hello: &[u8]) -> usize {
    let parsed = records(stream).expect("the server must see whole TLS records");
    let payload: Vec<u8> = parsed.iter().flat_map(|(_, p)| p.iter().copied()).collect();
    assert_eq!(payload, hello[RECORD_HEADER_LEN..], "reassembled records differ from the ClientHello");
    assert!(
        parsed.iter().all(|(header, _)| header[..] == hello[..3]),
        "record headers keep type and version"
    );
    let mut boundaries = Vec::new();
    let mut at = 0;
    for (_, p) in &parsed {
        at += p.len();
        boundaries.push(at);
    }
    let name = parse(hello).unwrap().server_name;
    let mut label_start = name.start - RECORD_HEADER_LEN;
    for label in NAME.split('.') {
        let label_end = label_start + label.len();
        if label.len() >= 2 {
            assert!(
                boundaries.iter().any(|&b| b > label_start && b < label_end),
                "no cut inside label {label:?} (boundaries {boundaries:?})"
            );
        }
        label_start = label_end + 1;
    }
    parsed.len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn record_mode_cuts_every_label_into_records() {
    let hello = build_client_hello(NAME, 64);
    let (received, _) = through_manager(options(false, true), vec![hello.clone(), b"after".to_vec()]).await;
    let (records_part, after) = received.split_at(received.len() - 5);
    assert_eq!(after, b"after", "later bytes pass untouched");
    let count = check_records(records_part, &hello);
    assert_eq!(count, 5, "one cut per label of {NAME}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn segment_mode_sends_one_segment_per_piece() {
    let hello = build_client_hello(NAME, 0);
    let (received, segments) = through_manager(options(true, false), vec![hello.clone()]).await;
    assert_eq!(received, hello, "segment mode alone does not change the bytes");
    match segments {
        Some(segments) => assert_eq!(segments, 5, "5 labels -> 5 pieces -> 5 data segments"),
        None => println!("skipped the segment count: tcpi_data_segs_in is not available here"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_modes_send_one_record_per_segment() {
    let hello = build_client_hello(NAME, 10);
    let (received, segments) = through_manager(options(true, true), vec![hello.clone()]).await;
    assert_eq!(check_records(&received, &hello), 5);
    if let Some(segments) = segments {
        assert_eq!(segments, 5);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anything_else_passes_through_unchanged() {
    let hello = build_client_hello(NAME, 0);
    let mut lying = hello.clone();
    lying[4] = lying[4].wrapping_add(1); // record length one more than present
    let mut lying_inner = hello.clone();
    lying_inner[8] = lying_inner[8].wrapping_sub(1); // handshake length one less
    let cases: Vec<(&str, Vec<Vec<u8>>)> = vec![
        ("http", vec![b"GET / HTTP/1.1\r\nHost: www.blocked-site.example.com\r\n\r\n".to_vec()]),
        ("split across two writes", vec![hello[..40].to_vec(), hello[40..].to_vec()]),
        ("truncated", vec![hello[..hello.len() - 1].to_vec()]),
        ("lying record length", vec![lying]),
        ("lying handshake length", vec![lying_inner]),
        ("two records in one write", vec![[hello.clone(), hello.clone()].concat()]),
    ];
    for (what, writes) in cases {
        for (segment, record) in [(false, true), (true, false), (true, true)] {
            let expected = writes.concat();
            let (received, segments) = through_manager(options(segment, record), writes.clone()).await;
            assert_eq!(received, expected, "{what} (segment {segment}, record {record})");
            if let Some(segments) = segments {
                assert_eq!(segments as usize, writes.len(), "{what}: one segment per client write");
            }
        }
    }
}

/// A throwaway self-signed certificate and an `openssl s_server -www` on a free loopback port.
struct TlsServer {
    child: tokio::process::Child,
    address: SocketAddr,
    _dir: TempDir,
}

struct TempDir(std::path::PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

async fn start_tls_server(tag: &str) -> Option<TlsServer> {
    if !std::path::Path::new("/usr/bin/openssl").exists() {
        println!("skipped: /usr/bin/openssl not found");
        return None;
    }
    let dir = std::env::temp_dir().join(format!("netswitch-tls-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let dir = TempDir(dir);
    let (cert, key) = (dir.0.join("cert.pem"), dir.0.join("key.pem"));
    let made = tokio::process::Command::new("/usr/bin/openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"])
        .args(["-days", "1", "-subj", &format!("/CN={NAME}"), "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .await
        .unwrap();
    assert!(made.success(), "openssl req failed");
    let port = closed_port().await.port();
    let child = tokio::process::Command::new("/usr/bin/openssl")
        .args(["s_server", "-www", "-accept", &format!("127.0.0.1:{port}"), "-cert"])
        .arg(&cert)
        .arg("-key")
        .arg(&key)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let address: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    // Wait until it listens.
    for _ in 0..100 {
        if TcpStream::connect(address).await.is_ok() {
            return Some(TlsServer { child, address, _dir: dir });
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("openssl s_server did not start listening on {address}");
}

/// curl talks TLS (SNI = NAME) to a front listener whose connections the manager relays to the
/// TLS server with `opts`; returns curl's output and the connection's on_close report.
async fn curl_through_manager(
    tls: &TlsServer,
    opts: ConnectionOptions,
) -> (String, netswitch::ClosedConnection) {
    let manager = Arc::new(ConnectionManager::new(RelaySettings::default()));
    let front = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let front_port = front.local_addr().unwrap().port();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let destination = tls.address;
    let accept_manager = manager.clone();
    let accept = tokio::spawn(async move {
        let (stream, _) = front.accept().await.unwrap();
        let mut metadata = Metadata::new(destination.into());
        metadata.options = opts;
        accept_manager.new_connection(
            Inbound::plain(stream),
            metadata,
            Arc::new(DirectOutbound::default()),
            move |closed| {
                let _ = tx.send(closed);
            },
        );
    });
    let output = timeout(
        WAIT,
        tokio::process::Command::new("curl")
            .args(["-sS", "-k", "--max-time", "8", "--connect-to"])
            .arg(format!("{NAME}:{front_port}:127.0.0.1:{front_port}"))
            .arg(format!("https://{NAME}:{front_port}/"))
            .output(),
    )
    .await
    .unwrap()
    .unwrap();
    timeout(WAIT, accept).await.unwrap().unwrap();
    assert!(output.status.success(), "curl failed: {}", String::from_utf8_lossy(&output.stderr));
    let closed = timeout(WAIT, rx.recv()).await.unwrap().unwrap();
    (String::from_utf8_lossy(&output.stdout).into_owned(), closed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_tls_handshakes_complete_in_every_mode() {
    let Some(mut tls) = start_tls_server("modes").await else { return };
    for (segment, record) in [(false, true), (true, false), (true, true)] {
        let (page, closed) = curl_through_manager(&tls, options(segment, record)).await;
        // s_server -www answers with a page describing the session.
        assert!(page.contains("s_server"), "segment {segment}, record {record}: unexpected page {page:?}");
        assert!(closed.error.is_none(), "{:?}", closed.error);
        assert!(closed.bytes_up > 200 && closed.bytes_down > 200, "{closed:?}");
    }
    tls.child.kill().await.unwrap();
}

mod properties {
    use netswitch::tls_fragment::client_hello::{build_client_hello, parse, RECORD_HEADER_LEN};
    use netswitch::tls_fragment::split::{cut_points, records, reframe, split_at};
    use proptest::prelude::*;

    fn label() -> impl Strategy<Value = String> {
        "[a-z0-9-]{1,20}"
    }

    fn server_name() -> impl Strategy<Value = String> {
        proptest::collection::vec(label(), 1..6).prop_map(|labels| labels.join("."))
    }

    proptest! {
        /// Any bytes: no panic; when recognised, the name lies inside the buffer.
        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            if let Some(hello) = parse(&bytes) {
                prop_assert!(hello.server_name.end <= bytes.len() && !hello.server_name.is_empty());
            }
        }

        /// Random bytes behind a plausible header (so the deeper parser is reached): no panic.
        #[test]
        fn random_bodies_never_panic(body in proptest::collection::vec(any::<u8>(), 0..400), tweak in any::<u8>()) {
            let mut bytes = vec![22, 3, 1];
            bytes.extend_from_slice(&(body.len() as u16 + 4).to_be_bytes());
            bytes.push(1);
            bytes.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
            bytes.extend_from_slice(&body);
            if let Some(first) = bytes.get_mut(9) { *first ^= tweak; }
            let _ = parse(&bytes);
        }

        /// A valid ClientHello with bytes flipped, inserted or removed: no panic; a recognised
        /// result points inside the buffer.
        #[test]
        fn mutated_client_hellos_never_panic(
            name in server_name(),
            padding in 0usize..64,
            edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..3), 1..6),
        ) {
            let mut bytes = build_client_hello(&name, padding);
            for (index, value, kind) in edits {
                let at = index.index(bytes.len());
                match kind {
                    0 => bytes[at] = value,
                    1 => bytes.insert(at, value),
                    _ => { bytes.remove(at); }
                }
            }
            if let Some(hello) = parse(&bytes) {
                prop_assert!(hello.server_name.end <= bytes.len());
            }
        }

        /// Valid ClientHellos: recognised, name found; re-framed records reassemble to the
        /// original payload with a cut inside every label of two or more bytes; plain split
        /// pieces concatenate to the original.
        #[test]
        fn reframed_records_round_trip(name in server_name(), padding in 0usize..300, seed in any::<u64>()) {
            let hello = build_client_hello(&name, padding);
            let parsed = parse(&hello).unwrap();
            prop_assert_eq!(&hello[parsed.server_name.clone()], name.as_bytes());
            let mut state = seed | 1;
            let cuts = cut_points(&hello, parsed.server_name.clone(), |n| {
                state ^= state << 13; state ^= state >> 7; state ^= state << 17;
                (state % n as u64) as usize
            });
            let long_labels = name.split('.').filter(|l| l.len() >= 2).count();
            prop_assert_eq!(cuts.len(), long_labels);
            prop_assert_eq!(split_at(&hello, &cuts).concat(), hello.clone());
            let framed = reframe(&hello, &cuts).concat();
            let back = records(&framed).unwrap();
            prop_assert_eq!(back.len(), cuts.len() + 1);
            let payload: Vec<u8> = back.iter().flat_map(|(_, p)| p.iter().copied()).collect();
            prop_assert_eq!(&payload[..], &hello[RECORD_HEADER_LEN..]);
        }
    }
}

/// Segment mode on the wire: in a fresh network namespace (root, or a user namespace), tcpdump on
/// `lo` counts the data segments the relay sends to the server: one per piece. Skipped with a
/// printed reason when tcpdump or namespaces are unavailable.
#[test]
fn segment_mode_on_the_wire_in_a_network_namespace() {
    if !["/usr/bin/tcpdump", "/usr/sbin/tcpdump"].iter().any(|p| std::path::Path::new(p).exists()) {
        println!("skipped: tcpdump is not installed");
        return;
    }
    let exe = std::env::current_exe().unwrap();
    let root = unsafe { libc::geteuid() } == 0;
    let unshare_args: &[&str] = if root { &["-n"] } else { &["-r", "-n"] };
    let output = std::process::Command::new("unshare")
        .args(unshare_args)
        .arg(&exe)
        .args(["--exact", "netns_inner_segment_capture", "--ignored", "--nocapture", "--test-threads=1"])
        .output();
    let output = match output {
        Ok(output) => output,
        Err(e) => {
            println!("skipped: cannot run unshare: {e}");
            return;
        }
    };
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    if !output.status.success() && stderr.contains("unshare failed") {
        println!("skipped: no network namespace available: {stderr}");
        return;
    }
    assert!(output.status.success(), "inner capture failed:\n{stdout}\n{stderr}");
    let line = stdout.lines().find(|l| l.starts_with("captured data segments: ")).expect(&stdout);
    assert_eq!(line, "captured data segments: 5", "{stdout}");
}

/// Runs inside the namespace started by the test above (ignored on its own).
#[test]
#[ignore]
fn netns_inner_segment_capture() {
    let up = std::process::Command::new("ip").args(["link", "set", "lo", "up"]).status().unwrap();
    assert!(up.success());
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    runtime.block_on(async {
        let server = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = server.local_addr().unwrap().port();
        // Packets to the server's port that carry TCP payload.
        let filter =
            format!("tcp dst port {port} and (((ip[2:2] - ((ip[0]&0xf)<<2)) - ((tcp[12]&0xf0)>>2)) != 0)");
        let mut tcpdump = tokio::process::Command::new("tcpdump")
            .args(["-i", "lo", "-n", "-l", "-Z", "root", &filter])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let mut stderr = tcpdump.stderr.take().unwrap();
        let mut seen = Vec::new();
        while !String::from_utf8_lossy(&seen).contains("listening on") {
            let mut chunk = [0u8; 256];
            let n = timeout(WAIT, stderr.read(&mut chunk)).await.unwrap().unwrap();
            assert!(n > 0, "tcpdump exited: {}", String::from_utf8_lossy(&seen));
            seen.extend_from_slice(&chunk[..n]);
        }
        let hello = build_client_hello(NAME, 0);
        let h = Harness::new(RelaySettings::default()).await;
        let mut metadata = Metadata::new(server.local_addr().unwrap().into());
        metadata.options = options(true, false);
        let (mut client, _) = h.connect_with(metadata).await;
        let (mut accepted, _) = timeout(WAIT, server.accept()).await.unwrap().unwrap();
        client.write_all(&hello).await.unwrap();
        client.shutdown().await.unwrap();
        let mut received = Vec::new();
        timeout(WAIT, accepted.read_to_end(&mut received)).await.unwrap().unwrap();
        assert_eq!(received, hello);
        tokio::time::sleep(Duration::from_millis(300)).await;
        let pid = tcpdump.id().unwrap() as i32;
        unsafe { libc::kill(pid, libc::SIGINT) };
        let output = timeout(WAIT, tcpdump.wait_with_output()).await.unwrap().unwrap();
        let lines = String::from_utf8_lossy(&output.stdout);
        println!("{lines}");
        println!("captured data segments: {}", lines.lines().filter(|l| l.contains(" > ")).count());
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_level_record_mode_applies_through_the_socks_ingress() {
    use netswitch::config::Config;
    use netswitch::inbound::socks::{SocksServer, SocksSettings};

    let config = Config::from_json(r#"{"tls_record_fragment": true}"#).unwrap();
    let manager = Arc::new(ConnectionManager::new(config.relay_settings()));
    let mut settings = SocksSettings::default();
    settings.listen = "127.0.0.1:0".parse().unwrap();
    let socks =
        SocksServer::start(settings, manager.clone(), Arc::new(DirectOutbound::default())).await.unwrap();
    let server = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let SocketAddr::V4(target) = server.local_addr().unwrap() else { unreachable!() };
    let mut client = TcpStream::connect(socks.local_addr()).await.unwrap();
    let mut request = vec![5, 1, 0, 5, 1, 0, 1];
    request.extend_from_slice(&target.ip().octets());
    request.extend_from_slice(&target.port().to_be_bytes());
    client.write_all(&request).await.unwrap();
    let mut replies = [0u8; 2 + 10];
    timeout(WAIT, client.read_exact(&mut replies)).await.unwrap().unwrap();
    assert_eq!((replies[0], replies[1], replies[3]), (5, 0, 0), "SOCKS success");
    let (mut accepted, _) = timeout(WAIT, server.accept()).await.unwrap().unwrap();
    let hello = build_client_hello(NAME, 64);
    client.write_all(&hello).await.unwrap();
    client.shutdown().await.unwrap();
    let mut received = Vec::new();
    timeout(WAIT, accepted.read_to_end(&mut received)).await.unwrap().unwrap();
    assert_eq!(
        check_records(&received, &hello),
        5,
        "the config's tls_record_fragment reached the connection"
    );
}
