//! Upstream origins: a Pingora round-robin load balancer with health checks, and the peer
//! (TLS, SNI, CA, timeouts) for each selected origin.

use std::collections::BTreeSet;

use std::sync::Arc;

use pingora::lb::discovery::Static;
use pingora::lb::health_check::{HttpHealthCheck, TcpHealthCheck};
use pingora::lb::{selection::RoundRobin, Backend, Backends, LoadBalancer};
use pingora::tls::x509::X509;
use pingora::upstreams::peer::HttpPeer;

use crate::config::{HealthCheckKind, Upstream};

/// Carried in each backend's extensions: the peer (TLS, SNI, CA, timeouts) to reach it, built
/// once at startup so a request only clones it.
#[derive(Debug, Clone)]
pub struct OriginMeta {
    pub peer: HttpPeer,
}

/// Settings shared by every peer we build.
pub struct PeerTemplate {
    pub upstream: Upstream,
    pub ca: Option<Arc<Box<[X509]>>>,
}

/// Resolve the configured origins (`state::upstream::resolve`: DNS once, at startup, and the
/// CA file) and build the load balancer. Errors name the config key.
pub fn build(up: &Upstream) -> Result<(LoadBalancer<RoundRobin>, PeerTemplate), Vec<String>> {
    let resolved = crate::state::upstream::resolve(up)?;
    let ca = resolved.ca;
    let origins: Vec<(Backend, bool, String)> = resolved
        .origins
        .into_iter()
        .map(|o| {
            let b = Backend {
                addr: pingora::protocols::l4::socket::SocketAddr::Inet(o.addr),
                weight: 1,
                ext: Default::default(),
            };
            (b, o.tls, o.sni)
        })
        .collect();
    let template = PeerTemplate { upstream: up.clone(), ca: ca.clone() };
    let backends: BTreeSet<Backend> = origins
        .into_iter()
        .map(|(mut b, tls, sni)| {
            let peer = template.build(b.addr.clone(), tls, sni);
            b.ext.insert(OriginMeta { peer });
            b
        })
        .collect();
    let tls = up.origins.first().is_some_and(|o| o.tls);
    let sni = up.sni.clone().or_else(|| up.origins.first().map(|o| o.host.clone())).unwrap_or_default();
    let mut backends = Backends::new(Static::new(backends));
    match up.health_check {
        HealthCheckKind::None => {}
        HealthCheckKind::Tcp => {
            let hc = if tls { TcpHealthCheck::new_tls(&sni) } else { TcpHealthCheck::new() };
            backends.set_health_check(hc);
        }
        HealthCheckKind::Http => {
            let mut hc = HttpHealthCheck::new(&sni, tls);
            if let Ok(uri) = up.health_check_path.parse() {
                hc.req.set_uri(uri);
            }
            hc.peer_template.options.connection_timeout = Some(up.connect_timeout);
            hc.peer_template.options.read_timeout = Some(up.read_timeout);
            hc.peer_template.options.ca = ca.clone();
            hc.peer_template.options.verify_cert = up.verify_cert;
            backends.set_health_check(Box::new(hc));
        }
    }
    let mut lb = LoadBalancer::from_backends(backends);
    if up.health_check != HealthCheckKind::None && !up.health_check_interval.is_zero() {
        lb.health_check_frequency = Some(up.health_check_interval);
    }
    lb.parallel_health_check = true;
    Ok((lb, template))
}

/// Load the static backend list and run one round of health checks now, synchronously
/// (bounded by the configured connect/read timeouts), so the balancer can select an origin
/// from the first request on.
pub fn prime(lb: &LoadBalancer<RoundRobin>) {
    let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else { return };
    rt.block_on(async {
        if let Err(e) = lb.update().await {
            tracing::warn!(error = %e, "could not load the upstream origins before start");
        }
        lb.backends().run_health_check(lb.parallel_health_check).await;
    });
}

impl PeerTemplate {
    /// The peer for a backend selected by the load balancer.
    pub fn peer(&self, backend: &Backend) -> HttpPeer {
        match backend.ext.get::<OriginMeta>() {
            Some(meta) => meta.peer.clone(),
            None => self.build(backend.addr.clone(), false, String::new()),
        }
    }

    fn build(&self, addr: pingora::protocols::l4::socket::SocketAddr, tls: bool, sni: String) -> HttpPeer {
        let mut peer = HttpPeer::new(addr, tls, sni);
        let o = &mut peer.options;
        o.connection_timeout = Some(self.upstream.connect_timeout);
        o.read_timeout = Some(self.upstream.read_timeout);
        o.write_timeout = Some(self.upstream.write_timeout);
        o.idle_timeout = Some(self.upstream.idle_timeout);
        o.verify_cert = self.upstream.verify_cert;
        o.verify_hostname = self.upstream.verify_cert;
        o.ca = self.ca.clone();
        peer
    }
}
