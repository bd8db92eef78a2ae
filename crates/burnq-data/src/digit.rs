//! Any grayscale or colour picture of a digit (PGM P2/P5 or PNG, any size) turned into a
//! 28×28 MNIST-like image, the way the MNIST digits were made (LeCun et al.): a light digit
//! on a dark background, its bounding box scaled to fit 20×20 with the aspect ratio kept,
//! then placed in the 28×28 frame so that its centre of mass is at the centre.
//!
//! Steps: luminance `0.299 R + 0.587 G + 0.114 B` in 0..1 (alpha composited on white); the
//! picture is inverted when its border is brighter than 0.5 on average (dark ink on paper);
//! the bounding box of pixels above 10 % of the maximum is cropped; area-averaged resampling
//! to fit 20×20; centre of mass moved to (14, 14), clamped so the digit stays in the frame.

use std::path::Path;

use crate::{DataError, IMAGE_PIXELS, IMAGE_SIDE};

/// A grayscale picture, `width × height` values in 0..1, row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct Gray {
    pub width: usize,
    pub height: usize,
    pub values: Vec<f32>,
}

/// The largest picture [`load_digit`] decodes, in pixels (a 64-megapixel PNG or PGM).
pub const MAX_FILE_PIXELS: usize = 64 << 20;

/// Reads a PGM or PNG file and returns the 784 raw pixel bytes of the MNIST-like digit.
pub fn load_digit(path: &Path) -> Result<Vec<u8>, DataError> {
    let bytes = std::fs::read(path).map_err(|source| DataError::Io {
        path: path.to_owned(),
        source,
    })?;
    digit_from_bytes(&bytes, MAX_FILE_PIXELS).map_err(|e| DataError::Image {
        path: path.to_owned(),
        message: e.0,
    })
}

/// Why the bytes of a picture could not be read: the message names the problem
/// (unknown signature, malformed header, truncated data, too many pixels).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct PictureError(pub String);

/// The 784 raw pixel bytes of the MNIST-like digit in the PGM (P2/P5) or PNG file `bytes`,
/// exactly as [`load_digit`] makes them from a file; pictures of more than `max_pixels`
/// pixels are refused before they are decoded.
pub fn digit_from_bytes(bytes: &[u8], max_pixels: usize) -> Result<Vec<u8>, PictureError> {
    let gray = if bytes.starts_with(b"\x89PNG") {
        decode_png(bytes, max_pixels)
    } else if bytes.starts_with(b"P5") || bytes.starts_with(b"P2") {
        decode_pgm(bytes, max_pixels)
    } else {
        Err("unknown signature".into())
    }
    .map_err(PictureError)?;
    Ok(to_mnist(&gray))
}

/// Decodes a PNG of any colour type and bit depth into luminance.
fn decode_png(bytes: &[u8], max_pixels: usize) -> Result<Gray, String> {
    let mut decoder = png::Decoder::new(std::io::Cursor::new(bytes));
    decoder.set_transformations(png::Transformations::normalize_to_color8());
    let mut reader = decoder.read_info().map_err(|e| e.to_string())?;
    let (w, h) = reader.info().size();
    check_pixels(w as usize, h as usize, max_pixels)?;
    let size = reader.output_buffer_size().ok_or("image too large")?;
    if size > 64 << 20 {
        return Err(format!("a {size}-byte image is larger than burnq accepts"));
    }
    let mut buf = vec![0; size];
    let info = reader.next_frame(&mut buf).map_err(|e| e.to_string())?;
    let (w, h) = (info.width as usize, info.height as usize);
    let channels = info.color_type.samples();
    let values = buf[..info.buffer_size()]
        .chunks_exact(channels)
        .map(|px| {
            let c = |i: usize| f32::from(px[i]) / 255.0;
            match channels {
                1 => c(0),
                2 => c(0) * c(1) + (1.0 - c(1)),
                3 => 0.299 * c(0) + 0.587 * c(1) + 0.114 * c(2),
                _ => (0.299 * c(0) + 0.587 * c(1) + 0.114 * c(2)) * c(3) + (1.0 - c(3)),
            }
        })
        .collect();
    Ok(Gray {
        width: w,
        height: h,
        values,
    })
}

