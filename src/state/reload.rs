//! Hot reload: SIGHUP and file changes rebuild the whole snapshot off the request path, then
//! swap it in atomically — or keep the last good one and log exactly what is wrong.
//!
//! Files are watched through their directories, not their inodes, so an editor's
//! write-to-temp-and-rename and a Kubernetes ConfigMap `..data` symlink swap are both seen.
//! After a change the watcher waits until every watched file is stable (size and mtime
//! unchanged across one debounce) before reading.
//!
//! A reload is judged against the last good snapshot ([`guard`]): a file that is missing,
//! empty, a prefix of what loaded, or lost whole sections after it once loaded keeps the old
//! snapshot. A SIGHUP while `<config>.force-reload` exists forces the reload (the marker is
//! removed once it succeeded); admin API writes are exempt for the file they wrote.
//!
//! A reload applies everything read per request from the snapshot, and the certificates and
//! keys of the HTTPS listeners (validated first; a pair that does not load fails the reload
//! and the old one keeps serving). Keys bound at start ([`restart`]) are compared with the
//! configuration the process runs: each differing key is named in a warning and
//! `dcr_gateway_restart_required` is 1 until the file matches the running process again.
//!
//! A watched file that is a symlink (outside the ConfigMap `..data` layout) is also watched
//! in its target's directory, so editing the target triggers a reload.

pub mod guard;
pub mod restart;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime};

pub use guard::Judge;

use async_trait::async_trait;
use notify::{EventKind, RecommendedWatcher, RecursiveMode, Watcher};
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;

use crate::config::Config;
use crate::snapshot::{BuildErrors, Snapshot, Store};
use crate::state::certs::{CertPair, CertSlot};
use crate::state::idp_probe;
use crate::telemetry::Metrics;
use crate::tokens::UseCounter;

pub struct Reloader {
    pub config_path: PathBuf,
    pub store: Arc<Store>,
    pub metrics: Arc<Metrics>,
    /// Serializes reloads: two triggers at once build twice but swap in order.
    lock: Mutex<()>,
    /// Initial access token uses, trimmed to the loaded tokens after every reload.
    token_uses: OnceLock<Arc<UseCounter>>,
    /// The configuration the process started with: start-bound keys are compared with it.
    running: Arc<Config>,
    /// The certificate each running HTTPS listener serves, by listener address.
    tls: OnceLock<Vec<(SocketAddr, Arc<CertSlot>)>>,
    /// `[admin] store = "registry"`: the rules and tenant settings are read from the store.
    remote: OnceLock<Arc<crate::state::remote::AdminStore>>,
}

impl Reloader {
    /// `store` holds the snapshot the process started with (its configuration is the running one).
    pub fn new(config_path: PathBuf, store: Arc<Store>, metrics: Arc<Metrics>) -> Reloader {
        let running = store.load().config.clone();
        Reloader {
            running,
            tls: OnceLock::new(),
            config_path,
            store,
            metrics,
            lock: Mutex::new(()),
            token_uses: OnceLock::new(),
            remote: OnceLock::new(),
        }
    }

    /// Build every later snapshot from the registry store's documents (`[admin] store =
    /// "registry"`), as the first one was (`state::remote::load_start`).
    pub fn set_remote(&self, remote: Arc<crate::state::remote::AdminStore>) {
        let _ = self.remote.set(remote);
    }

    /// The admin documents' store, in `[admin] store = "registry"` mode.
    pub fn remote(&self) -> Option<&Arc<crate::state::remote::AdminStore>> {
        self.remote.get()
    }

    /// The `max_uses` counter to trim ([`UseCounter::retain`]) after every successful reload.
    pub fn set_token_uses(&self, counter: Arc<UseCounter>) {
        let _ = self.token_uses.set(counter);
    }

    /// The certificate slots of the HTTPS listeners (`proxy::tls::CertAndSni::slot`),
    /// reloaded in place by every successful reload.
    pub fn set_tls_slots(&self, slots: Vec<(SocketAddr, Arc<CertSlot>)>) {
        let _ = self.tls.set(slots);
    }

    /// Build a new snapshot and swap it in, judged against the current one. On error the
    /// current snapshot stays.
    pub fn reload(&self, why: &str) -> Result<(), BuildErrors> {
        self.reload_with(why, &Judge::Guarded)
    }

