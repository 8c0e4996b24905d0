//! `dcr-gateway token new`: mint an initial access token (closed registration, RFC 7591 §3)
//! or an admin API token. The token is printed once on stdout (nothing else is); its SHA-256
//! is appended as a `[[token]]` entry to the token file.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use clap::{Args, Subcommand};

use crate::tokens::{self, TokenSet, ADMIN_SCOPES};

#[derive(Args, Debug)]
pub struct TokenArgs {
    #[command(subcommand)]
    pub command: TokenCommand,
}

#[derive(Subcommand, Debug)]
pub enum TokenCommand {
    /// Generate a token, print it once on stdout and append its hash to the token file.
    New(TokenNewArgs),
}

#[derive(Args, Debug)]
pub struct TokenNewArgs {
    /// Name of the entry (1 to 64 of A-Z a-z 0-9 . _ -), unique in the file.
    #[arg(long)]
    pub label: String,
    /// Lifetime, e.g. 30d, 12h, 90m, 3600s. Default: no expiry.
    #[arg(long, value_parser = parse_lifetime)]
    pub expires: Option<Duration>,
    /// Registrations allowed with this token (per gateway process).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_uses: Option<u64>,
    /// Token file to append to (created with mode 0600 if missing).
    #[arg(long, conflicts_with = "config")]
    pub file: Option<PathBuf>,
    /// Use the token file named by this configuration: `[dcr] token_file`, or with --admin
    /// `[admin] tokens_file` (relative to the configuration's directory).
    #[arg(short = 'c', long = "config", default_value = "conf/gateway.toml")]
    pub config: PathBuf,
    /// Mint an admin API token (needs --scopes) instead of an initial access token.
    #[arg(long, requires = "scopes")]
    pub admin: bool,
    /// Admin scopes, comma-separated: read:network_acls, create:network_acls,
    /// update:network_acls, delete:network_acls, read:tenant_settings, update:tenant_settings.
    #[arg(long, value_delimiter = ',', requires = "admin")]
    pub scopes: Vec<String>,
}

fn parse_lifetime(s: &str) -> Result<Duration, String> {
    match humantime::parse_duration(s) {
        Ok(d) if d.is_zero() => Err("must be longer than 0".into()),
        Ok(d) => Ok(d),
        Err(e) => Err(format!("{e} (e.g. 30d, 12h, 90m, 3600s)")),
    }
}

pub fn token(a: &TokenArgs) -> i32 {
    match &a.command {
        TokenCommand::New(n) => match new(n) {
            Ok(()) => 0,
            Err((code, msg)) => {
                eprintln!("error: {msg}");
                code
            }
        },
    }
}

type Failure = (i32, String);

