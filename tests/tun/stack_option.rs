//! `netswitch tun --stack userspace`: the CLI hands the stack choice to the tunnel (its device
//! is created without offloads, which smoltcp cannot take) and relays the app's TCP connections
//! and UDP flows through smoltcp, with the same assertions as the kernel-stack CLI test.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, UdpSocket};
use std::process::{Command, Stdio};
use std::time::Duration;

use super::topology::{self, Link, Topology};
use super::{
    connect_to, pattern, role, run_in_namespace, server, server_command, server_v6, udp_roundtrip, KillOnDrop,
};

#[test]
fn tun_cli_relays_through_the_userspace_stack() {
    if role().as_deref() != Some("device") {
        return run_in_namespace("stack_option::tun_cli_relays_through_the_userspace_stack");
    }
    let _topology = Topology::up(server_command()).unwrap();
    topology::run("ip", &["route", "add", "default", "via", "10.200.1.1", "dev", "wifi0"]).unwrap();
    let mut cli = KillOnDrop(
        Command::new(env!("CARGO_BIN_EXE_netswitch"))
            .args(["tun", "--name", "tun2", "--address", "172.19.0.9/30", "--address", "fdfe::9/126"])
            .args(["--route", "10.200.9.0/24", "--route", "2001:db8:9::/64", "--mtu", "1500"])
            .args(["--interface-type", "wifi0=wifi", "--interface-type", "cell0=cellular"])
            .args(["--stack", "userspace"])
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let cli = &mut cli.0;
    let stderr = cli.stderr.take().unwrap();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let log = std::thread::spawn(move || {
        let mut lines = Vec::new();
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.contains("tunnel running") {
                let _ = ready_tx.send(line.clone());
            }
            lines.push(line);
        }
        lines
    });
    let Ok(running) = ready_rx.recv_timeout(Duration::from_secs(10)) else {
        let _ = cli.kill();
        panic!("netswitch tun --stack userspace did not start: {:?}", log.join().unwrap());
    };
    assert!(running.contains("stack=Userspace"), "the CLI chose the userspace stack: {running}");

    // The app's side is the tunnel, the server sees wifi0: smoltcp terminated it, netswitch dialed.
    for (address, from) in [
        (server(super::server::PEER), Link::Wifi.client_v4()),
        (server_v6(super::server::PEER), Link::Wifi.client_v6()),
    ] {
        let mut stream = connect_to(address).unwrap();
        let local = stream.local_addr().unwrap().ip().to_string();
        assert!(["172.19.0.9", "fdfe::9"].contains(&local.as_str()), "the app's side is the tunnel: {local}");
        let mut line = String::new();
        stream.read_to_string(&mut line).unwrap();
        assert_eq!(line.trim(), format!("peer={from}"));
    }
    // 1 MiB echoed, the app half-closes first: every byte back, then the server's FIN.
    let sent = pattern(1 << 20, 11);
    let mut stream = connect_to(server(super::server::ECHO)).unwrap();
    let mut writer = stream.try_clone().unwrap();
    let expected = sent.clone();
    let writing = std::thread::spawn(move || {
        writer.write_all(&sent)?;
        writer.shutdown(Shutdown::Write)
    });
    let mut echoed = Vec::new();
    stream.read_to_end(&mut echoed).unwrap();
    writing.join().unwrap().unwrap();
    assert!(echoed == expected, "echo differs: {} bytes back of {}", echoed.len(), expected.len());
    let socket = UdpSocket::bind("0.0.0.0:0").unwrap();
    let (answer, from) = udp_roundtrip(&socket, b"userspace CLI", server(super::server::UDP_ECHO));
    assert_eq!((&answer[..], from), (&b"userspace CLI"[..], server(super::server::UDP_ECHO)));

    // SAFETY: kill with a pid this test spawned.
    assert_eq!(unsafe { libc::kill(cli.id() as libc::pid_t, libc::SIGINT) }, 0);
    let status = cli.wait().unwrap();
    let log = log.join().unwrap();
    assert!(status.success(), "{status}: {log:?}");
    println!(
        "netswitch tun --stack userspace: v4/v6 TCP from wifi0, 1 MiB echoed with a half-close, UDP echoed"
    );
}
