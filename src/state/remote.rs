//! `[admin] store = "registry"`: the network ACL rules and the tenant settings live in the
//! registry store (`crate::registry::admin_store`) instead of files, shared by every replica
//! on PostgreSQL. The store is the source: the rules file and settings file the configuration
//! names are neither read nor watched (`dcr-gateway registry import` moves them into the
//! store, `export` back out).
//!
//! The documents go through the same snapshot and reload machinery as files: a reload reads
//! them ([`AdminStore::docs_for_reload`]) and `Snapshot::load_with` builds from them, judged
//! against the last good snapshot by the same guard (a stored rule set that does not compile,
//! or vanished, keeps the running one and is reported as a failed reload).
//!
//! Replicas learn of a change in two ways ([`AdminStore::watch`], one thread): a PostgreSQL
//! notification on a dedicated listening connection (milliseconds), and a periodic comparison
//! of the store's versions with the last ones read (`[admin] store_check_interval_ms`; the
//! fallback when the listening connection is down, SQLite's only path). A version is read once:
//! a bad stored document is reported once, not at every check.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus::{IntGauge, IntGaugeVec, Opts};

use crate::config::schema::AdminStoreKind;
use crate::registry::admin_store::{self, AdminDoc, AdminDocs, Versions};
use crate::registry::Store;
use crate::snapshot::{Snapshot, SourceKind};
use crate::state::reload::Reloader;

/// The name a stored document has where a file would name its path: snapshot sources,
/// reload errors, audit lines (`registry:network-acls`, `registry:tenant-settings`).
pub fn source_path(name: &str) -> PathBuf {
    PathBuf::from(format!("registry:{name}"))
}

/// The admin documents' store, as one replica uses it.
pub struct AdminStore {
    store: Store,
    /// The PostgreSQL URL and CA file, for the listening connection (`None` on SQLite).
    url: Option<(String, Option<String>)>,
    /// The versions the last reload read, applied or refused.
    seen: Mutex<Versions>,
    /// `dcr_gateway_admin_store_version{document}`: the versions the running snapshot holds.
    pub version: IntGaugeVec,
    /// `dcr_gateway_admin_store_listening`: 1 while the notification connection listens.
    pub listening: IntGauge,
}

impl AdminStore {
    /// Open (and migrate) the `[registry]` store for the admin documents.
    pub fn open(cfg: &crate::config::Config) -> Result<Arc<AdminStore>, String> {
        let (store, _, _) = crate::registry::open_store(&cfg.registry).map_err(|e| format!("admin.store: {e}"))?;
        let url = match cfg.registry.backend {
            crate::config::schema::RegistryBackend::Postgres => {
                let url = cfg.registry.postgres_url().map_err(|e| format!("admin.store: {e}"))?;
                Some((url, cfg.registry.ca_file.clone()))
            }
            crate::config::schema::RegistryBackend::Sqlite => None,
        };
        Ok(Arc::new(AdminStore::new(store, url)))
    }

