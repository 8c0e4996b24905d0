//! Build metadata for `dcr_gateway_build_info{version, commit}`: the commit comes from
//! `DCR_GATEWAY_COMMIT` when set (release pipelines, builds outside git), else from
//! `git rev-parse`, else `unknown`.

use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    if !out.status.success() {
        return None;
    }
    let s = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (!s.is_empty()).then_some(s)
}

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=DCR_GATEWAY_COMMIT");
    let commit = match std::env::var("DCR_GATEWAY_COMMIT") {
        Ok(c) if !c.trim().is_empty() => c.trim().to_string(),
        _ => {
            // Re-run when HEAD moves: HEAD itself (branch switch), the branch's ref (commit) and
            // packed-refs (gc). Only files that exist are named: cargo counts a named file that
            // is missing as changed, which rebuilt the whole crate on every build in a clone
            // without packed-refs.
            if let Some(dir) = git(&["rev-parse", "--absolute-git-dir"]) {
                // Refs live in the common directory, which differs from `dir` in a linked
                // worktree (`.git/worktrees/<name>`); relative answers are against the manifest
                // directory, the build script's working directory.
                let common = git(&["rev-parse", "--git-common-dir"])
                    .map(|c| std::path::Path::new(&c).canonicalize().map(|p| p.display().to_string()).unwrap_or(c))
                    .unwrap_or_else(|| dir.clone());
                let mut watched = vec![format!("{dir}/HEAD"), format!("{common}/packed-refs")];
                if let Some(r) = git(&["symbolic-ref", "-q", "HEAD"]) {
                    // The branch's directory, not its file: a packed branch has no file until
                    // its next commit writes one (cargo scans a named directory's contents).
                    let branch = format!("{common}/{r}");
                    let parent = std::path::Path::new(&branch).parent().map(|p| p.display().to_string());
                    watched.extend(parent);
                }
                for path in watched.iter().filter(|p| std::path::Path::new(p).exists()) {
                    println!("cargo:rerun-if-changed={path}");
                }
            }
            git(&["rev-parse", "--short=12", "HEAD"]).unwrap_or_else(|| "unknown".into())
        }
    };
    // A label value: keep it to what a commit id or a version tag can hold.
    let commit: String =
        commit.chars().filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '+')).take(64).collect();
    let commit = if commit.is_empty() { "unknown".to_string() } else { commit };
    println!("cargo:rustc-env=DCR_GATEWAY_COMMIT={commit}");
}
