//! `dcr-gateway registry migrate`: open the configured registry store and bring its schema up
//! to date (the gateway also does this at start). Safe to run while gateways run: migrations
//! take the store's lock and apply once.
//!
//! `dcr-gateway registry export | import`: move the network ACL rules and the tenant settings
//! between their files and the store (`[admin] store = "registry"`, docs/admin-api.md). An
//! import is validated as a reload would validate it (the whole snapshot is built from the
//! configuration and the imported documents), written in one transaction, and announced to
//! the replicas. Exit status: 0 done, 1 anything refused (nothing is written then).

use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};

use crate::registry::admin_store::{self, AdminDoc, AdminDocs};

#[derive(Args, Debug)]
pub struct RegistryArgs {
    /// Configuration file.
    #[arg(short = 'c', long = "config", default_value = "conf/gateway.toml", global = true)]
    pub config: PathBuf,
    #[command(subcommand)]
    pub command: RegistryCommand,
}

#[derive(Subcommand, Debug)]
pub enum RegistryCommand {
    /// Run the registry store's schema migrations.
    Migrate,
    /// Write the network ACLs and tenant settings kept in the store to files.
    Export(DocFiles),
    /// Replace the network ACLs and tenant settings in the store with files (validated first).
    Import(DocFiles),
}

#[derive(Args, Debug)]
pub struct DocFiles {
    /// The rules file (default: `[acl] rules`).
    #[arg(long)]
    pub rules: Option<PathBuf>,
    /// The tenant settings file (default: `[admin] settings_file`).
    #[arg(long)]
    pub settings: Option<PathBuf>,
}

pub fn registry(a: &RegistryArgs) -> i32 {
    let cfg = match std::fs::read_to_string(&a.config)
        .map_err(|e| format!("{}: {e}", a.config.display()))
        .and_then(|t| crate::config::parse(&t, &a.config).map_err(|e| e.to_string()))
    {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {}", crate::redact::redact(&e));
            return 1;
        }
    };
    match &a.command {
        RegistryCommand::Export(f) => report(export(&cfg, f)),
        RegistryCommand::Import(f) => report(import(&cfg, &a.config, f)),
        RegistryCommand::Migrate => match crate::registry::open_store(&cfg.registry) {
            Ok((store, from, to)) if from == to => {
                println!("registry ({}): schema at version {to}; nothing to do", store.backend_name());
                0
            }
            Ok((store, from, to)) => {
                println!("registry ({}): schema migrated from version {from} to {to}", store.backend_name());
                0
            }
            Err(e) => {
                eprintln!("error: {e}");
                1
            }
        },
    }
}

fn report(r: Result<Vec<String>, String>) -> i32 {
    match r {
        Ok(lines) => {
            for l in lines {
                println!("{l}");
            }
            0
        }
        Err(e) => {
            eprintln!("error: {}", crate::redact::redact(&e));
            1
        }
    }
}

/// The files to move: the flags, else the configured paths.
fn paths(cfg: &crate::config::Config, f: &DocFiles) -> (Option<PathBuf>, PathBuf) {
    (
        f.rules.clone().or_else(|| cfg.rules_file.clone()),
        f.settings.clone().unwrap_or_else(|| cfg.admin.settings_file.clone()),
    )
}

fn open(cfg: &crate::config::Config) -> Result<crate::registry::Store, String> {
    crate::registry::open_store(&cfg.registry).map(|(s, _, _)| s).map_err(|e| e.to_string())
}

/// Store → files. A document never written to the store leaves its file as it is.
fn export(cfg: &crate::config::Config, f: &DocFiles) -> Result<Vec<String>, String> {
    let (rules, settings) = paths(cfg, f);
    let rules = rules.ok_or("no rules file: give --rules or set [acl] rules")?;
    let store = open(cfg)?;
    let docs = store.admin_docs().map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    for (doc, path, name) in
        [(&docs.rules, &rules, admin_store::RULES), (&docs.settings, &settings, admin_store::SETTINGS)]
    {
        match &doc.body {
            Some(body) => {
                crate::state::store::write_atomic(path, body.as_bytes())
                    .map_err(|e| format!("{}: cannot write: {e}", path.display()))?;
                out.push(format!(
                    "{name}: version {} written to {} (sha256 {})",
                    doc.version,
                    path.display(),
                    doc.sha256
                ));
            }
            None => out.push(format!("{name}: not in the store; {} left as it is", path.display())),
        }
    }
    Ok(out)
}

/// A file's text; `None` when it does not exist.
fn read(path: &Path) -> Result<Option<String>, String> {
    match std::fs::read(path) {
        Ok(b) => String::from_utf8(b).map(Some).map_err(|_| format!("{}: not valid UTF-8", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("{}: cannot read: {e}", path.display())),
    }
}

/// Files → store, validated as a reload would, in one transaction.
fn import(cfg: &crate::config::Config, config_path: &Path, f: &DocFiles) -> Result<Vec<String>, String> {
    let (rules_path, settings_path) = paths(cfg, f);
    let rules = match &rules_path {
        Some(p) => Some(read(p)?.ok_or_else(|| format!("{}: no such file", p.display()))?),
        None => None,
    };
    let settings = read(&settings_path)?;
    if f.settings.is_some() && settings.is_none() {
        return Err(format!("{}: no such file", settings_path.display()));
    }
    if rules.is_none() && settings.is_none() {
        return Err("nothing to import: no rules file (--rules or [acl] rules) and no settings file".into());
    }
    let store = open(cfg)?;
    let current = store.admin_docs().map_err(|e| e.to_string())?;
    // What the store will hold, checked by building the snapshot a replica would build.
    let doc = |text: &Option<String>, kept: &AdminDoc| match text {
        Some(t) => {
            AdminDoc { body: Some(t.clone()), sha256: crate::state::store::sha256_hex(t.as_bytes()), version: 0 }
        }
        None => kept.clone(),
    };
    let next = AdminDocs { rules: doc(&rules, &current.rules), settings: doc(&settings, &current.settings) };
    let config_bytes = std::fs::read(config_path).map_err(|e| format!("{}: {e}", config_path.display()))?;
    let sha = crate::state::store::sha256_hex(&config_bytes);
    crate::snapshot::Snapshot::from_config_with(cfg.clone(), sha, Some(&next))
        .map_err(|e| format!("refused, nothing imported:\n{}", e.0.join("\n")))?;
    let mut docs: Vec<(&str, &str)> = Vec::new();
    if let Some(r) = &rules {
        docs.push((admin_store::RULES, r));
    }
    if let Some(s) = &settings {
        docs.push((admin_store::SETTINGS, s));
    }
    let now =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0);
    store.import_admin_docs(&docs, now, "registry import").map_err(|e| e.to_string())?;
    let after = store.admin_docs().map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    for (name, _) in &docs {
        let d = after.get(name);
        if let Err(e) = store.notify_admin_change(name, d.version) {
            out.push(format!("warning: cannot notify the replicas ({e}); their periodic check will pick it up"));
        }
        out.push(format!("{name}: imported as version {} (sha256 {})", d.version, d.sha256));
    }
    if rules.is_none() {
        out.push(format!("{}: no rules file; the store's rules are left as they are", admin_store::RULES));
    }
    if settings.is_none() {
        out.push(format!(
            "{}: no file at {}; the store's settings are left as they are",
            admin_store::SETTINGS,
            settings_path.display()
        ));
    }
    if cfg.admin_store == crate::config::schema::AdminStoreKind::Files {
        out.push("note: [admin] store = \"files\": this gateway does not read them from the store".into());
    }
    Ok(out)
}
