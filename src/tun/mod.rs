//! The packet-tunnel ingress: a TUN device's file descriptor straight into the manager.
//!
//! [`Tun::start`] reads the device's IP packets ([`device`]; Linux/Android raw IP, Apple utun
//! with its 4-byte address-family header) and:
//!
//! - **TCP** goes through the kernel ([`system`]): a NAT rewrites each flow to a listener
//!   netswitch owns on the tunnel's address, and every accepted socket becomes a plain inbound
//!   of the manager with the app's original destination and source in its [`Metadata`];
//! - **UDP** is parsed from the packets ([`udp`]): one session per app source
//!   (endpoint-independent mapping), replies written back as IP/UDP packets;
//! - **DNS** to the tunnel's DNS address (UDP and TCP port 53, off by default) is answered by
//!   netswitch's resolver over the network the strategy chooses ([`dns_hijack`]);
//! - **ICMP echo** to remote hosts goes over ping sockets bound like the UDP sockets ([`icmp`]);
//! - everything else, fragments and malformed packets are dropped and counted
//!   ([`TunCounters`], [`packet`]).
//!
//! The system stack works where netswitch may listen on the tunnel's own address: Linux and
//! Android. Elsewhere (Apple), TCP ends in the [`userspace`] stack (smoltcp) instead, chosen by
//! [`TunSettings::stack`] (DNS over TCP to the hijack address is answered with the system stack
//! only). An optional decision hook ([`decide`], [`TunSettings::with_decider`]) blocks a
//! connection or picks its networks before it is dialed; DNS to the tunnel's DNS address can be
//! answered by netswitch's resolver ([`DnsHijack`]). A host without a TUN fd (iOS
//! `NEPacketTunnelFlow`) hands the packets over in batches instead: [`Tun::start_packet_flow`]
//! ([`flow`]).
//!
//! The tunnel's traffic must not come back into it: the outbound's sockets must leave through
//! a physical interface (bound, or protected on Android), and the tunnel's own interface must
//! never be in the interface snapshot. [`BindDefault`] binds the default interface too.
//!
//! [`Metadata`]: crate::metadata::Metadata

mod bind;
mod checksum;
pub mod counters;
pub mod decide;
pub mod device;
pub mod dns_hijack;
mod dns_reply;
pub mod flow;
pub mod icmp;
pub mod nat;
pub mod packet;
mod reader;
mod stack;
pub mod system;
#[cfg(test)]
mod test_support;
pub mod udp;
pub mod userspace;
pub mod utun;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio::task::JoinHandle;

pub use bind::BindDefault;
pub use counters::TunCounters;
use counters::{bump, Counters};
pub use decide::{BlockingDecider, DecisionHook, TunDecider, TunDecision, TunFlow};
pub use device::{Framing, TunDevice};
use dns_hijack::Hijack;
pub use dns_hijack::{DnsHijack, HijackResolver, StrategyResolver};
use flow::Link;
pub use flow::{PacketFlowError, PacketFlowInput, PacketFlowWriter};
use icmp::IcmpTable;
use reader::{ReadThread, Reader, Stopper};
pub use stack::Stack;
use system::Family;
use userspace::Userspace;

use crate::dial::Outbound;
use crate::inbound::budget::Budget;
use crate::inbound::udp_sessions::{SessionKeying, UdpSessionTable, UdpSettings};
use crate::manager::ConnectionManager;
use decide::{Asker, UdpDecisions};

/// How long a stopped tunnel still reads the device, so that the resets of its closed
/// connections reach the apps.
pub const STOP_GRACE: Duration = Duration::from_millis(200);

/// Default MTU of the device (the largest packet read), as sing-box uses on Android.
pub const DEFAULT_MTU: usize = 9000;

