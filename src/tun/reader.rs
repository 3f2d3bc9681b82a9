//! The tunnel's packet reader: every packet the apps send goes through [`Reader::handle`], which
//! hands it to the TCP stack, the UDP sessions, the DNS hijack or the ICMP flows.
//!
//! With the system stack a TUN device is read on a thread of its own (`netswitch-tun`,
//! [`ReadThread`]): it reads a batch, handles each packet at once (the NAT writes it straight
//! back to the device) and, when the device runs dry, sleeps in `poll(2)` on the device and a
//! stop signal. A system-stack TCP packet then never touches the runtime, and the reading runs
//! beside the relay tasks rather than between them (downloads 6–22 % faster in an A/B of the two
//! binaries; connections/s unchanged). The thread enters the runtime, so the sessions and
//! connections it starts are tasks as before.
//!
//! With the userspace stack the device is read on the runtime ([`Reader::run_device`]): each
//! packet wakes a relay task, which then runs on the same worker; from a thread every wakeup
//! crosses threads, and bulk lost 10–20 %. A packet flow's batches come from the host over a
//! channel, on a task too ([`Reader::run_flow`]).

use std::io;
use std::os::fd::AsFd;
use std::os::unix::net::UnixDatagram;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::sync::Notify;

use super::counters::bump;
use super::decide::UdpDecisions;
use super::device::{self, BatchEnd};
use super::dns_hijack::Hijack;
use super::flow::{self, Link};
use super::icmp::IcmpTable;
use super::packet::{self, Packet};
use super::system::Family;
use super::userspace::Userspace;
use super::{udp, Io};
use crate::inbound::udp_sessions::UdpSessionTable;

/// Where every packet of the tunnel goes.
pub(super) struct Reader {
    pub io: Arc<Io>,
    pub families: Vec<Arc<Family>>,
    pub udp: Arc<UdpSessionTable>,
    pub icmp: Arc<IcmpTable>,
    pub sweeper: Arc<Notify>,
    pub decisions: Option<Arc<UdpDecisions>>,
    pub dns: Arc<Hijack>,
    /// The userspace TCP stack, when the settings chose it (else TCP takes the NAT).
    pub userspace: Option<Arc<Userspace>>,
    /// Set when the tunnel stops: UDP and ICMP are dropped (counted) from then on, so that the
    /// grace period's reading opens no session or echo flow that would outlive the tunnel.
    pub stopped: Arc<AtomicBool>,
}

impl Reader {
    /// Reads the device on the runtime (the userspace stack: its packets wake relay tasks,
    /// which then run on the same worker) until the device fails (or the task is aborted).
    pub async fn run_device(self, buffer_len: usize) {
        let Link::Device(device) = &self.io.link else { return };
        if let Err(error) = self.read_on_runtime(device, buffer_len).await {
            tracing::warn!(%error, "TUN device failed: the tunnel stops reading");
        }
    }

    async fn read_on_runtime(&self, device: &device::TunDevice, buffer_len: usize) -> io::Result<()> {
        // A second descriptor of the device registers with the reactor; reads use either.
        let watched = device.try_clone_fd()?;
        // SAFETY: the AsyncFd owns `watched`, which stays open until the AsyncFd is dropped.
        let readiness = unsafe { AsyncFd::register_with_interest(watched, Interest::READABLE) }
            .map_err(|error| error.into_parts().1)?;
        let mut buffer = vec![0u8; buffer_len];
        loop {
            let mut ready = readiness.readable().await?;
            match device.read_batch(&mut buffer, |packet, offload| self.handle(packet, offload))? {
                BatchEnd::Drained => ready.clear_ready(),
                BatchEnd::Full => {
                    drop(ready);
                    tokio::task::yield_now().await;
                }
            }
        }
    }

    /// Handles the host's batches until every sender of `batches` is gone (or the task is
    /// aborted).
    pub async fn run_flow(self, mut batches: flow::InputBatches) {
        while let Some(batch) = batches.recv().await {
            for mut packet in batch {
                self.handle(&mut packet, device::Offload::NONE);
            }
        }
        tracing::info!("the packet flow's input was dropped: the tunnel stops reading");
    }

