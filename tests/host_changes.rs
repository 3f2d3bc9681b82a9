//! Issue 14 (idle wakeups): the host's interfaces are re-read when the kernel says they changed
//! (rtnetlink notifications), not on a timer.
//!
//! Each test runs in a network namespace of its own thread (`unshare(CLONE_NEWNET)`, root only)
//! with a veth pair it adds and removes itself, so nothing touches the machine's real networks
//! and nothing leaves it. Without the privileges or the `ip` tool the tests print why and skip.
#![cfg(target_os = "linux")]

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use netswitch::network::host::host_snapshot;
use netswitch::network::host_changes::HostChanges;
use netswitch::InterfaceSnapshot;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::time::timeout;

const NETSWITCH: &str = env!("CARGO_BIN_EXE_netswitch");
/// Upper bound of every wait (a hang guard, not a speed requirement).
const WAIT: Duration = Duration::from_secs(30);
/// One end of the veth pair (the one given the address) and its peer.
const LINK: &str = "nsveth0";
const PEER: &str = "nsveth1";
const ADDRESS: &str = "10.77.0.1";

/// Moves the calling thread into a new network namespace with `lo` up, or says why it cannot.
fn enter_namespace() -> Result<(), String> {
    // SAFETY: unshare only changes the calling thread's namespace (a thread of its own here).
    if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
        return Err(format!("unshare(CLONE_NEWNET): {} (needs root)", std::io::Error::last_os_error()));
    }
    ip(&["link", "set", "lo", "up"])?;
    // veth needs the module; try a pair now so a kernel without it skips instead of failing.
    ip(&["link", "add", "probe0", "type", "veth", "peer", "name", "probe1"])?;
    ip(&["link", "del", "probe0"])
}

/// Adds the veth pair with its peer end up (the link itself is still down).
fn add_pair() {
    ip(&["link", "add", LINK, "type", "veth", "peer", "name", PEER]).unwrap();
    ip(&["link", "set", PEER, "up"]).unwrap();
}

/// Runs `ip ARGS` in the calling thread's namespace.
fn ip(args: &[&str]) -> Result<(), String> {
    let output = Command::new("ip").args(args).output().map_err(|e| format!("`ip`: {e}"))?;
    if !output.status.success() {
        return Err(format!("ip {}: {}", args.join(" "), String::from_utf8_lossy(&output.stderr)));
    }
    Ok(())
}

/// Runs `body` on a thread of its own inside a fresh namespace with a current-thread runtime;
/// skips with the reason when the namespace cannot be made.
fn in_namespace<F: std::future::Future<Output = ()>>(
    test: &'static str,
    body: impl FnOnce() -> F + Send + 'static,
) {
    let thread = std::thread::spawn(move || {
        if let Err(reason) = enter_namespace() {
            println!("skipped {test}: {reason}");
            return;
        }
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(body());
    });
    if let Err(panic) = thread.join() {
        std::panic::resume_unwind(panic);
    }
}

fn has_address(snapshot: &InterfaceSnapshot, name: &str, address: IpAddr) -> bool {
    snapshot.by_name(name).is_some_and(|i| i.addresses.iter().any(|a| a.ip == address))
}

/// Waits for notifications until `done` holds for a fresh read of the interfaces.
async fn until(changes: &mut HostChanges, what: &str, done: impl Fn(&InterfaceSnapshot) -> bool) {
    timeout(WAIT, async {
        loop {
            changes.changed().await.expect("read notifications");
            if done(&host_snapshot(&BTreeMap::new()).expect("read interfaces")) {
                return;
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no notification led to: {what}"));
}

#[test]
fn adding_and_removing_a_link_and_an_address_is_reported() {
    in_namespace("adding_and_removing_a_link_and_an_address_is_reported", || async {
        let mut changes = HostChanges::subscribe().expect("subscribe");
        let address: IpAddr = ADDRESS.parse().unwrap();
        // Nothing changes in a fresh namespace, so nothing is reported.
        assert!(
            timeout(Duration::from_millis(500), changes.changed()).await.is_err(),
            "a notification arrived although nothing changed"
        );

        add_pair();
        ip(&["link", "set", LINK, "up"]).unwrap();
        until(&mut changes, "the link is up", |s| s.by_name(LINK).is_some()).await;

        ip(&["addr", "add", &format!("{ADDRESS}/24"), "dev", LINK]).unwrap();
        until(&mut changes, "the address is listed", |s| has_address(s, LINK, address)).await;

        ip(&["addr", "del", &format!("{ADDRESS}/24"), "dev", LINK]).unwrap();
        until(&mut changes, "the address is gone", |s| {
            s.by_name(LINK).is_some() && !has_address(s, LINK, address)
        })
        .await;

        ip(&["link", "del", LINK]).unwrap();
        until(&mut changes, "the pair is gone", |s| s.by_name(LINK).is_none() && s.by_name(PEER).is_none())
            .await;
    });
}

#[test]
fn netswitch_socks_follows_changes_when_the_kernel_reports_them() {
    in_namespace("netswitch_socks_follows_changes_when_the_kernel_reports_them", || async {
        let mut child = tokio::process::Command::new(NETSWITCH)
            .args(["socks", "--listen", "127.0.0.1:0", "--log-level", "debug"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn netswitch");
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let log = Arc::new(Mutex::new(String::new()));
        // Reads stderr until a line satisfies `wanted`.
        let mut wait_for = async |what: &str, wanted: &dyn Fn(&str) -> bool| {
            let found = timeout(WAIT, async {
                while let Ok(Some(line)) = lines.next_line().await {
                    log.lock().unwrap().push_str(&format!("{line}\n"));
                    if wanted(&line) {
                        return true;
                    }
                }
                false
            })
            .await;
            assert!(found == Ok(true), "netswitch never logged {what}; stderr:\n{}", log.lock().unwrap());
        };
        wait_for("its address", &|l| l.contains("netswitch SOCKS5 listening on")).await;

        // The address is in place before the link comes up, so the read that first lists the
        // link also lists the address.
        add_pair();
        ip(&["addr", "add", &format!("{ADDRESS}/24"), "dev", LINK]).unwrap();
        ip(&["link", "set", LINK, "up"]).unwrap();
        wait_for("the new link", &|l| l.contains("network changed") && l.contains(LINK)).await;

        ip(&["addr", "del", &format!("{ADDRESS}/24"), "dev", LINK]).unwrap();
        wait_for("the lost address", &|l| l.contains("network changed") && l.contains(ADDRESS)).await;

        // The pair was the namespace's only network: removing it leaves none.
        ip(&["link", "del", LINK]).unwrap();
        wait_for("the removed pair", &|l| l.contains("no usable network")).await;

        let log = log.lock().unwrap().clone();
        assert!(log.contains("the kernel reported a link, address or route change"), "{log}");
        assert!(!log.contains("polling"), "fell back to polling:\n{log}");
        let _ = child.start_kill();
    });
}
