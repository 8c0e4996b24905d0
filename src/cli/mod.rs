//! The command line: `run`, `check`, `explain`, `test-rules`, `validate`, `token`. Each returns the
//! process exit code; `main.rs` only parses arguments.

mod clients;
mod explain;
mod registry;
mod token;
mod validate;

use std::path::{Path, PathBuf};

use clap::{Args, Parser, Subcommand};

pub use clients::{ClientsArgs, ClientsCommand};
pub use explain::{ExplainArgs, RuleSource, TestRulesArgs};
pub use token::{TokenArgs, TokenCommand, TokenNewArgs};
pub use validate::ValidateArgs;

#[derive(Parser, Debug)]
#[command(
    name = "dcr-gateway",
    version,
    about = "A reverse proxy that guards OAuth Dynamic Client Registration (RFC 7591) in front of any OpenID Provider",
    long_about = None
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the gateway in the foreground.
    Run(RunArgs),
    /// Validate the configuration and every file it references (like `nginx -t`).
    Check(CheckArgs),
    /// Show the signals and the ACL decision for one request.
    Explain(ExplainArgs),
    /// Run ACL test cases against a rule file (like `promtool test rules`).
    TestRules(TestRulesArgs),
    /// Validate and normalize a registration document offline (the code the proxy runs).
    Validate(ValidateArgs),
    /// Mint initial access tokens (closed registration) and admin tokens.
    Token(TokenArgs),
    /// The client registry: list, show and reap dynamically registered clients.
    Clients(ClientsArgs),
    /// The client registry's store: run its schema migrations.
    Registry(registry::RegistryArgs),
}

#[derive(Args, Debug)]
pub struct RunArgs {
    /// Configuration file.
    #[arg(short = 'c', long = "config", default_value = "conf/gateway.toml")]
    pub config: PathBuf,
    /// Take over the listening sockets of a running instance (send it SIGQUIT after starting this one).
    #[arg(short = 'u', long)]
    pub upgrade: bool,
}

#[derive(Args, Debug)]
pub struct CheckArgs {
    /// Configuration file.
    #[arg(short = 'c', long = "config", default_value = "conf/gateway.toml")]
    pub config: PathBuf,
    /// Also list every rule Auth0's Management API would refuse, and why (exit 1 if any).
    #[arg(long = "auth0-compat")]
    pub auth0_compat: bool,
}

pub fn dispatch(cli: Cli) -> i32 {
    match cli.command {
        Command::Run(a) => run(&a),
        Command::Check(a) => match check(&a.config) {
            0 if a.auth0_compat => explain::auth0_compat(&a.config),
            rc => rc,
        },
        Command::Explain(a) => explain::explain(&a),
        Command::TestRules(a) => explain::test_rules(&a),
        Command::Validate(a) => validate::validate(&a),
        Command::Token(a) => token::token(&a),
        Command::Clients(a) => clients::clients(&a),
        Command::Registry(a) => registry::registry(&a),
    }
}

fn run(a: &RunArgs) -> i32 {
    match crate::proxy::server::run(&a.config, crate::proxy::server::RunOptions { upgrade: a.upgrade }) {
        Ok(never) => match never {},
        Err(errors) => {
            for e in errors {
                eprintln!("error: {}", crate::redact::redact(&e.to_string()));
            }
            eprintln!("dcr-gateway: not started");
            1
        }
    }
}

/// Everything `run` would load, without binding a socket. Every problem is reported in one
/// run: the configuration's (typos, types and values alike), then those of the files it names
/// and of the upstream, TLS, audit and pid-file settings.
pub fn check(config: &Path) -> i32 {
    let fail = |problems: &[String]| {
        for p in problems {
            eprintln!("error: {}", crate::redact::redact(p));
        }
        eprintln!("{}: configuration check failed ({} problem(s))", config.display(), problems.len());
        1
    };
    let bytes = match std::fs::read(config) {
        Ok(b) => b,
        Err(e) => return fail(&[format!("{}: cannot read configuration: {e}", config.display())]),
    };
    let Ok(text) = String::from_utf8(bytes.clone()) else {
        return fail(&[format!("{}: not valid UTF-8", config.display())]);
    };
    let (parsed, errors) = crate::config::parse_all(&text, config);
    let mut problems: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
    let Some(cfg) = parsed else { return fail(&problems) };
    let cfg = if problems.is_empty() {
        match crate::state::idp_probe::resolve_auto_profile(&text, config, cfg.clone()) {
            Ok(c) => c,
            Err(e) => {
                problems.push(e);
                cfg
            }
        }
    } else {
        cfg
    };
    // The files the configuration names, read even when it has problems of its own; with
    // `[admin] store = "registry"` the rules and settings are the stored documents instead
    // (what `run` would start with), and their files are not read.
    let docs = match cfg.admin_store {
        crate::config::schema::AdminStoreKind::Files => Ok(None),
        crate::config::schema::AdminStoreKind::Registry => crate::state::remote::AdminStore::open(&cfg)
            .and_then(|r| r.store().admin_docs().map_err(|e| format!("admin.store: {e}")))
            .map(Some),
    };
    let snap = match docs {
        Err(e) => {
            problems.push(format!("{}: {}", config.display(), crate::redact::redact(&e)));
            None
        }
        Ok(docs) => {
            match crate::snapshot::Snapshot::from_config_with(
                cfg.clone(),
                crate::state::store::sha256_hex(&bytes),
                docs.as_ref(),
            ) {
                Ok(s) => Some(s),
                Err(e) => {
                    problems.extend(e.0);
                    None
                }
            }
        }
    };
    server_checks(config, &cfg, &mut problems);
    match snap {
        Some(snap) if problems.is_empty() => {
            for w in snap.acl.warnings() {
                eprintln!("warning: {}: {w}", cfg.rules_file.as_deref().unwrap_or(config).display());
            }
            println!(
                "{}: configuration OK ({} rules, {} entries; config sha256 {}, rules sha256 {})",
                config.display(),
                snap.acl.rule_count(),
                snap.acl.entry_count(),
                &snap.config_sha256[..12],
                if snap.rules_sha256.is_empty() { "-" } else { &snap.rules_sha256[..12] }
            );
            0
        }
        _ => fail(&problems),
    }
}

