//! The reading order of `dcr` is its import order: the module doc of `mod.rs` lists the
//! modules top to bottom, and each module may import (`super::x`, `crate::dcr::x`) only
//! modules listed above it. A graph whose edges all point up a list has no cycle.
//!
//! Only production code is read: a file's `#[cfg(test)] mod tests` and comment lines are
//! left out (a test may reach for anything).

use std::collections::BTreeSet;

const ROOT: &str = include_str!("mod.rs");

/// Every production module of `dcr`, with its source. [`declared_modules`] keeps this list
/// complete: a new module must be added here and to the doc list of `mod.rs`.
const FILES: [(&str, &str); 14] = [
    ("catalogue", include_str!("catalogue.rs")),
    ("error", include_str!("error.rs")),
    ("host", include_str!("host.rs")),
    ("json", include_str!("json.rs")),
    ("normalize", include_str!("normalize.rs")),
    ("pipeline", include_str!("pipeline.rs")),
    ("policy", include_str!("policy.rs")),
    ("policy_check", include_str!("policy_check.rs")),
    ("screen", include_str!("screen.rs")),
    ("special_use", include_str!("special_use.rs")),
    ("statement", include_str!("statement.rs")),
    ("uri", include_str!("uri.rs")),
    ("validate", include_str!("validate.rs")),
    ("vocab", include_str!("vocab.rs")),
];

/// The modules in the order the module doc lists them: lines `//! N. [`name`]: ...`.
fn documented_order() -> Vec<&'static str> {
    let mut out = Vec::new();
    for line in ROOT.lines() {
        let Some(doc) = line.strip_prefix("//!") else { continue };
        let doc = doc.trim_start();
        let Some((number, rest)) = doc.split_once(". [`") else { continue };
        if number.is_empty() || !number.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        assert_eq!(
            number.parse::<usize>().unwrap(),
            out.len() + 1,
            "the list in mod.rs is numbered 1, 2, 3, ...: {line}"
        );
        let (name, _) = rest.split_once("`]").unwrap_or_else(|| panic!("unreadable list line in mod.rs: {line}"));
        out.push(name);
    }
    out
}

/// The `mod x;` declarations of `mod.rs`, leaving out the `#[cfg(test)]` ones.
fn declared_modules() -> BTreeSet<&'static str> {
    let mut out = BTreeSet::new();
    let mut test_only = false;
    for line in ROOT.lines().map(str::trim) {
        if line == "#[cfg(test)]" {
            test_only = true;
            continue;
        }
        let name = line.strip_prefix("pub ").unwrap_or(line).strip_prefix("mod ").and_then(|r| r.strip_suffix(';'));
        if let Some(name) = name {
            if !test_only {
                out.insert(name);
            }
        }
        test_only = false;
    }
    out
}

/// A file's production code: everything before its `#[cfg(test)] mod tests`, without comment
/// lines.
fn production_code(text: &str) -> String {
    let end = text.find("#[cfg(test)]\nmod tests").unwrap_or(text.len());
    text[..end].lines().filter(|l| !l.trim_start().starts_with("//")).collect::<Vec<_>>().join("\n")
}

/// The first segment of every path that `code` starts with `super::` or `crate::dcr::`:
/// `super::uri::check_https` gives `uri`, `super::{json, vocab::Kind}` gives `json` and
/// `vocab`, `super::Normalized` gives `Normalized` (a re-export of the root).
fn imported_names(code: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for prefix in ["super::", "crate::dcr::"] {
        for (at, _) in code.match_indices(prefix) {
            let rest = &code[at + prefix.len()..];
            let segments: Vec<&str> = match rest.strip_prefix('{') {
                Some(group) => {
                    // The items of the group, at its top level only.
                    let mut depth = 0;
                    let end = group
                        .char_indices()
                        .find(|&(_, c)| {
                            match c {
                                '{' => depth += 1,
                                '}' if depth == 0 => return true,
                                '}' => depth -= 1,
                                _ => {}
                            }
                            false
                        })
                        .map_or(group.len(), |(i, _)| i);
                    let mut items = Vec::new();
                    let (mut depth, mut start) = (0, 0);
                    for (i, c) in group[..end].char_indices() {
                        match c {
                            '{' => depth += 1,
                            '}' => depth -= 1,
                            ',' if depth == 0 => {
                                items.push(&group[start..i]);
                                start = i + 1;
                            }
                            _ => {}
                        }
                    }
                    items.push(&group[start..end]);
                    items.into_iter().map(str::trim).filter(|s| !s.is_empty()).collect()
                }
                None => vec![rest],
            };
            for s in segments {
                let name: String = s.chars().take_while(|c| c.is_alphanumeric() || *c == '_' || *c == '*').collect();
                out.insert(name);
            }
        }
    }
    out
}

#[test]
fn imports_follow_the_documented_reading_order() {
    let order = documented_order();
    let files: BTreeSet<&str> = FILES.iter().map(|(name, _)| *name).collect();
    assert_eq!(
        order.iter().copied().collect::<BTreeSet<_>>(),
        declared_modules(),
        "the list in mod.rs's doc names every module"
    );
    assert_eq!(order.len(), declared_modules().len(), "the list in mod.rs's doc names each module once");
    assert_eq!(files, declared_modules(), "FILES in layering.rs names every module");

    for (name, text) in FILES {
        let at = order.iter().position(|m| *m == name).unwrap();
        for imported in imported_names(&production_code(text)) {
            let Some(to) = order.iter().position(|m| *m == imported) else {
                panic!("{name}.rs names `{imported}` through the root of dcr; import it from its own module");
            };
            assert!(
                to < at,
                "{name}.rs (#{}) imports {imported} (#{}), which the reading order in mod.rs puts below it",
                at + 1,
                to + 1
            );
        }
    }
}

#[test]
fn the_vocabulary_imports_nothing_from_dcr() {
    for (name, text) in FILES.iter().filter(|(name, _)| ["error", "vocab", "host"].contains(name)) {
        assert_eq!(imported_names(&production_code(text)), BTreeSet::new(), "{name}.rs");
    }
}

#[test]
fn the_reader_sees_every_form_of_import() {
    let code =
        "use super::error::X;\nuse super::{json, vocab::{Kind, Normalized}};\nuse crate::dcr::Policy;\nuse super::*;\n\
                let x = super::uri::f();";
    let want: BTreeSet<String> = ["error", "json", "vocab", "Policy", "*", "uri"].map(String::from).into();
    assert_eq!(imported_names(code), want);
    assert_eq!(
        production_code("use super::a;\n// use super::b;\n#[cfg(test)]\nmod tests {\n    use super::c;\n}"),
        "use super::a;"
    );
}
