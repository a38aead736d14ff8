//! House rules of the source tree (issue 19), checked on every test run so they hold
//! after the clean-up that established them: no function in production code longer than
//! [`MAX_FN_LINES`], and no two modules of a crate that refer to each other, directly or
//! through a chain (a crate's top-level modules form a one-way graph).
//!
//! This reads the sources as text, the way a reviewer does: it does not parse Rust. A
//! function runs from its `fn` line to the brace that closes its body; string and char
//! literals and `//` comments are blanked first so their braces do not count. Tests
//! (`tests.rs`, `tests/` directories, `#[cfg(test)] mod tests { .. }`) are not production
//! code and are left out.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The longest function body allowed in production code, in lines (signature included).
const MAX_FN_LINES: usize = 150;

fn crates_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("crates/cli has a parent")
        .to_path_buf()
}

/// Production `.rs` files of one crate's `src/`, sorted.
fn production_files(src: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![src.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("readable source dir") {
            let path = entry.expect("dir entry").path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            if path.is_dir() {
                if name != "tests" {
                    stack.push(path);
                }
            } else if name.ends_with(".rs") && name != "tests.rs" {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

/// The file's lines up to an inline `#[cfg(test)] mod tests {`, with literals and line
/// comments blanked (so braces inside them do not count).
fn code_lines(text: &str) -> Vec<String> {
    let lines: Vec<&str> = text.lines().collect();
    let mut end = lines.len();
    for (i, l) in lines.iter().enumerate() {
        let next = lines.get(i + 1).map(|n| n.trim_start()).unwrap_or("");
        if l.trim() == "#[cfg(test)]" && next.starts_with("mod ") && next.ends_with('{') {
            end = i;
            break;
        }
    }
    lines[..end].iter().map(|l| blank(l)).collect()
}

/// One line without its string/char literals and `//` comment.
fn blank(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' => {
                while let Some(d) = chars.next() {
                    match d {
                        '\\' => {
                            chars.next();
                        }
                        '"' => break,
                        _ => {}
                    }
                }
                out.push_str("\"\"");
            }
            // A char literal ('{', '\n'), not a lifetime ('a): closed within three chars.
            '\'' => {
                let rest: String = chars.clone().take(4).collect();
                let close = if rest.starts_with('\\') {
                    rest.chars().skip(2).position(|x| x == '\'').map(|p| p + 3)
                } else if rest.chars().nth(1) == Some('\'') {
                    Some(2)
                } else {
                    None
                };
                match close {
                    Some(n) => {
                        for _ in 0..n {
                            chars.next();
                        }
                        out.push_str("''");
                    }
                    None => out.push('\''),
                }
            }
            '/' if chars.peek() == Some(&'/') => break,
            _ => out.push(c),
        }
    }
    out
}

/// The name of the function declared on this line, if it declares one.
fn fn_name(line: &str) -> Option<&str> {
    let mut rest = line.trim_start();
    if let Some(r) = rest.strip_prefix("pub") {
        rest = r.trim_start();
        if rest.starts_with('(') {
            rest = rest[rest.find(')')? + 1..].trim_start();
        }
    }
    for kw in ["const ", "async ", "unsafe "] {
        if let Some(r) = rest.strip_prefix(kw) {
            rest = r.trim_start();
        }
    }
    let r = rest.strip_prefix("fn ")?;
    let end = r.find(|c: char| !(c.is_alphanumeric() || c == '_'))?;
    Some(&r[..end])
}

/// Functions longer than the limit: `(lines, "file:line name")`.
fn long_functions(file: &Path) -> Vec<(usize, String)> {
    let lines = code_lines(&std::fs::read_to_string(file).expect("readable source"));
    let mut out = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let Some(name) = fn_name(line) else { continue };
        let (mut depth, mut started) = (0i64, false);
        for (j, l) in lines.iter().enumerate().skip(i) {
            if !started && l.contains(';') && !l.contains('{') {
                break; // a declaration without a body (trait method)
            }
            for c in l.chars() {
                match c {
                    '{' => {
                        depth += 1;
                        started = true;
                    }
                    '}' => depth -= 1,
                    _ => {}
                }
            }
            if started && depth <= 0 {
                let n = j - i + 1;
                if n > MAX_FN_LINES {
                    out.push((n, format!("{}:{} {name}", file.display(), i + 1)));
                }
                break;
            }
        }
    }
    out
}