/// Decodes a PGM, binary (P5, 8 or 16 bits) or ASCII (P2).
fn decode_pgm(bytes: &[u8], max_pixels: usize) -> Result<Gray, String> {
    let mut pos = 2;
    let mut header = [0usize; 3];
    for field in &mut header {
        // Skip whitespace and `#` comments, then read a decimal number.
        loop {
            match bytes.get(pos) {
                Some(b'#') => {
                    while bytes.get(pos).is_some_and(|&b| b != b'\n') {
                        pos += 1;
                    }
                }
                Some(b) if b.is_ascii_whitespace() => pos += 1,
                _ => break,
            }
        }
        let start = pos;
        while bytes.get(pos).is_some_and(u8::is_ascii_digit) {
            pos += 1;
        }
        *field = std::str::from_utf8(&bytes[start..pos])
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or("malformed PGM header")?;
    }
    let [w, h, maxval] = header;
    if w == 0 || h == 0 || maxval == 0 || maxval > 65535 {
        return Err(format!("PGM header {w}×{h}, maxval {maxval}"));
    }
    check_pixels(w, h, max_pixels)?;
    let n = w
        .checked_mul(h)
        .filter(|&n| n <= bytes.len())
        .ok_or("PGM shorter than its header says")?;
    let body = bytes.get(pos + 1..).unwrap_or_default();
    let values: Vec<f32> = if bytes[1] == b'5' {
        let width = if maxval > 255 { 2 } else { 1 };
        if body.len() < n * width {
            return Err("PGM shorter than its header says".into());
        }
        body.chunks_exact(width)
            .take(n)
            .map(|c| c.iter().fold(0u32, |v, &b| v << 8 | u32::from(b)) as f32 / maxval as f32)
            .collect()
    } else {
        let text = std::str::from_utf8(body).map_err(|_| "P2 body is not text")?;
        let v: Vec<f32> = text
            .split_ascii_whitespace()
            .take(n)
            .map(|t| t.parse::<u32>().map(|x| x as f32 / maxval as f32))
            .collect::<Result<_, _>>()
            .map_err(|e| e.to_string())?;
        if v.len() < n {
            return Err("PGM shorter than its header says".into());
        }
        v
    };
    Ok(Gray {
        width: w,
        height: h,
        values,
    })
}

/// Refuses a `w × h` picture of more than `max_pixels` pixels.
fn check_pixels(w: usize, h: usize, max_pixels: usize) -> Result<(), String> {
    match w.checked_mul(h) {
        Some(n) if n <= max_pixels => Ok(()),
        _ => Err(format!(
            "a {w}×{h} picture is larger than the {max_pixels} pixels accepted"
        )),
    }
}

