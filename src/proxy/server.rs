//! Assembling the Pingora server: public listeners, admin listener, upstream health checks
//! and the reloader. Signals: SIGTERM drains and exits, SIGQUIT hands the listening sockets
//! to a new process started with `--upgrade` (Pingora's graceful upgrade), SIGINT exits fast,
//! SIGHUP reloads.

use std::path::Path;
use std::sync::Arc;

use arc_swap::ArcSwap;
use pingora::listeners::tls::TlsSettings;
use pingora::prelude::*;
use pingora::server::configuration::ServerConf;
use pingora::services::background::background_service;
use pingora::services::listening::Service;

use super::drain::{Drain, DrainingSignalWatch};
use super::tls::CertAndSni;
use super::{listener, upstream, Gateway};
use crate::admin::listener::AdminApp;
use crate::config::AuditOutput;
use crate::reload::{ReloadService, Reloader};
use crate::telemetry::{logging, AuditLog, Metrics};

/// HTTP/2 stream bounds per connection (h2's defaults are 20 and 1024; a registration
/// client needs a handful of streams).
const H2_MAX_PENDING_ACCEPT_RESETS: usize = 10;
const H2_MAX_LOCAL_ERROR_RESETS: usize = 64;
const H2_MAX_CONCURRENT_STREAMS: u32 = 100;
/// Largest HTTP/1 request head (431 beyond); Pingora's own limit is 1 MiB.
const MAX_HEAD_BYTES: usize = 64 * 1024;

pub use crate::state::idp_probe::registration_path_error;

pub struct RunOptions {
    /// Take over listening sockets from a running instance (graceful upgrade).
    pub upgrade: bool,
}

