//! Hostile model files: property tests that take a valid saved model and corrupt it — bit
//! flips anywhere (length field, JSON header, tensor data), overwritten, inserted and deleted
//! bytes, truncation, forged header lengths, edits of the `meta` JSON document, and files of
//! arbitrary bytes — and check that [`burnq_quant::load`] never panics and refuses every
//! corrupted file with an error that names it.
//!
//! One exception is allowed, and checked: format version 2's checksum covers the tensor data,
//! not the `meta` document, so a change confined to `meta` that still describes a valid model
//! loads — in a per-channel model, a weight zero point 7 → 8 or a low digit of one channel's
//! `m0` (within the 10⁻⁶ tolerance); in any model, `act_max` 255 → 254 or the recorded input
//! normalization. Such a model must keep the original weights and biases; each property
//! prints how many changed files loaded, and the first few changes.
//!
//! Each property runs `PROPTEST_CASES` cases (256 by default) on two files, 8-bit per tensor
//! and 4-bit per channel; a long run outside CI:
//! `PROPTEST_CASES=20000 cargo test -p burnq-quant --test hostile -- --nocapture`.
//! A counting allocator also checks that a forged header length fails without allocating
//! what it claims.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::{Cell, RefCell};
use std::ops::Range;
use std::path::Path;
use std::sync::OnceLock;

use burnq_quant::{ConvertOptions, QuantModel, load, save};
use burnq_testkit::json_edit::json_edit;
use burnq_testkit::model_file::{model, rewrite_signed};
use burnq_testkit::mutation::{ByteEdit, Tally, byte_edit, describe_change, runner};
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::TestCaseError;
use serde_json::Value;

/// The system allocator, recording per thread the largest block asked for.
struct Tracking;

thread_local! {
    static LARGEST: Cell<usize> = const { Cell::new(0) };
}

fn note(size: usize) {
    // `try_with`: allocations during thread teardown are not tracked.
    let _ = LARGEST.try_with(|l| l.set(l.get().max(size)));
}

// SAFETY: every call is forwarded unchanged to `System`; only sizes are recorded.
unsafe impl GlobalAlloc for Tracking {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size);
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Tracking = Tracking;

/// `f()` and the largest single allocation this thread made while it ran.
fn largest_allocation<T>(f: impl FnOnce() -> T) -> (T, usize) {
    LARGEST.with(|l| l.set(0));
    let value = f();
    (value, LARGEST.with(Cell::get))
}

/// A valid model file and where its parts lie.
#[derive(Debug)]
struct Original {
    bytes: Vec<u8>,
    model: QuantModel,
    /// The JSON header's length, as the first 8 bytes say.
    header_len: u64,
    /// The `meta` metadata value, quotes included, as stored in the header (signed by the
    /// checksum since format version 2, like the tensor data): a zone mutations aim at.
    meta: Range<usize>,
    /// The `meta` document, parsed.
    meta_doc: Value,
}

impl Original {
    /// `model` saved, and read back as bytes.
    fn new(model: QuantModel) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("model.safetensors");
        save(&model, &path).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        let header_len = u64::from_le_bytes(bytes[..8].try_into().unwrap());
        let header = &bytes[8..8 + header_len as usize];
        let json: Value = serde_json::from_slice(header).unwrap();
        let meta_text = json["__metadata__"]["meta"].as_str().unwrap();
        let quoted = serde_json::to_string(meta_text).unwrap();
        let start = 8 + header
            .windows(quoted.len())
            .position(|w| w == quoted.as_bytes())
            .expect("the meta value is stored as serde_json escapes it");
        Self {
            bytes,
            model,
            header_len,
            meta: start..start + quoted.len(),
            meta_doc: serde_json::from_str(meta_text).unwrap(),
        }
    }
}

/// Two valid files, read once: 8-bit per tensor (the model of
/// [`saved`](burnq_testkit::model_file::saved)) and 4-bit weights per channel with 8-bit activations.
fn originals() -> &'static [Original; 2] {
    static ORIGINALS: OnceLock<[Original; 2]> = OnceLock::new();
    ORIGINALS.get_or_init(|| {
        [
            Original::new(model(8)),
            Original::new(model(ConvertOptions {
                weight_bits: 4,
                act_bits: 8,
                per_channel: true,
            })),
        ]
    })
}

/// One of [`originals`].
fn original() -> impl Strategy<Value = &'static Original> {
    prop::sample::select(originals().iter().collect::<Vec<_>>())
}

