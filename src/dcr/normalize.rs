//! Value-level normalization: human text, scope strings, response types, language tags.

use std::borrow::Cow;

use unicode_normalization::UnicodeNormalization;

use super::error::is_invisible;
use super::policy::SecurityMode;
use super::validate::GrantType;

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
pub(crate) fn human_text_cow(raw: &str, max_chars: usize, mode: SecurityMode, apostrophe_ok: bool) -> Result<Cow<'_, str>, TextError> {
    let t = raw.trim();
    // Fast path: an NFC (e.g. ASCII) trimmed text is its own fixed point below.
    let s: Cow<'_, str> = if t.is_ascii() || unicode_normalization::is_nfc_quick(t.chars()) == unicode_normalization::IsNormalized::Yes {
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

/// A `response_types` entry as a set of OAuth response type values (order-insensitive, per
/// OAuth 2.0 Multiple Response Type Encoding Practices).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ResponseType(u8);

impl ResponseType {
    const CODE: u8 = 1;
    const TOKEN: u8 = 2;
    const ID_TOKEN: u8 = 4;
    const NONE: u8 = 8;

    /// Parses a space-separated response type; `None` for unknown or repeated values.
    pub(crate) fn parse(s: &str) -> Option<ResponseType> {
        let mut bits = 0u8;
        for tok in s.split(' ').filter(|t| !t.is_empty()) {
            let b = match tok {
                "code" => Self::CODE,
                "token" => Self::TOKEN,
                "id_token" => Self::ID_TOKEN,
                "none" => Self::NONE,
                _ => return None,
            };
            if bits & b != 0 {
                return None;
            }
            bits |= b;
        }
        (bits != 0).then_some(ResponseType(bits))
    }

    /// Strict: `code` only. Permissive: also the implicit and hybrid combinations of `code`,
    /// `token` and `id_token`. `none` (and any combination with it) is refused in both
    /// modes: it issues no credential and has no grant type in RFC 7591 §2.1 / OIDC DCR §2.
    pub(crate) fn allowed_in(self, mode: SecurityMode) -> bool {
        match mode {
            SecurityMode::Strict => self.0 == Self::CODE,
            SecurityMode::Permissive => self.0 & Self::NONE == 0,
        }
    }

    pub(crate) fn has_code(self) -> bool {
        self.0 & Self::CODE != 0
    }

    /// Returns anything from the authorization endpoint's front channel (`token`/`id_token`).
    pub(crate) fn is_implicit(self) -> bool {
        self.0 & (Self::TOKEN | Self::ID_TOKEN) != 0
    }

    /// RFC 7591 §2.1: `code` needs `authorization_code`; `token`/`id_token` need `implicit`.
    pub(crate) fn missing_grant(self, grants: &[GrantType]) -> Option<&'static str> {
        if self.has_code() && !grants.contains(&GrantType::AuthorizationCode) {
            return Some(GrantType::AuthorizationCode.as_str());
        }
        if self.is_implicit() && !grants.contains(&GrantType::Implicit) {
            return Some(GrantType::Implicit.as_str());
        }
        None
    }

    /// The canonical spelling: the values in the order `code id_token token`.
    pub(crate) fn canonical(self) -> String {
        self.canonical_str().to_string()
    }

    /// [`Self::canonical`], from a table indexed by the bits.
    pub(crate) fn canonical_str(self) -> &'static str {
        const SPELLINGS: [&str; 16] = [
            "",
            "code",
            "token",
            "code token",
            "id_token",
            "code id_token",
            "id_token token",
            "code id_token token",
            "none",
            "code none",
            "token none",
            "code token none",
            "id_token none",
            "code id_token none",
            "id_token token none",
            "code id_token token none",
        ];
        SPELLINGS[usize::from(self.0 & 15)]
    }

    /// The spelling [`Self::canonical_str`] tabulates, built part by part.
    #[cfg(test)]
    fn canonical_built(self) -> String {
        let mut parts = Vec::new();
        if self.0 & Self::CODE != 0 {
            parts.push("code");
        }
        if self.0 & Self::ID_TOKEN != 0 {
            parts.push("id_token");
        }
        if self.0 & Self::TOKEN != 0 {
            parts.push("token");
        }
        if self.0 & Self::NONE != 0 {
            parts.push("none");
        }
        parts.join(" ")
    }
}

/// A BCP 47-shaped language tag (as in `client_name#en-US`): an alphabetic primary subtag of
/// 2-8 letters, then alphanumeric subtags of 1-8 characters, separated by `-`. Not checked
/// against the IANA registry.
pub(crate) fn is_language_tag(tag: &str) -> bool {
    let mut parts = tag.split('-');
    let primary_ok = parts.next().is_some_and(|p| (2..=8).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_alphabetic()));
    primary_ok && tag.len() <= 64 && parts.all(|p| (1..=8).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_alphanumeric()))
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
    super::uri::domain_to_ascii_strict(domain).is_ok()
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
        assert_eq!(parse_scope("read:all https://api.example.com/x"), Ok(vec!["read:all".into(), "https://api.example.com/x".into()]));
    }

    #[test]
    fn response_types() {
        let rt = |s| ResponseType::parse(s);
        assert_eq!(rt("code").map(|r| r.canonical()), Some("code".into()));
        assert_eq!(rt("token id_token code").map(|r| r.canonical()), Some("code id_token token".into()));
        assert_eq!(rt("code code"), None);
        assert_eq!(rt(""), None);
        assert_eq!(rt("device"), None);
        assert!(rt("code").unwrap().allowed_in(SecurityMode::Strict));
        assert!(!rt("token").unwrap().allowed_in(SecurityMode::Strict));
        assert!(rt("code id_token").unwrap().allowed_in(SecurityMode::Permissive));
        assert!(!rt("none").unwrap().allowed_in(SecurityMode::Permissive));
        for bits in 1..16u8 {
            assert_eq!(ResponseType(bits).canonical(), ResponseType(bits).canonical_built(), "{bits}");
        }
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
        for bad in ["", "ops", "@example.com", "ops@", "ops@localhost", "a b@example.com", "a@b@example.com", "<a>@example.com", "a@example.com."] {
            assert!(!is_email(bad), "{bad}");
        }
    }
}
