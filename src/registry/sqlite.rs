//! The embedded registry store: one SQLite file (`[registry] path`) in WAL mode, nothing to
//! run. Two connections, each behind a mutex: one writes (the registry's worker thread, the
//! reaper, the admin API), one reads — WAL lets a reader run beside the writer, so a
//! de-duplication lookup or an admin listing never waits behind a batch being committed.

use std::path::Path;
use std::sync::Mutex;

use rusqlite::types::{ToSqlOutput, ValueRef};
use rusqlite::Connection;

use super::store::{Backend, Cell, Kind, StoreError, P};

pub struct Sqlite {
    conn: Mutex<Connection>,
    /// Queries only. A query that writes (`RETURNING`) would still be correct here: SQLite
    /// serialises writers across connections.
    reader: Mutex<Connection>,
}

fn err(e: rusqlite::Error) -> StoreError {
    StoreError::new("sqlite", e.to_string())
}

/// `$n` → `?n`: SQLite numbers `?NNN` parameters explicitly (its `$name` parameters are
/// numbered by first appearance, which a reused `$2` would break).
fn dialect(sql: &str) -> String {
    sql.replace('$', "?")
}

/// Parameters bound as borrowed values: a batch's texts (stored answers, sealed tokens) are
/// not copied once more on their way into SQLite.
impl rusqlite::ToSql for P<'_> {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(match self {
            P::I(Some(i)) => ToSqlOutput::Borrowed(ValueRef::Integer(*i)),
            P::T(Some(s)) => ToSqlOutput::Borrowed(ValueRef::Text(s.as_bytes())),
            P::I(None) | P::T(None) => ToSqlOutput::Borrowed(ValueRef::Null),
        })
    }
}

impl Sqlite {
    /// Open (or create) the file, in WAL mode, waiting up to 5 s for another process's lock.
    pub fn open(path: &Path) -> Result<Sqlite, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            if !dir.is_dir() {
                return Err(StoreError::new("sqlite", format!("directory {} does not exist", dir.display())));
            }
        }
        let open = || -> Result<Connection, StoreError> {
            let conn = Connection::open(path).map_err(err)?;
            conn.busy_timeout(std::time::Duration::from_secs(5)).map_err(err)?;
            let mode: String = conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0)).map_err(err)?;
            if !mode.eq_ignore_ascii_case("wal") {
                return Err(StoreError::new("sqlite", format!("journal_mode stayed {mode}, not wal")));
            }
            conn.execute_batch("PRAGMA synchronous=NORMAL; PRAGMA foreign_keys=ON;").map_err(err)?;
            Ok(conn)
        };
        Ok(Sqlite { conn: Mutex::new(open()?), reader: Mutex::new(open()?) })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn read(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.reader.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Backend for Sqlite {
    fn name(&self) -> &'static str {
        "sqlite"
    }

    fn exec(&self, sql: &str, params: &[P<'_>]) -> Result<u64, StoreError> {
        let conn = self.lock();
        let mut stmt = conn.prepare_cached(&dialect(sql)).map_err(err)?;
        let n = stmt.execute(rusqlite::params_from_iter(params)).map_err(err)?;
        Ok(n as u64)
    }

    fn query(&self, sql: &str, params: &[P<'_>], kinds: &[Kind]) -> Result<Vec<Vec<Cell>>, StoreError> {
        let conn = self.read();
        let mut stmt = conn.prepare_cached(&dialect(sql)).map_err(err)?;
        let mut rows = stmt.query(rusqlite::params_from_iter(params)).map_err(err)?;
        let mut out = Vec::new();
        while let Some(row) = rows.next().map_err(err)? {
            let mut cells = Vec::with_capacity(kinds.len());
            for (i, k) in kinds.iter().enumerate() {
                cells.push(match k {
                    Kind::I => Cell::I(row.get::<_, Option<i64>>(i).map_err(err)?),
                    Kind::T => Cell::T(row.get::<_, Option<String>>(i).map_err(err)?),
                });
            }
            out.push(cells);
        }
        Ok(out)
    }

    fn exec_many(&self, sql: &str, rows: &[Vec<P<'_>>]) -> Result<u64, StoreError> {
        let mut conn = self.lock();
        let tx = conn.transaction().map_err(err)?;
        let mut n = 0;
        {
            let mut stmt = tx.prepare_cached(&dialect(sql)).map_err(err)?;
            for r in rows {
                n += stmt.execute(rusqlite::params_from_iter(r)).map_err(err)? as u64;
            }
        }
        tx.commit().map_err(err)?;
        Ok(n)
    }

    /// On the writing connection, so this process's own writes do not change it (the reader
    /// never commits): it moves only when another process wrote to the file.
    fn data_version(&self) -> Result<Option<i64>, StoreError> {
        let conn = self.lock();
        conn.query_row("PRAGMA data_version", [], |r| r.get(0)).map(Some).map_err(err)
    }

    fn migrate(&self, migrations: &[&str]) -> Result<(i64, i64), StoreError> {
        let mut conn = self.lock();
        // IMMEDIATE: the write lock first, so two processes opening one file migrate once.
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate).map_err(err)?;
        tx.execute_batch("CREATE TABLE IF NOT EXISTS registry_schema (version BIGINT NOT NULL)").map_err(err)?;
        let from: i64 =
            tx.query_row("SELECT COALESCE(MAX(version), 0) FROM registry_schema", [], |r| r.get(0)).map_err(err)?;
        let mut to = from;
        for (i, m) in migrations.iter().enumerate() {
            let v = i as i64 + 1;
            if v > from {
                tx.execute_batch(m).map_err(err)?;
                to = v;
            }
        }
        if to != from {
            tx.execute("DELETE FROM registry_schema", []).map_err(err)?;
            tx.execute("INSERT INTO registry_schema (version) VALUES (?1)", [to]).map_err(err)?;
        }
        tx.commit().map_err(err)?;
        Ok((from, to))
    }
}
