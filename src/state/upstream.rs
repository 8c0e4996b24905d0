//! Resolving the `[upstream]` section into what the proxy connects to: each origin's address
//! (DNS once, at startup) and the CA certificates. Shared by the proxy's load balancer and by
//! the reload's start-bound check, so a changed `[upstream]` that the next restart would refuse
//! fails the reload the same way.

use std::collections::BTreeSet;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;

use pingora::tls::x509::X509;

use crate::config::Upstream;

/// One origin, resolved.
#[derive(Debug, Clone)]
pub struct ResolvedOrigin {
    pub addr: SocketAddr,
    pub tls: bool,
    /// `[upstream] sni`, else the origin's host.
    pub sni: String,
}

pub struct Resolved {
    pub origins: Vec<ResolvedOrigin>,
    pub ca: Option<Arc<Box<[X509]>>>,
}

/// Errors name the config key.
pub fn resolve(up: &Upstream) -> Result<Resolved, Vec<String>> {
    let mut errors = Vec::new();
    let mut origins = Vec::new();
    let tls_modes: BTreeSet<bool> = up.origins.iter().map(|o| o.tls).collect();
    if tls_modes.len() > 1 {
        errors.push("upstream.origins: mixing http and https origins is not supported".to_string());
    }
    for (i, o) in up.origins.iter().enumerate() {
        let addrs: Vec<SocketAddr> = match o.authority().to_socket_addrs() {
            Ok(a) => a.collect(),
            Err(e) => {
                errors.push(format!("upstream.origins[{i}]: cannot resolve {}: {e}", o.host));
                continue;
            }
        };
        let Some(addr) = addrs.first() else {
            errors.push(format!("upstream.origins[{i}]: {} resolves to no address", o.host));
            continue;
        };
        let sni = up.sni.clone().unwrap_or_else(|| o.host.clone());
        origins.push(ResolvedOrigin { addr: *addr, tls: o.tls, sni });
    }
    let ca = match &up.ca_file {
        None => None,
        Some(p) => match std::fs::read(p)
            .map_err(|e| e.to_string())
            .and_then(|pem| X509::stack_from_pem(&pem).map_err(|e| e.to_string()))
        {
            Ok(certs) if !certs.is_empty() => Some(Arc::new(certs.into_boxed_slice())),
            Ok(_) => {
                errors.push(format!("upstream.ca_file: {} holds no PEM certificate", p.display()));
                None
            }
            Err(e) => {
                errors.push(format!("upstream.ca_file: {}: {e}", p.display()));
                None
            }
        },
    };
    if errors.is_empty() {
        Ok(Resolved { origins, ca })
    } else {
        Err(errors)
    }
}
