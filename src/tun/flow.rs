//! The packet-flow link: a tunnel whose packets come from and go to the host in batches, for
//! hosts that have no TUN file descriptor (iOS `NEPacketTunnelFlow`: `readPackets` /
//! `writePackets(_:withProtocols:)`). [`Tun::start_packet_flow`](super::Tun::start_packet_flow)
//! starts one; everything behind the link (the reader, both TCP stacks, UDP, DNS, ICMP) is the
//! same as with a device.
//!
//! **In** (host → netswitch): [`PacketFlowInput::write_packets`] queues one batch in a channel of
//! [`INPUT_BATCHES`] batches and *blocks the caller* while it is full — the backpressure: the
//! host's read loop asks the system for more packets only when netswitch took the last ones.
//! The tunnel's reader takes the batches in order, one packet after the other.
//!
//! **Out** (netswitch → host): every packet netswitch writes (TCP segments, UDP replies, ICMP
//! replies, resets) is copied into a queue of at most [`OUTPUT_PACKETS`] packets and never waits:
//! when the queue is full the packet is dropped and counted (`dropped_write`), as a full device
//! queue drops it (TCP retransmits; UDP may lose). One flusher thread per tunnel (its own thread,
//! `netswitch-flow`, outside the runtime) takes up to [`OUTPUT_BATCH`] queued packets at a time and
//! hands them to [`PacketFlowWriter::write_packets`], one call at a time, in order: while the host
//! is busy with one batch the next one gathers. Nothing blocks the runtime's worker threads. Stopping the tunnel stops the flusher (after the reader's grace period, so
//! that the resets of the closed connections still reach the host); packets still queued then
//! are dropped with the queue.
//!
//! Memory: at most [`INPUT_BATCHES`] host batches in, and [`OUTPUT_PACKETS`] packets of at most
//! the MTU plus one batch in the host's hands out (1,024 × 1,500 bytes ≈ 1.5 MiB at a 1,500-byte
//! MTU).

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio::sync::mpsc;

use super::counters::Counters;
use super::device::{Offload, TunDevice};

/// Host batches queued towards the tunnel's reader before [`PacketFlowInput::write_packets`]
/// blocks.
pub const INPUT_BATCHES: usize = 16;
/// Packets queued towards the host before more are dropped (`dropped_write`).
pub const OUTPUT_PACKETS: usize = 1024;
/// The most packets handed to the host in one [`PacketFlowWriter::write_packets`] call.
pub const OUTPUT_BATCH: usize = 256;

/// Where a packet-flow tunnel's outgoing IP packets go: the host (iOS:
/// `NEPacketTunnelFlow.writePackets(_:withProtocols:)`).
///
/// Threading: called on the tunnel's flusher thread (`netswitch-flow`: never a runtime worker,
/// never the host's own threads), one call at a time per tunnel, batches in the order the packets were
/// written. The call may block while the host passes the batch on; while it does, the next
/// packets gather (up to [`OUTPUT_PACKETS`], then they are dropped and counted), so it must not
/// block for long. A panic is caught: its batch counts as dropped and the next batch is delivered.
pub trait PacketFlowWriter: Send + Sync {
    /// Takes ownership of `packets` (whole IP packets, no framing) and, at the same index,
    /// `families`: the address family of each packet as the platform numbers it
    /// (`libc::AF_INET` or `libc::AF_INET6`: 2 / 30 on Apple, 2 / 10 on Linux and Android), which
    /// is what `NEPacketTunnelFlow.writePackets(_:withProtocols:)` wants. Never empty.
    fn write_packets(&self, packets: Vec<Vec<u8>>, families: Vec<i32>);
}

/// Why [`PacketFlowInput::write_packets`] did not take a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PacketFlowError {
    /// The tunnel stopped (or failed): it reads no more packets. The host should stop its loop.
    #[error("the packet-flow tunnel stopped")]
    Stopped,
    /// Called on a thread inside a tokio runtime, where it must not block, while the input queue
    /// was full: the batch was not taken. Call it from the host's own thread, or use
    /// [`PacketFlowInput::send`] in async code.
    #[error("the packet-flow input is full, and a thread inside a tokio runtime must not wait for room")]
    Full,
}

/// The host's side of a packet-flow tunnel: where the packets the system gave the host go in.
///
/// Ownership: each batch is moved into netswitch. Cloning gives another handle on the same
/// queue; the tunnel stops reading (and reports itself finished) once every clone is dropped,
/// but its connections stay open until the tunnel is stopped. Threading: any thread, any number
/// of threads (batches from different threads interleave by whole batches).
#[derive(Debug, Clone)]
pub struct PacketFlowInput {
    batches: mpsc::Sender<Vec<Vec<u8>>>,
}

