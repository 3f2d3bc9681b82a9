//! What the benchmark binaries (`relay`, `udp`, `tun`) share: the command line, the relay child
//! processes (the real `netswitch socks` and this binary's own baseline relays), the /proc
//! figures of a child, system call summaries and the table printer.
//!
//! Every relay runs in a child process, so its CPU time, context switches and RSS are its own;
//! the load (clients and servers) runs in the benchmark process. Everything stays on loopback.

pub mod args;
pub mod child;
pub mod procfs;
pub mod table;
pub mod trace;

/// Every section name either benchmark knows; each binary runs the ones it owns and ignores the
/// others, so `cargo bench -- udp idle` runs `idle` in `relay` and `udp` in `udp`.
pub const ALL_SECTIONS: [&str; 9] =
    ["bulk", "conn", "idle", "udp", "syscalls", "tun-bulk", "tun-conn", "tun-udp", "tun-idle"];

/// Median of `values` (the upper one for an even count); NaN when empty.
pub fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(|a, b| a.total_cmp(b));
    values.get(values.len() / 2).copied().unwrap_or(f64::NAN)
}

/// Value at percentile `p` (0-100) of `values`, which it sorts; NaN when empty.
pub fn percentile(values: &mut [f64], p: usize) -> f64 {
    values.sort_by(|a, b| a.total_cmp(b));
    let index = (values.len() * p / 100).min(values.len().saturating_sub(1));
    values.get(index).copied().unwrap_or(f64::NAN)
}
