//! `gateway.toml` → validated [`Config`]. Pure: the caller reads the file; paths are
//! resolved against the config file's directory but never opened here.

mod field_error;
pub mod profile;
pub mod schema;
pub mod toml_errors;

pub use field_error::FieldError;

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;

use crate::acl::DefaultAction;
use crate::dcr::Policy;
use crate::routes::Router;
use crate::signals::TrustedProxies;
pub use schema::{HealthCheckKind, LogFormat};

/// A problem with the configuration, pointing at the file and the key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: String,
    pub key: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            write!(f, "{}: {}", self.file, self.message)
        } else {
            write!(f, "{}: {}: {}", self.file, self.key, self.message)
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

#[derive(Debug, Clone)]
pub struct TlsListener {
    pub address: SocketAddr,
    pub cert: PathBuf,
    pub key: PathBuf,
    pub h2: bool,
}

/// One upstream origin as written in the config (`https://idp.example.com:8443`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub tls: bool,
    pub host: String,
    pub port: u16,
}

impl Origin {
    /// `host:port` for the resolver.
    pub fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

#[derive(Debug, Clone)]
pub struct Upstream {
    pub origins: Vec<Origin>,
    /// SNI and `Host` for TLS origins; default: each origin's host.
    pub sni: Option<String>,
    pub ca_file: Option<PathBuf>,
    pub verify_cert: bool,
    pub connect_timeout: Duration,
    pub read_timeout: Duration,
    pub write_timeout: Duration,
    pub idle_timeout: Duration,
    pub health_check: HealthCheckKind,
    pub health_check_interval: Duration,
    pub health_check_path: String,
}

/// `[admin]`, validated: the admin API switch and its files (resolved paths).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Admin {
    pub api_enabled: bool,
    pub tokens_file: Option<PathBuf>,
    /// Laid over `[dcr]` by the snapshot; absent file = no overrides.
    pub settings_file: PathBuf,
    /// `[admin] store_check_interval_ms`: the periodic version check of `store = "registry"`.
    pub store_check_interval: Duration,
}

/// `[routes]` with the profile's values filled in where the file says nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Routes {
    pub registration_path: String,
    pub upstream_registration_path: String,
    pub management_prefixes: Vec<String>,
    pub public_base_url: Option<String>,
    pub rewrite_discovery: bool,
    pub idp_origins: Vec<String>,
    pub normalize_registration_status: bool,
}

/// What the gateway does for this IdP (`[upstream] profile` and the keys that talk to the IdP
/// rather than connect to it). Per request: a reload applies it. Secret values are read by the
/// snapshot (`state::snapshot`), never here.
#[derive(Debug, Clone, PartialEq)]
pub struct Idp {
    pub profile: String,
    /// `[upstream] profile = "auto"`: `profile` is the one detected from the IdP's discovery
    /// document when the snapshot was built (else "generic").
    pub profile_auto: bool,
    /// Members added to forwarded registrations (`core::verify::derive`).
    pub derive: Vec<profile::Derive>,
    /// Registration members the IdP is known to leave out of its answer.
    pub known_drops: Vec<String>,
    /// `Host` sent upstream: `None` = the request's host, else this value.
    pub host_header: Option<String>,
    pub registration_token_file: Option<PathBuf>,
    /// Static upstream headers: name and the file holding the value.
    pub headers: Vec<(http::HeaderName, PathBuf)>,
    pub client_ip_header: Option<http::HeaderName>,
    /// Forward one registration at a time (per process): `[upstream] serialize_registrations`,
    /// else the profile's `[registration] serialize`.
    pub serialize_registrations: bool,
    /// With it: the next registration waits this long after the IdP answered the previous one.
    pub serialize_spacing: Duration,
    /// `[upstream] refuse_changed_registrations`: the gateway sends registrations itself and
    /// undoes (RFC 7592 DELETE) and refuses those the IdP changed (`proxy::verified`).
    pub refuse_changed_registrations: bool,
}

/// The secret values the snapshot read for [`Idp`]: marked sensitive, and `Debug` prints
/// only the header names.
#[derive(Clone, Default)]
pub struct UpstreamSecrets {
    /// `Bearer <token>` from `[upstream] registration_token_file`.
    pub registration_authorization: Option<http::HeaderValue>,
    pub headers: Vec<(http::HeaderName, http::HeaderValue)>,
}

impl fmt::Debug for UpstreamSecrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UpstreamSecrets")
            .field("registration_authorization", &self.registration_authorization.as_ref().map(|_| "<secret>"))
            .field("headers", &self.headers.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>())
            .finish()
    }
}

impl UpstreamSecrets {
    /// A secret file's content as a header value: surrounding whitespace trimmed, non-empty,
    /// visible ASCII. The message never quotes the content.
    pub fn value(bytes: &[u8], prefix: &str) -> Result<http::HeaderValue, &'static str> {
        let text = std::str::from_utf8(bytes).map_err(|_| "not UTF-8")?.trim();
        if text.is_empty() {
            return Err("empty");
        }
        if !text.bytes().all(|b| b.is_ascii_graphic() || b == b' ') {
            return Err("holds characters a header value cannot carry (one line of visible ASCII)");
        }
        let mut v = http::HeaderValue::from_str(&format!("{prefix}{text}")).map_err(|_| "not a header value")?;
        v.set_sensitive(true);
        Ok(v)
    }
}

#[derive(Debug, Clone)]
pub enum AuditOutput {
    Stdout,
    File(PathBuf),
}

