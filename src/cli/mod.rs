//! The command line: `run`, `check`, `explain`, `test-rules`, `validate`, `token`. Each returns the
//! process exit code; `main.rs` only parses arguments.

mod explain;
mod token;
mod validate;

use std::path::{Path, PathBuf};

use clap::{Args, Parser, Subcommand};

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
}

pub fn dispatch(cli: Cli) -> i32 {
    match cli.command {
        Command::Run(a) => run(&a),
        Command::Check(a) => check(&a.config),
        Command::Explain(a) => explain::explain(&a),
        Command::TestRules(a) => explain::test_rules(&a),
        Command::Validate(a) => validate::validate(&a),
        Command::Token(a) => token::token(&a),
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

/// Everything `run` would load, without binding a socket.
pub fn check(config: &Path) -> i32 {
    let snap = match crate::snapshot::Snapshot::load(config) {
        Ok(s) => s,
        Err(e) => {
            for line in &e.0 {
                eprintln!("error: {line}");
            }
            eprintln!("{}: configuration check failed ({} problem(s))", config.display(), e.0.len());
            return 1;
        }
    };
    let mut problems = Vec::new();
    match crate::state::idp_probe::probe(&snap.config) {
        crate::state::idp_probe::Probe::Disagrees { advertised } => {
            problems.push(crate::proxy::server::registration_path_error(&snap.config, &advertised));
        }
        crate::state::idp_probe::Probe::Skipped(why) => {
            eprintln!("note: registration path not compared with the IdP's discovery document: {why}");
        }
        crate::state::idp_probe::Probe::Agrees => {}
    }
    if let Err(errs) = crate::proxy::upstream::build(&snap.config.upstream) {
        problems.extend(errs.into_iter().map(|e| format!("{}: {e}", config.display())));
    }
    for l in &snap.config.https_listeners {
        if let Err(e) = crate::proxy::tls::CertAndSni::load(&l.cert, &l.key) {
            problems.push(format!("{}: listen.https: {e}", config.display()));
        }
    }
    if let crate::config::AuditOutput::File(p) = &snap.config.audit_output {
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
    if !problems.is_empty() {
        for p in &problems {
            eprintln!("error: {}", crate::redact::redact(p));
        }
        eprintln!("{}: configuration check failed ({} problem(s))", config.display(), problems.len());
        return 1;
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
