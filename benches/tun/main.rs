//! The packet tunnel benchmark (root, Linux): the same traffic through `netswitch tun` and
//! without the VPN, side by side in one run, as ratios. Topology: see [`net`] — this process is
//! the "device" (the apps' sockets), the server is a child process in its own network namespace
//! behind a veth, and `netswitch tun` is a child process reading tun0 (its CPU and RSS its own).
//!
//! Run: `cargo bench --bench tun [-- SECTION...]` as root (else it says why and does nothing).
//! Sections, all by default: `tun-bulk` (1 and 4 streams each way, Gbit/s, netswitch with the
//! device's offloads off and on), `tun-conn`
//! (connections/s, RTT p50/p99), `tun-udp` (loss at 500 Mbit/s, echoed datagrams/s at 64 and
//! 1,200 B), `tun-idle` (RSS per idle TUN connection at 1,000 and 9,000; RSS under a UDP
//! flood). Figures only; nothing is asserted. `scripts/tun-bench` runs it.
//!
//! `cargo bench --bench tun -- --churn SECONDS` runs only the churn: connections opened and
//! closed one after another through the tunnel for that long, connections/s per 10-second window
//! and the slowest connect (a stall: over 1 s), then 30 s of the same without the VPN as the
//! reference.

#[path = "../common/mod.rs"]
#[allow(dead_code)] // shared with the relay and udp benchmarks, which use other parts
mod common;

mod idle;
mod net;
mod server;
mod tcp;
mod udp;

const OWN: [&str; 4] = ["tun-bulk", "tun-conn", "tun-udp", "tun-idle"];

fn run(args: &common::args::Args) -> Result<(), String> {
    let mut net = net::Net::up()?;
    println!(
        "topology: device netns -> tun0 (MTU {}) -> netswitch tun -> wifi0 veth -> server netns \
         10.200.9.1; \"no VPN\" = sockets bound to wifi0",
        net::TUN_MTU
    );
    if let Some(duration) = args.churn {
        if !net.offload() {
            net.restart(true)?;
        }
        tcp::churn(duration)?;
        return net.down();
    }
    for section in &args.sections {
        if *section == "tun-bulk" {
            tcp::bulk(&mut net)?;
        } else {
            // Everything but bulk runs with the offloads on (netswitch's default).
            if !net.offload() {
                net.restart(true)?;
            }
            match *section {
                "tun-conn" => tcp::conn()?,
                "tun-udp" => udp::run(&net)?,
                "tun-idle" => idle::run(&net)?,
                other => return Err(format!("no section {other}")),
            }
        }
        let lines = net.new_log_lines();
        if !lines.is_empty() {
            println!(
                "  netswitch wrote {} log lines, first: {}",
                lines.len(),
                lines[..lines.len().min(3)].join(" | ")
            );
        }
    }
    net.down()
}

fn main() {
    let Some(args) = common::args::start("tun", "tun-server", server::serve, &OWN, &OWN) else {
        return;
    };
    if let Some(reason) = net::cannot_run() {
        println!("tun benchmark skipped: {reason}");
        return;
    }
    if let Err(e) = run(&args) {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}
