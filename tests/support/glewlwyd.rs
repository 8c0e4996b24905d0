//! Glewlwyd (Debian's `glewlwyd` package, 2.7.x) as a second, independently written OpenID
//! Provider for the end-to-end tests: a child process of the test (killed on drop) on a free
//! port, with its own SQLite database in a temp dir, configured through its admin REST API.
//! Every step is described in deploy/glewlwyd/README.md; deploy/glewlwyd/setup.sh does the same
//! by hand.
//!
//! What `Glewlwyd::start()` leaves running:
//! - `external_url` = its own address `http://127.0.0.1:<port>` (never the gateway's);
//! - an OpenID Connect plugin instance `oidc` (endpoints under `/api/oidc/`), issuer
//!   `http://127.0.0.1:<port>/api/oidc`, RS256 keys made for this run, open dynamic
//!   registration (`register-client-allowed`) and RFC 7592 management
//!   (`register-client-management-allowed`), PKCE S256;
//! - the package's default administrator `admin` / `password` (its session cookie is kept in
//!   `admin_cookie` for the admin API);
//! - a test user `USER` / `USER_PASSWORD` with the scopes `openid` and `g_profile`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::{agent, free_port, response_parts, wait_until};

pub const BIN: &str = "glewlwyd";
pub const ADMIN: &str = "admin";
/// The package's default administrator password (init.sqlite3.sql, GETTING_STARTED.md).
pub const ADMIN_PASSWORD: &str = "password";
pub const USER: &str = "alice";
pub const USER_PASSWORD: &str = "alice-password-1";
/// Name of the OIDC plugin instance: its endpoints are under `/api/<name>/`.
pub const PLUGIN: &str = "oidc";
/// The registration endpoint, as Glewlwyd's discovery document advertises it.
pub const REGISTRATION_PATH: &str = "/api/oidc/register";
/// Glewlwyd's administration APIs (API.md), for `[routes] management_prefixes`. `/api/auth`
/// and `/api/profile` are not among them: end users log in and grant scopes there.
pub const MANAGEMENT_PREFIXES: &[&str] =
    &["/api/mod/", "/api/user/", "/api/client/", "/api/scope/", "/api/key/", "/api/delegate/"];

/// Where the package ships the SQLite schema and default data: the documented file first, then
/// dbconfig-common's copy (the same statements without the leading DROP TABLEs), which survives
/// images that strip /usr/share/doc. `GLEWLWYD_INIT_SQL` overrides both.
const INIT_SQL: &[&str] = &[
    "/usr/share/doc/glewlwyd/database/init.sqlite3.sql.gz",
    "/usr/share/doc/glewlwyd/database/init.sqlite3.sql",
    "/usr/share/dbconfig-common/data/glewlwyd/install/sqlite3",
];

fn deploy_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("deploy/glewlwyd")
}

pub struct Glewlwyd {
    child: Option<Child>,
    pub dir: tempfile::TempDir,
    pub port: u16,
    /// The OIDC plugin's issuer (`iss` in its tokens, base of its discovery URL).
    pub issuer: String,
    /// `GLEWLWYD2_SESSION_ID=...` of the administrator's session.
    pub admin_cookie: String,
}

/// The package's SQL that creates and fills an empty database.
fn init_sql() -> String {
    let candidates: Vec<PathBuf> = match std::env::var_os("GLEWLWYD_INIT_SQL") {
        Some(p) => vec![PathBuf::from(p)],
        None => INIT_SQL.iter().map(PathBuf::from).collect(),
    };
    for path in &candidates {
        if !path.exists() {
            continue;
        }
        if path.extension().is_some_and(|e| e == "gz") {
            let out = Command::new("gzip").arg("-dc").arg(path).output().expect("gzip runs");
            assert!(out.status.success(), "gzip -dc {}: {}", path.display(), String::from_utf8_lossy(&out.stderr));
            return String::from_utf8(out.stdout).unwrap();
        }
        return std::fs::read_to_string(path).unwrap();
    }
    panic!("Glewlwyd's init.sqlite3.sql not found in {candidates:?}: run scripts/prereqs.sh (installs the glewlwyd package)");
}

