//! Text helpers for the hot path: a fast hasher for the value maps, ASCII case folding
//! without heap allocation for ordinary lengths, and the `*` wildcard used by `user_agents`.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// Fx-style multiplicative hasher. Keys come from the (trusted) rule file; request values
/// are only looked up, so there is no table growth an attacker could drive.
#[derive(Default, Clone, Copy)]
pub(crate) struct FxHasher(u64);

const SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;

impl FxHasher {
    #[inline]
    fn add(&mut self, w: u64) {
        self.0 = (self.0.rotate_left(5) ^ w).wrapping_mul(SEED);
    }
}

impl Hasher for FxHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let mut w = [0u8; 8];
            w.copy_from_slice(c);
            self.add(u64::from_le_bytes(w));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut w = [0u8; 8];
            w[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(w) ^ ((rest.len() as u64) << 56));
        }
    }
    #[inline]
    fn write_u8(&mut self, i: u8) {
        self.add(u64::from(i));
    }
    #[inline]
    fn write_u32(&mut self, i: u32) {
        self.add(u64::from(i));
    }
    #[inline]
    fn write_u64(&mut self, i: u64) {
        self.add(i);
    }
    #[inline]
    fn write_u128(&mut self, i: u128) {
        self.add(i as u64);
        self.add((i >> 64) as u64);
    }
    #[inline]
    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }
    #[inline]
    fn finish(&self) -> u64 {
        // Spread the high-quality high bits into the low ones as well.
        self.0 ^ (self.0 >> 29)
    }
}

pub(crate) type FxBuild = BuildHasherDefault<FxHasher>;
/// Value → postings (`position << 1 | side`, side 1 = not_match).
pub(crate) type TextMap = HashMap<Box<str>, Vec<u32>, FxBuild>;

/// Case used for stored keys of a map.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Fold {
    Upper,
    Lower,
}

impl Fold {
    #[inline]
    fn needs(self, b: u8) -> bool {
        match self {
            Fold::Upper => b.is_ascii_lowercase(),
            Fold::Lower => b.is_ascii_uppercase(),
        }
    }
    #[inline]
    fn apply(self, b: u8) -> u8 {
        match self {
            Fold::Upper => b.to_ascii_uppercase(),
            Fold::Lower => b.to_ascii_lowercase(),
        }
    }
    /// Folds a value from the rule file (compile time).
    pub(crate) fn string(self, s: &str) -> String {
        match self {
            Fold::Upper => s.to_ascii_uppercase(),
            Fold::Lower => s.to_ascii_lowercase(),
        }
    }
}

const STACK: usize = 256;

/// Looks `s` up in `map` after ASCII case folding, without allocating for strings up to
/// 256 bytes.
#[inline]
pub(crate) fn lookup<'m>(map: &'m TextMap, s: &str, fold: Fold) -> Option<&'m Vec<u32>> {
    if map.is_empty() {
        return None;
    }
    let bytes = s.as_bytes();
    let Some(first) = bytes.iter().position(|&b| fold.needs(b)) else {
        return map.get(s);
    };
    if bytes.len() <= STACK {
        let mut buf = [0u8; STACK];
        let out = &mut buf[..bytes.len()];
        out[..first].copy_from_slice(&bytes[..first]);
        for (o, &b) in out[first..].iter_mut().zip(&bytes[first..]) {
            *o = fold.apply(b);
        }
        // ASCII case changes keep UTF-8 valid; never fails.
        match std::str::from_utf8(out) {
            Ok(folded) => map.get(folded),
            Err(_) => None,
        }
    } else {
        map.get(fold.string(s).as_str())
    }
}

/// A `user_agents` value: case-insensitive (ASCII) exact text where `*` matches any run of
/// characters, including none. Stored lower case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Glob {
    /// The literal pieces between `*`s; `parts.len() == stars + 1`.
    parts: Vec<Box<str>>,
}

impl Glob {
    pub(crate) fn new(pattern: &str) -> Glob {
        let lower = pattern.to_ascii_lowercase();
        Glob { parts: lower.split('*').map(Box::from).collect() }
    }

    pub(crate) fn has_wildcard(&self) -> bool {
        self.parts.len() > 1
    }

    /// The folded exact text (only meaningful without wildcards).
    pub(crate) fn literal(&self) -> &str {
        self.parts.first().map_or("", |p| p)
    }

    /// `text` must already be ASCII lower case.
    pub(crate) fn matches_lower(&self, text: &str) -> bool {
        let (first, rest) = match self.parts.split_first() {
            Some(x) => x,
            None => return text.is_empty(),
        };
        let Some((last, middle)) = rest.split_last() else {
            return text == &**first;
        };
        if text.len() < first.len() + last.len() || !text.starts_with(&**first) || !text.ends_with(&**last) {
            return false;
        }
        // The prefix and suffix are fixed; middle pieces are placed leftmost-first in what
        // lies between them, which is optimal for `*`-only patterns.
        let mut hay = &text[first.len()..text.len() - last.len()];
        for piece in middle {
            match hay.find(&**piece) {
                Some(at) => hay = &hay[at + piece.len()..],
                None => return false,
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_semantics() {
        let g = |p: &str, t: &str| Glob::new(p).matches_lower(&t.to_ascii_lowercase());
        assert!(g("curl/*", "curl/8.4.0"));
        assert!(g("curl/*", "CURL/"));
        assert!(!g("curl/*", "xcurl/8"));
        assert!(g("*bot*", "Googlebot/2.1"));
        assert!(g("*bot*", "bot"));
        assert!(!g("*bot*", "bo t"));
        assert!(g("*", ""));
        assert!(g("a*a", "aa"));
        assert!(!g("a*a", "a"));
        assert!(g("a*b*c", "aXbYbc"));
        assert!(!g("a*b*c", "acb"));
        assert!(g("**x", "x"));
        assert!(g("python-requests", "Python-Requests"));
        assert!(!g("python-requests", "python-requests/2"));
        assert!(g("*é*", "xéy"));
    }

    #[test]
    fn lookup_folds_without_allocating_short_keys() {
        let mut m = TextMap::default();
        m.insert("us".into(), vec![1]);
        m.insert("x".repeat(300).into(), vec![2]);
        assert_eq!(lookup(&m, "US", Fold::Lower), Some(&vec![1]));
        assert_eq!(lookup(&m, "us", Fold::Lower), Some(&vec![1]));
        assert_eq!(lookup(&m, &"X".repeat(300), Fold::Lower), Some(&vec![2]));
        assert_eq!(lookup(&m, "UK", Fold::Lower), None);
    }
}
