//! ARCHITECTURE.md's rules about who imports whom, read from the source:
//! the data path (`usb/`, `ninep/`) imports nothing from `daemon/`, and the
//! modules import each other without a circle. A module here is a file of
//! `src/` with its folder of parts (`daemon/supervisor.rs` and
//! `daemon/supervisor/*.rs` are `daemon::supervisor`); test code (`tests.rs`,
//! `*_tests.rs`, an inline `mod tests`) may import anything.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// The module a file of `src/` belongs to: its first two path parts for the
/// three folders, its first otherwise.
fn module_of(rel: &str) -> String {
    let parts: Vec<&str> = rel.trim_end_matches(".rs").split('/').collect();
    match parts.as_slice() {
        [top @ ("daemon" | "usb" | "ninep"), sub, ..] => format!("{top}::{sub}"),
        [top, ..] => top.to_string(),
        [] => String::new(),
    }
}

/// `crate::a::b` paths used in `text` (outside an inline test module), as
/// modules; a `use crate::x::{a, b}` names x's parts.
fn imports(text: &str) -> BTreeSet<String> {
    let text = text.split("#[cfg(test)]\nmod tests {").next().unwrap_or(text);
    let mut out = BTreeSet::new();
    for (i, _) in text.match_indices("crate::") {
        let rest = &text[i + "crate::".len()..];
        let word = |s: &str| s.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect::<String>();
        let top = word(rest);
        if matches!(top.as_str(), "daemon" | "usb" | "ninep") {
            let after = &rest[top.len()..];
            if let Some(list) = after.strip_prefix("::{") {
                for item in list.split('}').next().unwrap_or("").split(',') {
                    let sub = word(item.trim());
                    if !sub.is_empty() && sub != "self" {
                        out.insert(format!("{top}::{sub}"));
                    }
                }
            } else if let Some(sub) = after.strip_prefix("::").map(word).filter(|s| !s.is_empty()) {
                out.insert(format!("{top}::{sub}"));
            }
        } else if !top.is_empty() {
            out.insert(top);
        }
    }
    out
}

fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let mut g: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut stack = vec![Path::new(env!("CARGO_MANIFEST_DIR")).join("src")];
    let root = stack[0].clone();
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).expect("src") {
            let path = e.expect("entry").path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            let rel = path.strip_prefix(&root).expect("under src").to_string_lossy().into_owned();
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if !rel.ends_with(".rs") || name == "tests.rs" || name.ends_with("_tests.rs") {
                continue;
            }
            let from = module_of(&rel);
            let text = std::fs::read_to_string(&path).expect("read");
            let to = g.entry(from.clone()).or_default();
            to.extend(imports(&text).into_iter().filter(|m| *m != from));
        }
    }
    g
}

#[test]
fn the_data_path_imports_nothing_from_the_daemon() {
    let g = graph();
    let wrong: Vec<String> = g
        .iter()
        .filter(|(from, _)| from.starts_with("usb::") || from.starts_with("ninep::") || *from == "usb" || *from == "ninep")
        .flat_map(|(from, to)| to.iter().filter(|m| m.starts_with("daemon")).map(move |m| format!("{from} -> {m}")))
        .collect();
    assert!(wrong.is_empty(), "the data path imports the daemon: {wrong:?}");
}

#[test]
fn no_module_imports_one_that_imports_it_back() {
    let g = graph();
    // Depth-first search for a back edge; the first circle found is shown.
    fn visit(m: &str, g: &BTreeMap<String, BTreeSet<String>>, path: &mut Vec<String>, done: &mut BTreeSet<String>) -> Option<Vec<String>> {
        if let Some(i) = path.iter().position(|p| p == m) {
            return Some(path[i..].iter().cloned().chain([m.to_string()]).collect());
        }
        if !done.insert(m.to_string()) {
            return None;
        }
        path.push(m.to_string());
        for next in g.get(m).into_iter().flatten() {
            if let Some(circle) = visit(next, g, path, done) {
                return Some(circle);
            }
        }
        path.pop();
        None
    }
    let mut done = BTreeSet::new();
    for m in g.keys() {
        if let Some(circle) = visit(m, &g, &mut Vec::new(), &mut done) {
            panic!("import circle: {}", circle.join(" -> "));
        }
    }
}
