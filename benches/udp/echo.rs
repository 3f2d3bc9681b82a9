//! The UDP echo server every setup ends at: one thread, `recvmmsg` / `sendmmsg` batches, with a
//! 4 MiB receive buffer so that the rig itself drops as little as it can (its own loss shows in
//! the direct column).

use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;

use crate::mmsg::Mmsg;

/// Receive buffer asked for on the benchmark's own sockets (capped by net.core.rmem_max).
pub const RIG_BUFFER: usize = 4 << 20;

/// Starts the echo server on a thread of its own; it runs until the process exits.
pub fn start() -> Result<SocketAddr, String> {
    let socket = UdpSocket::bind("127.0.0.1:0").map_err(|e| format!("echo bind 127.0.0.1:0: {e}"))?;
    let address = socket.local_addr().map_err(|e| format!("echo local_addr: {e}"))?;
    enlarge(&socket)?;
    std::thread::spawn(move || {
        let mut batch = Mmsg::new();
        loop {
            match batch.recv(socket.as_raw_fd()) {
                Ok(n) => {
                    let _ = batch.echo_back(socket.as_raw_fd(), n);
                }
                Err(e) => eprintln!("echo {address}: recvmmsg: {e}"),
            }
        }
    });
    Ok(address)
}

/// Asks for [`RIG_BUFFER`] of receive buffer on one of the benchmark's own sockets.
pub fn enlarge(socket: &UdpSocket) -> Result<(), String> {
    socket2::SockRef::from(socket)
        .set_recv_buffer_size(RIG_BUFFER)
        .map_err(|e| format!("SO_RCVBUF {RIG_BUFFER} on {:?}: {e}", socket.local_addr()))
}
