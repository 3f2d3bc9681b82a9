//! Packet I/O on a TUN file descriptor: whole IP packets in and out, never blocking, read in
//! batches (up to [`READ_BATCH`] packets per call) into one buffer of the MTU plus the framing.
//! The tunnel reads the device on a thread of its own ([`TunDevice::wait_readable`] between
//! batches), not on the tokio reactor: a packet then costs no reactor wakeup and no task switch.
//!
//! Framing ([`Framing`]): Linux and Android TUN devices (`IFF_TUN | IFF_NO_PI`, what
//! `VpnService.establish()` returns) carry raw IP packets; Apple's utun puts a 4-byte address
//! family (network byte order) in front of every packet. A packet written to the device is
//! one `write` (Apple: one `writev` of the header and the packet, no copy). A write that the
//! device refuses for lack of room (`EAGAIN`, `ENOBUFS`) drops the packet and is counted by the
//! caller: a TUN device is a network link, TCP retransmits and UDP may lose.
//!
//! Offloads (Linux, a device netswitch creates with [`create_linux_offload`]): with
//! `IFF_VNET_HDR` and `TUNSETOFFLOAD` (checksum, TSO4, TSO6) the kernel hands over TCP
//! super-packets of up to 64 KiB with a partial checksum, each behind a 10-byte virtio-net header
//! ([`Framing::VirtioNet`], [`Offload`]), and takes them back the same way: one read and one write
//! per 64 KiB instead of per MTU-sized segment, and no checksum computed over the payload anywhere
//! (sing-box and wireguard-go do the same). A packet that only needs its checksum completed (not a
//! super-packet: a UDP datagram, a small TCP segment) has it completed on reading and is handed
//! over like a raw packet.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use nix::poll::{PollFd, PollFlags, PollTimeout};

/// How many packets one [`TunDevice::read_batch`] reads at most.
pub const READ_BATCH: usize = 64;

/// What precedes each IP packet on the file descriptor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Framing {
    /// Nothing: raw IP packets (Linux and Android TUN with `IFF_NO_PI`).
    Raw,
    /// A 4-byte address family in network byte order (`AF_INET` / `AF_INET6` of this platform):
    /// Apple's utun.
    AddressFamily,
    /// A 10-byte virtio-net header (Linux `IFF_VNET_HDR`, host byte order) with offloads on:
    /// packets up to 65,535 bytes whatever the MTU (see the module docs).
    VirtioNet,
}

impl Default for Framing {
    /// [`Framing::AddressFamily`] on Apple platforms, [`Framing::Raw`] elsewhere.
    fn default() -> Self {
        if cfg!(target_vendor = "apple") {
            Framing::AddressFamily
        } else {
            Framing::Raw
        }
    }
}

impl Framing {
    /// Bytes in front of every packet.
    pub fn header_len(self) -> usize {
        match self {
            Framing::Raw => 0,
            Framing::AddressFamily => 4,
            Framing::VirtioNet => VNET_HDR_LEN,
        }
    }

    /// The read buffer a device of `mtu` needs: its largest packet and the header.
    pub fn buffer_len(self, mtu: usize) -> usize {
        match self {
            Framing::VirtioNet => 65535 + VNET_HDR_LEN,
            _ => mtu + self.header_len(),
        }
    }
}

/// Length of the virtio-net header (`struct virtio_net_hdr`).
pub const VNET_HDR_LEN: usize = 10;
/// `VIRTIO_NET_HDR_F_NEEDS_CSUM`: the checksum at `csum_start + csum_offset` is partial.
const NEEDS_CSUM: u8 = 1;
/// `VIRTIO_NET_HDR_GSO_TCPV4` and `_TCPV6`: TCP super-packets to be cut into MSS-sized segments.
const GSO_TCPV4: u8 = 1;
const GSO_TCPV6: u8 = 4;
/// Where the checksum sits in a TCP header.
const TCP_CHECKSUM_OFFSET: u16 = 16;

