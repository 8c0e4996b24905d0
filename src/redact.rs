//! Redaction of secrets in messages that quote configuration (TOML parse errors quote the
//! offending line; connection errors may quote a URL). Applied to every configuration error
//! `check`, `run` and a reload print or log.
//!
//! - URL userinfo: `redis://user:pass@host/0` → `redis://***@host/0`.
//! - Values of keys named like secrets — containing `password`, `passwd`, `secret`, `token`,
//!   `key` or `credential`, case-insensitive, except names ending in `_file`, `_path` or
//!   `_prefix`, which hold file names and key prefixes: `redis_password = "x"` →
//!   `redis_password = "***"`, and `"client_secret": "x"` → `"client_secret": "***"`.
//!
//! Redaction errs on the side of hiding: a value that merely looks like one is hidden too.

const SECRET_WORDS: [&str; 6] = ["password", "passwd", "secret", "token", "key", "credential"];
const NOT_SECRET_SUFFIXES: [&str; 3] = ["_file", "_path", "_prefix"];
const MASK: &str = "***";

/// `text` with URL userinfo and secret-like key values masked, line by line.
pub fn redact(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for (i, line) in text.split('\n').enumerate() {
        if i > 0 {
            out.push('\n');
        }
        out.push_str(&redact_values(&redact_userinfo(line)));
    }
    out
}

/// Every line of `lines`, redacted.
pub fn redact_all(lines: &[String]) -> Vec<String> {
    lines.iter().map(|l| redact(l)).collect()
}

fn ends_segment(c: char) -> bool {
    c.is_whitespace() || matches!(c, '"' | '\'' | '`' | ',' | '}' | ']' | '>' | '<' | ')')
}

fn redact_userinfo(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut rest = line;
    while let Some(i) = rest.find("://") {
        let (head, tail) = rest.split_at(i + 3);
        out.push_str(head);
        let end = tail.find(ends_segment).unwrap_or(tail.len());
        let segment = &tail[..end];
        match segment.rfind('@') {
            Some(at) if at > 0 => {
                out.push_str(MASK);
                out.push_str(&segment[at..]);
            }
            _ => out.push_str(segment),
        }
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}

fn is_key_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.')
}

fn is_secret_name(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    let last = lower.rsplit('.').next().unwrap_or(&lower);
    SECRET_WORDS.iter().any(|w| last.contains(w)) && !NOT_SECRET_SUFFIXES.iter().any(|s| last.ends_with(s))
}

/// Length of the value starting at `s` (a quoted string up to its closing quote or the end
/// of the line, else a bare word).
fn value_len(s: &str) -> usize {
    let mut chars = s.char_indices();
    match chars.next() {
        Some((_, q @ ('"' | '\''))) => {
            let mut escaped = false;
            for (i, c) in chars {
                if q == '"' && c == '\\' && !escaped {
                    escaped = true;
                    continue;
                }
                if c == q && !escaped {
                    return i + c.len_utf8();
                }
                escaped = false;
            }
            s.len()
        }
        Some(_) => s.find(|c: char| c.is_whitespace() || matches!(c, ',' | '}' | ']')).unwrap_or(s.len()),
        None => 0,
    }
}

fn redact_values(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let bytes = line.as_bytes();
    let mut i = 0;
    while i < line.len() {
        let c = line[i..].chars().next().unwrap_or(' ');
        let starts_key = is_key_char(c) && (i == 0 || !is_key_char(line[..i].chars().next_back().unwrap_or(' ')));
        let quoted = c == '"';
        if !(starts_key || quoted) {
            out.push(c);
            i += c.len_utf8();
            continue;
        }
        // The key: a bare word, or a quoted one.
        let (name, after) = if quoted {
            match line[i + 1..].find('"') {
                Some(e) => (&line[i + 1..i + 1 + e], i + e + 2),
                None => {
                    out.push_str(&line[i..]);
                    break;
                }
            }
        } else {
            let e = line[i..].find(|c: char| !is_key_char(c)).map(|e| i + e).unwrap_or(line.len());
            (&line[i..e], e)
        };
        let mut j = after;
        while j < line.len() && (bytes[j] == b' ' || bytes[j] == b'\t') {
            j += 1;
        }
        let separator = j < line.len() && (bytes[j] == b'=' || (quoted && bytes[j] == b':'));
        if !(separator && is_secret_name(name)) {
            out.push_str(&line[i..after]);
            i = after;
            continue;
        }
        j += 1;
        while j < line.len() && (bytes[j] == b' ' || bytes[j] == b'\t') {
            j += 1;
        }
        out.push_str(&line[i..j]);
        let len = value_len(&line[j..]);
        if len > 0 {
            out.push('"');
            out.push_str(MASK);
            out.push('"');
        }
        i = j + len;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn userinfo_is_masked() {
        assert_eq!(redact("redis_url = \"redis://user:hunter2@db:6379/0\""), "redis_url = \"redis://***@db:6379/0\"");
        assert_eq!(redact("rediss://:p%40ss@h/1 and http://ok.example/x"), "rediss://***@h/1 and http://ok.example/x");
        // Unterminated string (what a TOML error quotes) and a password with '/' and '@'.
        assert_eq!(redact("3 | redis_url = \"redis://u:pa/s@s@host"), "3 | redis_url = \"redis://***@host");
        assert_eq!(redact("no url here"), "no url here");
    }

    #[test]
    fn secret_like_keys_are_masked() {
        assert_eq!(redact("redis_password = \"hunter2\""), "redis_password = \"***\"");
        assert_eq!(redact("  | api_token='abc' # note"), "  | api_token=\"***\" # note");
        assert_eq!(redact("x = { secret = hunter2, user = \"bob\" }"), "x = { secret = \"***\", user = \"bob\" }");
        assert_eq!(redact(r#"{"client_secret": "s3cr\"et", "a": 1}"#), r#"{"client_secret": "***", "a": 1}"#);
        assert_eq!(redact("rate_limit.signing_key = \"unterminated"), "rate_limit.signing_key = \"***\"");
    }

    #[test]
    fn file_names_and_prefixes_stay() {
        for l in [
            "token_file = \"tokens.toml\"",
            "key_prefix = \"dcrgw\"",
            "tokens_file = \"admin.toml\"",
            "name = \"token\"",
        ] {
            assert_eq!(redact(l), l);
        }
    }

    #[test]
    fn a_toml_parse_error_is_redacted() {
        let text = "[rate_limit]\nredis_url = \"redis://admin:hunter2@cache:6379/0\nbackend = \"redis\"\n";
        let err = toml::from_str::<toml::Value>(text).unwrap_err().to_string();
        assert!(err.contains("hunter2"), "the parser quotes the line: {err}");
        let r = redact(&err);
        assert!(!r.contains("hunter2") && !r.contains("admin:"), "{r}");
        let text = "[x]\npassword = \"hunter2\nother = 1\n";
        let err = toml::from_str::<toml::Value>(text).unwrap_err().to_string();
        assert!(!redact(&err).contains("hunter2"), "{}", redact(&err));
    }
}