/// How a tunnel is set up. The addresses are the ones the device already has: the system stack
/// listens on them and uses the next address of each prefix as its NAT address.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct TunSettings {
    /// The tunnel's IPv4 address and prefix length (at most 30: the next address is the NAT's).
    pub inet4: Option<(Ipv4Addr, u8)>,
    /// The tunnel's IPv6 address and prefix length (at most 126).
    pub inet6: Option<(Ipv6Addr, u8)>,
    /// The device's MTU: the largest packet read. Default [`DEFAULT_MTU`]; 576 to 65535.
    pub mtu: usize,
    /// What precedes each packet on the fd. Default: the platform's ([`Framing::default`]).
    /// A packet flow ([`Tun::start_packet_flow`]) has none: it ignores this.
    pub framing: Framing,
    /// UDP sessions: capacity (`session_capacity`, the least recently used one is evicted past
    /// it), queue, timeouts, and `max_sockets` outbound sockets at once (a datagram that would
    /// open one more is dropped and counted). Keying is always per app source.
    pub udp: UdpSettings,
    /// The decision hook asked before each connection is dialed ([`decide`]). Default none:
    /// every connection is dialed with the manager's settings.
    pub decision: Option<DecisionHook>,
    /// Which DNS queries the tunnel answers itself ([`DnsHijack`]). Default: none.
    pub dns_hijack: DnsHijack,
    /// Which TCP stack terminates the apps' connections. Default: [`Stack::default`] (system on
    /// Linux/Android, userspace on Apple).
    pub stack: Stack,
}

impl TunSettings {
    /// Settings for a tunnel with IPv4 address `address`/`prefix`, defaults otherwise.
    pub fn inet4(address: Ipv4Addr, prefix: u8) -> TunSettings {
        TunSettings {
            inet4: Some((address, prefix)),
            inet6: None,
            mtu: DEFAULT_MTU,
            framing: Framing::default(),
            udp: UdpSettings::default(),
            decision: None,
            dns_hijack: DnsHijack::Off,
            stack: Stack::default(),
        }
    }

    /// These settings with `decider` asked before each connection is dialed, with the default
    /// deadline and fallback (see [`DecisionHook`] to change them).
    pub fn with_decider(mut self, decider: Arc<dyn TunDecider>) -> TunSettings {
        self.decision = Some(DecisionHook::new(decider));
        self
    }

    /// These settings with the IPv6 address `address`/`prefix` too.
    pub fn with_inet6(mut self, address: Ipv6Addr, prefix: u8) -> TunSettings {
        self.inet6 = Some((address, prefix));
        self
    }

    /// The NAT address of each family the settings have (the address after the tunnel's, when
    /// its prefix has room): the usual DNS addresses for [`DnsHijack::Addresses`].
    pub fn nat_addresses(&self) -> Vec<IpAddr> {
        let v4 = self.inet4.and_then(|(address, prefix)| nat_v4(address, prefix));
        let v6 = self.inet6.and_then(|(address, prefix)| nat_v6(address, prefix));
        v4.into_iter().chain(v6).collect()
    }
}

