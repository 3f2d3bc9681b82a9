//! Linux and Android: `SO_BINDTOIFINDEX` by interface index, falling back to `SO_BINDTODEVICE`
//! by name when the kernel does not know `SO_BINDTOIFINDEX` (before 5.0, or a vendor kernel
//! that answers `ENOPROTOOPT` / `EINVAL`). The fallback is remembered process-wide.
//!
//! The kernel does not check that an index passed to `SO_BINDTOIFINDEX` exists (a ghost index
//! only fails later, at `connect`), so the binder first checks that the interface's name still
//! has its index (`SIOCGIFINDEX`, asked on the socket being bound: what `if_nametoindex` does
//! without the socket it opens and closes for each call, two system calls per dial): a missing
//! interface or a stale snapshot fails the bind, naming the interface.
//!
//! On Android this binder is what [`super::HostBinder`] falls back to when the host answers
//! "bind it yourself"; binding there may need `CAP_NET_RAW` on old kernels, which is why the host
//! callback (`Network.bindSocket`) comes first.

use std::io;
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicBool, Ordering};

use nix::libc;
use socket2::Socket;

use super::{BindError, SocketBinder};
use crate::network::NetworkInterface;

/// Set once a kernel has refused `SO_BINDTOIFINDEX` as unknown; from then on every bind in
/// this process uses `SO_BINDTODEVICE`.
static BIND_BY_NAME: AtomicBool = AtomicBool::new(false);

/// Binds sockets with `SO_BINDTOIFINDEX` (or `SO_BINDTODEVICE`). Protect is a no-op: on desktop
/// Linux nothing needs protecting, and on Android protect comes from the host callback.
#[derive(Debug, Clone, Copy, Default)]
pub struct LinuxBinder;

impl LinuxBinder {
    /// Whether this process has switched to `SO_BINDTODEVICE` (for logs and diagnostics).
    pub fn binds_by_name() -> bool {
        BIND_BY_NAME.load(Ordering::Relaxed)
    }
}

impl SocketBinder for LinuxBinder {
    fn protect(&self, _: &Socket, _: &NetworkInterface, _: SocketAddr) -> Result<(), BindError> {
        Ok(())
    }

    fn bind_to_interface(
        &self,
        socket: &Socket,
        interface: &NetworkInterface,
        _destination: SocketAddr,
    ) -> Result<(), BindError> {
        verify_index(interface, index_of(socket, &interface.name))?;
        bind_with_fallback(
            &BIND_BY_NAME,
            interface,
            |index| socket.bind_device_by_index_v4(Some(index)),
            || socket.bind_device(Some(interface.name.as_bytes())),
        )
    }
}