#[derive(Debug, Clone)]
pub struct Config {
    /// The file this was read from (for messages and reload).
    pub path: PathBuf,
    pub server: schema::ServerSection,
    pub http_listeners: Vec<SocketAddr>,
    pub https_listeners: Vec<TlsListener>,
    pub admin_listener: Option<SocketAddr>,
    pub upstream: Upstream,
    pub router: Router,
    pub routes: Routes,
    pub idp: Idp,
    pub trusted_proxies: TrustedProxies,
    pub request_id_header: String,
    pub ja3_header: Option<String>,
    pub ja4_header: Option<String>,
    pub sni_host_mismatch: schema::SniHostMismatch,
    /// The IdP's origins (upstream origins + `[routes] idp_origins`) for response rewriting.
    pub idp_origins: Vec<crate::core::discovery::Origin>,
    /// `[routes] public_base_url`, without a trailing slash.
    pub public_base_url: Option<String>,
    /// Header names removed from requests of untrusted peers (lower case).
    pub strip_untrusted_headers: Vec<http::HeaderName>,
    pub set_forwarded: bool,
    pub rules_file: Option<PathBuf>,
    pub default_action: DefaultAction,
    /// `[acl.managed_lists]`: `auth0_managed` name → list file.
    pub acl_managed_lists: Vec<(String, PathBuf)>,
    pub acl_unknown_managed_lists: crate::acl::UnknownManagedLists,
    /// `[acl] signature_keys`.
    pub acl_signature_keys: Option<PathBuf>,
    /// `[acl] summary_interval_seconds` (0: no summary).
    pub acl_summary_interval_seconds: u64,
    pub country_db: Option<PathBuf>,
    pub asn_db: Option<PathBuf>,
    pub dcr: Policy,
    pub rate_limit: crate::ratelimit::RateLimitPolicy,
    pub log: schema::LogSection,
    pub audit_enabled: bool,
    pub audit_output: AuditOutput,
    pub audit_user_agent_max_chars: usize,
    pub watch: bool,
    pub reload_debounce: Duration,
    pub admin: Admin,
    /// `[admin] store`: where network ACLs and tenant settings live (start-bound).
    pub admin_store: schema::AdminStoreKind,
    /// `[registry]` with `path` and `key_file` resolved against the configuration's directory.
    pub registry: schema::RegistrySection,
    /// `[cimd]` with `ca_file` resolved against the configuration's directory.
    pub cimd: crate::cimd::Settings,
}

/// Largest body Pingora can buffer for re-sending (its retry buffer); we replace the body
/// from that buffer, so a larger limit could never be honoured.
pub const MAX_BODY_LIMIT: usize = 64 * 1024;

/// A path written in a configuration file whose directory is `base`: absolute as written, else
/// relative to `base` (every path key resolves this way; paths in settings read later, such as
/// `[dcr] software_statement_issuers[].jwks_file`, through [`Config::resolve`]).
pub fn resolve_against(base: &Path, p: &str) -> PathBuf {
    let p = Path::new(p);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    }
}

impl Config {
    /// `p` as a path key of this configuration file resolves ([`resolve_against`] its directory).
    pub fn resolve(&self, p: &str) -> PathBuf {
        resolve_against(self.path.parent().unwrap_or(Path::new("")), p)
    }
}

/// `[upstream] profile = "auto"`: the profile is the one the IdP's discovery document looks like.
pub const AUTO_PROFILE: &str = "auto";

/// Parse and validate `text`, the content of the config file at `path`.
pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigErrors> {
    parse_detected(text, path, None)
}

/// [`parse`] with `[upstream] profile = "auto"` resolved to `detected` (the embedded profile
/// the IdP's discovery document looks like, `state::idp_probe::detect_profile`); without one,
/// "auto" reads as "generic".
pub fn parse_detected(text: &str, path: &Path, detected: Option<&str>) -> Result<Config, ConfigErrors> {
    match parse_all_detected(text, path, detected) {
        (Some(config), errors) if errors.is_empty() => Ok(config),
        (_, errors) => Err(ConfigErrors(errors)),
    }
}

/// Every problem of the file in one run — unknown keys (typos), wrong types and invalid values
/// alike — and, unless the file is not TOML, the configuration read from what remains (the
/// offending keys at their defaults), so `check` can go on to the files it names.
pub fn parse_all(text: &str, path: &Path) -> (Option<Config>, Vec<ConfigError>) {
    parse_all_detected(text, path, None)
}

/// [`parse_all`] with `profile = "auto"` resolved to `detected`.
pub fn parse_all_detected(text: &str, path: &Path, detected: Option<&str>) -> (Option<Config>, Vec<ConfigError>) {
    let file_name = path.display().to_string();
    let (raw, problems) = toml_errors::deserialize_all::<schema::File>(text);
    let mut errors: Vec<ConfigError> = problems
        .into_iter()
        .map(|p| ConfigError {
            file: match p.line {
                Some(l) => format!("{file_name}:{l}"),
                None => file_name.clone(),
            },
            key: p.key,
            message: p.message,
        })
        .collect();
    let Some(raw) = raw else { return (None, errors) };
    let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
    let detected = detected.map(str::to_string);
    let (config, more) = Validator { file: file_name, base, errors: Vec::new(), detected }.finish(raw, path);
    errors.extend(more.into_iter().map(|mut e| {
        if let Some(l) = toml_errors::line_of_key(text, &e.key) {
            e.file = format!("{}:{l}", e.file);
        }
        e
    }));
    (Some(config), errors)
}

