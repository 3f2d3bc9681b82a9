//! Batched datagram I/O for the benchmark's own side (echo server, reply counter, paced sender):
//! `recvmmsg` / `sendmmsg`, so the rig spends as little of the machine's CPU as it can and the
//! relays get the rest. Linux only, like the whole benchmark.

use std::io;
use std::os::fd::RawFd;

/// Datagrams per system call at most.
pub const BATCH: usize = 64;
/// Room for one datagram (the benchmark's are at most 1,210 bytes).
const SLOT: usize = 2048;

/// Buffers, addresses and headers for one batch; the headers point into the buffers, which are
/// heap allocations that never move while the `Mmsg` lives.
pub struct Mmsg {
    buffers: Vec<u8>,
    iovecs: Vec<libc::iovec>,
    names: Vec<libc::sockaddr_storage>,
    headers: Vec<libc::mmsghdr>,
}

impl Mmsg {
    /// Empty batch buffers.
    pub fn new() -> Mmsg {
        let mut batch = Mmsg {
            buffers: vec![0; BATCH * SLOT],
            iovecs: Vec::with_capacity(BATCH),
            // SAFETY: sockaddr_storage and mmsghdr are plain C structs; all zeroes is valid.
            names: (0..BATCH).map(|_| unsafe { std::mem::zeroed() }).collect(),
            headers: (0..BATCH).map(|_| unsafe { std::mem::zeroed() }).collect(),
        };
        for i in 0..BATCH {
            let base = batch.buffers[i * SLOT..].as_mut_ptr();
            batch.iovecs.push(libc::iovec { iov_base: base.cast(), iov_len: SLOT });
        }
        for i in 0..BATCH {
            let header = &mut batch.headers[i].msg_hdr;
            header.msg_iov = &mut batch.iovecs[i];
            header.msg_iovlen = 1;
            header.msg_name = (&mut batch.names[i] as *mut libc::sockaddr_storage).cast();
        }
        batch
    }

    /// Waits for at least one datagram on `fd` (bounded by its SO_RCVTIMEO), then takes every
    /// one already queued, up to [`BATCH`]. Returns how many; [`Mmsg::len`] gives their sizes.
    pub fn recv(&mut self, fd: RawFd) -> io::Result<usize> {
        for i in 0..BATCH {
            self.iovecs[i].iov_len = SLOT;
            self.headers[i].msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as u32;
            self.headers[i].msg_len = 0;
        }
        // SAFETY: every header points at a live iovec, buffer and name of the sizes given.
        let n = unsafe {
            libc::recvmmsg(
                fd,
                self.headers.as_mut_ptr(),
                BATCH as u32,
                libc::MSG_WAITFORONE,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(n as usize)
    }

    /// Size of received datagram `i`.
    pub fn len(&self, i: usize) -> usize {
        self.headers[i].msg_len as usize
    }

    /// Sends the first `n` received datagrams back to where each came from.
    pub fn echo_back(&mut self, fd: RawFd, n: usize) -> io::Result<()> {
        for i in 0..n {
            self.iovecs[i].iov_len = self.headers[i].msg_len as usize;
        }
        self.send_headers(fd, n)
    }

    /// Sends `count` copies of `datagram` on the connected socket `fd`.
    pub fn send_copies(&mut self, fd: RawFd, datagram: &[u8], count: usize) -> io::Result<()> {
        let mut left = count;
        while left > 0 {
            let n = left.min(BATCH);
            for i in 0..n {
                self.buffers[i * SLOT..i * SLOT + datagram.len()].copy_from_slice(datagram);
                self.iovecs[i].iov_len = datagram.len();
                self.headers[i].msg_hdr.msg_namelen = 0;
            }
            self.send_headers(fd, n)?;
            left -= n;
        }
        Ok(())
    }

    fn send_headers(&mut self, fd: RawFd, n: usize) -> io::Result<()> {
        let mut done = 0;
        while done < n {
            // SAFETY: headers[done..n] point at live iovecs, buffers and names.
            let sent = unsafe { libc::sendmmsg(fd, self.headers[done..].as_mut_ptr(), (n - done) as u32, 0) };
            if sent < 0 {
                return Err(io::Error::last_os_error());
            }
            done += sent as usize;
        }
        Ok(())
    }
}
