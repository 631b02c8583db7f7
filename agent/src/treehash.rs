//! BLAKE3 of a file hashed in fixed segments that several threads may take
//! in any order: each segment is a subtree of BLAKE3's hash tree (its
//! offset is a multiple of the segment length, a power of two of BLAKE3
//! chunks), so the segments' chaining values merge into exactly the hash
//! `blake3::hash` gives for the whole file. Uses `blake3::hazmat`, whose
//! tree rules this module keeps: see the test against `blake3::hash` at
//! every length around the segment boundaries.

use blake3::Hasher;
use blake3::hazmat::{HasherExt, Mode, left_subtree_len, merge_subtrees_non_root, merge_subtrees_root};

/// Segment length: 4 MiB (a power of two of BLAKE3's 1 KiB chunks, and a
/// multiple of every SQLite page size).
pub const SEGMENT: u64 = 4 << 20;

/// The hasher for the segment that starts at byte `offset` (a multiple of
/// the segment length).
#[must_use]
pub fn segment_hasher(offset: u64) -> Hasher {
    let mut h = Hasher::new();
    if offset > 0 {
        h.set_input_offset(offset);
    }
    h
}

/// The hash of a `len`-byte input from the hashers of its segments of
/// `segment` bytes, in order (`len.div_ceil(segment)` of them, each fed its
/// segment's bytes).
///
/// # Panics
/// When the number of segments does not match `len` (a caller's bug).
#[must_use]
pub fn root(len: u64, segment: u64, segments: &[Hasher]) -> blake3::Hash {
    assert_eq!(segments.len() as u64, len.div_ceil(segment).max(1), "one hasher per segment");
    if segments.len() == 1 {
        return segments[0].finalize();
    }
    let cv = |off: u64, n: u64| subtree(off, n, segment, segments);
    let left = left_subtree_len(len);
    merge_subtrees_root(&cv(0, left), &cv(left, len - left), Mode::Hash)
}

/// Chaining value of the subtree of `len` bytes at `off`: a segment, or the
/// merge of its left subtree (a power of two of chunks, so at least one
/// whole segment) and the rest.
fn subtree(off: u64, len: u64, segment: u64, segments: &[Hasher]) -> [u8; 32] {
    if len <= segment {
        return segments[(off / segment) as usize].finalize_non_root();
    }
    let left = left_subtree_len(len);
    merge_subtrees_non_root(
        &subtree(off, left, segment, segments),
        &subtree(off + left, len - left, segment, segments),
        Mode::Hash,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segmented(input: &[u8], segment: u64) -> blake3::Hash {
        let hashers: Vec<Hasher> = if input.is_empty() {
            vec![Hasher::new()]
        } else {
            input
                .chunks(segment as usize)
                .enumerate()
                .map(|(i, part)| {
                    let mut h = segment_hasher(i as u64 * segment);
                    h.update(part);
                    h
                })
                .collect()
        };
        root(input.len() as u64, segment, &hashers)
    }

    #[test]
    fn segments_merge_into_the_whole_inputs_hash() {
        let chunk = blake3::CHUNK_LEN as u64;
        let input: Vec<u8> = (0..40 * chunk as usize + 3).map(|i| (i * 7 + i / 251) as u8).collect();
        for segment in [chunk, 2 * chunk, 4 * chunk] {
            let mut lengths: Vec<usize> = vec![0, 1, 1023, 1024, 1025];
            for k in 1..=9u64 {
                for d in [-1i64, 0, 1] {
                    lengths.push(((k * segment) as i64 + d) as usize);
                }
            }
            lengths.push(input.len());
            for n in lengths.into_iter().filter(|&n| n <= input.len()) {
                assert_eq!(segmented(&input[..n], segment), blake3::hash(&input[..n]), "{n} bytes, segment {segment}");
            }
        }
    }

    #[test]
    fn segments_may_be_hashed_in_any_order() {
        let input: Vec<u8> = (0..(3 * SEGMENT + 12_345) as usize).map(|i| (i % 253) as u8).collect();
        let parts: Vec<&[u8]> = input.chunks(SEGMENT as usize).collect();
        let mut hashers: Vec<Option<Hasher>> = vec![None; parts.len()];
        for i in (0..parts.len()).rev() {
            let mut h = segment_hasher(i as u64 * SEGMENT);
            h.update(parts[i]);
            hashers[i] = Some(h);
        }
        let hashers: Vec<Hasher> = hashers.into_iter().map(Option::unwrap).collect();
        assert_eq!(root(input.len() as u64, SEGMENT, &hashers), blake3::hash(&input));
    }
}
