//! The foundation every burnq crate shares, and nothing else: the input normalization a
//! network is trained with ([`Normalization`]) and the one atomic file write
//! ([`write_atomic`]) behind every artifact. It depends on no other burnq crate, knows
//! nothing of Burn and does no integer math.

mod atomic;
mod normalization;

pub use atomic::write_atomic;
pub use normalization::{InvalidNormalization, Normalization};
