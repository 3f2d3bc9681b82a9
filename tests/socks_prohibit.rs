//! Issue 11 finding 11 (EACCES part): a destination forbidden by a local rule gets SOCKS reply
//! 0x02 (connection not allowed by ruleset), not 0x01.
//!
//! The rule is a real `prohibit` route in a network namespace of this test's own thread
//! (`unshare(CLONE_NEWNET)`, root only): `connect` to 192.0.2.1 then fails with EACCES. The
//! namespace has only a loopback interface, so nothing can leave the machine. Without the
//! privileges or the `ip` tool the test prints why and skips.

mod socks_client;

use std::process::Command;

use netswitch::inbound::socks::SocksSettings;
use socks_client::{connect_request, read_to_end, start_proxy, WAIT};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

/// Moves the calling thread into a new network namespace with `lo` up and a `prohibit` route to
/// 192.0.2.0/24, or says why it cannot.
fn enter_namespace_with_prohibit_route() -> Result<(), String> {
    // SAFETY: unshare only changes the calling thread's namespace (a thread of its own here).
    if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
        return Err(format!("unshare(CLONE_NEWNET): {} (needs root)", std::io::Error::last_os_error()));
    }
    // Commands started from this thread run in its namespace.
    for args in [&["link", "set", "lo", "up"][..], &["route", "add", "prohibit", "192.0.2.0/24"]] {
        let output = Command::new("ip").args(args).output().map_err(|e| format!("`ip`: {e}"))?;
        if !output.status.success() {
            return Err(format!("ip {}: {}", args.join(" "), String::from_utf8_lossy(&output.stderr)));
        }
    }
    Ok(())
}

#[test]
fn a_prohibit_route_gets_reply_2() {
    let thread = std::thread::spawn(|| {
        if let Err(reason) = enter_namespace_with_prohibit_route() {
            println!("skipped a_prohibit_route_gets_reply_2: {reason}");
            return None;
        }
        // The kernel really answers EACCES here.
        let direct = std::net::TcpStream::connect("192.0.2.1:80").unwrap_err();
        assert_eq!(direct.raw_os_error(), Some(libc::EACCES), "{direct}");
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        Some(runtime.block_on(async {
            let proxy = start_proxy(SocksSettings::default()).await;
            let mut client = timeout(WAIT, TcpStream::connect(proxy.addr())).await.unwrap().unwrap();
            client.write_all(&[5, 1, 0]).await.unwrap();
            let mut method = [0u8; 2];
            timeout(WAIT, client.read_exact(&mut method)).await.unwrap().unwrap();
            assert_eq!(method, [5, 0]);
            client.write_all(&connect_request("192.0.2.1:80".parse().unwrap())).await.unwrap();
            read_to_end(&mut client).await.0
        }))
    });
    if let Some(reply) = thread.join().unwrap() {
        println!("CONNECT through a prohibit route: reply {reply:?}");
        assert_eq!(reply, [5, 2, 0, 1, 0, 0, 0, 0, 0, 0], "expected 0x02 (not allowed by ruleset)");
    }
}
