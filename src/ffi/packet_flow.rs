//! Packet tunnels over the host's packet flow (`ConnectionManager.start_packet_flow`), for hosts
//! without a TUN fd (iOS `NEPacketTunnelProvider.packetFlow`): the `PacketWriter` the host
//! implements and the `PacketFlowHandle` it feeds. The tunnel itself is the fd tunnel's (same
//! options, same table of running tunnels, same `TunHandle` underneath); only the link differs
//! (see `crate::tun::flow`). One FFI crossing per batch each way.

use std::sync::Arc;

use super::error::NetswitchError;
use super::manager::ConnectionManager;
use super::tun::{TunCounters, TunHandle, TunOptions};
use super::tun_decider::TunFlowDecider;
use crate::tun::{PacketFlowError, PacketFlowInput, PacketFlowWriter};

/// Where a packet-flow tunnel's outgoing packets go (iOS: `packetFlow.writePackets(packets,
/// withProtocols: families)`).
///
/// Threading: called on the tunnel's own netswitch thread (`netswitch-flow`, never the host's
/// threads), one call at a time per tunnel, in order. It may block while it passes the
/// batch on, but not for long: meanwhile netswitch queues at most 1,024 packets and drops (and
/// counts, `dropped_write`) the rest. It must not throw; a call that fails loses its batch
/// (counted as `dropped_write`).
#[uniffi::export(with_foreign)]
pub trait PacketWriter: Send + Sync {
    /// Takes `packets` (whole IP packets, no header; never empty, at most 256) and, at the same
    /// index, each one's address family as the platform numbers it (`AF_INET` / `AF_INET6`: 2 /
    /// 30 on Apple, 2 / 10 on Linux and Android) — the `protocols` argument of
    /// `NEPacketTunnelFlow.writePackets(_:withProtocols:)`.
    fn write_packets(&self, packets: Vec<Vec<u8>>, families: Vec<i32>);
}

/// The core's writer over the host's.
struct HostWriter(Arc<dyn PacketWriter>);

impl PacketFlowWriter for HostWriter {
    fn write_packets(&self, packets: Vec<Vec<u8>>, families: Vec<i32>) {
        self.0.write_packets(packets, families);
    }
}

/// A running packet tunnel on the host's packet flow (`ConnectionManager.start_packet_flow`).
/// Like `TunHandle`, the manager owns the tunnel: its connections live until `stop()` or the
/// manager's `shutdown()`, whether or not the host keeps this handle. But this handle is the
/// tunnel's only input: once the host releases it (Kotlin `close()`, garbage collection, Swift's
/// last reference) no packet can come in and the tunnel reads no more (`is_finished()` would
/// turn true); call `stop()` first. The counters stay readable after `stop()`. Thread-safe.
#[derive(uniffi::Object)]
pub struct PacketFlowHandle {
    tunnel: Arc<TunHandle>,
    input: PacketFlowInput,
}

#[uniffi::export]
impl PacketFlowHandle {
    /// Hands the packets the host read (iOS: what `packetFlow.readPackets` gave it; whole IP
    /// packets, no header) to the tunnel, in one crossing. netswitch takes them over (the host
    /// keeps nothing). Blocks the calling thread while 16 earlier batches still wait — the
    /// backpressure: call it from the read loop, then read again. Returns false once the tunnel
    /// stopped (the host should end its read loop), true otherwise. Any thread; on a thread of
    /// netswitch's own runtime (a `TunFlowDecider` or `PlatformInterface` call) it does not wait:
    /// a full queue refuses the batch there, and it is lost.
    pub fn write_packets(&self, packets: Vec<Vec<u8>>) -> bool {
        match self.input.write_packets(packets) {
            Ok(()) => true,
            Err(PacketFlowError::Full) => {
                tracing::debug!("packet-flow batch refused: written from a netswitch thread while full");
                true
            }
            Err(_) => false,
        }
    }

    /// As `TunHandle.stop()`: stops the tunnel and closes its connections; the flusher keeps
    /// handing packets (the resets) to the `PacketWriter` for 200 ms, then stops: no call to the
    /// writer starts after that. Idempotent.
    pub fn stop(&self) {
        self.tunnel.stop();
    }

    /// As `TunHandle.counters()`. `packets_out` counts packets queued for the `PacketWriter`;
    /// `dropped_write` the ones that found the queue full (the host too slow) or were lost in a
    /// failed call.
    pub fn counters(&self) -> TunCounters {
        self.tunnel.counters()
    }

