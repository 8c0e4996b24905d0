//! The gateway's state: everything loaded from files, as one consistent [`snapshot::Snapshot`]
//! per request, rebuilt whole on [`reload`] or kept when the new files fail.
//!
//! - [`settings`]: the tenant settings file (written by the admin API) and its overlay on the
//!   `[dcr]` section.
//! - [`policy`]: the one function that computes the effective registration policy from the
//!   configuration and the settings file — the proxy (through the snapshot), the admin API and
//!   `dcr-gateway validate -c` all use it, so they never disagree.
//! - [`snapshot`]: loading every file a configuration names into one snapshot.
//! - [`reload`]: SIGHUP and file-watch reloads, judged against the last good snapshot.
//! - [`store`]: reading a file with its digest, and atomic writes (the admin API's).
//! - [`upstream`]: the `[upstream]` origins resolved and the CA loaded.
//! - [`idp_probe`]: at start and in `check`, the IdP's advertised registration path compared
//!   with `[routes] upstream_registration_path`.
//! - [`certs`]: the HTTPS listeners' certificate/key pairs, checked and swapped on reload.
//!
//! Imports go downward only: state uses config and the core, never the adapters.

pub mod acl_summary;
pub mod certs;
pub mod idp_probe;
pub mod policy;
pub mod ratelimiter;
pub mod reload;
pub mod remote;
pub mod settings;
pub mod snapshot;
pub mod store;
pub mod upstream;
