//! The client registry (`[registry]`, docs/registry.md): every client the IdP registered
//! through the gateway, recorded with what the gateway knew about the registration; its last
//! use; caps, de-duplication of identical public registrations, and reaping.
//!
//! - [`store`]: the one store interface and the queries, over [`sqlite`] (embedded default)
//!   or [`postgres`] (fleets).
//! - [`crypto`]: the registration_access_token sealed at rest (AES-256-GCM, rotating keys).
//! - [`policy`]: the decisions, pure (fingerprint, prefix, caps, states).
//! - [`usage`]: last-use tracking on the pass-through path, aggregated in memory.
//! - [`reap`]: deleting unused and idle clients through RFC 7592, one replica at a time.
//! - [`http`]: the registry's own calls to the IdP.
//!
//! The proxy calls three things: [`Registry::admit`] (caps and de-duplication, before the
//! IdP is called), [`Registry::record`] (an accepted registration, queued) and the usage
//! tracker. Writes happen on the registry's worker thread, never on the response path.

pub mod admin_store;
pub mod bridge;
pub mod crypto;
pub mod http;
pub mod policy;
pub mod postgres;
pub mod reap;
pub mod recent;
pub mod sqlite;
pub mod store;
pub mod tally;
pub mod usage;

use std::net::IpAddr;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError, SyncSender, TryRecvError, TrySendError};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use prometheus::{HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts};
use serde_json::{Map, Value};

use crate::config::schema::{RegistryBackend, RegistrySection};
use crypto::KeyRing;
pub use policy::{Cap, ClientState, Limits};
pub use store::{ClientRow, ListQuery, Store, StoreError};

/// The registry's time, in Unix seconds. Injected: tests and `clients reap --at` judge
/// idleness at a time of their choosing.
pub trait Clock: Send + Sync {
    fn now(&self) -> i64;
}

pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> i64 {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
    }
}

/// A clock that says what it is told.
#[derive(Default)]
pub struct ManualClock(pub AtomicI64);

