//! How the binary shows results: one place that prints JSON, and the choice between a
//! JSON document on stdout and the text a library renders. The libraries return values
//! and text; only the binary prints.

use serde::Serialize;

/// Prints `v` as one pretty JSON document on stdout.
pub fn print_json<T: Serialize>(v: &T) {
    println!("{}", serde_json::to_string_pretty(v).expect("serializable"));
}

/// Prints `v` as JSON with `--json`, else the text `text` renders of it (as is: the
/// renderers end their own lines).
pub fn json_or_text<T: Serialize>(json: bool, v: &T, text: impl FnOnce(&T) -> String) {
    if json {
        print_json(v);
    } else {
        print!("{}", text(v));
    }
}
