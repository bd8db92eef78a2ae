//! Hostile IDX files: property tests that take small valid image and label files cut from the
//! real MNIST test split (`$BURNQ_DATA_DIR`), raw or gzip-compressed, corrupt one of them — bit
//! flips, overwritten, inserted and deleted bytes, truncation, forged item counts and image
//! sizes — and load the pair with [`ImageSet::from_files`]. The reader must never panic; every
//! refusal is a parse error of [`DataError`] that names the file.
//!
//! What may still load is pinned down too: a gzip file only with exactly the original
//! content (its CRC-32 and length trailer catch data changes; header fields such as the
//! modification time are not covered), a raw file only when the change stays in the data
//! after the header (a different pixel, a different digit label) and leaves its length alone.
//!
//! Each property runs `PROPTEST_CASES` cases (256 by default).

use std::cell::RefCell;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use burnq_data::idx::{IMAGES_MAGIC, LABELS_MAGIC, parse_images, parse_labels, read_maybe_gzip};
use burnq_data::locate::test_locator;
use burnq_data::{DataError, DatasetKind, IMAGE_PIXELS, ImageSet, Split};
use burnq_testkit::mutation::{ByteEdit, Tally, byte_edit, runner};
use flate2::{Compression, read::GzDecoder, write::GzEncoder};
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;

/// Images (and labels) in the small files.
const N: usize = 4;

/// An IDX file: big-endian magic and dimensions, then the data.
fn idx(magic: u32, dims: &[u32], data: &[u8]) -> Vec<u8> {
    let mut file = magic.to_be_bytes().to_vec();
    for d in dims {
        file.extend(d.to_be_bytes());
    }
    file.extend(data);
    file
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = GzEncoder::new(Vec::new(), Compression::default());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}

fn gunzip(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    GzDecoder::new(bytes).read_to_end(&mut out).unwrap();
    out
}

/// The first [`N`] MNIST test images and labels, as the four valid files.
#[derive(Debug)]
struct Originals {
    set: ImageSet,
    images_raw: Vec<u8>,
    labels_raw: Vec<u8>,
    images_gz: Vec<u8>,
    labels_gz: Vec<u8>,
}

fn originals() -> &'static Originals {
    static ORIGINALS: OnceLock<Originals> = OnceLock::new();
    ORIGINALS.get_or_init(|| {
        let loc = test_locator();
        let find = |stem| loc.find(DatasetKind::Mnist, stem).unwrap();
        let images_path = find(Split::Test.images_file());
        let labels_path = find(Split::Test.labels_file());
        let images = parse_images(&read_maybe_gzip(&images_path).unwrap(), &images_path).unwrap();
        let labels = parse_labels(&read_maybe_gzip(&labels_path).unwrap(), &labels_path).unwrap();
        let set = ImageSet {
            kind: DatasetKind::Mnist,
            split: Split::Test,
            pixels: images.pixels[..N * IMAGE_PIXELS].to_vec(),
            labels: labels[..N].to_vec(),
        };
        let images_raw = idx(IMAGES_MAGIC, &[N as u32, 28, 28], &set.pixels);
        let labels_raw = idx(LABELS_MAGIC, &[N as u32], &set.labels);
        Originals {
            images_gz: gzip(&images_raw),
            labels_gz: gzip(&labels_raw),
            images_raw,
            labels_raw,
            set,
        }
    })
}

/// Which file of the pair is corrupted, and how it is stored.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Target {
    Images { gz: bool },
    Labels { gz: bool },
}

impl Target {
    fn gz(self) -> bool {
        matches!(
            self,
            Target::Images { gz: true } | Target::Labels { gz: true }
        )
    }

    /// The valid file as stored.
    fn original(self) -> &'static [u8] {
        let o = originals();
        match self {
            Target::Images { gz: false } => &o.images_raw,
            Target::Images { gz: true } => &o.images_gz,
            Target::Labels { gz: false } => &o.labels_raw,
            Target::Labels { gz: true } => &o.labels_gz,
        }
    }

    /// Bytes of the (decompressed) IDX header.
    fn header_len(self) -> usize {
        match self {
            Target::Images { .. } => 16,
            Target::Labels { .. } => 8,
        }
    }
}

