//! Observability: Prometheus metrics, the audit log and logging setup. (The admin listener
//! that serves /metrics is an adapter: `admin::listener`.)

pub mod audit;
pub mod logging;
pub mod metrics;
pub mod phases;

pub use crate::core::outcome::Outcome;
pub use audit::{AuditLine, AuditLog};
pub use metrics::Metrics;

/// Write this process's id to `[server] pid_file` (Pingora writes it only when it daemonizes;
/// the gateway runs in the foreground under systemd, Kubernetes and `make run`, and the
/// graceful-upgrade recipe reads the file). Called once the listening sockets are in hand —
/// for `run --upgrade` that is after the old process handed them over, so a `kill -QUIT
/// "$(cat pid_file)"` issued before that still reaches the old process. Written to a
/// temporary file and renamed, so a reader never sees a partial id. Empty path: not written.
pub fn write_pid_file(path: &str) -> std::io::Result<()> {
    if path.trim().is_empty() {
        return Ok(());
    }
    let path = std::path::Path::new(path);
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".{}.tmp", std::process::id()));
    let tmp = std::path::PathBuf::from(tmp);
    std::fs::write(&tmp, format!("{}\n", std::process::id()))?;
    std::fs::rename(&tmp, path).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_pid_file_holds_this_process_id() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("gw.pid");
        std::fs::write(&p, "1\n").unwrap();
        super::write_pid_file(p.to_str().unwrap()).unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), format!("{}\n", std::process::id()));
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1, "no temporary file left");
        assert!(super::write_pid_file(dir.path().join("missing/gw.pid").to_str().unwrap()).is_err());
        super::write_pid_file("").unwrap();
    }
}