    /// [`Reloader::reload`] after an admin API write of `written`: that file is not judged
    /// against its previous contents (the API validated it and the operator asked for it).
    pub fn reload_written(&self, why: &str, written: &Path) -> Result<(), BuildErrors> {
        self.reload_with(why, &Judge::Exempt(written.to_path_buf()))
    }

    /// The start-bound part of a new snapshot: the keys that need a restart (checked as `check`
    /// would check them) and the validated certificate pair of every HTTPS listener. Any
    /// problem fails the reload.
    #[allow(clippy::type_complexity)]
    fn start_bound(&self, new: Snapshot) -> Result<(Snapshot, Vec<String>, Vec<(SocketAddr, CertPair)>), BuildErrors> {
        let restart = restart::start_bound_changes(&self.running, &new.config);
        let mut problems = restart::check_start_bound(&new.config, &restart);
        let mut pairs = Vec::new();
        for (i, l) in new.config.https_listeners.iter().enumerate() {
            match CertPair::load(&l.cert, &l.key) {
                Ok(p) => pairs.push((l.address, p)),
                Err(e) => problems.push(format!("{}: listen.https[{i}]: {e}", new.config.path.display())),
            }
        }
        if problems.is_empty() {
            Ok((new, restart, pairs))
        } else {
            Err(BuildErrors(problems))
        }
    }

    /// A reload that changes where or how the IdP is reached, or the routes, asks the IdP again
    /// where it serves registration (as at start): a disagreement fails the reload, and where
    /// its own discovery document sends clients sets `dcr_gateway_idp_discovery_off_gateway`.
    /// Other reloads (rules, settings, tokens) make no request.
    fn probe_idp(&self, new: &Snapshot) -> Result<(), BuildErrors> {
        let old = self.store.load();
        let (o, n) = (&old.config, &new.config);
        if o.upstream.origins == n.upstream.origins
            && o.upstream.sni == n.upstream.sni
            && o.upstream.ca_file == n.upstream.ca_file
            && o.upstream.verify_cert == n.upstream.verify_cert
            && o.idp.host_header == n.idp.host_header
            && o.routes == n.routes
        {
            return Ok(());
        }
        let idp_probe::Findings { probe, off_gateway, .. } = idp_probe::probe_full(n);
        if let idp_probe::Probe::Disagrees { advertised } = probe {
            return Err(BuildErrors(vec![idp_probe::registration_path_error(n, &advertised)]));
        }
        if let Some(origin) = &off_gateway {
            tracing::warn!("{}", idp_probe::off_gateway_warning(origin));
        }
        self.metrics.idp_discovery_off_gateway.set(i64::from(off_gateway.is_some()));
        Ok(())
    }

    /// Serve the new pairs on the running listeners with the same address.
    fn apply_certificates(&self, pairs: Vec<(SocketAddr, CertPair)>) {
        let Some(slots) = self.tls.get() else {
            return;
        };
        for (address, pair) in pairs {
            let Some((_, slot)) = slots.iter().find(|(a, _)| *a == address) else {
                continue;
            };
            let old = slot.load();
            if old.fingerprint != pair.fingerprint {
                tracing::info!(
                    listener = %address,
                    old_sha256 = %old.fingerprint,
                    new_sha256 = %pair.fingerprint,
                    "TLS certificate reloaded"
                );
            }
            slot.store(Arc::new(pair));
        }
    }

    pub fn reload_with(&self, why: &str, mode: &Judge) -> Result<(), BuildErrors> {
        let _guard = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        let docs = self.remote.get().map(|r| r.docs_for_reload(&self.store.load()));
        let loaded = Snapshot::load_with(&self.config_path, docs.as_ref()).and_then(|new| {
            let refused = guard::judge(&self.store.load().sources, &new.sources, mode);
            if refused.is_empty() {
                self.probe_idp(&new)?;
                self.start_bound(new)
            } else {
                let force = guard::force_marker(&self.config_path);
                Err(BuildErrors(
                    refused
                        .into_iter()
                        .map(|r| format!("{r} (to load it anyway: touch {} and send SIGHUP)", force.display()))
                        .collect(),
                ))
            }
        });
        match loaded {
            Ok((new, restart, pairs)) => {
                let old = self.store.load();
                self.apply_certificates(pairs);
                if restart.is_empty() {
                    self.metrics.restart_required.set(0);
                } else {
                    tracing::warn!(
                        keys = %restart.join(", "),
                        "the configuration file changes keys that take effect only after a restart or graceful upgrade: {}",
                        restart.join(", ")
                    );
                    self.metrics.restart_required.set(1);
                }
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
                if let Some(uses) = self.token_uses.get() {
                    uses.retain(&new.registration_tokens);
                }
                self.store.store(Arc::new(new));
                if let (Some(r), Some(d)) = (self.remote.get(), &docs) {
                    r.applied(d);
                }
                self.metrics.reloads.with_label_values(&["success"]).inc();
                self.metrics.last_reload_success.set(1);
                Ok(())
            }
            Err(e) => {
                for line in &e.0 {
                    tracing::error!(
                        trigger = why,
                        "reload rejected, keeping the last good configuration: {}",
                        crate::redact::redact(line)
                    );
                }
                self.metrics.reloads.with_label_values(&["failure"]).inc();
                self.metrics.last_reload_success.set(0);
                Err(e)
            }
        }
    }
}

