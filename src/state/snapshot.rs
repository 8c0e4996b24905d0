//! One consistent view of everything reloadable: configuration, compiled rules, GeoIP
//! databases, registration policy. A request loads one `Arc<Snapshot>` and uses it from start
//! to end; a reload builds a complete new snapshot off the request path and swaps it in, or
//! keeps the old one and reports why. There is never a half-built state.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;
use sha2::{Digest, Sha256};

use crate::acl::{CountryDatabase, MissingDatabase, RuleSet};

use crate::config::{self, Config};
use crate::dcr::{RegistrationMode, StatementVerifier};
use crate::signals::geo::{AsnDb, GeoDb};
use crate::tokens::TokenSet;

pub struct Snapshot {
    /// The configuration with the effective `[dcr]` policy (`state::policy::effective`).
    pub config: Arc<Config>,
    /// The `[dcr]` section as configured, before the tenant settings overlay (the admin API
    /// validates settings against it).
    pub dcr_base: crate::dcr::Policy,
    pub acl: RuleSet,
    /// What the rules were compiled against (`[acl.managed_lists]`, `unknown_managed_lists`,
    /// `signature_keys`); the admin API validates writes against it.
    pub acl_env: crate::acl::Env,
    pub geo: Option<GeoDb>,
    pub asn: Option<AsnDb>,
    /// SHA-256 (hex) of the configuration file as loaded.
    pub config_sha256: String,
    /// SHA-256 (hex) of the rules file, empty when no rules file is configured.
    pub rules_sha256: String,
    /// SHA-256 (hex) of the tenant settings file (`[admin] settings_file`) laid over
    /// `config.dcr`; that of the empty string when the file does not exist.
    pub settings_sha256: String,
    /// Admin API bearer tokens (`[admin] tokens_file`); empty when none is configured.
    pub admin_tokens: TokenSet,
    /// Initial access tokens for `[dcr] registration = "token"` (`[dcr] token_file`).
    pub registration_tokens: TokenSet,
    /// Trusted software statement issuers with their keys (`[dcr] software_statement_issuers`).
    pub statements: StatementVerifier,
    /// `[upstream] registration_token_file` and `headers` values (never logged).
    pub upstream_secrets: config::UpstreamSecrets,
    /// Files whose change should trigger a reload.
    pub watched_files: Vec<PathBuf>,
    /// The bytes of the configuration, rules, tenant settings and token files as loaded: a
    /// reload is judged against them (`reload::guard`).
    pub sources: Vec<Source>,
}

/// What a file held when a snapshot was built from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceKind {
    /// The TOML configuration file.
    Config,
    /// The JSON rules file (`[acl] rules`).
    Rules,
    /// The JSON tenant settings file (`[admin] settings_file`); may not exist.
    Settings,
    /// A TOML token file (`[dcr] token_file`, `[admin] tokens_file`).
    Tokens,
}

#[derive(Clone, PartialEq, Eq)]
pub struct Source {
    pub path: PathBuf,
    pub kind: SourceKind,
    /// `None`: the file did not exist (only allowed for the tenant settings file).
    pub bytes: Option<Arc<[u8]>>,
}

impl fmt::Debug for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the bytes: token files and settings are not for logs.
        write!(f, "Source({:?}, {}, {:?} bytes)", self.kind, self.path.display(), self.bytes.as_ref().map(|b| b.len()))
    }
}

impl Source {
    fn new(path: &Path, kind: SourceKind, bytes: Option<&[u8]>) -> Source {
        Source { path: path.to_path_buf(), kind, bytes: bytes.map(Arc::from) }
    }
}

impl fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Snapshot")
            .field("config", &self.config.path)
            .field("rules", &self.acl.rule_count())
            .field("config_sha256", &self.config_sha256)
            .field("rules_sha256", &self.rules_sha256)
            .finish()
    }
}

/// Every problem found while building a snapshot, one per line, each naming its file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildErrors(pub Vec<String>);

impl fmt::Display for BuildErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.join("\n"))
    }
}

impl std::error::Error for BuildErrors {}

pub type Store = ArcSwap<Snapshot>;

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn read(path: &Path, what: &str, errors: &mut Vec<String>) -> Option<Vec<u8>> {
    read_file(path, what).map_err(|e| errors.push(e)).ok()
}

fn read_file(path: &Path, what: &str) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("{}: cannot read {what}: {e}", path.display()))
}

