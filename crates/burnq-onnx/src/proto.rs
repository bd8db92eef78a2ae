//! The protocol-buffers wire format, encoding side only: just what an ONNX file needs.
//!
//! A message is a sequence of fields, each a key `(field_number << 3) | wire_type` written as a
//! varint, then the value: wire type 0 is a varint (integers, enums), 2 is length-delimited (a
//! varint byte count, then bytes: strings, bytes, nested messages, packed repeated scalars),
//! 5 is a little-endian 32-bit value (`float`). Varints store 7 bits per byte, least
//! significant group first, with the high bit set on every byte but the last; negative
//! `int64` values are written as their 64-bit two's complement (10 bytes).

/// Wire type of varint fields.
const VARINT: u8 = 0;
/// Wire type of length-delimited fields.
const LENGTH_DELIMITED: u8 = 2;
/// Wire type of 32-bit fields.
const FIXED32: u8 = 5;

/// An encoded message under construction. Fields are written in the order of the calls.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Message {
    bytes: Vec<u8>,
}

impl Message {
    /// An empty message.
    pub fn new() -> Self {
        Self::default()
    }

    /// The encoded bytes.
    pub fn into_bytes(self) -> Vec<u8> {
        self.bytes
    }

    /// Appends `value` as a varint (no key).
    fn raw_varint(&mut self, mut value: u64) {
        while value >= 0x80 {
            self.bytes.push((value as u8 & 0x7f) | 0x80);
            value >>= 7;
        }
        self.bytes.push(value as u8);
    }

    fn key(&mut self, field: u32, wire_type: u8) {
        self.raw_varint(u64::from(field) << 3 | u64::from(wire_type));
    }

    /// An `int64`/`int32`/enum field (negative values as 64-bit two's complement).
    pub fn int(&mut self, field: u32, value: i64) -> &mut Self {
        self.key(field, VARINT);
        self.raw_varint(value as u64);
        self
    }

    /// A `float` field.
    pub fn float(&mut self, field: u32, value: f32) -> &mut Self {
        self.key(field, FIXED32);
        self.bytes.extend_from_slice(&value.to_le_bytes());
        self
    }

    /// A `bytes` field.
    pub fn bytes(&mut self, field: u32, value: &[u8]) -> &mut Self {
        self.key(field, LENGTH_DELIMITED);
        self.raw_varint(value.len() as u64);
        self.bytes.extend_from_slice(value);
        self
    }

    /// A `string` field (UTF-8).
    pub fn string(&mut self, field: u32, value: &str) -> &mut Self {
        self.bytes(field, value.as_bytes())
    }

    /// A nested message field.
    pub fn message(&mut self, field: u32, value: &Message) -> &mut Self {
        self.bytes(field, &value.bytes)
    }

    /// A packed `repeated int64` field.
    pub fn packed_ints(&mut self, field: u32, values: &[i64]) -> &mut Self {
        let mut packed = Message::new();
        for &v in values {
            packed.raw_varint(v as u64);
        }
        self.bytes(field, &packed.bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_match_the_protobuf_documentation() {
        // Examples of the protobuf encoding guide: 1 → 01, 150 → 96 01, 300 → ac 02.
        for (value, expected) in [
            (0, vec![0x00]),
            (1, vec![0x01]),
            (127, vec![0x7f]),
            (128, vec![0x80, 0x01]),
            (150, vec![0x96, 0x01]),
            (300, vec![0xac, 0x02]),
        ] {
            let mut m = Message::new();
            m.raw_varint(value);
            assert_eq!(m.into_bytes(), expected, "{value}");
        }
    }

    #[test]
    fn negative_ints_take_ten_bytes() {
        let mut m = Message::new();
        m.int(1, -1);
        let mut expected = vec![0x08];
        expected.extend([0xff; 9]);
        expected.push(0x01);
        assert_eq!(m.into_bytes(), expected);
    }

    #[test]
    fn fields_carry_number_and_wire_type() {
        // Field 1 = 150 (varint) is 08 96 01; field 2 = "testing" is 12 07 74 65 73 74 69 6e 67.
        let mut m = Message::new();
        m.int(1, 150).string(2, "testing");
        assert_eq!(
            m.into_bytes(),
            [
                0x08, 0x96, 0x01, 0x12, 0x07, b't', b'e', b's', b't', b'i', b'n', b'g'
            ]
        );
        let mut f = Message::new();
        f.float(2, 1.0);
        assert_eq!(f.into_bytes(), [0x15, 0x00, 0x00, 0x80, 0x3f]);
        // Packed repeated [3, 270, 86942] in field 4: 22 06 03 8e 02 9e a7 05.
        let mut p = Message::new();
        p.packed_ints(4, &[3, 270, 86942]);
        assert_eq!(
            p.into_bytes(),
            [0x22, 0x06, 0x03, 0x8e, 0x02, 0x9e, 0xa7, 0x05]
        );
    }

    /// Decodes one varint from the front of `bytes`: `(value, bytes used)`.
    fn decode_varint(bytes: &[u8]) -> (u64, usize) {
        let mut value = 0u64;
        for (i, b) in bytes.iter().enumerate() {
            value |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return (value, i + 1);
            }
        }
        panic!("unterminated varint");
    }

    proptest::proptest! {
        #[test]
        fn varints_round_trip_in_the_fewest_bytes(value: u64) {
            let mut m = Message::new();
            m.raw_varint(value);
            let bytes = m.into_bytes();
            let significant_bits = (64 - value.leading_zeros()).max(1) as usize;
            proptest::prop_assert_eq!(bytes.len(), significant_bits.div_ceil(7));
            proptest::prop_assert_eq!(decode_varint(&bytes), (value, bytes.len()));
        }
    }

    #[test]
    fn nested_messages_are_length_delimited() {
        let mut inner = Message::new();
        inner.int(1, 150);
        let mut outer = Message::new();
        outer.message(3, &inner);
        assert_eq!(outer.into_bytes(), [0x1a, 0x03, 0x08, 0x96, 0x01]);
    }
}
