//! End-to-end tests of the `netswitch` binary: curl through `netswitch socks` to a local HTTP
//! server, authentication, SIGTERM, `--help`, config errors. Loopback only; every wait bounded.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::{Child, Command};
use tokio::time::timeout;

const NETSWITCH: &str = env!("CARGO_BIN_EXE_netswitch");
/// Upper bound of every wait (process start, transfers, exits).
const WAIT: Duration = Duration::from_secs(60);
const FILE_SIZE: usize = 16 << 20;
const FLAGS: [&str; 5] = ["--listen", "--user", "--password", "--config", "--log-level"];

/// Deterministic pseudo-random bytes (splitmix64), so a shifted or repeated block is detected.
fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        out.extend_from_slice(&(z ^ (z >> 31)).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// A unique scratch file path for this test process.
fn scratch(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("cli-{}-{name}", std::process::id()))
}

/// A minimal HTTP/1.1 server on 127.0.0.1: `GET /file` serves `file`, `PUT /upload` stores the
/// body in `uploads`. One request per connection.
struct HttpServer {
    port: u16,
    uploads: Arc<Mutex<Vec<Vec<u8>>>>,
}

async fn start_http(file: Arc<Vec<u8>>) -> HttpServer {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let uploads = Arc::new(Mutex::new(Vec::new()));
    let stored = uploads.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { return };
            let (file, stored) = (file.clone(), stored.clone());
            tokio::spawn(async move {
                if let Err(error) = serve_http(stream, &file, &stored).await {
                    eprintln!("test HTTP server: {error}");
                }
            });
        }
    });
    HttpServer { port, uploads }
}

async fn serve_http(
    mut stream: TcpStream,
    file: &[u8],
    uploads: &Mutex<Vec<Vec<u8>>>,
) -> std::io::Result<()> {
    let mut buffered = Vec::new();
    let head_end = loop {
        if let Some(at) = buffered.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        if buffered.len() > 64 * 1024 {
            return Err(std::io::Error::other("request head too long"));
        }
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::Error::other("EOF inside the request head"));
        }
        buffered.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buffered[..head_end]).to_string();
    let mut body = buffered[head_end..].to_vec();
    let mut lines = head.lines();
    let request: Vec<&str> = lines.next().unwrap_or_default().split(' ').collect();
    let mut content_length = 0usize;
    let mut expect_continue = false;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else { continue };
        match name.trim().to_ascii_lowercase().as_str() {
            "content-length" => content_length = value.trim().parse().unwrap_or(0),
            "expect" => expect_continue = value.trim().eq_ignore_ascii_case("100-continue"),
            _ => {}
        }
    }
    match request.as_slice() {
        ["GET", "/file", ..] => {
            let header =
                format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", file.len());
            stream.write_all(header.as_bytes()).await?;
            stream.write_all(file).await?;
        }
        ["PUT", "/upload", ..] => {
            if expect_continue {
                stream.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").await?;
            }
            while body.len() < content_length {
                let mut chunk = vec![0u8; 64 * 1024];
                let n = stream.read(&mut chunk).await?;
                if n == 0 {
                    return Err(std::io::Error::other("EOF inside the upload body"));
                }
                body.extend_from_slice(&chunk[..n]);
            }
            uploads.lock().unwrap().push(body);
            stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").await?;
        }
        _ => {
            stream
                .write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                .await?
        }
    }
    stream.shutdown().await
}

/// A running `netswitch` process, its SOCKS address and everything it wrote to stderr.
struct Relay {
    child: Child,
    addr: SocketAddr,
    log: Arc<Mutex<String>>,
}

impl Relay {
    /// Runs `netswitch socks ARGS` and waits for its "listening on ADDR" line.
    async fn start(args: &[&str]) -> Relay {
        let mut child = Command::new(NETSWITCH)
            .arg("socks")
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn netswitch");
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let log = Arc::new(Mutex::new(String::new()));
        let found = timeout(WAIT, async {
            while let Ok(Some(line)) = lines.next_line().await {
                log.lock().unwrap().push_str(&format!("{line}\n"));
                if let Some(rest) = line.split("netswitch SOCKS5 listening on ").nth(1) {
                    return rest.split_whitespace().next().and_then(|a| a.parse::<SocketAddr>().ok());
                }
            }
            None
        })
        .await;
        let Ok(Some(addr)) = found else {
            let _ = child.start_kill();
            panic!("netswitch did not report its address; stderr:\n{}", log.lock().unwrap());
        };
        let sink = log.clone();
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                sink.lock().unwrap().push_str(&format!("{line}\n"));
            }
        });
        Relay { child, addr, log }
    }

    fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }
}

/// Runs netswitch to completion (it must exit on its own) and returns its output.
async fn run_netswitch(args: &[&str]) -> Output {
    let child = Command::new(NETSWITCH)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .output();
    timeout(WAIT, child).await.expect("netswitch did not exit").expect("run netswitch")
}

