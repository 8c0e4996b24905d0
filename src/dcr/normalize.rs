//! Value-level normalization: human text, scope strings, language tags, email addresses.

use std::borrow::Cow;

use unicode_normalization::UnicodeNormalization;

use super::error::is_invisible;
use super::uri::domain_to_ascii_strict;
use super::vocab::SecurityMode;

/// Why a piece of human text was refused (the caller prefixes the member name).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TextError {
    Empty,
    TooLong(usize),
    Control,
    AngleBracket,
    /// A quote or backtick (HTML attribute break-out) in strict mode.
    Quote(char),
}

impl std::fmt::Display for TextError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TextError::Empty => f.write_str("must not be empty"),
            TextError::TooLong(max) => write!(f, "longer than {max} characters"),
            TextError::Control => f.write_str("must not contain control or invisible formatting characters"),
            TextError::AngleBracket => f.write_str("must not contain '<' or '>' in strict mode"),
            TextError::Quote(c) => write!(f, "must not contain {c:?} in strict mode"),
        }
    }
}

/// Trims and NFC-normalizes human text, then checks it: 1..=max characters, no control
/// characters (Unicode Cc), no bidi or other invisible format controls, and in strict mode
/// no `<` / `>`. The result is a fixed point: `human_text(result) == result`.
#[cfg(test)]
pub(crate) fn human_text(raw: &str, max_chars: usize, mode: SecurityMode) -> Result<String, TextError> {
    human_text_cow(raw, max_chars, mode, false).map(Cow::into_owned)
}

/// [`human_text`], borrowing `raw` (trimmed) when that is already the result.
///
/// Strict mode also refuses `"`, `` ` `` and (unless `apostrophe_ok`, `[dcr]
/// allow_apostrophe`) `'`: a consent page that puts the name unescaped into an HTML attribute
/// (LemonLDAP::NG 2.16) runs `Acme" autofocus onfocus="…`.
pub(crate) fn human_text_cow(
    raw: &str,
    max_chars: usize,
    mode: SecurityMode,
    apostrophe_ok: bool,
) -> Result<Cow<'_, str>, TextError> {
    let t = raw.trim();
    // Fast path: an NFC (e.g. ASCII) trimmed text is its own fixed point below.
    let s: Cow<'_, str> =
        if t.is_ascii() || unicode_normalization::is_nfc_quick(t.chars()) == unicode_normalization::IsNormalized::Yes {
            Cow::Borrowed(t)
        } else {
            let mut s = trim_nfc(raw);
            // Trimming an NFC string can, in rare cases, expose text that NFC would change again.
            for _ in 0..4 {
                let again = trim_nfc(&s);
                if again == s {
                    break;
                }
                s = again;
            }
            Cow::Owned(s)
        };
    if s.is_empty() {
        return Err(TextError::Empty);
    }
    let ascii = s.is_ascii();
    if ascii {
        if s.bytes().any(|b| b.is_ascii_control()) {
            return Err(TextError::Control);
        }
    } else if s.chars().any(|c| c.is_control() || is_invisible(c)) {
        return Err(TextError::Control);
    }
    if mode == SecurityMode::Strict {
        if s.contains(['<', '>']) {
            return Err(TextError::AngleBracket);
        }
        if let Some(c) = s.chars().find(|&c| c == '"' || c == '`' || (c == '\'' && !apostrophe_ok)) {
            return Err(TextError::Quote(c));
        }
    }
    if s.len() > max_chars && (ascii || s.chars().count() > max_chars) {
        return Err(TextError::TooLong(max_chars));
    }
    Ok(s)
}

fn trim_nfc(s: &str) -> String {
    let t = s.trim();
    if unicode_normalization::is_nfc_quick(t.chars()) == unicode_normalization::IsNormalized::Yes {
        t.to_string()
    } else {
        t.nfc().collect::<String>().trim().to_string()
    }
}

/// The fold used to compare client names with reserved names: UTS 39 skeleton, lower case,
/// skeleton again (so case and confusable look-alikes both fold), whitespace runs collapsed.
pub(crate) fn fold_confusable(s: &str) -> String {
    let first: String = unicode_security::skeleton(s).collect();
    let lower = first.to_lowercase();
    let second: String = unicode_security::skeleton(&lower).collect();
    second.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Splits an RFC 6749 §3.3 scope string. Any run of ASCII whitespace separates tokens (the
/// output joins them with single spaces); each token is 1*NQCHAR (%x21 / %x23-5B / %x5D-7E).
/// Duplicates are removed, first occurrence kept. No token at all is an error.
pub(crate) fn parse_scope(s: &str) -> Result<Vec<String>, &'static str> {
    parse_scope_tokens(s).map(|t| t.into_iter().map(str::to_string).collect())
}

/// [`parse_scope`], borrowing the tokens.
pub(crate) fn parse_scope_tokens(s: &str) -> Result<Vec<&str>, &'static str> {
    let mut out: Vec<&str> = Vec::new();
    for tok in s.split(|c: char| c.is_ascii_whitespace()).filter(|t| !t.is_empty()) {
        if !tok.bytes().all(|b| b == 0x21 || (0x23..=0x5B).contains(&b) || (0x5D..=0x7E).contains(&b)) {
            return Err("scope tokens may only contain printable ASCII other than '\"' and '\\'");
        }
        if !out.contains(&tok) {
            out.push(tok);
        }
    }
    if out.is_empty() {
        return Err("must contain at least one scope token");
    }
    Ok(out)
}

