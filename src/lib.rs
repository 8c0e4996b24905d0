//! dcr-gateway: a Pingora reverse proxy that guards OAuth Dynamic Client Registration.
//!
//! Layers, each importing only those below it (docs/architecture.md):
//! - pure: [`core`] (request view, gate, record, discovery rewriting), [`routes`], [`scope`],
//!   [`acl`], [`dcr`], [`signals`], [`tokens`], [`ratelimit`] decisions, [`errors`];
//! - [`config`]: the file's schema and the validated runtime model;
//! - [`state`]: snapshot, reload, the effective registration policy;
//! - adapters: [`proxy`] (Pingora), [`admin`] (the admin listener and API), [`telemetry`];
//! - [`cli`].

pub mod acl;
pub mod admin;
pub mod cimd;
pub mod cli;
pub mod config;
pub mod console;
pub mod core;
pub mod dcr;
pub mod errors;
pub mod fetch;
pub mod proxy;
pub mod ratelimit;
pub mod redact;
pub mod registry;
pub mod routes;
pub mod scope;
pub mod signals;
pub mod state;
pub mod telemetry;
pub mod tokens;

#[cfg(test)]
mod layering;

// The state layer's modules keep their old paths too.
pub use state::{reload, snapshot};
