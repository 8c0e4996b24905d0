//! `[dcr] resolve_metadata_uris`: the hosts of the URIs an IdP will fetch on a registration's
//! word (`jwks_uri`, `sector_identifier_uri`, `request_uris`, `logo_uri`, ...) are resolved
//! through the outbound fetcher's resolver before the registration is forwarded, and a host
//! that resolves to a special-use address — or does not resolve — refuses it. Literal
//! special-use addresses and names are refused by the pure screening in strict mode; a name
//! that *resolves* to one (`metadata.attacker.example` → 169.254.169.254) needs this.
//!
//! The decision is the pure `dcr::screen::judge_resolved` over the addresses resolved here,
//! with the fetcher's table and allow list (`[cimd] allow_cidrs`), so a registration is
//! refused exactly when a fetch of its URI would be. Bounded: at most
//! `dcr::screen::MAX_RESOLVED_HOSTS` hosts per registration, resolved [`PER_REGISTRATION`] at a
//! time and at most [`IN_FLIGHT`] across the gateway, all of them within
//! `[dcr] resolve_metadata_timeout_ms`; answers (failures too) are cached for [`CACHE_TTL`], at
//! most [`CACHE_ENTRIES`] hosts. Every host judged is counted in
//! `dcr_gateway_metadata_host_checks_total{result}`.
//!
//! What it cannot do: the IdP resolves the name again when it fetches, and a name whose
//! answer changes in between (DNS rebinding) reaches whatever it answers then. This check
//! catches names that point at internal addresses; only an IdP that fetches through an
//! SSRF-safe client (or through this gateway's fetcher) closes the window.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prometheus::{IntCounterVec, Opts};
use tokio::sync::Semaphore;

use super::Fetcher;
use crate::dcr::screen::{judge_resolved, MetadataHost, Resolution};
use crate::dcr::RegistrationError;

/// Lookups of one registration at once.
pub const PER_REGISTRATION: usize = 4;
/// Lookups across the gateway at once; a registration waits for a slot within its budget.
pub const IN_FLIGHT: usize = 64;
/// How long an answer (or a failure) is reused.
pub const CACHE_TTL: Duration = Duration::from_secs(30);
/// Hosts remembered; the expired ones are dropped first, then the oldest.
pub const CACHE_ENTRIES: usize = 4096;

/// Every `result` label value.
pub const RESULTS: [&str; 4] = ["ok", "forbidden_address", "dns_error", "timeout"];

/// Resolves and judges the hosts of registrations; one per gateway.
pub struct MetadataResolver {
    fetcher: Arc<Fetcher>,
    cache: Mutex<HashMap<String, (Instant, Resolution)>>,
    slots: Arc<Semaphore>,
    results: IntCounterVec,
    clock: Arc<dyn Fn() -> Instant + Send + Sync>,
}

impl MetadataResolver {
    /// Over `fetcher`'s resolver and allow list.
    pub fn new(fetcher: Arc<Fetcher>) -> MetadataResolver {
        MetadataResolver::with_clock(fetcher, Arc::new(Instant::now))
    }

    /// With an injected clock (tests expire the cache without waiting).
    pub fn with_clock(fetcher: Arc<Fetcher>, clock: Arc<dyn Fn() -> Instant + Send + Sync>) -> MetadataResolver {
        let results = IntCounterVec::new(
            Opts::new(
                "dcr_gateway_metadata_host_checks_total",
                "Hosts of registration metadata URIs resolved for [dcr] resolve_metadata_uris, by result",
            ),
            &["result"],
        )
        .expect("static metric definition");
        for r in RESULTS {
            results.with_label_values(&[r]);
        }
        MetadataResolver {
            fetcher,
            cache: Mutex::new(HashMap::new()),
            slots: Arc::new(Semaphore::new(IN_FLIGHT)),
            results,
            clock,
        }
    }

    /// `dcr_gateway_metadata_host_checks_total{result}`: register it on the gateway's registry.
    pub fn results(&self) -> &IntCounterVec {
        &self.results
    }