impl ManualClock {
    pub fn at(t: i64) -> Arc<ManualClock> {
        Arc::new(ManualClock(AtomicI64::new(t)))
    }
    pub fn set(&self, t: i64) {
        self.0.store(t, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// RFC 3339 (UTC, seconds) of a Unix time.
pub fn rfc3339(t: i64) -> String {
    let st = std::time::UNIX_EPOCH + Duration::from_secs(t.max(0) as u64);
    humantime::format_rfc3339_seconds(st).to_string()
}

/// Unix seconds of an RFC 3339 time or of a plain number.
pub fn parse_time(s: &str) -> Option<i64> {
    if let Ok(n) = s.trim().parse::<i64>() {
        return Some(n);
    }
    humantime::parse_rfc3339_weak(s.trim())
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_secs() as i64)
}

/// The decision limits of a `[registry]` section (reloadable).
pub fn limits(s: &RegistrySection) -> Limits {
    Limits {
        max_clients: s.max_clients,
        max_per_software: s.max_per_software,
        max_per_prefix: s.max_per_prefix,
        prefix_window_secs: RegistrySection::seconds(&s.prefix_window),
        prefix_v4: s.prefix_v4,
        prefix_v6: s.prefix_v6,
        dedupe_window_secs: RegistrySection::seconds(&s.dedupe_window),
        unused_grace_secs: RegistrySection::seconds(&s.unused_grace),
        idle_after_secs: RegistrySection::seconds(&s.idle_after),
    }
}

/// Open the configured store and run its migrations. `(store, from, to)` schema versions.
pub fn open_store(s: &RegistrySection) -> Result<(Store, i64, i64), StoreError> {
    let backend: Arc<dyn store::Backend> = match s.backend {
        RegistryBackend::Sqlite => Arc::new(sqlite::Sqlite::open(std::path::Path::new(&s.path))?),
        RegistryBackend::Postgres => {
            let url = s.postgres_url().map_err(|e| StoreError::new("postgres", e))?;
            Arc::new(postgres::Postgres::connect(&url, s.ca_file.as_deref().map(std::path::Path::new))?)
        }
    };
    let store = Store::new(backend);
    let (from, to) = store.migrate()?;
    Ok((store, from, to))
}

/// The registry's Prometheus metrics (registered with the gateway's registry at start).
#[derive(Clone)]
pub struct RegistryMetrics {
    pub clients: IntGaugeVec,
    pub dedupes: IntCounter,
    pub cap_refusals: IntCounterVec,
    pub reaped: IntCounterVec,
    pub store_errors: IntCounterVec,
    pub store_seconds: HistogramVec,
    pub records_lost: IntCounterVec,
    pub queue_depth: IntGauge,
}

impl RegistryMetrics {
    fn new() -> RegistryMetrics {
        let cv = |n: &str, h: &str, l: &[&str]| IntCounterVec::new(Opts::new(n, h), l).expect("valid metric");
        RegistryMetrics {
            clients: IntGaugeVec::new(
                Opts::new("dcr_gateway_registry_clients", "Dynamically registered clients in the registry, by state"),
                &["state"],
            )
            .expect("valid metric"),
            dedupes: IntCounter::new(
                "dcr_gateway_registry_dedupes_total",
                "Identical public registrations answered with the existing client (the IdP not called)",
            )
            .expect("valid metric"),
            cap_refusals: cv(
                "dcr_gateway_registry_cap_refusals_total",
                "Registrations refused by a registry cap",
                &["cap"],
            ),
            reaped: cv(
                "dcr_gateway_registry_reaped_total",
                "Clients the reaper reported or deleted, by mode, reason and result",
                &["mode", "reason", "result"],
            ),
            store_errors: cv("dcr_gateway_registry_store_errors_total", "Failed registry store operations", &["op"]),
            store_seconds: HistogramVec::new(
                HistogramOpts::new("dcr_gateway_registry_store_seconds", "Registry store operation latency")
                    .buckets(vec![0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0]),
                &["op"],
            )
            .expect("valid metric"),
            records_lost: cv(
                "dcr_gateway_registry_records_lost_total",
                "Accepted registrations not recorded (queue_full, write_failed)",
                &["reason"],
            ),
            queue_depth: IntGauge::new("dcr_gateway_registry_queue_depth", "Registrations waiting to be written")
                .expect("valid metric"),
        }
    }

    /// Every series a dashboard or an alert reads, at zero before the first event (as the
    /// gateway's own metrics are: `rate()` and `absent()` work from the first scrape).
    fn zero(&self) {
        for state in ["live", "deleted"] {
            self.clients.with_label_values(&[state]);
        }
        for cap in [policy::Cap::Total, policy::Cap::Software, policy::Cap::Prefix] {
            self.cap_refusals.with_label_values(&[cap.as_str()]);
        }
        for reason in ["unused", "idle"] {
            self.reaped.with_label_values(&["report", reason, "reported"]);
            for result in ["deleted", "failed"] {
                self.reaped.with_label_values(&["delete", reason, result]);
            }
        }
        for op in ["dedupe", "counts", "record", "touch", "totals", "token_use", "write"] {
            self.store_errors.with_label_values(&[op]);
        }
        for reason in ["queue_full", "write_failed", "no_client_id"] {
            self.records_lost.with_label_values(&[reason]);
        }
    }

    /// Register every metric with the gateway's registry.
    pub fn register(&self, m: &crate::telemetry::Metrics) {
        self.zero();
        m.register_collector(Box::new(self.clients.clone()));
        m.register_collector(Box::new(self.dedupes.clone()));
        m.register_collector(Box::new(self.cap_refusals.clone()));
        m.register_collector(Box::new(self.reaped.clone()));
        m.register_collector(Box::new(self.store_errors.clone()));
        m.register_collector(Box::new(self.store_seconds.clone()));
        m.register_collector(Box::new(self.records_lost.clone()));
        m.register_collector(Box::new(self.queue_depth.clone()));
    }
}

/// What the proxy knows about an accepted registration.
pub struct Accepted<'a> {
    pub client_ip: IpAddr,
    pub country: Option<&'a str>,
    pub asn: Option<u32>,
    pub user_agent: Option<&'a str>,
    /// The normalized document the IdP was sent.
    pub sent: &'a [u8],
    pub client_name: Option<&'a str>,
    pub redirect_hosts: &'a [String],
    /// Initial access token label, else the software statement's issuer.
    pub admitted_by: Option<&'a str>,
    /// The IdP's answer, as it answered.
    pub answer: &'a Map<String, Value>,
    /// `registration_client_uri` as the client sees it (rewritten onto the gateway).
    pub public_client_uri: Option<String>,
    /// What admission worked out from `sent`, when it judged this registration: the row takes
    /// its facts from here instead of parsing and fingerprinting the document again.
    pub identity: Option<&'a Identity>,
}

/// What identifies a registration for caps and de-duplication (computed once, in `admit`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub fingerprint: String,
    pub prefix: String,
    pub software_key: String,
    pub public: bool,
    /// The document's own `software_id`, `software_version` and `token_endpoint_auth_method`
    /// (recorded with the row; the answer's are the fallback).
    pub software_id: Option<String>,
    pub software_version: Option<String>,
    pub auth_method: Option<String>,
}

/// The registry's answer to a registration about to be forwarded.
#[derive(Debug)]
pub enum Admission {
    /// Forward it.
    Forward(Identity),
    /// An identical public client from this prefix exists: answer with it (the stored
    /// answer, secrets removed).
    Duplicate { client_id: String, answer: Map<String, Value> },
    /// A cap is reached.
    Capped(Cap),
}

/// Caps' counts kept in memory, and the store's [`store::Backend::data_version`] they were
/// seeded at.
struct Kept {
    tally: tally::Tally,
    version: i64,
}

enum Job {
    Record(Arc<ClientRow>),
    /// The IdP accepted an RFC 7592 update (`deleted: false`) or delete of this client.
    Changed {
        client_id: String,
        deleted: bool,
        at: i64,
    },
    Sync(mpsc::Sender<()>),
    Stop,
}

/// How long the worker waits for more records before committing a batch.
const LINGER: Duration = Duration::from_millis(20);
/// How often the worker looks at the queue while it gathers a batch.
const GATHER_POLL: Duration = Duration::from_millis(1);
/// The most rows committed in one transaction.
const BATCH_ROWS: usize = 256;

/// Members of the IdP's answer never kept in the stored answer.
const SECRET_MEMBERS: &[&str] = &["registration_access_token", "client_secret"];