struct Validator {
    file: String,
    base: PathBuf,
    errors: Vec<ConfigError>,
    /// What `profile = "auto"` stands for (detected from the IdP's discovery document).
    detected: Option<String>,
}

impl Validator {
    fn err(&mut self, key: impl Into<String>, message: impl Into<String>) {
        self.errors.push(ConfigError { file: self.file.clone(), key: key.into(), message: message.into() });
    }

    fn resolve(&self, p: &str) -> PathBuf {
        resolve_against(&self.base, p)
    }

    fn socket_addr(&mut self, key: &str, s: &str) -> Option<SocketAddr> {
        match s.parse::<SocketAddr>() {
            Ok(a) => Some(a),
            Err(_) => {
                self.err(key, format!("invalid listen address {s:?} (expected IP:PORT, e.g. 127.0.0.1:8080)"));
                None
            }
        }
    }

    fn path_key(&mut self, key: &str, s: &str) -> Option<PathBuf> {
        if s.trim().is_empty() {
            self.err(key, "empty path");
            None
        } else {
            Some(self.resolve(s))
        }
    }

    fn finish(mut self, raw: schema::File, path: &Path) -> (Config, Vec<ConfigError>) {
        if raw.server.threads == 0 {
            self.err("server.threads", "must be at least 1");
        }

        let mut http_listeners = Vec::new();
        for (i, a) in raw.listen.http.iter().enumerate() {
            if let Some(a) = self.socket_addr(&format!("listen.http[{i}]"), a) {
                http_listeners.push(a);
            }
        }
        let mut https_listeners = Vec::new();
        for (i, l) in raw.listen.https.iter().enumerate() {
            let addr = self.socket_addr(&format!("listen.https[{i}].address"), &l.address);
            let cert = self.path_key(&format!("listen.https[{i}].cert"), &l.cert);
            let key = self.path_key(&format!("listen.https[{i}].key"), &l.key);
            if let (Some(address), Some(cert), Some(key)) = (addr, cert, key) {
                https_listeners.push(TlsListener { address, cert, key, h2: l.h2 });
            }
        }
        if http_listeners.is_empty() && https_listeners.is_empty() {
            self.err("listen", "no public listener: set listen.http or listen.https");
        }
        let admin_listener = match raw.listen.admin.as_deref() {
            None | Some("") => None,
            Some(a) => self.socket_addr("listen.admin", a),
        };

        let upstream = self.upstream(&raw.upstream);

        let (routes, idp) = self.profile(&raw);
        for (key, p) in [
            ("routes.registration_path", &routes.registration_path),
            ("routes.upstream_registration_path", &routes.upstream_registration_path),
        ] {
            if !p.starts_with('/') || p.contains('?') || p.contains('#') {
                self.err(key, format!("{p:?} must be an absolute path starting with '/' without query"));
            } else if crate::routes::canonical_path(p) == "/" {
                self.err(key, "must not be '/'");
            }
        }
        for (i, p) in routes.management_prefixes.iter().enumerate() {
            if !p.starts_with('/') {
                self.err(format!("routes.management_prefixes[{i}]"), format!("{p:?} must start with '/'"));
            } else if crate::routes::canonical_path(p) == "/" {
                self.err(
                    format!("routes.management_prefixes[{i}]"),
                    "must not be '/' (that would make every request management)",
                );
            }
        }
        let mut idp_origins = Vec::new();
        for o in &upstream.origins {
            let scheme = if o.tls { "https" } else { "http" };
            if let Some(origin) = crate::core::discovery::Origin::of(&format!("{scheme}://{}", o.authority())) {
                idp_origins.push(origin);
            }
        }
        for (i, u) in routes.idp_origins.iter().enumerate() {
            if let Some(hint) = missing_scheme(u) {
                self.err(format!("routes.idp_origins[{i}]"), hint);
                continue;
            }
            match crate::core::discovery::Origin::of(u) {
                Some(o) => idp_origins.push(o),
                None => self.err(
                    format!("routes.idp_origins[{i}]"),
                    format!("{u:?} is not an http(s) origin (write https://idp.example:8443)"),
                ),
            }
        }
        let public_base_url = match routes.public_base_url.as_deref() {
            None => None,
            Some(u) if missing_scheme(u).is_some() => {
                self.err("routes.public_base_url", missing_scheme(u).unwrap_or_default());
                None
            }
            Some(u) => match url::Url::parse(u) {
                Ok(p)
                    if matches!(p.scheme(), "http" | "https")
                        && p.host_str().is_some()
                        && p.query().is_none()
                        && p.fragment().is_none() =>
                {
                    Some(u.trim_end_matches('/').to_string())
                }
                _ => {
                    self.err(
                        "routes.public_base_url",
                        format!("{u:?} must be an absolute http(s) URL like https://auth.example.com"),
                    );
                    None
                }
            },
        };
        let router =
            Router::new(&routes.registration_path, &routes.upstream_registration_path, &routes.management_prefixes);

        let mut nets: Vec<IpNet> = Vec::new();
        for (i, s) in raw.network.trusted_proxies.iter().enumerate() {
            match parse_net(s) {
                Some(n) => nets.push(n),
                None => self.err(format!("network.trusted_proxies[{i}]"), format!("invalid CIDR or address {s:?}")),
            }
        }
        for (key, h) in [
            ("network.request_id_header", Some(&raw.network.request_id_header)),
            ("network.ja3_header", raw.network.ja3_header.as_ref()),
            ("network.ja4_header", raw.network.ja4_header.as_ref()),
        ] {
            if let Some(h) = h {
                if http::HeaderName::from_bytes(h.as_bytes()).is_err() {
                    self.err(key, format!("{h:?} is not a valid header name"));
                }
            }
        }

        let mut strip_untrusted_headers = Vec::new();
        let strip_names: Vec<String> = match &raw.network.strip_untrusted_headers {
            Some(list) => list.clone(),
            None => crate::core::headers::DEFAULT_UNTRUSTED_HEADERS
                .iter()
                .map(|s| s.to_string())
                .chain(raw.network.ja3_header.clone())
                .chain(raw.network.ja4_header.clone())
                .collect(),
        };
        for (i, h) in strip_names.iter().enumerate() {
            match http::HeaderName::from_bytes(h.trim().to_ascii_lowercase().as_bytes()) {
                Ok(n) => strip_untrusted_headers.push(n),
                Err(_) => self
                    .err(format!("network.strip_untrusted_headers[{i}]"), format!("{h:?} is not a valid header name")),
            }
        }
        if raw.server.header_timeout_ms == 0 {
            self.err("server.header_timeout_ms", "must be at least 1");
        }

        let rules_file = raw.acl.rules.as_deref().and_then(|p| self.path_key("acl.rules", p));
        let acl_managed_lists: Vec<(String, PathBuf)> = raw
            .acl
            .managed_lists
            .iter()
            .filter_map(|(name, p)| Some((name.clone(), self.path_key(&format!("acl.managed_lists.{name:?}"), p)?)))
            .collect();
        let acl_signature_keys = raw.acl.signature_keys.as_deref().and_then(|p| self.path_key("acl.signature_keys", p));
        let country_db = raw.geoip.country_db.as_deref().and_then(|p| self.path_key("geoip.country_db", p));
        let asn_db = raw.geoip.asn_db.as_deref().and_then(|p| self.path_key("geoip.asn_db", p));

        if let Err(errs) = raw.dcr.check() {
            for e in errs {
                self.err(format!("dcr.{}", e.key), e.message);
            }
        }
        if raw.dcr.max_body_bytes == 0 || raw.dcr.max_body_bytes > MAX_BODY_LIMIT {
            self.err("dcr.max_body_bytes", format!("must be between 1 and {MAX_BODY_LIMIT}"));
        }
        for (key, msg) in raw.rate_limit.validate() {
            self.err(key, msg);
        }
        if raw.dcr.body_read_timeout_ms == 0 {
            self.err("dcr.body_read_timeout_ms", "must be at least 1");
        }

        if tracing_subscriber::EnvFilter::try_new(&raw.log.level).is_err() {
            self.err("log.level", format!("invalid level or filter {:?}", raw.log.level));
        }
        let audit_output = match raw.audit.output.as_str() {
            "stdout" | "-" => AuditOutput::Stdout,
            "" => {
                self.err("audit.output", "empty: use \"stdout\" or a file path");
                AuditOutput::Stdout
            }
            p => AuditOutput::File(self.resolve(p)),
        };

        let admin = Admin {
            api_enabled: raw.admin.api_enabled,
            tokens_file: raw.admin.tokens_file.as_deref().and_then(|p| self.path_key("admin.tokens_file", p)),
            settings_file: self.path_key("admin.settings_file", &raw.admin.settings_file).unwrap_or_default(),
            store_check_interval: Duration::from_millis(raw.admin.store_check_interval_ms),
        };
        if raw.admin.store_check_interval_ms < 100 {
            self.err("admin.store_check_interval_ms", "at least 100");
        }
        if raw.admin.store == schema::AdminStoreKind::Registry {
            // The store is the [registry] one, opened for the admin documents even when the
            // client registry itself is off.
            let r = &raw.registry;
            let blank = |v: &Option<String>| v.as_deref().is_none_or(|u| u.trim().is_empty());
            if r.backend == schema::RegistryBackend::Postgres && blank(&r.url) && blank(&r.url_file) {
                self.err("admin.store", "\"registry\" needs [registry] url or url_file (backend = \"postgres\")");
            }
            if r.backend == schema::RegistryBackend::Sqlite && r.path.trim().is_empty() {
                self.err("admin.store", "\"registry\" needs [registry] path (backend = \"sqlite\")");
            }
        }

        let mut registry = raw.registry.clone();
        for (key, message) in registry.problems() {
            self.err(key, message);
        }
        registry.path = self.resolve(&registry.path).display().to_string();
        registry.key_file = registry.key_file.as_deref().map(|k| self.resolve(k).display().to_string());
        registry.ca_file = registry.ca_file.as_deref().map(|k| self.resolve(k).display().to_string());
        registry.url_file = registry.url_file.as_deref().map(|k| self.resolve(k).display().to_string());
        let mut cimd = raw.cimd.clone();
        for (key, message) in cimd.problems() {
            self.err(&key, message);
        }
        cimd.ca_file = cimd.ca_file.as_deref().map(|k| self.resolve(k).display().to_string());
        if cimd.mode == crate::cimd::Mode::Bridge && !registry.enabled {
            self.err(
                "cimd.mode",
                "\"bridge\" keeps each document's IdP client in the client registry: it needs [registry] enabled = true",
            );
        }

        let errors = std::mem::take(&mut self.errors);
        let config = Config {
            path: path.to_path_buf(),
            server: raw.server,
            http_listeners,
            https_listeners,
            admin_listener,
            upstream,
            router,
            routes,
            idp,
            trusted_proxies: TrustedProxies::new(&nets),
            request_id_header: raw.network.request_id_header.to_ascii_lowercase(),
            ja3_header: raw.network.ja3_header.map(|h| h.to_ascii_lowercase()),
            ja4_header: raw.network.ja4_header.map(|h| h.to_ascii_lowercase()),
            sni_host_mismatch: raw.network.sni_host_mismatch,
            idp_origins,
            public_base_url,
            strip_untrusted_headers,
            set_forwarded: raw.network.set_forwarded,
            rules_file,
            default_action: raw.acl.default_action,
            acl_managed_lists,
            acl_unknown_managed_lists: raw.acl.unknown_managed_lists,
            acl_signature_keys,
            acl_summary_interval_seconds: raw.acl.summary_interval_seconds,
            country_db,
            asn_db,
            dcr: raw.dcr,
            rate_limit: raw.rate_limit,
            log: raw.log,
            audit_enabled: raw.audit.enabled,
            audit_output,
            audit_user_agent_max_chars: raw.audit.user_agent_max_chars,
            watch: raw.reload.watch,
            reload_debounce: Duration::from_millis(raw.reload.debounce_ms),
            admin,
            admin_store: raw.admin.store,
            registry,
            cimd,
        };
        (config, errors)
    }