fn new(a: &TokenNewArgs) -> Result<(), Failure> {
    let usage = |m: String| (2, m);
    if !tokens::is_valid_label(&a.label) {
        return Err(usage(format!("--label {:?}: must be 1 to 64 characters of A-Z a-z 0-9 . _ -", a.label)));
    }
    let mut scopes: Vec<String> = Vec::new();
    for s in a.scopes.iter().map(|s| s.trim()).filter(|s| !s.is_empty()) {
        if !ADMIN_SCOPES.contains(&s) {
            return Err(usage(format!("--scopes: unknown scope {s:?} (one of {})", ADMIN_SCOPES.join(", "))));
        }
        if !scopes.iter().any(|x| x == s) {
            scopes.push(s.to_string());
        }
    }
    if a.admin && scopes.is_empty() {
        return Err(usage("--admin needs at least one scope in --scopes".into()));
    }
    let path = match &a.file {
        Some(f) => f.clone(),
        None => token_file_from_config(&a.config, a.admin).map_err(usage)?,
    };

    let previous = match std::fs::read_to_string(&path) {
        Ok(t) => Some(t),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err((1, format!("{}: {e}", path.display()))),
    };
    if let Some(text) = &previous {
        let set = TokenSet::parse(text).map_err(|errs| {
            (1, format!("{}: the token file is invalid, fix it first:\n  {}", path.display(), errs.join("\n  ")))
        })?;
        if set.get(&a.label).is_some() {
            return Err((1, format!("{}: label {:?} is already used", path.display(), a.label)));
        }
    }

    let token = tokens::generate_token(a.admin);
    let now = SystemTime::now();
    let expires_at = match a.expires {
        None => None,
        Some(d) => Some(now.checked_add(d).ok_or_else(|| usage("--expires: too far in the future".into()))?),
    };
    let mut entry = String::new();
    if previous.as_deref().is_some_and(|t| !t.is_empty() && !t.ends_with('\n')) {
        entry.push('\n');
    }
    if previous.as_deref().is_some_and(|t| !t.trim().is_empty()) {
        entry.push('\n');
    }
    entry.push_str(&format!(
        "[[token]]\nlabel = \"{}\"\nsha256 = \"{}\"\ncreated_at = \"{}\"\n",
        a.label,
        tokens::hash_token(&token),
        humantime::format_rfc3339_seconds(now)
    ));
    if let Some(t) = expires_at {
        entry.push_str(&format!("expires_at = \"{}\"\n", humantime::format_rfc3339_seconds(t)));
    }
    if let Some(n) = a.max_uses {
        entry.push_str(&format!("max_uses = {n}\n"));
    }
    if !scopes.is_empty() {
        let list: Vec<String> = scopes.iter().map(|s| format!("\"{s}\"")).collect();
        entry.push_str(&format!("scopes = [{}]\n", list.join(", ")));
    }

    append(&path, &entry).map_err(|e| (1, format!("{}: {e}", path.display())))?;
    // Prove the whole file still parses; otherwise put the old contents back.
    let check = std::fs::read_to_string(&path)
        .map_err(|e| e.to_string())
        .and_then(|t| TokenSet::parse(&t).map_err(|e| e.join("; ")));
    if let Err(e) = check {
        let restored = match &previous {
            Some(text) => std::fs::write(&path, text),
            None => std::fs::remove_file(&path),
        };
        let note = match restored {
            Ok(()) => "previous contents restored".to_string(),
            Err(r) => format!("could not restore the previous contents: {r}"),
        };
        return Err((1, format!("{}: the file no longer parses after appending ({e}); {note}", path.display())));
    }

    warn_if_readable(&path);
    println!("{token}");
    let kind = if a.admin { "admin token" } else { "initial access token" };
    eprintln!(
        "{kind} {:?} (sha256 {}…) appended to {}{}{}. The token is shown only this once.",
        a.label,
        &tokens::hash_token(&token)[..8],
        path.display(),
        expires_at.map(|t| format!("; expires {}", humantime::format_rfc3339_seconds(t))).unwrap_or_default(),
        a.max_uses.map(|n| format!("; max {n} uses")).unwrap_or_default(),
    );
    Ok(())
}

/// `[dcr] token_file` (or `[admin] tokens_file`) of the configuration, resolved against the
/// configuration's directory. Read from the raw TOML: the file need not be a complete config.
fn token_file_from_config(config: &Path, admin: bool) -> Result<PathBuf, String> {
    let text = std::fs::read_to_string(config).map_err(|e| format!("{}: {e} (or pass --file)", config.display()))?;
    let table: toml::Table = toml::from_str(&text).map_err(|e| format!("{}: {}", config.display(), e.message()))?;
    let (section, key) = if admin { ("admin", "tokens_file") } else { ("dcr", "token_file") };
    let value = table.get(section).and_then(|s| s.get(key));
    let file = match value {
        Some(toml::Value::String(f)) if !f.is_empty() => f,
        Some(_) => return Err(format!("{}: {section}.{key}: must be a non-empty string", config.display())),
        None => return Err(format!("{}: [{section}] {key} is not set (set it, or pass --file)", config.display())),
    };
    let base = config.parent().unwrap_or(Path::new(""));
    Ok(base.join(file))
}

