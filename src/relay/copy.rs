//! One copy direction between two TCP sockets, driven by readiness.
//!
//! The direction waits until its source is readable, borrows a pooled buffer, reads once, writes
//! everything it read (waiting for the destination when it is full: backpressure), and gives the
//! buffer back. End of file on the source becomes `shutdown(Write)` on the destination socket
//! itself, so a half-close reaches the real peer.
//!
//! On Linux and Android a direction that has moved more than `pool::GROW_AFTER` bytes switches
//! to `splice(2)` through a pipe of its own (see `splice.rs`): bulk bytes then never cross user
//! space. A pipe holds at most its capacity, so backpressure is unchanged.

use std::io;
use std::net::Shutdown;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{ready, Context, Poll};

use tokio::net::TcpStream;

use super::pool;

/// Which socket of a direction an error came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failed {
    /// Reading from the source failed.
    Read,
    /// Writing to (or shutting down) the destination failed.
    Write,
}

enum State {
    Reading,
    Writing {
        buffer: pool::Buffer,
        start: usize,
        end: usize,
    },
    /// Bulk flow on Linux/Android: bytes go socket → pipe → socket with `splice(2)`.
    #[cfg(any(target_os = "linux", target_os = "android"))]
    Splicing(super::splice::Pipe),
    Done,
}

/// The state of one direction. Poll it with [`Direction::poll_copy`] until it is ready.
pub struct Direction {
    state: State,
    transferred: u64,
    /// False once a pipe could not be made (e.g. out of descriptors): stay on buffers.
    #[cfg(any(target_os = "linux", target_os = "android"))]
    may_splice: bool,
}

impl Default for Direction {
    fn default() -> Self {
        Direction {
            state: State::Reading,
            transferred: 0,
            #[cfg(any(target_os = "linux", target_os = "android"))]
            may_splice: true,
        }
    }
}

impl Direction {
    /// Bytes written to the destination so far.
    pub fn transferred(&self) -> u64 {
        self.transferred
    }

    /// True once the source reached end of file and the destination was shut down for writing.
    pub fn is_done(&self) -> bool {
        matches!(self.state, State::Done)
    }

    /// Copies from `source` to `destination` until the source ends (then shuts the destination
    /// down for writing and returns `Ok`) or an error occurs. Adds every written byte to `counter`.
    pub fn poll_copy(
        &mut self,
        cx: &mut Context<'_>,
        source: &TcpStream,
        destination: &TcpStream,
        counter: &AtomicU64,
    ) -> Poll<Result<(), (Failed, io::Error)>> {
        loop {
            match &mut self.state {
                State::Done => return Poll::Ready(Ok(())),
                State::Reading => {
                    #[cfg(any(target_os = "linux", target_os = "android"))]
                    if self.may_splice && self.transferred >= pool::GROW_AFTER {
                        match super::splice::Pipe::new() {
                            Ok(pipe) => {
                                self.state = State::Splicing(pipe);
                                continue;
                            }
                            Err(error) => {
                                tracing::debug!(%error, "no pipe for splice: staying on buffered copy");
                                self.may_splice = false;
                            }
                        }
                    }
                    ready!(source.poll_read_ready(cx)).map_err(|e| (Failed::Read, e))?;
                    let mut buffer = pool::take(self.transferred);
                    match source.try_read(&mut buffer) {
                        Ok(0) => {
                            pool::give(buffer);
                            self.state = State::Done;
                            let shut = socket2::SockRef::from(destination).shutdown(Shutdown::Write);
                            return Poll::Ready(shut.map_err(|e| (Failed::Write, e)));
                        }
                        Ok(end) => self.state = State::Writing { buffer, start: 0, end },
                        Err(e) if is_retry(&e) => pool::give(buffer),
                        Err(e) => {
                            pool::give(buffer);
                            return Poll::Ready(Err((Failed::Read, e)));
                        }
                    }
                }
                #[cfg(any(target_os = "linux", target_os = "android"))]
                State::Splicing(pipe) => {
                    use std::os::fd::AsRawFd;
                    use tokio::io::Interest;
                    if pipe.held == 0 {
                        ready!(source.poll_read_ready(cx)).map_err(|e| (Failed::Read, e))?;
                        match source.try_io(Interest::READABLE, || pipe.fill_from(source.as_raw_fd())) {
                            Ok(0) => {
                                self.state = State::Done;
                                let shut = socket2::SockRef::from(destination).shutdown(Shutdown::Write);
                                return Poll::Ready(shut.map_err(|e| (Failed::Write, e)));
                            }
                            Ok(_) => {}
                            Err(e) if is_retry(&e) => {}
                            Err(e) => return Poll::Ready(Err((Failed::Read, e))),
                        }
                    } else {
                        ready!(destination.poll_write_ready(cx)).map_err(|e| (Failed::Write, e))?;
                        match destination
                            .try_io(Interest::WRITABLE, || pipe.drain_into(destination.as_raw_fd()))
                        {
                            Ok(written) => {
                                self.transferred += written as u64;
                                counter.fetch_add(written as u64, Ordering::Relaxed);
                            }
                            Err(e) if is_retry(&e) => {}
                            Err(e) => return Poll::Ready(Err((Failed::Write, e))),
                        }
                    }
                }
                State::Writing { buffer, start, end } => {
                    ready!(destination.poll_write_ready(cx)).map_err(|e| (Failed::Write, e))?;
                    match destination.try_write(&buffer[*start..*end]) {
                        Ok(written) => {
                            *start += written;
                            self.transferred += written as u64;
                            counter.fetch_add(written as u64, Ordering::Relaxed);
                            if *start == *end {
                                if let State::Writing { buffer, .. } =
                                    std::mem::replace(&mut self.state, State::Reading)
                                {
                                    pool::give(buffer);
                                }
                            }
                        }
                        Err(e) if is_retry(&e) => {}
                        Err(e) => return Poll::Ready(Err((Failed::Write, e))),
                    }
                }
            }
        }
    }
}

fn is_retry(error: &io::Error) -> bool {
    matches!(error.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted)
}

impl Drop for Direction {
    fn drop(&mut self) {
        if let State::Writing { buffer, .. } = std::mem::replace(&mut self.state, State::Done) {
            pool::give(buffer);
        }
    }
}
