//! dcr-gateway: a Pingora reverse proxy that guards OAuth Dynamic Client Registration.
//!
//! The pure core — [`routes`], [`acl`], [`dcr`], [`signals`], [`config`] — never touches
//! Pingora or I/O. [`proxy`] is the thin adapter; [`snapshot`] and [`reload`] hold the
//! reloadable state; [`telemetry`] the metrics, audit log and admin endpoints.

pub mod acl;
pub mod admin;
pub mod cli;
pub mod config;
pub mod core;
pub mod dcr;
pub mod errors;
pub mod proxy;
pub mod ratelimit;
pub mod redact;
pub mod reload;
pub mod routes;
pub mod scope;
pub mod signals;
pub mod snapshot;
pub mod telemetry;
pub mod tokens;