    /// Hands one packet to where it goes; drops (and counts) what the tunnel does not carry.
    fn handle(&self, packet: &mut [u8], offload: device::Offload) {
        let counters = &self.io.counters;
        bump(&counters.packets_in);
        counters.bytes_in.fetch_add(packet.len() as u64, Ordering::Relaxed);
        match packet::parse(packet) {
            Packet::Dropped(reason) => counters.dropped(reason),
            Packet::Tcp(tcp) if self.userspace.is_some() => {
                if let Some(stack) = &self.userspace {
                    stack.input(packet, &tcp);
                }
            }
            Packet::Tcp(tcp) => {
                let family = self.families.iter().find(|f| f.listener().is_ipv4() == tcp.source.is_ipv4());
                match family {
                    Some(family) => family.translate(packet, &tcp, &offload, &self.io, &self.sweeper),
                    None => bump(&counters.dropped_unsupported),
                }
            }
            Packet::Udp(_) if self.stopped.load(Ordering::Acquire) => bump(&counters.dropped_udp),
            Packet::Icmp(_) if self.stopped.load(Ordering::Acquire) => bump(&counters.dropped_icmp),
            Packet::Udp(udp) => {
                if !self.dns.intercept_udp(&udp, &self.io) {
                    udp::dispatch(&udp, &self.udp, &self.io, self.decisions.as_ref())
                }
            }
            Packet::Icmp(echo) => self.icmp.dispatch(&echo, &self.io),
        }
    }
}

/// The reader thread of a TUN device. It runs until a [`Stopper`] of it is dropped (or the
/// device fails).
#[derive(Debug)]
pub(super) struct ReadThread {
    signal: Arc<StopSignal>,
    finished: Arc<AtomicBool>,
}

/// How a reader thread is told to stop.
#[derive(Debug)]
pub(super) struct StopSignal {
    /// Set when stopping: a busy device is checked between batches.
    stopping: AtomicBool,
    /// Written when stopping: wakes the thread from `poll`.
    wake: UnixDatagram,
}

impl StopSignal {
    fn stop(&self) {
        self.stopping.store(true, Ordering::Release);
        let _ = self.wake.send(b"stop");
    }
}

impl ReadThread {
    /// Starts reading the reader's device with packets up to `buffer_len` bytes (framing
    /// included); the thread enters `runtime`. Fails when the link is not a device, or no
    /// thread or socket pair can be made.
    pub fn start(
        reader: Reader,
        buffer_len: usize,
        runtime: tokio::runtime::Handle,
    ) -> io::Result<ReadThread> {
        if !matches!(reader.io.link, Link::Device(_)) {
            return Err(io::Error::other("a read thread needs a TUN device"));
        }
        let (wake, woken) = UnixDatagram::pair()?;
        let signal = Arc::new(StopSignal { stopping: AtomicBool::new(false), wake });
        let finished = Arc::new(AtomicBool::new(false));
        let (done, asked) = (finished.clone(), signal.clone());
        std::thread::Builder::new().name("netswitch-tun".into()).spawn(move || {
            let _inside = runtime.enter();
            let read =
                std::panic::AssertUnwindSafe(|| read_device(&reader, buffer_len, &asked.stopping, &woken));
            match std::panic::catch_unwind(read) {
                Ok(Ok(())) => {}
                Ok(Err(error)) => tracing::warn!(%error, "TUN device failed: the tunnel stops reading"),
                // As a reader task's panic would end the task: the tunnel reports itself finished.
                Err(_) => tracing::error!("the TUN reader panicked: the tunnel stops reading"),
            }
            done.store(true, Ordering::Release);
        })?;
        Ok(ReadThread { signal, finished })
    }

    /// What stops the thread when dropped.
    pub fn stopper(&self) -> Stopper {
        Stopper::Thread(self.signal.clone())
    }

    /// True once the thread ended: stopped, or the device failed.
    pub fn is_finished(&self) -> bool {
        self.finished.load(Ordering::Acquire)
    }
}

/// Stops a tunnel's reader, thread or task, when dropped (after the batch in progress). Held
/// by the task that lets a stopped tunnel read on for a grace period: if the runtime shuts down
/// first, the reader stops then.
pub(super) enum Stopper {
    /// A device's reader thread.
    Thread(Arc<StopSignal>),
    /// A packet flow's reader task.
    Task(tokio::task::AbortHandle),
}

impl Drop for Stopper {
    fn drop(&mut self) {
        match self {
            Stopper::Thread(signal) => signal.stop(),
            Stopper::Task(task) => task.abort(),
        }
    }
}

