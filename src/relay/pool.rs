//! Relay buffers borrowed only while bytes are in flight.
//!
//! A connection takes a buffer after its socket became readable and gives it back once the bytes
//! are written, so an idle connection holds none. Buffers are kept per worker thread (no lock)
//! and the pool keeps at most [`KEPT_PER_SIZE`] of each size; the rest are freed.

use std::cell::RefCell;

/// Size of the buffers a flow starts with.
pub const SMALL: usize = 16 * 1024;
/// Size of the buffers a bulk flow grows to.
pub const LARGE: usize = 64 * 1024;
/// Bytes a direction must have moved before it switches to [`LARGE`] buffers (as the reference).
pub const GROW_AFTER: u64 = 512_000;
/// How many idle buffers of each size one thread keeps for reuse.
pub const KEPT_PER_SIZE: usize = 8;

thread_local! {
    static SMALL_BUFFERS: RefCell<Vec<Box<[u8]>>> = const { RefCell::new(Vec::new()) };
    static LARGE_BUFFERS: RefCell<Vec<Box<[u8]>>> = const { RefCell::new(Vec::new()) };
}

/// A buffer borrowed from the pool. Give it back with [`give`].
pub type Buffer = Box<[u8]>;

/// Borrows a buffer sized for a direction that has moved `transferred` bytes so far. A new one
/// when the pool is empty or this thread's pool is already gone (the thread is exiting).
pub fn take(transferred: u64) -> Buffer {
    let (size, shelf) =
        if transferred >= GROW_AFTER { (LARGE, &LARGE_BUFFERS) } else { (SMALL, &SMALL_BUFFERS) };
    let kept = shelf.try_with(|s| s.borrow_mut().pop()).ok().flatten();
    kept.unwrap_or_else(|| vec![0u8; size].into_boxed_slice())
}

/// Returns a buffer to this thread's pool, or frees it when the pool is full or already gone (a
/// connection dropped while its thread exits: no panic in a thread-local destructor).
pub fn give(buffer: Buffer) {
    let shelf = if buffer.len() == LARGE { &LARGE_BUFFERS } else { &SMALL_BUFFERS };
    let _ = shelf.try_with(|s| {
        let mut kept = s.borrow_mut();
        if kept.len() < KEPT_PER_SIZE {
            kept.push(buffer);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_after_threshold_and_reuses() {
        let small = take(0);
        assert_eq!(small.len(), SMALL);
        let pointer = small.as_ptr();
        give(small);
        let reused = take(GROW_AFTER - 1);
        assert_eq!(reused.as_ptr(), pointer, "a returned buffer is reused");
        assert_eq!(take(GROW_AFTER).len(), LARGE);
    }

    /// Drops a buffer into the pool from its own thread-local destructor.
    struct GivesBackOnDrop;

    impl Drop for GivesBackOnDrop {
        fn drop(&mut self) {
            give(take(0));
        }
    }

    thread_local! {
        static GIVES_BACK: GivesBackOnDrop = const { GivesBackOnDrop };
    }

    /// A connection dropped while its thread exits gives its buffer back after the pool's own
    /// thread-local is destroyed: that must not panic (a panic in a thread-local destructor
    /// aborts the process).
    #[test]
    fn a_buffer_given_back_while_the_thread_exits_is_freed() {
        let thread = std::thread::spawn(|| {
            // Registered first, so destroyed after the pool (destructors run in reverse order).
            GIVES_BACK.with(|_| {});
            give(take(0));
        });
        assert!(thread.join().is_ok(), "the exiting thread panicked");
    }
}