/// Runs curl with the given arguments; panics with a clear message when curl is not installed.
async fn curl(args: &[&str]) -> Output {
    let run = Command::new("curl")
        .args(["--silent", "--show-error", "--max-time", "50"])
        .args(args)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    match timeout(WAIT, run).await.expect("curl did not finish") {
        Ok(output) => output,
        Err(error) => panic!("cannot run curl ({error}): install curl (./scripts/test installs it)"),
    }
}

fn stderr_of(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_downloads_and_uploads_16_mib_through_the_relay() {
    let file = Arc::new(random_bytes(FILE_SIZE, 1));
    let http = start_http(file.clone()).await;
    let relay = Relay::start(&["--listen", "127.0.0.1:0"]).await;
    let proxy = relay.addr.to_string();

    let downloaded = scratch("download");
    let url = format!("http://localhost:{}/file", http.port);
    let output = curl(&["--socks5-hostname", &proxy, &url, "-o", downloaded.to_str().unwrap()]).await;
    assert!(output.status.success(), "curl download failed: {}\nrelay:\n{}", stderr_of(&output), relay.log());
    let got = std::fs::read(&downloaded).unwrap();
    std::fs::remove_file(&downloaded).unwrap();
    assert_eq!(got.len(), FILE_SIZE);
    assert!(got == *file, "downloaded bytes differ from the served file");

    let upload = random_bytes(FILE_SIZE, 2);
    let source = scratch("upload");
    std::fs::write(&source, &upload).unwrap();
    let url = format!("http://localhost:{}/upload", http.port);
    let output = curl(&["--socks5-hostname", &proxy, "-T", source.to_str().unwrap(), &url]).await;
    std::fs::remove_file(&source).unwrap();
    assert!(output.status.success(), "curl upload failed: {}\nrelay:\n{}", stderr_of(&output), relay.log());
    let uploads = http.uploads.lock().unwrap();
    assert_eq!(uploads.len(), 1);
    assert_eq!(uploads[0].len(), FILE_SIZE);
    assert!(uploads[0] == upload, "uploaded bytes differ from the sent file");
}

/// Sends an RFC 1929 username/password exchange and returns the server's two-byte status reply.
async fn socks_auth(proxy: SocketAddr, username: &[u8], password: &[u8]) -> (TcpStream, [u8; 2]) {
    let mut stream = timeout(WAIT, TcpStream::connect(proxy)).await.unwrap().unwrap();
    stream.write_all(&[5, 1, 2]).await.unwrap();
    let mut method = [0u8; 2];
    timeout(WAIT, stream.read_exact(&mut method)).await.unwrap().unwrap();
    assert_eq!(method, [5, 2], "server must choose username/password");
    let mut request = vec![1, username.len() as u8];
    request.extend_from_slice(username);
    request.push(password.len() as u8);
    request.extend_from_slice(password);
    stream.write_all(&request).await.unwrap();
    let mut status = [0u8; 2];
    timeout(WAIT, stream.read_exact(&mut status)).await.unwrap().unwrap();
    (stream, status)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn username_and_password_are_enforced() {
    let http = start_http(Arc::new(random_bytes(100_000, 3))).await;
    let relay = Relay::start(&["--listen", "127.0.0.1:0", "--user", "u", "--password", "p"]).await;
    let proxy = relay.addr.to_string();
    let url = format!("http://localhost:{}/file", http.port);

    let good = curl(&["--socks5-hostname", &proxy, "--proxy-user", "u:p", &url, "-o", "/dev/null"]).await;
    assert!(good.status.success(), "right password refused: {}\nrelay:\n{}", stderr_of(&good), relay.log());
    let wrong =
        curl(&["--socks5-hostname", &proxy, "--proxy-user", "u:hunter2x", &url, "-o", "/dev/null"]).await;
    assert!(!wrong.status.success(), "wrong password accepted");
    let none = curl(&["--socks5-hostname", &proxy, &url, "-o", "/dev/null"]).await;
    assert!(!none.status.success(), "no credentials accepted");

    let (_, status) = socks_auth(relay.addr, b"u", b"p").await;
    assert_eq!(status, [1, 0], "right credentials: RFC 1929 success");
    let (mut stream, status) = socks_auth(relay.addr, b"u", b"hunter2x").await;
    assert_eq!(status, [1, 1], "wrong password: RFC 1929 failure status 0x01");
    let mut rest = [0u8; 1];
    let after = timeout(WAIT, stream.read(&mut rest)).await.expect("server must close after a failed auth");
    assert!(matches!(after, Ok(0) | Err(_)), "server kept talking after a failed auth: {after:?}");
    assert!(!relay.log().contains("hunter2x"), "a password reached the log:\n{}", relay.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_closes_connections_and_exits_zero() {
    let target = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let target_addr = target.local_addr().unwrap();
    let mut relay = Relay::start(&["--listen", "127.0.0.1:0"]).await;

    // One idle relayed connection through a raw SOCKS5 CONNECT.
    let mut client = timeout(WAIT, TcpStream::connect(relay.addr)).await.unwrap().unwrap();
    client.write_all(&[5, 1, 0]).await.unwrap();
    let mut method = [0u8; 2];
    timeout(WAIT, client.read_exact(&mut method)).await.unwrap().unwrap();
    assert_eq!(method, [5, 0]);
    let std::net::IpAddr::V4(ip) = target_addr.ip() else { unreachable!() };
    let mut request = vec![5, 1, 0, 1];
    request.extend_from_slice(&ip.octets());
    request.extend_from_slice(&target_addr.port().to_be_bytes());
    client.write_all(&request).await.unwrap();
    let mut reply = [0u8; 10];
    timeout(WAIT, client.read_exact(&mut reply)).await.unwrap().unwrap();
    assert_eq!(reply[..2], [5, 0], "CONNECT to a live listener must succeed");
    let (mut remote, _) = timeout(WAIT, target.accept()).await.unwrap().unwrap();

    let pid = relay.child.id().expect("netswitch is running").to_string();
    let kill = std::process::Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(kill.success(), "kill -TERM {pid} failed");
    let status = timeout(WAIT, relay.child.wait()).await.expect("netswitch ignored SIGTERM").unwrap();
    assert!(status.success(), "exit status after SIGTERM: {status}\nstderr:\n{}", relay.log());

    let mut byte = [0u8; 1];
    let client_end = timeout(WAIT, client.read(&mut byte)).await.expect("client connection left open");
    assert!(matches!(client_end, Ok(0) | Err(_)), "client got data: {client_end:?}");
    let remote_end = timeout(WAIT, remote.read(&mut byte)).await.expect("remote connection left open");
    assert!(matches!(remote_end, Ok(0) | Err(_)), "remote got data: {remote_end:?}");
}

#[tokio::test]
async fn help_documents_every_flag() {
    for args in [&["--help"][..], &["socks", "--help"][..]] {
        let output = run_netswitch(args).await;
        assert!(output.status.success(), "netswitch {args:?} failed");
        let help = String::from_utf8_lossy(&output.stdout);
        for flag in FLAGS {
            assert!(help.contains(flag), "netswitch {args:?} does not mention {flag}:\n{help}");
        }
    }
}

#[tokio::test]
async fn user_without_password_is_a_usage_error() {
    for args in [&["socks", "--user", "u"][..], &["socks", "--password", "p"][..]] {
        let output = run_netswitch(args).await;
        assert_eq!(output.status.code(), Some(2), "netswitch {args:?}: {}", stderr_of(&output));
    }
}

#[tokio::test]
async fn unknown_config_key_is_an_error_naming_the_key() {
    let path = scratch("unknown-key.json");
    std::fs::write(&path, r#"{"socks": {"listen": "127.0.0.1:0", "listen_port": 1080}}"#).unwrap();
    let output = run_netswitch(&["socks", "--config", path.to_str().unwrap()]).await;
    std::fs::remove_file(&path).unwrap();
    let stderr = stderr_of(&output);
    assert_eq!(output.status.code(), Some(2), "stderr: {stderr}");
    assert!(stderr.contains("listen_port"), "stderr does not name the key: {stderr}");
    assert!(!stderr.contains("listening on"), "started despite the bad config: {stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_file_settings_are_used() {
    let path = scratch("users.json");
    let config = r#"{ "log": { "level": "debug" },
        "socks": { "listen": "127.0.0.1:0", "users": [{"username": "alice", "password": "s3cret"}],
                   "handshake_timeout": "5s" },
        "connect_timeout": "2s", "half_close_timeout": "0s" }"#;
    std::fs::write(&path, config).unwrap();
    let relay = Relay::start(&["--config", path.to_str().unwrap()]).await;
    std::fs::remove_file(&path).unwrap();
    assert!(relay.addr.ip().is_loopback() && relay.addr.port() != 0, "{}", relay.addr);

    // The configured user is required: a no-auth greeting is refused with 0xFF.
    let mut stream = timeout(WAIT, TcpStream::connect(relay.addr)).await.unwrap().unwrap();
    stream.write_all(&[5, 1, 0]).await.unwrap();
    let mut method = [0u8; 2];
    timeout(WAIT, stream.read_exact(&mut method)).await.unwrap().unwrap();
    assert_eq!(method, [5, 0xFF]);
    let (_, status) = socks_auth(relay.addr, b"alice", b"s3cret").await;
    assert_eq!(status, [1, 0]);
    assert!(!relay.log().contains("s3cret"), "a password reached the log:\n{}", relay.log());
}

#[tokio::test]
async fn bind_failure_exits_non_zero_with_one_clear_line() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let output = run_netswitch(&["socks", "--listen", &addr]).await;
    let stderr = stderr_of(&output);
    assert_eq!(output.status.code(), Some(1), "stderr: {stderr}");
    let error_lines: Vec<&str> =
        stderr.lines().filter(|line| line.starts_with("netswitch: error:")).collect();
    assert_eq!(error_lines.len(), 1, "stderr: {stderr}");
    assert!(error_lines[0].contains(&addr), "error line does not name {addr}: {stderr}");
}

/// A listen address that is not loopback by netswitch's rule (an IPv4-mapped IPv6 address) yet
/// only reachable from this machine, so these tests expose nothing to the network.
const MAPPED_LOOPBACK: &str = "[::ffff:127.0.0.1]:0";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_loopback_without_users_needs_its_own_switch() {
    // allow_non_loopback alone, no users: an open proxy; refused with a usage error.
    let path = scratch("open-proxy.json");
    let config = format!(r#"{{"socks": {{"listen": "{MAPPED_LOOPBACK}", "allow_non_loopback": true}}}}"#);
    std::fs::write(&path, config).unwrap();
    let output = run_netswitch(&["socks", "--config", path.to_str().unwrap()]).await;
    let stderr = stderr_of(&output);
    assert_eq!(output.status.code(), Some(2), "stderr: {stderr}");
    assert!(stderr.contains("without users"), "stderr does not say why: {stderr}");
    assert!(stderr.contains("allow_unauthenticated_non_loopback"), "stderr does not name the key: {stderr}");
    assert!(!stderr.contains("listening on"), "started an open proxy: {stderr}");

    // With users it starts.
    let relay = Relay::start(&["--config", path.to_str().unwrap(), "--user", "u", "--password", "p"]).await;
    assert!(!relay.log().contains("WITHOUT authentication"), "{}", relay.log());
    drop(relay);
    std::fs::remove_file(&path).unwrap();

    // With the explicit switch it starts, with a loud warning.
    let path = scratch("open-proxy-allowed.json");
    let config = format!(
        r#"{{"socks": {{"listen": "{MAPPED_LOOPBACK}", "allow_non_loopback": true,
                        "allow_unauthenticated_non_loopback": true}}}}"#
    );
    std::fs::write(&path, config).unwrap();
    let relay = Relay::start(&["--config", path.to_str().unwrap()]).await;
    std::fs::remove_file(&path).unwrap();
    let log = timeout(WAIT, async {
        loop {
            let log = relay.log();
            if log.contains("WITHOUT authentication") {
                return log;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no warning about the open proxy:\n{}", relay.log()));
    assert!(
        log.lines().any(|line| line.contains("WARN") && line.contains("WITHOUT authentication")),
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_login_does_not_log_the_username() {
    let relay = Relay::start(&["--listen", "127.0.0.1:0", "--user", "u", "--password", "p"]).await;
    // A password typed into the username field.
    let (_, status) = socks_auth(relay.addr, b"my-secret-password", b"p").await;
    assert_eq!(status, [1, 1]);
    let log = timeout(WAIT, async {
        loop {
            let log = relay.log();
            if log.contains("SOCKS authentication failed") {
                return log;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("the failed login was not logged:\n{}", relay.log()));
    assert!(!log.contains("my-secret-password"), "the username reached the log:\n{log}");
}

#[tokio::test]
async fn durations_the_kernel_refuses_are_config_errors_naming_the_key() {
    // From issue 11: each of these started, then every CONNECT failed (EINVAL) or a connection
    // task panicked on clock overflow.
    for (key, json) in [
        ("tcp_keep_alive", r#""tcp_keep_alive": "10h""#),
        ("tcp_user_timeout", r#""tcp_user_timeout": "25d""#),
        ("half_close_timeout", r#""half_close_timeout": "500000000000y""#),
        ("socks.handshake_timeout", r#""socks": {"handshake_timeout": "500000000000y"}"#),
    ] {
        let path = scratch(&format!("duration-{key}.json"));
        std::fs::write(&path, format!("{{{json}}}")).unwrap();
        let output =
            run_netswitch(&["socks", "--listen", "127.0.0.1:0", "--config", path.to_str().unwrap()]).await;
        std::fs::remove_file(&path).unwrap();
        let stderr = stderr_of(&output);
        assert_eq!(output.status.code(), Some(2), "{key}: stderr: {stderr}");
        assert!(
            stderr.contains(&format!("`{key}` must be")),
            "{key}: stderr does not name the key: {stderr}"
        );
        assert!(!stderr.contains("panicked"), "{key}: {stderr}");
    }
}