/// Reads and handles batches until asked to stop (`stopping` set, `stopped` readable: Ok) or
/// the device fails (its error).
fn read_device(
    reader: &Reader,
    buffer_len: usize,
    stopping: &AtomicBool,
    stopped: &UnixDatagram,
) -> io::Result<()> {
    let Link::Device(device) = &reader.io.link else { return Ok(()) };
    let mut buffer = vec![0u8; buffer_len];
    while !stopping.load(Ordering::Acquire) {
        let end = device.read_batch(&mut buffer, |packet, offload| reader.handle(packet, offload))?;
        if end == BatchEnd::Drained && !device.wait_readable(stopped.as_fd())? {
            break;
        }
    }
    tracing::debug!("TUN reader stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;
    use std::os::fd::OwnedFd;
    use std::os::unix::net::UnixDatagram;
    use std::sync::Arc;

    use crate::dial::direct::DirectOutbound;
    use crate::manager::{ConnectionManager, RelaySettings};
    use crate::tun::test_support::eventually;
    use crate::tun::{Stack, Tun, TunSettings, STOP_GRACE};

    /// With either stack the device is read (by a thread with the system stack, a task with the
    /// userspace one) until the tunnel stops; then the reader ends after the grace period and the
    /// device's descriptor is closed.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_device_is_read_until_the_tunnel_stops_then_closed() {
        for stack in [Stack::System, Stack::Userspace] {
            let manager = Arc::new(ConnectionManager::new(RelaySettings::default()));
            let (ours, device) = UnixDatagram::pair().unwrap();
            let mut settings = TunSettings::inet4(Ipv4Addr::new(127, 0, 0, 5), 8);
            settings.stack = stack;
            let tun = Tun::start(OwnedFd::from(ours), settings, manager, Arc::new(DirectOutbound::default()))
                .unwrap();
            for _ in 0..3 {
                device.send(&[0x45, 0, 0]).unwrap(); // a truncated IPv4 header
            }
            eventually("three malformed packets read", || tun.counters().dropped_malformed == 3).await;
            assert!(!tun.is_finished(), "{stack:?}: still reading");
            tun.stop();
            device.send(&[0x45]).unwrap();
            eventually("the reader to finish", || tun.is_finished()).await;
            assert_eq!(tun.counters().dropped_malformed, 4, "{stack:?}: read during the grace period");
            drop(tun);
            tokio::time::sleep(STOP_GRACE).await;
            eventually("the device to be closed", || device.send(&[0x45]).is_err()).await;
        }
    }

    /// A datagram an app sends while a stopped tunnel still reads (the grace period, for the
    /// resets) opens no UDP session: one would live on for its idle timeout (five minutes by
    /// default) as a connection of a tunnel that is gone, holding the device's descriptor open.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_stopped_tunnel_opens_no_udp_session_and_lets_the_device_go() {
        use etherparse::PacketBuilder;
        let server = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        server.set_read_timeout(Some(std::time::Duration::from_secs(5))).unwrap();
        let port = server.local_addr().unwrap().port();
        let datagram = |source_port: u16| {
            let mut packet = Vec::new();
            PacketBuilder::ipv4([127, 0, 0, 5], [127, 0, 0, 1], 64)
                .udp(source_port, port)
                .write(&mut packet, b"hello")
                .unwrap();
            packet
        };
        let manager = Arc::new(ConnectionManager::new(RelaySettings::default()));
        let (ours, device) = UnixDatagram::pair().unwrap();
        let settings = TunSettings::inet4(Ipv4Addr::new(127, 0, 0, 5), 8);
        let tun =
            Tun::start(OwnedFd::from(ours), settings, manager.clone(), Arc::new(DirectOutbound::default()))
                .unwrap();
        // A running tunnel carries the datagram (so the path under test works).
        device.send(&datagram(40000)).unwrap();
        let mut buffer = [0u8; 64];
        assert_eq!(server.recv(&mut buffer).unwrap(), 5);
        // (The table records a session just after starting it: its datagram may arrive first.)
        eventually("the session in the table", || tun.udp_sessions() == 1).await;
        tun.stop();
        device.send(&datagram(40001)).unwrap();
        eventually("the datagram read in the grace period", || tun.counters().packets_in == 2).await;
        eventually("the reader to finish", || tun.is_finished()).await;
        assert_eq!(tun.udp_sessions(), 0, "a session opened after the stop");
        assert!(manager.list().is_empty(), "connections left: {:?}", manager.list());
        drop(tun);
        eventually("the device to be closed", || device.send(&[0x45]).is_err()).await;
    }
}
