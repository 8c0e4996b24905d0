//! Downstream TLS: serves the configured certificate and records the SNI the client sent,
//! so the `hostnames` ACL signal can use it.
//!
//! The certificate and key are chosen per handshake from a [`CertSlot`] that a reload
//! replaces ([`crate::reload::Reloader`]): rotated certificate files take effect on the next
//! handshake, without a restart. A new pair is validated before it replaces the old one (it
//! parses, and the key belongs to the certificate); a pair that does not is a failed reload
//! and the old one keeps serving.

use std::any::Any;
use std::path::Path;
use std::sync::Arc;

use arc_swap::ArcSwap;
use async_trait::async_trait;
use pingora::listeners::TlsAccept;
use pingora::protocols::tls::TlsRef;
use pingora::tls::ext;
use pingora::tls::hash::MessageDigest;
use pingora::tls::pkey::{PKey, Private};
use pingora::tls::ssl::NameType;
use pingora::tls::x509::X509;

/// The SNI of a TLS connection, stored in the session's `SslDigest` extension.
#[derive(Debug, Clone)]
pub struct ServerName(pub String);

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
}

/// The pair a listener serves now; replaced by reloads, read by every handshake.
pub type CertSlot = ArcSwap<CertPair>;

pub struct CertAndSni {
    slot: Arc<CertSlot>,
}

impl CertAndSni {
    /// Load and validate the pair (what `check` and `run` do).
    pub fn load(cert: &Path, key: &Path) -> Result<CertAndSni, String> {
        Ok(CertAndSni { slot: Arc::new(ArcSwap::from_pointee(CertPair::load(cert, key)?)) })
    }

    /// The slot a reload replaces the pair in.
    pub fn slot(&self) -> Arc<CertSlot> {
        self.slot.clone()
    }
}

#[async_trait]
impl TlsAccept for CertAndSni {
    async fn certificate_callback(&self, ssl: &mut TlsRef) {
        let pair = self.slot.load();
        if let Some((leaf, rest)) = pair.chain.split_first() {
            if let Err(e) = ext::ssl_use_certificate(ssl, leaf) {
                tracing::error!("TLS: cannot use certificate: {e}");
                return;
            }
            for c in rest {
                if let Err(e) = ext::ssl_add_chain_cert(ssl, c) {
                    tracing::error!("TLS: cannot add chain certificate: {e}");
                }
            }
        }
        if let Err(e) = ext::ssl_use_private_key(ssl, &pair.key) {
            tracing::error!("TLS: cannot use private key: {e}");
        }
    }

    async fn handshake_complete_callback(&self, ssl: &TlsRef) -> Option<Arc<dyn Any + Send + Sync>> {
        ssl.servername(NameType::HOST_NAME)
            .map(|s| Arc::new(ServerName(s.to_ascii_lowercase())) as Arc<dyn Any + Send + Sync>)
    }
}
