//! Packet tunnels started over the FFI (`ConnectionManager.start_tun`): the `TunOptions` record,
//! the `TunHandle` object and its counters, the check of the TUN fd the host hands over, and the
//! per-manager table that keeps each tunnel running until `stop()` or the manager's shutdown
//! (never until the handle is garbage-collected).

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::RawFd;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::Duration;

use super::error::NetswitchError;
use crate::inbound::udp_sessions::UdpSettings;
use crate::tun::{DnsHijack, Framing, Stack, Tun, TunError, TunSettings};

/// What precedes each IP packet on the tunnel's file descriptor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Enum)]
pub enum TunFraming {
    /// Nothing: raw IP packets (Android `VpnService`, Linux `IFF_TUN | IFF_NO_PI`).
    RawIp,
    /// A 4-byte address family in network byte order before every packet (Apple utun).
    AppleUtun,
}

/// Which TCP stack terminates the apps' connections of a tunnel (`TunOptions.stack`). UDP, DNS
/// hijack, ICMP and the decision hook work the same with either.
#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Enum)]
pub enum TunStack {
    /// The kernel's TCP: each flow is NAT-rewritten to a listener netswitch opens on the tunnel's
    /// address. Needs the right to listen there: Linux and Android (the default there).
    System,
    /// A TCP/IP stack inside netswitch (smoltcp): needs nothing from the kernel but the packets.
    /// The default on Apple platforms (where `includeAllNetworks` makes a listener on the tunnel
    /// address unreachable) and the only choice for a packet flow without a kernel device.
    Userspace,
}

/// How `ConnectionManager.start_tun` sets up a tunnel. Only `ipv4` has no default:
/// `TunOptions(ipv4 = "172.19.0.1/30")` in Kotlin is a working tunnel. The addresses must be the
/// ones the device has (Android: `VpnService.Builder.addAddress` with the same address and prefix
/// length): netswitch listens on them and uses the *next* address of each prefix as its NAT
/// address, so the prefix must leave room for it (a /30 or /126 or wider, not the prefix's last
/// address). The UDP limits default (`None`) to the manager's config (`udp_timeout_ms`,
/// `udp_session_capacity`) or netswitch's built-in values; a value given must be > 0.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct TunOptions {
    /// The tunnel's IPv4 address and prefix length, `"172.19.0.1/30"`.
    pub ipv4: String,
    /// The tunnel's IPv6 address and prefix length, `"fdfe::1/126"`; `None` (the default) for an
    /// IPv4-only tunnel (its IPv6 packets are dropped and counted as unsupported).
    #[uniffi(default = None)]
    pub ipv6: Option<String>,
    /// The largest IP packet read from the device: at least the device's MTU, 576 to 65535.
    /// Default 9000.
    #[uniffi(default = 9000)]
    pub mtu: u32,
    /// What precedes each packet on the fd; `None` (the default) = the platform's: `AppleUtun`
    /// on Apple platforms, `RawIp` elsewhere.
    #[uniffi(default = None)]
    pub framing: Option<TunFraming>,
    /// Which TCP stack terminates the apps' connections; `None` (the default) = the platform's:
    /// `Userspace` on Apple platforms, `System` elsewhere.
    #[uniffi(default = None)]
    pub stack: Option<TunStack>,
    /// UDP sessions (one per app source address and port) kept at once; past it the least
    /// recently used one is closed. `None` = the config's `udp_session_capacity`.
    #[uniffi(default = None)]
    pub udp_session_capacity: Option<u32>,
    /// Outbound UDP sockets (one per session) open at once; a datagram that would open one more
    /// is dropped and counted (`dropped_udp`). `None` = 1024.
    #[uniffi(default = None)]
    pub udp_max_sockets: Option<u32>,
    /// App datagrams queued per session before drops (`dropped_udp`): 1 to 1048576. `None` =
    /// 1024.
    #[uniffi(default = None)]
    pub udp_queue_len: Option<u32>,
    /// Idle timeout of UDP sessions of no recognised protocol, in ms. `None` = the config's
    /// `udp_timeout_ms`.
    #[uniffi(default = None)]
    pub udp_timeout_ms: Option<u64>,
    /// Idle timeout of DNS, NTP and STUN sessions, in ms. `None` = 10000.
    #[uniffi(default = None)]
    pub udp_short_timeout_ms: Option<u64>,
    /// Idle timeout of QUIC and DTLS sessions, in ms. `None` = 30000.
    #[uniffi(default = None)]
    pub udp_long_timeout_ms: Option<u64>,
    /// Answer the apps' DNS queries (UDP and TCP port 53) sent to the tunnel's NAT address
    /// (172.19.0.2 for 172.19.0.1/30, fdfe::2 for fdfe::1/126) with netswitch's resolver, over
    /// the network the strategy chooses. Give apps that address as their DNS server (Android:
    /// `VpnService.Builder.addDnsServer`). Default false: DNS is relayed like other UDP.
    #[uniffi(default = false)]
    pub dns_hijack: bool,
    /// Answer every query to port 53, whatever its destination, like `dns_hijack` (which it
    /// overrides). Default false.
    #[uniffi(default = false)]
    pub dns_hijack_all: bool,
    /// How long a `TunFlowDecider` (`start_tun_with_decider`) may take per flow, ms; past it the
    /// flow gets the fallback. Default 250; at least 1.
    #[uniffi(default = 250)]
    pub decision_deadline_ms: u64,
    /// The fallback of a decision that is late or throws: false (the default) lets the flow
    /// through with the config's settings, true blocks it (fail closed).
    #[uniffi(default = false)]
    pub decision_fail_closed: bool,
}

