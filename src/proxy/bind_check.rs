//! Listen addresses are checked before Pingora takes them, and a listener Pingora could not
//! open ends the process.
//!
//! Why: Pingora retries a busy address for 30 s and then panics inside that listener's
//! service thread only; the rest of the process runs on. The admin listener kept answering
//! `/readyz` "ready" while the public port belonged to another process, so a health check (or
//! a test harness) took that other server for the gateway. A gateway that does not hold every
//! address it was told to serve must not start, and must not stay up half-bound.

use std::net::{SocketAddr, TcpListener};

/// The text Pingora's listening service panics with when its listeners cannot be built.
const PINGORA_LISTENER_PANIC: &str = "Failed to build listeners";

/// Each address can be bound now (the standard library sets SO_REUSEADDR on Unix as Pingora
/// does, so a port in TIME_WAIT passes and one with a live listener does not). The probe
/// sockets close at once; Pingora binds right after. `what` names the config key of each.
pub fn ensure_bindable<'a>(addrs: impl IntoIterator<Item = (&'a str, SocketAddr)>) -> Result<(), Vec<String>> {
    let errors: Vec<String> = addrs
        .into_iter()
        .filter_map(|(what, addr)| match TcpListener::bind(addr) {
            Ok(_) => None,
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
                Some(format!("{what}: {addr}: address already in use (another process listens there)"))
            }
            Err(e) => Some(format!("{what}: {addr}: cannot listen: {e}")),
        })
        .collect();
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

/// Installs a panic hook that ends the process (exit status 1) when a Pingora listener could
/// not be built; every other panic goes to the previous hook unchanged. Only an address taken
/// between [`ensure_bindable`] and Pingora's bind gets here, 30 s after the start; registry
/// records queued by the other listeners meanwhile are not flushed (the exit skips the
/// shutdown path) and are lost, as at a crash (docs/registry.md).
pub fn exit_when_a_listener_fails() {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let message = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_default();
        previous(info);
        if message.contains(PINGORA_LISTENER_PANIC) {
            tracing::error!("a listener could not be opened: the gateway stops rather than serve half-bound");
            eprintln!("dcr-gateway: a listener could not be opened; stopped");
            std::process::exit(1);
        }
    }));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_busy_address_is_named_with_its_key() {
        let held = TcpListener::bind("127.0.0.1:0").unwrap();
        let busy = held.local_addr().unwrap();
        let free = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        let errors = ensure_bindable([("listen.http", free), ("listen.admin", busy)]).unwrap_err();
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(errors[0].starts_with(&format!("listen.admin: {busy}: address already in use")), "{errors:?}");
        // The free one was only probed: it can be bound again.
        assert!(ensure_bindable([("listen.http", free)]).is_ok());
    }
}
