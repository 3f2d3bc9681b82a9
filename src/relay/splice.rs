//! Zero-copy relaying for bulk flows on Linux and Android: `splice(2)` moves bytes from the
//! source socket into a pipe and from the pipe into the destination socket without copying them
//! through user space. A direction switches to it only after it has moved
//! [`super::pool::GROW_AFTER`] bytes, so short connections never hold a pipe.
//!
//! A pipe is held only while bytes are in flight, like a relay buffer: a direction takes one when
//! its source is readable and gives it back, empty, when the source has nothing more to read
//! (the moment it goes back to waiting for readability). Given-back pipes wait in a small pool per
//! thread ([`KEPT_PIPES`]), so a bulk flow that pauses and resumes many times a second costs no
//! system call for it, and an idle connection after a bulk transfer holds no pipe (no descriptor,
//! no kernel pipe buffer). A pipe that still holds bytes (the destination is full) stays with its
//! direction until they are written: that is backpressure, bounded by the pipe's capacity.

use std::cell::RefCell;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use crate::socket::stream::StreamSocket;

/// The most one splice call moves (the pipe's capacity bounds it further).
pub const CHUNK: usize = 1024 * 1024;
/// The capacity asked for each pipe (`F_SETPIPE_SZ`; the kernel default is 64 KiB, and 1 MiB is
/// the default `/proc/sys/fs/pipe-max-size` an unprivileged process may ask for). Pages are only
/// used while bytes are in flight.
pub const PIPE_SIZE: usize = 1024 * 1024;
/// How many empty pipes one thread keeps for the next bulk direction that becomes readable.
pub const KEPT_PIPES: usize = 4;

thread_local! {
    static IDLE_PIPES: RefCell<Vec<Pipe>> = const { RefCell::new(Vec::new()) };
}

/// The kernel descriptors of `source` and `destination` when both have one: only then can a
/// direction splice.
pub(crate) fn fds<R, W>(source: &R, destination: &W) -> Option<(RawFd, RawFd)>
where
    R: StreamSocket + ?Sized,
    W: StreamSocket + ?Sized,
{
    Some((source.splice_fd()?, destination.splice_fd()?))
}

/// An empty pipe: one this thread kept, or a new one.
pub fn take() -> io::Result<Pipe> {
    match IDLE_PIPES.try_with(|kept| kept.borrow_mut().pop()) {
        Ok(Some(pipe)) => Ok(pipe),
        _ => Pipe::new(),
    }
}

/// Gives a pipe back: kept for reuse when it is empty and this thread keeps fewer than
/// [`KEPT_PIPES`]; closed otherwise.
pub fn give(pipe: Pipe) {
    if pipe.held != 0 {
        return;
    }
    let _ = IDLE_PIPES.try_with(|kept| {
        let mut kept = kept.borrow_mut();
        if kept.len() < KEPT_PIPES {
            kept.push(pipe);
        }
    });
}

/// How many empty pipes this thread keeps.
#[cfg(test)]
pub fn kept() -> usize {
    IDLE_PIPES.with(|kept| kept.borrow().len())
}

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
        // A larger pipe moves more per splice call. Refused (an older kernel, a lower
        // pipe-max-size, the user's pipe quota) it keeps the default 64 KiB and works the same.
        // SAFETY: fcntl on a descriptor this function owns; F_SETPIPE_SZ only resizes the buffer.
        unsafe { libc::fcntl(write.as_raw_fd(), libc::F_SETPIPE_SZ, PIPE_SIZE as libc::c_int) };
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_pipe_asks_for_the_larger_capacity() {
        let allowed = std::fs::read_to_string("/proc/sys/fs/pipe-max-size")
            .ok()
            .and_then(|text| text.trim().parse::<usize>().ok());
        if allowed.is_none_or(|max| max < PIPE_SIZE) {
            println!("skipped: /proc/sys/fs/pipe-max-size is {allowed:?}, below {PIPE_SIZE}");
            return;
        }
        let pipe = Pipe::new().unwrap();
        // SAFETY: F_GETPIPE_SZ on a pipe descriptor the test owns.
        let size = unsafe { libc::fcntl(pipe.write.as_raw_fd(), libc::F_GETPIPE_SZ) };
        assert_eq!(size, PIPE_SIZE as libc::c_int);
    }
}
