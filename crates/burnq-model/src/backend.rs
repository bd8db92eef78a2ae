//! The run-time choice of Burn device. Only the edge of the program picks one.

use burn::tensor::Device;

use crate::ModelError;

/// A Burn backend burnq can train and evaluate on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BackendChoice {
    /// Burn's pure-Rust CPU backend (the `gemm` crate, SIMD + rayon): the default.
    #[default]
    Flex,
    /// burn-ndarray (deprecated in Burn 0.22 and much slower; cargo feature `ndarray`).
    Ndarray,
    /// burn-wgpu on any GPU wgpu can see, or Mesa's software Vulkan (cargo feature `wgpu`).
    Wgpu,
}

impl BackendChoice {
    /// Lower-case name as used on the command line.
    pub fn name(self) -> &'static str {
        match self {
            BackendChoice::Flex => "flex",
            BackendChoice::Ndarray => "ndarray",
            BackendChoice::Wgpu => "wgpu",
        }
    }

    /// Parses a command-line name.
    pub fn parse(name: &str) -> Result<Self, ModelError> {
        match name {
            "flex" => Ok(BackendChoice::Flex),
            "ndarray" => Ok(BackendChoice::Ndarray),
            "wgpu" => Ok(BackendChoice::Wgpu),
            other => Err(ModelError::UnknownBackend(other.to_owned())),
        }
    }

    /// The inference device of this backend (call `.autodiff()` on it to train).
    pub fn device(self) -> Result<Device, ModelError> {
        match self {
            BackendChoice::Flex => Ok(Device::flex()),
            BackendChoice::Ndarray => ndarray_device(),
            BackendChoice::Wgpu => wgpu_device(),
        }
    }
}

#[cfg(feature = "ndarray")]
fn ndarray_device() -> Result<Device, ModelError> {
    #[allow(deprecated)]
    // burn-ndarray is deprecated upstream; kept because the design card names it
    Ok(Device::ndarray())
}

#[cfg(not(feature = "ndarray"))]
fn ndarray_device() -> Result<Device, ModelError> {
    Err(ModelError::BackendNotCompiled {
        backend: "ndarray",
        feature: "ndarray",
    })
}

#[cfg(feature = "wgpu")]
fn wgpu_device() -> Result<Device, ModelError> {
    Ok(Device::wgpu(burn::tensor::DeviceKind::DefaultDevice))
}

#[cfg(not(feature = "wgpu"))]
fn wgpu_device() -> Result<Device, ModelError> {
    Err(ModelError::BackendNotCompiled {
        backend: "wgpu",
        feature: "wgpu",
    })
}
