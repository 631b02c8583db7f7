//! How rewindctl prints: pretty JSON on stdout for `--json`, text otherwise.

/// Prints `v` as pretty JSON on stdout.
pub fn print_json(v: &impl serde::Serialize) {
    println!("{}", serde_json::to_string_pretty(v).expect("output serializes"));
}