    /// `[routes]` and `[upstream]` laid over the chosen profile, laid over `generic`.
    fn profile(&mut self, raw: &schema::File) -> (Routes, Idp) {
        let generic = profile::load("generic").expect("the generic profile is embedded");
        let auto = raw.upstream.profile == AUTO_PROFILE;
        let name = match (&self.detected, auto) {
            (Some(d), true) => d.clone(),
            (None, true) => "generic".to_string(),
            (_, false) => raw.upstream.profile.clone(),
        };
        let chosen = match profile::load(&name) {
            Ok(p) => p,
            Err(e) => {
                self.err("upstream.profile", e);
                generic.clone()
            }
        };
        let r = &raw.routes;
        let pick = |f: fn(&profile::Profile) -> Option<String>| f(&chosen).or_else(|| f(&generic)).unwrap_or_default();
        let upstream_registration_path = match &r.upstream_registration_path {
            Some(p) => p.clone(),
            None => {
                let p = pick(|p| p.routes.upstream_registration_path.clone());
                if p.contains('{') {
                    self.err(
                        "routes.upstream_registration_path",
                        format!("required with profile {:?} (its path is {p:?}: name yours)", chosen.name),
                    );
                }
                p
            }
        };
        let routes = Routes {
            registration_path: r.registration_path.clone(),
            upstream_registration_path,
            management_prefixes: r.management_prefixes.clone().unwrap_or_else(|| {
                chosen
                    .routes
                    .management_prefixes
                    .clone()
                    .or_else(|| generic.routes.management_prefixes.clone())
                    .unwrap_or_default()
            }),
            public_base_url: r.public_base_url.clone(),
            rewrite_discovery: r.rewrite_discovery,
            idp_origins: r.idp_origins.clone(),
            normalize_registration_status: r
                .normalize_registration_status
                .or(chosen.routes.normalize_registration_status)
                .or(generic.routes.normalize_registration_status)
                .unwrap_or(true),
        };
        let u = &raw.upstream;
        let host = u.host_header.or(chosen.upstream.host_header).unwrap_or_default();
        let host_header = match host {
            profile::UpstreamHost::Request => None,
            profile::UpstreamHost::Origin => {
                let first = u.origins.first().and_then(|o| url::Url::parse(o).ok());
                match (u.sni.clone().filter(|s| !s.is_empty()), first) {
                    (Some(sni), _) => Some(sni),
                    (None, Some(url)) => url.host_str().map(|h| match url.port() {
                        Some(p) => format!("{h}:{p}"),
                        None => h.to_string(),
                    }),
                    (None, None) => None,
                }
            }
        };
        if host == profile::UpstreamHost::Origin && u.origins.len() > 1 && u.sni.is_none() {
            self.err("upstream.host_header", "\"origin\" with several origins needs upstream.sni (the one Host)");
        }
        let mut headers = Vec::new();
        for (i, h) in u.headers.iter().enumerate() {
            let key = format!("upstream.headers[{i}]");
            match http::HeaderName::from_bytes(h.name.trim().to_ascii_lowercase().as_bytes()) {
                Ok(n) if is_hop_or_framing(&n) => {
                    self.err(&key, format!("{:?} is set by the gateway itself", h.name));
                }
                Ok(n) => {
                    if let Some(p) = self.path_key(&format!("{key}.value_file"), &h.value_file) {
                        headers.push((n, p));
                    }
                }
                Err(_) => self.err(&key, format!("{:?} is not a valid header name", h.name)),
            }
        }
        let client_ip_header = match u.client_ip_header.as_deref() {
            None | Some("") => None,
            Some(h) => match http::HeaderName::from_bytes(h.trim().to_ascii_lowercase().as_bytes()) {
                Ok(n) if is_hop_or_framing(&n) => {
                    self.err("upstream.client_ip_header", format!("{h:?} is set by the gateway itself"));
                    None
                }
                Ok(n) => Some(n),
                Err(_) => {
                    self.err("upstream.client_ip_header", format!("{h:?} is not a valid header name"));
                    None
                }
            },
        };
        let registration_token_file =
            u.registration_token_file.as_deref().and_then(|p| self.path_key("upstream.registration_token_file", p));
        let idp = Idp {
            profile: chosen.name.clone(),
            profile_auto: auto,
            derive: chosen.registration.derive.clone(),
            known_drops: chosen.registration.known_drops.clone(),
            host_header,
            registration_token_file,
            headers,
            client_ip_header,
            serialize_registrations: u.serialize_registrations.unwrap_or(chosen.registration.serialize),
            serialize_spacing: Duration::from_millis(
                u.serialize_spacing_ms.unwrap_or(chosen.registration.serialize_spacing_ms).min(60_000),
            ),
            refuse_changed_registrations: u.refuse_changed_registrations,
        };
        (routes, idp)
    }

