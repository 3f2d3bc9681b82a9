//! Several UDP datagrams per system call: on Linux and Android, a run of datagrams to one target
//! with one size (the last may be shorter) goes as one segmented send (`UDP_SEGMENT`, GSO: one
//! trip through the IP stack, split by the kernel as late as it can), anything else with
//! `sendmmsg(2)`; one `send`/`sendto` per call elsewhere. Segmented sends are used only where
//! the kernel says it has them (`getsockopt(UDP_SEGMENT)`, asked once: a kernel before 4.18
//! ignores the control message and would send the run as one datagram); where the kernel or the
//! device refuses them, they are not tried again. A run whose segments are too large for the
//! path (over the link's MTU: `EMSGSIZE`, `EINVAL` on older kernels) goes by `sendmmsg`, where
//! the kernel fragments each datagram as a single send would. Used by a UDP session to send
//! what its client queued in one go.

use std::io;
use std::net::SocketAddr;

use tokio::net::UdpSocket;

use crate::client::Datagram;

/// Most datagrams one call sends.
pub const BATCH: usize = 32;

/// Set once the kernel refused a segmented send: `sendmmsg` only from then on.
#[cfg(any(target_os = "linux", target_os = "android"))]
static NO_GSO: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Whether the kernel knows segmented sends, asked once on the first socket that could use one.
#[cfg(any(target_os = "linux", target_os = "android"))]
static HAS_GSO: std::sync::OnceLock<bool> = std::sync::OnceLock::new();

/// True when `getsockopt(SOL_UDP, UDP_SEGMENT)` works on `socket` (Linux 4.18+).
#[cfg(any(target_os = "linux", target_os = "android"))]
fn kernel_has_gso(socket: &UdpSocket) -> bool {
    use std::os::fd::AsRawFd;

    let mut value: libc::c_int = 0;
    let mut length = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: value and length are live and sized for the int the option reads back.
    let result = unsafe {
        libc::getsockopt(
            socket.as_raw_fd(),
            libc::SOL_UDP,
            libc::UDP_SEGMENT,
            (&mut value as *mut libc::c_int).cast(),
            &mut length,
        )
    };
    if result != 0 {
        let error = io::Error::last_os_error();
        tracing::debug!(%error, "no segmented UDP sends on this kernel: sendmmsg only");
    }
    result == 0
}

/// How many datagrams from the start of `batch` can go as one segmented send: same target, same
/// size (the last may be shorter but not empty: an empty segment would vanish in the split), at
/// most 65,507 bytes in all.
#[cfg(any(target_os = "linux", target_os = "android"))]
fn segment_run(batch: &[(Datagram, Option<SocketAddr>)]) -> usize {
    let Some((first, target)) = batch.first() else { return 0 };
    let size = first.payload.len();
    if size == 0 {
        return 1;
    }
    let mut total = 0;
    let mut run = 0;
    for (datagram, to) in batch {
        let len = datagram.payload.len();
        if to != target || len > size || len == 0 || total + len > 65_507 {
            break;
        }
        total += len;
        run += 1;
        if len < size {
            break; // a shorter one ends the run
        }
    }
    run
}

