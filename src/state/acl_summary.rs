//! The periodic ACL summary (Auth0's `acls_summary`): every `[acl] summary_interval_seconds`
//! (600 by default, as Auth0's 10 minutes; 0 turns it off) one log line with the matches per
//! rule and action since the previous line. The counts are the
//! `dcr_gateway_acl_matches_total{rule,action}` counters, so the request path does no extra
//! work; `acl::summary` computes the line.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;

use crate::acl::summary::{self, Totals};
use crate::snapshot::Store;
use crate::telemetry::Metrics;

/// How often a turned-off summary looks whether a reload turned it on.
const OFF_POLL: Duration = Duration::from_secs(30);

pub struct AclSummaryService {
    pub store: Arc<Store>,
    pub metrics: Arc<Metrics>,
}

/// The running totals of `dcr_gateway_acl_matches_total`.
pub fn totals(metrics: &Metrics) -> Totals {
    use prometheus::core::Collector;
    let mut out = Totals::new();
    for family in metrics.acl_matches.collect() {
        for m in family.get_metric() {
            let label = |name: &str| m.get_label().iter().find(|l| l.get_name() == name).map(|l| l.get_value());
            if let (Some(rule), Some(action)) = (label("rule"), label("action")) {
                out.insert((rule.to_string(), action.to_string()), m.get_counter().get_value() as u64);
            }
        }
    }
    out
}

#[async_trait]
impl BackgroundService for AclSummaryService {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut previous = totals(&self.metrics);
        loop {
            let secs = self.store.load().config.acl_summary_interval_seconds;
            let wait = if secs == 0 { OFF_POLL } else { Duration::from_secs(secs) };
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = tokio::time::sleep(wait) => {}
            }
            let now = totals(&self.metrics);
            if secs > 0 {
                let deltas = summary::deltas(&previous, &now);
                let line = summary::summary(&self.store.load().acl, secs, &deltas);
                tracing::info!(event = "acls_summary", summary = %line, "acls_summary");
            }
            previous = now;
        }
    }
}

/// `dcr_gateway_acl_unknown_managed_lists`: how many `auth0_managed` names the active rules
/// give that `[acl.managed_lists]` does not configure (loaded with `unknown_managed_lists =
/// "never_match"`, matching no address). Read from the active snapshot at scrape time.
pub struct UnknownManagedListsGauge {
    store: Arc<Store>,
    gauge: prometheus::IntGauge,
}

impl UnknownManagedListsGauge {
    pub fn new(store: Arc<Store>) -> UnknownManagedListsGauge {
        let gauge = prometheus::IntGauge::new(
            "dcr_gateway_acl_unknown_managed_lists",
            "auth0_managed list names in the active rules that [acl.managed_lists] does not map to a file \
             (loaded with unknown_managed_lists = \"never_match\": they match no address).",
        )
        .expect("static metric definition");
        UnknownManagedListsGauge { store, gauge }
    }
}

impl prometheus::core::Collector for UnknownManagedListsGauge {
    fn desc(&self) -> Vec<&prometheus::core::Desc> {
        self.gauge.desc()
    }

    fn collect(&self) -> Vec<prometheus::proto::MetricFamily> {
        self.gauge.set(self.store.load().acl.unknown_managed_lists().len() as i64);
        self.gauge.collect()
    }
}