    fn upstream(&mut self, u: &schema::UpstreamSection) -> Upstream {
        let mut origins = Vec::new();
        if u.origins.is_empty() {
            self.err("upstream.origins", "at least one origin is required");
        }
        for (i, o) in u.origins.iter().enumerate() {
            let key = format!("upstream.origins[{i}]");
            if let Some(hint) = missing_scheme(o) {
                self.err(&key, hint);
                continue;
            }
            match url::Url::parse(o) {
                Ok(url) => {
                    let tls = match url.scheme() {
                        "http" => false,
                        "https" => true,
                        s => {
                            self.err(&key, format!("scheme {s:?} not supported (use http or https)"));
                            continue;
                        }
                    };
                    if url.path() != "/" && !url.path().is_empty() || url.query().is_some() {
                        self.err(&key, "an origin has no path or query (paths are forwarded as received)");
                        continue;
                    }
                    if !url.username().is_empty() || url.password().is_some() {
                        self.err(&key, "credentials in the origin URL are not supported");
                        continue;
                    }
                    let host = match url.host() {
                        Some(url::Host::Domain(d)) => d.to_string(),
                        Some(url::Host::Ipv4(a)) => a.to_string(),
                        Some(url::Host::Ipv6(a)) => a.to_string(),
                        None => {
                            self.err(&key, "missing host");
                            continue;
                        }
                    };
                    let port = url.port_or_known_default().unwrap_or(if tls { 443 } else { 80 });
                    origins.push(Origin { tls, host, port });
                }
                Err(e) => self.err(&key, format!("invalid URL {o:?}: {e}")),
            }
        }
        for (key, v) in [
            ("upstream.connect_timeout_ms", u.connect_timeout_ms),
            ("upstream.read_timeout_ms", u.read_timeout_ms),
            ("upstream.write_timeout_ms", u.write_timeout_ms),
        ] {
            if v == 0 {
                self.err(key, "must be at least 1");
            }
        }
        if !u.health_check_path.starts_with('/') {
            self.err("upstream.health_check_path", "must start with '/'");
        }
        let ca_file = u.ca_file.as_deref().and_then(|p| self.path_key("upstream.ca_file", p));
        Upstream {
            origins,
            sni: u.sni.clone().filter(|s| !s.is_empty()),
            ca_file,
            verify_cert: u.verify_cert,
            connect_timeout: Duration::from_millis(u.connect_timeout_ms),
            read_timeout: Duration::from_millis(u.read_timeout_ms),
            write_timeout: Duration::from_millis(u.write_timeout_ms),
            idle_timeout: Duration::from_millis(u.idle_timeout_ms),
            health_check: u.health_check,
            health_check_interval: Duration::from_millis(u.health_check_interval_ms),
            health_check_path: u.health_check_path.clone(),
        }
    }
}