/// The index the system has for the interface `name` (`SIOCGIFINDEX` on `socket`: any socket
/// answers it). `ENODEV` for a name no interface can have (too long, or with a NUL byte), as
/// `if_nametoindex` answers.
fn index_of(socket: &Socket, name: &str) -> io::Result<u32> {
    use std::os::fd::AsRawFd;

    // SAFETY: `ifreq` is plain data; all zeroes is a valid value (an empty name).
    let mut request: libc::ifreq = unsafe { std::mem::zeroed() };
    let bytes = name.as_bytes();
    if bytes.len() >= request.ifr_name.len() || bytes.contains(&0) {
        return Err(io::Error::from_raw_os_error(libc::ENODEV));
    }
    for (slot, byte) in request.ifr_name.iter_mut().zip(bytes) {
        *slot = *byte as libc::c_char;
    }
    // SAFETY: the fd is owned by `socket` and open for the call; SIOCGIFINDEX reads the
    // NUL-terminated name of `request` and writes only its index field.
    let rc = unsafe { libc::ioctl(socket.as_raw_fd(), libc::SIOCGIFINDEX as _, &mut request) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a successful SIOCGIFINDEX filled the index member of the union.
    let index = unsafe { request.ifr_ifru.ifru_ifindex };
    Ok(index as u32)
}

/// Fails when the system has no interface of that name (`ENODEV`/`ENXIO`) or gives it another
/// index. Any other lookup error (a sandbox refusing the ioctl) skips the check: the bind itself
/// still runs and reports its own errors.
fn verify_index(interface: &NetworkInterface, lookup: io::Result<u32>) -> Result<(), BindError> {
    let missing = |found| BindError::NoSuchInterface {
        interface: interface.name.clone(),
        index: interface.index,
        found,
    };
    match lookup {
        Ok(index) if index == interface.index => Ok(()),
        Ok(index) => Err(missing(Some(index))),
        Err(error) if matches!(error.raw_os_error(), Some(libc::ENODEV | libc::ENXIO)) => Err(missing(None)),
        Err(error) => {
            tracing::debug!(interface = %interface.name, %error, "cannot look up interface index; binding anyway");
            Ok(())
        }
    }
}

/// The binding logic with the socket calls injected, so the fallback can be tested without a
/// kernel that lacks `SO_BINDTOIFINDEX`. Index 0 (which the kernel reads as "unbind") and indexes
/// above `i32::MAX` are refused before any call.
fn bind_with_fallback(
    by_name_flag: &AtomicBool,
    interface: &NetworkInterface,
    by_index: impl FnOnce(NonZeroU32) -> io::Result<()>,
    by_name: impl FnOnce() -> io::Result<()>,
) -> Result<(), BindError> {
    let index = match NonZeroU32::new(interface.index).filter(|i| i.get() <= i32::MAX as u32) {
        Some(index) => index,
        None => {
            let error = io::Error::new(io::ErrorKind::InvalidInput, "invalid interface index");
            return Err(BindError::os(interface, "SO_BINDTOIFINDEX", error));
        }
    };
    if !by_name_flag.load(Ordering::Relaxed) {
        match by_index(index) {
            Ok(()) => return Ok(()),
            Err(error) if matches!(error.raw_os_error(), Some(libc::ENOPROTOOPT | libc::EINVAL)) => {
                if !by_name_flag.swap(true, Ordering::Relaxed) {
                    tracing::info!(
                        interface = %interface.name,
                        %error,
                        "kernel refused SO_BINDTOIFINDEX; binding by name (SO_BINDTODEVICE) from now on"
                    );
                }
            }
            Err(error) => return Err(BindError::os(interface, "SO_BINDTOIFINDEX", error)),
        }
    }
    by_name().map_err(|error| BindError::os(interface, "SO_BINDTODEVICE", error))
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use super::*;
    use crate::network::NetworkType;

    fn wlan() -> NetworkInterface {
        NetworkInterface::new("wlan0", 4, NetworkType::Wifi)
    }

    #[test]
    fn uses_the_index_while_the_kernel_accepts_it() {
        let flag = AtomicBool::new(false);
        let by_name_called = Cell::new(false);
        let result = bind_with_fallback(
            &flag,
            &wlan(),
            |index| {
                assert_eq!(index.get(), 4);
                Ok(())
            },
            || {
                by_name_called.set(true);
                Ok(())
            },
        );
        assert!(result.is_ok());
        assert!(!by_name_called.get() && !flag.load(Ordering::Relaxed));
    }

    #[test]
    fn switches_to_the_name_for_good_on_enoprotoopt_or_einval() {
        for errno in [libc::ENOPROTOOPT, libc::EINVAL] {
            let flag = AtomicBool::new(false);
            let result =
                bind_with_fallback(&flag, &wlan(), |_| Err(io::Error::from_raw_os_error(errno)), || Ok(()));
            assert!(result.is_ok());
            assert!(flag.load(Ordering::Relaxed), "errno {errno} must switch to SO_BINDTODEVICE");
            // The index is not tried again.
            let result =
                bind_with_fallback(&flag, &wlan(), |_| panic!("index tried after switch"), || Ok(()));
            assert!(result.is_ok());
        }
    }

    #[test]
    fn other_errors_fail_without_switching() {
        let flag = AtomicBool::new(false);
        let err = bind_with_fallback(
            &flag,
            &wlan(),
            |_| Err(io::Error::from_raw_os_error(libc::ENODEV)),
            || panic!("fell back on ENODEV"),
        )
        .unwrap_err();
        assert!(!flag.load(Ordering::Relaxed));
        let text = err.to_string();
        assert!(text.contains("wlan0 (index 4)") && text.contains("SO_BINDTOIFINDEX"), "{text}");
    }

    #[test]
    fn name_failure_names_the_option() {
        let flag = AtomicBool::new(true);
        let err =
            bind_with_fallback(&flag, &wlan(), |_| Ok(()), || Err(io::Error::from_raw_os_error(libc::EPERM)))
                .unwrap_err();
        assert!(err.to_string().contains("SO_BINDTODEVICE"), "{err}");
    }

    #[test]
    fn verifies_that_the_name_still_has_the_index() {
        assert!(verify_index(&wlan(), Ok(4)).is_ok());
        let err = verify_index(&wlan(), Ok(9)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "interface wlan0 (index 4) does not exist on this system (that name has index 9 now)"
        );
        let err = verify_index(&wlan(), Err(io::Error::from_raw_os_error(libc::ENODEV))).unwrap_err();
        assert_eq!(err.to_string(), "interface wlan0 (index 4) does not exist on this system");
        assert_eq!(io::Error::from(err).kind(), io::ErrorKind::NetworkUnreachable);
        assert!(verify_index(&wlan(), Err(io::Error::from_raw_os_error(libc::EACCES))).is_ok());
    }

    #[test]
    fn reads_the_index_on_the_socket_itself() {
        use socket2::{Domain, Type};
        let expected = nix::net::if_::if_nametoindex("lo").unwrap();
        for (domain, kind) in
            [(Domain::IPV4, Type::STREAM), (Domain::IPV6, Type::STREAM), (Domain::IPV4, Type::DGRAM)]
        {
            let Ok(socket) = Socket::new(domain, kind, None) else { continue }; // no IPv6 here
            assert_eq!(index_of(&socket, "lo").unwrap(), expected, "{domain:?} {kind:?}");
            for missing in ["netswitch-none", "a-name-far-too-long-for-ifnamsiz", "l\0o"] {
                let error = index_of(&socket, missing).unwrap_err();
                assert_eq!(error.raw_os_error(), Some(libc::ENODEV), "{missing:?}: {error}");
            }
        }
    }

    #[test]
    fn refuses_index_zero_and_out_of_range() {
        for index in [0, u32::MAX] {
            let flag = AtomicBool::new(false);
            let mut interface = wlan();
            interface.index = index;
            let err =
                bind_with_fallback(&flag, &interface, |_| panic!("called"), || panic!("called")).unwrap_err();
            assert_eq!(err.interface(), "wlan0");
        }
    }
}
