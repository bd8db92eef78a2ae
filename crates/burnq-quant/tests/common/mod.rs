//! burnq-quant's own test helper, beside the fixtures all crates share in `burnq-testkit`:
//! the kernel implementations this CPU runs ([`kernels`]). `engine.rs` uses all of it,
//! `kernels.rs` a part, hence `allow(dead_code)`.

#![allow(dead_code)]

pub mod kernels;
