//! Linux/Android: connections that went quiet after a bulk transfer hold no splice pipe. Each of
//! 100 relayed connections downloads 1 MiB (past the 512,000-byte threshold, so its download
//! direction splices through a pipe), then stays open and silent; the process's pipe descriptors
//! are counted before and after. Alone in its binary so that no other test opens pipes meanwhile.
#![cfg(any(target_os = "linux", target_os = "android"))]

mod common;

use std::time::Duration;

use common::*;
use netswitch::RelaySettings;
use tokio::io::AsyncReadExt;
use tokio::net::TcpListener;
use tokio::time::timeout;

const CONNECTIONS: usize = 100;
const BULK: usize = 1024 * 1024;
/// What the relay may keep after the transfers: the empty pipes pooled by each of the 2 worker
/// threads (4 each, `relay::splice::KEPT_PIPES`), 2 descriptors per pipe — not one per connection.
const POOLED_PIPE_FDS: usize = 2 * 4 * 2;

/// Open descriptors of this process that are pipes.
fn pipe_fds() -> usize {
    let Ok(entries) = std::fs::read_dir("/proc/self/fd") else { return 0 };
    entries
        .filter_map(|entry| std::fs::read_link(entry.ok()?.path()).ok())
        .filter(|target| target.to_string_lossy().starts_with("pipe:"))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_after_a_bulk_transfer_hold_no_pipe() {
    let h = Harness::new(RelaySettings::default()).await;
    let server = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server_addr = server.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((mut stream, _)) = server.accept().await {
            send_pattern(&mut stream, 5, BULK).await.unwrap();
            held.push(stream); // open and silent from now on
        }
    });
    let before = pipe_fds();
    let mut clients = Vec::new();
    for _ in 0..CONNECTIONS {
        let (mut client, id) = h.connect(server_addr).await;
        let mut expected = vec![0u8; BULK];
        Pattern(5).fill(&mut expected);
        let mut got = vec![0u8; BULK];
        timeout(WAIT, client.read_exact(&mut got)).await.expect("bulk in time").unwrap();
        assert!(got == expected, "connection {id}: bytes differ");
        clients.push(client);
    }
    // A direction gives its pipe back right after its last write, once it sees its source drained.
    let mut held = pipe_fds().saturating_sub(before);
    for _ in 0..200 {
        if held <= POOLED_PIPE_FDS {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
        held = pipe_fds().saturating_sub(before);
    }
    assert_eq!(h.manager.len(), CONNECTIONS, "every connection is still open");
    println!(
        "{CONNECTIONS} idle connections after a {BULK}-byte download each: {held} pipe descriptors held \
         ({:.2} per connection)",
        held as f64 / CONNECTIONS as f64
    );
    assert!(
        held <= POOLED_PIPE_FDS,
        "{held} pipe descriptors held by {CONNECTIONS} idle connections (at most {POOLED_PIPE_FDS} pooled)"
    );
}
