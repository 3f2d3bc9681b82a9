//! Several UDP datagrams per system call: `recvmmsg(2)` on Linux and Android, one
//! `recvfrom` per call elsewhere.
//!
//! A batch buffer has [`SLOTS`] slots of [`SLOT`] bytes, each large enough for any UDP datagram,
//! so nothing is ever truncated. Only the bytes the kernel writes are touched, so a slot costs
//! resident memory only up to the largest datagram it held. Like the relay buffers, a batch
//! buffer is borrowed only while datagrams are read and handed on, and each thread keeps at most
//! [`KEPT`] of them.

use std::cell::RefCell;
use std::io;
use std::net::SocketAddr;

use tokio::net::UdpSocket;

/// Datagrams one call can return.
pub const SLOTS: usize = 8;
/// Bytes per slot: the largest UDP payload (65,535) fits.
pub const SLOT: usize = 64 * 1024;
/// Batch buffers one thread keeps for reuse.
pub const KEPT: usize = 2;

thread_local! {
    static BUFFERS: RefCell<Vec<Box<[u8]>>> = const { RefCell::new(Vec::new()) };
}

/// A borrowed batch buffer and what the last [`Batch::receive`] put in it.
pub struct Batch {
    buffer: Box<[u8]>,
    received: [(usize, Option<SocketAddr>); SLOTS],
    count: usize,
}

impl Batch {
    /// Borrows a batch buffer from this thread (or makes one). Give it back by dropping it.
    pub fn take() -> Batch {
        let buffer = BUFFERS
            .try_with(|kept| kept.borrow_mut().pop())
            .ok()
            .flatten()
            .unwrap_or_else(|| vec![0u8; SLOTS * SLOT].into_boxed_slice());
        Batch { buffer, received: [(0, None); SLOTS], count: 0 }
    }

    /// Receives the datagrams waiting on `socket`, up to [`SLOTS`], in one call; returns how
    /// many. `WouldBlock` (the socket's readiness cleared) when none is waiting; any other error
    /// is the socket's, as `recvfrom` would report it.
    pub fn receive(&mut self, socket: &UdpSocket) -> io::Result<usize> {
        self.count = 0;
        self.count = receive(socket, &mut self.buffer, &mut self.received)?;
        Ok(self.count)
    }

    /// The `index`th datagram of the last receive and its source (`None` for a source that is
    /// neither IPv4 nor IPv6, which a UDP socket does not report).
    pub fn get(&self, index: usize) -> (&[u8], Option<SocketAddr>) {
        let (length, source) = self.received[index];
        let start = index * SLOT;
        (&self.buffer[start..start + length], source)
    }
}

impl Drop for Batch {
    fn drop(&mut self) {
        let buffer = std::mem::take(&mut self.buffer);
        let _ = BUFFERS.try_with(|kept| {
            let mut kept = kept.borrow_mut();
            if kept.len() < KEPT {
                kept.push(buffer);
            }
        });
    }
}