/// One corruption of a file.
#[derive(Debug, Clone)]
enum Mutation {
    /// A byte edit anywhere, or (`head`) in the first 16 bytes, so that IDX and gzip headers
    /// are hit often.
    Bytes { head: bool, edit: ByteEdit },
    /// Forge the item count (the first dimension) of the IDX content, recompressing a gzip
    /// file.
    Count(u32),
    /// Forge the image rows (`dim` 1) or columns (`dim` 2) of an image file; a label file
    /// has one dimension, so this forges its count.
    Dim { dim: usize, value: u32 },
}

impl Mutation {
    fn apply(&self, target: Target) -> Vec<u8> {
        let file = target.original();
        match self {
            Mutation::Bytes { head, edit } => {
                let span = if *head {
                    file.len().min(16)
                } else {
                    file.len()
                };
                edit.apply(file, 0..span)
            }
            Mutation::Count(value) => forge(target, 0, *value),
            Mutation::Dim { dim, value } => {
                let dim = if target.header_len() == 16 { *dim } else { 0 };
                forge(target, dim, *value)
            }
        }
    }
}

/// The file with IDX dimension `dim` set to `value` (compressed again if it was).
fn forge(target: Target, dim: usize, value: u32) -> Vec<u8> {
    let file = target.original();
    let mut content = if target.gz() {
        gunzip(file)
    } else {
        file.to_vec()
    };
    content[4 + 4 * dim..8 + 4 * dim].copy_from_slice(&value.to_be_bytes());
    if target.gz() { gzip(&content) } else { content }
}

fn target() -> impl Strategy<Value = Target> {
    prop_oneof![
        any::<bool>().prop_map(|gz| Target::Images { gz }),
        any::<bool>().prop_map(|gz| Target::Labels { gz }),
    ]
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let count = prop_oneof![
        Just(0),
        Just(N as u32 - 1),
        Just(N as u32 + 1),
        Just(u32::MAX),
        any::<u32>()
    ];
    let size = prop_oneof![Just(0), Just(27), Just(29), Just(u32::MAX), any::<u32>()];
    prop_oneof![
        8 => (any::<bool>(), byte_edit()).prop_map(|(head, edit)| Mutation::Bytes { head, edit }),
        1 => count.prop_map(Mutation::Count),
        1 => (1..=2usize, size).prop_map(|(dim, value)| Mutation::Dim { dim, value }),
    ]
}

/// Whether a changed file may still load: gzip never (a load must give the original set,
/// checked separately), raw only for a same-length change after the IDX header.
fn may_load_changed(target: Target, mutated: &[u8]) -> bool {
    let original = target.original();
    !target.gz()
        && mutated.len() == original.len()
        && mutated[..target.header_len()] == original[..target.header_len()]
}

/// The parse errors a corrupted file may produce (never `NotFound`, `Checksum`, `Download`).
fn is_parse_error(err: &DataError) -> bool {
    matches!(
        err,
        DataError::Gzip { .. }
            | DataError::BadMagic { .. }
            | DataError::WrongLength { .. }
            | DataError::WrongImageSize { .. }
            | DataError::BadLabel { .. }
            | DataError::CountMismatch { .. }
    )
}

/// A folder holding one valid image file and one valid label file per storage.
struct Files {
    _dir: tempfile::TempDir,
    root: PathBuf,
}

impl Files {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_owned();
        Self { _dir: dir, root }
    }

    /// Writes the pair with `target` replaced by `bytes`; returns (images, labels, target).
    fn write(&self, target: Target, bytes: &[u8]) -> (PathBuf, PathBuf, PathBuf) {
        let gz = target.gz();
        let ext = if gz { ".gz" } else { "" };
        let images = self.root.join(format!("images-idx3-ubyte{ext}"));
        let labels = self.root.join(format!("labels-idx1-ubyte{ext}"));
        let (o, mutated) = (originals(), target);
        let (img, lab): (&[u8], &[u8]) = match mutated {
            Target::Images { .. } => (bytes, if gz { &o.labels_gz } else { &o.labels_raw }),
            Target::Labels { .. } => (if gz { &o.images_gz } else { &o.images_raw }, bytes),
        };
        std::fs::write(&images, img).unwrap();
        std::fs::write(&labels, lab).unwrap();
        let path = match mutated {
            Target::Images { .. } => images.clone(),
            Target::Labels { .. } => labels.clone(),
        };
        (images, labels, path)
    }
}