/// The GeoIP country (or City) database at `path`: the one loader for the snapshot and the
/// offline tools (`explain`, `test-rules`). `key` names it in errors (`geoip.country_db`, or a
/// flag).
pub fn load_country_db(path: &Path, key: &str) -> Result<GeoDb, String> {
    let bytes = read_file(path, "GeoIP country database")?;
    GeoDb::from_bytes(bytes).map_err(|e| format!("{}: {key}: {e}", path.display()))
}

/// The ASN database at `path` (as [`load_country_db`]).
pub fn load_asn_db(path: &Path, key: &str) -> Result<AsnDb, String> {
    let bytes = read_file(path, "ASN database")?;
    AsnDb::from_bytes(bytes).map_err(|e| format!("{}: {key}: {e}", path.display()))
}

impl Snapshot {
    /// Read the config file and every file it references, and build a snapshot. Error
    /// messages are redacted (`crate::redact`): they may quote configuration lines.
    pub fn load(config_path: &Path) -> Result<Snapshot, BuildErrors> {
        Self::load_with(config_path, None)
    }

    /// [`Snapshot::load`] with the rules and tenant settings taken from `docs` (the registry
    /// store, `[admin] store = "registry"`) instead of their files.
    pub fn load_with(
        config_path: &Path,
        docs: Option<&crate::registry::admin_store::AdminDocs>,
    ) -> Result<Snapshot, BuildErrors> {
        Self::load_unredacted(config_path, docs).map_err(|e| BuildErrors(crate::redact::redact_all(&e.0)))
    }

    fn load_unredacted(
        config_path: &Path,
        docs: Option<&crate::registry::admin_store::AdminDocs>,
    ) -> Result<Snapshot, BuildErrors> {
        let bytes = std::fs::read(config_path)
            .map_err(|e| BuildErrors(vec![format!("{}: cannot read configuration: {e}", config_path.display())]))?;
        let text = String::from_utf8(bytes.clone())
            .map_err(|_| BuildErrors(vec![format!("{}: not valid UTF-8", config_path.display())]))?;
        let config =
            config::parse(&text, config_path).map_err(|e| BuildErrors(e.0.iter().map(|e| e.to_string()).collect()))?;
        let config = crate::state::idp_probe::resolve_auto_profile(&text, config_path, config)
            .map_err(|e| BuildErrors(vec![e]))?;
        let mut snap = Self::from_config_with(config, sha256_hex(&bytes), docs)?;
        snap.sources.insert(0, Source::new(config_path, SourceKind::Config, Some(&bytes)));
        Ok(snap)
    }

    /// Build from an already parsed config (reads the rules and GeoIP files it references).
    pub fn from_config(config: Config, config_sha256: String) -> Result<Snapshot, BuildErrors> {
        Self::from_config_with(config, config_sha256, None)
    }

