//! Packet I/O on a TUN file descriptor: whole IP packets in and out, non-blocking on the tokio
//! reactor, read in batches (up to [`READ_BATCH`] packets per readiness event) into one buffer
//! of the MTU plus the framing.
//!
//! Framing ([`Framing`]): Linux and Android TUN devices (`IFF_TUN | IFF_NO_PI`, what
//! `VpnService.establish()` returns) carry raw IP packets; Apple's utun puts a 4-byte address
//! family (network byte order) in front of every packet. A packet written to the device is
//! one `write` (Apple: one `writev` of the header and the packet, no copy). A write that the
//! device refuses for lack of room (`EAGAIN`, `ENOBUFS`) drops the packet and is counted by the
//! caller: a TUN device is a network link, TCP retransmits and UDP may lose.

use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};

use tokio::io::unix::AsyncFd;

/// How many packets one readiness event of the device reads before other tasks get a turn.
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
        }
    }
}

/// A TUN device's file descriptor registered with the tokio reactor.
#[derive(Debug)]
pub struct TunDevice {
    fd: AsyncFd<OwnedFd>,
    framing: Framing,
}

impl TunDevice {
    /// Takes ownership of `fd` (closed when the device is dropped), makes it non-blocking and
    /// registers it with the current tokio runtime. Errors: the fd is not valid, or no runtime.
    pub fn new(fd: OwnedFd, framing: Framing) -> io::Result<TunDevice> {
        set_nonblocking(&fd)?;
        // `register` panics outside a runtime: fail instead.
        tokio::runtime::Handle::try_current().map_err(io::Error::other)?;
        // SAFETY: the AsyncFd owns the OwnedFd, which stays open, and is the same descriptor,
        // until the AsyncFd is dropped.
        let fd = unsafe { AsyncFd::register(fd) }.map_err(|error| error.into_parts().1)?;
        Ok(TunDevice { fd, framing })
    }

    /// The framing of this device's packets.
    pub fn framing(&self) -> Framing {
        self.framing
    }

    /// Waits until packets can be read, then reads up to [`READ_BATCH`] of them into `buffer`
    /// (at least the MTU plus [`Framing::header_len`] bytes) and hands each IP packet (framing
    /// removed) to `packet`. Returns when the batch is done or the device has nothing more;
    /// an error is the device's (it was closed, or the interface was removed).
    pub async fn read_batch(&self, buffer: &mut [u8], mut packet: impl FnMut(&mut [u8])) -> io::Result<()> {
        let mut guard = self.fd.readable().await?;
        let skip = self.framing.header_len();
        for _ in 0..READ_BATCH {
            match guard.try_io(|fd| nix::unistd::read(fd.get_ref(), buffer).map_err(io::Error::from)) {
                Ok(Ok(0)) => return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "TUN device closed")),
                Ok(Ok(length)) if length > skip => packet(&mut buffer[skip..length]),
                Ok(Ok(_)) => {} // only a framing header: nothing to parse
                Ok(Err(error)) if error.kind() == io::ErrorKind::Interrupted => {}
                Ok(Err(error)) => return Err(error),
                Err(_would_block) => break,
            }
        }
        Ok(())
    }

    /// Writes one IP packet (framing added). Never waits: a full device queue is an error
    /// (`WouldBlock` or `ENOBUFS`) and the packet is not sent.
    pub fn send(&self, packet: &[u8]) -> io::Result<()> {
        let fd = self.fd.get_ref().as_fd();
        let written = match self.framing {
            Framing::Raw => nix::unistd::write(fd, packet),
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

/// Creates (or attaches to) the Linux TUN device `name` (`IFF_TUN | IFF_NO_PI`, raw IP
/// packets) and returns its file descriptor. Needs `CAP_NET_ADMIN`. The device exists as long as
/// the descriptor is open (unless made persistent elsewhere); addresses, MTU, routes and
/// bringing it up are the caller's (the `netswitch tun` command does them).
#[cfg(any(target_os = "linux", target_os = "android"))]
pub fn create_linux(name: &str) -> io::Result<OwnedFd> {
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
    request.ifr_ifru.ifru_flags = (libc::IFF_TUN | libc::IFF_NO_PI) as libc::c_short;
    // SAFETY: TUNSETIFF reads and writes one ifreq, which outlives the call.
    if unsafe { libc::ioctl(fd.as_raw_fd(), libc::TUNSETIFF as _, &mut request) } < 0 {
        let error = io::Error::last_os_error();
        return Err(io::Error::new(error.kind(), format!("TUNSETIFF {name}: {error}")));
    }
    Ok(fd)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixDatagram;

    /// A datagram socket pair stands in for the device: one packet per datagram, like a TUN fd.
    async fn roundtrip(framing: Framing, packet: &[u8]) -> (Vec<u8>, Vec<Vec<u8>>) {
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
            device.read_batch(&mut buffer, |p| read.push(p.to_vec())).await.unwrap();
        }
        (written, read)
    }

    #[tokio::test]
    async fn frames_packets_raw_or_with_the_address_family() {
        let v4 = [0x45u8, 0, 0, 20, 1, 2, 3, 4];
        let v6 = [0x60u8, 0, 0, 0, 9, 9];
        let (written, read) = roundtrip(Framing::Raw, &v4).await;
        assert_eq!((written.as_slice(), read), (&v4[..], vec![v4.to_vec(), v4.to_vec()]));

        let (written, read) = roundtrip(Framing::AddressFamily, &v4).await;
        assert_eq!(written[..4], (libc::AF_INET as u32).to_be_bytes());
        assert_eq!((&written[4..], read), (&v4[..], vec![v4.to_vec(), v4.to_vec()]));
        let (written, read) = roundtrip(Framing::AddressFamily, &v6).await;
        assert_eq!(written[..4], (libc::AF_INET6 as u32).to_be_bytes());
        assert_eq!((&written[4..], read), (&v6[..], vec![v6.to_vec(), v6.to_vec()]));
    }

    #[test]
    fn needs_a_runtime_and_never_panics_without_one() {
        let (ours, _theirs) = UnixDatagram::pair().unwrap();
        assert!(TunDevice::new(OwnedFd::from(ours), Framing::Raw).is_err());
    }
}