fn load(images: &Path, labels: &Path) -> Result<ImageSet, DataError> {
    ImageSet::from_files(DatasetKind::Mnist, Split::Test, images, labels)
}

/// The set a raw file pair describes, read without the reader (header skipped).
fn raw_set(target: Target, mutated: &[u8]) -> ImageSet {
    let o = originals();
    let mut set = o.set.clone();
    match target {
        Target::Images { .. } => set.pixels = mutated[16..].to_vec(),
        Target::Labels { .. } => set.labels = mutated[8..].to_vec(),
    }
    set
}

#[test]
fn valid_files_load() {
    let files = Files::new();
    for target in [Target::Images { gz: false }, Target::Images { gz: true }] {
        let (images, labels, _) = files.write(target, target.original());
        assert_eq!(load(&images, &labels).unwrap(), originals().set);
    }
}

#[test]
fn mutated_idx_files_are_refused_without_panic() {
    let files = Files::new();
    let tally = RefCell::new(Tally::default());
    runner(file!())
        .run(&(target(), mutation()), |(target, m)| {
            let bytes = m.apply(target);
            let (images, labels, path) = files.write(target, &bytes);
            let result = load(&images, &labels);
            let mut tally = tally.borrow_mut();
            tally.cases += 1;
            if bytes == target.original() {
                tally.no_ops += 1;
                prop_assert_eq!(result.unwrap(), originals().set.clone());
                return Ok(());
            }
            match result {
                Err(err) => {
                    prop_assert!(is_parse_error(&err), "unexpected error: {err:?}");
                    let message = err.to_string();
                    prop_assert!(
                        message.contains(&path.display().to_string()),
                        "message does not name {}: {message}",
                        path.display()
                    );
                    tally.error(&err);
                }
                Ok(set) => {
                    check_loaded(target, &bytes, &set)?;
                    tally.loaded(|| describe(target, &bytes));
                }
            }
            Ok(())
        })
        .unwrap();
    tally.into_inner().finish("IDX mutations");
}

/// Where a binary file changed: `Images { gz: true }: 3140 → 3140 bytes, first change at 9`.
fn describe(target: Target, mutated: &[u8]) -> String {
    let original = target.original();
    let first = original
        .iter()
        .zip(mutated)
        .take_while(|(a, b)| a == b)
        .count();
    format!(
        "{target:?}: {} → {} bytes, first change at {first}",
        original.len(),
        mutated.len()
    )
}

/// A changed file that loaded: a gzip file must give the original set, a raw one exactly the
/// data it holds, with the invariants of [`ImageSet`].
fn check_loaded(target: Target, bytes: &[u8], set: &ImageSet) -> Result<(), TestCaseError> {
    prop_assert_eq!(set.pixels.len(), set.len() * IMAGE_PIXELS);
    prop_assert!(set.labels.iter().all(|&l| l <= 9));
    if target.gz() {
        prop_assert_eq!(set, &originals().set, "a changed gzip file gave other data");
    } else {
        prop_assert!(
            may_load_changed(target, bytes),
            "a raw file with a changed header or length loaded"
        );
        prop_assert_eq!(set, &raw_set(target, bytes));
    }
    Ok(())
}

#[test]
fn arbitrary_gzip_streams_are_refused_without_panic() {
    // Random bytes after the gzip magic: the decoder, not the IDX parser, must refuse them.
    let files = Files::new();
    let target = Target::Labels { gz: true };
    let tally = RefCell::new(Tally::default());
    runner(file!())
        .run(&prop::collection::vec(any::<u8>(), 0..512), |tail| {
            let mut bytes = vec![0x1f, 0x8b];
            bytes.extend(tail);
            let (images, labels, path) = files.write(target, &bytes);
            let err = load(&images, &labels).expect_err("random gzip stream loaded");
            prop_assert!(is_parse_error(&err), "unexpected error: {err:?}");
            prop_assert!(err.to_string().contains(&path.display().to_string()));
            let mut tally = tally.borrow_mut();
            tally.cases += 1;
            tally.error(&err);
            Ok(())
        })
        .unwrap();
    tally.into_inner().finish("arbitrary gzip streams");
}
