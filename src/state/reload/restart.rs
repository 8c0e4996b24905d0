//! What a reload cannot apply: the keys bound when the process started (listeners, the
//! upstream set and its peers, server settings, audit output, logging, the watcher). A reload
//! compares the whole start-bound part of the file with the configuration the process runs,
//! names every key that differs, and sets `dcr_gateway_restart_required` while any does.
//!
//! Every field of [`Config`] is classified below, by name: [`PER_REQUEST`] (read from the
//! snapshot, so a reload applies it) or start-bound. Whole start-bound sections are compared
//! field by field through their `Debug` form, so a key added to `[server]` or `[upstream]` is
//! covered without a change here; a `Config` field in neither list counts as start-bound (a
//! spurious warning, never a silent one) and fails `every_config_field_is_classified`.

use std::fmt::Debug;

use crate::config::{Config, TlsListener};

/// `Config` fields read from the snapshot per request or per reload: a reload applies them.
pub const PER_REQUEST: &[&str] = &[
    "path",
    "router",
    "routes",
    "trusted_proxies",
    "request_id_header",
    "ja3_header",
    "ja4_header",
    "sni_host_mismatch",
    "idp_origins",
    "idp",
    "public_base_url",
    "strip_untrusted_headers",
    "set_forwarded",
    "rules_file",
    // Loaded into the snapshot with the rules (managed lists, signature keys) or read from it
    // at each summary interval.
    "acl_managed_lists",
    "acl_unknown_managed_lists",
    "acl_signature_keys",
    "acl_summary_interval_seconds",
    "default_action",
    "country_db",
    "asn_db",
    "dcr",
    "rate_limit",
    "audit_enabled",
    "audit_user_agent_max_chars",
    "admin",
];

/// Start-bound `Config` fields: (field, key in `gateway.toml`, compared key by key).
const START_BOUND: &[(&str, &str, bool)] = &[
    ("server", "server", true),
    ("http_listeners", "listen.http", false),
    ("https_listeners", "listen.https", false),
    ("admin_listener", "listen.admin", false),
    ("upstream", "upstream", true),
    ("log", "log", true),
    ("audit_output", "audit.output", false),
    ("watch", "reload.watch", false),
    ("reload_debounce", "reload.debounce_ms", false),
    // The fetcher (limits, CA, allowed ranges) is built at start; host lists, authorize paths
    // and cache bounds are read per request, but the section is reported whole.
    ("cimd", "cimd", false),
    // The store (backend, path, url, key file) and its worker are built at start; the caps,
    // windows and reaping policy are read per request, but the section is reported whole.
    ("registry", "registry", false),
    // The admin documents' source is chosen at start (and its watcher started with it).
    ("admin_store", "admin.store", false),
];

/// Validated fields whose name differs from their key (durations kept in milliseconds).
const RENAMED: &[(&str, &str)] = &[
    ("upstream.connect_timeout", "upstream.connect_timeout_ms"),
    ("upstream.read_timeout", "upstream.read_timeout_ms"),
    ("upstream.write_timeout", "upstream.write_timeout_ms"),
    ("upstream.idle_timeout", "upstream.idle_timeout_ms"),
    ("upstream.health_check_interval", "upstream.health_check_interval_ms"),
];

/// The top-level fields of a struct's pretty `Debug` form, each with its value's text.
fn fields(v: &impl Debug) -> Vec<(String, String)> {
    let text = format!("{v:#?}");
    let mut out: Vec<(String, String)> = Vec::new();
    for line in text.lines().skip(1) {
        let top = line.strip_prefix("    ").filter(|l| !l.starts_with(' '));
        match top.and_then(|l| l.split_once(": ")) {
            Some((name, value)) if name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') => {
                out.push((name.to_string(), value.to_string()))
            }
            _ => {
                if let Some((_, value)) = out.last_mut() {
                    value.push('\n');
                    value.push_str(line);
                }
            }
        }
    }
    out
}