fn append(path: &Path, text: &str) -> std::io::Result<()> {
    let mut opts = std::fs::OpenOptions::new();
    opts.append(true).create(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(path)?;
    f.write_all(text.as_bytes())?;
    f.sync_all()
}

fn warn_if_readable(path: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(m) = std::fs::metadata(path) {
            let mode = m.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                eprintln!(
                    "warning: {} has mode {mode:04o}; the hashes are safe to read but `chmod 600` is advised",
                    path.display()
                );
            }
        }
    }
    #[cfg(not(unix))]
    let _ = path;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(dir: &Path, label: &str) -> TokenNewArgs {
        TokenNewArgs {
            label: label.into(),
            expires: None,
            max_uses: None,
            file: Some(dir.join("tokens.toml")),
            config: PathBuf::from("unused"),
            admin: false,
            scopes: Vec::new(),
        }
    }

    #[test]
    fn appends_entries_and_refuses_duplicates() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens.toml");
        let a = TokenNewArgs {
            expires: Some(parse_lifetime("30d").unwrap()),
            max_uses: Some(100),
            ..args(dir.path(), "partner-x")
        };
        new(&a).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        }
        let b = TokenNewArgs {
            admin: true,
            scopes: vec!["read:network_acls".into(), "update:tenant_settings".into()],
            ..args(dir.path(), "ops")
        };
        new(&b).unwrap();
        let set = TokenSet::parse(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(set.len(), 2);
        let x = set.get("partner-x").unwrap();
        assert_eq!(x.max_uses, Some(100));
        let left = x.expires_at.unwrap().duration_since(SystemTime::now()).unwrap();
        assert!(left > Duration::from_secs(29 * 86400) && left <= Duration::from_secs(30 * 86400));
        assert!(x.created_at.is_some());
        assert_eq!(set.get("ops").unwrap().scopes, ["read:network_acls", "update:tenant_settings"]);

        let (code, msg) = new(&args(dir.path(), "partner-x")).unwrap_err();
        assert_eq!(code, 1);
        assert!(msg.contains("already used"), "{msg}");
        assert_eq!(new(&args(dir.path(), "bad label")).unwrap_err().0, 2);
        let bad_scope = TokenNewArgs { admin: true, scopes: vec!["root".into()], ..args(dir.path(), "y") };
        assert_eq!(new(&bad_scope).unwrap_err().0, 2);
        assert_eq!(TokenSet::parse(&std::fs::read_to_string(&path).unwrap()).unwrap().len(), 2);
    }

    #[test]
    fn refuses_an_invalid_file_and_appends_to_one_without_final_newline() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens.toml");
        std::fs::write(&path, "[[token]]\nlabel = 5\n").unwrap();
        let (code, msg) = new(&args(dir.path(), "a")).unwrap_err();
        assert_eq!(code, 1);
        assert!(msg.contains("token[0]: label: must be a string"), "{msg}");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "[[token]]\nlabel = 5\n", "untouched");

        std::fs::write(&path, format!("# tokens\n[[token]]\nlabel = \"a\"\nsha256 = \"{}\"", tokens::hash_token("t")))
            .unwrap();
        new(&args(dir.path(), "b")).unwrap();
        let set = TokenSet::parse(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(set.entries().iter().map(|e| e.label.as_str()).collect::<Vec<_>>(), ["a", "b"]);
    }

    #[test]
    fn file_from_config() {
        let dir = tempfile::tempdir().unwrap();
        let conf = dir.path().join("gateway.toml");
        std::fs::write(
            &conf,
            "[dcr]\ntoken_file = \"secrets/iat.toml\"\n[admin]\ntokens_file = \"/etc/dcr/admin.toml\"\n",
        )
        .unwrap();
        assert_eq!(token_file_from_config(&conf, false).unwrap(), dir.path().join("secrets/iat.toml"));
        assert_eq!(token_file_from_config(&conf, true).unwrap(), PathBuf::from("/etc/dcr/admin.toml"));
        std::fs::write(&conf, "[dcr]\nenabled = true\n").unwrap();
        assert!(token_file_from_config(&conf, false).unwrap_err().contains("[dcr] token_file is not set"));
        assert!(token_file_from_config(&conf, true).unwrap_err().contains("[admin] tokens_file is not set"));
    }

    #[test]
    fn lifetimes() {
        assert_eq!(parse_lifetime("30d"), Ok(Duration::from_secs(30 * 86400)));
        assert_eq!(parse_lifetime("12h"), Ok(Duration::from_secs(12 * 3600)));
        assert_eq!(parse_lifetime("90m"), Ok(Duration::from_secs(90 * 60)));
        assert_eq!(parse_lifetime("3600s"), Ok(Duration::from_secs(3600)));
        assert!(parse_lifetime("0s").is_err());
        assert!(parse_lifetime("soon").is_err());
    }
}
