//! `dcr-gateway validate`: the proxy's registration check, offline.

use std::io::Read;
use std::path::PathBuf;

use clap::{Args, ValueEnum};

use crate::dcr::{self, Policy, SecurityMode};

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum Mode {
    Strict,
    Permissive,
}

#[derive(Args, Debug)]
pub struct ValidateArgs {
    /// Override `[dcr] security_mode`.
    #[arg(long, value_enum)]
    pub mode: Option<Mode>,
    /// Take the `[dcr]` policy from this configuration, with its tenant settings file laid over
    /// it as the running gateway does (default: the documented defaults).
    #[arg(short = 'c', long = "config")]
    pub config: Option<PathBuf>,
    /// Registration document; `-` or absent reads standard input.
    pub file: Option<PathBuf>,
}

pub fn validate(a: &ValidateArgs) -> i32 {
    let mut statements = dcr::StatementVerifier::empty();
    let mut policy = match &a.config {
        None => Policy::default(),
        Some(path) => {
            let text = match std::fs::read_to_string(path) {
                Ok(t) => t,
                Err(e) => {
                    eprintln!("error: {}: {e}", path.display());
                    return 2;
                }
            };
            match crate::config::parse(&text, path) {
                Ok(c) => {
                    let mut problems = Vec::new();
                    statements = crate::snapshot::statement_verifier(&c, &mut Vec::new(), &mut problems);
                    if !problems.is_empty() {
                        for p in problems {
                            eprintln!("error: {}", crate::redact::redact(&p));
                        }
                        return 2;
                    }
                    // The policy the running proxy uses: [dcr] with the tenant settings file
                    // (written by the admin API) laid over it.
                    match crate::state::policy::effective(&c.dcr, &c.admin.settings_file) {
                        Ok(e) => e.policy,
                        Err(errs) => {
                            for p in errs {
                                eprintln!("error: {}", crate::redact::redact(&p));
                            }
                            return 2;
                        }
                    }
                }
                Err(e) => {
                    eprintln!("error: {}", crate::redact::redact(&e.to_string()));
                    return 2;
                }
            }
        }
    };
    if let Some(m) = a.mode {
        policy.security_mode = match m {
            Mode::Strict => SecurityMode::Strict,
            Mode::Permissive => SecurityMode::Permissive,
        };
    }
    let mut body = Vec::new();
    let read = match a.file.as_deref() {
        None => std::io::stdin().read_to_end(&mut body).map(|_| ()),
        Some(p) if p.as_os_str() == "-" => std::io::stdin().read_to_end(&mut body).map(|_| ()),
        Some(p) => std::fs::read(p).map(|b| body = b),
    };
    if let Err(e) = read {
        eprintln!("error: cannot read the registration document: {e}");
        return 2;
    }
    match dcr::check_with(&body, &policy, &statements) {
        Ok(n) => {
            println!("{}", String::from_utf8_lossy(&n.body));
            0
        }
        Err(e) => {
            let v = serde_json::json!({"error": e.code.as_str(), "error_description": e.description});
            println!("{v}");
            1
        }
    }
}