fn key_name(prefix: &str, field: &str) -> String {
    let key = format!("{prefix}.{field}");
    RENAMED.iter().find(|(f, _)| *f == key).map_or(key, |(_, k)| k.to_string())
}

/// The start-bound keys in which `file` differs from `running`, named as in `gateway.toml`.
/// Empty: a reload applied everything the file says.
pub fn start_bound_changes(running: &Config, file: &Config) -> Vec<String> {
    let mut out = Vec::new();
    let (old, new) = (fields(running), fields(file));
    for (name, value) in &new {
        if PER_REQUEST.contains(&name.as_str()) {
            continue;
        }
        let before = old.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str());
        if before == Some(value.as_str()) {
            continue;
        }
        match START_BOUND.iter().find(|(f, _, _)| f == name) {
            Some(("https_listeners", _, _)) => https_changes(&running.https_listeners, &file.https_listeners, &mut out),
            Some((field, key, true)) => {
                let section = |c: &Config| match *field {
                    "server" => fields(&c.server),
                    "upstream" => fields(&c.upstream),
                    "log" => fields(&c.log),
                    _ => Vec::new(),
                };
                let (a, b) = (section(running), section(file));
                for (f, v) in &b {
                    if a.iter().find(|(n, _)| n == f).map(|(_, v)| v) != Some(v) {
                        out.push(key_name(key, f));
                    }
                }
            }
            Some((_, key, false)) => out.push(key.to_string()),
            // Not classified: assume a restart is needed rather than claim it was applied.
            None => out.push(name.clone()),
        }
    }
    out
}

/// HTTPS listeners: the set of addresses and each one's `h2` are bound at start; the
/// certificate and key of a running listener are reloaded in place (not listed).
fn https_changes(running: &[TlsListener], file: &[TlsListener], out: &mut Vec<String>) {
    let addrs = |ls: &[TlsListener]| {
        let mut a: Vec<_> = ls.iter().map(|l| l.address).collect();
        a.sort();
        a
    };
    if addrs(running) != addrs(file) {
        out.push("listen.https (addresses)".into());
    }
    for (i, l) in file.iter().enumerate() {
        // Exhaustive: cert and key are reloaded in place (`Reloader`), the rest is bound.
        let TlsListener { address, cert: _, key: _, h2 } = l;
        if let Some(r) = running.iter().find(|r| r.address == *address) {
            if r.h2 != *h2 {
                out.push(format!("listen.https[{i}].h2"));
            }
        }
    }
}

