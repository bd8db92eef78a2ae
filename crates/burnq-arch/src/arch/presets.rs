//! The preset networks, TOML descriptions compiled into the crate (`presets/*.toml`).

/// Names of the presets, for `--arch NAME`.
pub const PRESETS: [&str; 3] = ["tutorial", "lenet5", "mobile"];

/// The TOML text of preset `name`.
pub(super) fn source(name: &str) -> Option<&'static str> {
    match name {
        "tutorial" => Some(include_str!("../../presets/tutorial.toml")),
        "lenet5" => Some(include_str!("../../presets/lenet5.toml")),
        "mobile" => Some(include_str!("../../presets/mobile.toml")),
        _ => None,
    }
}