/// Most debounce periods to wait for files to settle before reading them anyway (the
/// judgement against the last good snapshot still applies).
const STABLE_ROUNDS: usize = 20;

/// Size and mtime of each file (following symlinks); `None` for a file that cannot be read.
fn file_states(files: &[PathBuf]) -> Vec<Option<(u64, SystemTime)>> {
    files
        .iter()
        .map(|f| std::fs::metadata(f).ok().map(|m| (m.len(), m.modified().unwrap_or(SystemTime::UNIX_EPOCH))))
        .collect()
}

/// The files whose change triggers a reload: the snapshot's, and the certificate and key of
/// every HTTPS listener (reloaded in place).
fn watched_files(snap: &Snapshot) -> Vec<PathBuf> {
    let mut files = snap.watched_files.clone();
    for l in &snap.config.https_listeners {
        files.push(l.cert.clone());
        files.push(l.key.clone());
    }
    files
}

/// Most symlink hops followed when adding a link's targets to the watch set.
const MAX_LINK_HOPS: usize = 8;

/// A link target inside the Kubernetes ConfigMap layout (`..data/`, `..2024_…/`): the swap of
/// `..data` in the watched directory is the event, and the timestamped directory is deleted
/// on the next update, so it is not watched.
fn in_configmap_layout(target: &Path) -> bool {
    target.components().any(|c| match c {
        std::path::Component::Normal(n) => n.to_string_lossy().starts_with(".."),
        _ => false,
    })
}

/// Directories to watch and the file names in them that matter. A file that is a symlink
/// (outside the ConfigMap layout) adds the directory and name of each link target it goes
/// through: editing the target in place changes no directory entry next to the link.
fn watch_set(files: &[PathBuf]) -> (BTreeSet<PathBuf>, BTreeSet<String>) {
    let mut dirs = BTreeSet::new();
    let mut names = BTreeSet::new();
    let mut add = |f: &Path| {
        let dir = f.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        dirs.insert(dir.to_path_buf());
        if let Some(n) = f.file_name() {
            names.insert(n.to_string_lossy().into_owned());
        }
    };
    for f in files {
        add(f);
        let mut link = f.clone();
        for _ in 0..MAX_LINK_HOPS {
            let is_link = std::fs::symlink_metadata(&link).is_ok_and(|m| m.file_type().is_symlink());
            let Some(target) = is_link.then(|| std::fs::read_link(&link).ok()).flatten() else {
                break;
            };
            if in_configmap_layout(&target) {
                break;
            }
            let target = match link.parent() {
                Some(dir) if target.is_relative() => dir.join(target),
                _ => target,
            };
            add(&target);
            link = target;
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
        p.file_name()
            .map(|n| n.to_string_lossy())
            .is_some_and(|n| names.contains(n.as_ref()) || n.starts_with("..data"))
    })
}

pub struct ReloadService {
    pub reloader: Arc<Reloader>,
    pub watch: bool,
    pub debounce: Duration,
}

