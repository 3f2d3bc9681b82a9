//! Where a ClientHello is cut, and how the pieces are re-framed as TLS records.
//!
//! One cut falls strictly inside every label of the server name that has at least two bytes
//! (DESIGN decision 6; the reference cuts only the first label). A label of one byte cannot be
//! cut inside; it is left whole. Cut offsets are absolute positions in the original record.

use std::ops::Range;

use super::client_hello::RECORD_HEADER_LEN;

/// The absolute offsets at which to cut `record`, strictly increasing, each strictly inside one
/// label of `server_name` (a range of `record`). `random` picks the position inside each label:
/// it is called once per label with the number of possible positions and must return less.
pub fn cut_points(
    record: &[u8],
    server_name: Range<usize>,
    mut random: impl FnMut(usize) -> usize,
) -> Vec<usize> {
    let Some(name) = record.get(server_name.clone()) else { return Vec::new() };
    let mut cuts = Vec::new();
    let mut label_start = server_name.start;
    for label in name.split(|&b| b == b'.') {
        if label.len() >= 2 {
            let choices = label.len() - 1;
            cuts.push(label_start + 1 + random(choices).min(choices - 1));
        }
        label_start += label.len() + 1;
    }
    cuts
}

/// Cuts `record` at `cuts` (absolute, increasing, inside the record): the pieces, in order,
/// whose concatenation is `record`.
pub fn split_at<'a>(record: &'a [u8], cuts: &[usize]) -> Vec<&'a [u8]> {
    let mut pieces = Vec::with_capacity(cuts.len() + 1);
    let mut start = 0;
    for &cut in cuts.iter().filter(|&&c| c > 0 && c < record.len()) {
        if cut > start {
            pieces.push(&record[start..cut]);
            start = cut;
        }
    }
    pieces.push(&record[start..]);
    pieces
}

/// Re-frames one TLS record as several: its payload (after the 5-byte header) is cut at `cuts`
/// (absolute offsets into `record`; those inside the header are ignored) and each piece gets a
/// header made of the original type and version and its own length. Concatenating the payloads
/// of the result gives back the original payload.
pub fn reframe(record: &[u8], cuts: &[usize]) -> Vec<Vec<u8>> {
    let Some((header, payload)) = record.split_at_checked(RECORD_HEADER_LEN) else {
        return vec![record.to_vec()];
    };
    let relative: Vec<usize> =
        cuts.iter().filter(|&&c| c > RECORD_HEADER_LEN).map(|&c| c - RECORD_HEADER_LEN).collect();
    split_at(payload, &relative)
        .into_iter()
        .map(|piece| {
            let mut framed = Vec::with_capacity(RECORD_HEADER_LEN + piece.len());
            framed.extend_from_slice(&header[..3]);
            framed.extend_from_slice(&(piece.len() as u16).to_be_bytes());
            framed.extend_from_slice(piece);
            framed
        })
        .collect()
}

/// Parses a byte stream of TLS records back into `(header type+version, payload)` pairs; `None`
/// when the stream does not end exactly at a record boundary. Used to check re-framing.
pub fn records(mut stream: &[u8]) -> Option<Vec<([u8; 3], &[u8])>> {
    let mut out = Vec::new();
    while !stream.is_empty() {
        let header = stream.get(..RECORD_HEADER_LEN)?;
        let len = usize::from(u16::from_be_bytes([header[3], header[4]]));
        let payload = stream.get(RECORD_HEADER_LEN..RECORD_HEADER_LEN + len)?;
        out.push(([header[0], header[1], header[2]], payload));
        stream = &stream[RECORD_HEADER_LEN + len..];
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::super::client_hello::{build_client_hello, parse};
    use super::*;

    #[test]
    fn one_cut_inside_every_label() {
        let hello = build_client_hello("www.a.example.co.uk", 0);
        let name = parse(&hello).unwrap().server_name;
        for pick in [0usize, 1, 100] {
            let cuts = cut_points(&hello, name.clone(), |n| pick.min(n - 1));
            // "a" has one byte and cannot be cut inside; www, example, co, uk are cut once each.
            assert_eq!(cuts.len(), 4, "{cuts:?}");
            let pieces = split_at(&hello, &cuts);
            assert_eq!(pieces.concat(), hello);
            for cut in &cuts {
                let before = hello[cut - 1];
                let after = hello[*cut];
                assert!(before != b'.' && after != b'.', "cut {cut} touches a dot");
                assert!(name.contains(&(cut - 1)) && name.contains(cut), "cut {cut} outside the name");
            }
        }
    }

    #[test]
    fn reframed_records_reassemble() {
        let hello = build_client_hello("one.two.three", 40);
        let name = parse(&hello).unwrap().server_name;
        let cuts = cut_points(&hello, name, |n| n / 2);
        let framed = reframe(&hello, &cuts);
        assert_eq!(framed.len(), 4);
        let joined = framed.concat();
        let parsed = records(&joined).unwrap();
        let payload: Vec<u8> = parsed.iter().flat_map(|(_, p)| p.iter().copied()).collect();
        assert_eq!(payload, hello[RECORD_HEADER_LEN..]);
        assert!(parsed.iter().all(|(h, _)| h == &hello[..3]));
    }
}
