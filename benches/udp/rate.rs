//! Closed-loop echo rate: a window of datagrams in flight; as replies arrive (taken in batches)
//! as many new ones are sent. A window that gets no reply for 200 ms is counted lost and sent
//! anew.

use std::io::ErrorKind;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use crate::client::Peer;
use crate::mmsg::Mmsg;

/// Datagrams in flight.
pub const WINDOW: u32 = 32;
const LOST_AFTER: Duration = Duration::from_millis(200);

/// Echo round trips per second and datagrams lost, for `count` datagrams with `size` payload
/// bytes.
pub fn echo_rate(peer: &Peer, size: usize, count: u32) -> Result<(f64, u32), String> {
    let datagram = peer.datagram(size);
    let fd = peer.socket.as_raw_fd();
    peer.socket.set_read_timeout(Some(LOST_AFTER)).map_err(|e| format!("SO_RCVTIMEO: {e}"))?;
    let mut batch = Mmsg::new();
    let mut sending = Mmsg::new();
    let (mut sent, mut received, mut lost, mut in_flight) = (0u32, 0u32, 0u32, 0u32);
    let started = Instant::now();
    while received + lost < count {
        let more = (WINDOW - in_flight).min(count - sent);
        if more > 0 {
            sending
                .send_copies(fd, &datagram, more as usize)
                .map_err(|e| format!("send to {}: {e}", peer.target))?;
            sent += more;
            in_flight += more;
        }
        match batch.recv(fd) {
            Ok(n) => {
                for i in 0..n {
                    if batch.len(i) != datagram.len() {
                        return Err(format!(
                            "reply of {} bytes from {}, expected {}",
                            batch.len(i),
                            peer.target,
                            datagram.len()
                        ));
                    }
                }
                received += n as u32;
                in_flight = in_flight.saturating_sub(n as u32);
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                lost += in_flight;
                in_flight = 0;
            }
            Err(e) => return Err(format!("recv from {}: {e}", peer.target)),
        }
    }
    drain(peer);
    Ok((f64::from(received) / started.elapsed().as_secs_f64(), lost))
}

/// Reads whatever late replies are still queued, so the next measurement starts empty.
pub fn drain(peer: &Peer) {
    let mut buffer = vec![0u8; 65_536];
    let _ = peer.socket.set_read_timeout(Some(Duration::from_millis(20)));
    while peer.socket.recv(&mut buffer).is_ok() {}
}
