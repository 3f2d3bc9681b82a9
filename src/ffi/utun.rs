//! The utun fd path for Apple hosts that prefer an fd to the packet-flow API.

/// The file descriptor of the packet tunnel's utun socket in this process (an iOS or macOS
/// Network Extension), found by scanning the open descriptors for a utun control socket
/// ([`crate::tun::utun`]); pass it to `startTun`. The descriptor stays the system's: the host
/// must not close it. Null when there is none, and always null outside Apple platforms; the
/// scan relies on an undocumented detail of the system, so a host should then fall back to the
/// packet-flow API.
#[uniffi::export]
pub fn find_utun_fd() -> Option<i32> {
    let (fd, name) = crate::tun::utun::find_utun_fd()?;
    tracing::info!(fd, interface = %name, "found the tunnel's utun socket");
    Some(fd)
}