/// The offload state of one packet read from a [`Framing::VirtioNet`] device: none, or a TCP
/// super-packet with a partial checksum that the kernel segments and completes. Written back
/// with the packet ([`TunDevice::send_with`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Offload {
    header: [u8; VNET_HDR_LEN],
}

impl Offload {
    /// No offload: a complete packet.
    pub const NONE: Offload = Offload { header: [0; VNET_HDR_LEN] };

    /// Whether the transport checksum is partial: it holds only the pseudo-header's sum (not
    /// inverted), and the kernel adds the rest. A NAT then adjusts it for the addresses only.
    pub fn partial_checksum(&self) -> bool {
        self.header[0] & NEEDS_CSUM != 0
    }

    /// A TCP packet netswitch built whose checksum field holds the pseudo-header sum from
    /// `checksum_start` (the TCP header's offset) on, for the kernel to complete; with `gso`
    /// (IPv6?, length of the IP and TCP headers, MSS) a super-packet of MSS-byte segments.
    pub(crate) fn partial_tcp(checksum_start: usize, gso: Option<(bool, usize, u16)>) -> Offload {
        let mut header = [0u8; VNET_HDR_LEN];
        header[0] = NEEDS_CSUM;
        if let Some((ipv6, headers, mss)) = gso {
            header[1] = if ipv6 { GSO_TCPV6 } else { GSO_TCPV4 };
            header[2..4].copy_from_slice(&(headers as u16).to_ne_bytes());
            header[4..6].copy_from_slice(&mss.to_ne_bytes());
        }
        header[6..8].copy_from_slice(&(checksum_start as u16).to_ne_bytes());
        header[8..10].copy_from_slice(&TCP_CHECKSUM_OFFSET.to_ne_bytes());
        Offload { header }
    }

    fn word(&self, at: usize) -> usize {
        usize::from(u16::from_ne_bytes([self.header[at], self.header[at + 1]]))
    }
}

