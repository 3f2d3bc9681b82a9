//! One copy direction between two streams, driven by readiness.
//!
//! The direction waits until its source is readable, borrows a pooled buffer, reads once, writes
//! everything it read (waiting for the destination when it is full: backpressure), and gives the
//! buffer back. End of file on the source becomes `shutdown(Write)` on the destination stream
//! itself, so a half-close reaches the real peer. The streams are anything that implements the
//! crate's [`StreamSocket`] contract (a kernel TCP socket, the client's [`crate::ClientStream`]).
//!
//! On Linux and Android, when both streams are kernel sockets, a direction that has moved more
//! than `pool::GROW_AFTER` bytes switches to `splice(2)` through a pipe (see `splice.rs`): bulk
//! bytes then never cross user space. A pipe holds at most its capacity, so backpressure is
//! unchanged. Like a buffer, the pipe is only held while bytes are in flight: when the source has
//! nothing to read and the pipe is empty, it goes back to the thread's pipe pool, so a connection
//! that went quiet after a bulk transfer holds no pipe.

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{ready, Context, Poll};

use super::pool;
use crate::socket::io::is_retry;
use crate::socket::stream::StreamSocket;

/// Which stream of a direction an error came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failed {
    /// Reading from the source failed.
    Read,
    /// Writing to (or shutting down) the destination failed.
    Write,
}

enum State {
    Reading,
    /// `start..end` of `buffer` is still to be written. 32-bit offsets (a buffer holds at most
    /// `pool::LARGE` bytes): every idle connection holds two directions.
    Writing {
        buffer: pool::Buffer,
        start: u32,
        end: u32,
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
    /// Bytes were written since [`Direction::take_moved`] last looked.
    moved: bool,
    /// False once a pipe could not be made (e.g. out of descriptors): stay on buffers.
    #[cfg(any(target_os = "linux", target_os = "android"))]
    may_splice: bool,
}

impl Default for Direction {
    fn default() -> Self {
        Direction {
            state: State::Reading,
            transferred: 0,
            moved: false,
            #[cfg(any(target_os = "linux", target_os = "android"))]
            may_splice: true,
        }
    }
}

impl Direction {
    /// True if bytes were written since the last call (or since the start).
    pub fn take_moved(&mut self) -> bool {
        std::mem::take(&mut self.moved)
    }

    /// True once the source reached end of file and the destination was shut down for writing.
    pub fn is_done(&self) -> bool {
        matches!(self.state, State::Done)
    }

    /// True while bytes read from the source wait for the destination to take them (a buffer or a
    /// splice pipe that is not empty): the direction is not silent, its destination is slow.
    pub fn holds_bytes(&self) -> bool {
        match &self.state {
            State::Writing { .. } => true,
            #[cfg(any(target_os = "linux", target_os = "android"))]
            State::Splicing(pipe) => pipe.held > 0,
            State::Reading | State::Done => false,
        }
    }

    /// True while the direction holds a splice pipe.
    #[cfg(all(test, any(target_os = "linux", target_os = "android")))]
    pub(crate) fn holds_pipe(&self) -> bool {
        matches!(self.state, State::Splicing(_))
    }