/// The MNIST-like 28×28 digit of a grayscale picture (see the module docs).
pub fn to_mnist(gray: &Gray) -> Vec<u8> {
    let (w, h) = (gray.width, gray.height);
    let border: Vec<f32> = (0..w * h)
        .filter(|i| {
            let (x, y) = (i % w, i / w);
            x == 0 || y == 0 || x + 1 == w || y + 1 == h
        })
        .map(|i| gray.values[i])
        .collect();
    let invert = border.iter().sum::<f32>() / border.len() as f32 > 0.5;
    let ink: Vec<f32> = gray
        .values
        .iter()
        .map(|&v| if invert { 1.0 - v } else { v }.clamp(0.0, 1.0))
        .collect();
    let peak = ink.iter().copied().fold(0.0, f32::max);
    let mut out = vec![0u8; IMAGE_PIXELS];
    if peak <= 0.0 {
        return out;
    }
    let on = |x: usize, y: usize| ink[y * w + x] > 0.1 * peak;
    let xs: Vec<usize> = (0..w).filter(|&x| (0..h).any(|y| on(x, y))).collect();
    let ys: Vec<usize> = (0..h).filter(|&y| (0..w).any(|x| on(x, y))).collect();
    let (x0, x1, y0, y1) = (xs[0], xs[xs.len() - 1] + 1, ys[0], ys[ys.len() - 1] + 1);
    let (bw, bh) = (x1 - x0, y1 - y0);
    let scale = 20.0 / bw.max(bh) as f32;
    let (tw, th) = (
        ((bw as f32 * scale).round() as usize).max(1),
        ((bh as f32 * scale).round() as usize).max(1),
    );
    // Area-averaged resampling of the box into tw × th.
    let mut small = vec![0f32; tw * th];
    for (ty, row) in small.chunks_mut(tw).enumerate() {
        for (tx, cell) in row.iter_mut().enumerate() {
            let (sx0, sx1) = (x0 + tx * bw / tw, x0 + ((tx + 1) * bw).div_ceil(tw));
            let (sy0, sy1) = (y0 + ty * bh / th, y0 + ((ty + 1) * bh).div_ceil(th));
            let mut sum = 0.0;
            for y in sy0..sy1 {
                for x in sx0..sx1 {
                    sum += ink[y * w + x];
                }
            }
            *cell = sum / ((sx1 - sx0) * (sy1 - sy0)) as f32 / peak;
        }
    }
    let mass: f32 = small.iter().sum::<f32>().max(f32::MIN_POSITIVE);
    let cx = small
        .iter()
        .enumerate()
        .map(|(i, v)| (i % tw) as f32 * v)
        .sum::<f32>()
        / mass;
    let cy = small
        .iter()
        .enumerate()
        .map(|(i, v)| (i / tw) as f32 * v)
        .sum::<f32>()
        / mass;
    let place = |c: f32, t: usize| {
        ((IMAGE_SIDE as f32 / 2.0 - 0.5 - c).round() as isize).clamp(0, (IMAGE_SIDE - t) as isize)
            as usize
    };
    let (ox, oy) = (place(cx, tw), place(cy, th));
    for (ty, row) in small.chunks(tw).enumerate() {
        for (tx, v) in row.iter().enumerate() {
            out[(oy + ty) * IMAGE_SIDE + ox + tx] = (v * 255.0).round().clamp(0.0, 255.0) as u8;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pgm(w: usize, h: usize, pixels: &[u8]) -> Vec<u8> {
        let mut f = format!("P5\n# a comment\n{w} {h}\n255\n").into_bytes();
        f.extend(pixels);
        f
    }

    #[test]
    fn a_dark_stroke_on_paper_becomes_a_centred_light_digit() {
        // A 100×60 white page with a black vertical bar at x 10..20, y 5..55.
        let (w, h) = (100, 60);
        let mut px = vec![255u8; w * h];
        for y in 5..55 {
            for x in 10..20 {
                px[y * w + x] = 0;
            }
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bar.pgm");
        std::fs::write(&path, pgm(w, h, &px)).unwrap();
        let digit = load_digit(&path).unwrap();
        assert_eq!(digit.len(), IMAGE_PIXELS);
        // 10×50 box scaled by 20/50: 4×20, centred: columns 12..16, rows 4..24.
        let lit: Vec<(usize, usize)> = (0..IMAGE_PIXELS)
            .filter(|&i| digit[i] > 128)
            .map(|i| (i % 28, i / 28))
            .collect();
        assert_eq!(lit.len(), 4 * 20);
        assert!(
            lit.iter()
                .all(|&(x, y)| (12..16).contains(&x) && (4..24).contains(&y)),
            "{lit:?}"
        );
        // Background stays black.
        assert_eq!(digit[0], 0);
    }

    #[test]
    fn png_and_ascii_pgm_read_the_same_picture() {
        let (w, h) = (8, 8);
        let px: Vec<u8> = (0..w * h)
            .map(|i| {
                if (2..6).contains(&(i % w)) && (1..7).contains(&(i / w)) {
                    200
                } else {
                    10
                }
            })
            .collect();
        let dir = tempfile::tempdir().unwrap();
        let png_path = dir.path().join("d.png");
        {
            let file = std::fs::File::create(&png_path).unwrap();
            let mut enc = png::Encoder::new(file, w as u32, h as u32);
            enc.set_color(png::ColorType::Grayscale);
            enc.set_depth(png::BitDepth::Eight);
            enc.write_header().unwrap().write_image_data(&px).unwrap();
        }
        let ascii = dir.path().join("d.pgm");
        let body: Vec<String> = px.iter().map(u8::to_string).collect();
        std::fs::write(&ascii, format!("P2\n{w} {h}\n255\n{}\n", body.join(" "))).unwrap();
        assert_eq!(load_digit(&png_path).unwrap(), load_digit(&ascii).unwrap());
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_and_mutated_files_never_panic(
            kind in 0usize..4,
            tail in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300),
            flip in proptest::prelude::any::<(usize, u8)>(),
        ) {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("x");
            let mut bytes = match kind {
                0 => b"P5\n".to_vec(),
                1 => b"P2\n".to_vec(),
                2 => b"\x89PNG\r\n\x1a\n".to_vec(),
                _ => pgm(5, 4, &[9; 20]),
            };
            bytes.extend(&tail);
            let i = flip.0 % bytes.len();
            bytes[i] ^= flip.1;
            std::fs::write(&path, &bytes).unwrap();
            match load_digit(&path) {
                Ok(digit) => proptest::prop_assert_eq!(digit.len(), IMAGE_PIXELS),
                Err(e) => proptest::prop_assert!(e.to_string().contains("x")),
            }
        }
    }

    #[test]
    fn pictures_over_the_pixel_limit_are_refused() {
        let page = pgm(100, 100, &[0; 100 * 100]);
        let err = digit_from_bytes(&page, 100 * 99).unwrap_err();
        assert!(err.0.contains("100×100"), "{err}");
        assert_eq!(
            digit_from_bytes(&page, 100 * 100).unwrap().len(),
            IMAGE_PIXELS
        );
        let mut png_bytes = Vec::new();
        {
            let mut enc = png::Encoder::new(&mut png_bytes, 300, 200);
            enc.set_color(png::ColorType::Grayscale);
            enc.set_depth(png::BitDepth::Eight);
            let rows = vec![255u8; 300 * 200];
            enc.write_header().unwrap().write_image_data(&rows).unwrap();
        }
        assert!(
            digit_from_bytes(&png_bytes, 1000)
                .unwrap_err()
                .0
                .contains("300×200")
        );
        assert!(
            digit_from_bytes(b"GIF89a", 1000)
                .unwrap_err()
                .0
                .contains("signature")
        );
    }

    #[test]
    fn bad_files_are_typed_errors() {
        let dir = tempfile::tempdir().unwrap();
        for (name, bytes) in [
            ("text.txt", b"hello".to_vec()),
            ("short.pgm", pgm(100, 100, &[0; 10])),
            ("header.pgm", b"P5\n-1 x\n255\n".to_vec()),
            ("cut.png", b"\x89PNG\r\n\x1a\n\0\0".to_vec()),
        ] {
            let path = dir.path().join(name);
            std::fs::write(&path, bytes).unwrap();
            let err = load_digit(&path).unwrap_err();
            assert!(matches!(err, DataError::Image { .. }), "{name}: {err}");
            assert!(err.to_string().contains(name));
        }
    }
}
