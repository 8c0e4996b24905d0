//! What `gateway.toml` says: the serde schema, kept apart from the validated runtime
//! [`Config`](super::Config) so the file format can evolve without touching the request path.
//! Every section denies unknown keys: a typo is an error, never a silently ignored setting.

use serde::Deserialize;

use crate::acl::DefaultAction;
use crate::dcr::Policy;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct File {
    pub server: ServerSection,
    pub listen: ListenSection,
    pub upstream: UpstreamSection,
    pub routes: RoutesSection,
    pub network: NetworkSection,
    pub acl: AclSection,
    pub geoip: GeoipSection,
    pub dcr: Policy,
    pub rate_limit: crate::ratelimit::RateLimitPolicy,
    pub log: LogSection,
    pub audit: AuditSection,
    pub reload: ReloadSection,
    pub admin: AdminSection,
    pub registry: RegistrySection,
    /// `[cimd]`: Client ID Metadata Documents (docs/cimd.md).
    pub cimd: crate::cimd::Settings,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerSection {
    pub threads: usize,
    pub work_stealing: bool,
    pub drain_timeout_seconds: u64,
    pub grace_period_seconds: u64,
    pub graceful_shutdown_timeout_seconds: u64,
    pub pid_file: String,
    pub upgrade_sock: String,
    pub upstream_keepalive_pool_size: usize,
    /// Whole-head deadline: a request head not complete this long after its first byte (or
    /// after the connection opened) is answered 408 and the connection closed.
    pub header_timeout_ms: u64,
    /// Open downstream connections per process; beyond it new connections are closed at
    /// once and counted (`dcr_gateway_connections_refused_total`). 0 = no cap.
    pub max_connections: usize,
    /// How long a kept-alive client connection may wait for its next request.
    pub keepalive_timeout_seconds: u64,
}

impl Default for ServerSection {
    fn default() -> Self {
        ServerSection {
            threads: 2,
            work_stealing: true,
            drain_timeout_seconds: 30,
            grace_period_seconds: 0,
            graceful_shutdown_timeout_seconds: 5,
            pid_file: "/tmp/dcr-gateway.pid".into(),
            upgrade_sock: "/tmp/dcr-gateway-upgrade.sock".into(),
            upstream_keepalive_pool_size: 128,
            header_timeout_ms: 10_000,
            max_connections: 10_000,
            keepalive_timeout_seconds: 60,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ListenSection {
    pub http: Vec<String>,
    pub https: Vec<HttpsListener>,
    pub admin: Option<String>,
}

impl Default for ListenSection {
    fn default() -> Self {
        ListenSection { http: vec!["127.0.0.1:8080".into()], https: Vec::new(), admin: Some("127.0.0.1:9464".into()) }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpsListener {
    pub address: String,
    pub cert: String,
    pub key: String,
    #[serde(default = "yes")]
    pub h2: bool,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UpstreamSection {
    pub origins: Vec<String>,
    pub sni: Option<String>,
    pub ca_file: Option<String>,
    pub verify_cert: bool,
    pub connect_timeout_ms: u64,
    pub read_timeout_ms: u64,
    pub write_timeout_ms: u64,
    pub idle_timeout_ms: u64,
    pub health_check: HealthCheckKind,
    pub health_check_interval_ms: u64,
    pub health_check_path: String,
    /// The IdP profile (`conf/profiles/<name>.toml`): path defaults, members added on the way
    /// in, known answer drops. Explicit keys override it. `"auto"`: the one the IdP's discovery
    /// document resembles, read when the snapshot is built.
    pub profile: String,
    /// The `Host` header the IdP receives; absent: the profile's (`request` unless it says).
    pub host_header: Option<super::profile::UpstreamHost>,
    /// A file holding the IdP's initial access token: sent as `Authorization: Bearer` on every
    /// registration the gateway admitted (brokered registration). Never logged.
    pub registration_token_file: Option<String>,
    /// Static headers on every upstream request, each value read from a file (never logged).
    pub headers: Vec<StaticHeader>,
    /// Send the resolved client IP in this header (replacing any client value).
    pub client_ip_header: Option<String>,
    /// One registration at a time to the IdP (per gateway process); absent: the profile's.
    pub serialize_registrations: Option<bool>,
    /// With serialized registrations: the next one waits this long after the IdP answered the
    /// previous one; absent: the profile's.
    pub serialize_spacing_ms: Option<u64>,
    /// Refuse a registration the IdP registered differently from what the gateway sent (its
    /// answer differs in a verified member not in the profile's known drops): the gateway
    /// sends such registrations itself, reads the whole answer, deletes the client at the IdP
    /// (RFC 7592) and answers 400 `invalid_client_metadata`. Off: differences are counted and
    /// audited only.
    pub refuse_changed_registrations: bool,
}

/// `{ name = "cname-api-key", value_file = "secrets/cname-api-key" }`
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StaticHeader {
    pub name: String,
    pub value_file: String,
}

impl Default for UpstreamSection {
    fn default() -> Self {
        UpstreamSection {
            origins: vec!["http://127.0.0.1:3000".into()],
            sni: None,
            ca_file: None,
            verify_cert: true,
            connect_timeout_ms: 2_000,
            read_timeout_ms: 15_000,
            write_timeout_ms: 15_000,
            idle_timeout_ms: 60_000,
            health_check: HealthCheckKind::Tcp,
            health_check_interval_ms: 2_000,
            health_check_path: "/.well-known/openid-configuration".into(),
            profile: "generic".into(),
            host_header: None,
            registration_token_file: None,
            headers: Vec::new(),
            client_ip_header: None,
            serialize_registrations: None,
            serialize_spacing_ms: None,
            refuse_changed_registrations: false,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HealthCheckKind {
    None,
    Tcp,
    Http,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RoutesSection {
    pub registration_path: String,
    /// Where the IdP serves registration; absent: the profile's.
    pub upstream_registration_path: Option<String>,
    /// Absent: the profile's.
    pub management_prefixes: Option<Vec<String>>,
    /// `scheme://host[:port]` clients use to reach the gateway; absent: the request's own
    /// scheme and host. Used in rewritten discovery documents and registration answers.
    pub public_base_url: Option<String>,
    /// Rewrite discovery documents, `registration_client_uri` and `Location` headers that
    /// point at the IdP so clients stay on the gateway (docs/request-handling.md).
    pub rewrite_discovery: bool,
    /// Origins (besides `[upstream] origins`) that mean the IdP itself, e.g. the URL the IdP
    /// believes it is served at.
    pub idp_origins: Vec<String>,
    /// Answer a successful registration 201 (RFC 7591 §3.2.1) whatever 2xx the IdP used.
    /// Absent: the profile's.
    pub normalize_registration_status: Option<bool>,
}

impl Default for RoutesSection {
    fn default() -> Self {
        RoutesSection {
            registration_path: "/oidc/register".into(),
            upstream_registration_path: None,
            management_prefixes: None,
            public_base_url: None,
            rewrite_discovery: true,
            idp_origins: Vec::new(),
            normalize_registration_status: None,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NetworkSection {
    pub trusted_proxies: Vec<String>,
    pub request_id_header: String,
    pub ja3_header: Option<String>,
    pub ja4_header: Option<String>,
    /// What to do when a TLS client's SNI names another host than the request's host.
    pub sni_host_mismatch: SniHostMismatch,
    /// Client headers removed before forwarding when the peer is not a trusted proxy.
    /// Absent: `core::headers::DEFAULT_UNTRUSTED_HEADERS` plus the JA3/JA4 header names.
    pub strip_untrusted_headers: Option<Vec<String>>,
    /// Send an RFC 7239 `Forwarded` header upstream (built by the gateway; any client value
    /// from an untrusted peer is removed either way).
    pub set_forwarded: bool,
}

impl Default for NetworkSection {
    fn default() -> Self {
        NetworkSection {
            trusted_proxies: Vec::new(),
            request_id_header: "x-request-id".into(),
            ja3_header: None,
            ja4_header: None,
            sni_host_mismatch: SniHostMismatch::Reject,
            strip_untrusted_headers: None,
            set_forwarded: false,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SniHostMismatch {
    /// 421 Misdirected Request (RFC 9110 §15.5.20).
    Reject,
    /// Serve it; the request's host (not the SNI) is the `hostnames` signal and goes upstream.
    Allow,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AclSection {
    pub rules: Option<String>,
    pub default_action: DefaultAction,
    /// `auth0_managed` list name → file of CIDRs (one per line, `#` comments).
    pub managed_lists: std::collections::BTreeMap<String, String>,
    /// What a rule naming a list missing from `managed_lists` does: `fail` or `never_match`.
    pub unknown_managed_lists: crate::acl::UnknownManagedLists,
    /// JSON file of HMAC-SHA256 keys for `http_message_signature` (Auth0's key objects).
    pub signature_keys: Option<String>,
    /// Seconds between two ACL summary log lines (Auth0's `acls_summary`); 0 turns it off.
    pub summary_interval_seconds: u64,
}

impl Default for AclSection {
    fn default() -> Self {
        AclSection {
            rules: None,
            default_action: DefaultAction::Allow,
            managed_lists: Default::default(),
            unknown_managed_lists: Default::default(),
            signature_keys: None,
            summary_interval_seconds: 600,
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GeoipSection {
    pub country_db: Option<String>,
    pub asn_db: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogSection {
    pub level: String,
    pub format: LogFormat,
}

impl Default for LogSection {
    fn default() -> Self {
        LogSection { level: "info".into(), format: LogFormat::Text }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditSection {
    pub enabled: bool,
    /// `"stdout"` or a file path.
    pub output: String,
    pub user_agent_max_chars: usize,
}

impl Default for AuditSection {
    fn default() -> Self {
        AuditSection { enabled: true, output: "stdout".into(), user_agent_max_chars: 200 }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReloadSection {
    pub watch: bool,
    pub debounce_ms: u64,
}

impl Default for ReloadSection {
    fn default() -> Self {
        ReloadSection { watch: true, debounce_ms: 200 }
    }
}

/// `[admin]`: the admin API on the admin listener (`/api/v2/...`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminSection {
    /// Serve `/api/v2/...` on the admin listener; false → 404.
    pub api_enabled: bool,
    /// Admin token file (`[[token]]` entries with SHA-256 hashes and scopes). Absent: no
    /// token is accepted.
    pub tokens_file: Option<String>,
    /// Tenant settings file laid over `[dcr]`, written by `PATCH /api/v2/tenants/settings`.
    pub settings_file: String,
    /// Where the network ACLs and tenant settings live: `files` (`[acl] rules`,
    /// `settings_file`) or `registry` (the `[registry]` store, shared by a fleet on PostgreSQL).
    /// Read at start.
    pub store: AdminStoreKind,
    /// With `store = "registry"`: how often each replica compares the store's versions with
    /// what it runs (the fallback of PostgreSQL's notifications; SQLite's only path).
    pub store_check_interval_ms: u64,
}

impl Default for AdminSection {
    fn default() -> Self {
        AdminSection {
            api_enabled: true,
            tokens_file: None,
            settings_file: "tenant-settings.json".into(),
            store: AdminStoreKind::Files,
            store_check_interval_ms: 5000,
        }
    }
}

/// `[admin] store`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AdminStoreKind {
    Files,
    Registry,
}

/// `[registry]`: every dynamically registered client known, capped, de-duplicated and reaped
/// (docs/registry.md). `backend`, `path`, `url`, `key_file`, `queue_size` and the usage paths
/// are read at start; the caps, windows and `reap` apply on reload.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RegistrySection {
    pub enabled: bool,
    /// `sqlite` (embedded, the default) or `postgres`.
    pub backend: RegistryBackend,
    /// The SQLite file (relative to the configuration's directory).
    pub path: String,
    /// PostgreSQL connection string (`backend = "postgres"`); `sslmode=require` for verified TLS.
    pub url: Option<String>,
    /// A file holding the connection string instead of `url` (a mounted secret: the password
    /// stays out of gateway.toml). Relative to the configuration's directory; read at start.
    pub url_file: Option<String>,
    /// PEM certificates that verify the PostgreSQL server's (with `sslmode=require`), instead of
    /// the system's roots (default). Relative to the configuration's directory.
    pub ca_file: Option<String>,
    /// Keys that seal registration_access_tokens at rest: `<key-id>:<base64 of 32 bytes>` per line.
    pub key_file: Option<String>,
    /// Live dynamically registered clients in all; 0 = no cap.
    pub max_clients: u64,
    /// Live clients per `software_id` (else per normalized client name); 0 = no cap.
    pub max_per_software: u64,
    /// Registrations per registrant prefix within `prefix_window`; 0 = no cap.
    pub max_per_prefix: u64,
    pub prefix_window: String,
    pub prefix_v4: u8,
    pub prefix_v6: u8,
    /// Identical public registrations from one prefix within this window get the existing
    /// client; "0s" = off.
    pub dedupe_window: String,
    /// A client never used this long after creation is `unused`; "0s" = never.
    pub unused_grace: String,
    /// A client not used for this long is `idle`; "0s" = never.
    pub idle_after: String,
    pub reap: ReapMode,
    pub reap_interval: String,
    /// RFC 7592 deletions per minute at most.
    pub reap_max_per_minute: u32,
    /// Registrations waiting to be written, at most.
    pub queue_size: usize,
    pub flush_interval_ms: u64,
    /// Paths whose query carries `client_id` (authorization endpoint). Empty: from the IdP's
    /// discovery document.
    pub authorize_paths: Vec<String>,
    /// Paths whose form body or HTTP Basic carries `client_id` (token, PAR, revocation).
    /// Empty: from the IdP's discovery document.
    pub token_paths: Vec<String>,
}

impl Default for RegistrySection {
    fn default() -> Self {
        RegistrySection {
            enabled: false,
            backend: RegistryBackend::Sqlite,
            path: "registry.db".into(),
            url: None,
            url_file: None,
            ca_file: None,
            key_file: None,
            max_clients: 0,
            max_per_software: 0,
            max_per_prefix: 0,
            prefix_window: "1h".into(),
            prefix_v4: 24,
            prefix_v6: 48,
            dedupe_window: "1h".into(),
            unused_grace: "7d".into(),
            idle_after: "90d".into(),
            reap: ReapMode::Off,
            reap_interval: "1h".into(),
            reap_max_per_minute: 30,
            queue_size: 10_000,
            flush_interval_ms: 1000,
            authorize_paths: Vec::new(),
            token_paths: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RegistryBackend {
    Sqlite,
    Postgres,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReapMode {
    Off,
    Report,
    Delete,
}

/// An error and its causes, `outer: inner: …` (the PostgreSQL driver says "invalid connection
/// string" and keeps which option in the cause).
pub fn error_with_causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        // A wrapper often prints its cause already (TLS errors do, two levels deep).
        let said = c.to_string();
        if !text.contains(&said) {
            text.push_str(&format!(": {said}"));
        }
        cause = c.source();
    }
    text
}

impl RegistrySection {
    /// The PostgreSQL connection string: `url`, or the content of `url_file` (trimmed). Errors
    /// name the key and the file, never the content.
    pub fn postgres_url(&self) -> Result<String, String> {
        match (&self.url, &self.url_file) {
            (Some(url), _) => Ok(url.clone()),
            (None, Some(file)) => {
                let text = std::fs::read_to_string(file).map_err(|e| format!("registry.url_file: {file}: {e}"))?;
                let url = text.trim();
                if url.is_empty() {
                    return Err(format!("registry.url_file: {file}: empty"));
                }
                Self::postgres_tls(url, self.ca_file.as_deref())
                    .map_err(|(key, message)| format!("{key} (from registry.url_file {file}): {message}"))?;
                Ok(url.to_string())
            }
            (None, None) => Err("registry.url: required with backend = \"postgres\" (or registry.url_file)".into()),
        }
    }

    /// Whether the PostgreSQL connection string asks for TLS (`sslmode=require`), by key: a
    /// string the driver cannot read (its message names the option, never a value such as the
    /// password), or a `ca_file` with a URL that does not ask for TLS (refused rather than
    /// ignored: whoever names a CA expects the server to be checked against it).
    pub fn postgres_tls(url: &str, ca_file: Option<&str>) -> Result<bool, (&'static str, String)> {
        let config: postgres::Config = url.parse().map_err(|e| ("registry.url", error_with_causes(&e)))?;
        let tls = config.get_ssl_mode() == postgres::config::SslMode::Require;
        if ca_file.is_some() && !tls {
            return Err(("registry.ca_file", "set, but registry.url does not ask for TLS: add sslmode=require".into()));
        }
        Ok(tls)
    }

    /// A duration key in seconds (validated by [`RegistrySection::problems`]; 0 if unreadable).
    pub fn seconds(text: &str) -> i64 {
        humantime::parse_duration(text.trim()).map(|d| d.as_secs().min(i64::MAX as u64) as i64).unwrap_or(0)
    }

    /// What is wrong with the section, by key.
    pub fn problems(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        for (key, v) in [
            ("registry.prefix_window", &self.prefix_window),
            ("registry.dedupe_window", &self.dedupe_window),
            ("registry.unused_grace", &self.unused_grace),
            ("registry.idle_after", &self.idle_after),
            ("registry.reap_interval", &self.reap_interval),
        ] {
            if let Err(e) = humantime::parse_duration(v.trim()) {
                out.push((key, format!("{v:?}: {e} (e.g. \"90d\", \"12h\", \"0s\")")));
            }
        }
        if self.prefix_v4 > 32 {
            out.push(("registry.prefix_v4", "at most 32".into()));
        }
        if self.prefix_v6 > 128 {
            out.push(("registry.prefix_v6", "at most 128".into()));
        }
        for p in self.authorize_paths.iter().chain(&self.token_paths) {
            if !p.starts_with('/') {
                let key =
                    if self.authorize_paths.contains(p) { "registry.authorize_paths" } else { "registry.token_paths" };
                out.push((key, format!("{p:?}: a path starts with /")));
            }
        }
        // The connection keys matter to whoever opens the store: the registry, or the admin
        // documents with `[admin] store = "registry"` while the registry itself is off.
        if self.url.is_some() && self.url_file.is_some() {
            out.push(("registry.url_file", "set together with registry.url: keep one".into()));
        } else if let (RegistryBackend::Postgres, Some(url)) = (self.backend, self.url.as_deref()) {
            if let Err(problem) = Self::postgres_tls(url, self.ca_file.as_deref()) {
                out.push(problem);
            }
        }
        if !self.enabled {
            return out;
        }
        let blank = |v: &Option<String>| v.as_deref().is_none_or(|u| u.trim().is_empty());
        if self.backend == RegistryBackend::Postgres && blank(&self.url) && blank(&self.url_file) {
            out.push(("registry.url", "required with backend = \"postgres\" (or registry.url_file)".into()));
        }
        if self.backend == RegistryBackend::Sqlite && self.path.trim().is_empty() {
            out.push(("registry.path", "empty path".into()));
        }
        if self.key_file.as_deref().is_none_or(|k| k.trim().is_empty()) {
            out.push(("registry.key_file", "required: registration_access_tokens are sealed at rest".into()));
        }
        if self.queue_size == 0 {
            out.push(("registry.queue_size", "at least 1".into()));
        }
        if self.reap_max_per_minute == 0 {
            out.push(("registry.reap_max_per_minute", "at least 1".into()));
        }
        if self.reap != ReapMode::Off && Self::seconds(&self.reap_interval) == 0 {
            out.push(("registry.reap_interval", "must be more than 0s when reap is on".into()));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::RegistrySection;

    #[test]
    fn postgres_tls_is_asked_for_by_sslmode_require_and_errors_never_quote_the_url() {
        let tls = |url: &str, ca: Option<&str>| RegistrySection::postgres_tls(url, ca);
        assert_eq!(tls("host=db user=gw sslmode=require", None), Ok(true));
        assert_eq!(tls("postgres://gw:pw@db/registry?sslmode=require", Some("ca.pem")), Ok(true));
        assert_eq!(tls("host=db user=gw", None), Ok(false));
        assert_eq!(tls("host=db sslmode=disable", None), Ok(false));
        let (key, msg) = tls("host=db sslmode=prefer", Some("ca.pem")).unwrap_err();
        assert_eq!(key, "registry.ca_file");
        assert!(msg.contains("sslmode=require"), "{msg}");
        let (key, msg) = tls("postgres://gw:s3cret-pw@db/registry?sslmode=verify-everything", None).unwrap_err();
        assert_eq!(key, "registry.url");
        assert!(msg.contains("sslmode") && !msg.contains("s3cret-pw"), "{msg}");
        let (_, msg) = tls("host=db password=s3cret-pw port=notaport", None).unwrap_err();
        assert!(msg.contains("port") && !msg.contains("s3cret-pw"), "{msg}");
    }

    #[test]
    fn the_connection_string_comes_from_url_or_url_file_never_quoted() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pg-url");
        let section = |url: Option<&str>, url_file: Option<&std::path::Path>| RegistrySection {
            enabled: true,
            backend: super::RegistryBackend::Postgres,
            key_file: Some("k".into()),
            url: url.map(str::to_string),
            url_file: url_file.map(|p| p.display().to_string()),
            ..Default::default()
        };
        // A mounted secret ends with a newline.
        std::fs::write(&file, "host=db user=gw password=s3cret-pw sslmode=require\n").unwrap();
        let s = section(None, Some(&file));
        assert!(s.problems().is_empty(), "{:?}", s.problems());
        assert_eq!(s.postgres_url().unwrap(), "host=db user=gw password=s3cret-pw sslmode=require");
        assert_eq!(section(Some("host=db"), None).postgres_url().unwrap(), "host=db");
        let both = section(Some("host=db"), Some(&file)).problems();
        assert_eq!(both.iter().map(|p| p.0).collect::<Vec<_>>(), ["registry.url_file"], "{both:?}");
        let neither = section(None, None).problems();
        assert_eq!(neither.iter().map(|p| p.0).collect::<Vec<_>>(), ["registry.url"], "{neither:?}");
        std::fs::write(&file, "host=db password=s3cret-pw sslmode=sometimes").unwrap();
        let e = section(None, Some(&file)).postgres_url().unwrap_err();
        assert!(e.contains("registry.url_file") && e.contains("sslmode") && !e.contains("s3cret-pw"), "{e}");
        std::fs::write(&file, "\n").unwrap();
        assert!(section(None, Some(&file)).postgres_url().unwrap_err().ends_with("empty"));
        let missing = dir.path().join("absent");
        let e = section(None, Some(&missing)).postgres_url().unwrap_err();
        assert!(e.starts_with("registry.url_file: ") && e.contains("absent"), "{e}");
    }
}