/// A snapshot of a tunnel's counters (`TunHandle.counters()`). Every packet read is either
/// handed on (a TCP segment translated, a UDP datagram queued) or in exactly one `dropped_*`
/// counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Record)]
pub struct TunCounters {
    /// IP packets read from the device.
    pub packets_in: u64,
    /// Bytes of those packets (IP headers included).
    pub bytes_in: u64,
    /// IP packets written to the device (translated TCP, UDP replies).
    pub packets_out: u64,
    /// Bytes of those packets.
    pub bytes_out: u64,
    /// TCP connections accepted from the tunnel and handed to the manager.
    pub tcp_connections: u64,
    /// UDP datagrams from the tunnel handed to a UDP session.
    pub udp_datagrams: u64,
    /// Dropped: IP fragments (not reassembled).
    pub dropped_fragments: u64,
    /// Dropped: truncated or inconsistent headers.
    pub dropped_malformed: u64,
    /// Dropped: a wrong IPv4 header or UDP checksum.
    pub dropped_bad_checksum: u64,
    /// Dropped: other protocols (ICMP …), a family without a tunnel address, UDP to a multicast
    /// or broadcast address.
    pub dropped_unsupported: u64,
    /// Dropped: a TCP segment of no known flow (not a SYN), or a reply to a NAT port that left.
    pub dropped_no_flow: u64,
    /// Dropped: a SYN that found every NAT port taken.
    pub dropped_nat_full: u64,
    /// Dropped: UDP datagrams that found their session's queue full or the socket budget spent.
    pub dropped_udp: u64,
    /// Dropped: packets the device refused to take (its queue was full).
    pub dropped_write: u64,
    /// Dropped: UDP datagrams of an app source the decision hook blocked.
    pub dropped_blocked: u64,
    /// TCP connections the decision hook blocked (reset, not handed to the manager).
    pub tcp_blocked: u64,
    /// Decisions asked of the decision hook.
    pub decisions: u64,
    /// Decisions that missed the hook's deadline (the connection got the fallback decision).
    pub decisions_timed_out: u64,
    /// Decisions whose decider panicked (the connection got the fallback decision).
    pub decisions_panicked: u64,
    /// Hijacked DNS queries answered from a lookup (addresses, NODATA or NXDOMAIN).
    pub dns_answered: u64,
    /// Hijacked DNS queries that failed (SERVFAIL, FORMERR, NOTIMP or no answer at all).
    pub dns_failed: u64,
    /// Dropped: hijacked UDP DNS queries that found every lookup slot taken.
    pub dropped_dns: u64,
    /// ICMP echo requests relayed over a ping socket.
    pub icmp_echoes: u64,
    /// ICMP echo replies written back to the apps.
    pub icmp_replies: u64,
    /// Dropped: ICMP echo requests with no network, a full flow table or queue, or a refused send.
    pub dropped_icmp: u64,
    /// Dropped: ICMP echo requests the OS gave no ping socket for (Linux `ping_group_range`).
    pub dropped_icmp_denied: u64,
}

