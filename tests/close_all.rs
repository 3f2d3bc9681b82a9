//! close_all() on 500 idle relayed connections: all reported within 1 s, tracker empty, and the
//! process's file descriptors back where they were. Alone in its binary so that no other test
//! opens or closes descriptors meanwhile.

mod common;

use std::time::{Duration, Instant};

use common::*;
use netswitch::tracker::ConnectionState;
use netswitch::{ConnectionError, RelaySettings};
use tokio::net::TcpListener;
use tokio::time::timeout;

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map(|d| d.count()).unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_all_500_idle_connections_promptly() {
    const N: usize = 500;
    let mut h = Harness::new(RelaySettings::default()).await;
    let server = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server_addr = server.local_addr().unwrap();
    let fds_before = open_fds();
    let mut ends = Vec::new();
    for _ in 0..N {
        let (client, _) = h.connect(server_addr).await;
        let (s, _) = server.accept().await.unwrap();
        ends.push((client, s));
    }
    timeout(WAIT, async {
        while h.manager.list().iter().filter(|c| c.state == ConnectionState::Relaying).count() < N {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("all connections relaying");
    // Our own test ends hold 2 fds per connection; the manager holds 2 more.
    assert!(open_fds() >= fds_before + 4 * N);
    let started = Instant::now();
    assert_eq!(h.manager.close_all(), N);
    for _ in 0..N {
        let closed = h.next_closed().await;
        assert!(matches!(error_of(&closed), ConnectionError::Closed));
    }
    let elapsed = started.elapsed();
    assert!(h.manager.is_empty());
    drop(ends);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(open_fds(), fds_before, "file descriptors back where they were");
    println!("close_all: {N} idle connections closed and reported in {elapsed:?}");
    assert!(elapsed < Duration::from_secs(1), "close_all took {elapsed:?}");
    h.assert_no_more_closed().await;
}
