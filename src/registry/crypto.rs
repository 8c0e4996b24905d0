//! The `registration_access_token` at rest: AES-256-GCM with a key chosen by id.
//!
//! `[registry] key_file` holds one key per line, `<key-id>:<base64 of 32 bytes>` (`#` starts a
//! comment). The first key encrypts; every key decrypts, so keys rotate by putting a new key
//! on the first line and keeping the old ones below until no row uses them. A sealed token is
//! `v1.<key-id>.<base64url(nonce ‖ ciphertext ‖ tag)>`, authenticated with the client_id as
//! associated data: a sealed token copied onto another client's row does not open.
//!
//! Neither the keys nor the plaintext ever appear in a `Debug` output, an error or a log.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use base64::Engine;
use rand::RngCore;

const VERSION: &str = "v1";

/// The keys of `[registry] key_file`.
#[derive(Clone)]
pub struct KeyRing {
    keys: Vec<(String, Aes256Gcm)>,
}

impl std::fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ids: Vec<&str> = self.keys.iter().map(|(id, _)| id.as_str()).collect();
        f.debug_struct("KeyRing").field("key_ids", &ids).finish()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CryptoError {
    #[error("line {0}: expected <key-id>:<base64 of 32 bytes>")]
    BadLine(usize),
    #[error("line {0}: key id must be 1-32 characters of [A-Za-z0-9_-]")]
    BadKeyId(usize),
    #[error("line {0}: the key is not 32 bytes of base64")]
    BadKey(usize),
    #[error("line {0}: key id {1:?} appears twice")]
    DuplicateKeyId(usize, String),
    #[error("no key in the file")]
    Empty,
    #[error("sealed token not readable (format, unknown key id, or wrong key)")]
    Open,
    #[error("encryption failed")]
    Seal,
}

