//! A real PostgreSQL server for the registry tests (Debian's `postgresql`: `initdb` and
//! `pg_ctl`), in a temporary directory, on a free loopback port, run as the unprivileged
//! `postgres` user when the tests run as root; stopped (immediate) and removed on drop. Each
//! test takes its own database ([`Postgres::database`]).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use super::{free_port, wait_until};

pub struct Postgres {
    dir: tempfile::TempDir,
    bin: PathBuf,
    as_postgres: bool,
    pub port: u16,
}

/// The directory holding `initdb` and `pg_ctl`: on the PATH, else Debian's versioned one.
fn bin_dir() -> PathBuf {
    if let Ok(out) = Command::new("sh").args(["-c", "command -v pg_ctl"]).output() {
        let p = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if !p.is_empty() {
            let real = std::fs::canonicalize(&p).unwrap_or_else(|_| PathBuf::from(&p));
            return real.parent().unwrap().to_path_buf();
        }
    }
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL is installed (scripts/prereqs.sh installs the postgresql package)")
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|p| p.join("pg_ctl").exists())
        .collect();
    versions.sort();
    versions.pop().expect("a PostgreSQL bin directory with pg_ctl")
}

fn is_root() -> bool {
    Command::new("id").arg("-u").output().map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0").unwrap_or(false)
}

impl Postgres {
    pub fn start() -> Postgres {
        Self::start_with(None)
    }

    /// A server that offers TLS with this certificate and key (PEM); plain connections are
    /// still accepted (`host` lines in the default pg_hba.conf), so the client's choice decides.
    pub fn start_tls(cert: &[u8], key: &[u8]) -> Postgres {
        Self::start_with(Some((cert, key)))
    }

    fn start_with(tls: Option<(&[u8], &[u8])>) -> Postgres {
        let dir = tempfile::tempdir().unwrap();
        let bin = bin_dir();
        let as_postgres = is_root();
        if as_postgres {
            let ok = Command::new("chown").arg("postgres:postgres").arg(dir.path()).status().unwrap().success();
            assert!(ok, "chown to the postgres user");
        }
        let pg = Postgres { dir, bin, as_postgres, port: free_port() };
        let data = pg.data();
        let out = pg
            .command("initdb")
            .args(["-A", "trust", "-U", "postgres", "-E", "UTF8", "--no-locale", "--no-sync", "-D"])
            .arg(&data)
            .output()
            .unwrap();
        assert!(out.status.success(), "initdb: {}", String::from_utf8_lossy(&out.stderr));
        let mut opts = format!(
            "-p {} -c listen_addresses=127.0.0.1 -k {} -c fsync=off -c synchronous_commit=off -c full_page_writes=off",
            pg.port,
            pg.dir.path().display()
        );
        if let Some((cert, key)) = tls {
            // The server refuses a key others can read; the files belong to its user.
            use std::os::unix::fs::PermissionsExt;
            let (cert_path, key_path) = (data.join("server.crt"), data.join("server.key"));
            std::fs::write(&cert_path, cert).unwrap();
            std::fs::write(&key_path, key).unwrap();
            std::fs::set_permissions(&key_path, std::fs::Permissions::from_mode(0o600)).unwrap();
            if pg.as_postgres {
                let ok =
                    Command::new("chown").arg("postgres:postgres").arg(&cert_path).arg(&key_path).status().unwrap();
                assert!(ok.success(), "chown the server's certificate and key");
            }
            opts.push_str(" -c ssl=on -c ssl_cert_file=server.crt -c ssl_key_file=server.key");
        }
        let out = pg
            .command("pg_ctl")
            .args(["-w", "-t", "60", "-D"])
            .arg(&data)
            .args(["-o", &opts, "-l"])
            .arg(pg.dir.path().join("postgres.log"))
            .arg("start")
            .stdout(Stdio::null())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "pg_ctl start: {} {}",
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(pg.dir.path().join("postgres.log")).unwrap_or_default()
        );
        assert!(wait_until(Duration::from_secs(30), || std::net::TcpStream::connect(("127.0.0.1", pg.port)).is_ok()));
        pg
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn command(&self, tool: &str) -> Command {
        let path = self.bin.join(tool);
        if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(path);
            c
        } else {
            Command::new(path)
        }
    }

    /// A connection string for database `db`.
    pub fn url(&self, db: &str) -> String {
        format!("host=127.0.0.1 port={} user=postgres dbname={db} connect_timeout=10", self.port)
    }

    /// Create a fresh database and return its connection string.
    pub fn database(&self, name: &str) -> String {
        let mut c = postgres::Client::connect(&self.url("postgres"), postgres::NoTls).unwrap();
        c.batch_execute(&format!("DROP DATABASE IF EXISTS {name}")).unwrap();
        c.batch_execute(&format!("CREATE DATABASE {name}")).unwrap();
        self.url(name)
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let _ = self
            .command("pg_ctl")
            .args(["-w", "-t", "30", "-m", "immediate", "-D"])
            .arg(self.data())
            .arg("stop")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}