/// Where a byte edit lands.
#[derive(Debug, Clone, Copy)]
enum Zone {
    /// Anywhere in the file (mostly tensor data: the header is about 7% of it).
    File,
    /// In the 8-byte length or the JSON header.
    Header,
    /// In the `meta` value of the header (the part a change may leave loadable).
    Meta,
}

impl Zone {
    fn span(self, original: &Original) -> Range<usize> {
        match self {
            Zone::File => 0..original.bytes.len(),
            Zone::Header => 0..8 + original.header_len as usize,
            Zone::Meta => original.meta.clone(),
        }
    }
}

/// A forged header length.
#[derive(Debug, Clone, Copy)]
enum Claim {
    /// This value.
    Exact(u64),
    /// The real header length plus this.
    Header(i64),
    /// The file's length plus this.
    File(i64),
}

impl Claim {
    fn resolve(self, original: &Original) -> u64 {
        match self {
            Claim::Exact(n) => n,
            Claim::Header(d) => original.header_len.wrapping_add_signed(d),
            Claim::File(d) => (original.bytes.len() as u64).wrapping_add_signed(d),
        }
    }
}

/// One corruption of a model file.
#[derive(Debug, Clone)]
enum Mutation {
    /// A byte edit in a zone.
    Bytes(Zone, ByteEdit),
    /// Replace the little-endian header length.
    HeaderLength(Claim),
    /// Replace one ASCII digit of the `meta` value by another digit: the corruption most
    /// likely to leave a loadable model.
    Digit(Index, u8),
}

impl Mutation {
    fn apply(&self, original: &Original) -> Vec<u8> {
        let file = original.bytes.as_slice();
        match self {
            Mutation::Bytes(zone, edit) => edit.apply(file, zone.span(original)),
            Mutation::HeaderLength(claim) => {
                let mut out = file.to_vec();
                out[..8].copy_from_slice(&claim.resolve(original).to_le_bytes());
                out
            }
            Mutation::Digit(which, digit) => {
                let mut out = file.to_vec();
                let digits: Vec<usize> = original
                    .meta
                    .clone()
                    .filter(|&i| file[i].is_ascii_digit())
                    .collect();
                out[digits[which.index(digits.len())]] = b'0' + digit;
                out
            }
        }
    }
}

/// Header lengths around the real one and the file's, at the limits of the parser (which
/// refuses more than 100,000,000), and arbitrary.
fn header_length() -> impl Strategy<Value = Claim> {
    prop_oneof![
        prop::sample::select(vec![
            0,
            1,
            99_999_999,
            100_000_001,
            u64::from(u32::MAX),
            1 << 63,
            u64::MAX,
        ])
        .prop_map(Claim::Exact),
        any::<u64>().prop_map(Claim::Exact),
        (-64..64i64).prop_map(Claim::Header),
        (-16..16i64).prop_map(Claim::File),
    ]
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let zone = prop_oneof![Just(Zone::File), Just(Zone::Header), Just(Zone::Meta)];
    prop_oneof![
        6 => (zone, byte_edit()).prop_map(|(z, e)| Mutation::Bytes(z, e)),
        1 => header_length().prop_map(Mutation::HeaderLength),
        1 => (any::<Index>(), 0..10u8).prop_map(|(i, d)| Mutation::Digit(i, d)),
    ]
}

/// Writes `bytes` to `path` and loads it. An error must name the file; a file that loads must
/// be `may_load`, and keep `original`'s weights and biases (`change` then describes it).
fn check_load(
    original: &Original,
    path: &Path,
    bytes: &[u8],
    may_load: bool,
    tally: &RefCell<Tally>,
    change: impl FnOnce() -> String,
) -> Result<(), TestCaseError> {
    std::fs::write(path, bytes).unwrap();
    let mut tally = tally.borrow_mut();
    tally.cases += 1;
    match load(path) {
        Err(err) => {
            let message = err.to_string();
            prop_assert!(
                message.contains(&path.display().to_string()),
                "message does not name the file: {message}"
            );
            tally.error(&err);
        }
        Ok(model) => {
            prop_assert!(may_load, "a corrupted file loaded");
            for (got, want) in model.layers().iter().zip(original.model.layers()) {
                prop_assert_eq!(&got.weights, &want.weights);
                prop_assert_eq!(&got.bias, &want.bias);
            }
            tally.loaded(change);
        }
    }
    Ok(())
}

