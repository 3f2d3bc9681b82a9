//! Linux: the kernel's own word that the host's networks changed, so a desktop host (the CLI)
//! re-reads its interfaces ([`super::host::host_snapshot`]) only when something happened instead
//! of on a timer. One rtnetlink socket subscribed to the link, IPv4/IPv6 address and IPv4/IPv6
//! route multicast groups; [`HostChanges::changed`] sleeps on its readiness (no timer, no thread)
//! and wakes when the kernel sends a notification.
//!
//! The messages are not parsed: any notification means "re-read". A burst (adding an address
//! also adds its local route) is drained in one wake-up. When the kernel drops notifications
//! because the socket's buffer was full (`ENOBUFS`) that also counts as a change, so nothing is
//! missed.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};

use nix::libc;
use nix::sys::socket::{
    bind, recv, socket, AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol, SockType,
};
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

/// The rtnetlink groups that can change what [`super::host::host_snapshot`] reads: links,
/// IPv4/IPv6 addresses and IPv4/IPv6 routes (the default route picks the default interface).
const GROUPS: u32 = (libc::RTMGRP_LINK
    | libc::RTMGRP_IPV4_IFADDR
    | libc::RTMGRP_IPV6_IFADDR
    | libc::RTMGRP_IPV4_ROUTE
    | libc::RTMGRP_IPV6_ROUTE) as u32;

/// Bytes read per `recv`; notifications are a few hundred bytes each, so one read takes several.
const BUFFER: usize = 16 * 1024;

/// Why change notifications could not be subscribed to or read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HostChangesError {
    /// The rtnetlink socket could not be opened, bound to the groups or registered with tokio.
    #[error("subscribe to rtnetlink link/address/route notifications: {0}")]
    Subscribe(#[source] io::Error),
    /// Reading the notifications failed (other than the kernel dropping some, which counts as a
    /// change).
    #[error("read rtnetlink notifications: {0}")]
    Read(#[source] io::Error),
}

/// A subscription to the host's link, address and route changes (Linux rtnetlink).
#[derive(Debug)]
pub struct HostChanges {
    socket: AsyncFd<OwnedFd>,
    buffer: Box<[u8]>,
}

impl HostChanges {
    /// Opens the subscription. Changes made after this call are reported by
    /// [`HostChanges::changed`]; read the interfaces once after subscribing so a change between
    /// that first read and this call is not missed. Must be called inside a tokio runtime.
    pub fn subscribe() -> Result<HostChanges, HostChangesError> {
        let fd = socket(
            AddressFamily::Netlink,
            SockType::Raw,
            SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
            SockProtocol::NetlinkRoute,
        )
        .map_err(|e| HostChangesError::Subscribe(e.into()))?;
        bind(fd.as_raw_fd(), &NetlinkAddr::new(0, GROUPS))
            .map_err(|e| HostChangesError::Subscribe(e.into()))?;
        // SAFETY: `fd` is the open socket made above, owned by the AsyncFd from here on and never
        // swapped for another descriptor.
        let socket = unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) }
            .map_err(|e| HostChangesError::Subscribe(e.into_parts().1))?;
        Ok(HostChanges { socket, buffer: vec![0; BUFFER].into_boxed_slice() })
    }

    /// Waits until the kernel reports at least one change, then consumes every notification
    /// already queued, so one burst is one return. Sleeps without any timer while nothing
    /// changes. Cancel-safe: a notification not yet consumed is reported by the next call.
    pub async fn changed(&mut self) -> Result<(), HostChangesError> {
        loop {
            let mut guard = self.socket.readable().await.map_err(HostChangesError::Read)?;
            let mut seen = false;
            loop {
                match recv(guard.get_inner().as_raw_fd(), &mut self.buffer, MsgFlags::MSG_DONTWAIT) {
                    Ok(_) => seen = true,
                    // The kernel dropped notifications: something changed.
                    Err(nix::errno::Errno::ENOBUFS) => seen = true,
                    Err(nix::errno::Errno::EINTR) => {}
                    Err(nix::errno::Errno::EAGAIN) => {
                        guard.clear_ready();
                        break;
                    }
                    Err(error) => return Err(HostChangesError::Read(error.into())),
                }
            }
            if seen {
                return Ok(());
            }
        }
    }
}
