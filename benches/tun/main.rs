//! The packet tunnel benchmark (root, Linux): the same traffic through `netswitch tun` with each
//! TCP stack and without the VPN, side by side in one run, as ratios. Topology: see [`net`] —
//! this process is the "device" (the apps' sockets), the server is a child process in its own
//! network namespace behind a veth, and `netswitch tun` is a child process reading tun0 (its CPU
//! and RSS its own), restarted for each stack ([`net::Mode`]).
//!
//! Run: `cargo bench --bench tun [-- SECTION...] [--stack system|userspace]` as root (else it
//! says why and does nothing). Sections, all by default, each with a column per stack (the
//! system stack with tun0's offloads on, its default, unless said otherwise) and the no-VPN
//! path: `tun-bulk` (1 and 4 streams each way, Gbit/s; the system stack with tun0's offloads off
//! and on, the userspace stack, which never has them), `tun-conn` (connections/s, RTT p50/p99),
//! `tun-udp` (loss at 500 Mbit/s each way, echoed datagrams/s at 64 and 1,200 B), `tun-idle` (RSS
//! per idle TUN connection at 1,000 and 9,000; RSS under a UDP flood). Within a netswitch run the
//! no-VPN path and the tunnel alternate trial by trial; the no-VPN samples of all runs are
//! pooled. `--stack` keeps one stack's columns. Figures only; nothing is asserted.
//! `scripts/tun-bench` runs it; every section with both stacks took
//! 3 minutes on 2 shared cores.
//!
//! `cargo bench --bench tun -- --churn SECONDS` runs only the churn: connections opened and
//! closed one after another through the tunnel (the system stack, or `--stack`'s) for that long,
//! connections/s per 10-second window and the slowest connect (a stall: over 1 s), then 30 s of
//! the same without the VPN as the reference.

#[path = "../common/mod.rs"]
#[allow(dead_code)] // shared with the relay and udp benchmarks, which use other parts
mod common;

mod idle;
mod net;
mod server;
mod tcp;
mod udp;

use net::Mode;

const OWN: [&str; 4] = ["tun-bulk", "tun-conn", "tun-udp", "tun-idle"];

/// The modes each section measures, in order (before `--stack` filters them).
fn modes(section: &str) -> &'static [Mode] {
    match section {
        "tun-bulk" => {
            &[Mode::SystemNoOffload, Mode::SystemOffload, Mode::UserspaceNoOffload, Mode::Userspace]
        }
        _ => &[Mode::SystemOffload, Mode::Userspace],
    }
}

/// The command that reproduces `section`'s table measured in `modes` (`--stack` when they are
/// one stack's).
pub fn command(section: &str, modes: &[Mode]) -> String {
    match modes.first() {
        Some(first) if modes.iter().all(|m| m.stack() == first.stack()) => {
            format!("cargo bench --bench tun -- {section} --stack {}", first.stack())
        }
        _ => format!("cargo bench --bench tun -- {section}"),
    }
}

fn run(args: &common::args::Args) -> Result<(), String> {
    let churn_mode = match args.stack {
        Some("userspace") => Mode::Userspace,
        _ => Mode::SystemOffload,
    };
    let first = match (args.churn, args.sections.first()) {
        (None, Some(section)) => Mode::of(modes(section), args.stack).first().copied(),
        _ => None,
    };
    let mut net = net::Net::up(first.unwrap_or(churn_mode))?;
    println!(
        "topology: device netns -> tun0 (MTU {}) -> netswitch tun -> wifi0 veth -> server netns \
         10.200.9.1; \"no VPN\" = sockets bound to wifi0",
        net::TUN_MTU
    );
    if let Some(duration) = args.churn {
        net.begin("churn");
        net.switch(churn_mode)?;
        tcp::churn(duration, churn_mode)?;
        return net.down();
    }
    for section in &args.sections {
        net.begin(section);
        let modes = Mode::of(modes(section), args.stack);
        match *section {
            "tun-bulk" => tcp::bulk(&mut net, &modes)?,
            "tun-conn" => tcp::conn(&mut net, &modes)?,
            "tun-udp" => udp::run(&mut net, &modes)?,
            "tun-idle" => idle::run(&mut net, &modes)?,
            other => return Err(format!("no section {other}")),
        }
        net.print_log();
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