/// What `check` would reject in the start-bound keys that changed (the next restart would
/// fail on them): checked by a reload so it does not report success for them.
pub fn check_start_bound(file: &Config, changed: &[String]) -> Vec<String> {
    let mut problems = Vec::new();
    let path = file.path.display();
    if changed.iter().any(|k| k.starts_with("upstream.")) {
        if let Err(errs) = crate::state::upstream::resolve(&file.upstream) {
            problems.extend(errs.into_iter().map(|e| format!("{path}: {e}")));
        }
    }
    if changed.iter().any(|k| k == "audit.output") {
        if let crate::config::AuditOutput::File(p) = &file.audit_output {
            if let Some(dir) = p.parent() {
                if !dir.as_os_str().is_empty() && !dir.is_dir() {
                    problems.push(format!("{path}: audit.output: directory {} does not exist", dir.display()));
                }
            }
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn parse(text: &str) -> Config {
        crate::config::parse(text, Path::new("/etc/dcr/gateway.toml")).unwrap()
    }

    const BASE: &str = "[listen]\nhttp = [\"127.0.0.1:8080\"]\nhttps = [{ address = \"127.0.0.1:8443\", cert = \"a.pem\", key = \"a.key\" }]\n[upstream]\norigins = [\"http://127.0.0.1:3000\"]\n";

    #[test]
    fn per_request_keys_and_certificates_need_no_restart() {
        let running = parse(BASE);
        let same = parse(&format!(
            "{}\n[acl]\ndefault_action = \"block\"\n[dcr]\nmax_body_bytes = 1000\n[rate_limit]\nper_ip = {{ requests = 1, window_seconds = 60 }}\n[audit]\nenabled = false\n",
            BASE.replace("a.pem", "b.pem").replace("a.key", "b.key")
        ));
        assert_eq!(start_bound_changes(&running, &same), Vec::<String>::new());
    }

    #[test]
    fn the_admin_store_is_start_bound_and_its_check_interval_is_not() {
        let running = parse(BASE);
        let registry = parse(&format!("{BASE}\n[admin]\nstore = \"registry\"\n"));
        assert_eq!(start_bound_changes(&running, &registry), ["admin.store"]);
        let interval = parse(&format!("{BASE}\n[admin]\nstore_check_interval_ms = 1000\n"));
        assert_eq!(start_bound_changes(&running, &interval), Vec::<String>::new());
    }

    #[test]
    fn every_start_bound_key_is_named() {
        let running = parse(BASE);
        let changed = parse(
            "[server]\nthreads = 3\nheader_timeout_ms = 5\ndrain_timeout_seconds = 1\n\
             [listen]\nhttp = [\"127.0.0.1:8081\"]\nadmin = \"127.0.0.1:9999\"\n\
             https = [{ address = \"127.0.0.1:8443\", cert = \"a.pem\", key = \"a.key\", h2 = false }, { address = \"127.0.0.1:9443\", cert = \"a.pem\", key = \"a.key\" }]\n\
             [upstream]\norigins = [\"http://127.0.0.1:3001\"]\nread_timeout_ms = 7\nca_file = \"ca.pem\"\nsni = \"idp\"\nhealth_check = \"http\"\n\
             [log]\nlevel = \"debug\"\nformat = \"json\"\n[audit]\noutput = \"/var/log/a.json\"\n[reload]\nwatch = false\ndebounce_ms = 5\n",
        );
        let keys = start_bound_changes(&running, &changed);
        for k in [
            "server.threads",
            "server.header_timeout_ms",
            "server.drain_timeout_seconds",
            "listen.http",
            "listen.admin",
            "listen.https (addresses)",
            "listen.https[0].h2",
            "upstream.origins",
            "upstream.read_timeout_ms",
            "upstream.ca_file",
            "upstream.sni",
            "upstream.health_check",
            "log.level",
            "log.format",
            "audit.output",
            "reload.watch",
            "reload.debounce_ms",
        ] {
            assert!(keys.iter().any(|x| x == k), "{k} not in {keys:?}");
        }
        assert!(!keys.iter().any(|k| k == "upstream.write_timeout_ms"), "{keys:?}");
    }

    #[test]
    fn every_config_field_is_classified() {
        let names: Vec<String> = fields(&parse(BASE)).into_iter().map(|(n, _)| n).collect();
        assert!(names.len() > 20, "{names:?}");
        for n in &names {
            assert!(
                PER_REQUEST.contains(&n.as_str()) || START_BOUND.iter().any(|(f, _, _)| f == n),
                "Config::{n} is not classified in src/reload/restart.rs: add it to PER_REQUEST when \
                 the gateway reads it from the snapshot, to START_BOUND when it is bound at start"
            );
        }
        for (f, _, _) in START_BOUND {
            assert!(names.iter().any(|n| n == f), "{f} is no Config field any more");
        }
    }

    #[test]
    fn a_changed_start_bound_key_is_checked_like_check_does() {
        let file = parse(
            "[upstream]\norigins = [\"http://no-such-host.invalid:1\"]\n[audit]\noutput = \"/no/such/dir/a.json\"\n",
        );
        let changed = start_bound_changes(&parse(""), &file);
        let problems = check_start_bound(&file, &changed);
        assert!(problems.iter().any(|p| p.contains("upstream.origins[0]")), "{problems:?}");
        assert!(problems.iter().any(|p| p.contains("audit.output")), "{problems:?}");
        // Unchanged keys are not re-checked (the running process already has them).
        assert!(check_start_bound(&file, &[]).is_empty());
    }
}