    /// As `TunHandle.nat_entries()` (with the userspace stack: the connections it holds).
    pub fn nat_entries(&self) -> u64 {
        self.tunnel.nat_entries()
    }

    /// As `TunHandle.udp_sessions()`.
    pub fn udp_sessions(&self) -> u64 {
        self.tunnel.udp_sessions()
    }

    /// True once the tunnel no longer reads packets: shortly after `stop()` or the manager's
    /// shutdown.
    pub fn is_finished(&self) -> bool {
        self.tunnel.is_finished()
    }
}

#[uniffi::export]
impl ConnectionManager {
    /// Starts a packet tunnel without a TUN fd, on the host's packet flow (iOS:
    /// `NEPacketTunnelProvider.packetFlow`): the host passes every batch `readPackets` gives it
    /// to `PacketFlowHandle.write_packets` and then reads again; netswitch hands the packets going
    /// back to `writer` in batches. `options` as for `start_tun`, except that `framing` is
    /// ignored (whole IP packets, the family separate) and the stack should be `Userspace` (the
    /// default on Apple platforms; the system stack needs the kernel to deliver the tunnel
    /// address's packets to a listener of netswitch). Errors: `InvalidArgument` naming the
    /// option, `Io`, `ShutDown`. The manager owns the tunnel until `stop()` or `shutdown()`.
    pub fn start_packet_flow(
        &self,
        options: TunOptions,
        writer: Arc<dyn PacketWriter>,
    ) -> Result<Arc<PacketFlowHandle>, NetswitchError> {
        self.start_packet_flow_deciding(options, writer, None)
    }

    /// `start_packet_flow` with a decision hook, as `start_tun_with_decider`.
    pub fn start_packet_flow_with_decider(
        &self,
        options: TunOptions,
        writer: Arc<dyn PacketWriter>,
        decider: Arc<dyn TunFlowDecider>,
    ) -> Result<Arc<PacketFlowHandle>, NetswitchError> {
        self.start_packet_flow_deciding(options, writer, Some(decider))
    }
}

