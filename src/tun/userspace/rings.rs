//! The memory behind one connection's two smoltcp ring buffers, resident only while in use.
//!
//! smoltcp's sockets take their rings at creation and keep them for their life, and it has no
//! way to swap a live socket's buffers. So the rings live in one anonymous mapping of their own
//! (not the heap: no allocator header or neighbour shares its pages), whose pages the kernel
//! provides on first touch. When the connection has been idle with both rings empty,
//! [`Rings::release`] maps fresh anonymous pages over the range: the touched pages go back to
//! the system and the range costs nothing resident until traffic touches it again.
//!
//! The rings' capacities never change, so the window the app sees never changes either: no
//! window shrinks, nothing in TCP notices. Address space stays reserved (the capacities, per
//! connection); resident memory is what the traffic touched since the last release.

use std::io;
use std::ptr::NonNull;

/// One connection's ring memory: `receive` bytes then `send` bytes, page-rounded.
pub(crate) struct Rings {
    base: NonNull<u8>,
    /// Length of the mapping (the two rings, rounded up to pages).
    len: usize,
    receive: usize,
    send: usize,
}

// SAFETY: `Rings` owns its mapping; the pointer is not tied to a thread.
unsafe impl Send for Rings {}
// SAFETY: `&Rings` gives access to no memory (only `release`, which the caller serialises).
unsafe impl Sync for Rings {}

impl Rings {
    /// Maps `receive + send` bytes (not resident until touched).
    pub fn new(receive: usize, send: usize) -> io::Result<Rings> {
        let len = (receive + send).next_multiple_of(page_size());
        // SAFETY: a new private anonymous mapping at an address the kernel picks.
        let base = unsafe { map(std::ptr::null_mut(), len, 0) }?;
        Ok(Rings { base, len, receive, send })
    }

    /// The receive and send rings as slices for smoltcp.
    ///
    /// # Safety
    /// Call once; the slices must not be used after `self` is dropped (the socket holding them
    /// must be dropped first), and [`Rings::release`] may only be called while the socket holds
    /// no bytes in either ring (it replaces their contents with zeros).
    pub unsafe fn slices(&self) -> (&'static mut [u8], &'static mut [u8]) {
        // SAFETY: the mapping is `len >= receive + send` bytes, readable and writable; the two
        // slices do not overlap; the caller keeps them within the mapping's life.
        unsafe {
            let receive = std::slice::from_raw_parts_mut(self.base.as_ptr(), self.receive);
            let send = std::slice::from_raw_parts_mut(self.base.as_ptr().add(self.receive), self.send);
            (receive, send)
        }
    }

    /// Gives the rings' pages back to the system (the range stays mapped and reads as zeros).
    /// Call only when both rings are empty (see [`Rings::slices`]). False if the system refused
    /// (the pages then simply stay).
    pub fn release(&self) -> bool {
        // SAFETY: maps over exactly our own range (MAP_FIXED replaces it atomically); the
        // caller guarantees no ring holds bytes, so no content is lost.
        unsafe { map(self.base.as_ptr(), self.len, libc::MAP_FIXED) }.is_ok()
    }

    /// How many pages of the rings are resident (mincore; for tests).
    #[cfg(test)]
    pub fn resident(&self) -> usize {
        let mut vector = vec![0u8; self.len.div_ceil(page_size())];
        // SAFETY: the range is our mapping; `vector` has one byte per page.
        let done = unsafe { libc::mincore(self.base.as_ptr().cast(), self.len, vector.as_mut_ptr().cast()) };
        assert_eq!(done, 0, "mincore: {}", io::Error::last_os_error());
        vector.iter().filter(|page| *page & 1 == 1).count()
    }
}

impl Drop for Rings {
    fn drop(&mut self) {
        // SAFETY: unmaps the mapping this value owns; the slices are gone (see `slices`).
        unsafe { libc::munmap(self.base.as_ptr().cast(), self.len) };
    }
}

impl std::fmt::Debug for Rings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rings").field("receive", &self.receive).field("send", &self.send).finish()
    }
}

/// mmap(2) of `len` private anonymous read-write bytes at `at` (with `flags` added).
///
/// # Safety
/// With `MAP_FIXED`, `at..at + len` must be a mapping the caller owns.
unsafe fn map(at: *mut u8, len: usize, flags: libc::c_int) -> io::Result<NonNull<u8>> {
    let prot = libc::PROT_READ | libc::PROT_WRITE;
    let flags = libc::MAP_PRIVATE | libc::MAP_ANON | flags;
    // SAFETY: per this function's contract.
    let mapped = unsafe { libc::mmap(at.cast(), len, prot, flags, -1, 0) };
    if mapped == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    NonNull::new(mapped.cast()).ok_or_else(|| io::Error::other("mmap returned a null mapping"))
}

fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(size).ok().filter(|size| *size > 0).unwrap_or(4096)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_are_resident_only_after_a_touch_and_go_back_on_release() {
        let rings = Rings::new(64 * 1024, 64 * 1024).unwrap();
        assert_eq!(rings.resident(), 0, "a new mapping holds no pages");
        // SAFETY: called once; the slices are dropped before `rings`.
        let (receive, send) = unsafe { rings.slices() };
        assert_eq!((receive.len(), send.len()), (64 * 1024, 64 * 1024));
        receive[0] = 1;
        send[send.len() - 1] = 2;
        assert_eq!(rings.resident(), 2);
        assert!(rings.release());
        assert_eq!(rings.resident(), 0, "released pages are gone");
        receive[1] = 3;
        assert_eq!(rings.resident(), 1, "a touch brings one page back");
        assert_eq!(receive[..2], [0, 3], "the released bytes read as zeros");
    }
}
