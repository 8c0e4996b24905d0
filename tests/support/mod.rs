//! Shared harness for the integration tests: free ports, the gateway binary as a child
//! process (killed on drop), an in-process upstream that records what it receives, and
//! readiness polling instead of sleeps.
#![allow(dead_code)]

pub mod certs;
pub mod demo_idp;
pub mod glewlwyd;
pub mod postgres;
pub mod raw_upstream;
pub mod redis_server;
pub mod upstream;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_dcr-gateway");

/// A long rate-limit window (≤ 31 days, the maximum) whose current period has more than an
/// hour left: windows are aligned to the epoch, so the length is chosen from now instead of
/// waiting for a boundary to pass. Deterministic, no sleep.
pub fn long_window() -> u64 {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    (2_000_000..=2_678_400u64).rev().find(|w| w - now % w > 3600).unwrap()
}

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Poll `f` until it returns true, at most `timeout`.
pub fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(5);
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(100));
    }
    f()
}

pub struct Gateway {
    pub child: Option<Child>,
    pub dir: tempfile::TempDir,
    pub http: SocketAddr,
    pub admin: SocketAddr,
    pub stdout: PathBuf,
    pub stderr: PathBuf,
}

pub struct GatewayBuilder {
    upstream: String,
    extra: String,
    rules: Option<String>,
    files: Vec<(String, Vec<u8>)>,
    dcr: String,
    network: String,
    http_port: Option<u16>,
    listen_extra: String,
    acl_extra: String,
    threads: usize,
    server_extra: String,
    reload_extra: String,
    read_timeout_ms: u64,
}

impl GatewayBuilder {
    pub fn new(upstream_origin: &str) -> Self {
        GatewayBuilder {
            upstream: format!("origins = [\"{upstream_origin}\"]\n"),
            extra: String::new(),
            rules: None,
            files: Vec::new(),
            dcr: String::new(),
            network: "trusted_proxies = [\"127.0.0.1/32\"]\n".into(),
            http_port: None,
            listen_extra: String::new(),
            acl_extra: String::new(),
            threads: 2,
            server_extra: String::new(),
            reload_extra: String::new(),
            read_timeout_ms: 2000,
        }
    }
    /// `[server] threads` (2 unless set).
    pub fn threads(mut self, n: usize) -> Self {
        self.threads = n;
        self
    }
    /// `[upstream] read_timeout_ms` (2000 unless set): a real IdP on a loaded machine may need
    /// more than the recording upstream.
    pub fn read_timeout_ms(mut self, ms: u64) -> Self {
        self.read_timeout_ms = ms;
        self
    }
    /// Extra keys for [reload].
    pub fn reload_keys(mut self, keys: &str) -> Self {
        self.reload_extra.push_str(keys);
        self.reload_extra.push('\n');
        self
    }
    /// Extra keys for [server].
    pub fn server_keys(mut self, keys: &str) -> Self {
        self.server_extra.push_str(keys);
        self.server_extra.push('\n');
        self
    }
    /// Extra keys for [upstream].
    pub fn upstream_keys(mut self, keys: &str) -> Self {
        self.upstream.push_str(keys);
        self.upstream.push('\n');
        self
    }
    /// Replace the [network] section body.
    pub fn network(mut self, body: &str) -> Self {
        self.network = body.to_string();
        self
    }
    /// Listen on this port instead of a fresh free one.
    pub fn http_port(mut self, port: u16) -> Self {
        self.http_port = Some(port);
        self
    }
    /// Extra keys for [listen].
    pub fn listen_extra(mut self, keys: &str) -> Self {
        self.listen_extra.push_str(keys);
        self.listen_extra.push('\n');
        self
    }
    /// Extra keys for [acl].
    pub fn acl_keys(mut self, keys: &str) -> Self {
        self.acl_extra.push_str(keys);
        self.acl_extra.push('\n');
        self
    }
    /// Keys for [dcr].
    pub fn dcr(mut self, keys: &str) -> Self {
        self.dcr.push_str(keys);
        self.dcr.push('\n');
        self
    }
    pub fn rules(mut self, json: &str) -> Self {
        self.rules = Some(json.to_string());
        self
    }
    pub fn file(mut self, name: &str, bytes: Vec<u8>) -> Self {
        self.files.push((name.to_string(), bytes));
        self
    }
    /// Whole extra sections appended verbatim.
    pub fn extra(mut self, toml: &str) -> Self {
        self.extra.push_str(toml);
        self.extra.push('\n');
        self
    }