    /// Copies from `source` to `destination` until the source ends (then shuts the destination
    /// down for writing and returns `Ok`) or an error occurs. Adds every written byte to `counter`.
    /// A write that takes no byte of a non-empty buffer fails with `WriteZero`.
    pub(crate) fn poll_copy<R, W>(
        &mut self,
        cx: &mut Context<'_>,
        source: &R,
        destination: &W,
        counter: &AtomicU64,
    ) -> Poll<Result<(), (Failed, io::Error)>>
    where
        R: StreamSocket + ?Sized,
        W: StreamSocket + ?Sized,
    {
        loop {
            match &mut self.state {
                State::Done => return Poll::Ready(Ok(())),
                State::Reading => {
                    ready!(source.poll_read_ready(cx)).map_err(|e| (Failed::Read, e))?;
                    #[cfg(any(target_os = "linux", target_os = "android"))]
                    if self.may_splice
                        && self.transferred >= pool::GROW_AFTER
                        && super::splice::fds(source, destination).is_some()
                    {
                        match super::splice::take() {
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
                    let mut buffer = pool::take(self.transferred);
                    match source.try_read(&mut buffer) {
                        Ok(0) => {
                            pool::give(buffer);
                            return Poll::Ready(self.finish(destination));
                        }
                        Ok(end) => self.state = State::Writing { buffer, start: 0, end: end as u32 },
                        Err(e) if is_retry(&e) => pool::give(buffer),
                        Err(e) => {
                            pool::give(buffer);
                            return Poll::Ready(Err((Failed::Read, e)));
                        }
                    }
                }
                #[cfg(any(target_os = "linux", target_os = "android"))]
                State::Splicing(pipe) => {
                    use tokio::io::Interest;
                    let Some((from, to)) = super::splice::fds(source, destination) else {
                        return Poll::Ready(Err((
                            Failed::Read,
                            io::Error::other("stream lost its descriptor"),
                        )));
                    };
                    if pipe.held == 0 {
                        if source.poll_read_ready(cx).map_err(|e| (Failed::Read, e))?.is_pending() {
                            // Quiet with an empty pipe: give it back until bytes come again.
                            if let State::Splicing(pipe) = std::mem::replace(&mut self.state, State::Reading)
                            {
                                super::splice::give(pipe);
                            }
                            return Poll::Pending;
                        }
                        match source.try_splice(Interest::READABLE, &mut || pipe.fill_from(from)) {
                            Ok(0) => return Poll::Ready(self.finish(destination)),
                            Ok(_) => {}
                            Err(e) if is_retry(&e) => {}
                            Err(e) => return Poll::Ready(Err((Failed::Read, e))),
                        }
                    } else {
                        ready!(destination.poll_write_ready(cx)).map_err(|e| (Failed::Write, e))?;
                        match destination.try_splice(Interest::WRITABLE, &mut || pipe.drain_into(to)) {
                            Ok(0) => {
                                return Poll::Ready(Err((Failed::Write, io::ErrorKind::WriteZero.into())))
                            }
                            Ok(written) => self.count(written, counter),
                            Err(e) if is_retry(&e) => {}
                            Err(e) => return Poll::Ready(Err((Failed::Write, e))),
                        }
                    }
                }
                State::Writing { buffer, start, end } => {
                    ready!(destination.poll_write_ready(cx)).map_err(|e| (Failed::Write, e))?;
                    match destination.try_write(&buffer[*start as usize..*end as usize]) {
                        Ok(0) => return Poll::Ready(Err((Failed::Write, io::ErrorKind::WriteZero.into()))),
                        Ok(written) => {
                            *start += written as u32;
                            let emptied = *start == *end;
                            self.count(written, counter);
                            if emptied {
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

    fn count(&mut self, written: usize, counter: &AtomicU64) {
        self.transferred += written as u64;
        self.moved = true;
        counter.fetch_add(written as u64, Ordering::Relaxed);
    }

    /// The source ended: give back what is held and pass the end on as a half-close.
    fn finish<W: StreamSocket + ?Sized>(&mut self, destination: &W) -> Result<(), (Failed, io::Error)> {
        self.release();
        self.state = State::Done;
        destination.shutdown_write().map_err(|e| (Failed::Write, e))
    }

    /// Gives a held buffer or pipe back to its pool.
    fn release(&mut self) {
        match std::mem::replace(&mut self.state, State::Done) {
            State::Writing { buffer, .. } => pool::give(buffer),
            #[cfg(any(target_os = "linux", target_os = "android"))]
            State::Splicing(pipe) => super::splice::give(pipe),
            State::Reading | State::Done => {}
        }
    }
}

impl Drop for Direction {
    fn drop(&mut self) {
        self.release();
    }
}