/// Headers the gateway writes itself: a static header or the client IP header may not name
/// them.
fn is_hop_or_framing(n: &http::HeaderName) -> bool {
    matches!(
        n.as_str(),
        "host"
            | "content-length"
            | "content-type"
            | "transfer-encoding"
            | "connection"
            | "upgrade"
            | "te"
            | "authorization"
            | "cookie"
            | "x-forwarded-proto"
            | "x-forwarded-host"
    )
}

/// For a URL written without its scheme (`127.0.0.1:3000`, `idp.example.com`,
/// `localhost:3000` — which a URL parser reads as scheme `localhost`): what to write instead.
pub fn missing_scheme(s: &str) -> Option<String> {
    let t = s.trim();
    if t.is_empty() || t.contains("://") {
        return None;
    }
    let host = t.split(['/', '?', '#']).next().unwrap_or(t);
    let looks_like_authority = !host.is_empty()
        && host.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']' | '_'));
    if !looks_like_authority {
        return None;
    }
    let https = !(host.starts_with("127.") || host.starts_with("localhost") || host.starts_with("[::1]"));
    let example = if https { format!("https://{t}") } else { format!("http://{t}") };
    Some(format!("{s:?} has no scheme: add http:// or https:// (e.g. {example:?})"))
}

/// A CIDR, or a bare address meaning one host.
pub fn parse_net(s: &str) -> Option<IpNet> {
    let s = s.trim();
    if let Ok(n) = s.parse::<IpNet>() {
        return Some(n);
    }
    s.parse::<std::net::IpAddr>().ok().map(IpNet::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(text: &str) -> Result<Config, ConfigErrors> {
        parse(text, Path::new("/etc/dcr/gateway.toml"))
    }

    fn keys(r: Result<Config, ConfigErrors>) -> Vec<String> {
        r.expect_err("expected errors").0.into_iter().map(|e| e.key).collect()
    }

    #[test]
    fn empty_file_gives_working_defaults() {
        let c = p("").unwrap();
        assert_eq!(c.http_listeners, vec!["127.0.0.1:8080".parse().unwrap()]);
        assert_eq!(c.admin_listener, Some("127.0.0.1:9464".parse().unwrap()));
        assert_eq!(c.upstream.origins[0], Origin { tls: false, host: "127.0.0.1".into(), port: 3000 });
        assert_eq!(c.router.registration_path(), "/oidc/register");
        assert!(c.trusted_proxies.is_empty());
    }

    #[test]
    fn unknown_key_is_an_error_naming_it() {
        let e = p("[server]\nthreadz = 3\n").unwrap_err().to_string();
        assert!(e.contains("threadz"), "{e}");
        assert!(e.contains("gateway.toml"), "{e}");
    }

    #[test]
    fn bad_values_name_their_keys() {
        let ks = keys(p(r#"
[listen]
http = ["nope"]
admin = "1.2.3.4"
[upstream]
origins = ["ftp://x", "http://ok:1/path", "not a url"]
connect_timeout_ms = 0
[network]
trusted_proxies = ["10.0.0.0/8", "10.0.0.0/33", "banana"]
[routes]
registration_path = "oidc"
management_prefixes = ["/"]
"#));
        for k in [
            "listen.http[0]",
            "listen.admin",
            "upstream.origins[0]",
            "upstream.origins[1]",
            "upstream.origins[2]",
            "upstream.connect_timeout_ms",
            "network.trusted_proxies[1]",
            "network.trusted_proxies[2]",
            "routes.registration_path",
            "routes.management_prefixes[0]",
        ] {
            assert!(ks.iter().any(|x| x == k), "missing {k} in {ks:?}");
        }
    }

    #[test]
    fn paths_resolve_relative_to_the_config_file() {
        let c = p("[acl]\nrules = \"rules.json\"\n[geoip]\ncountry_db = \"/abs/c.mmdb\"\n").unwrap();
        assert_eq!(c.rules_file.as_deref(), Some(Path::new("/etc/dcr/rules.json")));
        assert_eq!(c.country_db.as_deref(), Some(Path::new("/abs/c.mmdb")));
    }

    #[test]
    fn urls_without_a_scheme_say_what_to_write() {
        let e = p("[upstream]\norigins = [\"127.0.0.1:3000\", \"localhost:3000\", \"idp.example.com\"]\n[routes]\npublic_base_url = \"auth.example.com\"\nidp_origins = [\"idp.example.com:8443\"]\n")
            .unwrap_err();
        assert_eq!(e.0.len(), 5, "{e}");
        for err in &e.0 {
            assert!(err.message.contains("add http:// or https://"), "{err}");
        }
        assert!(e.to_string().contains("\"http://127.0.0.1:3000\""), "{e}");
        assert!(e.to_string().contains("\"https://idp.example.com\""), "{e}");
        assert_eq!(missing_scheme("ftp://x"), None);
    }

    #[test]
    fn every_problem_in_one_run_typos_included() {
        let text = "[server]\nthreadz = 3\n[upstream]\norigins = [\"127.0.0.1:3000\"]\nconect_timeout_ms = 5\n[log]\nlevel = 7\n[acl]\ndefault_action = \"maybe\"\n";
        let e = p(text).unwrap_err();
        let keys: Vec<&str> = e.0.iter().map(|e| e.key.as_str()).collect();
        for k in
            ["server.threadz", "upstream.conect_timeout_ms", "log.level", "acl.default_action", "upstream.origins[0]"]
        {
            assert!(keys.contains(&k), "missing {k} in {e}");
        }
        assert!(e.0.iter().any(|e| e.file == "/etc/dcr/gateway.toml:2"), "typos carry their line: {e}");
        assert!(e.to_string().contains("did you mean `connect_timeout_ms`?"), "{e}");
    }

    #[test]
    fn https_origin_defaults() {
        let c = p("[upstream]\norigins = [\"https://idp.example.com\", \"http://[::1]:9000\"]\n").unwrap();
        assert_eq!(c.upstream.origins[0], Origin { tls: true, host: "idp.example.com".into(), port: 443 });
        assert_eq!(c.upstream.origins[1].authority(), "[::1]:9000");
    }

    #[test]
    fn body_limit_is_bounded() {
        assert!(keys(p("[dcr]\nmax_body_bytes = 100000000\n")).contains(&"dcr.max_body_bytes".to_string()));
    }

    #[test]
    fn single_addresses_are_hosts() {
        assert_eq!(parse_net("10.1.2.3"), Some("10.1.2.3/32".parse().unwrap()));
        assert_eq!(parse_net("::1"), Some("::1/128".parse().unwrap()));
        assert_eq!(parse_net("x"), None);
    }

    #[test]
    fn admin_section_defaults_and_paths() {
        let c = p("").unwrap();
        assert!(c.admin.api_enabled);
        assert_eq!(c.admin.tokens_file, None);
        assert_eq!(c.admin.settings_file, Path::new("/etc/dcr/tenant-settings.json"));
        let c = p("[admin]\napi_enabled = false\ntokens_file = \"admin-tokens.toml\"\nsettings_file = \"/var/lib/dcr/s.json\"\n").unwrap();
        assert!(!c.admin.api_enabled);
        assert_eq!(c.admin.tokens_file.as_deref(), Some(Path::new("/etc/dcr/admin-tokens.toml")));
        assert_eq!(c.admin.settings_file, Path::new("/var/lib/dcr/s.json"));
        assert!(keys(p("[admin]\nsettings_file = \"\"\n")).contains(&"admin.settings_file".to_string()));
        assert!(p("[admin]\ntoken_file = \"x\"\n").unwrap_err().to_string().contains("token_file"));
    }

    #[test]
    fn admin_store_defaults_to_files_and_registry_needs_a_store() {
        use schema::AdminStoreKind;
        let c = p("").unwrap();
        assert_eq!(c.admin_store, AdminStoreKind::Files);
        assert_eq!(c.admin.store_check_interval, Duration::from_secs(5));
        // SQLite at its default path: enough, even with the client registry off.
        let c = p("[admin]\nstore = \"registry\"\nstore_check_interval_ms = 250\n").unwrap();
        assert_eq!(c.admin_store, AdminStoreKind::Registry);
        assert_eq!(c.admin.store_check_interval, Duration::from_millis(250));
        let no_url = keys(p("[admin]\nstore = \"registry\"\n[registry]\nbackend = \"postgres\"\n"));
        assert!(no_url.contains(&"admin.store".to_string()), "{no_url:?}");
        assert!(
            keys(p("[admin]\nstore_check_interval_ms = 10\n")).contains(&"admin.store_check_interval_ms".to_string())
        );
        assert!(p("[admin]\nstore = \"redis\"\n").is_err());
    }

    #[test]
    fn profiles_give_defaults_and_explicit_keys_win() {
        let c = p("").unwrap();
        assert_eq!(c.idp.profile, "generic");
        assert_eq!(c.routes.upstream_registration_path, "/oidc/register");
        assert_eq!(c.routes.management_prefixes, ["/api/v2/", "/scim/"]);
        assert!(c.routes.normalize_registration_status && c.idp.derive.is_empty() && c.idp.host_header.is_none());

        let c = p("[upstream]\nprofile = \"node-oidc-provider\"\n").unwrap();
        assert_eq!(c.routes.upstream_registration_path, "/reg");
        assert!(c.routes.management_prefixes.is_empty());

        let c = p("[upstream]\nprofile = \"glewlwyd\"\n").unwrap();
        assert_eq!(c.routes.upstream_registration_path, "/api/oidc/register");
        assert!(c.routes.management_prefixes.contains(&"/api/client/".to_string()));
        assert_eq!(c.idp.derive[0].member, "client_confidential");

        let c = p("[upstream]\nprofile = \"glewlwyd\"\n[routes]\nupstream_registration_path = \"/api/other/register\"\nmanagement_prefixes = []\nnormalize_registration_status = false\n").unwrap();
        assert_eq!(c.routes.upstream_registration_path, "/api/other/register");
        assert!(c.routes.management_prefixes.is_empty() && !c.routes.normalize_registration_status);

        // Keycloak's path names a realm: it must be given.
        assert!(
            keys(p("[upstream]\nprofile = \"keycloak\"\n")).contains(&"routes.upstream_registration_path".to_string())
        );
        let c = p("[upstream]\nprofile = \"keycloak\"\n[routes]\nupstream_registration_path = \"/realms/mcp/clients-registrations/openid-connect\"\n").unwrap();
        assert_eq!(c.routes.management_prefixes, ["/admin/"]);

        assert!(keys(p("[upstream]\nprofile = \"okta\"\n")).contains(&"upstream.profile".to_string()));
    }

    #[test]
    fn auth0_fronting_keys() {
        let c = p(r#"
[upstream]
profile = "auth0"
origins = ["https://acme-cd-x1.edge.tenants.auth0.com"]
headers = [{ name = "cname-api-key", value_file = "secrets/cname-api-key" }]
client_ip_header = "True-Client-IP"
registration_token_file = "/run/secrets/iat"
"#)
        .unwrap();
        assert_eq!(c.idp.host_header.as_deref(), Some("acme-cd-x1.edge.tenants.auth0.com"));
        assert_eq!(c.idp.headers[0].0.as_str(), "cname-api-key");
        assert_eq!(c.idp.headers[0].1, Path::new("/etc/dcr/secrets/cname-api-key"));
        assert_eq!(c.idp.client_ip_header.as_ref().map(|h| h.as_str()), Some("true-client-ip"));
        assert_eq!(c.idp.registration_token_file.as_deref(), Some(Path::new("/run/secrets/iat")));
        let c =
            p("[upstream]\nprofile = \"auth0\"\norigins = [\"https://e.example:8443\"]\nhost_header = \"request\"\n")
                .unwrap();
        assert_eq!(c.idp.host_header, None, "an explicit key wins over the profile");
        let c = p("[upstream]\norigins = [\"https://e.example:8443\"]\nhost_header = \"origin\"\n").unwrap();
        assert_eq!(c.idp.host_header.as_deref(), Some("e.example:8443"));
        let ks = keys(p(r#"
[upstream]
headers = [{ name = "content-length", value_file = "x" }, { name = "bad name", value_file = "x" }, { name = "x-ok", value_file = "" }]
client_ip_header = "host"
"#));
        for k in [
            "upstream.headers[0]",
            "upstream.headers[1]",
            "upstream.headers[2].value_file",
            "upstream.client_ip_header",
        ] {
            assert!(ks.iter().any(|x| x == k), "missing {k} in {ks:?}");
        }
    }

    #[test]
    fn secret_values_are_checked_and_never_printed() {
        let v = UpstreamSecrets::value(b"  s3cr3t-value\n", "Bearer ").unwrap();
        assert_eq!(v.as_bytes(), b"Bearer s3cr3t-value");
        assert!(v.is_sensitive());
        assert_eq!(UpstreamSecrets::value(b"\n", ""), Err("empty"));
        assert!(UpstreamSecrets::value(b"a\nb", "").is_err());
        let s = UpstreamSecrets { registration_authorization: Some(v), headers: Vec::new() };
        assert!(!format!("{s:?}").contains("s3cr3t"));
    }
}
