//! Request ids: the one rule for accepting an id a trusted client or proxy sent, and for making
//! one. Shared by the proxy, the connection listener and the admin listener.

/// A fresh id: 128 random bits, hex.
pub fn generate() -> String {
    hex::encode(rand::random::<[u8; 16]>())
}

/// An id from outside is kept only if it is short and harmless in logs.
pub fn acceptable(v: &str) -> bool {
    !v.is_empty()
        && v.len() <= 128
        && v.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

/// The id sent (when acceptable), else a fresh one.
pub fn accept_or_generate(sent: Option<&str>) -> String {
    sent.filter(|v| acceptable(v)).map(str::to_string).unwrap_or_else(generate)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids() {
        assert_eq!(generate().len(), 32);
        assert_ne!(generate(), generate());
        assert_eq!(accept_or_generate(Some("abc-1.2:3_x")), "abc-1.2:3_x");
        for bad in ["", "a b", "a\nb", "<x>", &"a".repeat(129)] {
            assert!(!acceptable(bad), "{bad:?}");
        }
        assert_eq!(accept_or_generate(Some("a b")).len(), 32);
    }
}