    /// Over an open store (tests). `url`: listen for notifications there (the URL, the CA file).
    pub fn new(store: Store, url: Option<(String, Option<String>)>) -> AdminStore {
        let version = IntGaugeVec::new(
            Opts::new(
                "dcr_gateway_admin_store_version",
                "Version of each admin document in the registry store that the running snapshot holds",
            ),
            &["document"],
        )
        .expect("valid metric");
        for d in [admin_store::RULES, admin_store::SETTINGS] {
            version.with_label_values(&[d]);
        }
        let listening = IntGauge::new(
            "dcr_gateway_admin_store_listening",
            "1 while this replica's PostgreSQL connection listens for admin document changes",
        )
        .expect("valid metric");
        AdminStore { store, url, seen: Mutex::new((-1, -1)), version, listening }
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Register the gauges with the gateway's metrics.
    pub fn register(&self, m: &crate::telemetry::Metrics) {
        m.register_collector(Box::new(self.version.clone()));
        m.register_collector(Box::new(self.listening.clone()));
    }

    /// The documents a reload builds from. When the store cannot be read, those of the running
    /// snapshot (a configuration change still applies; the store's next change is picked up
    /// once it answers again).
    pub fn docs_for_reload(&self, running: &Snapshot) -> AdminDocs {
        match self.store.admin_docs() {
            Ok(d) => {
                *self.seen.lock().unwrap_or_else(|p| p.into_inner()) = d.versions();
                d
            }
            Err(e) => {
                tracing::error!(
                    error = %e,
                    "cannot read the network ACLs and tenant settings from the registry store; the running ones are kept"
                );
                running_docs(running)
            }
        }
    }

    /// A reload built from `docs` now serves.
    pub fn applied(&self, docs: &AdminDocs) {
        self.version.with_label_values(&[admin_store::RULES]).set(docs.rules.version);
        self.version.with_label_values(&[admin_store::SETTINGS]).set(docs.settings.version);
    }

    /// Reload when the store's versions differ from the last ones read. `why` names the
    /// trigger in the reload's log line.
    pub fn check(&self, reloader: &Reloader, why: &str) {
        match self.store.admin_versions() {
            Ok(v) if v == *self.seen.lock().unwrap_or_else(|p| p.into_inner()) => {}
            Ok(_) => {
                // Errors are logged and counted by the reload, as for a bad file. A stored
                // document the reload refuses is reported once per version (`seen` moved on);
                // a reload that failed for another reason (gateway.toml or a file it names is
                // broken) leaves this replica on older documents, so the next check tries again.
                if let Err(e) = reloader.reload(why) {
                    if !names_a_stored_document(&e.0) {
                        *self.seen.lock().unwrap_or_else(|p| p.into_inner()) = (-1, -1);
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "registry store: cannot check the admin documents' versions"),
        }
    }

    /// Start the thread that keeps this replica on the store's documents: notifications
    /// (PostgreSQL) and the periodic check. It runs until the process exits.
    pub fn watch(self: &Arc<Self>, reloader: Arc<Reloader>) {
        let this = self.clone();
        std::thread::Builder::new()
            .name("dcr-admin-store".into())
            .spawn(move || this.run(&reloader))
            .expect("spawn the admin store watcher");
    }

    fn run(&self, reloader: &Reloader) {
        let mut listener: Option<postgres::Client> = None;
        loop {
            if listener.is_none() {
                if let Some((url, ca_file)) = &self.url {
                    match admin_store::listen(url, ca_file.as_deref().map(std::path::Path::new)) {
                        Ok(c) => {
                            listener = Some(c);
                            self.listening.set(1);
                            // A change made while nobody listened is caught by the check below.
                        }
                        Err(e) => tracing::warn!(
                            error = %e,
                            "registry store: cannot listen for admin document changes; checking periodically"
                        ),
                    }
                }
            }
            let interval = reloader.store.load().config.admin.store_check_interval;
            let why = match listener.as_mut() {
                None => {
                    std::thread::sleep(interval);
                    "registry store (periodic check)"
                }
                Some(c) => match wait(c, interval) {
                    Wait::Notified => "registry store (notification)",
                    Wait::Timeout => "registry store (periodic check)",
                    Wait::Broken(e) => {
                        tracing::warn!(error = %e, "registry store: the listening connection broke; reconnecting");
                        listener = None;
                        self.listening.set(0);
                        "registry store (periodic check)"
                    }
                },
            };
            self.check(reloader, why);
        }
    }
}

/// Whether a reload's problems name one of the stored documents (`registry:network-acls`,
/// `registry:tenant-settings`): the store's content is what failed, not the rest.
fn names_a_stored_document(problems: &[String]) -> bool {
    let names = [admin_store::RULES, admin_store::SETTINGS].map(|n| source_path(n).display().to_string());
    problems.iter().any(|p| names.iter().any(|n| p.contains(n.as_str())))
}

enum Wait {
    Notified,
    Timeout,
    Broken(postgres::Error),
}

/// Wait up to `timeout` for a notification; several at once count as one.
fn wait(c: &mut postgres::Client, timeout: Duration) -> Wait {
    use postgres::fallible_iterator::FallibleIterator;
    let mut n = c.notifications();
    let first = n.timeout_iter(timeout).next();
    match first {
        Ok(Some(_)) => {
            // Drain what else is queued: one reload covers them.
            while let Ok(Some(_)) = n.iter().next() {}
            Wait::Notified
        }
        Ok(None) => Wait::Timeout,
        Err(e) => Wait::Broken(e),
    }
}

/// The stored documents a snapshot was built from, as they were (store unreachable).
fn running_docs(snap: &Snapshot) -> AdminDocs {
    let doc = |name: &str, kind: SourceKind| {
        let path = source_path(name);
        let body = snap
            .sources
            .iter()
            .find(|s| s.kind == kind && s.path == path)
            .and_then(|s| s.bytes.as_deref())
            .map(|b| String::from_utf8_lossy(b).into_owned());
        let sha256 = crate::state::store::sha256_hex(body.as_deref().unwrap_or_default().as_bytes());
        AdminDoc { body, sha256, version: 0 }
    };
    AdminDocs {
        rules: doc(admin_store::RULES, SourceKind::Rules),
        settings: doc(admin_store::SETTINGS, SourceKind::Settings),
    }
}

/// The snapshot a gateway starts with, and the admin store when `[admin] store = "registry"`
/// (opened and read before anything serves: a store that cannot be read stops the start).
pub fn load_start(config_path: &Path) -> Result<(Snapshot, Option<Arc<AdminStore>>), Vec<String>> {
    let text = std::fs::read_to_string(config_path).map_err(|e| vec![format!("{}: {e}", config_path.display())])?;
    let kind = crate::config::parse(&text, config_path).map(|c| c.admin_store).unwrap_or(AdminStoreKind::Files);
    if kind == AdminStoreKind::Files {
        // A configuration that does not parse is reported by the load, as always.
        return Snapshot::load(config_path).map(|s| (s, None)).map_err(|e| e.0);
    }
    let cfg = crate::config::parse(&text, config_path).map_err(|e| vec![crate::redact::redact(&e.to_string())])?;
    let remote = AdminStore::open(&cfg).map_err(|e| vec![e])?;
    let docs = remote.store.admin_docs().map_err(|e| vec![format!("admin.store: {e}")])?;
    *remote.seen.lock().unwrap_or_else(|p| p.into_inner()) = docs.versions();
    let snap = Snapshot::load_with(config_path, Some(&docs)).map_err(|e| e.0)?;
    remote.applied(&docs);
    Ok((snap, Some(remote)))
}
