//! The packet-flow test host: instead of netswitch reading tun0's fd, a thread of the test moves
//! tun0's packets through the packet-flow API ([`Netswitch::start_packet_flow`]), as an iOS
//! `NEPacketTunnelProvider` moves them between `packetFlow` and netswitch — it reads tun0 in
//! batches into `PacketFlowInput::write_packets`, and the `PacketFlowWriter` writes every packet
//! it is handed back into tun0.
//!
//! Which link a device namespace uses is the process's choice: [`run_in_namespace_over_flow`]
//! starts the test with [`LINK`] = `flow`, and [`start`] (what `Device::up_through` calls) then
//! starts netswitch on the packet flow of the fd instead of the fd itself.

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use netswitch::tun::{Framing, PacketFlowInput, PacketFlowWriter, Tun, TunCounters, TunSettings};
use netswitch::Netswitch;

/// Which link the device namespace's netswitch runs on: `flow` for the packet flow, else tun0's
/// fd (set only on the processes the test starts, like `NETSWITCH_TUN_TEST_ROLE`).
pub(crate) const LINK: &str = "NETSWITCH_TUN_TEST_LINK";

/// Whether this process runs netswitch on the packet flow.
pub(crate) fn over_flow() -> bool {
    std::env::var(LINK).as_deref() == Ok("flow")
}

/// [`super::run_in_namespace`], with netswitch on the packet flow in the namespace.
pub(crate) fn run_in_namespace_over_flow(name: &str) {
    super::run_in_namespace_with(name, &[(LINK, "flow")]);
}

/// The test host's writer: every packet netswitch hands back goes into the fd (one `write` each).
pub(crate) struct TunWriter {
    fd: Arc<OwnedFd>,
    /// Calls, and packets handed over.
    pub(crate) batches: AtomicU64,
    pub(crate) packets: AtomicU64,
    /// Packets the fd refused (`write` failed): lost between netswitch and the app.
    pub(crate) refused: AtomicU64,
}

impl PacketFlowWriter for TunWriter {
    fn write_packets(&self, packets: Vec<Vec<u8>>, families: Vec<i32>) {
        assert_eq!(packets.len(), families.len());
        self.batches.fetch_add(1, Ordering::Relaxed);
        self.packets.fetch_add(packets.len() as u64, Ordering::Relaxed);
        for (packet, family) in packets.iter().zip(&families) {
            let expected = if packet[0] >> 4 == 6 { libc::AF_INET6 } else { libc::AF_INET };
            assert_eq!(*family, expected, "the family of each packet");
            // A full device queue drops the packet, as a link would: counted.
            if nix::unistd::write(self.fd.as_fd(), packet).is_err() {
                self.refused.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// The most packets the test host reads per wakeup and hands over as one batch.
pub(crate) const HOST_BATCH: usize = 64;

/// The test host's read loop: reads the fd in batches (up to [`HOST_BATCH`] packets per wakeup)
/// and hands each batch to the input, until the tunnel stops or `stop` is set.
fn read_loop(fd: Arc<OwnedFd>, input: PacketFlowInput, stop: Arc<AtomicBool>) {
    let mut buffer = vec![0u8; 65536];
    while !stop.load(Ordering::Relaxed) {
        let mut poll = libc::pollfd { fd: fd.as_raw_fd(), events: libc::POLLIN, revents: 0 };
        // SAFETY: one pollfd that outlives the call.
        if unsafe { libc::poll(&mut poll, 1, 100) } <= 0 {
            continue; // timeout or EINTR: check `stop`
        }
        let mut batch = Vec::new();
        while batch.len() < HOST_BATCH {
            match nix::unistd::read(fd.as_fd(), &mut buffer) {
                Ok(n) if n > 0 => batch.push(buffer[..n].to_vec()),
                _ => break, // EAGAIN: the batch is complete
            }
        }
        if input.write_packets(batch).is_err() {
            return; // the tunnel stopped
        }
    }
}

/// The test host of a device on the packet flow: its writer, and the mover thread (stopped and
/// joined on drop).
pub(crate) struct Host {
    pub(crate) writer: Arc<TunWriter>,
    stop: Arc<AtomicBool>,
    mover: Option<JoinHandle<()>>,
}

impl Drop for Host {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(mover) = self.mover.take() {
            let _ = mover.join();
        }
    }
}

/// Starts `netswitch` on `fd` with `settings`: on the fd itself, or, when [`over_flow`], on the
/// packet flow with a [`Host`] moving the fd's packets.
pub(crate) fn start(netswitch: &Netswitch, fd: OwnedFd, settings: TunSettings) -> (Tun, Option<Host>) {
    if !over_flow() {
        return (netswitch.start_tun(fd, settings).unwrap(), None);
    }
    // The packet flow carries whole IP packets: a body with offloads needs the fd.
    assert_eq!(settings.framing, Framing::Raw, "the packet flow carries raw packets only");
    // SAFETY: fcntl on an fd this test owns, integer arguments only.
    unsafe {
        let flags = libc::fcntl(fd.as_raw_fd(), libc::F_GETFL);
        assert_eq!(libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK), 0);
    }
    let fd = Arc::new(fd);
    let writer = Arc::new(TunWriter {
        fd: fd.clone(),
        batches: AtomicU64::new(0),
        packets: AtomicU64::new(0),
        refused: AtomicU64::new(0),
    });
    let (tun, input) = netswitch.start_packet_flow(settings, writer.clone()).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let mover = {
        let stop = stop.clone();
        std::thread::spawn(move || read_loop(fd, input, stop))
    };
    (tun, Some(Host { writer, stop, mover: Some(mover) }))
}

/// `counters.dropped_write` as the fd path's assertions mean it: packets tun0 refused to take
/// from netswitch. Over the packet flow the counter means something else — packets that met
/// the flow's full output queue (`netswitch::tun::flow::OUTPUT_PACKETS`; by design a burst past
/// it is dropped and counted, and TCP retransmits: a thousand handshakes at once with the
/// system stack overflow it), which no device has. There the device's refusals are the host's
/// failed writes into tun0: returned instead, after checking that every packet netswitch queued
/// (`packets_out`) reached the host.
pub(crate) async fn device_write_drops(device: &super::Device, counters: &TunCounters) -> u64 {
    let Some(host) = &device.host else { return counters.dropped_write };
    // A packet is counted in `packets_out` just after it was queued: wait for the flusher.
    let deadline = std::time::Instant::now() + super::TIMEOUT;
    let delivered = loop {
        let (delivered, queued) =
            (host.writer.packets.load(Ordering::Relaxed), device.tun.counters().packets_out);
        if delivered == queued || std::time::Instant::now() > deadline {
            assert_eq!(delivered, queued, "every packet queued reached the host");
            break delivered;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    let refused = host.writer.refused.load(Ordering::Relaxed);
    println!(
        "packet flow: {delivered} packets to the host, {refused} refused by tun0; {} met the full output queue",
        counters.dropped_write
    );
    refused
}