/// Sends the first `run` datagrams of `batch` as one segmented send (see the module docs).
#[cfg(any(target_os = "linux", target_os = "android"))]
fn try_send_segmented(
    socket: &UdpSocket,
    batch: &[(Datagram, Option<SocketAddr>)],
    run: usize,
) -> io::Result<usize> {
    use std::mem::{size_of, zeroed};
    use std::os::fd::AsRawFd;

    use socket2::SockAddr;
    use tokio::io::Interest;

    let name = batch[0].1.map(SockAddr::from);
    // SAFETY: all-zero is a valid value of these plain C structs.
    let mut vectors: [libc::iovec; BATCH] = unsafe { zeroed() };
    for (vector, (datagram, _)) in vectors.iter_mut().zip(&batch[..run]) {
        *vector = libc::iovec {
            iov_base: datagram.payload.as_ptr() as *mut libc::c_void,
            iov_len: datagram.payload.len(),
        };
    }
    let segment = batch[0].0.payload.len() as u16;
    // Room for one control message with a u16, aligned like a cmsghdr.
    let mut control = [0u64; 4];
    // SAFETY: as above.
    let mut header: libc::msghdr = unsafe { zeroed() };
    if let Some(name) = &name {
        header.msg_name = name.as_ptr() as *mut libc::c_void;
        header.msg_namelen = name.len();
    }
    header.msg_iov = vectors.as_mut_ptr();
    header.msg_iovlen = run as _;
    header.msg_control = control.as_mut_ptr().cast();
    // SAFETY: CMSG_SPACE only computes a size.
    header.msg_controllen = unsafe { libc::CMSG_SPACE(size_of::<u16>() as u32) } as _;
    // SAFETY: the control buffer is 32 bytes, more than CMSG_SPACE(2), and aligned for cmsghdr;
    // CMSG_FIRSTHDR points into it and CMSG_DATA at its data, where a u16 fits.
    unsafe {
        let message = libc::CMSG_FIRSTHDR(&header);
        (*message).cmsg_level = libc::SOL_UDP;
        (*message).cmsg_type = libc::UDP_SEGMENT;
        (*message).cmsg_len = libc::CMSG_LEN(size_of::<u16>() as u32) as _;
        std::ptr::write_unaligned(libc::CMSG_DATA(message).cast::<u16>(), segment);
    }
    socket.try_io(Interest::WRITABLE, || {
        // SAFETY: the header points at a live name (or none), `run` iovecs over live payloads
        // and the control buffer, all of which outlive the call; the kernel only reads them.
        let n = unsafe { libc::sendmsg(socket.as_raw_fd(), &header, libc::MSG_DONTWAIT) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(run)
    })
}

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

    use std::sync::atomic::Ordering;

    let batch = &batch[..batch.len().min(BATCH)];
    if batch.is_empty() {
        return Ok(0);
    }
    let run = segment_run(batch);
    if run > 1 && !NO_GSO.load(Ordering::Relaxed) && *HAS_GSO.get_or_init(|| kernel_has_gso(socket)) {
        match try_send_segmented(socket, batch, run) {
            Ok(sent) => return Ok(sent),
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => return Err(error),
            // Segments too large for the path: the same datagrams one by one below, each
            // fragmented by the kernel as a single send would be.
            Err(error) if matches!(error.raw_os_error(), Some(libc::EMSGSIZE | libc::EINVAL)) => {}
            // Refused (a device without it, a protocol that cannot): one by one from now on.
            Err(error)
                if matches!(error.raw_os_error(), Some(libc::EIO | libc::ENOPROTOOPT | libc::EOPNOTSUPP)) =>
            {
                tracing::debug!(%error, "segmented UDP sends refused: sendmmsg from now on");
                NO_GSO.store(true, Ordering::Relaxed);
            }
            Err(error) => return Err(error),
        }
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
        // A run of one size to one target (one segmented send where the kernel has it): every
        // datagram arrives whole and in order, the shorter last one too.
        let to = receivers[0].local_addr().unwrap();
        let run: Vec<(Datagram, Option<SocketAddr>)> = (0..20u8)
            .map(|i| {
                (
                    Datagram { destination: to.into(), payload: vec![i; if i == 19 { 7 } else { 1200 }] },
                    Some(to),
                )
            })
            .collect();
        #[cfg(any(target_os = "linux", target_os = "android"))]
        {
            assert_eq!(segment_run(&run), 20);
            let mut mixed = run.clone();
            mixed[5].1 = Some(receivers[1].local_addr().unwrap());
            assert_eq!(segment_run(&mixed), 5, "a run ends at another target");
            mixed[3].0.payload.truncate(10);
            assert_eq!(segment_run(&mixed), 4, "and after a shorter datagram");
            mixed[1].0.payload.push(0);
            assert_eq!(segment_run(&mixed), 1, "and before a longer one");
            let mut empty_last = run.clone();
            empty_last[2].0.payload.clear();
            assert_eq!(segment_run(&empty_last), 2, "an empty datagram is not a segment");
        }
        let mut sent = 0;
        while sent < run.len() {
            sender.writable().await.unwrap();
            match try_send_batch(&sender, &run[sent..]) {
                Ok(count) => sent += count,
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => {}
                Err(error) => panic!("{error}"),
            }
        }
        let mut big = [0u8; 2048];
        for i in 0..20u8 {
            let (n, _) = receivers[0].recv_from(&mut big).await.unwrap();
            assert_eq!(&big[..n], &run[usize::from(i)].0.payload[..], "datagram {i}");
        }
        #[cfg(target_os = "linux")]
        {
            assert!(!NO_GSO.load(std::sync::atomic::Ordering::Relaxed), "Linux 4.18+ sends segmented");
            assert!(kernel_has_gso(&sender), "and says so");
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