impl From<crate::tun::TunCounters> for TunCounters {
    fn from(c: crate::tun::TunCounters) -> Self {
        TunCounters {
            packets_in: c.packets_in,
            bytes_in: c.bytes_in,
            packets_out: c.packets_out,
            bytes_out: c.bytes_out,
            tcp_connections: c.tcp_connections,
            udp_datagrams: c.udp_datagrams,
            dropped_fragments: c.dropped_fragments,
            dropped_malformed: c.dropped_malformed,
            dropped_bad_checksum: c.dropped_bad_checksum,
            dropped_unsupported: c.dropped_unsupported,
            dropped_no_flow: c.dropped_no_flow,
            dropped_nat_full: c.dropped_nat_full,
            dropped_udp: c.dropped_udp,
            dropped_write: c.dropped_write,
            dropped_blocked: c.dropped_blocked,
            tcp_blocked: c.tcp_blocked,
            decisions: c.decisions,
            decisions_timed_out: c.decisions_timed_out,
            decisions_panicked: c.decisions_panicked,
            dns_answered: c.dns_answered,
            dns_failed: c.dns_failed,
            dropped_dns: c.dropped_dns,
            icmp_echoes: c.icmp_echoes,
            icmp_replies: c.icmp_replies,
            dropped_icmp: c.dropped_icmp,
            dropped_icmp_denied: c.dropped_icmp_denied,
        }
    }
}

fn invalid(argument: &str, reason: String) -> NetswitchError {
    NetswitchError::InvalidArgument { argument: argument.into(), reason }
}

/// Parses `"address/prefix"` of one family; `argument` names the option in the error.
fn cidr<A: std::str::FromStr>(argument: &str, text: &str, max_prefix: u8) -> Result<(A, u8), NetswitchError> {
    let family = if max_prefix == 32 { "IPv4" } else { "IPv6" };
    let bad = || {
        invalid(
            argument,
            format!("{text:?} is not an {family} address/prefix (e.g. {})", example(max_prefix)),
        )
    };
    let (address, prefix) = text.trim().split_once('/').ok_or_else(bad)?;
    let address = address.parse::<A>().map_err(|_| bad())?;
    let prefix = prefix.parse::<u8>().map_err(|_| bad())?;
    if prefix > max_prefix {
        return Err(bad());
    }
    Ok((address, prefix))
}

fn example(max_prefix: u8) -> &'static str {
    if max_prefix == 32 {
        "172.19.0.1/30"
    } else {
        "fdfe::1/126"
    }
}

/// The longest per-session UDP queue `TunOptions.udp_queue_len` accepts: far above any useful
/// value, and below the bound of tokio's channels on 32-bit targets (2^29 - 1, armeabi-v7a),
/// where a larger one panics in the tunnel's reader.
pub const MAX_UDP_QUEUE_LEN: u32 = 1 << 20;

/// An optional limit that must be > 0 when given.
fn positive<T: Copy + Default + PartialOrd + std::fmt::Display>(
    argument: &str,
    value: Option<T>,
) -> Result<Option<T>, NetswitchError> {
    match value {
        Some(v) if v <= T::default() => Err(invalid(argument, format!("{v} must be > 0"))),
        other => Ok(other),
    }
}

