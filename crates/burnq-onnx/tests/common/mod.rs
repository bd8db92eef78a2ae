//! Helpers shared by this crate's tests.

pub mod onnxruntime;