pub struct Registry {
    store: Store,
    keys: KeyRing,
    clock: Arc<dyn Clock>,
    pub metrics: RegistryMetrics,
    queue: SyncSender<Job>,
    /// Accepted registrations not yet written: counted by caps, found by de-duplication.
    /// Shared with the queued job (one row, never copied).
    pending: Mutex<Vec<Arc<ClientRow>>>,
    /// Held for reading while caps count (store, then pending) and for writing while the
    /// worker commits a batch and forgets it from `pending`: without it a count could miss a
    /// row committed after its store query but forgotten before its pending scan.
    commit_gate: RwLock<()>,
    /// Whether caps' counts are kept in memory: the store is written by this process only
    /// (SQLite; [`store::Backend::data_version`] tells when another process wrote).
    keeps_counts: bool,
    /// The kept counts (`None` until caps first need them, or after another process wrote).
    /// Lock order: `kept`, then `commit_gate`, then `pending`.
    kept: Mutex<Option<Kept>>,
    /// Public registrations within the de-duplication window, where counts are kept too: a
    /// registration with none is admitted without asking the store ([`recent`]).
    recent: recent::Recent,
    pub usage: usage::Usage,
    /// Who holds leases from this process.
    pub holder: String,
    worker: Mutex<Option<std::thread::JoinHandle<()>>>,
    flush_every: Duration,
    retry_delays: Vec<Duration>,
}

impl Registry {
    /// Open the store (migrating it), load the keys and start the worker thread.
    pub fn start(
        s: &RegistrySection,
        clock: Arc<dyn Clock>,
        paths: usage::UsagePaths,
    ) -> Result<Arc<Registry>, String> {
        let keys = KeyRing::load(std::path::Path::new(s.key_file.as_deref().unwrap_or_default()))
            .map_err(|e| format!("registry.key_file: {e}"))?;
        let (store, from, to) = open_store(s).map_err(|e| format!("registry: {e}"))?;
        if from != to {
            tracing::info!(backend = store.backend_name(), from, to, "registry schema migrated");
        }
        Ok(Registry::with_store(store, keys, clock, paths, s.queue_size, Duration::from_millis(s.flush_interval_ms)))
    }