impl PacketFlowInput {
    /// Hands `packets` (whole IP packets, no framing, as `NEPacketTunnelFlow.readPackets` gives
    /// them) to the tunnel. Blocks the calling thread while [`INPUT_BATCHES`] batches wait
    /// already (the backpressure), except on a thread inside a tokio runtime, where it returns
    /// [`PacketFlowError::Full`] instead of blocking. [`PacketFlowError::Stopped`] once the tunnel
    /// stopped. An empty batch is taken and ignored (after a stop: [`PacketFlowError::Stopped`] too).
    pub fn write_packets(&self, packets: Vec<Vec<u8>>) -> Result<(), PacketFlowError> {
        if packets.is_empty() {
            return self.open();
        }
        if tokio::runtime::Handle::try_current().is_ok() {
            return self.batches.try_send(packets).map_err(|error| match error {
                mpsc::error::TrySendError::Full(_) => PacketFlowError::Full,
                mpsc::error::TrySendError::Closed(_) => PacketFlowError::Stopped,
            });
        }
        self.batches.blocking_send(packets).map_err(|_| PacketFlowError::Stopped)
    }

    /// The answer to an empty batch: Ok while the tunnel reads, [`PacketFlowError::Stopped`] after.
    fn open(&self) -> Result<(), PacketFlowError> {
        match self.batches.is_closed() {
            true => Err(PacketFlowError::Stopped),
            false => Ok(()),
        }
    }

    /// [`PacketFlowInput::write_packets`] for async code: waits for room instead of blocking.
    pub async fn send(&self, packets: Vec<Vec<u8>>) -> Result<(), PacketFlowError> {
        if packets.is_empty() {
            return self.open();
        }
        self.batches.send(packets).await.map_err(|_| PacketFlowError::Stopped)
    }
}

/// The reader's side of the input: the host's batches, in order.
pub(crate) type InputBatches = mpsc::Receiver<Vec<Vec<u8>>>;

/// A new input: the host's handle and the reader's side.
pub(crate) fn input() -> (PacketFlowInput, InputBatches) {
    let (batches, receiver) = mpsc::channel(INPUT_BATCHES);
    (PacketFlowInput { batches }, receiver)
}

/// Where a tunnel's packets go out: its device, or the queue to the host's packet flow.
#[derive(Debug)]
pub(crate) enum Link {
    /// A TUN device's fd.
    Device(TunDevice),
    /// The bounded queue to the flusher (see the module docs).
    Flow(mpsc::Sender<Vec<u8>>),
}

impl Link {
    /// Writes or queues one packet; never waits. An error is a packet not sent (a full queue:
    /// `ENOBUFS`; a stopped flusher: `EPIPE`).
    pub(crate) fn send_with(&self, packet: &[u8], offload: &Offload) -> io::Result<()> {
        match self {
            Link::Device(device) => device.send_with(packet, offload),
            Link::Flow(queue) => queue.try_send(packet.to_vec()).map_err(|error| match error {
                mpsc::error::TrySendError::Full(_) => io::Error::from_raw_os_error(libc::ENOBUFS),
                mpsc::error::TrySendError::Closed(_) => io::Error::from_raw_os_error(libc::EPIPE),
            }),
        }
    }
}

/// The outgoing queue of a packet-flow tunnel: the link's side and the flusher's.
pub(crate) fn output() -> (Link, mpsc::Receiver<Vec<u8>>) {
    let (queue, receiver) = mpsc::channel(OUTPUT_PACKETS);
    (Link::Flow(queue), receiver)
}

/// Stops a tunnel's flusher thread (see [`start_flusher`]).
#[derive(Debug, Clone)]
pub(crate) struct Flusher {
    stopped: Arc<AtomicBool>,
    wake: mpsc::Sender<Vec<u8>>,
}

impl Flusher {
    /// No call to the writer starts after this; the thread ends at once when idle, else after
    /// the call in progress.
    pub(crate) fn stop(&self) {
        self.stopped.store(true, Ordering::Relaxed);
        let _ = self.wake.try_send(Vec::new()); // an empty packet only wakes the thread
    }
}

/// Starts the flusher: a thread of its own (one per tunnel, named `netswitch-flow`) that takes
/// the queued packets, up to [`OUTPUT_BATCH`] at a time, and hands them to `writer`, until
/// [`Flusher::stop`]. A thread of its own rather than a task that calls `spawn_blocking` per
/// batch: one wakeup per batch instead of three. Fails only when no thread can be started.
pub(crate) fn start_flusher(
    link: &Link,
    mut queue: mpsc::Receiver<Vec<u8>>,
    writer: Arc<dyn PacketFlowWriter>,
    counters: Arc<Counters>,
) -> io::Result<Flusher> {
    let Link::Flow(wake) = link else {
        return Err(io::Error::other("a flusher needs a packet-flow link"));
    };
    let flusher = Flusher { stopped: Arc::new(AtomicBool::new(false)), wake: wake.clone() };
    let stopped = flusher.stopped.clone();
    std::thread::Builder::new().name("netswitch-flow".into()).spawn(move || {
        let mut batch = Vec::with_capacity(OUTPUT_BATCH);
        while let Some(first) = queue.blocking_recv() {
            batch.push(first);
            while batch.len() < OUTPUT_BATCH {
                match queue.try_recv() {
                    Ok(packet) => batch.push(packet),
                    Err(_) => break,
                }
            }
            if stopped.load(Ordering::Relaxed) {
                return;
            }
            batch.retain(|packet| !packet.is_empty());
            if batch.is_empty() {
                continue;
            }
            let packets = std::mem::replace(&mut batch, Vec::with_capacity(OUTPUT_BATCH));
            let count = packets.len() as u64;
            let families = packets.iter().map(|packet| family(packet)).collect();
            let call = std::panic::AssertUnwindSafe(|| writer.write_packets(packets, families));
            if std::panic::catch_unwind(call).is_err() {
                // Written packets were counted out when queued: move them to the drops.
                counters.packets_out.fetch_sub(count, Ordering::Relaxed);
                counters.dropped_write.fetch_add(count, Ordering::Relaxed);
                tracing::warn!(count, "the host's packet writer panicked: a batch was lost");
            }
        }
    })?;
    Ok(flusher)
}