    /// Starts the gateway. A free port picked for it may be taken by another test's server
    /// before the gateway binds it; the gateway then refuses to start ("address already in
    /// use") and is started again on fresh ports (unless the test fixed the HTTP port).
    pub fn start(self) -> Gateway {
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.try_start() {
                Ok(gw) => return gw,
                Err(why) if attempt < 3 && self.http_port.is_none() && port_taken(&why) => {}
                Err(why) => panic!("{why}"),
            }
        }
    }

    pub fn try_start(&self) -> Result<Gateway, String> {
        let dir = tempfile::tempdir().unwrap();
        let http: SocketAddr = format!("127.0.0.1:{}", self.http_port.unwrap_or_else(free_port)).parse().unwrap();
        let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        for (name, bytes) in &self.files {
            std::fs::write(dir.path().join(name), bytes).unwrap();
        }
        let acl = match &self.rules {
            Some(r) => {
                std::fs::write(dir.path().join("rules.json"), r).unwrap();
                format!("[acl]\nrules = \"rules.json\"\n{}", self.acl_extra)
            }
            None => format!("[acl]\n{}", self.acl_extra),
        };
        let config = format!(
            "[server]\nthreads = {threads}\npid_file = \"{pid}\"\nupgrade_sock = \"{sock}\"\ngraceful_shutdown_timeout_seconds = 5\n{server_extra}\
             [listen]\nhttp = [\"{http}\"]\nadmin = \"{admin}\"\n{listen_extra}\n\
             [upstream]\n{up}connect_timeout_ms = 1000\nread_timeout_ms = {read_timeout_ms}\nhealth_check_interval_ms = 200\n\
             [network]\n{net}\n{acl}\n[dcr]\n{dcr}\n[reload]\ndebounce_ms = 50\n{reload_extra}\n{extra}",
            pid = dir.path().join("gw.pid").display(),
            sock = dir.path().join("upgrade.sock").display(),
            threads = self.threads,
            server_extra = self.server_extra,
            reload_extra = self.reload_extra,
            read_timeout_ms = self.read_timeout_ms,
            up = self.upstream,
            net = self.network,
            dcr = self.dcr,
            extra = self.extra,
            listen_extra = self.listen_extra,
        );
        std::fs::write(dir.path().join("gateway.toml"), config).unwrap();
        let stdout = dir.path().join("stdout.log");
        let stderr = dir.path().join("stderr.log");
        let child = Command::new(BIN)
            .args(["run", "-c"])
            .arg(dir.path().join("gateway.toml"))
            .env("RUST_LOG", "info")
            .stdout(Stdio::from(std::fs::File::create(&stdout).unwrap()))
            .stderr(Stdio::from(std::fs::File::create(&stderr).unwrap()))
            .spawn()
            .unwrap();
        let mut gw = Gateway { child: Some(child), dir, http, admin, stdout, stderr };
        gw.wait_ready()?;
        Ok(gw)
    }
}

/// The gateway refused a port another process holds: at its own check ("address already in
/// use"), or — taken in the instant before Pingora's bind — after Pingora's retries.
fn port_taken(why: &str) -> bool {
    let why = why.to_ascii_lowercase();
    why.contains("address already in use") || why.contains("a listener could not be opened")
}