/// What `run` checks beyond the snapshot: the IdP's registration path, the upstream origins,
/// the TLS certificates, and the directories of the audit file, pid file and upgrade socket.
fn server_checks(config: &Path, cfg: &crate::config::Config, problems: &mut Vec<String>) {
    let found = crate::state::idp_probe::probe_full(cfg);
    if let Some(origin) = &found.off_gateway {
        eprintln!("warning: {}", crate::state::idp_probe::off_gateway_warning(origin));
    }
    if let Some(name) = found.suggested_profile {
        eprintln!("note: {}", crate::state::idp_probe::profile_suggestion(name));
    }
    match found.probe {
        crate::state::idp_probe::Probe::Disagrees { advertised } => {
            problems.push(crate::state::idp_probe::registration_path_error(cfg, &advertised));
        }
        crate::state::idp_probe::Probe::Skipped(why) => {
            eprintln!("note: registration path not compared with the IdP's discovery document: {why}");
        }
        crate::state::idp_probe::Probe::Agrees => {}
    }
    // No origin left: the configuration's own error says so already.
    let built =
        if cfg.upstream.origins.is_empty() { Ok(()) } else { crate::proxy::upstream::build(&cfg.upstream).map(|_| ()) };
    if let Err(errs) = built {
        problems.extend(errs.into_iter().map(|e| format!("{}: {e}", config.display())));
    }
    if let (true, Some(k)) = (cfg.registry.enabled, cfg.registry.key_file.as_deref()) {
        // The keys that seal registration_access_tokens (the message names the file, never a key).
        if let Err(e) = crate::registry::crypto::KeyRing::load(Path::new(k)) {
            problems.push(format!("{}: registry.key_file: {e}", config.display()));
        }
    }
    // The store's connection keys, for the registry or the admin documents kept there.
    let postgres = cfg.registry.backend == crate::config::schema::RegistryBackend::Postgres;
    // (With `[admin] store = "registry"` the store was opened above and said so already.)
    let opened = cfg.admin_store == crate::config::schema::AdminStoreKind::Registry;
    if postgres && !opened && cfg.registry.url_file.is_some() {
        // The connection string's file: readable and a connection string (never quoted).
        if let Err(e) = cfg.registry.postgres_url() {
            problems.push(format!("{}: {e}", config.display()));
        }
    }
    if let (true, Some(ca)) = (postgres, cfg.registry.ca_file.as_deref()) {
        // The PostgreSQL server's CA: read now, as the connection will, not at the first one.
        let trusted = openssl::ssl::SslConnector::builder(openssl::ssl::SslMethod::tls_client())
            .map_err(|e| e.to_string())
            .and_then(|mut b| crate::registry::http::trust_only(&mut b, Path::new(ca)));
        if let Err(e) = trusted {
            problems.push(format!("{}: registry.ca_file: {e}", config.display()));
        }
    }
    for l in &cfg.https_listeners {
        if let Err(e) = crate::proxy::tls::CertAndSni::load(&l.cert, &l.key) {
            problems.push(format!("{}: listen.https: {e}", config.display()));
        }
    }
    if let crate::config::AuditOutput::File(p) = &cfg.audit_output {
        if let Some(dir) = p.parent() {
            if !dir.as_os_str().is_empty() && !dir.is_dir() {
                problems.push(format!(
                    "{}: audit.output: directory {} does not exist",
                    config.display(),
                    dir.display()
                ));
            }
        }
    }
    for (key, file) in [("server.pid_file", &cfg.server.pid_file), ("server.upgrade_sock", &cfg.server.upgrade_sock)] {
        if let Some(dir) = Path::new(file).parent() {
            if !file.is_empty() && !dir.as_os_str().is_empty() && !dir.is_dir() {
                problems.push(format!("{}: {key}: directory {} does not exist", config.display(), dir.display()));
            }
        }
    }
}
