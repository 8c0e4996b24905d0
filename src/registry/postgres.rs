//! The fleet registry store: PostgreSQL (`[registry] backend = "postgres"`, `url`), shared by
//! every replica. One connection for writes and a small pool for queries (so a registration's
//! cap counts and de-duplication lookup never wait behind the worker's batch), each behind a
//! mutex and reconnected after it breaks; the statements
//! are those of the SQLite backend (`$n` parameters are PostgreSQL's own). Migrations run
//! under a transaction-scoped advisory lock, so replicas starting together migrate once.
//!
//! The connection is TLS when the URL says `sslmode=require`: the server's certificate is then
//! verified (chain and host name, like libpq's `verify-full`) against `[registry] ca_file` or
//! the system's roots, at TLS 1.2 or later. Otherwise it is plain TCP or a Unix socket — for a
//! private network or a local socket; `prefer` does not encrypt (no unverified opportunistic
//! TLS that an attacker in the path could strip or answer). Errors keep the server's severity, code and message, never the `DETAIL`
//! line (which can quote a row's values).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};

use openssl::ssl::{SslConnector, SslMethod, SslVersion};
use postgres::types::ToSql;
use postgres::{Client, NoTls};
use postgres_openssl::MakeTlsConnector;

use crate::config::schema::RegistrySection;

use super::store::{Backend, Cell, Kind, StoreError, P};

/// The advisory lock key of migrations ("dcrreg" in ASCII, shifted one byte).
const MIGRATION_LOCK: i64 = 0x0064_6372_7265_6700;

/// Connections for queries, opened when first needed.
const READERS: usize = 2;

pub struct Postgres {
    url: String,
    tls: Connector,
    client: Mutex<Option<Client>>,
    readers: Vec<Mutex<Option<Client>>>,
    next_reader: AtomicUsize,
}

/// How each connection is opened: decided once from the URL and `ca_file`.
#[derive(Clone)]
enum Connector {
    Plain,
    Tls(MakeTlsConnector),
}

impl Connector {
    /// `sslmode=require`: verified TLS (the rules: [`RegistrySection::postgres_tls`]).
    fn for_url(url: &str, ca_file: Option<&std::path::Path>) -> Result<Connector, StoreError> {
        let ca_text = ca_file.map(|p| p.display().to_string());
        match RegistrySection::postgres_tls(url, ca_text.as_deref()) {
            Err((key, message)) => return Err(StoreError::new("postgres", format!("{key}: {message}"))),
            Ok(false) => return Ok(Connector::Plain),
            Ok(true) => {}
        }
        let tls = |e: openssl::error::ErrorStack| StoreError::new("postgres", format!("TLS setup: {e}"));
        // The builder starts from the system's default verify paths and verifies the peer.
        let mut builder = SslConnector::builder(SslMethod::tls_client()).map_err(tls)?;
        builder.set_min_proto_version(Some(SslVersion::TLS1_2)).map_err(tls)?;
        if let Some(ca) = ca_file {
            // The configured CA replaces the system's roots (libpq's sslrootcert does too).
            super::http::trust_only(&mut builder, ca)
                .map_err(|e| StoreError::new("postgres", format!("registry.ca_file: {e}")))?;
        }
        Ok(Connector::Tls(MakeTlsConnector::new(builder.build())))
    }

    fn connect(&self, url: &str) -> Result<Client, postgres::Error> {
        match self {
            Connector::Plain => Client::connect(url, NoTls),
            Connector::Tls(tls) => Client::connect(url, tls.clone()),
        }
    }
}

/// One more connection made as the store's are (TLS when the URL asks for it), named
/// `application_name` in `pg_stat_activity`: the admin documents' listener.
pub fn connect_named(
    url: &str,
    ca_file: Option<&std::path::Path>,
    application_name: &str,
) -> Result<Client, StoreError> {
    let tls = Connector::for_url(url, ca_file)?;
    let mut config: postgres::Config = url.parse().map_err(err)?;
    config.application_name(application_name);
    match tls {
        Connector::Plain => config.connect(NoTls),
        Connector::Tls(tls) => config.connect(tls),
    }
    .map_err(err)
}

fn err(e: postgres::Error) -> StoreError {
    match e.as_db_error() {
        Some(db) => StoreError::new("postgres", format!("{} {}: {}", db.severity(), db.code().code(), db.message())),
        // Connection-level errors, with their causes (a TLS handshake's says why the
        // certificate failed); the URL (and its password) is never part of them.
        None => StoreError::new("postgres", crate::config::schema::error_with_causes(&e)),
    }
}