/// Why a tunnel could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TunError {
    /// Neither an IPv4 nor an IPv6 address was given.
    #[error("the tunnel needs an IPv4 or IPv6 address")]
    NoAddress,
    /// The address's prefix has no room for the NAT address after it.
    #[error("tunnel address {address}/{prefix}: the next address must be in the prefix for the NAT (use a /30 or /126 or wider, and not its last address)")]
    NoRoomForNat {
        /// The tunnel address.
        address: IpAddr,
        /// Its prefix length.
        prefix: u8,
    },
    /// The MTU is out of range.
    #[error("tunnel MTU {0} is not in 576..=65535")]
    Mtu(usize),
    /// The file descriptor could not be used (not valid), or no tokio runtime.
    #[error("TUN device: {0}")]
    Device(#[source] std::io::Error),
    /// The DNS hijack settings cannot work (the reason says why), or it has no resolver.
    #[error("TUN DNS hijack: {0}")]
    DnsHijack(String),
    /// The listener on the tunnel address could not be bound.
    #[error("TUN TCP listener on {address}: {source}")]
    Listen {
        /// The tunnel address.
        address: IpAddr,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}

/// The link (a device, or the host's packet flow) and the counters, shared by the reader and
/// every sender (UDP sessions' reply sinks, ICMP, DNS, the NAT, the userspace stack).
#[derive(Debug)]
pub(crate) struct Io {
    link: Link,
    counters: Arc<Counters>,
}

impl Io {
    /// The I/O of a tunnel on `device` (tests build it directly).
    #[cfg(test)]
    pub(crate) fn on_device(device: TunDevice, counters: Arc<Counters>) -> Io {
        Io { link: Link::Device(device), counters }
    }

    /// Writes one packet to the device and counts it; false (counted as a drop) when the
    /// device refused it.
    pub(crate) fn send(&self, packet: &[u8]) -> bool {
        self.send_with(packet, &device::Offload::NONE)
    }

    /// [`Io::send`] of a packet with its offload state as read.
    pub(crate) fn send_with(&self, packet: &[u8], offload: &device::Offload) -> bool {
        match self.link.send_with(packet, offload) {
            Ok(()) => {
                bump(&self.counters.packets_out);
                self.counters.bytes_out.fetch_add(packet.len() as u64, std::sync::atomic::Ordering::Relaxed);
                true
            }
            Err(error) => {
                bump(&self.counters.dropped_write);
                tracing::trace!(%error, "TUN link refused a packet");
                false
            }
        }
    }
}

/// A running packet tunnel (see the module docs). Dropping it stops it like [`Tun::stop`].
#[derive(Debug)]
pub struct Tun {
    /// The accept and sweep tasks of the system stack.
    tasks: Vec<JoinHandle<()>>,
    /// What reads the packets: a thread (a device with the system stack) or a task.
    reading: Reading,
    counters: Arc<Counters>,
    families: Vec<Arc<Family>>,
    udp: Arc<UdpSessionTable>,
    dns: Arc<Hijack>,
    icmp: Arc<IcmpTable>,
    manager: Arc<ConnectionManager>,
    runtime: tokio::runtime::Handle,
    decisions: Option<Arc<UdpDecisions>>,
    /// The userspace TCP stack, when the settings chose it.
    userspace: Option<Arc<Userspace>>,
    /// A packet flow's flusher ([`flow`]): stopped with the reader.
    flusher: Option<flow::Flusher>,
    /// Set by [`Tun::stop`]: the reader opens no UDP session or echo flow any more.
    stopped: Arc<std::sync::atomic::AtomicBool>,
}

/// What reads a tunnel's packets (see [`reader`]).
#[derive(Debug)]
enum Reading {
    /// A thread (a device with the system stack).
    Thread(ReadThread),
    /// A task (a device with the userspace stack, a packet flow).
    Task(JoinHandle<()>),
}

/// What a tunnel reads and writes.
enum Start {
    /// A TUN device's fd.
    Device(OwnedFd),
    /// The host's packet flow: its batches in, its writer out.
    Flow(flow::InputBatches, Arc<dyn PacketFlowWriter>),
}

impl Tun {
    /// Starts a tunnel on the TUN device `fd` (taken over: closed when the tunnel stops): its
    /// TCP connections and UDP flows go through `manager` and `outbound`. Must be called inside
    /// a tokio runtime (else [`TunError::Device`]). The device must already have the settings' addresses (the listener binds
    /// them) and routes; `outbound` must not route back into the tunnel (see the module docs).
    /// A DNS hijack needs a resolver: see [`Tun::start_with_resolver`].
    pub fn start(
        fd: OwnedFd,
        settings: TunSettings,
        manager: Arc<ConnectionManager>,
        outbound: Arc<dyn Outbound>,
    ) -> Result<Tun, TunError> {
        Tun::start_with_resolver(fd, settings, manager, outbound, None)
    }

    /// [`Tun::start`] with the resolver that answers the hijacked DNS queries (required when
    /// `settings.dns_hijack` is not `Off`, else [`TunError::DnsHijack`]); e.g. a
    /// [`StrategyResolver`] on the same outbound, as `Netswitch::start_tun` does.
    pub fn start_with_resolver(
        fd: OwnedFd,
        settings: TunSettings,
        manager: Arc<ConnectionManager>,
        outbound: Arc<dyn Outbound>,
        resolver: Option<Arc<dyn HijackResolver>>,
    ) -> Result<Tun, TunError> {
        Tun::start_on(Start::Device(fd), settings, manager, outbound, resolver)
    }

    /// Starts a tunnel without a TUN device, on the host's packet flow ([`flow`]): the host
    /// hands the packets it reads to the returned [`PacketFlowInput`] in batches, and `writer`
    /// gets the packets going back in batches, on a thread of the tunnel's own. Otherwise as
    /// [`Tun::start_with_resolver`] (`settings.framing` is ignored: packets are whole IP packets).
    /// With the system stack the host's system must deliver the packets of the tunnel's address
    /// to netswitch's listener, so a flow without a kernel device wants [`Stack::Userspace`].
    /// [`Tun::stop`] stops the flusher too; the tunnel also stops reading (and
    /// [`Tun::is_finished`] turns true) once every clone of the input is dropped.
    pub fn start_packet_flow(
        settings: TunSettings,
        manager: Arc<ConnectionManager>,
        outbound: Arc<dyn Outbound>,
        resolver: Option<Arc<dyn HijackResolver>>,
        writer: Arc<dyn PacketFlowWriter>,
    ) -> Result<(Tun, PacketFlowInput), TunError> {
        let (input, batches) = flow::input();
        let settings = TunSettings { framing: Framing::Raw, ..settings };
        let tun = Tun::start_on(Start::Flow(batches, writer), settings, manager, outbound, resolver)?;
        Ok((tun, input))
    }

    fn start_on(
        start: Start,
        settings: TunSettings,
        manager: Arc<ConnectionManager>,
        outbound: Arc<dyn Outbound>,
        resolver: Option<Arc<dyn HijackResolver>>,
    ) -> Result<Tun, TunError> {
        // Listeners and the device register with the reactor: fail, not panic, without one.
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|error| TunError::Device(std::io::Error::other(error)))?;
        if !(576..=65535).contains(&settings.mtu) {
            return Err(TunError::Mtu(settings.mtu));
        }
        let mut addresses = Vec::new();
        if let Some((address, prefix)) = settings.inet4 {
            addresses.push((IpAddr::V4(address), prefix, nat_v4(address, prefix)));
        }
        if let Some((address, prefix)) = settings.inet6 {
            addresses.push((IpAddr::V6(address), prefix, nat_v6(address, prefix)));
        }
        if addresses.is_empty() {
            return Err(TunError::NoAddress);
        }
        let own: Vec<IpAddr> = addresses.iter().map(|(address, ..)| *address).collect();
        settings.dns_hijack.check(&own).map_err(TunError::DnsHijack)?;
        if settings.dns_hijack != DnsHijack::Off && resolver.is_none() {
            return Err(TunError::DnsHijack("no resolver given (Tun::start_with_resolver)".into()));
        }
        if settings.stack == Stack::Userspace {
            addresses.clear(); // no listener, no NAT address: TCP ends in `userspace`
        }
        let mut families = Vec::new();
        let mut listeners = Vec::new();
        let mut local = Vec::new();
        for (address, prefix, nat) in addresses {
            let nat = nat.ok_or(TunError::NoRoomForNat { address, prefix })?;
            local.extend([address, nat]);
            let (family, listener) =
                Family::listen(address, nat).map_err(|source| TunError::Listen { address, source })?;
            families.push(Arc::new(family));
            listeners.push(listener);
        }
        let counters = Arc::new(Counters::default());
        let (link, input, flusher) = match start {
            Start::Device(fd) => {
                (Link::Device(TunDevice::new(fd, settings.framing).map_err(TunError::Device)?), None, None)
            }
            Start::Flow(batches, writer) => {
                let (link, queue) = flow::output();
                let flusher =
                    flow::start_flusher(&link, queue, writer, counters.clone()).map_err(TunError::Device)?;
                (link, Some(batches), Some(flusher))
            }
        };
        let io = Arc::new(Io { link, counters: counters.clone() });
        let dns = Arc::new(Hijack::new(settings.dns_hijack.clone(), resolver, counters.clone()));
        let mut udp_settings = settings.udp.clone();
        udp_settings.keying = SessionKeying::PerClient;
        let sockets = Budget::new("outbound UDP sockets of the tunnel", udp_settings.max_sockets);
        let udp = Arc::new(
            UdpSessionTable::new(manager.clone(), outbound.clone(), udp_settings).with_socket_budget(sockets),
        );
        let asker = settings.decision.map(|hook| Arc::new(Asker::new(hook, counters.clone())));
        let decisions = asker
            .as_ref()
            .map(|asker| Arc::new(UdpDecisions::new(asker.clone(), udp.settings(), runtime.clone())));
        let icmp = Arc::new(IcmpTable::new(outbound.clone(), local));
        let userspace = (settings.stack == Stack::Userspace).then(|| {
            let sink: Arc<dyn userspace::PacketSink> = io.clone();
            let hooks = system::AcceptHooks { decider: asker.clone(), dns: dns.clone() };
            Arc::new(Userspace::new(
                sink,
                settings.mtu,
                settings.framing == Framing::VirtioNet,
                manager.clone(),
                outbound.clone(),
                counters.clone(),
                hooks,
            ))
        });
        let sweeper = Arc::new(Notify::new());
        let stopped = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut tasks = Vec::new();
        for (family, listener) in families.iter().zip(listeners) {
            tracing::info!(listener = %family.listener(), "TUN system stack listening");
            tasks.push(runtime.spawn(system::accept(
                family.clone(),
                listener,
                manager.clone(),
                outbound.clone(),
                counters.clone(),
                sweeper.clone(),
                system::AcceptHooks { decider: asker.clone(), dns: dns.clone() },
            )));
        }
        tasks.push(runtime.spawn(system::sweep(families.clone(), sweeper.clone())));
        let reader = Reader {
            io,
            families: families.clone(),
            udp: udp.clone(),
            icmp: icmp.clone(),
            sweeper,
            decisions: decisions.clone(),
            dns: dns.clone(),
            userspace: userspace.clone(),
            stopped: stopped.clone(),
        };
        let buffer_len = settings.framing.buffer_len(settings.mtu);
        let reading = match input {
            Some(batches) => Reading::Task(runtime.spawn(reader.run_flow(batches))),
            None if settings.stack == Stack::Userspace => {
                Reading::Task(runtime.spawn(reader.run_device(buffer_len)))
            }
            None => Reading::Thread(
                ReadThread::start(reader, buffer_len, runtime.clone()).map_err(TunError::Device)?,
            ),
        };
        Ok(Tun {
            tasks,
            reading,
            counters,
            families,
            udp,
            icmp,
            dns,
            manager,
            runtime,
            decisions,
            userspace,
            flusher,
            stopped,
        })
    }

    /// The counters so far.
    pub fn counters(&self) -> TunCounters {
        self.counters.snapshot()
    }

    /// How many TCP NAT entries are held (open connections, plus closed ones until the app took
    /// the rest of their bytes, and a short linger: [`nat`]).
    /// With the userspace stack: how many connections it holds (open ones, plus closing ones).
    pub fn nat_entries(&self) -> usize {
        let held = self.userspace.as_ref().map_or(0, |stack| stack.connections());
        held + self.families.iter().map(|family| family.nat_entries()).sum::<usize>()
    }

    /// How many UDP sessions (app sources) are open.
    pub fn udp_sessions(&self) -> usize {
        self.udp.len()
    }

    /// How many ICMP echo flows (ping sockets) are open.
    pub fn icmp_flows(&self) -> usize {
        self.icmp.len()
    }

    /// True once the tunnel stopped: stopped by [`Tun::stop`], or the device failed (a packet
    /// flow: every [`PacketFlowInput`] was dropped).
    pub fn is_finished(&self) -> bool {
        match &self.reading {
            Reading::Thread(thread) => thread.is_finished(),
            Reading::Task(task) => task.is_finished(),
        }
    }

    /// Stops reading the device and accepting connections, and closes every connection and
    /// UDP session that came through the tunnel (without the tunnel they cannot move packets).
    /// The device fd is closed once the reader and the last UDP session let it go.
    /// The reader (and a packet flow's flusher) keeps going for [`STOP_GRACE`] so that the resets
    /// reach the apps.
    pub fn stop(&self) {
        // First: what the reader reads from now on opens nothing that the closes below miss.
        self.stopped.store(true, std::sync::atomic::Ordering::Release);
        for task in &self.tasks {
            task.abort();
        }
        if let Some(decisions) = &self.decisions {
            decisions.stop();
        }
        self.udp.close_all();
        self.dns.stop();
        self.icmp.close_all();
        for family in &self.families {
            for id in family.connections() {
                self.manager.close(id);
            }
        }
        for id in self.userspace.iter().flat_map(|stack| stack.connection_ids()) {
            self.manager.close(id);
        }
        if let Some(stack) = &self.userspace {
            stack.stop(); // also the connections the manager does not have yet
        }
        let reader = match &self.reading {
            Reading::Thread(thread) => thread.stopper(),
            Reading::Task(task) => Stopper::Task(task.abort_handle()),
        };
        let flusher = self.flusher.clone();
        let (udp, icmp) = (self.udp.clone(), self.icmp.clone());
        self.runtime.spawn(async move {
            tokio::time::sleep(STOP_GRACE).await;
            drop(reader);
            // A datagram the reader was handling as the tunnel stopped may have opened one.
            udp.close_all();
            icmp.close_all();
            if let Some(flusher) = flusher {
                flusher.stop();
            }
        });
    }
}

