//! The utun fd path for Apple hosts that prefer an fd to the packet-flow API.

use std::os::fd::RawFd;

/// A descriptor of the packet tunnel's utun socket in this process (an iOS or macOS Network
/// Extension), found by scanning the open descriptors for a utun control socket
/// ([`crate::tun::utun`]); pass it to `startTun`. It is a duplicate: `startTun` takes it over
/// and closes it when the tunnel stops, while the system's own descriptor stays open (so the
/// tunnel can be started again, and the system never sees its descriptor closed). A host that
/// does not hand it to `startTun` closes it. Null when there is none, and always null outside
/// Apple platforms; the scan relies on an undocumented detail of the system, so a host should
/// then fall back to the packet-flow API.
#[uniffi::export]
pub fn find_utun_fd() -> Option<i32> {
    let (fd, name) = crate::tun::utun::find_utun_fd()?;
    let duplicate = duplicate(fd)?;
    tracing::info!(fd, duplicate, interface = %name, "found the tunnel's utun socket");
    Some(duplicate)
}

/// A new close-on-exec descriptor of the socket `fd` names, for the host to hand over; `None`
/// (logged) when the process is out of descriptors.
fn duplicate(fd: RawFd) -> Option<RawFd> {
    // SAFETY: F_DUPFD_CLOEXEC only creates a new descriptor; `fd` stays as it is.
    let duplicate = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 0) };
    if duplicate < 0 {
        let error = std::io::Error::last_os_error();
        tracing::warn!(fd, %error, "cannot duplicate the utun socket");
        return None;
    }
    Some(duplicate)
}

#[cfg(test)]
mod tests {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    use std::os::unix::net::UnixDatagram;

    use super::*;

    /// What `startTun` does with the answer (closes it when the tunnel stops) leaves the
    /// system's descriptor working.
    #[test]
    fn closing_the_answer_leaves_the_systems_descriptor_open() {
        let (system, peer) = UnixDatagram::pair().unwrap();
        let answer = duplicate(system.as_raw_fd()).unwrap();
        assert_ne!(answer, system.as_raw_fd());
        // SAFETY: `answer` is a new descriptor nothing else owns.
        drop(unsafe { OwnedFd::from_raw_fd(answer) });
        peer.send(b"still open").unwrap();
        let mut buffer = [0u8; 16];
        assert_eq!(system.recv(&mut buffer).unwrap(), 10);
    }
}
