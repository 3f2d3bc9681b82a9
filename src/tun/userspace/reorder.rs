//! Whether a connection's receive ring holds bytes the app sent out of order.
//!
//! smoltcp keeps a segment that arrives after a gap in its receive ring, past the bytes it counts
//! as queued (`recv_queue`), until the gap is filled. Nothing in its API tells that such bytes
//! are there; giving the ring's pages back then (`rings.rs`) would turn them into zeros. So the
//! connection watches the sequence numbers itself: the furthest end of the app's data it was
//! handed, and the acknowledgement number of the last segment the stack sent. While the first is
//! past the second, bytes may wait out of order (or a segment smoltcp dropped is still to be
//! resent): the rings stay.

/// The two sequence numbers (see the module docs).
#[derive(Debug, Default)]
pub(crate) struct Reordering {
    /// Sequence number after the furthest byte of the app's data within reach of the window.
    received_end: Option<u32>,
    /// The acknowledgement number of the stack's last segment.
    acked: Option<u32>,
}

impl Reordering {
    /// Notes a segment of the app: `packet` an IP packet whose TCP header is at `offset`, the
    /// packet no longer than its IP length. `window` bounds how far past the acknowledged bytes
    /// data can be kept (the receive ring's capacity).
    pub fn received(&mut self, packet: &[u8], offset: usize, window: usize) {
        let Some(header) = packet.get(offset..offset + 20) else { return };
        let seq = u32::from_be_bytes([header[4], header[5], header[6], header[7]]);
        let header_len = usize::from(header[12] >> 4) * 4;
        let payload = packet.len().saturating_sub(offset + header_len);
        let (Some(acked), true) = (self.acked, payload > 0) else { return };
        let end = seq.wrapping_add(payload as u32);
        let reach = end.wrapping_sub(acked);
        if reach == 0 || reach as usize > window {
            return; // nothing new, or out of reach (smoltcp drops it)
        }
        if self.received_end.is_none_or(|furthest| after(end, furthest)) {
            self.received_end = Some(end);
        }
    }

    /// Notes a packet the stack sent (an IP packet as smoltcp builds it: IPv4 without options or
    /// IPv6 without extension headers).
    pub fn sent(&mut self, packet: &[u8]) {
        let offset = match packet.first().map(|byte| byte >> 4) {
            Some(4) => usize::from(packet[0] & 0x0f) * 4,
            Some(6) => 40,
            _ => return,
        };
        let Some(header) = packet.get(offset..offset + 20) else { return };
        let has_ack = header[13] & 0x10 != 0;
        if has_ack {
            self.acked = Some(u32::from_be_bytes([header[8], header[9], header[10], header[11]]));
        }
    }

    /// True when bytes of the app may wait in the receive ring out of order.
    pub fn holds_bytes(&self) -> bool {
        match (self.received_end, self.acked) {
            (Some(end), Some(acked)) => after(end, acked),
            _ => false,
        }
    }
}

/// `a` comes after `b` in sequence space.
fn after(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) > 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segment(seq: u32, ack: u32, flags: u8, payload: usize) -> Vec<u8> {
        let mut packet = vec![0u8; 40 + payload];
        packet[0] = 0x45;
        packet[24..28].copy_from_slice(&seq.to_be_bytes());
        packet[28..32].copy_from_slice(&ack.to_be_bytes());
        packet[32] = 5 << 4;
        packet[33] = flags;
        packet
    }

    #[test]
    fn a_gap_holds_bytes_until_the_acknowledgement_passes_it() {
        let mut reordering = Reordering::default();
        reordering.received(&segment(u32::MAX - 10, 0, 0x02, 0), 20, 65536); // a SYN
        reordering.sent(&segment(7, u32::MAX - 9, 0x12, 0)); // the SYN-ACK
        assert!(!reordering.holds_bytes());
        // In order (across the wrap of the sequence space): acknowledged, nothing held.
        reordering.received(&segment(u32::MAX - 9, 8, 0x10, 100), 20, 65536);
        reordering.sent(&segment(8, 90, 0x10, 0));
        assert!(!reordering.holds_bytes());
        // A gap: the next 100 bytes lost, the 100 after them arrive.
        reordering.received(&segment(190, 8, 0x10, 100), 20, 65536);
        reordering.sent(&segment(8, 90, 0x10, 0)); // a duplicate ACK
        assert!(reordering.holds_bytes());
        reordering.received(&segment(90, 8, 0x10, 100), 20, 65536);
        reordering.sent(&segment(8, 290, 0x10, 0));
        assert!(!reordering.holds_bytes(), "the gap is filled");
        // Out of the window's reach, or old: not counted.
        reordering.received(&segment(290 + 70_000, 8, 0x10, 100), 20, 65536);
        reordering.received(&segment(100, 8, 0x10, 100), 20, 65536);
        assert!(!reordering.holds_bytes());
        // Truncated packets are ignored.
        reordering.received(&[0x45, 0, 0], 20, 65536);
        reordering.sent(&[0x45]);
        reordering.sent(&[]);
        assert!(!reordering.holds_bytes());
    }
}
