//! Hot reload: SIGHUP and file changes rebuild the whole snapshot off the request path, then
//! swap it in atomically — or keep the last good one and log exactly what is wrong.
//!
//! Files are watched through their directories, not their inodes, so an editor's
//! write-to-temp-and-rename and a Kubernetes ConfigMap `..data` symlink swap are both seen.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use notify::{EventKind, RecommendedWatcher, RecursiveMode, Watcher};
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;

use crate::snapshot::{BuildErrors, Snapshot, Store};
use crate::telemetry::Metrics;

pub struct Reloader {
    pub config_path: PathBuf,
    pub store: Arc<Store>,
    pub metrics: Arc<Metrics>,
    /// Serializes reloads: two triggers at once build twice but swap in order.
    lock: Mutex<()>,
}

impl Reloader {
    pub fn new(config_path: PathBuf, store: Arc<Store>, metrics: Arc<Metrics>) -> Reloader {
        Reloader { config_path, store, metrics, lock: Mutex::new(()) }
    }

    /// Build a new snapshot and swap it in. On error the current snapshot stays.
    pub fn reload(&self, why: &str) -> Result<(), BuildErrors> {
        let _guard = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        match Snapshot::load(&self.config_path) {
            Ok(new) => {
                let old = self.store.load();
                warn_static_changes(&old, &new);
                let changed = old.config_sha256 != new.config_sha256 || old.rules_sha256 != new.rules_sha256;
                self.metrics.set_active(&new.config_sha256, &new.rules_sha256, new.acl.rule_count());
                tracing::info!(
                    trigger = why,
                    rules = new.acl.rule_count(),
                    entries = new.acl.entry_count(),
                    rules_sha256 = %new.rules_sha256,
                    config_sha256 = %new.config_sha256,
                    changed,
                    "reloaded"
                );
                self.store.store(Arc::new(new));
                self.metrics.reloads.with_label_values(&["success"]).inc();
                self.metrics.last_reload_success.set(1);
                Ok(())
            }
            Err(e) => {
                for line in &e.0 {
                    tracing::error!(trigger = why, "reload rejected, keeping the last good configuration: {line}");
                }
                self.metrics.reloads.with_label_values(&["failure"]).inc();
                self.metrics.last_reload_success.set(0);
                Err(e)
            }
        }
    }
}

/// Listeners, upstreams and server settings are bound at start; say so instead of
/// pretending they changed.
fn warn_static_changes(old: &Snapshot, new: &Snapshot) {
    let (o, n) = (&old.config, &new.config);
    let mut keys = Vec::new();
    if o.http_listeners != n.http_listeners
        || o.admin_listener != n.admin_listener
        || o.https_listeners.iter().map(|l| l.address).ne(n.https_listeners.iter().map(|l| l.address))
    {
        keys.push("listen");
    }
    if o.upstream.origins != n.upstream.origins {
        keys.push("upstream.origins");
    }
    if o.server.threads != n.server.threads {
        keys.push("server.threads");
    }
    if !keys.is_empty() {
        tracing::warn!("changes to {} take effect only after a restart or graceful upgrade", keys.join(", "));
    }
}

/// Directories to watch and the file names in them that matter.
fn watch_set(files: &[PathBuf]) -> (BTreeSet<PathBuf>, BTreeSet<String>) {
    let mut dirs = BTreeSet::new();
    let mut names = BTreeSet::new();
    for f in files {
        let dir = f.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        dirs.insert(dir.to_path_buf());
        if let Some(n) = f.file_name() {
            names.insert(n.to_string_lossy().into_owned());
        }
    }
    (dirs, names)
}

fn relevant(event: &notify::Event, names: &BTreeSet<String>) -> bool {
    if !matches!(event.kind, EventKind::Create(_) | EventKind::Modify(_) | EventKind::Remove(_) | EventKind::Any) {
        return false;
    }
    if matches!(event.kind, EventKind::Modify(notify::event::ModifyKind::Metadata(_))) {
        return false;
    }
    event.paths.iter().any(|p| {
        p.file_name().map(|n| n.to_string_lossy()).is_some_and(|n| names.contains(n.as_ref()) || n.starts_with("..data"))
    })
}

pub struct ReloadService {
    pub reloader: Arc<Reloader>,
    pub watch: bool,
    pub debounce: Duration,
}

impl ReloadService {
    fn start_watcher(
        &self,
        tx: tokio::sync::mpsc::UnboundedSender<()>,
    ) -> Option<RecommendedWatcher> {
        let files = self.reloader.store.load().watched_files.clone();
        let (dirs, names) = watch_set(&files);
        let handler = move |res: notify::Result<notify::Event>| {
            if let Ok(ev) = res {
                if relevant(&ev, &names) {
                    let _ = tx.send(());
                }
            }
        };
        let mut watcher = match notify::recommended_watcher(handler) {
            Ok(w) => w,
            Err(e) => {
                tracing::error!("file watching unavailable ({e}); reload with SIGHUP");
                return None;
            }
        };
        for d in &dirs {
            if let Err(e) = watcher.watch(d, RecursiveMode::NonRecursive) {
                tracing::error!("cannot watch {}: {e}; reload with SIGHUP", d.display());
            }
        }
        Some(watcher)
    }
}

#[async_trait]
impl BackgroundService for ReloadService {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut hup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::error!("cannot install the SIGHUP handler: {e}");
                None
            }
        };
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<()>();
        let mut watcher = if self.watch { self.start_watcher(tx.clone()) } else { None };
        loop {
            let trigger = tokio::select! {
                _ = shutdown.changed() => return,
                Some(_) = async { match hup.as_mut() { Some(h) => h.recv().await, None => std::future::pending().await } } => "SIGHUP",
                Some(_) = rx.recv() => {
                    // Editors and ConfigMap swaps produce bursts of events: settle first.
                    tokio::time::sleep(self.debounce).await;
                    while rx.try_recv().is_ok() {}
                    "file change"
                }
            };
            let reloader = self.reloader.clone();
            let why = trigger.to_string();
            let result = tokio::task::spawn_blocking(move || reloader.reload(&why)).await;
            if matches!(result, Ok(Ok(()))) && self.watch {
                // The set of referenced files may have changed.
                drop(watcher.take());
                watcher = self.start_watcher(tx.clone());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watch_set_uses_directories() {
        let (dirs, names) = watch_set(&[PathBuf::from("/etc/gw/gateway.toml"), PathBuf::from("/etc/gw/rules.json"), PathBuf::from("/var/geo/c.mmdb")]);
        assert_eq!(dirs.len(), 2);
        assert!(names.contains("rules.json") && names.contains("c.mmdb"));
    }

    #[test]
    fn configmap_swaps_and_renames_are_relevant() {
        let names: BTreeSet<String> = ["rules.json".to_string()].into();
        let ev = |kind, p: &str| notify::Event { kind, paths: vec![PathBuf::from(p)], attrs: Default::default() };
        assert!(relevant(&ev(EventKind::Create(notify::event::CreateKind::Any), "/c/..data"), &names));
        assert!(relevant(&ev(EventKind::Modify(notify::event::ModifyKind::Name(notify::event::RenameMode::To)), "/c/rules.json"), &names));
        assert!(!relevant(&ev(EventKind::Modify(notify::event::ModifyKind::Any), "/c/other.txt"), &names));
        assert!(!relevant(&ev(EventKind::Access(notify::event::AccessKind::Any), "/c/rules.json"), &names));
    }
}