/// A BCP 47-shaped language tag (as in `client_name#en-US`): an alphabetic primary subtag of
/// 2-8 letters, then alphanumeric subtags of 1-8 characters, separated by `-`. Not checked
/// against the IANA registry.
pub(crate) fn is_language_tag(tag: &str) -> bool {
    let mut parts = tag.split('-');
    let primary_ok =
        parts.next().is_some_and(|p| (2..=8).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_alphabetic()));
    primary_ok
        && tag.len() <= 64
        && parts.all(|p| (1..=8).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_alphanumeric()))
}

/// A simple `local@domain` check for `contacts`.
pub(crate) fn is_email(s: &str) -> bool {
    let Some((local, domain)) = s.split_once('@') else {
        return false;
    };
    let local_ok = !local.is_empty()
        && local.chars().count() <= 64
        && !local.starts_with('.')
        && !local.ends_with('.')
        && !local.contains("..")
        && local.chars().all(|c| {
            !c.is_control()
                && !c.is_whitespace()
                && !is_invisible(c)
                && !matches!(c, '<' | '>' | '(' | ')' | '[' | ']' | '\\' | ',' | ';' | ':' | '"' | '@')
        });
    if !local_ok || domain.is_empty() || domain.len() > 253 || !domain.contains('.') || domain.ends_with('.') {
        return false;
    }
    domain_to_ascii_strict(domain).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_text_rules() {
        let s = SecurityMode::Strict;
        let p = SecurityMode::Permissive;
        assert_eq!(human_text("  Cafe\u{301}  ", 100, s), Ok("Café".to_string()));
        assert_eq!(human_text(" \t ", 100, s), Err(TextError::Empty));
        assert_eq!(human_text("abc", 2, s), Err(TextError::TooLong(2)));
        assert_eq!(human_text("ab", 2, s), Ok("ab".into()));
        assert_eq!(human_text("日本語", 3, s), Ok("日本語".into()));
        assert_eq!(human_text("a\u{0}b", 10, s), Err(TextError::Control));
        assert_eq!(human_text("a\nb", 10, s), Err(TextError::Control));
        assert_eq!(human_text("evil\u{202E}gpj", 20, s), Err(TextError::Control));
        assert_eq!(human_text("<b>x</b>", 20, s), Err(TextError::AngleBracket));
        assert_eq!(human_text("<b>x</b>", 20, p), Ok("<b>x</b>".into()));
        assert_eq!(human_text("Acme\" autofocus onfocus=\"x", 40, s), Err(TextError::Quote('"')));
        assert_eq!(human_text("a`b", 40, s), Err(TextError::Quote('`')));
        assert_eq!(human_text("O'Reilly", 40, s), Err(TextError::Quote('\'')));
        assert_eq!(human_text_cow("O'Reilly", 40, s, true).map(Cow::into_owned), Ok("O'Reilly".to_string()));
        assert_eq!(human_text("Acme\"", 40, p), Ok("Acme\"".into()));
    }

    #[test]
    fn confusable_fold() {
        assert!(fold_confusable("\u{410}cme Support").contains(&fold_confusable("Acme")));
        assert!(fold_confusable("ACME  inc").contains(&fold_confusable("acme inc")));
        assert!(fold_confusable("Pay\u{440}al").contains(&fold_confusable("PayPal")));
        assert!(!fold_confusable("Example").contains(&fold_confusable("Acme")));
    }

    #[test]
    fn scope_tokens() {
        assert_eq!(parse_scope("  openid\t profile  openid "), Ok(vec!["openid".to_string(), "profile".to_string()]));
        assert!(parse_scope("   ").is_err());
        assert!(parse_scope("a\"b").is_err());
        assert!(parse_scope("a\\b").is_err());
        assert!(parse_scope("caf\u{e9}").is_err());
        assert_eq!(
            parse_scope("read:all https://api.example.com/x"),
            Ok(vec!["read:all".into(), "https://api.example.com/x".into()])
        );
    }

    #[test]
    fn language_tags_and_emails() {
        for ok in ["en", "en-US", "zh-Hant-TW", "ja-Kana-JP", "sl-rozaj-biske"] {
            assert!(is_language_tag(ok), "{ok}");
        }
        for bad in ["", "e", "en_US", "en-", "-en", "123", "en-toolongsubtag", "ja#x"] {
            assert!(!is_language_tag(bad), "{bad}");
        }
        for ok in ["ops@example.com", "a.b+c@sub.example.org", "ops@bücher.example"] {
            assert!(is_email(ok), "{ok}");
        }
        for bad in [
            "",
            "ops",
            "@example.com",
            "ops@",
            "ops@localhost",
            "a b@example.com",
            "a@b@example.com",
            "<a>@example.com",
            "a@example.com.",
        ] {
            assert!(!is_email(bad), "{bad}");
        }
    }
}