impl TunOptions {
    /// The core settings: the options over `udp` (the manager's UDP settings). Every error names
    /// the option (`options.ipv4`, `options.mtu`, `options.udp_timeout_ms`…).
    pub(crate) fn to_core(&self, udp: &UdpSettings) -> Result<TunSettings, NetswitchError> {
        let (v4, prefix) = cidr::<Ipv4Addr>("options.ipv4", &self.ipv4, 32)?;
        let mut settings = TunSettings::inet4(v4, prefix);
        if let Some(text) = &self.ipv6 {
            let (v6, prefix) = cidr::<Ipv6Addr>("options.ipv6", text, 128)?;
            settings = settings.with_inet6(v6, prefix);
        }
        if !(576..=65535).contains(&self.mtu) {
            return Err(invalid("options.mtu", format!("{} is not in 576..=65535", self.mtu)));
        }
        settings.mtu = self.mtu as usize;
        settings.framing = match self.framing {
            None => Framing::default(),
            Some(TunFraming::RawIp) => Framing::Raw,
            Some(TunFraming::AppleUtun) => Framing::AddressFamily,
        };
        settings.stack = match self.stack {
            None => Stack::default(),
            Some(TunStack::System) => Stack::System,
            Some(TunStack::Userspace) => Stack::Userspace,
        };
        let mut udp = udp.clone();
        let count = |value: Option<u32>| value.map(|v| v as usize);
        let ms = |value: Option<u64>| value.map(Duration::from_millis);
        if let Some(v) = count(positive("options.udp_session_capacity", self.udp_session_capacity)?) {
            udp.session_capacity = v;
        }
        if let Some(v) = count(positive("options.udp_max_sockets", self.udp_max_sockets)?) {
            udp.max_sockets = v;
        }
        if let Some(len) = self.udp_queue_len.filter(|&len| len > MAX_UDP_QUEUE_LEN) {
            return Err(invalid("options.udp_queue_len", format!("{len} is above {MAX_UDP_QUEUE_LEN}")));
        }
        if let Some(v) = count(positive("options.udp_queue_len", self.udp_queue_len)?) {
            udp.queue_len = v;
        }
        if let Some(v) = ms(positive("options.udp_timeout_ms", self.udp_timeout_ms)?) {
            udp.timeouts.default = v;
        }
        if let Some(v) = ms(positive("options.udp_short_timeout_ms", self.udp_short_timeout_ms)?) {
            udp.timeouts.short = v;
        }
        if let Some(v) = ms(positive("options.udp_long_timeout_ms", self.udp_long_timeout_ms)?) {
            udp.timeouts.long = v;
        }
        settings.udp = udp;
        if self.decision_deadline_ms == 0 {
            return Err(invalid("options.decision_deadline_ms", "must be at least 1".into()));
        }
        settings.dns_hijack = if self.dns_hijack_all {
            DnsHijack::AllPort53
        } else if self.dns_hijack {
            DnsHijack::Addresses(settings.nat_addresses())
        } else {
            DnsHijack::Off
        };
        Ok(settings)
    }
}

/// Maps a start failure to the public error: a setting names its option, the rest names the
/// tunnel's link (`tunnel`: "TUN device fd 5", "packet flow") or the listener's address.
pub(crate) fn start_error(tunnel: &str, error: TunError) -> NetswitchError {
    match error {
        TunError::NoAddress => invalid("options.ipv4", error.to_string()),
        TunError::NoRoomForNat { address, .. } => {
            let option = if address.is_ipv4() { "options.ipv4" } else { "options.ipv6" };
            invalid(option, error.to_string())
        }
        TunError::Mtu(_) => invalid("options.mtu", error.to_string()),
        TunError::DnsHijack(_) => invalid("options.dns_hijack", error.to_string()),
        TunError::Device(source) => {
            NetswitchError::Io { context: tunnel.to_string(), reason: source.to_string() }
        }
        TunError::Listen { address, source } => NetswitchError::Io {
            context: format!("TUN TCP listener on {}", listener_address(address)),
            reason: source.to_string(),
        },
    }
}

fn listener_address(address: IpAddr) -> String {
    match address {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => format!("[{v6}]"),
    }
}

/// Checks that `fd` can be a TUN device, without taking it: an open character device (Linux and
/// Android `/dev/net/tun`, `/dev/tun`) or a datagram socket (Apple utun, a socketpair standing
/// in for a device). On `InvalidArgument` the caller still owns `fd`.
pub(crate) fn check_tun_fd(fd: RawFd) -> Result<(), NetswitchError> {
    match super::fd::file_type(fd)? {
        libc::S_IFCHR => Ok(()),
        libc::S_IFSOCK => match super::fd::socket_type(fd) {
            Ok(libc::SOCK_DGRAM) => Ok(()),
            Ok(kind) => Err(invalid("fd", format!("fd {fd} is a socket of type {kind}, not a TUN device"))),
            Err(error) => Err(invalid("fd", format!("fd {fd}: SO_TYPE: {error}"))),
        },
        _ => Err(invalid(
            "fd",
            format!("fd {fd} is not a TUN device (not a character device or datagram socket)"),
        )),
    }
}

/// The TUN fds handed over through the FFI whose tunnel still reads them, process-wide: the fd,
/// what it named then (device, inode) and the tunnel. A TUN character device has the same inode
/// for every open, so the tunnel's liveness, not the identity alone, tells a descriptor still
/// held from a reused number.
static HELD: Mutex<Vec<Held>> = Mutex::new(Vec::new());

/// One entry of [`HELD`]: the fd, its (device, inode) when handed over, its tunnel.
type Held = (RawFd, (u64, u64), Weak<Tun>);