    /// A registry over an open store (tests build one on any store and clock).
    pub fn with_store(
        store: Store,
        keys: KeyRing,
        clock: Arc<dyn Clock>,
        paths: usage::UsagePaths,
        queue_size: usize,
        flush_every: Duration,
    ) -> Arc<Registry> {
        let (tx, rx) = mpsc::sync_channel(queue_size.max(1));
        let mut holder_bytes = [0u8; 8];
        rand::RngCore::fill_bytes(&mut rand::thread_rng(), &mut holder_bytes);
        let host = std::env::var("HOSTNAME").unwrap_or_default();
        let keeps_counts = matches!(store.data_version(), Ok(Some(_)));
        let reg = Arc::new(Registry {
            keeps_counts,
            kept: Mutex::new(None),
            recent: recent::Recent::new(),
            store,
            keys,
            clock,
            metrics: RegistryMetrics::new(),
            queue: tx,
            pending: Mutex::new(Vec::new()),
            commit_gate: RwLock::new(()),
            usage: usage::Usage::new(paths),
            holder: format!("{host}/{}/{}", std::process::id(), hex::encode(holder_bytes)),
            worker: Mutex::new(None),
            flush_every: flush_every.max(Duration::from_millis(10)),
            retry_delays: vec![Duration::from_millis(50), Duration::from_millis(250), Duration::from_secs(1)],
        });
        reg.usage.clock_tick(reg.now());
        let worker = reg.clone();
        let handle = std::thread::Builder::new()
            .name("dcr-registry".into())
            .spawn(move || worker.run(rx))
            .expect("spawn the registry worker");
        *reg.worker.lock().unwrap_or_else(|p| p.into_inner()) = Some(handle);
        reg
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn keys(&self) -> &KeyRing {
        &self.keys
    }

    pub fn now(&self) -> i64 {
        self.clock.now()
    }

    fn timed<T>(&self, op: &str, f: impl FnOnce() -> Result<T, StoreError>) -> Result<T, StoreError> {
        let t = Instant::now();
        let r = f();
        self.metrics.store_seconds.with_label_values(&[op]).observe(t.elapsed().as_secs_f64());
        if let Err(e) = &r {
            self.metrics.store_errors.with_label_values(&[op]).inc();
            tracing::warn!(op, error = %e, "registry store operation failed");
        }
        r
    }

    /// Caps and de-duplication for a registration about to be forwarded (blocking: call it
    /// off the async threads). A store error is returned: the caller decides (the proxy
    /// forwards, counting the error — the registry never blocks registration by failing).
    pub fn admit(&self, sent: &[u8], client_ip: IpAddr, limits: &Limits) -> Result<Admission, StoreError> {
        let doc: Map<String, Value> = serde_json::from_slice(sent).unwrap_or_default();
        self.admit_identity(Registry::identity(&doc, client_ip, limits), limits)
    }

    /// [`Registry::admit`] for a registration's identity already worked out
    /// ([`Registry::admission_identity`]).
    pub fn admit_identity(&self, id: Identity, limits: &Limits) -> Result<Admission, StoreError> {
        let now = self.now();
        if id.public && limits.dedupe_window_secs > 0 {
            let since = now - limits.dedupe_window_secs;
            let pending = self.pending_duplicate(&id, since);
            let found = match pending {
                Some(row) => Some(row),
                None => self.timed("dedupe", || self.store.find_duplicate(&id.fingerprint, &id.prefix, since))?,
            };
            if let Some(row) = found {
                if let Some(answer) =
                    row.answer.as_deref().and_then(|a| serde_json::from_str::<Map<String, Value>>(a).ok())
                {
                    self.metrics.dedupes.inc();
                    return Ok(Admission::Duplicate { client_id: row.client_id, answer });
                }
            }
        }
        if limits.max_clients > 0 || limits.max_per_software > 0 || limits.max_per_prefix > 0 {
            let counts = self.counts(&id.software_key, &id.prefix, limits)?;
            if let Some(cap) = policy::capped(limits, counts) {
                self.metrics.cap_refusals.with_label_values(&[cap.as_str()]).inc();
                return Ok(Admission::Capped(cap));
            }
        }
        Ok(Admission::Forward(id))
    }

    fn identity(doc: &Map<String, Value>, client_ip: IpAddr, limits: &Limits) -> Identity {
        let text = |k: &str| doc.get(k).and_then(Value::as_str);
        Identity {
            fingerprint: policy::fingerprint(doc),
            prefix: policy::prefix(client_ip, limits.prefix_v4, limits.prefix_v6),
            software_key: policy::software_key(text("software_id"), text("client_name")),
            public: policy::is_public(doc),
            software_id: text("software_id").map(str::to_string),
            software_version: text("software_version").map(str::to_string),
            auth_method: text("token_endpoint_auth_method").map(str::to_string),
        }
    }

    /// What the registry must judge before the registration `sent` is forwarded — `None` when
    /// nothing: no cap is set, and it is not a public client or de-duplication is off. The
    /// document is parsed once, here.
    pub fn admission_identity(sent: &[u8], client_ip: IpAddr, limits: &Limits) -> Option<Identity> {
        let capped = limits.max_clients > 0 || limits.max_per_software > 0 || limits.max_per_prefix > 0;
        if !capped && limits.dedupe_window_secs <= 0 {
            return None;
        }
        let doc: Map<String, Value> = serde_json::from_slice(sent).unwrap_or_default();
        if !capped && !policy::is_public(&doc) {
            return None;
        }
        Some(Registry::identity(&doc, client_ip, limits))
    }

    /// [`Registry::admit_identity`] when it needs nothing from the store — no duplicate to
    /// look up (not a public client, de-duplication off, or none in the kept set of recent
    /// public registrations) and the caps' counts kept in memory, seeded for this window and
    /// free this instant — so the proxy decides on its own thread without a hop to the
    /// blocking pool. `None`: call `admit_identity` off the async threads.
    pub fn admit_in_memory(&self, sent: &[u8], client_ip: IpAddr, limits: &Limits) -> Option<Admission> {
        let doc: Map<String, Value> = serde_json::from_slice(sent).unwrap_or_default();
        self.admit_identity_in_memory(&Registry::identity(&doc, client_ip, limits), limits)
    }

    /// [`Registry::admit_in_memory`] for an identity already worked out.
    pub fn admit_identity_in_memory(&self, id: &Identity, limits: &Limits) -> Option<Admission> {
        if !self.keeps_counts {
            return None;
        }
        if id.public && limits.dedupe_window_secs > 0 {
            let since = self.now() - limits.dedupe_window_secs;
            let key = self.recent.key(&id.fingerprint, &id.prefix);
            if self.recent.seen(key, since, limits.dedupe_window_secs) != recent::Seen::None {
                return None;
            }
        }
        if limits.max_clients > 0 || limits.max_per_software > 0 || limits.max_per_prefix > 0 {
            let now = self.now();
            // Never waits: a seed in progress holds the lock for a whole store scan.
            let mut kept = self.kept.try_lock().ok()?;
            let k = kept.as_mut().filter(|k| k.tally.covers(limits.prefix_window_secs))?;
            let counts = k.tally.counts(&id.software_key, &id.prefix, now - limits.prefix_window_secs, now);
            drop(kept);
            if let Some(cap) = policy::capped(limits, counts) {
                self.metrics.cap_refusals.with_label_values(&[cap.as_str()]).inc();
                return Some(Admission::Capped(cap));
            }
        }
        Some(Admission::Forward(id.clone()))
    }

    /// What caps judge a registration of `software_key` from `prefix` against, at the
    /// registry's time: every accepted registration counted once, whether written or queued.
    /// Kept in memory where this process is the store's only writer ([`tally`]); else asked of
    /// the store, each count stopping at its cap, plus the rows queued here.
    pub fn counts(&self, software_key: &str, prefix: &str, limits: &Limits) -> Result<policy::Counts, StoreError> {
        let now = self.now();
        let since = now - limits.prefix_window_secs;
        if self.keeps_counts {
            let mut kept = self.kept.lock().unwrap_or_else(|p| p.into_inner());
            if !kept.as_ref().is_some_and(|k| k.tally.covers(limits.prefix_window_secs)) {
                *kept = Some(self.seed(limits.prefix_window_secs)?);
            }
            let k = kept.as_mut().expect("seeded above");
            return Ok(k.tally.counts(software_key, prefix, since, now));
        }
        let bound = |cap: u64| if cap == 0 { 0 } else { u64::MAX };
        let bound = policy::Counts {
            live_total: bound(limits.max_clients),
            live_software: bound(limits.max_per_software),
            prefix_recent: bound(limits.max_per_prefix),
        };
        let _gate = self.commit_gate.read().unwrap_or_else(|p| p.into_inner());
        let mut counts = self.timed("counts", || self.store.counts_up_to(software_key, prefix, since, bound))?;
        for p in self.pending.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            counts.live_total += 1;
            counts.live_software += u64::from(p.software_key == software_key);
            counts.prefix_recent += u64::from(p.prefix == prefix && p.created_at >= since);
        }
        Ok(counts)
    }