    /// [`Snapshot::from_config`]; with `docs`, the rules and tenant settings come from them
    /// (sources named `registry:network-acls` and `registry:tenant-settings`, judged by the
    /// reload guard like files) and their files are neither read nor watched.
    pub fn from_config_with(
        mut config: Config,
        config_sha256: String,
        docs: Option<&crate::registry::admin_store::AdminDocs>,
    ) -> Result<Snapshot, BuildErrors> {
        use crate::state::remote;
        let mut errors = Vec::new();
        let mut watched = vec![config.path.clone()];
        let mut sources = Vec::new();

        // Tenant settings (written by the admin API) override [dcr]; no file, no overrides.
        let settings_path = match docs {
            Some(_) => remote::source_path(crate::registry::admin_store::SETTINGS),
            None => config.admin.settings_file.clone(),
        };
        let mut settings_sha256 = String::new();
        let dcr_base = config.dcr.clone();
        let settings = match docs {
            Some(d) => super::policy::effective_from(
                &config.dcr,
                &settings_path,
                d.settings.body.as_ref().map(|b| b.as_bytes().to_vec()),
            ),
            None => {
                watched.push(settings_path.clone());
                super::policy::effective(&config.dcr, &settings_path)
            }
        };
        match settings {
            Ok(e) => {
                sources.push(Source::new(&settings_path, SourceKind::Settings, e.settings_bytes.as_deref()));
                settings_sha256 = e.settings_sha256;
                config.dcr = e.policy;
            }
            Err(errs) => errors.extend(errs),
        }
        let admin_tokens = match config.admin.tokens_file.clone() {
            None => TokenSet::empty(),
            Some(p) => {
                watched.push(p.clone());
                load_tokens(&p, "admin token file", &mut errors, &mut sources)
            }
        };

        let resolve = |p: &str| config.resolve(p);
        let registration_tokens = match (&config.dcr.registration, config.dcr.token_file.as_deref()) {
            (RegistrationMode::Token, None) => {
                errors.push(format!(
                    "{}: dcr.token_file: required when dcr.registration = \"token\"",
                    config.path.display()
                ));
                TokenSet::empty()
            }
            (_, None) => TokenSet::empty(),
            (_, Some(f)) => {
                let p = resolve(f);
                watched.push(p.clone());
                let set = load_tokens(&p, "token file", &mut errors, &mut sources);
                if let Err(errs) = set.validate_against(&config.dcr) {
                    errors.extend(errs.iter().map(|e| format!("{}: {e}", p.display())));
                }
                set
            }
        };
        let statements = statement_verifier(&config, &mut watched, &mut errors);
        let upstream_secrets = upstream_secrets(&config, &mut watched, &mut errors);

        let geo = config.country_db.as_ref().and_then(|p| {
            watched.push(p.clone());
            load_country_db(p, "geoip.country_db").map_err(|e| errors.push(e)).ok()
        });
        let asn = config.asn_db.as_ref().and_then(|p| {
            watched.push(p.clone());
            load_asn_db(p, "geoip.asn_db").map_err(|e| errors.push(e)).ok()
        });

        let acl_env = acl_env(&config, &mut watched, &mut errors, &mut sources);
        let mut rules_sha256 = String::new();
        let rules_file = match docs {
            Some(_) => Some(remote::source_path(crate::registry::admin_store::RULES)),
            None => config.rules_file.clone(),
        };
        let acl = match &rules_file {
            None => Some(RuleSet::empty(config.default_action)),
            Some(p) if docs.is_some_and(|d| d.rules.body.is_none()) => {
                // Never written to the store: no rules yet (as without a rules file).
                sources.push(Source::new(p, SourceKind::Rules, None));
                rules_sha256 = sha256_hex(b"");
                Some(RuleSet::empty(config.default_action))
            }
            Some(p) => {
                let bytes = match docs {
                    Some(d) => d.rules.body.as_ref().map(|b| b.as_bytes().to_vec()),
                    None => {
                        watched.push(p.clone());
                        read(p, "rules file", &mut errors)
                    }
                };
                bytes.and_then(|bytes| {
                    sources.push(Source::new(p, SourceKind::Rules, Some(&bytes)));
                    rules_sha256 = sha256_hex(&bytes);
                    match RuleSet::load_with(&bytes, config.default_action, &acl_env) {
                        Ok(rs) => {
                            for w in rs.warnings() {
                                tracing::warn!("{}: {w}", p.display());
                            }
                            Some(rs)
                        }
                        Err(errs) => {
                            for e in errs.0 {
                                errors.push(format!("{}: {e}", p.display()));
                            }
                            None
                        }
                    }
                })
            }
        };

        if let Some(acl) = &acl {
            let rules = rules_file.as_ref().map(|p| p.display().to_string()).unwrap_or_default();
            let country = match (&config.country_db, &geo) {
                (None, _) => CountryDatabase::Absent,
                (Some(_), None) => CountryDatabase::Unread,
                (Some(_), Some(g)) => {
                    CountryDatabase::Loaded { database_type: g.database_type(), subdivisions: g.has_subdivisions() }
                }
            };
            for missing in acl.missing_databases(country, config.asn_db.is_some()) {
                errors.push(match missing {
                    MissingDatabase::Country { .. } => format!(
                        "{rules}: rules use geo_country_codes/geo_subdivision_codes but geoip.country_db is not set in {}",
                        config.path.display()
                    ),
                    MissingDatabase::Subdivisions { database_type, .. } => format!(
                        "{rules}: rules use geo_subdivision_codes but the GeoIP database ({database_type}) has no subdivisions; use a City database"
                    ),
                    MissingDatabase::Asn { .. } => {
                        format!("{rules}: rules use asns but geoip.asn_db is not set in {}", config.path.display())
                    }
                });
            }
        }

        match acl {
            Some(acl) if errors.is_empty() => Ok(Snapshot {
                config: Arc::new(config),
                dcr_base,
                acl,
                acl_env,
                geo,
                asn,
                config_sha256,
                rules_sha256,
                settings_sha256,
                admin_tokens,
                registration_tokens,
                statements,
                upstream_secrets,
                watched_files: watched,
                sources,
            }),
            _ => Err(BuildErrors(errors)),
        }
    }
}