/// `InvalidArgument` (the caller keeps `fd`) when `fd` is the descriptor of a running tunnel:
/// two tunnels would read one device and close it twice.
pub(crate) fn check_not_held(fd: RawFd) -> Result<(), NetswitchError> {
    let now = super::fd::identity(fd);
    let held = HELD.lock().unwrap_or_else(PoisonError::into_inner);
    let running = held.iter().any(|(held_fd, identity, tun)| {
        *held_fd == fd && Some(*identity) == now && tun.upgrade().is_some_and(|tun| !tun.is_finished())
    });
    if running {
        return Err(invalid(
            "fd",
            format!("fd {fd} is already the device of a running tunnel (hand a descriptor over once)"),
        ));
    }
    Ok(())
}

/// Records that `handle`'s tunnel reads `fd` (see [`check_not_held`]).
pub(crate) fn hold(fd: RawFd, handle: &TunHandle) {
    let Some(identity) = super::fd::identity(fd) else { return };
    let mut held = HELD.lock().unwrap_or_else(PoisonError::into_inner);
    held.retain(|(_, _, tun)| tun.upgrade().is_some_and(|tun| !tun.is_finished()));
    held.push((fd, identity, Arc::downgrade(&handle.tun)));
}

/// The running tunnels of one manager.
#[derive(Debug, Default)]
pub(crate) struct Tunnels {
    table: Mutex<Table>,
}

#[derive(Debug, Default)]
struct Table {
    shut_down: bool,
    next_id: u64,
    running: HashMap<u64, Arc<Tun>>,
}

impl Tunnels {
    fn lock(&self) -> MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Keeps `tun` running until [`Tunnels::stop`] or [`Tunnels::stop_all`] and returns its
    /// handle. After `stop_all` the tunnel is stopped at once and `ShutDown` returned.
    pub fn adopt(self: &Arc<Self>, tun: Tun) -> Result<Arc<TunHandle>, NetswitchError> {
        let tun = Arc::new(tun);
        let mut table = self.lock();
        if table.shut_down {
            drop(table);
            tun.stop();
            return Err(NetswitchError::ShutDown);
        }
        let id = table.next_id;
        table.next_id += 1;
        table.running.insert(id, tun.clone());
        Ok(Arc::new(TunHandle { id, tun, tunnels: self.clone() }))
    }

    fn stop(&self, id: u64) {
        let tun = self.lock().running.remove(&id);
        if let Some(tun) = tun {
            tun.stop();
        }
    }

    fn is_running(&self, id: u64) -> bool {
        self.lock().running.contains_key(&id)
    }

    /// Stops every tunnel and refuses new ones. Idempotent.
    pub fn stop_all(&self) {
        let running = {
            let mut table = self.lock();
            table.shut_down = true;
            std::mem::take(&mut table.running)
        };
        for tun in running.into_values() {
            tun.stop();
        }
    }
}

/// A running packet tunnel started by `ConnectionManager.start_tun`. The manager owns it: it
/// keeps reading the TUN device until `stop()` or the manager's `shutdown()` / `close()`, whether
/// or not the host keeps this handle (releasing it — Kotlin `close()`, garbage collection,
/// Swift's last reference — stops nothing). The counters stay readable after `stop()`.
#[derive(Debug, uniffi::Object)]
pub struct TunHandle {
    id: u64,
    tun: Arc<Tun>,
    tunnels: Arc<Tunnels>,
}

#[uniffi::export]
impl TunHandle {
    /// Stops reading the device and accepting connections, and closes every TCP connection and
    /// UDP session that came through this tunnel (their apps see resets: the device is still
    /// read for 200 ms so that the resets reach them). Then netswitch closes the TUN fd: at once
    /// when the last UDP session has let it go, 200 ms after `stop()` at the latest. Connections
    /// of other ingresses are not touched. Idempotent.
    pub fn stop(&self) {
        self.tunnels.stop(self.id);
    }

    /// The counters so far: packets and bytes each way, connections and datagrams handed on,
    /// drops by reason.
    pub fn counters(&self) -> TunCounters {
        self.tun.counters().into()
    }

    /// TCP NAT entries held: the tunnel's open TCP connections, plus closed ones for a short
    /// linger (so that a late segment or reset still finds its flow).
    pub fn nat_entries(&self) -> u64 {
        self.tun.nat_entries() as u64
    }

