//! Taking a connected stream socket the host hands over (`relay_tcp_fd`): a check that leaves a
//! raw fd with its owner on failure, and the conversion of an owned fd into a tokio stream.

use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use super::error::NetswitchError;

fn invalid(reason: String) -> NetswitchError {
    NetswitchError::InvalidArgument { argument: "fd".into(), reason }
}

/// The file type of `fd` (`S_IFSOCK`, `S_IFCHR`…), without taking it: `InvalidArgument` naming
/// `fd` when it is negative or not open.
pub(super) fn file_type(fd: RawFd) -> Result<libc::mode_t, NetswitchError> {
    if fd < 0 {
        return Err(invalid(format!("{fd} is not a file descriptor")));
    }
    // SAFETY: fstat only writes into the zeroed struct we own; a bad fd yields EBADF.
    let mut stat: libc::stat = unsafe { std::mem::zeroed() };
    if unsafe { libc::fstat(fd, &mut stat) } != 0 {
        return Err(invalid(format!("fd {fd}: {}", std::io::Error::last_os_error())));
    }
    Ok(stat.st_mode & libc::S_IFMT)
}

/// The type of the socket `fd` (`SOCK_STREAM`, `SOCK_DGRAM`…).
pub(super) fn socket_type(fd: RawFd) -> std::io::Result<libc::c_int> {
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
        return Err(std::io::Error::last_os_error());
    }
    Ok(kind)
}

/// Checks that `fd` is an open stream socket, without taking it: on `InvalidArgument` (not a
/// file descriptor, closed, not a socket, not a stream socket) the caller still owns it.
pub(crate) fn check_stream_socket(fd: RawFd) -> Result<(), NetswitchError> {
    if file_type(fd)? != libc::S_IFSOCK {
        return Err(invalid(format!("fd {fd} is not a socket")));
    }
    let kind = socket_type(fd).map_err(|error| invalid(format!("fd {fd}: SO_TYPE: {error}")))?;
    if kind != libc::SOCK_STREAM {
        return Err(invalid(format!("fd {fd} is not a stream socket (SO_TYPE {kind})")));
    }
    Ok(())
}

/// Makes `fd` (which must be a stream socket: `InvalidArgument` otherwise) a non-blocking tokio
/// stream. Must run inside the runtime (registration with the reactor). On any error `fd` is
/// closed: it was handed over.
pub(crate) fn adopt_stream_fd(fd: OwnedFd) -> Result<tokio::net::TcpStream, NetswitchError> {
    let raw = fd.as_raw_fd();
    check_stream_socket(raw)?;
    let stream = std::net::TcpStream::from(fd);
    stream.set_nonblocking(true).map_err(|e| NetswitchError::Io {
        context: format!("set fd {raw} non-blocking"),
        reason: e.to_string(),
    })?;
    tokio::net::TcpStream::from_std(stream)
        .map_err(|e| NetswitchError::Io { context: format!("register fd {raw}"), reason: e.to_string() })
}