    /// Kept counts from the store and the queued rows at one instant (the caller holds `kept`;
    /// the commit gate keeps the worker from moving a row from one to the other meanwhile).
    fn seed(&self, window_secs: i64) -> Result<Kept, StoreError> {
        let now = self.now();
        let _gate = self.commit_gate.read().unwrap_or_else(|p| p.into_inner());
        // Read before the seed: another process's write during it is seen at the next check.
        let version = self.timed("counts", || self.store.data_version())?.unwrap_or_default();
        let seed = self.timed("counts", || self.store.tally_seed(now - window_secs))?;
        let mut tally = tally::Tally::seeded(seed, window_secs);
        for p in self.pending.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            tally.add(&p.software_key, &p.prefix, p.created_at);
        }
        Ok(Kept { tally, version })
    }

    /// Kept counts checked against the store (the worker, every tick): when another process
    /// wrote to it (`clients reap` from the command line, a second gateway on the same file)
    /// they are counted again; else times gone out of the window are dropped.
    fn check_kept(&self) {
        let mut kept = self.kept.lock().unwrap_or_else(|p| p.into_inner());
        let Some(k) = kept.as_mut() else { return };
        match self.store.data_version() {
            Ok(Some(v)) if v == k.version => k.tally.prune(self.now()),
            Ok(_) => {
                let window = k.tally.window_secs();
                // On failure (counted by `seed`) the next cap check seeds them.
                *kept = self.seed(window).ok();
            }
            Err(e) => {
                self.metrics.store_errors.with_label_values(&["counts"]).inc();
                tracing::warn!(error = %e, "registry: the store's data version not read; caps will count again");
                *kept = None;
            }
        }
    }

    /// The kept set of recent public registrations (the worker, every tick): seeded when the
    /// proxy asked for it or for a longer window, seeded again when another process wrote to
    /// the store, else pruned to its window.
    fn check_recent(&self) {
        match self.recent.tick() {
            recent::Tick::Nothing => {}
            recent::Tick::Check(version) => match self.store.data_version() {
                Ok(Some(v)) if v == version => self.recent.prune(self.now()),
                _ => self.recent.reset(),
            },
            recent::Tick::Seed(window) => {
                let generation = self.recent.begin_seed();
                let since = self.now() - window;
                // Pending first, then the store: a row leaves pending only once committed.
                let pending: Vec<(u64, i64)> = self
                    .pending
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .iter()
                    .filter(|r| r.public && r.answer.is_some())
                    .map(|r| (self.recent.key(&r.fingerprint, &r.prefix), r.created_at))
                    .collect();
                let read = self.timed("dedupe", || {
                    let version = self.store.data_version()?.unwrap_or_default();
                    Ok((version, self.store.recent_public(since, recent::MAX_KEYS + 1)?))
                });
                match read {
                    // More rows than the set may hold: not read further, the store answers.
                    Ok((_, rows)) if rows.len() > recent::MAX_KEYS => self.recent.overflowed(generation),
                    Ok((version, rows)) => {
                        let rows = rows.iter().map(|(fp, prefix, t)| (self.recent.key(fp, prefix), *t));
                        self.recent.finish_seed(generation, Some(rows.chain(pending)), version, window);
                    }
                    Err(_) => self.recent.finish_seed(generation, None::<Vec<(u64, i64)>>, 0, window),
                }
            }
        }
    }

    /// Mark a client deleted in the store (the reaper, the admin API, an RFC 7592 DELETE seen
    /// through the gateway); it leaves the caps' live counts. False when it already was.
    pub fn mark_deleted(&self, client_id: &str, at: i64, reason: &str) -> Result<bool, StoreError> {
        // Held across the write: a seed cannot see the row deleted and then count it out again.
        let mut kept = self.kept.lock().unwrap_or_else(|p| p.into_inner());
        let key = match kept.is_some() {
            true => self.store.get(client_id)?.filter(|r| r.deleted_at.is_none()).map(|r| r.software_key),
            false => None,
        };
        let done = self.store.mark_deleted(client_id, at, reason)?;
        if let (true, Some(k), Some(key)) = (done, kept.as_mut(), key) {
            k.tally.deleted(&key);
        }
        Ok(done)
    }

    fn pending_duplicate(&self, id: &Identity, since: i64) -> Option<ClientRow> {
        let pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        pending
            .iter()
            .rev()
            .find(|p| {
                p.public
                    && p.fingerprint == id.fingerprint
                    && p.prefix == id.prefix
                    && p.created_at >= since
                    && p.answer.is_some()
            })
            .map(|r| ClientRow::clone(r))
    }

    /// The row of an accepted registration: the token sealed, the answer kept without secrets.
    pub fn row(&self, a: &Accepted<'_>, limits: &Limits) -> Option<ClientRow> {
        let client_id = a.answer.get("client_id").and_then(Value::as_str)?.to_string();
        let text = |m: &Map<String, Value>, k: &str| m.get(k).and_then(Value::as_str).map(str::to_string);
        // The document's facts: from admission when it judged this registration (the same
        // bytes), else read here.
        let judged;
        let id = match a.identity {
            Some(id) => id,
            None => {
                let doc: Map<String, Value> = serde_json::from_slice(a.sent).unwrap_or_default();
                judged = Registry::identity(&doc, a.client_ip, limits);
                &judged
            }
        };
        let token = a.answer.get("registration_access_token").and_then(Value::as_str);
        let token_sealed = match token.map(|t| self.keys.seal(&client_id, t)) {
            Some(Ok(s)) => Some(s),
            Some(Err(e)) => {
                tracing::error!(client_id = %client_id, error = %e, "registry: registration_access_token not sealed");
                None
            }
            None => None,
        };
        let public = id.public;
        // Only public clients are ever answered from the store: the answer without secrets,
        // serialized from the IdP's tree as it stands (no copy of the tree).
        let answer = public
            .then(|| {
                let kept: Map<String, Value> = a
                    .answer
                    .iter()
                    .filter(|(k, _)| !SECRET_MEMBERS.contains(&k.as_str()))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                serde_json::to_string(&kept).ok()
            })
            .flatten();
        let software_id = id.software_id.clone().or_else(|| text(a.answer, "software_id"));
        let name = a.client_name.map(str::to_string).or_else(|| text(a.answer, "client_name"));
        Some(ClientRow {
            created_at: self.now(),
            last_used_at: None,
            deleted_at: None,
            deleted_reason: None,
            client_ip: a.client_ip.to_string(),
            prefix: id.prefix.clone(),
            country: a.country.map(str::to_string),
            asn: a.asn.map(i64::from),
            user_agent: a.user_agent.map(|u| u.chars().take(512).collect()),
            software_key: policy::software_key(software_id.as_deref(), name.as_deref()),
            software_id,
            software_version: id.software_version.clone().or_else(|| text(a.answer, "software_version")),
            client_name: name,
            redirect_hosts: a.redirect_hosts.to_vec(),
            auth_method: text(a.answer, "token_endpoint_auth_method").or_else(|| id.auth_method.clone()),
            public,
            fingerprint: id.fingerprint.clone(),
            admitted_by: a.admitted_by.map(str::to_string),
            registration_client_uri: a.public_client_uri.clone(),
            idp_client_uri: text(a.answer, "registration_client_uri"),
            token_sealed,
            answer,
            client_id,
        })
    }

    /// Queue an accepted registration for writing; never blocks. A full queue loses the
    /// record (counted and logged with the client_id).
    pub fn record(&self, a: &Accepted<'_>, limits: &Limits) {
        let Some(row) = self.row(a, limits) else {
            self.metrics.records_lost.with_label_values(&["no_client_id"]).inc();
            tracing::warn!("registry: an accepted registration's answer carried no client_id; not recorded");
            return;
        };
        self.enqueue(row);
    }

    /// Queue a row for writing.
    pub fn enqueue(&self, row: ClientRow) {
        let row = Arc::new(row);
        // Counted and pending at one instant for a seed (which holds `kept`).
        let mut kept = self.kept.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(k) = kept.as_mut() {
            k.tally.add(&row.software_key, &row.prefix, row.created_at);
        }
        {
            // Pending and in the kept set at one instant (lock order: pending, then the set's).
            // A seed begins buffering before it reads pending: a row pending too late for that
            // read is added here while the seed buffers (or after it finished); one pending in
            // time is in the read. Either way the set holds it.
            let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
            pending.push(Arc::clone(&row));
            if row.public && row.answer.is_some() && self.keeps_counts {
                self.recent.add(self.recent.key(&row.fingerprint, &row.prefix), row.created_at);
            }
        }
        match self.queue.try_send(Job::Record(Arc::clone(&row))) {
            Ok(()) => self.metrics.queue_depth.inc(),
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.forget_rows(std::slice::from_ref(&row));
                if let Some(k) = kept.as_mut() {
                    k.tally.lost(&row.software_key, &row.prefix, row.created_at);
                }
                self.metrics.records_lost.with_label_values(&["queue_full"]).inc();
                tracing::error!(client_id = %row.client_id, "registry: write queue full; registration not recorded");
            }
        }
    }

    /// The IdP accepted an RFC 7592 update or delete of `client_id` through the gateway: the
    /// client is no longer a de-duplication answer (its metadata changed, or it is gone), and a
    /// deleted one is marked so (off the response path, like records).
    pub fn changed(&self, client_id: &str, deleted: bool) {
        let job = Job::Changed { client_id: client_id.to_string(), deleted, at: self.now() };
        if self.queue.try_send(job).is_err() {
            self.metrics.records_lost.with_label_values(&["queue_full"]).inc();
            tracing::error!(client_id = %client_id, "registry: write queue full; an RFC 7592 change was not recorded");
        }
        // A registration still queued for writing is forgotten by de-duplication at once.
        self.forget_pending(client_id);
    }

    fn forget_pending(&self, client_id: &str) {
        let mut p = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(i) = p.iter().position(|r| r.client_id == client_id) {
            p.swap_remove(i);
        }
    }

    /// These queued rows leave `pending` (the very rows, under one lock: a batch of N used to
    /// take the lock N times, each with a scan by client_id).
    fn forget_rows(&self, rows: &[Arc<ClientRow>]) {
        let gone: std::collections::HashSet<*const ClientRow> = rows.iter().map(Arc::as_ptr).collect();
        self.pending.lock().unwrap_or_else(|p| p.into_inner()).retain(|r| !gone.contains(&Arc::as_ptr(r)));
    }

    /// Wait until everything queued so far is written and usage is flushed.
    pub fn sync(&self) {
        let (tx, rx) = mpsc::channel();
        if self.queue.send(Job::Sync(tx)).is_ok() {
            let _ = rx.recv_timeout(Duration::from_secs(30));
        }
    }

    /// Write what is queued, flush usage and stop the worker.
    pub fn shutdown(&self) {
        let _ = self.queue.send(Job::Stop);
        if let Some(h) = self.worker.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = h.join();
        }
    }

    /// Write queued rows in one transaction, retried; rows lost after the retries are counted
    /// and logged one by one.
    /// Rows leave `pending` under the commit gate, once written or given up.
    fn write(&self, rows: &[Arc<ClientRow>]) {
        for (attempt, delay) in std::iter::once(Duration::ZERO).chain(self.retry_delays.iter().copied()).enumerate() {
            std::thread::sleep(delay);
            let last = attempt == self.retry_delays.len();
            // The last attempt also holds the kept counts (taken first, in the lock order):
            // rows given up leave pending and the counts at one instant for a seed.
            let mut kept = last.then(|| self.kept.lock().unwrap_or_else(|p| p.into_inner()));
            let _gate = self.commit_gate.write().unwrap_or_else(|p| p.into_inner());
            let written = self.timed("record", || self.store.insert_many(rows));
            if written.is_ok() || last {
                self.forget_rows(rows);
            }
            match written {
                Ok(_) => return,
                Err(e) if last => {
                    for row in rows {
                        if let Some(k) = kept.as_mut().and_then(|g| g.as_mut()) {
                            k.tally.lost(&row.software_key, &row.prefix, row.created_at);
                        }
                        self.metrics.records_lost.with_label_values(&["write_failed"]).inc();
                        tracing::error!(client_id = %row.client_id, error = %e, "registry: registration not recorded after retries");
                    }
                }
                Err(_) => {}
            }
        }
    }

    /// Write the aggregated last-use times.
    pub fn flush_usage(&self) {
        let batch = self.usage.drain();
        if batch.is_empty() {
            return;
        }
        if self.timed("touch", || self.store.touch_many(&batch)).is_err() {
            // Put them back for the next flush (newer times win there).
            for (id, t) in batch {
                self.usage.touch_at(&id, t);
            }
        }
    }

    fn refresh_gauges(&self) {
        if let Ok((live, deleted)) = self.timed("totals", || self.store.totals()) {
            self.metrics.clients.with_label_values(&["live"]).set(live as i64);
            self.metrics.clients.with_label_values(&["deleted"]).set(deleted as i64);
        }
    }

    fn run(&self, rx: mpsc::Receiver<Job>) {
        let mut last_flush = Instant::now();
        let mut last_gauges: Option<Instant> = None;
        // A job taken off the queue while gathering a batch, handled next.
        let mut carried: Option<Job> = None;
        loop {
            let job = match carried.take() {
                Some(j) => Ok(j),
                None => rx.recv_timeout(self.flush_every),
            };
            // Usage is stamped with the registry's clock as of this tick.
            self.usage.clock_tick(self.now());
            match job {
                Ok(Job::Record(row)) => {
                    // What else is queued, or comes within LINGER, goes in the same transaction
                    // (up to 256 rows): a commit writes every page its rows touched (the table
                    // and its six indexes), so rows committed together share those writes —
                    // one row per commit cost more than the registration itself. Until written
                    // the rows are counted and found from `pending`.
                    //
                    // The worker gathers by polling the queue every millisecond rather than
                    // waiting on it: a receiver waiting on the queue is woken by every row sent
                    // (a futex wake on the proxy's thread and a switch to this one, per
                    // registration), one that polls is woken by nothing.
                    let mut batch = vec![row];
                    let until = Instant::now() + LINGER.min(self.flush_every);
                    'gather: while batch.len() < BATCH_ROWS {
                        match rx.try_recv() {
                            Ok(Job::Record(r)) => batch.push(r),
                            Ok(other) => {
                                carried = Some(other);
                                break 'gather;
                            }
                            Err(TryRecvError::Disconnected) => break 'gather,
                            Err(TryRecvError::Empty) => {
                                let left = until.saturating_duration_since(Instant::now());
                                if left.is_zero() {
                                    break 'gather;
                                }
                                std::thread::sleep(left.min(GATHER_POLL));
                            }
                        }
                    }
                    self.metrics.queue_depth.sub(batch.len() as i64);
                    self.write(&batch);
                }
                Ok(Job::Changed { client_id, deleted, at }) => {
                    let done = if deleted {
                        self.mark_deleted(&client_id, at, "rfc7592_delete")
                    } else {
                        self.store.mark_updated(&client_id)
                    };
                    if let Err(e) = done {
                        self.metrics.store_errors.with_label_values(&["write"]).inc();
                        tracing::error!(client_id = %client_id, "registry: an RFC 7592 change was not recorded: {e}");
                    }
                }
                Ok(Job::Sync(ack)) => {
                    self.flush_usage();
                    self.check_kept();
                    self.check_recent();
                    self.refresh_gauges();
                    last_flush = Instant::now();
                    let _ = ack.send(());
                }
                Ok(Job::Stop) | Err(RecvTimeoutError::Disconnected) => {
                    self.flush_usage();
                    return;
                }
                Err(RecvTimeoutError::Timeout) => {}
            }
            if last_flush.elapsed() >= self.flush_every {
                self.flush_usage();
                self.check_kept();
                self.check_recent();
                last_flush = Instant::now();
            }
            if last_gauges.is_none_or(|t| t.elapsed() >= Duration::from_secs(15)) {
                self.refresh_gauges();
                last_gauges = Some(Instant::now());
            }
        }
    }
}