#[cfg(any(target_os = "linux", target_os = "android"))]
fn receive(
    socket: &UdpSocket,
    buffer: &mut [u8],
    received: &mut [(usize, Option<SocketAddr>); SLOTS],
) -> io::Result<usize> {
    use std::mem::{size_of, zeroed};
    use std::os::fd::AsRawFd;

    use tokio::io::Interest;

    // SAFETY: all-zero is a valid value of these plain C structs.
    let mut names: [libc::sockaddr_storage; SLOTS] = unsafe { zeroed() };
    let mut vectors: [libc::iovec; SLOTS] = unsafe { zeroed() };
    let mut headers: [libc::mmsghdr; SLOTS] = unsafe { zeroed() };
    for (i, slot) in buffer.chunks_exact_mut(SLOT).take(SLOTS).enumerate() {
        vectors[i] = libc::iovec { iov_base: slot.as_mut_ptr().cast(), iov_len: SLOT };
        let header = &mut headers[i].msg_hdr;
        header.msg_name = (&mut names[i] as *mut libc::sockaddr_storage).cast();
        header.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        header.msg_iov = &mut vectors[i];
        header.msg_iovlen = 1;
    }
    let count = socket.try_io(Interest::READABLE, || {
        // SAFETY: every header points at a live name and one iovec over its own SLOT bytes of
        // `buffer`, all of which outlive the call; vlen is the number of headers.
        let n = unsafe {
            libc::recvmmsg(
                socket.as_raw_fd(),
                headers.as_mut_ptr(),
                SLOTS as _,
                libc::MSG_DONTWAIT as _,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(n as usize)
    })?;
    for i in 0..count {
        received[i] = (headers[i].msg_len as usize, socket_address(&names[i]));
    }
    Ok(count)
}

/// The IPv4 or IPv6 address in `name`.
#[cfg(any(target_os = "linux", target_os = "android"))]
fn socket_address(name: &libc::sockaddr_storage) -> Option<SocketAddr> {
    use std::net::{Ipv4Addr, Ipv6Addr, SocketAddrV4, SocketAddrV6};
    match name.ss_family as libc::c_int {
        libc::AF_INET => {
            // SAFETY: the family says the storage holds a sockaddr_in, which it is large enough for.
            let v4 = unsafe { &*(name as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            let ip = Ipv4Addr::from(u32::from_be(v4.sin_addr.s_addr));
            Some(SocketAddr::V4(SocketAddrV4::new(ip, u16::from_be(v4.sin_port))))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says the storage holds a sockaddr_in6, which it is large enough for.
            let v6 = unsafe { &*(name as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
            let ip = Ipv6Addr::from(v6.sin6_addr.s6_addr);
            let port = u16::from_be(v6.sin6_port);
            Some(SocketAddr::V6(SocketAddrV6::new(ip, port, v6.sin6_flowinfo, v6.sin6_scope_id)))
        }
        _ => None,
    }
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn receive(
    socket: &UdpSocket,
    buffer: &mut [u8],
    received: &mut [(usize, Option<SocketAddr>); SLOTS],
) -> io::Result<usize> {
    let (length, source) = socket.try_recv_from(&mut buffer[..SLOT])?;
    received[0] = (length, Some(source));
    Ok(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn receives_several_datagrams_whole_with_their_sources() {
        let receiver = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let to = receiver.local_addr().unwrap();
        let senders =
            [UdpSocket::bind("127.0.0.1:0").await.unwrap(), UdpSocket::bind("127.0.0.1:0").await.unwrap()];
        let mut batch = Batch::take();
        assert_eq!(batch.receive(&receiver).unwrap_err().kind(), io::ErrorKind::WouldBlock);
        // The largest datagram loopback carries, and small ones from two sources.
        let large = vec![7u8; 65_507];
        senders[0].send_to(&large, to).await.unwrap();
        for i in 0..SLOTS + 2 {
            senders[i % 2].send_to(&[i as u8; 3], to).await.unwrap();
        }
        let mut seen = Vec::new();
        let mut calls = 0;
        while seen.len() < SLOTS + 3 {
            receiver.readable().await.unwrap();
            match batch.receive(&receiver) {
                Ok(n) => {
                    calls += 1;
                    for i in 0..n {
                        let (bytes, source) = batch.get(i);
                        seen.push((bytes.to_vec(), source.unwrap()));
                    }
                }
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => {}
                Err(error) => panic!("{error}"),
            }
        }
        if cfg!(any(target_os = "linux", target_os = "android")) {
            // Everything was queued before the first call: full batches.
            assert_eq!(calls, (SLOTS + 3).div_ceil(SLOTS), "recvmmsg returned fewer than it could");
        }
        assert_eq!(seen[0], (large, senders[0].local_addr().unwrap()));
        for i in 0..SLOTS + 2 {
            assert_eq!(seen[i + 1], (vec![i as u8; 3], senders[i % 2].local_addr().unwrap()));
        }
    }
}
