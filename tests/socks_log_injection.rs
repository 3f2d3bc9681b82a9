//! Issue 11 finding 6: a CONNECT domain with CR/LF or ESC cannot forge log lines. The server
//! refuses such a domain (reply 0x01: it is never a host name) before anything logs it. The test
//! captures everything the server and the manager log (down to TRACE) while a client tries.

mod socks_client;

use std::io::Write;
use std::sync::{Arc, Mutex};

use netswitch::inbound::socks::SocksSettings;
use socks_client::{domain_request, read_to_end, start_proxy, WAIT};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

/// Collects formatted log output in memory.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

// Current-thread runtime: every task of the server and the manager runs on this thread, under the
// thread's default subscriber.
#[tokio::test]
async fn a_domain_with_control_characters_cannot_forge_log_lines() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let proxy = start_proxy(SocksSettings::default()).await;
    // The empty label keeps any resolution attempt local (no DNS query leaves the machine).
    let forged: [&[u8]; 3] = [
        b"a..invalid\n2099-01-01T00:00:00.000000Z  INFO netswitch: FORGED LINE",
        b"a..invalid\r2099-01-01T00:00:00.000000Z  INFO netswitch: FORGED LINE",
        b"a..invalid\x1b[2K\x1b[1G2099-01-01T00:00:00.000000Z  INFO netswitch: FORGED LINE",
    ];
    let mut replies = Vec::new();
    for name in forged {
        let mut client = timeout(WAIT, TcpStream::connect(proxy.addr())).await.unwrap().unwrap();
        client.write_all(&[5, 1, 0]).await.unwrap();
        let mut method = [0u8; 2];
        timeout(WAIT, client.read_exact(&mut method)).await.unwrap().unwrap();
        assert_eq!(method, [5, 0]);
        client.write_all(&domain_request(name, 443)).await.unwrap();
        replies.push(read_to_end(&mut client).await.0);
    }
    // Let the connections finish (and log whatever they log) before reading the capture.
    timeout(WAIT, async {
        while !proxy.manager.is_empty() {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    })
    .await
    .unwrap();

    let log = captured.text();
    let forged_lines = log.lines().filter(|line| line.starts_with("2099-01-01")).count();
    let raw_controls = log.matches(['\r', '\x1b']).count();
    println!(
        "forgery attempts: 3; forged lines in the log: {forged_lines}; raw CR/ESC bytes in the log: \
         {raw_controls}; mentions of the forged text: {}",
        log.matches("FORGED").count()
    );
    assert!(log.contains("SOCKS handshake rejected"), "the capture saw nothing of the server:\n{log}");
    assert_eq!(forged_lines, 0, "a forged line reached the log:\n{log}");
    assert!(!log.contains("FORGED"), "the untrusted domain reached the log:\n{log}");
    assert_eq!(raw_controls, 0, "raw control characters reached the log:\n{log:?}");
    for reply in replies {
        assert_eq!(reply, [5, 1, 0, 1, 0, 0, 0, 0, 0, 0], "reply 0x01 (malformed domain), then close");
    }
}
