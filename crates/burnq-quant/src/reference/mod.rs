//! The reference integer engine: plain scalar loops, written to be read next to the paper
//! (Jacob et al. 2018, §2.3–2.4). This is the bit-exact definition of the arithmetic; faster
//! kernels must reproduce its outputs exactly and are tested against it.
//!
//! Zero points are handled by pre-subtracting them: each product is
//! `(q_x − Z_in)·(q_w − Z_w[o])`, both offsets formed in `i32` (each within ±255, so a product
//! is within ±65025). The paper's expanded form (eq. 7, `N·Z_in·Z_w − Z_w·Σq_x − Z_in·Σq_w +
//! Σq_x·q_w`) is the same integer and suits fast kernels; the direct form is easier to check.
//! Sums are carried in `i64` and narrowed to the `i32` accumulator with a check, so an
//! unvalidated layer yields [`crate::QuantError::AccumulatorOverflow`] rather than a wrong
//! value; for a validated layer the worst-case bound guarantees the check passes.

mod accumulate;
mod pool;
mod requantize;

pub use accumulate::{conv2d, linear};
pub use pool::{argmax, max_pool_2x2, predict};
pub use requantize::requantize;
