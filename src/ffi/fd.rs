//! Taking ownership of a connected stream socket the host hands over (`relay_tcp_fd`).

use std::os::fd::{FromRawFd, RawFd};

use super::error::NetswitchError;

/// Checks that `fd` is an open stream socket, then takes ownership of it as a non-blocking
/// tokio stream. Must run inside the runtime (registration with the reactor).
///
/// Guarantees: on `InvalidArgument` the fd was not taken (the caller still owns it and must
/// close it); on `Ok` netswitch closes it when the connection ends; on `Io` (the socket could not
/// be made non-blocking or registered) netswitch took it and already closed it.
pub(crate) fn adopt_stream_fd(fd: RawFd) -> Result<tokio::net::TcpStream, NetswitchError> {
    let invalid = |reason: String| NetswitchError::InvalidArgument { argument: "fd".into(), reason };
    if fd < 0 {
        return Err(invalid(format!("{fd} is not a file descriptor")));
    }
    // SAFETY: fstat only writes into the zeroed struct we own; a bad fd yields EBADF.
    let mut stat: libc::stat = unsafe { std::mem::zeroed() };
    if unsafe { libc::fstat(fd, &mut stat) } != 0 {
        return Err(invalid(format!("fd {fd}: {}", std::io::Error::last_os_error())));
    }
    if stat.st_mode & libc::S_IFMT != libc::S_IFSOCK {
        return Err(invalid(format!("fd {fd} is not a socket")));
    }
    let mut kind: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: SO_TYPE writes one c_int into `kind`, whose size we pass in `len`.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_TYPE,
            (&mut kind as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(invalid(format!("fd {fd}: SO_TYPE: {}", std::io::Error::last_os_error())));
    }
    if kind != libc::SOCK_STREAM {
        return Err(invalid(format!("fd {fd} is not a stream socket (SO_TYPE {kind})")));
    }
    // SAFETY: fd is an open stream socket (checked above) whose ownership the caller hands over;
    // from here on only this TcpStream closes it.
    let stream = unsafe { std::net::TcpStream::from_raw_fd(fd) };
    // On failure below, `stream` is dropped and closes the fd: the caller gave it to us.
    stream.set_nonblocking(true).map_err(|e| NetswitchError::Io {
        context: format!("set fd {fd} non-blocking"),
        reason: e.to_string(),
    })?;
    tokio::net::TcpStream::from_std(stream)
        .map_err(|e| NetswitchError::Io { context: format!("register fd {fd}"), reason: e.to_string() })
}