/// Completes the partial checksum of `packet` described by `offload` (the one's complement sum
/// from `csum_start` to the end, stored at `csum_start + csum_offset`); false when the offsets
/// do not fit the packet.
fn complete_checksum(packet: &mut [u8], offload: &Offload) -> bool {
    let (start, offset) = (offload.word(6), offload.word(8));
    let at = start + offset;
    if start >= packet.len() || at + 2 > packet.len() {
        return false;
    }
    let mut sum: u64 = 0;
    let mut words = packet[start..].chunks_exact(2);
    for word in &mut words {
        sum += u64::from(u16::from_be_bytes([word[0], word[1]]));
    }
    if let [last] = words.remainder() {
        sum += u64::from(u16::from_be_bytes([*last, 0]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    // (0 and 0xffff are the same sum; UDP sends 0xffff, as 0 means "no checksum".)
    let checksum = match !(sum as u16) {
        0 => 0xffff,
        other => other,
    };
    packet[at..at + 2].copy_from_slice(&checksum.to_be_bytes());
    true
}

/// A TUN device's file descriptor, non-blocking.
#[derive(Debug)]
pub struct TunDevice {
    fd: OwnedFd,
    framing: Framing,
}

/// How a [`TunDevice::read_batch`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchEnd {
    /// The device had nothing more to read: wait for it ([`TunDevice::wait_readable`]).
    Drained,
    /// [`READ_BATCH`] packets were read: read again.
    Full,
}

impl TunDevice {
    /// Takes ownership of `fd` (closed when the device is dropped) and makes it non-blocking.
    /// Errors: the fd is not valid.
    pub fn new(fd: OwnedFd, framing: Framing) -> io::Result<TunDevice> {
        set_nonblocking(&fd)?;
        Ok(TunDevice { fd, framing })
    }

    /// A second descriptor of the device (e.g. to register its readiness with a reactor).
    pub fn try_clone_fd(&self) -> io::Result<OwnedFd> {
        self.fd.try_clone()
    }

    /// The framing of this device's packets.
    pub fn framing(&self) -> Framing {
        self.framing
    }

    /// Reads up to [`READ_BATCH`] packets into `buffer` (at least [`Framing::buffer_len`]
    /// bytes) and hands each IP packet (framing removed) and its [`Offload`] to `packet`. Never
    /// waits; says whether the device ran dry. An error is the device's (it was closed, or the
    /// interface was removed).
    pub fn read_batch(
        &self,
        buffer: &mut [u8],
        mut packet: impl FnMut(&mut [u8], Offload),
    ) -> io::Result<BatchEnd> {
        let skip = self.framing.header_len();
        for _ in 0..READ_BATCH {
            match nix::unistd::read(&self.fd, buffer).map_err(io::Error::from) {
                Ok(0) => return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "TUN device closed")),
                Ok(length) if length > skip => {
                    let (header, ip) = buffer[..length].split_at_mut(skip);
                    let mut offload = Offload::NONE;
                    if self.framing == Framing::VirtioNet {
                        offload.header.copy_from_slice(header);
                        // Not a super-packet: complete the checksum here (a bad header leaves
                        // it partial, and the packet fails its checksum like any other).
                        if offload.header[1] == 0 && offload.partial_checksum() {
                            complete_checksum(ip, &offload);
                            offload = Offload::NONE;
                        }
                    }
                    packet(ip, offload)
                }
                Ok(_) => {} // only a framing header: nothing to parse
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => return Ok(BatchEnd::Drained),
                Err(error) => return Err(error),
            }
        }
        Ok(BatchEnd::Full)
    }

    /// Blocks the calling thread until the device has a packet to read (true) or `stop` becomes
    /// readable (false). Not for a runtime's threads: the tunnel calls it on its reader thread.
    pub fn wait_readable(&self, stop: BorrowedFd<'_>) -> io::Result<bool> {
        let mut fds = [PollFd::new(self.fd.as_fd(), PollFlags::POLLIN), PollFd::new(stop, PollFlags::POLLIN)];
        loop {
            match nix::poll::poll(&mut fds, PollTimeout::NONE) {
                Ok(_) => {}
                Err(nix::errno::Errno::EINTR) => continue,
                Err(errno) => return Err(errno.into()),
            }
            let stop_ready = fds[1].revents().is_some_and(|events| !events.is_empty());
            if stop_ready {
                return Ok(false);
            }
            let events = fds[0].revents().unwrap_or(PollFlags::empty());
            if events.intersects(PollFlags::POLLERR | PollFlags::POLLNVAL) {
                return Err(io::Error::other(format!("TUN device poll: {events:?}")));
            }
            if !events.is_empty() {
                return Ok(true);
            }
        }
    }

    /// Writes one complete IP packet (framing added). Never waits: a full device queue is an
    /// error (`WouldBlock` or `ENOBUFS`) and the packet is not sent.
    pub fn send(&self, packet: &[u8]) -> io::Result<()> {
        self.send_with(packet, &Offload::NONE)
    }

    /// Writes one IP packet with its offload state (as read; ignored unless the framing is
    /// [`Framing::VirtioNet`]), like [`TunDevice::send`].
    pub fn send_with(&self, packet: &[u8], offload: &Offload) -> io::Result<()> {
        let fd = self.fd.as_fd();
        let written = match self.framing {
            Framing::Raw => nix::unistd::write(fd, packet),
            Framing::VirtioNet => {
                nix::sys::uio::writev(fd, &[io::IoSlice::new(&offload.header), io::IoSlice::new(packet)])
                    .map(|n| n.saturating_sub(VNET_HDR_LEN))
            }
            Framing::AddressFamily => {
                let family = match packet.first().map(|b| b >> 4) {
                    Some(6) => libc::AF_INET6,
                    _ => libc::AF_INET,
                };
                let header = (family as u32).to_be_bytes();
                nix::sys::uio::writev(fd, &[io::IoSlice::new(&header), io::IoSlice::new(packet)])
                    .map(|n| n.saturating_sub(header.len()))
            }
        };
        match written {
            Ok(n) if n == packet.len() => Ok(()),
            Ok(n) => Err(io::Error::other(format!("TUN device took {n} of {} bytes", packet.len()))),
            Err(errno) => Err(errno.into()),
        }
    }
}