/// Start the gateway; returns only on a startup error (the server itself exits the process).
pub fn run(config_path: &Path, opts: RunOptions) -> Result<std::convert::Infallible, Vec<String>> {
    // Absolute but not canonical: a Kubernetes ConfigMap mounts gateway.toml as a symlink
    // through `..data`; resolving it would pin a directory the kubelet deletes on update.
    let config_path = std::path::absolute(config_path).map_err(|e| vec![format!("{}: {e}", config_path.display())])?;
    // With `[admin] store = "registry"` the rules and tenant settings come from the store.
    let (snap, admin_store) = crate::state::remote::load_start(&config_path)?;
    let cfg = snap.config.clone();
    logging::init(&cfg.log.level, cfg.log.format);
    // The IdP's own registration path must be the one the gateway guards.
    let crate::state::idp_probe::Findings { probe, off_gateway, suggested_profile } =
        crate::state::idp_probe::probe_full(&cfg);
    if let Some(name) = suggested_profile {
        tracing::info!("{}", crate::state::idp_probe::profile_suggestion(name));
    }
    match probe {
        crate::state::idp_probe::Probe::Agrees => {}
        crate::state::idp_probe::Probe::Disagrees { advertised } => {
            return Err(vec![registration_path_error(&cfg, &advertised)]);
        }
        crate::state::idp_probe::Probe::Skipped(why) => {
            tracing::info!("registration path not compared with the IdP's discovery document: {why}");
        }
    }

    let metrics = Arc::new(Metrics::new());
    if let Some(origin) = &off_gateway {
        tracing::warn!("{}", crate::state::idp_probe::off_gateway_warning(origin));
    }
    metrics.idp_discovery_off_gateway.set(i64::from(off_gateway.is_some()));
    metrics.set_active(&snap.config_sha256, &snap.rules_sha256, snap.acl.rule_count());
    metrics.last_reload_success.set(1);
    tracing::info!(
        config = %config_path.display(),
        rules = snap.acl.rule_count(),
        entries = snap.acl.entry_count(),
        profile = %snap.config.idp.profile,
        profile_detected = snap.config.idp.profile_auto,
        "configuration loaded"
    );
    for w in snap.acl.warnings() {
        tracing::warn!("{}: {w}", cfg.rules_file.as_deref().unwrap_or(&config_path).display());
    }
    let store = Arc::new(ArcSwap::from_pointee(snap));

    let (lb, peers) = upstream::build(&cfg.upstream)?;
    // Pingora's load balancer starts with an empty backend set until its background service
    // first runs, and the listeners may open before that: the first requests of a start (and
    // of a graceful upgrade's new process) got 502 "no healthy upstream". Fill it, and run
    // the first health check, before any listener exists.
    upstream::prime(&lb);
    let audit = Arc::new(match &cfg.audit_output {
        AuditOutput::Stdout => AuditLog::stdout(),
        AuditOutput::File(p) => AuditLog::file(p).map_err(|e| vec![format!("audit.output: {}: {e}", p.display())])?,
    });
    let mut tls_settings = Vec::new();
    let mut cert_slots = Vec::new();
    for l in &cfg.https_listeners {
        let cb = CertAndSni::load(&l.cert, &l.key).map_err(|e| vec![format!("listen.https: {e}")])?;
        // Reloads replace the pair in this slot; handshakes read it (certificates rotate in place).
        cert_slots.push((l.address, cb.slot()));
        let mut settings =
            TlsSettings::with_callbacks(Box::new(cb)).map_err(|e| vec![format!("listen.https: {}: {e}", l.address)])?;
        if l.h2 {
            settings.enable_h2();
        }
        tls_settings.push((l.address, settings));
    }

    let s = &cfg.server;
    let conf = ServerConf {
        threads: s.threads,
        // One worker has nobody to steal from: its multi-thread runtime only adds cross-thread
        // wake-ups (+9-18 % POST throughput without it, docs/benchmarks.md).
        work_stealing: s.work_stealing && s.threads > 1,
        grace_period_seconds: Some(s.grace_period_seconds),
        graceful_shutdown_timeout_seconds: Some(s.graceful_shutdown_timeout_seconds),
        pid_file: s.pid_file.clone(),
        upgrade_sock: s.upgrade_sock.clone(),
        upstream_keepalive_pool_size: s.upstream_keepalive_pool_size,
        ..Default::default()
    };
    // A fresh start must own every address it was given; an upgrade receives them instead.
    if !opts.upgrade {
        let addrs = (cfg.http_listeners.iter().map(|a| ("listen.http", *a)))
            .chain(cfg.https_listeners.iter().map(|l| ("listen.https", l.address)))
            .chain(cfg.admin_listener.map(|a| ("listen.admin", a)));
        super::bind_check::ensure_bindable(addrs)?;
    }
    super::bind_check::exit_when_a_listener_fails();
    let opt = Opt { upgrade: opts.upgrade, daemon: false, nocapture: false, test: false, conf: None };
    let mut server = Server::new_with_opt_and_conf(opt, conf);
    server.bootstrap();
    // The sockets are in hand (for --upgrade: handed over): record this process as the one serving.
    if let Err(e) = crate::telemetry::write_pid_file(&cfg.server.pid_file) {
        return Err(vec![format!("server.pid_file: {}: {e}", cfg.server.pid_file)]);
    }

    let lb_service = background_service("upstream health checks", lb);
    let upstreams = lb_service.task();

    let drain = Arc::new(Drain::default());
    let rate_limiter = Arc::new(crate::state::ratelimiter::RateLimiter::new());
    let token_uses = Arc::new(crate::tokens::UseCounter::new());
    metrics.register_collector(Box::new(rate_limiter.sketch_collector()));
    let registry = crate::registry::start_for_gateway(&cfg, &metrics, &store, &audit)?;
    let cimd = match cfg.cimd.mode {
        crate::cimd::Mode::Off => None,
        _ => {
            let ca = match &cfg.cimd.ca_file {
                Some(p) => Some(std::fs::read(p).map_err(|e| vec![format!("cimd.ca_file: {p}: {e}")])?),
                None => None,
            };
            let resolver = Arc::new(crate::fetch::SystemResolver);
            let docs = crate::fetch::cimd::Documents::from_settings(&cfg.cimd, ca, resolver)
                .map_err(|e| vec![format!("cimd: {e}")])?;
            metrics.register_collector(Box::new(docs.fetcher().outcomes().clone()));
            Some(Arc::new(docs))
        }
    };
    let cimd_paths = Arc::new(super::cimd::endpoint_paths(&cfg));
    // `[cimd] mode = "bridge"` needs the registry (`check` refuses it without).
    let bridge = match (cfg.cimd.mode, &registry) {
        (crate::cimd::Mode::Bridge, Some(r)) => Some(Arc::new(crate::registry::bridge::Bridge::new(r.clone()))),
        _ => None,
    };
    if let Some(b) = &bridge {
        metrics.register_collector(Box::new(b.results.clone()));
    }
    // `[dcr] resolve_metadata_uris` is reloadable: the resolver always exists, over a fetcher
    // with [cimd]'s allow list (start-bound), so the metadata hosts are judged as a fetch is.
    let metadata = {
        let fetch = crate::fetch::cimd::fetch_config(&cfg.cimd, None).map_err(|e| vec![e])?;
        let fetcher = crate::fetch::Fetcher::new(fetch, Arc::new(crate::fetch::SystemResolver))
            .map_err(|e| vec![format!("fetch: {e}")])?;
        let m = crate::fetch::metadata::MetadataResolver::new(Arc::new(fetcher));
        metrics.register_collector(Box::new(m.results().clone()));
        Arc::new(m)
    };
    let gateway = Gateway {
        metadata,
        cimd,
        cimd_paths,
        bridge,
        registry: registry.clone(),
        drain: drain.clone(),
        rate_limiter,
        token_uses: token_uses.clone(),
        pins: Arc::new(crate::tokens::ClientPins::new()),
        registration_turn: Arc::new(tokio::sync::Mutex::new(())),
        store: store.clone(),
        upstreams: upstreams.clone(),
        peers: Arc::new(peers),
        metrics: metrics.clone(),
        audit: audit.clone(),
        tls_listeners: cfg.https_listeners.iter().map(|l| l.address).collect(),
    };
    let mut http_proxy = pingora::proxy::http_proxy(&server.configuration, gateway);
    // HTTP/2 rapid reset (CVE-2023-44487): bound the streams a client resets before they are
    // accepted, locally errored streams and concurrent streams per connection. Streams reset
    // *after* acceptance are not counted by h2: `h2.rs` caps those per connection.
    let mut h2 = pingora::protocols::http::v2::server::default_h2_options();
    h2.max_pending_accept_reset_streams(H2_MAX_PENDING_ACCEPT_RESETS)
        .max_local_error_reset_streams(Some(H2_MAX_LOCAL_ERROR_RESETS))
        .max_concurrent_streams(H2_MAX_CONCURRENT_STREAMS);
    http_proxy.h2_options = Some(h2);
    let limits = listener::Limits {
        header_timeout: std::time::Duration::from_millis(s.header_timeout_ms),
        idle_timeout: std::time::Duration::from_secs(s.keepalive_timeout_seconds),
        max_head_bytes: MAX_HEAD_BYTES,
        max_connections: s.max_connections,
    };
    let mut proxy =
        Service::new("dcr-gateway".to_string(), listener::GatewayApp::new(http_proxy, limits, metrics.clone()));
    for a in &cfg.http_listeners {
        proxy.add_tcp(&a.to_string());
    }
    for (addr, settings) in tls_settings {
        proxy.add_tls_with_settings(&addr.to_string(), None, settings);
    }
    server.add_service(proxy);
    server.add_service(lb_service);

    let reloader = Arc::new(Reloader::new(config_path.clone(), store.clone(), metrics.clone()));
    reloader.set_token_uses(token_uses);
    reloader.set_tls_slots(cert_slots);
    if let Some(remote) = admin_store {
        remote.register(&metrics);
        reloader.set_remote(remote.clone());
        remote.watch(reloader.clone());
        tracing::info!(
            backend = remote.store().backend_name(),
            "network ACLs and tenant settings kept in the registry store"
        );
    }
    if let Some(admin_addr) = cfg.admin_listener {
        let api = Arc::new(crate::admin::AdminApi::new(reloader.clone(), audit.clone()));
        if let Some(r) = &registry {
            let _ = api.registry.set(r.clone());
        }
        let mut admin = Service::new(
            "admin".to_string(),
            AdminApp { store: store.clone(), metrics: metrics.clone(), upstreams: upstreams.clone(), api },
        );
        admin.add_tcp(&admin_addr.to_string());
        server.add_service(admin);
    }

    metrics.register_collector(Box::new(crate::state::acl_summary::UnknownManagedListsGauge::new(store.clone())));
    server.add_service(background_service(
        "acls_summary",
        crate::state::acl_summary::AclSummaryService { store: store.clone(), metrics: metrics.clone() },
    ));
    server.add_service(background_service(
        "reload",
        ReloadService { reloader, watch: cfg.watch, debounce: cfg.reload_debounce },
    ));

    tracing::info!(
        http = ?cfg.http_listeners,
        https = ?cfg.https_listeners.iter().map(|l| l.address).collect::<Vec<_>>(),
        admin = ?cfg.admin_listener,
        upstream = ?cfg.upstream.origins.iter().map(|o| o.authority()).collect::<Vec<_>>(),
        "dcr-gateway starting"
    );
    server.run(pingora::server::RunArgs {
        shutdown_signal: Box::new(DrainingSignalWatch {
            drain,
            timeout: std::time::Duration::from_secs(s.drain_timeout_seconds),
        }),
    });
    if let Some(r) = &registry {
        // What is queued is written before the process exits.
        r.shutdown();
    }
    tracing::info!("dcr-gateway stopped");
    std::process::exit(0)
}
