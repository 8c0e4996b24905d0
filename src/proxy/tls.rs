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
use pingora::tls::ssl::NameType;

/// The SNI of a TLS connection, stored in the session's `SslDigest` extension.
#[derive(Debug, Clone)]
pub struct ServerName(pub String);

pub use crate::state::certs::{CertPair, CertSlot};

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
        if let Some((leaf, rest)) = pair.chain().split_first() {
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
        if let Err(e) = ext::ssl_use_private_key(ssl, pair.key()) {
            tracing::error!("TLS: cannot use private key: {e}");
        }
    }

    async fn handshake_complete_callback(&self, ssl: &TlsRef) -> Option<Arc<dyn Any + Send + Sync>> {
        ssl.servername(NameType::HOST_NAME)
            .map(|s| Arc::new(ServerName(s.to_ascii_lowercase())) as Arc<dyn Any + Send + Sync>)
    }
}