fn boxed(params: &[P<'_>]) -> Vec<Box<dyn ToSql + Sync>> {
    params
        .iter()
        .map(|p| -> Box<dyn ToSql + Sync> {
            match p {
                P::I(v) => Box::new(*v),
                P::T(v) => Box::new(v.map(str::to_string)),
            }
        })
        .collect()
}

impl Postgres {
    /// Connect once (the URL is checked here); later calls reconnect when the connection broke.
    /// `ca_file`: the PEM certificates that verify the server (TLS only).
    pub fn connect(url: &str, ca_file: Option<&std::path::Path>) -> Result<Postgres, StoreError> {
        let tls = Connector::for_url(url, ca_file)?;
        let client = tls.connect(url).map_err(err)?;
        Ok(Postgres {
            url: url.to_string(),
            tls,
            client: Mutex::new(Some(client)),
            readers: (0..READERS).map(|_| Mutex::new(None)).collect(),
            next_reader: AtomicUsize::new(0),
        })
    }

    fn with<T>(&self, f: impl FnOnce(&mut Client) -> Result<T, postgres::Error>) -> Result<T, StoreError> {
        self.on(self.client.lock().unwrap_or_else(|p| p.into_inner()), f)
    }

    /// A free reader, else the next one in turn.
    fn reading<T>(&self, f: impl FnOnce(&mut Client) -> Result<T, postgres::Error>) -> Result<T, StoreError> {
        let free = self.readers.iter().find_map(|r| r.try_lock().ok());
        let guard = free.unwrap_or_else(|| {
            let i = self.next_reader.fetch_add(1, Ordering::Relaxed) % self.readers.len();
            self.readers[i].lock().unwrap_or_else(|p| p.into_inner())
        });
        self.on(guard, f)
    }

    fn on<T>(
        &self,
        mut guard: MutexGuard<'_, Option<Client>>,
        f: impl FnOnce(&mut Client) -> Result<T, postgres::Error>,
    ) -> Result<T, StoreError> {
        if guard.as_ref().is_none_or(|c| c.is_closed()) {
            *guard = Some(self.tls.connect(&self.url).map_err(err)?);
        }
        let client = guard.as_mut().expect("connected above");
        let r = f(client);
        if client.is_closed() {
            *guard = None;
        }
        r.map_err(err)
    }
}

impl Backend for Postgres {
    fn name(&self) -> &'static str {
        "postgres"
    }

    fn exec(&self, sql: &str, params: &[P<'_>]) -> Result<u64, StoreError> {
        let owned = boxed(params);
        let refs: Vec<&(dyn ToSql + Sync)> = owned.iter().map(|b| b.as_ref()).collect();
        self.with(|c| c.execute(sql, &refs))
    }

    fn query(&self, sql: &str, params: &[P<'_>], kinds: &[Kind]) -> Result<Vec<Vec<Cell>>, StoreError> {
        let owned = boxed(params);
        let refs: Vec<&(dyn ToSql + Sync)> = owned.iter().map(|b| b.as_ref()).collect();
        let rows = self.reading(|c| c.query(sql, &refs))?;
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let mut cells = Vec::with_capacity(kinds.len());
            for (i, k) in kinds.iter().enumerate() {
                cells.push(match k {
                    Kind::I => Cell::I(row.try_get::<_, Option<i64>>(i).map_err(err)?),
                    Kind::T => Cell::T(row.try_get::<_, Option<String>>(i).map_err(err)?),
                });
            }
            out.push(cells);
        }
        Ok(out)
    }

    fn exec_many(&self, sql: &str, rows: &[Vec<P<'_>>]) -> Result<u64, StoreError> {
        self.with(|c| {
            let mut tx = c.transaction()?;
            let stmt = tx.prepare(sql)?;
            let mut n = 0;
            for r in rows {
                let owned = boxed(r);
                let refs: Vec<&(dyn ToSql + Sync)> = owned.iter().map(|b| b.as_ref()).collect();
                n += tx.execute(&stmt, &refs)?;
            }
            tx.commit()?;
            Ok(n)
        })
    }

    fn migrate(&self, migrations: &[&str]) -> Result<(i64, i64), StoreError> {
        self.with(|c| {
            let mut tx = c.transaction()?;
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])?;
            tx.batch_execute("CREATE TABLE IF NOT EXISTS registry_schema (version BIGINT NOT NULL)")?;
            let from: i64 = tx.query_one("SELECT COALESCE(MAX(version), 0)::BIGINT FROM registry_schema", &[])?.get(0);
            let mut to = from;
            for (i, m) in migrations.iter().enumerate() {
                let v = i as i64 + 1;
                if v > from {
                    tx.batch_execute(m)?;
                    to = v;
                }
            }
            if to != from {
                tx.execute("DELETE FROM registry_schema", &[])?;
                tx.execute("INSERT INTO registry_schema (version) VALUES ($1)", &[&to])?;
            }
            tx.commit()?;
            Ok((from, to))
        })
    }
}