fn sqlite(db: &Path, sql: &str) -> String {
    use std::io::Write;
    let mut child = Command::new("sqlite3")
        .arg("-batch")
        .arg(db)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("sqlite3 is installed (scripts/prereqs.sh)");
    child.stdin.take().unwrap().write_all(sql.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "sqlite3 {}: {}", db.display(), String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// RS256 key pair (PKCS#8 private, SPKI public, PEM) for the ID tokens of one run.
fn rsa_key_pair() -> (String, String) {
    let key = openssl::pkey::PKey::from_rsa(openssl::rsa::Rsa::generate(2048).unwrap()).unwrap();
    (
        String::from_utf8(key.private_key_to_pem_pkcs8().unwrap()).unwrap(),
        String::from_utf8(key.public_key_to_pem().unwrap()).unwrap(),
    )
}

impl Glewlwyd {
    /// Whether the `glewlwyd` binary is on PATH.
    pub fn installed() -> bool {
        Command::new(BIN).arg("--help").stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok()
    }

    /// Initialise a database, start Glewlwyd, wait until it answers, then configure it. Its
    /// issuer is its own `http://127.0.0.1:<port>/api/oidc`.
    pub fn start() -> Glewlwyd {
        Glewlwyd::launch(None)
    }

    /// Like `start`, with another issuer: the public URL clients know (the gateway's
    /// `<base>/api/oidc`, so that openid-client's issuer check passes through the gateway).
    /// `external_url` stays Glewlwyd's own address.
    pub fn start_with_issuer(issuer: &str) -> Glewlwyd {
        Glewlwyd::launch(Some(issuer.to_string()))
    }

    fn launch(issuer: Option<String>) -> Glewlwyd {
        assert!(Glewlwyd::installed(), "`glewlwyd` is not on PATH: run scripts/prereqs.sh (Debian package glewlwyd)");
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("glewlwyd.db");
        sqlite(&db, &init_sql());

        let port = free_port();
        let external = format!("http://127.0.0.1:{port}");
        let conf = std::fs::read_to_string(deploy_dir().join("glewlwyd.conf.in"))
            .unwrap()
            .replace("@PORT@", &port.to_string())
            .replace("@EXTERNAL_URL@", &external)
            .replace("@DB_PATH@", db.to_str().unwrap());
        let conf_path = dir.path().join("glewlwyd.conf");
        std::fs::write(&conf_path, conf).unwrap();
        let log = dir.path().join("glewlwyd.log");
        let child = Command::new(BIN)
            .arg(format!("--config-file={}", conf_path.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::from(std::fs::File::create(&log).unwrap()))
            .stderr(Stdio::from(std::fs::File::create(dir.path().join("glewlwyd.stderr")).unwrap()))
            .spawn()
            .expect("glewlwyd starts");
        let issuer = issuer.unwrap_or_else(|| format!("{external}/api/{PLUGIN}"));
        let mut g = Glewlwyd { child: Some(child), dir, port, issuer, admin_cookie: String::new() };

        // Ready when GET /config (served from the root, API.md) answers 200.
        let ok = wait_until(Duration::from_secs(20), || {
            if let Some(Ok(Some(status))) = g.child.as_mut().map(|c| c.try_wait()) {
                panic!("glewlwyd exited early with {status}: {}", g.log());
            }
            agent().get(&g.url("/config")).call().is_ok_and(|r| r.status() == 200)
        });
        assert!(ok, "glewlwyd did not answer /config: {}", g.log());

        g.admin_cookie = g.login(ADMIN, ADMIN_PASSWORD);
        g.add_oidc_plugin();
        g.add_user(USER, USER_PASSWORD);
        g
    }

    /// `http://127.0.0.1:<port><path>` — Glewlwyd's own address.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{}", self.port, path)
    }
    pub fn origin(&self) -> String {
        self.url("")
    }
    /// The issuer of the OIDC plugin instance (its discovery document is below it).
    pub fn issuer(&self) -> String {
        self.issuer.clone()
    }
    pub fn db_path(&self) -> PathBuf {
        self.dir.path().join("glewlwyd.db")
    }
    pub fn log(&self) -> String {
        let read = |n: &str| std::fs::read_to_string(self.dir.path().join(n)).unwrap_or_default();
        format!("{}{}", read("glewlwyd.log"), read("glewlwyd.stderr"))
    }

    /// POST /api/auth {username, password}: the session cookie (`name=value`).
    pub fn login(&self, username: &str, password: &str) -> String {
        let resp = agent()
            .post(&self.url("/api/auth/"))
            .send_json(serde_json::json!({ "username": username, "password": password }))
            .unwrap_or_else(|e| panic!("glewlwyd login as {username}: {e}: {}", self.log()));
        let cookie = resp.header("set-cookie").expect("a session cookie").to_string();
        cookie.split(';').next().unwrap().trim().to_string()
    }

    /// An admin API request with the administrator's session: (status, body).
    pub fn admin(&self, method: &str, path: &str, body: Option<serde_json::Value>) -> (u16, String) {
        let req = agent().request(method, &self.url(path)).set("cookie", &self.admin_cookie);
        response_parts(match body {
            Some(b) => req.send_json(b),
            None => req.call(),
        })
    }

    fn admin_ok(&self, method: &str, path: &str, body: serde_json::Value) {
        let (status, resp) = self.admin(method, path, Some(body));
        assert_eq!(status, 200, "glewlwyd {method} {path}: {resp}\n{}", self.log());
    }

    /// POST /api/mod/plugin/ with deploy/glewlwyd/oidc-plugin.json, issuer and keys filled in.
    fn add_oidc_plugin(&self) {
        let mut plugin: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(deploy_dir().join("oidc-plugin.json")).unwrap()).unwrap();
        let (private, public) = rsa_key_pair();
        let p = &mut plugin["parameters"];
        p["iss"] = self.issuer().into();
        p["key"] = private.into();
        p["cert"] = public.into();
        self.admin_ok("POST", "/api/mod/plugin/", plugin);
    }

    /// POST /api/user/ (the database backend): a user who may log in and grant `openid`.
    pub fn add_user(&self, username: &str, password: &str) {
        self.admin_ok(
            "POST",
            "/api/user/",
            serde_json::json!({
                "username": username,
                "password": password,
                "name": username,
                "email": format!("{username}@example.com"),
                "enabled": true,
                "scope": ["openid", "g_profile"],
            }),
        );
    }

    /// Every client Glewlwyd knows (GET /api/client/, admin API).
    pub fn clients(&self) -> Vec<serde_json::Value> {
        let (status, body) = self.admin("GET", "/api/client/?limit=1000", None);
        assert_eq!(status, 200, "GET /api/client/: {body}");
        serde_json::from_str(&body).unwrap()
    }

    /// One client by id (admin API): None when Glewlwyd does not know it.
    pub fn client(&self, client_id: &str) -> Option<serde_json::Value> {
        let (status, body) = self.admin("GET", &format!("/api/client/{client_id}"), None);
        match status {
            200 => Some(serde_json::from_str(&body).unwrap()),
            404 => None,
            other => panic!("GET /api/client/{client_id}: {other} {body}"),
        }
    }

    /// Rows of the client table, read from the database itself (independent of the API).
    pub fn client_rows(&self) -> usize {
        sqlite(&self.db_path(), "SELECT COUNT(*) FROM g_client;").trim().parse().unwrap()
    }
}

impl Drop for Glewlwyd {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