impl ConnectionManager {
    fn start_packet_flow_deciding(
        &self,
        options: TunOptions,
        writer: Arc<dyn PacketWriter>,
        decider: Option<Arc<dyn TunFlowDecider>>,
    ) -> Result<Arc<PacketFlowHandle>, NetswitchError> {
        let writer: Arc<dyn PacketFlowWriter> = Arc::new(HostWriter(writer));
        let mut input = None;
        let tunnel = self.start_tunnel(&options, decider, "packet flow", |netswitch, settings| {
            let (tun, flow) = netswitch.start_packet_flow(settings, writer)?;
            input = Some(flow);
            Ok(tun)
        })?;
        let input =
            input.ok_or_else(|| NetswitchError::Internal { reason: "packet flow without input".into() })?;
        Ok(Arc::new(PacketFlowHandle { tunnel, input }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ffi::NetswitchConfig;
    use std::sync::Mutex;
    use std::time::Duration;

    /// One call: the packets and their families.
    type Batch = (Vec<Vec<u8>>, Vec<i32>);

    #[derive(Default)]
    struct Recorder(Mutex<Vec<Batch>>);

    impl PacketWriter for Recorder {
        fn write_packets(&self, packets: Vec<Vec<u8>>, families: Vec<i32>) {
            self.0.lock().unwrap().push((packets, families));
        }
    }

    fn eventually(condition: impl Fn() -> bool) -> bool {
        (0..1000).any(|_| {
            std::thread::sleep(Duration::from_millis(10));
            condition()
        })
    }

    /// Userspace-stack options with the DNS hijack on the tunnel's address.
    fn options() -> TunOptions {
        TunOptions {
            mtu: 1500,
            stack: Some(super::super::TunStack::Userspace),
            dns_hijack: true,
            ..TunOptions::for_tests("172.19.0.1/30")
        }
    }

    /// A DNS query (id `id`) for `a`, type A, from the app to the hijacked DNS address.
    fn query(id: u16) -> Vec<u8> {
        let mut query = Vec::new();
        let header = [&id.to_be_bytes()[..], &[1, 0, 0, 1, 0, 0, 0, 0, 0, 0]].concat();
        let payload = [&header[..], b"\x01a\x00", &[0, 1, 0, 1]].concat();
        etherparse::PacketBuilder::ipv4([172, 19, 0, 1], [172, 19, 0, 2], 64)
            .udp(40000, 53)
            .write(&mut query, &payload)
            .unwrap();
        query
    }

    /// A UDP datagram to the hijacked DNS address whose answer comes back through the writer:
    /// the manager has no network (no interface snapshot), so the query for `a` fails locally
    /// (SERVFAIL) and nothing leaves the machine.
    #[test]
    fn packets_in_and_out_and_stop_ends_the_flow() {
        let manager = ConnectionManager::new(NetswitchConfig::default(), None).unwrap();
        let mut options = options();
        let recorder = Arc::new(Recorder::default());
        let flow = manager.start_packet_flow(options.clone(), recorder.clone()).unwrap();
        assert!(flow.write_packets(vec![query(0x1234), vec![0x45, 0, 0]]));
        assert!(eventually(|| !recorder.0.lock().unwrap().is_empty()), "{:?}", flow.counters());
        let (packets, families) = recorder.0.lock().unwrap()[0].clone();
        assert_eq!(families, vec![libc::AF_INET]);
        let answer = &packets[0];
        assert_eq!((&answer[12..16], &answer[16..20]), (&[172, 19, 0, 2][..], &[172, 19, 0, 1][..]));
        assert_eq!(&answer[28..30], &[0x12, 0x34], "the answer to our query");
        let counters = flow.counters();
        assert_eq!((counters.packets_in, counters.dropped_malformed, counters.packets_out), (2, 1, 1));
        flow.stop();
        assert!(eventually(|| flow.is_finished()));
        assert!(!flow.write_packets(vec![vec![0x45]]), "a stopped tunnel takes no more");
        // Bad options name the option, as with start_tun.
        options.mtu = 100;
        assert!(matches!(
            manager.start_packet_flow(options, recorder.clone()),
            Err(NetswitchError::InvalidArgument { argument, .. }) if argument == "options.mtu"
        ));
    }

    /// A host that misuses the API: empty batches, empty and oversized and truncated packets, a
    /// TCP segment larger than the MTU, host threads flooding batches while another stops the
    /// tunnel, `stop()` twice, writes after it. Nothing panics; every odd packet is counted; the
    /// tunnel answers between the odd ones; every flooding thread returns (false) once the
    /// tunnel stopped, none stays blocked.
    #[test]
    fn a_misbehaving_host_panics_nothing_and_blocks_no_thread_after_stop() {
        let manager = ConnectionManager::new(NetswitchConfig::default(), None).unwrap();
        let recorder = Arc::new(Recorder::default());
        let flow = manager.start_packet_flow(options(), recorder.clone()).unwrap();
        assert!(flow.write_packets(Vec::new()), "an empty batch is taken");
        let mut truncated = query(1);
        truncated.truncate(30); // the IPv4 header says more
        let mut huge_tcp = Vec::new();
        etherparse::PacketBuilder::ipv4([172, 19, 0, 1], [127, 0, 0, 1], 64)
            .tcp(40000, 9, 1, 64240)
            .syn()
            .write(&mut huge_tcp, &vec![7u8; 60_000])
            .unwrap();
        let odd = vec![Vec::new(), vec![0x60], vec![0xff; 100_000], truncated, huge_tcp, query(2)];
        assert!(flow.write_packets(odd));
        let answered = || {
            recorder
                .0
                .lock()
                .unwrap()
                .iter()
                .flat_map(|(packets, _)| packets.clone())
                .any(|p| p.get(28..30) == Some(&[0, 2][..]))
        };
        assert!(eventually(answered), "{:?}", flow.counters());
        let counters = flow.counters();
        assert_eq!(counters.packets_in, 6, "{counters:?}");
        assert!(counters.dropped_malformed >= 3, "{counters:?}");

        let flow = Arc::new(flow);
        let flooders: Vec<_> = (0..4)
            .map(|_| {
                let flow = flow.clone();
                std::thread::spawn(move || {
                    let batch = vec![vec![0x45, 0, 0]; 1000];
                    while flow.write_packets(batch.clone()) {}
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(100));
        flow.stop();
        flow.stop();
        assert!(
            eventually(|| flooders.iter().all(|thread| thread.is_finished())),
            "a host thread stayed blocked"
        );
        assert!(flow.is_finished());
        assert!(!flow.write_packets(vec![query(3)]));
        assert!(!flow.write_packets(Vec::new()), "an empty batch after stop() says stopped too");
    }
}