impl Drop for Tun {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The NAT address of an IPv4 tunnel address: the next one, inside the prefix and not its
/// broadcast address.
fn nat_v4(address: Ipv4Addr, prefix: u8) -> Option<IpAddr> {
    if prefix > 30 {
        return None;
    }
    let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
    let next = u32::from(address).checked_add(1)?;
    let inside = next & mask == u32::from(address) & mask && next | mask != u32::MAX;
    inside.then(|| IpAddr::V4(next.into()))
}

/// The NAT address of an IPv6 tunnel address: the next one, inside the prefix.
fn nat_v6(address: Ipv6Addr, prefix: u8) -> Option<IpAddr> {
    if prefix > 126 {
        return None;
    }
    let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
    let next = u128::from(address).checked_add(1)?;
    (next & mask == u128::from(address) & mask).then(|| IpAddr::V6(next.into()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dial::direct::DirectOutbound;
    use crate::manager::RelaySettings;
    use std::os::unix::net::UnixDatagram;

    #[test]
    fn start_refuses_bad_settings_and_needs_a_runtime() {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let manager =
            Arc::new(ConnectionManager::with_runtime(RelaySettings::default(), runtime.handle().clone()));
        let outbound: Arc<dyn Outbound> = Arc::new(DirectOutbound::default());
        let start = |settings: TunSettings| {
            let (fd, _) = UnixDatagram::pair().unwrap();
            Tun::start(OwnedFd::from(fd), settings, manager.clone(), outbound.clone())
        };
        let loopback = TunSettings::inet4(Ipv4Addr::new(127, 0, 0, 5), 8);
        assert!(
            matches!(start(loopback.clone()), Err(TunError::Device(_))),
            "no runtime: an error, no panic"
        );
        let _inside = runtime.enter();
        let mut none = loopback.clone();
        none.inet4 = None;
        assert!(matches!(start(none), Err(TunError::NoAddress)));
        let mut tiny = loopback.clone();
        tiny.mtu = 100;
        assert!(matches!(start(tiny), Err(TunError::Mtu(100))));
        let error = start(TunSettings::inet4(Ipv4Addr::new(172, 19, 0, 2), 30)).unwrap_err();
        assert_eq!(
            error.to_string(),
            "tunnel address 172.19.0.2/30: the next address must be in the prefix for the NAT (use a /30 or /126 or wider, and not its last address)"
        );
        let mut hijack = TunSettings::inet4(Ipv4Addr::new(127, 0, 0, 5), 8);
        hijack.dns_hijack = DnsHijack::Addresses(hijack.nat_addresses());
        assert_eq!(hijack.nat_addresses(), [IpAddr::from([127, 0, 0, 6])]);
        assert!(matches!(start(hijack.clone()), Err(TunError::DnsHijack(_))), "no resolver");
        hijack.dns_hijack = DnsHijack::Addresses(vec![IpAddr::from([127, 0, 0, 5])]);
        let (fd, _) = UnixDatagram::pair().unwrap();
        let resolver: Arc<dyn HijackResolver> =
            Arc::new(StrategyResolver::new(Arc::new(DirectOutbound::default()), manager.networks().clone()));
        let error =
            Tun::start_with_resolver(fd.into(), hijack, manager.clone(), outbound.clone(), Some(resolver))
                .unwrap_err();
        assert!(error.to_string().contains("127.0.0.5 is the tunnel's own address"), "{error}");
        // Both stacks take an offloading device.
        for stack in [Stack::Userspace, Stack::System] {
            let mut offload = loopback.clone();
            (offload.stack, offload.framing) = (stack, Framing::VirtioNet);
            start(offload).unwrap().stop();
        }
        // A datagram socket pair stands in for the device: it starts, counts nothing, stops.
        let tun = start(loopback).unwrap();
        assert_eq!((tun.counters(), tun.nat_entries(), tun.udp_sessions()), (TunCounters::default(), 0, 0));
        tun.stop();
    }

    #[test]
    fn the_nat_address_is_the_next_one_in_the_prefix() {
        let v4 = |a: &str, p| nat_v4(a.parse().unwrap(), p).map(|ip| ip.to_string());
        assert_eq!(v4("172.19.0.1", 30).as_deref(), Some("172.19.0.2"));
        assert_eq!(v4("172.19.0.2", 30), None, "the next one is the broadcast address");
        assert_eq!(v4("172.19.0.1", 31), None);
        assert_eq!(v4("10.0.0.1", 8).as_deref(), Some("10.0.0.2"));
        assert_eq!(v4("255.255.255.255", 0), None);
        let v6 = |a: &str, p| nat_v6(a.parse().unwrap(), p).map(|ip| ip.to_string());
        assert_eq!(v6("fdfe::1", 126).as_deref(), Some("fdfe::2"));
        assert_eq!(v6("fdfe::3", 126), None);
        assert_eq!(v6("fdfe::1", 127), None);
    }
}