fn set_nonblocking(fd: &OwnedFd) -> io::Result<()> {
    let raw = fd.as_raw_fd();
    // SAFETY: fcntl on a file descriptor we own, with integer arguments only.
    let flags = unsafe { libc::fcntl(raw, libc::F_GETFL) };
    if flags < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: as above.
    if unsafe { libc::fcntl(raw, libc::F_SETFL, flags | libc::O_NONBLOCK) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The queue of packets a device netswitch creates holds for it ([`create_linux`]): 4096
/// packets, about 80 ms of a 500 Mbit/s flow of 1,200-byte datagrams, where the kernel's default
/// (500) holds 10 ms and every longer wait of the reader for a CPU lost packets. The queued
/// packets are kernel memory charged to their senders' sockets (each capped by its send buffer).
/// A device made elsewhere (Android's `VpnService`) keeps its own queue length.
#[cfg(any(target_os = "linux", target_os = "android"))]
pub const TX_QUEUE_LEN: i32 = 4096;

/// Creates (or attaches to) the Linux TUN device `name` (`IFF_TUN | IFF_NO_PI`, raw IP
/// packets) with a queue of [`TX_QUEUE_LEN`] packets and returns its file descriptor. Needs
/// `CAP_NET_ADMIN`. The device exists as long as
/// the descriptor is open (unless made persistent elsewhere); addresses, MTU, routes and
/// bringing it up are the caller's (the `netswitch tun` command does them).
#[cfg(any(target_os = "linux", target_os = "android"))]
pub fn create_linux(name: &str) -> io::Result<OwnedFd> {
    create(name, false)
}

/// Like [`create_linux`], with the virtio-net header and the checksum and TCP segmentation
/// offloads on: the fd must be used with [`Framing::VirtioNet`] (see the module docs).
#[cfg(any(target_os = "linux", target_os = "android"))]
pub fn create_linux_offload(name: &str) -> io::Result<OwnedFd> {
    create(name, true)
}

#[cfg(any(target_os = "linux", target_os = "android"))]
fn create(name: &str, offload: bool) -> io::Result<OwnedFd> {
    use std::os::fd::FromRawFd;

    if name.is_empty() || name.len() >= libc::IFNAMSIZ || name.contains('\0') {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("TUN name {name:?} must have 1 to {} bytes", libc::IFNAMSIZ - 1),
        ));
    }
    let path = c"/dev/net/tun";
    // SAFETY: a NUL-terminated path and plain flags.
    let raw = unsafe { libc::open(path.as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) };
    if raw < 0 {
        let error = io::Error::last_os_error();
        return Err(io::Error::new(error.kind(), format!("open /dev/net/tun: {error}")));
    }
    // SAFETY: `raw` was just opened and is owned by nobody else.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut request: libc::ifreq = unsafe { std::mem::zeroed() };
    for (slot, byte) in request.ifr_name.iter_mut().zip(name.bytes()) {
        *slot = byte as libc::c_char;
    }
    let vnet = if offload { libc::IFF_VNET_HDR } else { 0 };
    request.ifr_ifru.ifru_flags = (libc::IFF_TUN | libc::IFF_NO_PI | vnet) as libc::c_short;
    // SAFETY: TUNSETIFF reads and writes one ifreq, which outlives the call.
    if unsafe { libc::ioctl(fd.as_raw_fd(), libc::TUNSETIFF as _, &mut request) } < 0 {
        let error = io::Error::last_os_error();
        return Err(io::Error::new(error.kind(), format!("TUNSETIFF {name}: {error}")));
    }
    if offload {
        let features = libc::TUN_F_CSUM | libc::TUN_F_TSO4 | libc::TUN_F_TSO6;
        // SAFETY: TUNSETOFFLOAD takes an integer argument.
        if unsafe { libc::ioctl(fd.as_raw_fd(), libc::TUNSETOFFLOAD as _, features as libc::c_ulong) } < 0 {
            let error = io::Error::last_os_error();
            return Err(io::Error::new(error.kind(), format!("TUNSETOFFLOAD {name}: {error}")));
        }
    }
    set_tx_queue_len(&mut request, name)?;
    Ok(fd)
}

