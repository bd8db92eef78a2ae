//! Corruptions for the hostile-input tests (`tests/hostile.rs` of burnq-quant, burnq-data and
//! burnq-calib, `tests/import_hostile.rs` of burnq-model): byte edits of a file, the proptest
//! runner they share, and a tally of how the cases ended. JSON edits are in
//! [`json_edit`](crate::json_edit).

use std::collections::BTreeMap;
use std::ops::Range;
use std::time::Instant;

use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::{Config, FileFailurePersistence, TestRunner};

/// One byte-level corruption; positions are drawn inside a span of the file.
#[derive(Debug, Clone)]
pub enum ByteEdit {
    /// XOR each non-zero mask into the byte at its position.
    Flip(Vec<(Index, u8)>),
    /// Overwrite bytes from a position on (clipped at the end of the file).
    Overwrite(Index, Vec<u8>),
    /// Keep only the bytes before a position (a strict prefix).
    Truncate(Index),
    /// Insert bytes before a position.
    Insert(Index, Vec<u8>),
    /// Delete 1..=16 bytes from a position (clipped at the end of the file).
    Delete(Index, usize),
}

impl ByteEdit {
    /// `file` with this edit at positions drawn from `span` (non-empty, within `file`).
    pub fn apply(&self, file: &[u8], span: Range<usize>) -> Vec<u8> {
        let pick = |at: &Index| span.start + at.index(span.len());
        let mut out = file.to_vec();
        match self {
            ByteEdit::Flip(flips) => {
                for (at, mask) in flips {
                    out[pick(at)] ^= mask;
                }
            }
            ByteEdit::Overwrite(at, bytes) => {
                let start = pick(at);
                let end = (start + bytes.len()).min(out.len());
                out[start..end].copy_from_slice(&bytes[..end - start]);
            }
            ByteEdit::Truncate(at) => out.truncate(pick(at)),
            ByteEdit::Insert(at, bytes) => {
                let at = pick(at);
                out.splice(at..at, bytes.iter().copied());
            }
            ByteEdit::Delete(at, count) => {
                let at = pick(at);
                out.drain(at..(at + count).min(file.len()));
            }
        }
        out
    }
}

/// Byte edits, weighted towards flips and overwrites.
pub fn byte_edit() -> impl Strategy<Value = ByteEdit> {
    let bytes = |max| prop::collection::vec(any::<u8>(), 1..max);
    prop_oneof![
        3 => prop::collection::vec((any::<Index>(), 1..=u8::MAX), 1..8).prop_map(ByteEdit::Flip),
        2 => (any::<Index>(), bytes(32)).prop_map(|(i, b)| ByteEdit::Overwrite(i, b)),
        1 => any::<Index>().prop_map(ByteEdit::Truncate),
        1 => (any::<Index>(), bytes(16)).prop_map(|(i, b)| ByteEdit::Insert(i, b)),
        1 => (any::<Index>(), 1..=16usize).prop_map(|(i, c)| ByteEdit::Delete(i, c)),
    ]
}

/// A runner of `PROPTEST_CASES` cases (256 by default) for the test file `source`
/// (`file!()`); failing inputs are saved beside it, in `<name>.proptest-regressions`, and
/// replayed first on later runs.
pub fn runner(source: &'static str) -> TestRunner {
    TestRunner::new(Config {
        source_file: Some(source),
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource(
            "proptest-regressions",
        ))),
        ..Config::default()
    })
}

/// How the cases of one property ended.
#[derive(Debug)]
pub struct Tally {
    start: Instant,
    /// Cases run.
    pub cases: usize,
    /// Mutations that left the input unchanged.
    pub no_ops: usize,
    /// Changed inputs that loaded.
    pub loaded: usize,
    /// Refusals by error variant.
    pub errors: BTreeMap<String, usize>,
    /// The first few changes that loaded, described.
    pub loaded_examples: Vec<String>,
}

impl Default for Tally {
    fn default() -> Self {
        Self {
            start: Instant::now(),
            cases: 0,
            no_ops: 0,
            loaded: 0,
            errors: BTreeMap::new(),
            loaded_examples: Vec::new(),
        }
    }
}

impl Tally {
    /// Counts a refusal by the variant name of `err` (the start of its `Debug` form).
    pub fn error(&mut self, err: &impl std::fmt::Debug) {
        let debug = format!("{err:?}");
        let end = debug.find([' ', '{', '(']).unwrap_or(debug.len());
        *self.errors.entry(debug[..end].to_owned()).or_default() += 1;
    }

    /// Counts a changed input that loaded, keeping the description of the first few.
    pub fn loaded(&mut self, describe: impl FnOnce() -> String) {
        self.loaded += 1;
        if self.loaded_examples.len() < 5 {
            self.loaded_examples.push(describe());
        }
    }

    /// Prints the tally (visible with `--nocapture`) and checks that the property ran.
    pub fn finish(&self, property: &str) {
        eprintln!(
            "{property}: {} cases in {:.1} s: {} no-ops, {} changed inputs loaded, errors {:?}",
            self.cases,
            self.start.elapsed().as_secs_f64(),
            self.no_ops,
            self.loaded,
            self.errors
        );
        for example in &self.loaded_examples {
            eprintln!("  loaded after: {example}");
        }
        assert!(self.cases > 0, "{property}: no case ran");
    }
}

/// The first difference between `old` and `new`, with some context:
/// `…"act_max":255,…` → `…"act_max":254,…`.
pub fn describe_change(old: &[u8], new: &[u8]) -> String {
    let prefix = old.iter().zip(new).take_while(|(a, b)| a == b).count();
    let suffix = old[prefix..]
        .iter()
        .rev()
        .zip(new[prefix..].iter().rev())
        .take_while(|(a, b)| a == b)
        .count();
    let context = |bytes: &[u8]| {
        let start = prefix.saturating_sub(24);
        let end = (bytes.len() - suffix + 24).min(bytes.len());
        let text = String::from_utf8_lossy(&bytes[start..end]);
        // Control characters (newlines of pretty JSON, bytes of binary data) escaped.
        text.chars()
            .flat_map(|c| {
                let escaped: Vec<char> = if c.is_control() {
                    c.escape_default().collect()
                } else {
                    vec![c]
                };
                escaped
            })
            .collect::<String>()
    };
    format!("…{}… → …{}…", context(old), context(new))
}