#[test]
fn mutated_files_are_refused_without_panic() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mutated.safetensors");
    let tally = RefCell::new(Tally::default());
    runner(file!())
        .run(&(original(), mutation()), |(original, m)| {
            let bytes = m.apply(original);
            if bytes == original.bytes {
                let mut tally = tally.borrow_mut();
                tally.cases += 1;
                tally.no_ops += 1;
                std::fs::write(&path, &bytes).unwrap();
                prop_assert_eq!(&load(&path).unwrap(), &original.model);
                return Ok(());
            }
            // The checksum signs the tensor data and the `meta` text: every change is refused.
            check_load(original, &path, &bytes, false, &tally, || {
                describe_change(&original.bytes, &bytes)
            })
        })
        .unwrap();
    tally.into_inner().finish("byte mutations");
}

#[test]
fn edited_meta_documents_are_refused_without_panic() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("edited.safetensors");
    let tally = RefCell::new(Tally::default());
    let edits = prop::collection::vec(json_edit(), 1..4);
    runner(file!())
        .run(&(original(), edits), |(original, edits)| {
            let meta = &original.meta_doc;
            let mut edited = meta.clone();
            let changes: Vec<String> = edits.iter().map(|e| e.apply(&mut edited)).collect();
            if edited == *meta {
                let mut tally = tally.borrow_mut();
                tally.cases += 1;
                tally.no_ops += 1;
                return Ok(());
            }
            std::fs::write(&path, &original.bytes).unwrap();
            // Signed again, so that the checks behind the checksum judge the document.
            rewrite_signed(&path, |_, m| {
                m.insert("meta".into(), edited.to_string());
            });
            let bytes = std::fs::read(&path).unwrap();
            // The tensors are untouched: a document that still describes a valid model loads.
            check_load(original, &path, &bytes, true, &tally, || changes.join("; "))
        })
        .unwrap();
    tally.into_inner().finish("meta edits");
}

/// A file of arbitrary bytes, arbitrary bytes after a length that fits them, or a header of
/// printable characters between braces.
fn arbitrary_file() -> impl Strategy<Value = Vec<u8>> {
    let bytes = prop::collection::vec(any::<u8>(), 0..2048);
    prop_oneof![
        bytes.clone(),
        bytes.prop_map(|tail| {
            let mut file = (tail.len() as u64).to_le_bytes().to_vec();
            file.extend(tail);
            file
        }),
        "\\{[ -~]{0,200}\\}".prop_map(|header| {
            let mut file = (header.len() as u64).to_le_bytes().to_vec();
            file.extend(header.as_bytes());
            file
        }),
    ]
}

#[test]
fn arbitrary_bytes_are_refused_without_panic() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("arbitrary.safetensors");
    let tally = RefCell::new(Tally::default());
    runner(file!())
        .run(&arbitrary_file(), |bytes| {
            check_load(&originals()[0], &path, &bytes, false, &tally, String::new)
        })
        .unwrap();
    tally.into_inner().finish("arbitrary bytes");
}

#[test]
fn forged_header_length_fails_fast_without_allocating_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("forged.safetensors");
    let original = &originals()[0];
    let n = original.header_len;
    let len = original.bytes.len() as u64;
    let claims = [
        0,
        1,
        n - 1,
        n + 1,
        len - 8,
        len - 7,
        99_999_999,
        100_000_001,
        u64::from(u32::MAX),
        1 << 63,
        u64::MAX,
    ]
    .into_iter()
    .chain((0..64).map(|bit| n ^ (1 << bit)));
    let mut largest = 0;
    for claimed in claims {
        let bytes = Mutation::HeaderLength(Claim::Exact(claimed)).apply(original);
        std::fs::write(&path, &bytes).unwrap();
        let (result, allocated) = largest_allocation(|| load(&path));
        let err = result.expect_err("a forged header length loaded");
        assert!(
            err.to_string().contains(&path.display().to_string()),
            "{claimed}: message does not name the file: {err}"
        );
        // Reading the file allocates its size; nothing may be sized by the claimed length.
        assert!(
            allocated <= 2 * original.bytes.len(),
            "{claimed}: a {allocated}-byte allocation for a {len}-byte file"
        );
        largest = largest.max(allocated);
    }
    eprintln!("forged header lengths: largest allocation {largest} bytes for a {len}-byte file");
}