/// Sets the queue length of the device named in `request` to [`TX_QUEUE_LEN`].
#[cfg(any(target_os = "linux", target_os = "android"))]
fn set_tx_queue_len(request: &mut libc::ifreq, name: &str) -> io::Result<()> {
    use std::os::fd::FromRawFd;

    // SAFETY: a plain socket(2) call.
    let raw = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if raw < 0 {
        let error = io::Error::last_os_error();
        return Err(io::Error::new(error.kind(), format!("socket for {name}'s queue length: {error}")));
    }
    // SAFETY: `raw` was just opened and is owned by nobody else.
    let socket = unsafe { OwnedFd::from_raw_fd(raw) };
    // `ifr_qlen` shares its place with `ifr_ifindex`.
    request.ifr_ifru.ifru_ifindex = TX_QUEUE_LEN;
    // SAFETY: SIOCSIFTXQLEN reads one ifreq, which outlives the call.
    if unsafe { libc::ioctl(socket.as_raw_fd(), libc::SIOCSIFTXQLEN as _, request as *mut libc::ifreq) } < 0 {
        let error = io::Error::last_os_error();
        return Err(io::Error::new(error.kind(), format!("SIOCSIFTXQLEN {name}: {error}")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixDatagram;

    /// A datagram socket pair stands in for the device: one packet per datagram, like a TUN fd.
    fn roundtrip(framing: Framing, packet: &[u8]) -> (Vec<u8>, Vec<Vec<u8>>) {
        let (ours, theirs) = UnixDatagram::pair().unwrap();
        let device = TunDevice::new(OwnedFd::from(ours), framing).unwrap();
        device.send(packet).unwrap();
        let mut written = vec![0u8; 256];
        let n = theirs.recv(&mut written).unwrap();
        written.truncate(n);
        // What the "kernel" sends: the same bytes back, and with a header, a header-only
        // datagram (skipped).
        theirs.send(&written).unwrap();
        if framing.header_len() > 0 {
            theirs.send(&written[..framing.header_len()]).unwrap();
        }
        theirs.send(&written).unwrap();
        let mut buffer = vec![0u8; 256];
        let mut read = Vec::new();
        while read.len() < 2 {
            device.read_batch(&mut buffer, |p, _| read.push(p.to_vec())).unwrap();
        }
        (written, read)
    }

    #[test]
    fn frames_packets_raw_or_with_the_address_family() {
        let v4 = [0x45u8, 0, 0, 20, 1, 2, 3, 4];
        let v6 = [0x60u8, 0, 0, 0, 9, 9];
        let (written, read) = roundtrip(Framing::Raw, &v4);
        assert_eq!((written.as_slice(), read), (&v4[..], vec![v4.to_vec(), v4.to_vec()]));

        let (written, read) = roundtrip(Framing::AddressFamily, &v4);
        assert_eq!(written[..4], (libc::AF_INET as u32).to_be_bytes());
        assert_eq!((&written[4..], read), (&v4[..], vec![v4.to_vec(), v4.to_vec()]));
        let (written, read) = roundtrip(Framing::AddressFamily, &v6);
        assert_eq!(written[..4], (libc::AF_INET6 as u32).to_be_bytes());
        assert_eq!((&written[4..], read), (&v6[..], vec![v6.to_vec(), v6.to_vec()]));
    }

    /// With the virtio-net header: a packet that only needs its checksum is completed on reading
    /// and handed over as a plain one; a super-packet keeps its header, which is written back
    /// with it.
    #[test]
    fn virtio_net_headers_complete_checksums_and_carry_super_packets() {
        use crate::tun::packet::{parse, Packet};
        let (ours, theirs) = UnixDatagram::pair().unwrap();
        let device = TunDevice::new(OwnedFd::from(ours), Framing::VirtioNet).unwrap();
        let mut udp = Vec::new();
        etherparse::PacketBuilder::ipv4([172, 19, 0, 1], [10, 200, 9, 1], 64)
            .udp(40000, 53)
            .write(&mut udp, b"query!")
            .unwrap();
        let full = u16::from_be_bytes([udp[26], udp[27]]);
        // The kernel's partial form: the pseudo-header's sum (addresses, protocol, length), not
        // inverted.
        let mut sum: u32 = [&udp[12..20], &[0, 17], &14u16.to_be_bytes()[..]]
            .concat()
            .chunks(2)
            .map(|w| u32::from(u16::from_be_bytes([w[0], w[1]])))
            .sum();
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        udp[26..28].copy_from_slice(&(sum as u16).to_be_bytes());
        assert!(matches!(parse(&udp), Packet::Dropped(_)), "partial: does not verify as it is");
        let mut header = [0u8; VNET_HDR_LEN];
        header[0] = NEEDS_CSUM;
        header[6..8].copy_from_slice(&20u16.to_ne_bytes());
        header[8..10].copy_from_slice(&6u16.to_ne_bytes());
        theirs.send(&[&header[..], &udp].concat()).unwrap();
        let mut tso = header;
        tso[1] = 1; // VIRTIO_NET_HDR_GSO_TCPV4
        theirs.send(&[&tso[..], b"super"].concat()).unwrap();
        let mut buffer = vec![0u8; Framing::VirtioNet.buffer_len(1500)];
        let mut read = Vec::new();
        while read.len() < 2 {
            device.read_batch(&mut buffer, |p, offload| read.push((p.to_vec(), offload))).unwrap();
        }
        assert_eq!(read[0].1, Offload::NONE);
        assert_eq!(u16::from_be_bytes([read[0].0[26], read[0].0[27]]), full, "completed");
        assert!(matches!(parse(&read[0].0), Packet::Udp(_)));
        assert_eq!((read[1].0.as_slice(), read[1].1.partial_checksum()), (&b"super"[..], true));
        device.send_with(b"super", &read[1].1).unwrap();
        device.send(b"plain").unwrap();
        let mut written = vec![0u8; 64];
        let n = theirs.recv(&mut written).unwrap();
        assert_eq!(&written[..n], [&tso[..], b"super"].concat().as_slice());
        let n = theirs.recv(&mut written).unwrap();
        assert_eq!(&written[..n], [&[0u8; VNET_HDR_LEN][..], b"plain"].concat().as_slice());
    }

    /// Reading never waits: an empty device says so at once. Waiting ends with a packet (true)
    /// or with the stop signal (false), whichever is there.
    #[test]
    fn reads_never_wait_and_waiting_ends_with_a_packet_or_the_stop_signal() {
        let (ours, theirs) = UnixDatagram::pair().unwrap();
        let (stop, stopper) = UnixDatagram::pair().unwrap();
        let device = TunDevice::new(OwnedFd::from(ours), Framing::Raw).unwrap();
        let mut buffer = vec![0u8; 256];
        let mut read = Vec::new();
        let end = device.read_batch(&mut buffer, |p, _| read.push(p.to_vec())).unwrap();
        assert_eq!((end, read.len()), (BatchEnd::Drained, 0));
        let waiter = std::thread::spawn(move || {
            let woke = device.wait_readable(stop.as_fd()).unwrap();
            (woke, device, stop)
        });
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert!(!waiter.is_finished(), "waits while there is nothing");
        theirs.send(&[0x45, 0, 0, 20]).unwrap();
        let (woke, device, stop) = waiter.join().unwrap();
        assert!(woke, "a packet ends the wait");
        let end = device.read_batch(&mut buffer, |p, _| read.push(p.to_vec())).unwrap();
        assert_eq!((end, read), (BatchEnd::Drained, vec![vec![0x45, 0, 0, 20]]));
        stopper.send(b"x").unwrap();
        assert!(!device.wait_readable(stop.as_fd()).unwrap(), "the stop signal ends the wait");
        for _ in 0..READ_BATCH + 1 {
            theirs.send(&[0x45]).unwrap();
        }
        assert_eq!(device.read_batch(&mut buffer, |_, _| {}).unwrap(), BatchEnd::Full);
        assert_eq!(device.read_batch(&mut buffer, |_, _| {}).unwrap(), BatchEnd::Drained);
    }
}
