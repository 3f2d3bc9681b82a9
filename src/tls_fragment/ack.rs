//! Waiting until the peer has acknowledged everything written on a TCP socket.
//!
//! - Linux and Android: `TCP_INFO`'s `tcpi_unacked` (segments sent but not acknowledged)
//!   reaches 0.
//! - Apple platforms: `SO_NWRITE` (bytes in the send buffer, i.e. not yet acknowledged)
//!   reaches 0.
//! - Elsewhere: no way to know; sleep the fallback delay.
//!
//! The poll runs every [`POLL_INTERVAL`] and is bounded by the fallback delay, so a peer that
//! never acknowledges only costs that delay. A failing `getsockopt` ends the wait early (the
//! next write will report a real socket error if there is one).

use std::time::Duration;

use tokio::net::TcpStream;
use tokio::time::Instant;

/// How often the unacknowledged count is checked.
pub const POLL_INTERVAL: Duration = Duration::from_millis(2);

/// Waits until the peer acknowledged everything written on `stream`, or `limit` passed.
/// Returns true when the acknowledgement was seen, false on timeout or when it cannot be
/// observed on this platform.
pub async fn wait_for_ack(stream: &TcpStream, limit: Duration) -> bool {
    let deadline = crate::deadline::from_now(limit);
    loop {
        match unacknowledged(stream) {
            Some(0) => return true,
            Some(_) => {}
            None if cfg!(any(target_os = "linux", target_os = "android", target_vendor = "apple")) => {
                return false
            }
            None => {
                tokio::time::sleep_until(deadline).await;
                return false;
            }
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(POLL_INTERVAL.min(deadline - Instant::now())).await;
    }
}

/// The leading fields of Linux's `struct tcp_info` (include/uapi/linux/tcp.h, a stable kernel
/// ABI, identical on Android): eight one-byte fields (two of them bitfield bytes), then `u32`s.
/// The kernel copies at most the length passed in, so a prefix is a valid buffer.
#[cfg(any(target_os = "linux", target_os = "android"))]
#[repr(C)]
#[derive(Default)]
#[allow(dead_code)] // the fields before `unacked` only give it its offset
struct TcpInfoPrefix {
    state: u8,
    ca_state: u8,
    retransmits: u8,
    probes: u8,
    backoff: u8,
    options: u8,
    wscale: u8,
    app_limited: u8,
    rto: u32,
    ato: u32,
    snd_mss: u32,
    rcv_mss: u32,
    unacked: u32,
}

/// Segments (Linux) sent and not yet acknowledged, `None` if the kernel would not say.
#[cfg(any(target_os = "linux", target_os = "android"))]
fn unacknowledged(stream: &TcpStream) -> Option<u64> {
    use std::os::fd::AsRawFd;
    let mut info = TcpInfoPrefix::default();
    let mut len = std::mem::size_of::<TcpInfoPrefix>() as libc::socklen_t;
    // SAFETY: `info` is a plain repr(C) struct of `len` bytes that lives across the call; the
    // kernel writes at most `len` bytes into it and stores the written length in `len`.
    let rc = unsafe {
        libc::getsockopt(
            stream.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&mut info as *mut TcpInfoPrefix).cast(),
            &mut len,
        )
    };
    let complete = len as usize >= std::mem::size_of::<TcpInfoPrefix>();
    (rc == 0 && complete).then_some(u64::from(info.unacked))
}

/// Bytes (Apple) in the send buffer, i.e. not yet acknowledged, `None` if the kernel would not
/// say.
#[cfg(target_vendor = "apple")]
fn unacknowledged(stream: &TcpStream) -> Option<u64> {
    use std::os::fd::AsRawFd;
    let mut pending: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `pending` is a c_int that lives across the call and `len` is its size.
    let rc = unsafe {
        libc::getsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_NWRITE,
            (&mut pending as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    (rc == 0).then(|| u64::try_from(pending).unwrap_or(0))
}

/// No way to observe acknowledgements here.
#[cfg(not(any(target_os = "linux", target_os = "android", target_vendor = "apple")))]
fn unacknowledged(_stream: &TcpStream) -> Option<u64> {
    None
}
