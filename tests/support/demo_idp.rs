//! The demo IdP (node-oidc-provider, `deploy/demo-idp/server.mjs`) as a child process of a test:
//! a free port, the issuer the test chooses (the gateway's address, so discovery rewriting is
//! what keeps clients on the gateway), every request it receives recorded to a JSON-lines file,
//! readiness polled, killed on drop.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub struct DemoIdp {
    child: Child,
    pub port: u16,
    /// `DEMO_IDP_RECORD`: one JSON line per request the IdP received.
    pub record: PathBuf,
}

impl DemoIdp {
    /// Start it in `dir` (its log and record file live there), believing it is served at
    /// `http://127.0.0.1:{issuer_port}`.
    ///
    /// One retry on a fresh port: once in a fresh-clone CI run a node process stayed silent
    /// for the whole minute after its first line (its log held only oidc-provider's runtime
    /// warning), where it normally listens within a second. A start that fails twice, or a
    /// process that exits, fails the test with both logs.
    pub fn start(dir: &Path, issuer_port: u16) -> DemoIdp {
        let record = dir.join("idp-record.jsonl");
        let mut logs = Vec::new();
        for attempt in 0..2 {
            let port = super::free_port();
            let log = dir.join(format!("idp-{attempt}.log"));
            let child = Command::new("node")
                .arg(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("deploy/demo-idp/server.mjs"))
                .env("HOST", "127.0.0.1")
                .env("PORT", port.to_string())
                .env("ISSUER", format!("http://127.0.0.1:{issuer_port}"))
                .env("DEMO_IDP_RECORD", &record)
                .stdout(Stdio::null())
                .stderr(Stdio::from(std::fs::File::create(&log).unwrap()))
                .spawn()
                .expect("node is installed (make test runs npm ci for the demo IdP)");
            // Dropped (killed) unless it comes up.
            let mut idp = DemoIdp { child, port, record: record.clone() };
            let mut exited = None;
            let up = super::wait_until(Duration::from_secs(30), || {
                exited = idp.child.try_wait().ok().flatten();
                exited.is_some() || std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
            });
            if up && exited.is_none() {
                return idp;
            }
            let _ = idp.child.kill();
            let _ = idp.child.wait();
            logs.push(format!(
                "attempt {attempt} ({}): {}",
                exited.map(|s| s.to_string()).unwrap_or_else(|| "not listening after 30 s".into()),
                std::fs::read_to_string(&log).unwrap_or_default()
            ));
            if exited.is_some() {
                break;
            }
        }
        panic!("demo IdP did not start: {}", logs.join("\n"));
    }

    pub fn origin(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for DemoIdp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
