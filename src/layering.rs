//! The crate's layers, checked: every `crate::…` path in production code (tests excluded)
//! names a module of the same layer or one below (docs/architecture.md). An upward import is
//! the first step of the tangles this layout exists to prevent.

/// Layers, lowest first. A module may import its own layer and those below.
const LAYERS: &[&[&str]] = &[
    // pure: no Pingora session types, no I/O on the request path
    &["core", "routes", "scope", "acl", "dcr", "cimd", "signals", "tokens", "ratelimit", "errors", "redact"],
    &["config"],
    &["telemetry"],
    &["state", "reload", "snapshot", "registry"],
    &["proxy", "admin", "fetch", "console"],
    &["cli"],
];

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|l| l.contains(&module))
}

/// Production text of a file: the file without the items marked `#[cfg(test)]` (a `mod tests
/// { … }` block, a `use`, a function — wherever they stand: production code after an early
/// test item is still checked). An item ends at its first `;` outside braces, or with the brace
/// that closes its first `{`.
fn production(text: &str) -> String {
    const MARK: &str = "#[cfg(test)]";
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find(MARK) {
        out.push_str(&rest[..i]);
        let item = &rest[i + MARK.len()..];
        let mut depth = 0usize;
        let mut end = item.len();
        for (j, c) in item.char_indices() {
            match c {
                '{' => depth += 1,
                '}' => {
                    depth = depth.saturating_sub(1);
                    if depth == 0 {
                        end = j + 1;
                        break;
                    }
                }
                ';' if depth == 0 => {
                    end = j + 1;
                    break;
                }
                _ => {}
            }
        }
        rest = &item[end..];
    }
    out.push_str(rest);
    out
}

/// The top-level module of every `crate::…` path, grouped imports (`use crate::{a, b::c}`)
/// included.
fn crate_paths(text: &str) -> Vec<String> {
    let ident =
        |s: &str| -> String { s.trim_start().chars().take_while(|c| c.is_ascii_lowercase() || *c == '_').collect() };
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find("crate::") {
        let after = &rest[i + 7..];
        if let Some(group) = after.strip_prefix('{') {
            let inner = &group[..group.find('}').unwrap_or(group.len())];
            out.extend(inner.split(',').map(ident).filter(|n| !n.is_empty()));
        } else {
            let name = ident(after);
            if !name.is_empty() {
                out.push(name);
            }
        }
        rest = after;
    }
    out
}

#[test]
fn modules_import_only_their_layer_and_below() {
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut violations = Vec::new();
    let mut stack = vec![src.clone()];
    let mut seen = 0;
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let rel = path.strip_prefix(&src).unwrap().to_string_lossy().to_string();
            let top = rel.split('/').next().unwrap().trim_end_matches(".rs").to_string();
            let Some(own) = layer_of(&top) else {
                assert!(["lib", "main", "layering"].contains(&top.as_str()), "{rel}: module {top} has no layer");
                continue;
            };
            seen += 1;
            let text = std::fs::read_to_string(&path).unwrap();
            for name in crate_paths(&production(&text)) {
                if let Some(l) = layer_of(&name) {
                    if l > own {
                        violations.push(format!("{rel}: {top} imports {name}"));
                    }
                }
            }
        }
    }
    assert!(seen > 50, "walked {seen} files");
    violations.sort();
    violations.dedup();
    assert!(violations.is_empty(), "upward imports:\n{}", violations.join("\n"));
}

/// What the pure layer must not do: Pingora's session types, files, sockets, tasks, processes.
const IO: &[&str] = &[
    "pingora::",
    "std::fs",
    "tokio::net",
    "tokio::spawn",
    "redis::",
    "TcpStream",
    "std::thread::spawn",
    "std::process",
];

/// The I/O a production file of the pure layer names.
fn io_in(text: &str) -> Vec<&'static str> {
    let production = production(text);
    IO.iter().copied().filter(|w| production.contains(w)).collect()
}

#[test]
fn the_pure_layer_does_no_io() {
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut violations = Vec::new();
    let mut stack = vec![src.clone()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            let rel = path.strip_prefix(&src).unwrap().to_string_lossy().to_string();
            let top = rel.split('/').next().unwrap().trim_end_matches(".rs").to_string();
            // Test modules kept in their own file (`mod tests;` under `#[cfg(test)]`).
            if layer_of(&top) != Some(0) || rel.ends_with("/tests.rs") || path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let found = io_in(&std::fs::read_to_string(&path).unwrap());
            if !found.is_empty() {
                violations.push(format!("{rel}: {found:?}"));
            }
        }
    }
    assert!(violations.is_empty(), "I/O in the pure layer:\n{}", violations.join("\n"));
}

#[test]
fn io_in_the_pure_layer_is_caught() {
    assert_eq!(io_in("use redis::aio::ConnectionManager;\nfn f() {}"), ["redis::"]);
    assert_eq!(io_in("fn f() { std::fs::read(\"x\"); }"), ["std::fs"]);
    assert!(io_in("#[cfg(test)]\nmod t { fn f() { std::fs::read(\"x\"); } }").is_empty(), "tests may");
    assert_eq!(
        io_in("#[cfg(test)]\nmod t { fn f() { std::fs::read(\"x\"); } }\nfn g() { std::process::exit(1) }"),
        ["std::process"],
        "production code after a test module"
    );
    assert!(io_in("use pingora_limits::estimator::Estimator;").is_empty(), "a data-structure crate is not I/O");
}

#[test]
fn an_upward_import_is_caught() {
    let text =
        "use crate::proxy::Gateway;\nfn f() { crate::core::gate::is_json(None); }\n#[cfg(test)]\nuse crate::cli::x;";
    assert_eq!(crate_paths(&production(text)), ["proxy", "core"]);
    assert!(layer_of("proxy") > layer_of("state"));
    // Production code after an early test item is still read; grouped imports are seen.
    let text = "#[cfg(test)]\nmod tests { fn t() { crate::cli::x(); } }\nuse crate::{proxy::Gateway, state};\n\
                #[cfg(test)]\nuse crate::cli::y;\nfn f() { crate::admin::z(); }";
    assert_eq!(crate_paths(&production(text)), ["proxy", "state", "admin"]);
}
