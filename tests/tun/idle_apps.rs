//! The apps of the idle-memory measurement in a process of their own: it opens connections
//! through tun0 to the server's idle echo, echoes one message on each and holds them open until
//! its stdin closes. The measuring process (netswitch) then holds only its own sockets, so
//! 10,000 connections fit its open-files limit and its RSS is netswitch's alone.

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, ChildStdin, Command, Stdio};

use super::{role, server, ROLE, TIMEOUT};

/// How many connections the apps process opens (read by that process only).
const COUNT: &str = "NETSWITCH_TUN_TEST_APPS";

/// Entry point of the apps process; does nothing when run directly.
#[test]
#[ignore = "entry point of the apps process the idle measurement starts"]
fn tun_idle_apps_entry() {
    if role().as_deref() != Some("apps") {
        return;
    }
    let count: usize = std::env::var(COUNT).unwrap().parse().unwrap();
    super::userspace::raise_open_files_limit();
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let streams = runtime.block_on(open(count));
    println!("READY {}", streams.len());
    // Hold every connection until the measuring process closes our stdin.
    let _ = std::io::stdin().read_to_end(&mut Vec::new());
    drop(streams);
}

/// Opens `count` connections (100 handshakes at a time), each echoing one message.
pub(super) async fn open(count: usize) -> Vec<tokio::net::TcpStream> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let gate = std::sync::Arc::new(tokio::sync::Semaphore::new(100));
    let opening: Vec<_> = (0..count)
        .map(|i| {
            let gate = gate.clone();
            tokio::spawn(async move {
                let _permit = gate.acquire().await.unwrap();
                let connect = tokio::net::TcpStream::connect(super::server(server::ECHO_IDLE));
                let mut stream = tokio::time::timeout(TIMEOUT, connect).await.unwrap().unwrap();
                let message = format!("idle {i:05}");
                stream.write_all(message.as_bytes()).await.unwrap();
                let mut echoed = vec![0u8; message.len()];
                tokio::time::timeout(TIMEOUT, stream.read_exact(&mut echoed)).await.unwrap().unwrap();
                assert_eq!(echoed, message.as_bytes());
                stream
            })
        })
        .collect();
    let mut streams = Vec::with_capacity(count);
    for task in opening {
        streams.push(task.await.unwrap());
    }
    streams
}

/// The apps process, holding its connections open until dropped.
pub(super) struct Apps {
    child: Child,
    stdin: Option<ChildStdin>,
}

impl Apps {
    /// Starts the apps process (in this network namespace) and waits until its `count`
    /// connections are open and have each echoed a message.
    pub fn open(count: usize) -> Apps {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "idle_apps::tun_idle_apps_entry",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(ROLE, "apps")
            .env(COUNT, count.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        while stdout.read_line(&mut line).unwrap() > 0 {
            // The harness prints "test NAME ... " before the test's own output on that line.
            if let Some((_, opened)) = line.split_once("READY ") {
                assert_eq!(opened.trim(), count.to_string());
                // The rest of its output (the harness's summary) is read, so that it never
                // meets a closed pipe.
                std::thread::spawn(move || std::io::copy(&mut stdout, &mut std::io::sink()));
                return Apps { child, stdin };
            }
            line.clear();
        }
        panic!("the apps process ended before its connections were open: {:?}", child.wait());
    }
}

impl Drop for Apps {
    /// Closes the apps' stdin (they close their connections and exit) and waits for them.
    fn drop(&mut self) {
        drop(self.stdin.take());
        let _ = self.child.wait();
    }
}
