//! Downstream TLS: serves the configured certificate and records the SNI the client sent,
//! so the `hostnames` ACL signal can use it.

use std::any::Any;
use std::sync::Arc;

use async_trait::async_trait;
use pingora::listeners::TlsAccept;
use pingora::protocols::tls::TlsRef;
use pingora::tls::ext;
use pingora::tls::pkey::{PKey, Private};
use pingora::tls::ssl::NameType;
use pingora::tls::x509::X509;

/// The SNI of a TLS connection, stored in the session's `SslDigest` extension.
#[derive(Debug, Clone)]
pub struct ServerName(pub String);

pub struct CertAndSni {
    chain: Vec<X509>,
    key: PKey<Private>,
}

impl CertAndSni {
    pub fn load(cert: &std::path::Path, key: &std::path::Path) -> Result<CertAndSni, String> {
        let pem = std::fs::read(cert).map_err(|e| format!("{}: {e}", cert.display()))?;
        let chain = X509::stack_from_pem(&pem).map_err(|e| format!("{}: {e}", cert.display()))?;
        if chain.is_empty() {
            return Err(format!("{}: no PEM certificate", cert.display()));
        }
        let kpem = std::fs::read(key).map_err(|e| format!("{}: {e}", key.display()))?;
        let key = PKey::private_key_from_pem(&kpem).map_err(|e| format!("{}: {e}", key.display()))?;
        Ok(CertAndSni { chain, key })
    }
}

#[async_trait]
impl TlsAccept for CertAndSni {
    async fn certificate_callback(&self, ssl: &mut TlsRef) {
        if let Some((leaf, rest)) = self.chain.split_first() {
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
        if let Err(e) = ext::ssl_use_private_key(ssl, &self.key) {
            tracing::error!("TLS: cannot use private key: {e}");
        }
    }

    async fn handshake_complete_callback(&self, ssl: &TlsRef) -> Option<Arc<dyn Any + Send + Sync>> {
        ssl.servername(NameType::HOST_NAME)
            .map(|s| Arc::new(ServerName(s.to_ascii_lowercase())) as Arc<dyn Any + Send + Sync>)
    }
}
