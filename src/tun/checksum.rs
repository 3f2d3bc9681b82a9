//! Incremental Internet checksum updates (RFC 1624, equation 3): when a NAT rewrites addresses
//! and ports, the IPv4 header checksum and the TCP checksum are adjusted for the changed 16-bit
//! words only, never recomputed over the payload. A checksum that was wrong before the rewrite is
//! still wrong after it (the receiving kernel drops the packet, as it would have).

/// `checksum` adjusted for the bytes `old` having been replaced by `new` (same even length, at
/// an even offset of the checksummed data).
pub(crate) fn adjust(checksum: u16, old: &[u8], new: &[u8]) -> u16 {
    debug_assert_eq!(old.len(), new.len());
    debug_assert_eq!(old.len() % 2, 0);
    // HC' = ~(~HC + ~m + m'), one's complement sums over 16-bit words.
    let mut sum = u32::from(!checksum);
    for (old, new) in old.chunks_exact(2).zip(new.chunks_exact(2)) {
        sum += u32::from(!u16::from_be_bytes([old[0], old[1]]));
        sum += u32::from(u16::from_be_bytes([new[0], new[1]]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Reads the big-endian 16-bit checksum at `at`.
pub(crate) fn read(packet: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([packet[at], packet[at + 1]])
}

/// Writes the big-endian 16-bit checksum at `at`.
pub(crate) fn write(packet: &mut [u8], at: usize, value: u16) {
    packet[at..at + 2].copy_from_slice(&value.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The full one's complement checksum of `data`, for comparison.
    fn full(data: &[u8]) -> u16 {
        let mut sum: u32 = 0;
        for word in data.chunks(2) {
            let word = if word.len() == 2 { [word[0], word[1]] } else { [word[0], 0] };
            sum += u32::from(u16::from_be_bytes(word));
        }
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        !(sum as u16)
    }

    #[test]
    fn matches_a_full_recomputation() {
        let mut data: Vec<u8> = (0..64u8).map(|b| b.wrapping_mul(37)).collect();
        let before = full(&data);
        let old = data[12..20].to_vec();
        let new = [172, 19, 0, 2, 10, 200, 9, 1];
        data[12..20].copy_from_slice(&new);
        assert_eq!(adjust(before, &old, &new), full(&data));
        // A change that keeps the sum (swapped words) keeps the checksum.
        let old = data[0..4].to_vec();
        let new = [old[2], old[3], old[0], old[1]];
        let before = full(&data);
        data[0..4].copy_from_slice(&new);
        assert_eq!(adjust(before, &old, &new), full(&data));
    }
}