/// The usage paths: `[registry] authorize_paths` / `token_paths`, else those of the IdP's
/// discovery document (asked once at start), else the common ones.
pub fn usage_paths(cfg: &crate::config::Config) -> usage::UsagePaths {
    let r = &cfg.registry;
    if !r.authorize_paths.is_empty() || !r.token_paths.is_empty() {
        return usage::UsagePaths { authorize: r.authorize_paths.clone(), form: r.token_paths.clone() };
    }
    if let Some(origin) = cfg.upstream.origins.first() {
        for doc in ["/.well-known/openid-configuration", "/.well-known/oauth-authorization-server"] {
            match http::call(&cfg.upstream, origin, "GET", &origin.authority(), doc, None) {
                Ok(a) if a.status == 200 => {
                    let (authorize, form) = http::usage_paths(&a.body);
                    if !authorize.is_empty() || !form.is_empty() {
                        tracing::info!(?authorize, token = ?form, "registry: usage paths from the IdP's discovery document");
                        return usage::UsagePaths { authorize, form };
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "registry: the IdP's discovery document not read");
                    break;
                }
            }
        }
    }
    let paths = usage::UsagePaths {
        authorize: ["/authorize", "/auth", "/oauth/authorize", "/oauth2/authorize"].map(String::from).to_vec(),
        form: ["/token", "/oauth/token", "/oauth2/token", "/revoke", "/oauth/revoke", "/par", "/request"]
            .map(String::from)
            .to_vec(),
    };
    tracing::warn!(?paths, "registry: usage paths not configured nor discovered; using the common ones");
    paths
}