impl Gateway {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.http, path)
    }
    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{}", self.admin, path)
    }
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
    pub fn config_path(&self) -> PathBuf {
        self.path("gateway.toml")
    }

    fn wait_ready(&mut self) -> Result<(), String> {
        let config_sha = {
            use sha2::Digest;
            hex::encode(sha2::Sha256::digest(std::fs::read(self.config_path()).unwrap_or_default()))
        };
        let mut exited = None;
        // Longer than Pingora's 30 one-second bind retries, so a port lost in that instant
        // ends as an exit (and a retry on fresh ports), not as "did not become ready".
        let ok = wait_until(Duration::from_secs(40), || {
            if let Some(c) = self.child.as_mut() {
                if let Ok(Some(status)) = c.try_wait() {
                    exited = Some(status);
                    return true;
                }
            }
            // /readyz answers once the server runs; the upstream set is loaded (and health
            // checked once) before any listener opens, so an answer here means requests are
            // served. The answer must be this gateway's (its config's SHA-256): the gateway
            // refuses to start on a port another process holds, and this check keeps a
            // foreign admin listener from being taken for it.
            TcpStream::connect(self.http).is_ok() && readyz_is(self.admin, &config_sha)
        });
        if let Some(status) = exited {
            return Err(format!("gateway exited early with {status}: {}", self.stderr_text()));
        }
        if ok {
            Ok(())
        } else {
            Err(format!("gateway did not become ready: {}", self.stderr_text()))
        }
    }

    pub fn stderr_text(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }
    pub fn stdout_text(&self) -> String {
        std::fs::read_to_string(&self.stdout).unwrap_or_default()
    }
    /// Audit lines (JSON) written so far.
    pub fn audit_lines(&self) -> Vec<serde_json::Value> {
        self.stdout_text()
            .lines()
            .filter(|l| l.starts_with('{'))
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("audit line is not JSON ({e}): {l}")))
            .collect()
    }
    /// Wait until the audit log has at least `n` lines.
    pub fn wait_audit(&self, n: usize) -> Vec<serde_json::Value> {
        wait_until(Duration::from_secs(5), || self.audit_lines().len() >= n);
        self.audit_lines()
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().unwrap().id() as i32
    }

    /// Start the new process of a graceful upgrade (`run --upgrade` on the same configuration,
    /// stderr to `new.stderr.log`) and wait until it listens on the upgrade socket; the caller
    /// then sends SIGQUIT to this one. The returned child is the caller's to stop.
    pub fn spawn_upgrade(&self) -> (Child, PathBuf) {
        let new_stderr = self.path("new.stderr.log");
        let new = Command::new(BIN)
            .args(["run", "--upgrade", "-c"])
            .arg(self.config_path())
            .stdout(Stdio::null())
            .stderr(Stdio::from(std::fs::File::create(&new_stderr).unwrap()))
            .spawn()
            .unwrap();
        // Pingora's new process listens on the upgrade socket before it can receive the fds.
        assert!(
            wait_until(Duration::from_secs(20), || self.path("upgrade.sock").exists()),
            "new process waits on the upgrade socket"
        );
        (new, new_stderr)
    }

    pub fn signal(&self, sig: &str) {
        let st = Command::new("kill").args([&format!("-{sig}"), &self.pid().to_string()]).status().unwrap();
        assert!(st.success());
    }

    /// Wait for the process to exit; returns its status.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let mut status = None;
        let child = self.child.as_mut().unwrap();
        wait_until(timeout, || {
            status = child.try_wait().ok().flatten();
            status.is_some()
        });
        status
    }

    pub fn metrics(&self) -> String {
        http_get(&self.admin_url("/metrics")).1
    }

    /// Wait until a sample reaches at least `at_least` (metrics of a request are recorded in
    /// its logging phase, just after the client has its response). Returns the last value.
    pub fn wait_metric(&self, name_and_labels: &str, at_least: f64) -> f64 {
        let mut v = 0.0;
        wait_until(Duration::from_secs(5), || {
            v = self.metric(name_and_labels);
            v >= at_least
        });
        v
    }

    /// Value of one sample in the Prometheus text output, 0 when absent.
    pub fn metric(&self, name_and_labels: &str) -> f64 {
        metric_value(&self.metrics(), name_and_labels)
    }
}

pub fn metric_value(text: &str, name_and_labels: &str) -> f64 {
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix(name_and_labels) {
            if let Some(v) = rest.strip_prefix(' ') {
                return v.trim().parse().unwrap_or(0.0);
            }
        }
    }
    0.0
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The admin listener answers `/readyz` (200 ready or 503 not ready: both mean it runs).
/// `/readyz` on `admin` answers, from the gateway whose configuration file hashes to
/// `config_sha256`.
pub fn readyz_is(admin: SocketAddr, config_sha256: &str) -> bool {
    let text = match agent().get(&format!("http://{admin}/readyz")).call() {
        Ok(r) | Err(ureq::Error::Status(_, r)) => r.into_string().unwrap_or_default(),
        Err(_) => return false,
    };
    serde_json::from_str::<serde_json::Value>(&text).is_ok_and(|v| v["config_sha256"] == config_sha256)
}

pub fn agent() -> ureq::Agent {
    ureq::AgentBuilder::new().redirects(0).timeout(Duration::from_secs(10)).build()
}

/// (status, body) of a GET, whatever the status.
pub fn http_get(url: &str) -> (u16, String) {
    response_parts(agent().get(url).call())
}

/// A registration posted as from `ip` (`X-Forwarded-For`: the builder trusts 127.0.0.1).
pub fn register_from(gw: &Gateway, ip: &str, body: &str) -> (u16, String) {
    response_parts(
        agent()
            .post(&gw.url("/oidc/register"))
            .set("content-type", "application/json")
            .set("x-forwarded-for", ip)
            .send_string(body),
    )
}

pub fn response_parts(r: Result<ureq::Response, ureq::Error>) -> (u16, String) {
    match r {
        Ok(resp) => (resp.status(), resp.into_string().unwrap_or_default()),
        Err(ureq::Error::Status(code, resp)) => (code, resp.into_string().unwrap_or_default()),
        Err(e) => panic!("transport error: {e}"),
    }
}

/// Full response of a request sent byte for byte (for targets a client library would fix up).
pub fn raw_request(addr: SocketAddr, request: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(request).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

/// Status code of a raw HTTP/1.1 response.
pub fn raw_status(resp: &str) -> u16 {
    resp.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0)
}

pub fn write_file(path: &Path, text: &str) {
    // Replace atomically, as editors and the admin API do.
    let tmp = path.with_extension("tmp~");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}
