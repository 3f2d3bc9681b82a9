//! Open-loop loss: datagrams sent at a fixed rate for a fixed time (paced by the clock, what is
//! due every 100 µs in one `sendmmsg`), replies counted on a second thread (`recvmmsg`); loss is
//! what never came back.

use std::io::ErrorKind;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::client::Peer;
use crate::mmsg::Mmsg;

/// What one paced run saw.
pub struct Paced {
    /// Datagrams sent.
    pub sent: u64,
    /// Replies received.
    pub received: u64,
    /// `sendmmsg` batches the kernel refused (their datagrams count as sent and lost).
    pub send_errors: u64,
}

/// Sends `size`-byte payloads at `rate` per second for `duration`, counting replies until
/// 300 ms after the last send.
pub fn paced(peer: &Peer, size: usize, rate: f64, duration: Duration) -> Result<Paced, String> {
    let datagram = peer.datagram(size);
    let receiver = peer.socket.try_clone().map_err(|e| format!("clone the client socket: {e}"))?;
    receiver.set_read_timeout(Some(Duration::from_millis(50))).map_err(|e| format!("SO_RCVTIMEO: {e}"))?;
    let received = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let counter = {
        let (received, done, expected) = (received.clone(), done.clone(), datagram.len());
        std::thread::spawn(move || {
            let mut batch = Mmsg::new();
            let mut quiet_since: Option<Instant> = None;
            loop {
                match batch.recv(receiver.as_raw_fd()) {
                    Ok(n) => {
                        let good = (0..n).filter(|&i| batch.len(i) == expected).count();
                        received.fetch_add(good as u64, Ordering::Relaxed);
                    }
                    Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                    Err(e) => return Err(format!("recv: {e}")),
                }
                if done.load(Ordering::Relaxed) {
                    let since = *quiet_since.get_or_insert_with(Instant::now);
                    if since.elapsed() > Duration::from_millis(300) {
                        return Ok(());
                    }
                }
            }
        })
    };
    let total = (rate * duration.as_secs_f64()) as u64;
    let (mut sent, mut send_errors) = (0u64, 0u64);
    let mut sending = Mmsg::new();
    let started = Instant::now();
    while sent < total {
        let due = ((started.elapsed().as_secs_f64() * rate) as u64).min(total);
        if due > sent {
            if sending.send_copies(peer.socket.as_raw_fd(), &datagram, (due - sent) as usize).is_err() {
                send_errors += 1;
            }
            sent = due;
        }
        std::thread::sleep(Duration::from_micros(100));
    }
    done.store(true, Ordering::Relaxed);
    counter.join().map_err(|_| "reply counter thread panicked".to_string())??;
    Ok(Paced { sent, received: received.load(Ordering::Relaxed), send_errors })
}