/// The managed lists and signature keys `[acl]` names, read like the rules file (watched,
/// judged by the reload guard). Problems name the file and the key, never key material.
fn acl_env(
    config: &Config,
    watched: &mut Vec<PathBuf>,
    errors: &mut Vec<String>,
    sources: &mut Vec<Source>,
) -> crate::acl::Env {
    use crate::acl::{managed, signature};
    let mut lists = Vec::new();
    for (name, p) in &config.acl_managed_lists {
        watched.push(p.clone());
        let Some(bytes) = read(p, &format!("acl.managed_lists.{name:?}"), errors) else { continue };
        sources.push(Source::new(p, SourceKind::Rules, Some(&bytes)));
        match std::str::from_utf8(&bytes).map_err(|_| vec!["not valid UTF-8".to_string()]).and_then(managed::parse_list)
        {
            Ok(entries) => lists.push((name.clone(), entries)),
            Err(errs) => {
                errors.extend(errs.iter().map(|e| format!("{}: acl.managed_lists.{name:?}: {e}", p.display())))
            }
        }
    }
    let mut keys = signature::KeySet::default();
    if let Some(p) = &config.acl_signature_keys {
        watched.push(p.clone());
        if let Some(bytes) = read(p, "acl.signature_keys", errors) {
            match signature::KeySet::parse(&bytes) {
                Ok(k) => keys = k,
                Err(errs) => errors.extend(errs.iter().map(|e| format!("{}: acl.signature_keys: {e}", p.display()))),
            }
        }
    }
    crate::acl::Env {
        managed: Arc::new(managed::ManagedLists::build(lists)),
        unknown_managed: config.acl_unknown_managed_lists,
        signature_keys: Arc::new(keys),
    }
}

/// A token file, parsed; problems (naming the file) go to `errors` and leave an empty set.
fn load_tokens(path: &Path, what: &str, errors: &mut Vec<String>, sources: &mut Vec<Source>) -> TokenSet {
    let Some(bytes) = read(path, what, errors) else {
        return TokenSet::empty();
    };
    sources.push(Source::new(path, SourceKind::Tokens, Some(&bytes)));
    match String::from_utf8(bytes).map_err(|_| vec!["not valid UTF-8".to_string()]).and_then(|t| TokenSet::parse(&t)) {
        Ok(set) => set,
        Err(errs) => {
            errors.extend(errs.iter().map(|e| format!("{}: {e}", path.display())));
            TokenSet::empty()
        }
    }
}

/// The secret values `[upstream] registration_token_file` and `headers` name. Messages name
/// the file and the key, never the content.
fn upstream_secrets(config: &Config, watched: &mut Vec<PathBuf>, errors: &mut Vec<String>) -> config::UpstreamSecrets {
    let mut secrets = config::UpstreamSecrets::default();
    let mut value = |path: &Path, key: &str, prefix: &str, watched: &mut Vec<PathBuf>| {
        watched.push(path.to_path_buf());
        let bytes = read(path, key, errors)?;
        config::UpstreamSecrets::value(&bytes, prefix)
            .map_err(|why| errors.push(format!("{}: {key}: the file's content is {why}", path.display())))
            .ok()
    };
    if let Some(p) = &config.idp.registration_token_file {
        secrets.registration_authorization = value(p, "upstream.registration_token_file", "Bearer ", watched);
    }
    for (i, (name, p)) in config.idp.headers.iter().enumerate() {
        if let Some(v) = value(p, &format!("upstream.headers[{i}].value_file"), "", watched) {
            secrets.headers.push((name.clone(), v));
        }
    }
    secrets
}

/// The software statement verifier `[dcr] software_statement_issuers` describes, reading
/// `jwks_file`s relative to the config file. Problems are pushed onto `errors`.
pub fn statement_verifier(config: &Config, watched: &mut Vec<PathBuf>, errors: &mut Vec<String>) -> StatementVerifier {
    let mut issuers = Vec::new();
    for (i, iss) in config.dcr.software_statement_issuers.iter().enumerate() {
        let doc = match (&iss.jwks, iss.jwks_file.as_deref()) {
            (Some(inline), _) => Some(inline.clone()),
            (None, Some(f)) => {
                let p = config.resolve(f);
                watched.push(p.clone());
                read(&p, "JWKS file", errors).and_then(|b| match serde_json::from_slice::<serde_json::Value>(&b) {
                    Ok(v) => Some(v),
                    Err(e) => {
                        errors.push(format!("{}: dcr.software_statement_issuers[{i}].jwks_file: {e}", p.display()));
                        None
                    }
                })
            }
            (None, None) => None,
        };
        if let Some(doc) = doc {
            issuers.push((iss.clone(), doc));
        }
    }
    match StatementVerifier::new(&issuers) {
        Ok(v) => v,
        Err(errs) => {
            errors.extend(errs.iter().map(|e| format!("{}: {e}", config.path.display())));
            StatementVerifier::empty()
        }
    }
}
