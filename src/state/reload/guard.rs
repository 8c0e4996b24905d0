//! A reload is judged against the last good snapshot, not only on its own: a file that
//! loaded before and is now missing, empty, a strict prefix of what loaded (a file caught
//! mid-write), or a TOML file that lost whole sections (top-level tables or arrays of
//! tables), or one of the keys whose absence opens the gateway ([`GUARDED_KEYS`]), is a
//! failed reload: the old snapshot keeps serving. Each of these files is valid on its own
//! — an empty `gateway.toml` is all defaults — which is exactly why it must not load.
//!
//! Operators override the judgement with a SIGHUP while `<config>.force-reload` exists;
//! admin API writes are exempt for the file they wrote. Pure: no I/O.

use std::path::{Path, PathBuf};

use crate::snapshot::{Source, SourceKind};

/// Configuration keys (`section.key`) whose removal would open the gateway: present in the
/// last good configuration and absent from the new one is a failed reload.
pub const GUARDED_KEYS: [&str; 5] =
    ["dcr.enabled", "dcr.registration", "dcr.token_file", "acl.rules", "acl.default_action"];

/// How a reload treats the judgement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Judge {
    /// File changes and plain SIGHUPs: every rule applies.
    Guarded,
    /// An admin API write: the file it wrote is taken as it is.
    Exempt(PathBuf),
    /// SIGHUP with the force marker: no judgement.
    Forced,
}

/// Why `next` must not replace `previous`; empty when it may.
pub fn judge(previous: &[Source], next: &[Source], mode: &Judge) -> Vec<String> {
    if *mode == Judge::Forced {
        return Vec::new();
    }
    let mut why = Vec::new();
    for old in previous {
        let Some(old_bytes) = old.bytes.as_deref().filter(|b| !is_blank(b)) else {
            continue;
        };
        if matches!(mode, Judge::Exempt(p) if p == &old.path) {
            continue;
        }
        // A file no longer referenced (the configuration now names another) is not judged.
        let Some(new) = next.iter().find(|n| n.path == old.path && n.kind == old.kind) else {
            continue;
        };
        let path = old.path.display();
        let new_bytes = match new.bytes.as_deref() {
            None => {
                why.push(format!("{path}: missing, but it loaded before"));
                continue;
            }
            Some(b) => b,
        };
        if is_blank(new_bytes) {
            why.push(format!("{path}: empty, but it held {} bytes before", old_bytes.len()));
        } else if new_bytes.len() < old_bytes.len() && old_bytes.starts_with(new_bytes) {
            why.push(format!(
                "{path}: the first {} of the {} bytes loaded before (a partial write?)",
                new_bytes.len(),
                old_bytes.len()
            ));
        } else if matches!(old.kind, SourceKind::Config | SourceKind::Tokens) {
            for lost in lost_sections(old_bytes, new_bytes, old.kind == SourceKind::Config) {
                why.push(format!("{path}: {lost} is gone, but it was there before"));
            }
        }
    }
    why
}

fn is_blank(b: &[u8]) -> bool {
    b.iter().all(u8::is_ascii_whitespace)
}

fn is_section(v: &toml::Value) -> bool {
    match v {
        toml::Value::Table(_) => true,
        toml::Value::Array(a) => !a.is_empty() && a.iter().all(toml::Value::is_table),
        _ => false,
    }
}

/// Sections (and, for the configuration, [`GUARDED_KEYS`]) of `old` missing from `new`.
/// A `new` that does not parse is left to the loader, which reports it.
fn lost_sections(old: &[u8], new: &[u8], guarded_keys: bool) -> Vec<String> {
    let parse = |b: &[u8]| std::str::from_utf8(b).ok().and_then(|t| t.parse::<toml::Table>().ok());
    let (Some(old), Some(new)) = (parse(old), parse(new)) else {
        return Vec::new();
    };
    let mut lost: Vec<String> = old
        .iter()
        .filter(|(k, v)| is_section(v) && !new.contains_key(k.as_str()))
        .map(|(k, v)| if v.is_table() { format!("section [{k}]") } else { format!("section [[{k}]]") })
        .collect();
    if guarded_keys {
        for key in GUARDED_KEYS {
            let (section, name) = key.split_once('.').unwrap_or(("", key));
            let has =
                |t: &toml::Table| t.get(section).and_then(toml::Value::as_table).is_some_and(|s| s.contains_key(name));
            if has(&old) && new.contains_key(section) && !has(&new) {
                lost.push(format!("key {key}"));
            }
        }
    }
    lost
}

