//! The HTTPS listeners' certificate and key pairs: read and checked (the key belongs to the
//! leaf) at start and on every reload, then swapped into the slot each listener's TLS callback
//! reads per handshake (`proxy::tls`), so a rotated certificate serves without a restart and a
//! bad one never replaces a good one.

use std::path::Path;

use arc_swap::ArcSwap;
use pingora::tls::hash::MessageDigest;
use pingora::tls::pkey::{PKey, Private};
use pingora::tls::x509::X509;

/// A certificate chain (leaf first) and the private key of its leaf, validated.
pub struct CertPair {
    chain: Vec<X509>,
    key: PKey<Private>,
    /// SHA-256 of the leaf certificate (hex), for logs.
    pub fingerprint: String,
}

impl std::fmt::Debug for CertPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CertPair({} certificates, leaf sha256 {})", self.chain.len(), self.fingerprint)
    }
}

impl CertPair {
    /// Read and validate a PEM certificate chain and its PEM private key. Errors name the file.
    pub fn load(cert: &Path, key: &Path) -> Result<CertPair, String> {
        let pem = std::fs::read(cert).map_err(|e| format!("{}: {e}", cert.display()))?;
        let chain = X509::stack_from_pem(&pem).map_err(|e| format!("{}: {e}", cert.display()))?;
        let Some(leaf) = chain.first() else {
            return Err(format!("{}: no PEM certificate", cert.display()));
        };
        let kpem = std::fs::read(key).map_err(|e| format!("{}: {e}", key.display()))?;
        let pkey = PKey::private_key_from_pem(&kpem).map_err(|e| format!("{}: {e}", key.display()))?;
        let public = leaf.public_key().map_err(|e| format!("{}: {e}", cert.display()))?;
        if !public.public_eq(&pkey) {
            return Err(format!(
                "{}: the private key does not belong to the certificate in {}",
                key.display(),
                cert.display()
            ));
        }
        let fingerprint = leaf
            .digest(MessageDigest::sha256())
            .map(|d| hex::encode(d.as_ref()))
            .map_err(|e| format!("{}: {e}", cert.display()))?;
        Ok(CertPair { chain, key: pkey, fingerprint })
    }

    /// The chain, leaf first.
    pub fn chain(&self) -> &[X509] {
        &self.chain
    }

    pub fn key(&self) -> &PKey<Private> {
        &self.key
    }
}

/// The pair a listener serves now; replaced by reloads, read by every handshake.
pub type CertSlot = ArcSwap<CertPair>;
