//! Several UDP datagrams per system call: `sendmmsg(2)` on Linux and Android, one `send`/`sendto`
//! per call elsewhere. Used by a UDP session to send what its client queued in one go.

use std::io;
use std::net::SocketAddr;

use tokio::net::UdpSocket;

use crate::client::Datagram;

/// Most datagrams one call sends.
pub const BATCH: usize = 32;

/// Sends the datagrams of `batch` in order, each to its target (`None`: the connected peer),
/// without waiting: returns how many were sent from the start (at least one), or the error of
/// the first one, which was not sent (`WouldBlock`: the socket's buffer is full and its write
/// readiness is cleared). Sends at most [`BATCH`] per call.
#[cfg(any(target_os = "linux", target_os = "android"))]
pub fn try_send_batch(socket: &UdpSocket, batch: &[(Datagram, Option<SocketAddr>)]) -> io::Result<usize> {
    use std::mem::zeroed;
    use std::os::fd::AsRawFd;

    use socket2::SockAddr;
    use tokio::io::Interest;

    let batch = &batch[..batch.len().min(BATCH)];
    if batch.is_empty() {
        return Ok(0);
    }
    let names: Vec<Option<SockAddr>> = batch.iter().map(|(_, target)| target.map(SockAddr::from)).collect();
    // SAFETY: all-zero is a valid value of these plain C structs.
    let mut vectors: [libc::iovec; BATCH] = unsafe { zeroed() };
    let mut headers: [libc::mmsghdr; BATCH] = unsafe { zeroed() };
    for (i, ((datagram, _), name)) in batch.iter().zip(&names).enumerate() {
        vectors[i] = libc::iovec {
            iov_base: datagram.payload.as_ptr() as *mut libc::c_void,
            iov_len: datagram.payload.len(),
        };
        let header = &mut headers[i].msg_hdr;
        if let Some(name) = name {
            header.msg_name = name.as_ptr() as *mut libc::c_void;
            header.msg_namelen = name.len();
        }
        header.msg_iov = &mut vectors[i];
        header.msg_iovlen = 1;
    }
    socket.try_io(Interest::WRITABLE, || {
        // SAFETY: every header points at a live name (or none) and one iovec over its datagram's
        // payload, all of which outlive the call; the kernel only reads them (and writes
        // msg_len); vlen is the number of headers filled.
        let n = unsafe {
            libc::sendmmsg(
                socket.as_raw_fd(),
                headers.as_mut_ptr(),
                batch.len() as _,
                libc::MSG_DONTWAIT as _,
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(n as usize)
    })
}

/// Sends the first datagram of `batch` (see the Linux version).
#[cfg(not(any(target_os = "linux", target_os = "android")))]
pub fn try_send_batch(socket: &UdpSocket, batch: &[(Datagram, Option<SocketAddr>)]) -> io::Result<usize> {
    let Some((datagram, target)) = batch.first() else { return Ok(0) };
    match target {
        None => socket.try_send(&datagram.payload)?,
        Some(target) => socket.try_send_to(&datagram.payload, *target)?,
    };
    Ok(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn sends_a_batch_in_order_to_each_target() {
        let receivers =
            [UdpSocket::bind("127.0.0.1:0").await.unwrap(), UdpSocket::bind("127.0.0.1:0").await.unwrap()];
        let sender = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let batch: Vec<(Datagram, Option<SocketAddr>)> = (0..BATCH as u8 + 3)
            .map(|i| {
                let to = receivers[usize::from(i % 2)].local_addr().unwrap();
                (Datagram { destination: to.into(), payload: vec![i; usize::from(i) + 1] }, Some(to))
            })
            .collect();
        let (mut sent, mut calls) = (0, 0);
        while sent < batch.len() {
            // (Before the reactor saw the socket writable, it says WouldBlock without a call.)
            sender.writable().await.unwrap();
            match try_send_batch(&sender, &batch[sent..]) {
                Ok(count) => {
                    sent += count;
                    calls += 1;
                }
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => {}
                Err(error) => panic!("{error}"),
            }
        }
        if cfg!(any(target_os = "linux", target_os = "android")) {
            assert_eq!(calls, 2, "{BATCH} datagrams per call, then the rest");
        }
        let mut buf = [0u8; 64];
        for i in 0..BATCH as u8 + 3 {
            let (n, from) = receivers[usize::from(i % 2)].recv_from(&mut buf).await.unwrap();
            assert_eq!((&buf[..n], from), (&vec![i; usize::from(i) + 1][..], sender.local_addr().unwrap()));
        }
        // Connected: no target.
        sender.connect(receivers[0].local_addr().unwrap()).await.unwrap();
        let connected = [(
            Datagram { destination: receivers[0].local_addr().unwrap().into(), payload: b"c".to_vec() },
            None,
        )];
        sender.writable().await.unwrap();
        assert_eq!(try_send_batch(&sender, &connected).unwrap(), 1);
        let (n, _) = receivers[0].recv_from(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], b"c");
        assert_eq!(try_send_batch(&sender, &[]).unwrap(), 0);
    }
}