    /// Resolves every host (within `budget` for all of them) and judges each: the first
    /// refusal, in the order of `hosts`, or `Ok`.
    pub async fn screen(&self, hosts: &[MetadataHost], budget: Duration) -> Result<(), RegistrationError> {
        let resolved = self.resolve_all(hosts, budget).await;
        let allow = &self.fetcher.config().allow_cidrs;
        let mut verdict = Ok(());
        for (host, r) in hosts.iter().zip(&resolved) {
            let judged = judge_resolved(host, r, allow);
            let label = match (r, &judged) {
                (_, Ok(())) => "ok",
                (Resolution::TimedOut, _) => "timeout",
                (Resolution::Failed, _) => "dns_error",
                (Resolution::Addresses(a), _) if a.is_empty() => "dns_error",
                (Resolution::Addresses(_), _) => "forbidden_address",
            };
            self.results.with_label_values(&[label]).inc();
            if verdict.is_ok() {
                verdict = judged;
            }
        }
        verdict
    }

    /// One [`Resolution`] per host, in order: literals as they are, cached answers, then the
    /// rest looked up [`PER_REGISTRATION`] at a time; what is not answered within `budget` is
    /// [`Resolution::TimedOut`].
    pub async fn resolve_all(&self, hosts: &[MetadataHost], budget: Duration) -> Vec<Resolution> {
        let mut out: Vec<Option<Resolution>> = hosts
            .iter()
            .map(|h| match h.literal {
                Some(ip) => Some(Resolution::Addresses(vec![ip])),
                None => self.cached(&h.host),
            })
            .collect();
        let pending: Vec<usize> = (0..hosts.len()).filter(|&i| out[i].is_none()).collect();
        if !pending.is_empty() {
            let deadline = tokio::time::Instant::now() + budget;
            let per_registration = Arc::new(Semaphore::new(PER_REGISTRATION));
            let mut tasks = tokio::task::JoinSet::new();
            for i in pending {
                let (fetcher, slots, mine) = (self.fetcher.clone(), self.slots.clone(), per_registration.clone());
                let (name, port) = (hosts[i].host.clone(), hosts[i].port);
                tasks.spawn(async move {
                    let lookup = async {
                        let _mine = mine.acquire_owned().await.ok()?;
                        let _slot = slots.acquire_owned().await.ok()?;
                        Some(match fetcher.resolve(&name, port).await {
                            Ok(addrs) => Resolution::Addresses(addrs),
                            Err(_) => Resolution::Failed,
                        })
                    };
                    let r = tokio::time::timeout_at(deadline, lookup).await.ok().flatten();
                    (i, r)
                });
            }
            // Every task ends by the deadline; dropping the set would abort any that did not.
            while let Some(done) = tasks.join_next().await {
                if let Ok((i, Some(r))) = done {
                    self.remember(&hosts[i].host, &r);
                    out[i] = Some(r);
                }
            }
        }
        out.into_iter().map(|r| r.unwrap_or(Resolution::TimedOut)).collect()
    }

    fn cached(&self, host: &str) -> Option<Resolution> {
        let now = (self.clock)();
        let cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        cache.get(host).filter(|(at, _)| now.duration_since(*at) < CACHE_TTL).map(|(_, r)| r.clone())
    }

    fn remember(&self, host: &str, r: &Resolution) {
        let now = (self.clock)();
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if cache.len() >= CACHE_ENTRIES && !cache.contains_key(host) {
            cache.retain(|_, (at, _)| now.duration_since(*at) < CACHE_TTL);
            if cache.len() >= CACHE_ENTRIES {
                if let Some(oldest) = cache.iter().min_by_key(|(_, (at, _))| *at).map(|(k, _)| k.clone()) {
                    cache.remove(&oldest);
                }
            }
        }
        cache.insert(host.to_string(), (now, r.clone()));
    }

    /// Hosts in the cache (tests).
    pub fn cached_hosts(&self) -> usize {
        self.cache.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}
