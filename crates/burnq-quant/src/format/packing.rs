//! Dense storage of sub-byte codes (format version 3): `n` codes of `b` bits (2..=7) take
//! `⌈n·b/8⌉` bytes. Code `i` occupies bits `i·b .. (i + 1)·b` of the little-endian bit stream
//! (bit `k` of the stream is bit `k mod 8` of byte `⌊k/8⌋`), least significant bit first; the
//! unused high bits of the last byte are zero. 8-bit codes are stored as they are, one per
//! byte.

/// Bytes that `n` codes of `bits` bits take in a model file: packed, `⌈n·bits/8⌉` (for
/// 8-bit codes, `n`).
pub fn packed_len(n: usize, bits: u8) -> usize {
    (n * usize::from(bits)).div_ceil(8)
}

/// Packs `codes` (each `< 2^bits`) densely.
pub(super) fn pack(codes: &[u8], bits: u8) -> Vec<u8> {
    let mut out = vec![0u8; packed_len(codes.len(), bits)];
    let mask = ((1u16 << bits) - 1) as u8;
    for (i, &code) in codes.iter().enumerate() {
        let bit = i * usize::from(bits);
        let (byte, shift) = (bit / 8, bit % 8);
        let wide = u16::from(code & mask) << shift;
        out[byte] |= wide as u8;
        if shift + usize::from(bits) > 8 {
            out[byte + 1] |= (wide >> 8) as u8;
        }
    }
    out
}

/// Unpacks `n` codes of `bits` bits from `bytes`; an error unless `bytes` has exactly
/// [`packed_len`] bytes and the padding bits of the last byte are zero.
pub(super) fn unpack(bytes: &[u8], bits: u8, n: usize) -> Result<Vec<u8>, String> {
    let expected = packed_len(n, bits);
    if bytes.len() != expected {
        return Err(format!(
            "{} bytes of packed {bits}-bit codes, {expected} expected for {n} codes",
            bytes.len()
        ));
    }
    let used = n * usize::from(bits);
    if !used.is_multiple_of(8) && bytes[expected - 1] >> (used % 8) != 0 {
        return Err("non-zero padding bits after the last packed code".into());
    }
    let mask = (1u16 << bits) - 1;
    Ok((0..n)
        .map(|i| {
            let bit = i * usize::from(bits);
            let (byte, shift) = (bit / 8, bit % 8);
            let low = u16::from(bytes[byte]);
            let high = bytes.get(byte + 1).map_or(0, |&b| u16::from(b));
            (((low | (high << 8)) >> shift) & mask) as u8
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn layout_by_hand() {
        // 2 bits: codes 1, 2, 3, 0, 1 → byte 0 = 0b00_11_10_01, byte 1 = 0b01.
        assert_eq!(pack(&[1, 2, 3, 0, 1], 2), [0b0011_1001, 0b01]);
        // 3 bits: 5, 7, 1 → bits 101, 111, 001 from the least significant end.
        assert_eq!(pack(&[5, 7, 1], 3), [0b0111_1101, 0b0]);
        assert_eq!(packed_len(431_080, 4), 215_540);
        assert_eq!(packed_len(431_080, 2), 107_770);
        assert_eq!(unpack(&[0b0011_1001, 0b01], 2, 5).unwrap(), [1, 2, 3, 0, 1]);
    }

    #[test]
    fn malformed_streams_are_refused() {
        assert!(unpack(&[0, 0], 2, 5).is_ok());
        assert!(unpack(&[0, 0b100], 2, 5).is_err(), "padding bit set");
        assert!(unpack(&[0], 2, 5).is_err(), "too short");
        assert!(unpack(&[0, 0, 0], 2, 5).is_err(), "too long");
    }

    proptest! {
        #[test]
        fn round_trip(bits in 2u8..=7, raw in prop::collection::vec(any::<u8>(), 0..300)) {
            let codes: Vec<u8> = raw.iter().map(|c| c & ((1u8 << bits) - 1)).collect();
            let packed = pack(&codes, bits);
            prop_assert_eq!(packed.len(), packed_len(codes.len(), bits));
            prop_assert_eq!(unpack(&packed, bits, codes.len()).unwrap(), codes);
        }
    }
}