impl ReloadService {
    fn start_watcher(&self, tx: tokio::sync::mpsc::UnboundedSender<()>) -> Option<RecommendedWatcher> {
        let files = watched_files(&self.reloader.store.load());
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
                    // Editors and ConfigMap swaps produce bursts of events, and a file written
                    // in place is seen while it is being written: wait until every watched
                    // file keeps its size and mtime across one debounce.
                    let files = watched_files(&self.reloader.store.load());
                    let mut before = tokio::task::spawn_blocking({
                        let f = files.clone();
                        move || file_states(&f)
                    })
                    .await
                    .unwrap_or_default();
                    for _ in 0..STABLE_ROUNDS {
                        tokio::time::sleep(self.debounce).await;
                        while rx.try_recv().is_ok() {}
                        let f = files.clone();
                        let now = tokio::task::spawn_blocking(move || file_states(&f)).await.unwrap_or_default();
                        if now == before {
                            break;
                        }
                        before = now;
                    }
                    "file change"
                }
            };
            let reloader = self.reloader.clone();
            // The watched files as they were before this reload read them: a change made while
            // the watcher is replaced below (no watcher between the drop and the new one) is
            // caught by comparing them again once the new watcher runs.
            let read_files = watched_files(&reloader.store.load());
            let read_states = {
                let f = read_files.clone();
                tokio::task::spawn_blocking(move || file_states(&f)).await.unwrap_or_default()
            };
            let why = trigger.to_string();
            let marker = guard::force_marker(&reloader.config_path);
            let forced = trigger == "SIGHUP" && marker.exists();
            let result = tokio::task::spawn_blocking(move || {
                if !forced {
                    return reloader.reload(&why);
                }
                tracing::warn!(marker = %marker.display(), "forced reload: the files are not judged against the last good ones");
                let r = reloader.reload_with("SIGHUP (forced)", &Judge::Forced);
                if r.is_ok() {
                    if let Err(e) = std::fs::remove_file(&marker) {
                        tracing::error!(marker = %marker.display(), "cannot remove the force-reload marker: {e}");
                    }
                }
                r
            })
            .await;
            if matches!(result, Ok(Ok(()))) && self.watch {
                // The set of referenced files may have changed.
                drop(watcher.take());
                watcher = self.start_watcher(tx.clone());
                let f = read_files.clone();
                let now = tokio::task::spawn_blocking(move || file_states(&f)).await.unwrap_or_default();
                if now != read_states {
                    let _ = tx.send(());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens_file(labels: &[(&str, &str)]) -> String {
        labels
            .iter()
            .map(|(l, t)| format!("[[token]]\nlabel = \"{l}\"\nsha256 = \"{}\"\n", crate::tokens::hash_token(t)))
            .collect()
    }

    fn reloader(dir: &Path, config: &str) -> Reloader {
        let path = dir.join("gateway.toml");
        std::fs::write(&path, config).unwrap();
        let snap = Snapshot::load(&path).unwrap();
        Reloader::new(path, Arc::new(Store::from_pointee(snap)), Arc::new(Metrics::new()))
    }

    #[test]
    fn reloads_are_judged_against_the_last_good_snapshot() {
        let dir = tempfile::tempdir().unwrap();
        let config = format!(
            "[admin]\nsettings_file = \"{}\"\n[dcr]\nregistration = \"token\"\ntoken_file = \"tokens.toml\"\n[rate_limit]\nglobal = {{ requests = 5, window_seconds = 60 }}\n",
            dir.path().join("settings.json").display()
        );
        std::fs::write(dir.path().join("tokens.toml"), tokens_file(&[("a", "dcrgw_iat_a"), ("b", "dcrgw_iat_b")]))
            .unwrap();
        let r = reloader(dir.path(), &config);
        let path = r.config_path.clone();
        let open_mode = |r: &Reloader| r.store.load().config.dcr.registration != crate::dcr::RegistrationMode::Token;
        // Emptied, truncated mid-write, deleted: each is valid TOML or a plain read error, and
        // the first two would load with open defaults. All keep the token-mode snapshot.
        for bad in [Some(""), Some(&config[..config.find("[dcr]").unwrap() + 6]), None] {
            match bad {
                Some(text) => std::fs::write(&path, text).unwrap(),
                None => std::fs::remove_file(&path).unwrap(),
            }
            let e = r.reload("test").unwrap_err();
            assert!(!open_mode(&r), "{e}");
            assert_eq!(r.metrics.last_reload_success.get(), 0);
        }
        // The settings file appears and vanishes again: missing after it loaded is refused.
        std::fs::write(&path, &config).unwrap();
        std::fs::write(
            dir.path().join("settings.json"),
            "{\"flags\": {\"enable_dynamic_client_registration\": false}}",
        )
        .unwrap();
        r.reload("test").unwrap();
        std::fs::remove_file(dir.path().join("settings.json")).unwrap();
        assert!(r.reload("test").unwrap_err().0[0].contains("missing"));
        assert!(!r.store.load().config.dcr.enabled, "the last good settings still apply");
        // The operator means it: forced.
        r.reload_with("test", &Judge::Forced).unwrap();
        assert!(r.store.load().config.dcr.enabled);
        // A token file emptied of tokens is refused; one token fewer is an edit.
        std::fs::write(dir.path().join("tokens.toml"), "# none\n").unwrap();
        assert!(r.reload("test").unwrap_err().0[0].contains("[[token]]"));
        assert_eq!(r.store.load().registration_tokens.len(), 2);
        std::fs::write(dir.path().join("tokens.toml"), tokens_file(&[("b", "dcrgw_iat_b")])).unwrap();
        r.reload("test").unwrap();
        assert_eq!(r.metrics.last_reload_success.get(), 1);
    }

    #[test]
    fn token_uses_are_trimmed_after_every_reload() {
        let dir = tempfile::tempdir().unwrap();
        let config = format!(
            "[admin]\nsettings_file = \"{}\"\n[dcr]\nregistration = \"token\"\ntoken_file = \"tokens.toml\"\n",
            dir.path().join("settings.json").display()
        );
        std::fs::write(dir.path().join("tokens.toml"), tokens_file(&[("a", "dcrgw_iat_a"), ("b", "dcrgw_iat_b")]))
            .unwrap();
        let r = reloader(dir.path(), &config);
        let uses = Arc::new(UseCounter::new());
        r.set_token_uses(uses.clone());
        let snap = r.store.load_full();
        for t in ["dcrgw_iat_a", "dcrgw_iat_b"] {
            let e = snap.registration_tokens.verify(t, SystemTime::now()).unwrap();
            uses.lease(e).unwrap().commit();
        }
        assert_eq!(uses.len(), 2);
        std::fs::write(dir.path().join("tokens.toml"), tokens_file(&[("b", "dcrgw_iat_b")])).unwrap();
        r.reload("test").unwrap();
        assert_eq!(uses.len(), 1, "the removed token's count is gone");
    }

    #[test]
    fn watch_set_uses_directories() {
        let (dirs, names) = watch_set(&[
            PathBuf::from("/etc/gw/gateway.toml"),
            PathBuf::from("/etc/gw/rules.json"),
            PathBuf::from("/var/geo/c.mmdb"),
        ]);
        assert_eq!(dirs.len(), 2);
        assert!(names.contains("rules.json") && names.contains("c.mmdb"));
    }

    #[test]
    fn symlinked_files_add_their_targets_directory() {
        let dir = tempfile::tempdir().unwrap();
        let conf = dir.path().join("conf");
        let real = dir.path().join("real");
        std::fs::create_dir_all(&conf).unwrap();
        std::fs::create_dir_all(&real).unwrap();
        std::fs::write(real.join("rules-v2.json"), "[]").unwrap();
        // rules.json -> ../real/rules-v2.json (relative): the target's directory is watched.
        std::os::unix::fs::symlink("../real/rules-v2.json", conf.join("rules.json")).unwrap();
        let (dirs, names) = watch_set(&[conf.join("rules.json")]);
        assert!(dirs.contains(&conf) && dirs.contains(&conf.join("../real")), "{dirs:?}");
        assert!(names.contains("rules.json") && names.contains("rules-v2.json"), "{names:?}");
        // The ConfigMap layout: rules.json -> ..data/rules.json is covered by the ..data swap.
        let cm = dir.path().join("cm");
        std::fs::create_dir_all(cm.join("..2024_01_01")).unwrap();
        std::os::unix::fs::symlink("..2024_01_01", cm.join("..data")).unwrap();
        std::os::unix::fs::symlink("..data/rules.json", cm.join("rules.json")).unwrap();
        let (dirs, _) = watch_set(&[cm.join("rules.json")]);
        assert_eq!(dirs.len(), 1, "{dirs:?}");
    }

    #[test]
    fn configmap_swaps_and_renames_are_relevant() {
        let names: BTreeSet<String> = ["rules.json".to_string()].into();
        let ev = |kind, p: &str| notify::Event { kind, paths: vec![PathBuf::from(p)], attrs: Default::default() };
        assert!(relevant(&ev(EventKind::Create(notify::event::CreateKind::Any), "/c/..data"), &names));
        assert!(relevant(
            &ev(EventKind::Modify(notify::event::ModifyKind::Name(notify::event::RenameMode::To)), "/c/rules.json"),
            &names
        ));
        assert!(!relevant(&ev(EventKind::Modify(notify::event::ModifyKind::Any), "/c/other.txt"), &names));
        assert!(!relevant(&ev(EventKind::Access(notify::event::AccessKind::Any), "/c/rules.json"), &names));
    }
}