/// The marker whose presence turns a SIGHUP into a forced reload: `<config>.force-reload`.
pub fn force_marker(config: &Path) -> PathBuf {
    let mut name = config.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(".force-reload");
    config.with_file_name(name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn src(path: &str, kind: SourceKind, text: Option<&str>) -> Source {
        Source { path: PathBuf::from(path), kind, bytes: text.map(|t| Arc::from(t.as_bytes())) }
    }

    const CONFIG: &str = "[listen]\nhttp = [\"0.0.0.0:8080\"]\n[dcr]\nregistration = \"token\"\ntoken_file = \"t.toml\"\n[rate_limit]\nper_ip = { requests = 3, window_seconds = 60 }\n";

    fn config(text: Option<&str>) -> Vec<Source> {
        vec![src("/c/gateway.toml", SourceKind::Config, text)]
    }

    #[test]
    fn unchanged_and_edited_files_pass() {
        let old = config(Some(CONFIG));
        assert!(judge(&old, &old, &Judge::Guarded).is_empty());
        let edited = CONFIG.replace("requests = 3", "requests = 30");
        assert!(judge(&old, &config(Some(&edited)), &Judge::Guarded).is_empty());
        let appended = format!("{CONFIG}[log]\nlevel = \"debug\"\n");
        assert!(judge(&old, &config(Some(&appended)), &Judge::Guarded).is_empty());
    }

    #[test]
    fn empty_missing_and_prefix_fail() {
        let old = config(Some(CONFIG));
        let why = judge(&old, &config(Some("")), &Judge::Guarded);
        assert!(why[0].contains("empty"), "{why:?}");
        assert!(judge(&old, &config(Some(" \n")), &Judge::Guarded)[0].contains("empty"));
        assert!(judge(&old, &config(None), &Judge::Guarded)[0].contains("missing"));
        for cut in [1, 10, 40, CONFIG.len() - 1] {
            let why = judge(&old, &config(Some(&CONFIG[..cut])), &Judge::Guarded);
            assert!(why.iter().any(|w| w.contains("partial write")), "{cut}: {why:?}");
        }
    }

    #[test]
    fn lost_sections_and_guarded_keys_fail() {
        let old = config(Some(CONFIG));
        let no_rl = format!("{}[log]\nlevel = \"info\"\n", CONFIG.split("[rate_limit]").next().unwrap());
        let why = judge(&old, &config(Some(&no_rl)), &Judge::Guarded);
        assert_eq!(why, ["/c/gateway.toml: section [rate_limit] is gone, but it was there before"]);
        let open = CONFIG.replace("registration = \"token\"\n", "");
        let why = judge(&old, &config(Some(&open)), &Judge::Guarded);
        assert_eq!(why, ["/c/gateway.toml: key dcr.registration is gone, but it was there before"]);
        // Token files: all [[token]] entries gone.
        let t = "[[token]]\nlabel = \"a\"\nsha256 = \"00\"\n[[token]]\nlabel = \"b\"\nsha256 = \"11\"\n";
        let old = vec![src("/c/t.toml", SourceKind::Tokens, Some(t))];
        let why = judge(&old, &[src("/c/t.toml", SourceKind::Tokens, Some("# nothing\n"))], &Judge::Guarded);
        assert!(why[0].contains("section [[token]]"), "{why:?}");
        // Removing one of two entries is an edit.
        let one = &t[t.find("[[token]]\nlabel = \"b\"").unwrap()..];
        assert!(judge(&old, &[src("/c/t.toml", SourceKind::Tokens, Some(one))], &Judge::Guarded).is_empty());
    }

    #[test]
    fn settings_and_rules_that_were_absent_or_empty_are_not_judged() {
        let old = vec![
            src("/c/settings.json", SourceKind::Settings, None),
            src("/c/rules.json", SourceKind::Rules, Some("[]")),
        ];
        let new = vec![
            src("/c/settings.json", SourceKind::Settings, Some("{}")),
            src("/c/rules.json", SourceKind::Rules, Some("[]")),
        ];
        assert!(judge(&old, &new, &Judge::Guarded).is_empty());
        let settings = vec![src("/c/settings.json", SourceKind::Settings, Some("{\"enabled\":false}"))];
        let gone = vec![src("/c/settings.json", SourceKind::Settings, None)];
        assert!(judge(&settings, &gone, &Judge::Guarded)[0].contains("missing"));
    }

    #[test]
    fn force_and_admin_writes_override() {
        let old = config(Some(CONFIG));
        assert!(judge(&old, &config(Some("")), &Judge::Forced).is_empty());
        assert!(judge(&old, &config(Some("")), &Judge::Exempt(PathBuf::from("/c/gateway.toml"))).is_empty());
        assert!(!judge(&old, &config(Some("")), &Judge::Exempt(PathBuf::from("/c/rules.json"))).is_empty());
        assert_eq!(force_marker(Path::new("/etc/gw/gateway.toml")), PathBuf::from("/etc/gw/gateway.toml.force-reload"));
    }
}