/// The gateway's registry at start: `None` when `[registry] enabled = false`. Opens and
/// migrates the store, registers the metrics and starts the reaper thread.
pub fn start_for_gateway(
    cfg: &crate::config::Config,
    metrics: &crate::telemetry::Metrics,
    snapshots: &Arc<crate::snapshot::Store>,
    audit: &Arc<crate::telemetry::AuditLog>,
) -> Result<Option<Arc<Registry>>, Vec<String>> {
    if !cfg.registry.enabled {
        return Ok(None);
    }
    let paths = usage_paths(cfg);
    let reg = Registry::start(&cfg.registry, Arc::new(SystemClock), paths).map_err(|e| vec![e])?;
    reg.metrics.register(metrics);
    reap::spawn(reg.clone(), snapshots.clone(), audit.clone());
    tracing::info!(backend = reg.store().backend_name(), key = reg.keys().active_id(), "registry started");
    Ok(Some(reg))
}

/// One use of an initial access token counted in the store (`max_uses` across replicas):
/// committed when the IdP accepted the registration, given back (on a thread of its own)
/// otherwise — a refusal, a failure to reach the IdP, an aborted request.
pub struct StoreTokenUse {
    reg: Arc<Registry>,
    token: String,
    committed: bool,
}

impl StoreTokenUse {
    pub fn commit(mut self) {
        self.committed = true;
    }
}

