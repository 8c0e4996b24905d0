//! Observability: Prometheus metrics, the audit log, logging setup, and the admin endpoints.

pub mod admin;
pub mod audit;
pub mod logging;
pub mod metrics;


pub use audit::{AuditLine, AuditLog};
pub use metrics::Metrics;
pub use crate::core::outcome::Outcome;