    /// UDP sessions (app source addresses) open.
    pub fn udp_sessions(&self) -> u64 {
        self.tun.udp_sessions() as u64
    }

    /// True once the tunnel no longer reads the device: shortly after `stop()` or the manager's
    /// shutdown, or when the device failed (the fd was closed by someone else, the interface was
    /// removed). A tunnel whose device failed still needs `stop()` to close its connections.
    pub fn is_finished(&self) -> bool {
        self.tun.is_finished()
    }
}

impl Drop for TunHandle {
    fn drop(&mut self) {
        if self.tunnels.is_running(self.id) {
            tracing::debug!(
                id = self.id,
                "TUN handle released; the tunnel keeps running until stop() or shutdown"
            );
        }
    }
}

#[cfg(test)]
impl TunOptions {
    /// Options for tests: `ipv4`, MTU 9000, everything else at its default.
    pub(crate) fn for_tests(ipv4: &str) -> TunOptions {
        TunOptions {
            ipv4: ipv4.into(),
            ipv6: None,
            mtu: 9000,
            framing: None,
            stack: None,
            udp_session_capacity: None,
            udp_max_sockets: None,
            udp_queue_len: None,
            udp_timeout_ms: None,
            udp_short_timeout_ms: None,
            udp_long_timeout_ms: None,
            dns_hijack: false,
            dns_hijack_all: false,
            decision_deadline_ms: 250,
            decision_fail_closed: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::{AsRawFd, OwnedFd};
    use std::os::unix::net::UnixDatagram;

    fn options(ipv4: &str) -> TunOptions {
        TunOptions::for_tests(ipv4)
    }

    fn argument(error: NetswitchError) -> String {
        match error {
            NetswitchError::InvalidArgument { argument, reason } => format!("{argument}: {reason}"),
            other => panic!("not InvalidArgument: {other:?}"),
        }
    }

    #[test]
    fn options_become_settings_over_the_managers_udp_settings() {
        let mut udp = UdpSettings::default();
        udp.timeouts.default = Duration::from_secs(60);
        udp.session_capacity = 7;
        let settings = options("172.19.0.1/30").to_core(&udp).unwrap();
        let mut expected = TunSettings::inet4(Ipv4Addr::new(172, 19, 0, 1), 30);
        expected.udp = udp.clone();
        assert_eq!(settings, expected, "defaults: the manager's UDP settings, the core's MTU and framing");
        assert_eq!(settings.mtu, crate::tun::DEFAULT_MTU, "the record's default MTU is the core's");

        let mut all = options(" 10.0.0.1/8 ");
        all.ipv6 = Some("fdfe::1/126".into());
        all.mtu = 1500;
        all.framing = Some(TunFraming::AppleUtun);
        all.stack = Some(TunStack::Userspace);
        all.udp_session_capacity = Some(3);
        all.udp_max_sockets = Some(4);
        all.udp_queue_len = Some(5);
        all.udp_timeout_ms = Some(6000);
        all.udp_short_timeout_ms = Some(7000);
        all.udp_long_timeout_ms = Some(8000);
        let settings = all.to_core(&udp).unwrap();
        assert_eq!(settings.inet6, Some(("fdfe::1".parse().unwrap(), 126)));
        assert_eq!(
            (settings.mtu, settings.framing, settings.stack),
            (1500, Framing::AddressFamily, Stack::Userspace)
        );
        all.stack = Some(TunStack::System);
        assert_eq!(all.to_core(&udp).unwrap().stack, Stack::System);
        let u = &settings.udp;
        assert_eq!((u.session_capacity, u.max_sockets, u.queue_len), (3, 4, 5));
        assert_eq!(
            (u.timeouts.default, u.timeouts.short, u.timeouts.long),
            (Duration::from_secs(6), Duration::from_secs(7), Duration::from_secs(8))
        );
        assert_eq!(settings.dns_hijack, DnsHijack::Off);
        all.dns_hijack = true;
        let nat = ["10.0.0.2".parse().unwrap(), "fdfe::2".parse().unwrap()];
        assert_eq!(all.to_core(&udp).unwrap().dns_hijack, DnsHijack::Addresses(nat.to_vec()));
        all.dns_hijack_all = true;
        assert_eq!(all.to_core(&udp).unwrap().dns_hijack, DnsHijack::AllPort53);
    }

    #[test]
    fn bad_options_name_the_option() {
        let udp = UdpSettings::default();
        let error = |o: TunOptions| argument(o.to_core(&udp).unwrap_err());
        assert_eq!(
            error(options("172.19.0.1")),
            "options.ipv4: \"172.19.0.1\" is not an IPv4 address/prefix (e.g. 172.19.0.1/30)"
        );
        assert!(error(options("fdfe::1/126")).starts_with("options.ipv4: "));
        assert!(error(options("172.19.0.1/33")).starts_with("options.ipv4: "));
        let mut v6 = options("172.19.0.1/30");
        v6.ipv6 = Some("fdfe::1/129".into());
        assert!(error(v6).starts_with("options.ipv6: \"fdfe::1/129\""));
        let mut mtu = options("172.19.0.1/30");
        mtu.mtu = 100;
        assert_eq!(error(mtu), "options.mtu: 100 is not in 576..=65535");
        let mut zero = options("172.19.0.1/30");
        zero.udp_session_capacity = Some(0);
        assert_eq!(error(zero), "options.udp_session_capacity: 0 must be > 0");
        let mut zero = options("172.19.0.1/30");
        zero.udp_timeout_ms = Some(0);
        assert_eq!(error(zero), "options.udp_timeout_ms: 0 must be > 0");
        // What only the core checks is mapped to the option too.
        let nat = TunError::NoRoomForNat { address: "fdfe::3".parse().unwrap(), prefix: 126 };
        assert!(argument(start_error("TUN device fd 3", nat))
            .starts_with("options.ipv6: tunnel address fdfe::3/126"));
    }

    #[test]
    fn only_character_devices_and_datagram_sockets_pass_as_tun_fds() {
        let (datagram, _peer) = std::os::unix::net::UnixDatagram::pair().unwrap();
        assert!(check_tun_fd(datagram.as_raw_fd()).is_ok());
        let null = std::fs::File::open("/dev/null").unwrap();
        assert!(check_tun_fd(null.as_raw_fd()).is_ok(), "a character device passes (registration decides)");

        assert_eq!(argument(check_tun_fd(-1).unwrap_err()), "fd: -1 is not a file descriptor");
        let (stream, _peer) = std::os::unix::net::UnixStream::pair().unwrap();
        assert!(argument(check_tun_fd(stream.as_raw_fd()).unwrap_err()).contains("not a TUN device"));
        let file = std::fs::File::open("Cargo.toml").unwrap();
        assert!(argument(check_tun_fd(file.as_raw_fd()).unwrap_err()).contains("not a TUN device"));
    }

    /// Polls `condition` for up to 10 s (a liveness bound, not a speed assertion).
    fn eventually(condition: impl Fn() -> bool) -> bool {
        for _ in 0..1000 {
            if condition() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        condition()
    }

    /// A datagram socket pair stands in for the device (one packet per datagram); sending from
    /// its peer fails once netswitch closed the device's end.
    #[test]
    fn the_manager_owns_its_tunnels_until_stop_or_shutdown_and_closes_their_fds() {
        use crate::ffi::{ConnectionManager, NetswitchConfig};
        let manager = ConnectionManager::new(NetswitchConfig::default(), None).unwrap();
        let closed = |peer: &UnixDatagram| peer.send(b"x").is_err();
        let start = || {
            let (device, peer) = UnixDatagram::pair().unwrap();
            (manager.start_tun(OwnedFd::from(device), options("127.0.0.5/8")), peer)
        };
        let (first, first_peer) = start();
        let first = first.unwrap();
        let (second, second_peer) = start();
        let second = second.unwrap();

        first_peer.send(&[0x45, 0, 0]).unwrap();
        assert!(eventually(|| first.counters().dropped_malformed == 1), "{:?}", first.counters());
        assert_eq!((first.counters().packets_in, first.nat_entries(), first.udp_sessions()), (1, 0, 0));
        first.stop();
        first.stop();
        assert!(eventually(|| first.is_finished() && closed(&first_peer)), "stop() left the fd open");
        assert_eq!(first.counters().packets_in, 1, "the counters stay readable");
        assert!(!second.is_finished() && !closed(&second_peer), "stop() stopped only its own tunnel");

        manager.shutdown();
        assert!(eventually(|| second.is_finished() && closed(&second_peer)), "shutdown() left a tunnel open");
        let (refused, peer) = start();
        assert!(matches!(refused, Err(NetswitchError::ShutDown)), "{refused:?}");
        assert!(closed(&peer), "the fd handed over after shutdown was closed");
    }
}