/// The platform's address family of an IP packet: `AF_INET6` for version 6, else `AF_INET`.
fn family(packet: &[u8]) -> i32 {
    match packet.first().map(|byte| byte >> 4) {
        Some(6) => libc::AF_INET6,
        _ => libc::AF_INET,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;
    use std::time::Duration;

    /// One call: the packets and their families.
    type Batch = (Vec<Vec<u8>>, Vec<i32>);

    /// A writer that records its batches and, while `hold` is locked, blocks (a busy host).
    #[derive(Default)]
    struct Recorder {
        batches: Mutex<Vec<Batch>>,
        hold: Mutex<()>,
    }

    impl PacketFlowWriter for Recorder {
        fn write_packets(&self, packets: Vec<Vec<u8>>, families: Vec<i32>) {
            let _held = self.hold.lock().unwrap();
            self.batches.lock().unwrap().push((packets, families));
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn packets_go_out_in_batches_with_their_families_and_a_full_queue_drops() {
        let recorder = Arc::new(Recorder::default());
        let counters = Arc::new(Counters::default());
        let (link, queue) = output();
        let held = recorder.hold.lock().unwrap();
        let flusher = start_flusher(&link, queue, recorder.clone(), counters.clone()).unwrap();
        link.send_with(&[0x45, 1], &Offload::NONE).unwrap();
        // The flusher takes the first packet and the host blocks on it; then the queue fills.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        let mut refused = 0;
        let mut queued = 1;
        while refused == 0 {
            assert!(tokio::time::Instant::now() < deadline, "the queue never filled");
            match link.send_with(&[0x60, queued as u8], &Offload::NONE) {
                Ok(()) => queued += 1,
                Err(error) => {
                    assert_eq!(error.raw_os_error(), Some(libc::ENOBUFS));
                    refused += 1;
                }
            }
        }
        assert!(queued <= OUTPUT_PACKETS + 1 + OUTPUT_BATCH, "bounded: {queued} queued");
        drop(held);
        let delivered =
            || recorder.batches.lock().unwrap().iter().map(|(packets, _)| packets.len()).sum::<usize>();
        while delivered() < queued {
            assert!(tokio::time::Instant::now() < deadline + Duration::from_secs(5), "not delivered");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        flusher.stop();
        // Queued (the thread has not ended yet) or refused (it has): never delivered either way.
        if let Err(error) = link.send_with(&[0x45, 9], &Offload::NONE) {
            assert_eq!(error.raw_os_error(), Some(libc::EPIPE), "{error}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        let batches = recorder.batches.lock().unwrap();
        let delivered: usize = batches.iter().map(|(packets, _)| packets.len()).sum();
        assert_eq!(delivered, queued, "every queued packet reached the host, none twice, none after stop()");
        assert!(batches.len() < queued, "batched: {} calls for {queued} packets", batches.len());
        assert!(batches.iter().all(|(packets, _)| packets.len() <= OUTPUT_BATCH));
        assert_eq!(batches[0].1[0], libc::AF_INET);
        for (packets, families) in batches.iter() {
            assert_eq!(packets.len(), families.len());
            for (packet, family) in packets.iter().zip(families) {
                assert_eq!(*family, super::family(packet));
            }
        }
        assert_eq!(batches.last().and_then(|(_, families)| families.last()), Some(&libc::AF_INET6));
    }

    #[test]
    fn input_blocks_when_full_and_reports_a_stopped_tunnel() {
        let (input, mut batches) = super::input();
        for i in 0..INPUT_BATCHES {
            input.write_packets(vec![vec![i as u8]]).unwrap();
        }
        input.write_packets(Vec::new()).unwrap();
        let blocked = {
            let input = input.clone();
            std::thread::spawn(move || input.write_packets(vec![vec![0xff]]))
        };
        std::thread::sleep(Duration::from_millis(50));
        assert!(!blocked.is_finished(), "a full input blocks the host's thread");
        let first = batches.blocking_recv().unwrap();
        assert_eq!(first, vec![vec![0u8]]);
        assert_eq!(blocked.join().unwrap(), Ok(()), "room made: the batch was taken");
        let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let inside = runtime.block_on(async { input.write_packets(vec![vec![1]]) });
        assert_eq!(inside, Err(PacketFlowError::Full), "inside a runtime: no blocking");
        drop(batches);
        assert_eq!(input.write_packets(vec![vec![1]]), Err(PacketFlowError::Stopped));
    }
}
