//! Finding the packet tunnel's utun socket among an Apple Network Extension's open fds.
//!
//! `NEPacketTunnelProvider` hands its packets through `NEPacketTunnelFlow` and does not expose
//! the file descriptor behind it. That descriptor is a kernel-control socket of the
//! `com.apple.net.utun_control` family, open in the extension's process; like WireGuard's iOS
//! adapter and sing-box, [`find_utun_fd`] scans the process's descriptors for the one whose
//! `UTUN_OPT_IFNAME` option answers with a `utun` interface name. A host that prefers the fd path
//! to the packet-flow API passes a duplicate of that fd (the FFI's `find_utun_fd` returns one) to
//! `startTun` (Apple framing: a 4-byte address-family header on every packet), which closes it
//! when the tunnel stops; the system keeps its own descriptor open for the life of the tunnel.
//!
//! This relies on an undocumented detail of the system (the fd is not API); a host should fall
//! back to the packet-flow API when no fd is found.

use std::os::fd::RawFd;

/// How many descriptors [`find_utun_fd`] looks at (0 up to this, exclusive), as WireGuard does.
pub const SCAN_LIMIT: RawFd = 1024;

/// The first open descriptor below [`SCAN_LIMIT`] that is a utun control socket, with its
/// interface name (`utun3`…). Apple platforms only: `None` everywhere else. Never takes or
/// closes a descriptor.
pub fn find_utun_fd() -> Option<(RawFd, String)> {
    scan(SCAN_LIMIT, utun_name)
}

/// The first descriptor in `0..limit` for which `probe` gives an interface name starting with
/// `utun`, with that name.
fn scan(limit: RawFd, probe: impl Fn(RawFd) -> Option<String>) -> Option<(RawFd, String)> {
    (0..limit).find_map(|fd| probe(fd).filter(|name| name.starts_with("utun")).map(|name| (fd, name)))
}

/// `SYSPROTO_CONTROL` (`<sys/kern_control.h>`) and `UTUN_OPT_IFNAME` (`<net/if_utun.h>`): the
/// same on every Apple platform, but the libc crate defines them for macOS only.
#[cfg(target_vendor = "apple")]
const SYSPROTO_CONTROL: libc::c_int = 2;
#[cfg(target_vendor = "apple")]
const UTUN_OPT_IFNAME: libc::c_int = 2;

/// The utun interface name of `fd`, when it is a utun control socket.
#[cfg(target_vendor = "apple")]
fn utun_name(fd: RawFd) -> Option<String> {
    let mut name = [0u8; libc::IFNAMSIZ];
    let mut len = name.len() as libc::socklen_t;
    // SAFETY: UTUN_OPT_IFNAME writes at most `len` bytes into `name`, which we own; any other
    // kind of descriptor (or a closed one) fails with an error and writes nothing.
    let rc = unsafe {
        libc::getsockopt(fd, SYSPROTO_CONTROL, UTUN_OPT_IFNAME, name.as_mut_ptr().cast(), &mut len)
    };
    if rc != 0 {
        return None;
    }
    let name = &name[..(len as usize).min(name.len())];
    let end = name.iter().position(|&byte| byte == 0).unwrap_or(name.len());
    std::str::from_utf8(&name[..end]).ok().map(str::to_owned)
}

/// No utun sockets outside Apple platforms.
#[cfg(not(target_vendor = "apple"))]
fn utun_name(_fd: RawFd) -> Option<String> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scan_finds_the_first_utun_and_ignores_other_names() {
        let probe = |fd: RawFd| match fd {
            3 => Some("en0".to_owned()),
            7 => Some("utun4".to_owned()),
            9 => Some("utun5".to_owned()),
            _ => None,
        };
        assert_eq!(scan(SCAN_LIMIT, probe), Some((7, "utun4".to_owned())));
        assert_eq!(scan(7, probe), None, "the limit is exclusive");
    }

    #[cfg(not(target_vendor = "apple"))]
    #[test]
    fn there_is_no_utun_outside_apple() {
        let _socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        assert_eq!(find_utun_fd(), None);
    }
}