#[test]
fn issue19_no_function_in_production_code_is_longer_than_150_lines() {
    let mut long = Vec::new();
    let mut functions_seen = 0;
    for krate in std::fs::read_dir(crates_dir()).expect("crates/") {
        let src = krate.expect("entry").path().join("src");
        if !src.is_dir() {
            continue;
        }
        for file in production_files(&src) {
            let text = std::fs::read_to_string(&file).expect("readable");
            functions_seen += code_lines(&text)
                .iter()
                .filter(|l| fn_name(l).is_some())
                .count();
            long.extend(long_functions(&file));
        }
    }
    // The walk itself must have found the code it checks.
    assert!(
        functions_seen > 1000,
        "only {functions_seen} functions found"
    );
    long.sort();
    assert!(
        long.is_empty(),
        "functions over {MAX_FN_LINES} lines; split them into named steps:\n{}",
        long.iter()
            .map(|(n, at)| format!("  {n:5} {at}"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// Top-level module of a file under `src/` (`batch/tests.rs` → `batch`; `lib.rs`,
/// `main.rs` → the crate root, `""`).
fn top_module(src: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(src).expect("under src");
    let first = rel
        .components()
        .next()
        .unwrap()
        .as_os_str()
        .to_string_lossy();
    let first = first.trim_end_matches(".rs");
    match first {
        "lib" | "main" => String::new(),
        m => m.to_string(),
    }
}

/// How many `super::` lead from this file's module to the crate root (`a.rs`,
/// `a/mod.rs`: 1; `a/b.rs`: 2).
fn depth(src: &Path, file: &Path) -> usize {
    let rel = file.strip_prefix(src).expect("under src");
    let n = rel.components().count();
    if rel.file_name().is_some_and(|f| f == "mod.rs") {
        n - 1
    } else {
        n
    }
}

/// Top-level modules a file `depth` levels down names through `crate::x`, or through
/// as many `super::` as lead to the crate root (fewer stay inside its own top module).
fn referenced_modules(text: &str, depth: usize, modules: &BTreeSet<String>) -> BTreeSet<String> {
    let root = "super::".repeat(depth);
    let mut out = BTreeSet::new();
    for line in code_lines(text) {
        let line = if depth > 0 {
            line.replace(&root, "crate::")
        } else {
            line
        };
        let mut rest = line.as_str();
        while let Some(at) = rest.find("crate::") {
            rest = &rest[at + "crate::".len()..];
            // `crate::{a, b::c}` names several.
            let names: Vec<&str> = if let Some(group) = rest.strip_prefix('{') {
                group
                    .split(['}', ','])
                    .map(|n| n.trim().split("::").next().unwrap_or("").trim())
                    .collect()
            } else {
                vec![rest
                    .split(|c: char| !(c.is_alphanumeric() || c == '_'))
                    .next()
                    .unwrap_or("")]
            };
            for n in names {
                if modules.contains(n) {
                    out.insert(n.to_string());
                }
            }
        }
    }
    out
}

#[test]
fn issue19_no_module_of_a_crate_refers_back_to_one_that_uses_it() {
    let mut cycles = Vec::new();
    let mut crates_seen = 0;
    for krate in std::fs::read_dir(crates_dir()).expect("crates/") {
        let krate = krate.expect("entry").path();
        let src = krate.join("src");
        if !src.is_dir() {
            continue;
        }
        crates_seen += 1;
        let files = production_files(&src);
        let modules: BTreeSet<String> = files
            .iter()
            .map(|f| top_module(&src, f))
            .filter(|m| !m.is_empty())
            .collect();
        let mut uses: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for f in &files {
            let m = top_module(&src, f);
            if m.is_empty() {
                continue;
            }
            let text = std::fs::read_to_string(f).expect("readable");
            let refs = referenced_modules(&text, depth(&src, f), &modules);
            uses.entry(m.clone())
                .or_default()
                .extend(refs.into_iter().filter(|r| *r != m));
        }
        // A module that reaches itself through what it uses is on a cycle.
        for start in uses.keys() {
            let mut seen = BTreeSet::new();
            let mut todo: Vec<&String> = uses[start].iter().collect();
            while let Some(m) = todo.pop() {
                if m == start {
                    cycles.push(format!(
                        "{}: {start} is reached again from what it uses",
                        krate.file_name().unwrap().to_string_lossy()
                    ));
                    break;
                }
                if seen.insert(m.clone()) {
                    todo.extend(uses.get(m).into_iter().flatten());
                }
            }
        }
    }
    assert!(crates_seen >= 9, "only {crates_seen} crates found");
    assert!(
        cycles.is_empty(),
        "module cycles; move what both need into a module below them:\n  {}",
        cycles.join("\n  ")
    );
}

#[test]
fn issue19_the_checks_find_what_they_look_for() {
    // The checks above pass on an empty tree too; these show they can fail.
    let dir = tempfile::tempdir().unwrap();
    let long = dir.path().join("long.rs");
    let body = "    let x = '{';\n".repeat(MAX_FN_LINES);
    std::fs::write(
        &long,
        format!("pub(crate) async fn big() {{\n{body}}}\nfn t();\n"),
    )
    .unwrap();
    let found = long_functions(&long);
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].0, MAX_FN_LINES + 2);
    assert!(found[0].1.ends_with(" big"));

    let modules: BTreeSet<String> = ["batch", "lifecycle"].map(String::from).into();
    let refs = referenced_modules(
        "use crate::{batch::X, other};\n// crate::lifecycle in a comment\nlet s = \"crate::lifecycle\";\n",
        1,
        &modules,
    );
    assert_eq!(refs, BTreeSet::from(["batch".to_string()]));
    // From a/b.rs, super::lifecycle is a::lifecycle (inside a); super::super:: is the root.
    let refs = referenced_modules(
        "use super::lifecycle;\nuse super::super::lifecycle;\n",
        2,
        &modules,
    );
    assert_eq!(refs, BTreeSet::from(["lifecycle".to_string()]));
    let refs = referenced_modules("use super::lifecycle;\n", 2, &modules);
    assert!(refs.is_empty(), "{refs:?}");
}
