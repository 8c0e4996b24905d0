//! The pure core: synchronous functions over plain data, no Pingora, no tokio, no files.
//! Everything the gateway decides about a request is decided here, so it can be tested in
//! microseconds and fuzzed without a socket.
//!
//! - [`body`]: a request body gathered under a size bound (proxy and admin listener alike).
//! - [`target`]: one parse of the request head into the canonical [`target::RequestView`]
//!   that every later decision — scope, host signal, the request forwarded upstream — reads.
//! - [`headers`]: reading header values from their bytes, and which client headers the
//!   gateway strips before forwarding.
//! - [`discovery`]: discovery documents, registration answers and `Location` headers
//!   rewritten so that clients stay on the gateway.
//! - [`gate`]: registration admission — method, switch, token, body plan, payload check.
//! - [`request_id`]: accepting or making request ids (proxy, listener and admin alike).
//! - [`verify`]: members an IdP profile adds to registrations, and the IdP's answer compared
//!   with what the gateway sent.
//! - [`outcome`] and [`record`]: what happened to a request, as metric labels and one audit
//!   line, from the facts the adapter collected.

pub mod body;
pub mod discovery;
pub mod gate;
pub mod headers;
pub mod outcome;
pub mod record;
pub mod request_id;
pub mod target;
pub mod verify;
