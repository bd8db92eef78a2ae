//! The foundation every burnq crate shares: the network description ([`arch`]: layers,
//! shape inference, validation, presets), the input normalization a network is trained with
//! ([`Normalization`]) and the one atomic file write ([`write_atomic`]) behind every
//! artifact. It depends on no other burnq crate, knows nothing of Burn and does no integer
//! math.

pub mod arch;
mod atomic;
mod normalization;

pub use arch::{ArchError, Architecture, Plan};
pub use atomic::write_atomic;
pub use normalization::{InvalidNormalization, Normalization};
