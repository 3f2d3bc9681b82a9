//! Taking a connected stream socket the host hands over (`relay_tcp_fd`): a check that leaves a
//! raw fd with its owner on failure, the record of the sockets handed over (so that a host that
//! hands the same descriptor over twice gets an error instead of two owners closing it twice),
//! and the conversion of an owned fd into a tokio stream.

use std::collections::HashMap;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::{Mutex, PoisonError};

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

/// Checks that `fd` is a *connected* stream socket (not a listener, not a socket whose connect
/// has not completed), without taking it.
pub(crate) fn check_connected_stream_socket(fd: RawFd) -> Result<(), NetswitchError> {
    check_stream_socket(fd)?;
    // SAFETY: getpeername writes at most `len` bytes into the storage we own.
    let mut peer: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    if unsafe { libc::getpeername(fd, (&mut peer as *mut libc::sockaddr_storage).cast(), &mut len) } != 0 {
        let error = std::io::Error::last_os_error();
        return Err(invalid(format!("fd {fd} is not connected (getpeername: {error})")));
    }
    Ok(())
}

/// The sockets handed over through the FFI, by descriptor: the socket's device and inode when it
/// was handed over. An entry whose descriptor now names another socket (netswitch closed it, the
/// number was reused) is stale and pruned.
static HANDED: Mutex<Handed> = Mutex::new(Handed { sockets: None, prune_at: PRUNE_FLOOR });

/// Entries kept before the first pruning pass.
const PRUNE_FLOOR: usize = 64;

struct Handed {
    sockets: Option<HashMap<RawFd, (u64, u64)>>,
    /// Prune when this many entries are held (twice the survivors of the last pass).
    prune_at: usize,
}

/// Which socket `fd` names now (device, inode); `None` when it is not open.
pub(super) fn identity(fd: RawFd) -> Option<(u64, u64)> {
    // SAFETY: fstat only writes into the zeroed struct we own; a bad fd yields EBADF.
    let mut stat: libc::stat = unsafe { std::mem::zeroed() };
    (unsafe { libc::fstat(fd, &mut stat) } == 0).then_some((stat.st_dev as u64, stat.st_ino as u64))
}

/// Records that netswitch takes the socket `fd` over. `InvalidArgument` (the caller keeps
/// `fd`) when the same socket was handed over before and netswitch still holds it under this
/// descriptor: two owners would close it twice, the second time closing whatever reused the
/// number.
pub(crate) fn claim_socket(fd: RawFd) -> Result<(), NetswitchError> {
    let now = identity(fd).ok_or_else(|| invalid(format!("fd {fd} is not open")))?;
    let mut handed = HANDED.lock().unwrap_or_else(PoisonError::into_inner);
    let handed = &mut *handed;
    let sockets = handed.sockets.get_or_insert_with(HashMap::new);
    if sockets.get(&fd) == Some(&now) {
        return Err(invalid(format!(
            "fd {fd} was already handed over and netswitch still relays it (hand a descriptor over once)"
        )));
    }
    sockets.insert(fd, now);
    if sockets.len() >= handed.prune_at {
        sockets.retain(|&fd, socket| identity(fd) == Some(*socket));
        handed.prune_at = (sockets.len() * 2).max(PRUNE_FLOOR);
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
