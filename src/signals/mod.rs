//! Request signals: the `Signals` struct, client-IP resolution and GeoIP/ASN lookup.

mod client_ip;
pub mod geo;
mod types;

pub use client_ip::TrustedProxies;
pub use types::{canonical_ip, Signals};
