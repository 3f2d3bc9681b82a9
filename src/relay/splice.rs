//! Zero-copy relaying for bulk flows on Linux and Android: `splice(2)` moves bytes from the
//! source socket into a pipe and from the pipe into the destination socket without copying them
//! through user space. A direction switches to it only after it has moved
//! [`super::pool::GROW_AFTER`] bytes, so short and idle connections never hold a pipe.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// The most one splice call moves (the pipe's capacity bounds it further).
pub const CHUNK: usize = 1024 * 1024;

/// A non-blocking pipe and how many bytes sit in it.
#[derive(Debug)]
pub struct Pipe {
    read: OwnedFd,
    write: OwnedFd,
    /// Bytes spliced in and not yet spliced out.
    pub held: usize,
}

impl Pipe {
    /// A new non-blocking, close-on-exec pipe.
    pub fn new() -> io::Result<Pipe> {
        let mut fds = [0 as libc::c_int; 2];
        // SAFETY: `fds` is a valid array of two ints for pipe2 to fill.
        let result = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) };
        if result != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: pipe2 succeeded, so both descriptors are open and owned by nobody else.
        let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        Ok(Pipe { read, write, held: 0 })
    }

    /// Moves up to [`CHUNK`] bytes from `socket` into the pipe. `Ok(0)` is end of file;
    /// `WouldBlock` means the socket has nothing to read.
    pub fn fill_from(&mut self, socket: RawFd) -> io::Result<usize> {
        let n = splice(socket, self.write.as_raw_fd(), CHUNK)?;
        self.held += n;
        Ok(n)
    }

    /// Moves what the pipe holds into `socket`; returns how many bytes went. `WouldBlock` means
    /// the socket is full.
    pub fn drain_into(&mut self, socket: RawFd) -> io::Result<usize> {
        let n = splice(self.read.as_raw_fd(), socket, self.held)?;
        self.held -= n;
        Ok(n)
    }
}

fn splice(from: RawFd, to: RawFd, len: usize) -> io::Result<usize> {
    let flags = libc::SPLICE_F_MOVE | libc::SPLICE_F_NONBLOCK;
    // SAFETY: plain descriptors and null offsets (both ends are sockets or pipes).
    let n = unsafe { libc::splice(from, std::ptr::null_mut(), to, std::ptr::null_mut(), len, flags) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n as usize)
}
