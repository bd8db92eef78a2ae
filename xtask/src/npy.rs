//! A minimal writer of NumPy `.npy` files (format version 1.0), so that other
//! implementations can load burnq's integer outputs with `numpy.load` and compare them.
//!
//! Layout: the magic `\x93NUMPY`, version bytes `1 0`, a little-endian u16 header length,
//! then an ASCII dict `{'descr': …, 'fortran_order': False, 'shape': (…), }` padded with
//! spaces and a newline so that the data starts at a multiple of 64 bytes, then the data,
//! C order.

use std::path::Path;

/// Element types written here, with their NumPy descriptors.
pub trait NpyElement: Copy {
    /// NumPy dtype string (`|u1`, `<i4`, `<i8`).
    const DESCR: &'static str;
    /// Appends the little-endian bytes of `self`.
    fn push_le(self, out: &mut Vec<u8>);
}

impl NpyElement for u8 {
    const DESCR: &'static str = "|u1";
    fn push_le(self, out: &mut Vec<u8>) {
        out.push(self);
    }
}

impl NpyElement for i32 {
    const DESCR: &'static str = "<i4";
    fn push_le(self, out: &mut Vec<u8>) {
        out.extend(self.to_le_bytes());
    }
}

impl NpyElement for i64 {
    const DESCR: &'static str = "<i8";
    fn push_le(self, out: &mut Vec<u8>) {
        out.extend(self.to_le_bytes());
    }
}

/// The bytes of an `.npy` file holding `data` with `shape` (their product must equal
/// `data.len()`).
pub fn encode<T: NpyElement>(data: &[T], shape: &[usize]) -> Vec<u8> {
    assert_eq!(
        shape.iter().product::<usize>(),
        data.len(),
        "shape does not fit the data"
    );
    let dims: Vec<String> = shape.iter().map(usize::to_string).collect();
    let shape_text = match dims.len() {
        1 => format!("({},)", dims[0]),
        _ => format!("({})", dims.join(", ")),
    };
    let mut header = format!(
        "{{'descr': '{}', 'fortran_order': False, 'shape': {shape_text}, }}",
        T::DESCR
    );
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend((header.len() as u16).to_le_bytes());
    out.extend(header.as_bytes());
    for &v in data {
        v.push_le(&mut out);
    }
    out
}

/// Writes `data` as an `.npy` file at `path`, atomically.
pub fn write<T: NpyElement>(path: &Path, data: &[T], shape: &[usize]) -> std::io::Result<()> {
    burnq_arch::write_atomic(path, &encode(data, shape))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_is_padded_to_64_bytes_and_data_follows() {
        let bytes = encode(&[1i32, -2, 3, 4, 5, 6], &[2, 3]);
        assert_eq!(&bytes[..8], b"\x93NUMPY\x01\x00");
        let header_len = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
        assert_eq!((10 + header_len) % 64, 0);
        let header = std::str::from_utf8(&bytes[10..10 + header_len]).unwrap();
        assert!(header.starts_with("{'descr': '<i4', 'fortran_order': False, 'shape': (2, 3), }"));
        assert!(header.ends_with('\n'));
        let data = &bytes[10 + header_len..];
        assert_eq!(data.len(), 24);
        assert_eq!(i32::from_le_bytes(data[4..8].try_into().unwrap()), -2);
        let one_d = encode(&[7u8, 8], &[2]);
        assert!(
            std::str::from_utf8(&one_d[10..])
                .unwrap()
                .contains("'shape': (2,), ")
        );
    }
}
