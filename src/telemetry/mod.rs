//! Observability: Prometheus metrics, the audit log and logging setup. (The admin listener
//! that serves /metrics is an adapter: `admin::listener`.)

pub mod audit;
pub mod logging;
pub mod metrics;

pub use crate::core::outcome::Outcome;
pub use audit::{AuditLine, AuditLog};
pub use metrics::Metrics;