impl Drop for StoreTokenUse {
    fn drop(&mut self) {
        if self.committed {
            return;
        }
        let reg = self.reg.clone();
        let token = std::mem::take(&mut self.token);
        std::thread::spawn(move || {
            let _ = reg.timed("token_use", || reg.store.return_token_use(&token));
        });
    }
}

impl Registry {
    /// Whether initial-access-token uses are counted here (the PostgreSQL backend: shared by
    /// every replica) instead of per process.
    pub fn counts_token_uses(&self) -> bool {
        self.store.backend_name() == "postgres"
    }

    /// Spend one use of the token with SHA-256 `token_sha256` if fewer than `max` are spent
    /// (blocking). `Ok(None)`: used up.
    pub fn take_token_use(self: &Arc<Self>, token_sha256: &str, max: u64) -> Result<Option<StoreTokenUse>, StoreError> {
        let ok = self.timed("token_use", || self.store.take_token_use(token_sha256, max))?;
        Ok(ok.then(|| StoreTokenUse { reg: self.clone(), token: token_sha256.to_string(), committed: false }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(extra: &str) -> Result<crate::config::Config, String> {
        crate::config::parse(&format!("[registry]\n{extra}"), std::path::Path::new("/etc/dcr/gateway.toml"))
            .map_err(|e| e.to_string())
    }

    #[test]
    fn the_section_defaults_off_and_resolves_paths() {
        let c = parse("").unwrap();
        assert!(!c.registry.enabled);
        assert_eq!(c.registry.path, "/etc/dcr/registry.db");
        let c = parse("enabled = true\nkey_file = \"keys\"\nidle_after = \"30d\"\nmax_per_prefix = 3").unwrap();
        assert_eq!(c.registry.key_file.as_deref(), Some("/etc/dcr/keys"));
        let l = limits(&c.registry);
        assert_eq!((l.idle_after_secs, l.unused_grace_secs, l.max_per_prefix), (30 * 86_400, 7 * 86_400, 3));
        assert_eq!((l.prefix_v4, l.prefix_v6, l.dedupe_window_secs), (24, 48, 3600));
    }

    #[test]
    fn bad_keys_are_named() {
        let e = parse("enabled = true").unwrap_err();
        assert!(e.contains("registry.key_file"), "{e}");
        let e = parse("enabled = true\nkey_file = \"k\"\nbackend = \"postgres\"").unwrap_err();
        assert!(e.contains("registry.url"), "{e}");
        let e = parse("idle_after = \"soon\"").unwrap_err();
        assert!(e.contains("registry.idle_after"), "{e}");
        let e = parse("prefix_v4 = 33").unwrap_err();
        assert!(e.contains("registry.prefix_v4"), "{e}");
        let e = parse("enabled = true\nkey_file = \"k\"\nreap = \"delete\"\nreap_interval = \"0s\"").unwrap_err();
        assert!(e.contains("registry.reap_interval"), "{e}");
        let e = parse("authorize_paths = [\"auth\"]").unwrap_err();
        assert!(e.contains("registry.authorize_paths"), "{e}");
        let e = parse("reap = \"sometimes\"").unwrap_err();
        assert!(e.contains("reap"), "{e}");
        assert!(parse("typo = 1").is_err(), "unknown keys are refused");
    }

    #[test]
    fn times_parse_both_ways() {
        assert_eq!(parse_time("1767225600"), Some(1_767_225_600));
        assert_eq!(parse_time("2026-01-01T00:00:00Z"), Some(1_767_225_600));
        assert_eq!(rfc3339(1_767_225_600), "2026-01-01T00:00:00Z");
        assert_eq!(parse_time("yesterday"), None);
    }
}
