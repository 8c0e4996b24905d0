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
    pub fn start(dir: &Path, issuer_port: u16) -> DemoIdp {
        let port = super::free_port();
        let record = dir.join("idp-record.jsonl");
        let log = dir.join("idp.log");
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
        let idp = DemoIdp { child, port, record };
        assert!(
            super::wait_until(Duration::from_secs(60), || std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()),
            "demo IdP did not start: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        idp
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