fn valid_id(id: &str) -> bool {
    (1..=32).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

impl KeyRing {
    /// Parse the key file's text.
    pub fn parse(text: &str) -> Result<KeyRing, CryptoError> {
        let mut keys: Vec<(String, Aes256Gcm)> = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let n = i + 1;
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (id, b64) = line.split_once(':').ok_or(CryptoError::BadLine(n))?;
            let id = id.trim();
            if !valid_id(id) {
                return Err(CryptoError::BadKeyId(n));
            }
            let raw =
                base64::engine::general_purpose::STANDARD.decode(b64.trim()).map_err(|_| CryptoError::BadKey(n))?;
            let key = Key::<Aes256Gcm>::try_from(raw.as_slice()).map_err(|_| CryptoError::BadKey(n))?;
            if keys.iter().any(|(k, _)| k == id) {
                return Err(CryptoError::DuplicateKeyId(n, id.to_string()));
            }
            keys.push((id.to_string(), Aes256Gcm::new(&key)));
        }
        if keys.is_empty() {
            return Err(CryptoError::Empty);
        }
        Ok(KeyRing { keys })
    }

    /// Read and parse a key file.
    pub fn load(path: &std::path::Path) -> Result<KeyRing, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        KeyRing::parse(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// The id of the key that encrypts.
    pub fn active_id(&self) -> &str {
        &self.keys[0].0
    }

    /// Encrypt `secret` for the row of `client_id`.
    pub fn seal(&self, client_id: &str, secret: &str) -> Result<String, CryptoError> {
        let (id, cipher) = &self.keys[0];
        let mut nonce_bytes = [0u8; 12];
        rand::thread_rng().fill_bytes(&mut nonce_bytes);
        let nonce = Nonce::try_from(&nonce_bytes[..]).map_err(|_| CryptoError::Seal)?;
        let ct = cipher
            .encrypt(&nonce, Payload { msg: secret.as_bytes(), aad: client_id.as_bytes() })
            .map_err(|_| CryptoError::Seal)?;
        let mut out = nonce_bytes.to_vec();
        out.extend_from_slice(&ct);
        Ok(format!("{VERSION}.{id}.{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(out)))
    }

    /// Decrypt a sealed token of the row of `client_id`.
    pub fn open(&self, client_id: &str, sealed: &str) -> Result<String, CryptoError> {
        let mut parts = sealed.splitn(3, '.');
        let (Some(VERSION), Some(id), Some(b64)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(CryptoError::Open);
        };
        let cipher = self.keys.iter().find(|(k, _)| k == id).map(|(_, c)| c).ok_or(CryptoError::Open)?;
        let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(b64).map_err(|_| CryptoError::Open)?;
        if raw.len() < 12 + 16 {
            return Err(CryptoError::Open);
        }
        let nonce = Nonce::try_from(&raw[..12]).map_err(|_| CryptoError::Open)?;
        let pt = cipher
            .decrypt(&nonce, Payload { msg: &raw[12..], aad: client_id.as_bytes() })
            .map_err(|_| CryptoError::Open)?;
        String::from_utf8(pt).map_err(|_| CryptoError::Open)
    }

    /// The key id a sealed token names (for rotation reports), without opening it.
    pub fn key_id_of(sealed: &str) -> Option<&str> {
        let mut parts = sealed.splitn(3, '.');
        (parts.next() == Some(VERSION)).then(|| parts.next()).flatten()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(b: u8) -> String {
        base64::engine::general_purpose::STANDARD.encode([b; 32])
    }

    #[test]
    fn seals_and_opens_with_the_client_id_bound() {
        let ring = KeyRing::parse(&format!("# keys\nk2:{}\nk1:{}\n", key(2), key(1))).unwrap();
        assert_eq!(ring.active_id(), "k2");
        let sealed = ring.seal("client-a", "rat-secret-value").unwrap();
        assert!(sealed.starts_with("v1.k2."));
        assert!(!sealed.contains("rat-secret-value"));
        assert_eq!(ring.open("client-a", &sealed).unwrap(), "rat-secret-value");
        // Another row's client_id: refused (associated data).
        assert_eq!(ring.open("client-b", &sealed), Err(CryptoError::Open));
        // Two seals of one secret differ (random nonce).
        assert_ne!(sealed, ring.seal("client-a", "rat-secret-value").unwrap());
    }

    #[test]
    fn rotation_keeps_old_tokens_readable_and_a_wrong_key_reads_nothing() {
        let old = KeyRing::parse(&format!("k1:{}\n", key(1))).unwrap();
        let sealed = old.seal("c", "tok").unwrap();
        let rotated = KeyRing::parse(&format!("k2:{}\nk1:{}\n", key(2), key(1))).unwrap();
        assert_eq!(rotated.open("c", &sealed).unwrap(), "tok");
        assert!(rotated.seal("c", "tok").unwrap().starts_with("v1.k2."));
        // Same id, other key bytes: authentication fails.
        let wrong = KeyRing::parse(&format!("k1:{}\n", key(9))).unwrap();
        assert_eq!(wrong.open("c", &sealed), Err(CryptoError::Open));
        // Key dropped from the file: unknown id.
        let without = KeyRing::parse(&format!("k2:{}\n", key(2))).unwrap();
        assert_eq!(without.open("c", &sealed), Err(CryptoError::Open));
    }

    #[test]
    fn bad_files_are_refused_without_echoing_key_material() {
        assert_eq!(KeyRing::parse("").unwrap_err(), CryptoError::Empty);
        assert_eq!(KeyRing::parse("nocolon").unwrap_err(), CryptoError::BadLine(1));
        assert_eq!(KeyRing::parse("k1:c2hvcnQ=").unwrap_err(), CryptoError::BadKey(1));
        assert_eq!(KeyRing::parse(&format!("bad id:{}", key(1))).unwrap_err(), CryptoError::BadKeyId(1));
        let dup = KeyRing::parse(&format!("a:{}\na:{}", key(1), key(2))).unwrap_err();
        assert_eq!(dup, CryptoError::DuplicateKeyId(2, "a".into()));
        let ring = KeyRing::parse(&format!("a:{}", key(1))).unwrap();
        assert!(!format!("{ring:?}").contains(&key(1)));
    }
}
