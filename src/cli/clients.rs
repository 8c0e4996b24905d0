//! `dcr-gateway clients list | show ID | reap [--dry-run] [--at TIME]`: the client registry
//! from the command line, on the store the configuration names (the running gateway's SQLite
//! file or PostgreSQL database). No output carries a registration_access_token.

use std::path::PathBuf;
use std::sync::Arc;

use clap::{Args, Subcommand};

use crate::config::schema::ReapMode;
use crate::registry::{self, policy, Clock, ListQuery, ManualClock, Registry, SystemClock};

#[derive(Args, Debug)]
pub struct ClientsArgs {
    /// Configuration file.
    #[arg(short = 'c', long = "config", default_value = "conf/gateway.toml", global = true)]
    pub config: PathBuf,
    #[command(subcommand)]
    pub command: ClientsCommand,
}

#[derive(Subcommand, Debug)]
pub enum ClientsCommand {
    /// List registered clients (oldest first), one JSON object a line.
    List(ListArgs),
    /// Show one client.
    Show {
        /// The client_id. IdPs issue random base64url ids, so one may start with `-`
        /// (`-h...` was read as --help): taken as the id wherever it stands.
        #[arg(allow_hyphen_values = true)]
        id: String,
    },
    /// Delete (RFC 7592) the clients unused since their grace or idle past `idle_after`.
    Reap(ReapArgs),
}

#[derive(Args, Debug)]
pub struct ListArgs {
    /// active, unused, idle or deleted.
    #[arg(long)]
    pub state: Option<String>,
    /// A software_id or a software key (`name:...`).
    #[arg(long)]
    pub software: Option<String>,
    /// Not used since this time (RFC 3339 or Unix seconds).
    #[arg(long)]
    pub idle_since: Option<String>,
    #[arg(long, default_value_t = 100)]
    pub limit: u64,
    #[arg(long, default_value_t = 0)]
    pub offset: u64,
}

#[derive(Args, Debug)]
pub struct ReapArgs {
    /// Report what would be deleted; delete nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Judge idleness as of this time (RFC 3339 or Unix seconds) instead of now.
    #[arg(long)]
    pub at: Option<String>,
}

fn open(config: &std::path::Path, clock: Arc<dyn Clock>) -> Result<(Arc<Registry>, crate::config::Config), String> {
    let text = std::fs::read_to_string(config).map_err(|e| format!("{}: {e}", config.display()))?;
    let cfg = crate::config::parse(&text, config).map_err(|e| e.to_string())?;
    if !cfg.registry.enabled {
        return Err(format!("{}: [registry] enabled = false", config.display()));
    }
    let paths = registry::usage::UsagePaths::default();
    let reg = Registry::start(&cfg.registry, clock, paths)?;
    Ok((reg, cfg))
}

pub fn clients(a: &ClientsArgs) -> i32 {
    let clock: Arc<dyn Clock> = match &a.command {
        ClientsCommand::Reap(r) => match r.at.as_deref().map(registry::parse_time) {
            Some(Some(t)) => ManualClock::at(t),
            Some(None) => {
                eprintln!("error: --at: expected RFC 3339 or Unix seconds");
                return 2;
            }
            None => Arc::new(SystemClock),
        },
        _ => Arc::new(SystemClock),
    };
    let (reg, cfg) = match open(&a.config, clock) {
        Ok(x) => x,
        Err(e) => {
            eprintln!("error: {}", crate::redact::redact(&e));
            return 1;
        }
    };
    let limits = registry::limits(&cfg.registry);
    let code = match &a.command {
        ClientsCommand::List(l) => {
            let state = match l.state.as_deref().map(policy::ClientState::parse) {
                Some(None) => {
                    eprintln!("error: --state: expected active, unused, idle or deleted");
                    return 2;
                }
                Some(s) => s,
                None => None,
            };
            let q = ListQuery {
                state,
                idle_since: l.idle_since.as_deref().and_then(registry::parse_time),
                software: l.software.clone(),
                offset: l.offset,
                limit: l.limit,
            };
            let now = reg.now();
            match reg.store().list(&q, &limits, now) {
                Ok((rows, total)) => {
                    for r in rows {
                        println!("{}", r.view(policy::state(&limits, now, r.created_at, r.last_used_at, r.deleted_at)));
                    }
                    eprintln!("{total} client(s) match");
                    0
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    1
                }
            }
        }
        ClientsCommand::Show { id } => match reg.store().get(id) {
            Ok(Some(r)) => {
                let now = reg.now();
                let v = r.view(policy::state(&limits, now, r.created_at, r.last_used_at, r.deleted_at));
                println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
                0
            }
            Ok(None) => {
                eprintln!("error: no registered client {id:?}");
                1
            }
            Err(e) => {
                eprintln!("error: {e}");
                1
            }
        },
        ClientsCommand::Reap(r) => {
            let mode = if r.dry_run { ReapMode::Report } else { ReapMode::Delete };
            let print = |line: &serde_json::Value| println!("{line}");
            match registry::reap::reap_once(
                &reg,
                &limits,
                &cfg.upstream,
                mode,
                cfg.registry.reap_max_per_minute,
                &print,
            ) {
                Ok(rep) if rep.lease_elsewhere => {
                    eprintln!("error: another process holds the reaper lease; nothing done");
                    1
                }
                Ok(rep) => {
                    eprintln!(
                        "{} reported, {} deleted, {} failed",
                        rep.reported.len(),
                        rep.deleted.len(),
                        rep.failed.len()
                    );
                    i32::from(!rep.failed.is_empty())
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    1
                }
            }
        }
    };
    reg.shutdown();
    code
}
