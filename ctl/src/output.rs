//! How rewindctl prints: pretty JSON on stdout for `--json`, text otherwise.
//!
//! Output never panics on a closed pipe (`rewindctl demo | head`): the rest
//! of the text is dropped, the work goes on, and the exit code still tells
//! the outcome.

use std::io::Write as _;

/// Writes `text` to stdout as is.
pub fn print(text: &str) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes());
    let _ = out.flush();
}

/// `println!` that survives a closed pipe.
#[macro_export]
macro_rules! outln {
    ($($arg:tt)*) => {
        $crate::output::print(&format!("{}\n", format_args!($($arg)*)))
    };
}

/// Prints `v` as pretty JSON on stdout.
pub fn print_json(v: &impl serde::Serialize) {
    print(&format!("{}\n", serde_json::to_string_pretty(v).expect("output serializes")));
}
