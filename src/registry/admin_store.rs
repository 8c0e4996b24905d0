//! The admin API's documents in the registry store (`[admin] store = "registry"`,
//! docs/admin-api.md): the network ACL rules (`network-acls`, the rules file's JSON) and the
//! tenant settings (`tenant-settings`, the settings file's JSON), one row each, with a version
//! every write bumps.
//!
//! A write is one statement that succeeds only while the row is still at the version the
//! writer read (optimistic concurrency: two replicas writing at once cannot lose an update),
//! so it needs no lock held across the validation. On PostgreSQL a committed write is followed
//! by a notification on [`CHANNEL`], which every replica listens on ([`listen`]); replicas also
//! compare [`Store::admin_versions`] periodically, which is SQLite's only path and
//! PostgreSQL's fallback. Bodies are never part of an error or a `Debug` form.

use super::store::{Cell, Kind, Store, StoreError, P};

/// The row of the network ACL rules.
pub const RULES: &str = "network-acls";
/// The row of the tenant settings.
pub const SETTINGS: &str = "tenant-settings";
/// The PostgreSQL notification channel of admin document changes.
pub const CHANNEL: &str = "dcr_gateway_admin";
/// The `application_name` of each replica's listening connection (operators and tests find
/// it in `pg_stat_activity`).
pub const LISTENER_NAME: &str = "dcr-gateway admin listener";

/// One stored document as read.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct AdminDoc {
    /// `None`: never written.
    pub body: Option<String>,
    /// SHA-256 (hex) of the body; that of the empty string when never written (the API's ETag,
    /// as for a file that does not exist).
    pub sha256: String,
    /// 0 when never written; every write adds one.
    pub version: i64,
}

impl std::fmt::Debug for AdminDoc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the body: the settings are not for logs.
        write!(f, "AdminDoc(v{}, {:?} bytes, {})", self.version, self.body.as_ref().map(String::len), self.sha256)
    }
}

impl AdminDoc {
    fn absent() -> AdminDoc {
        AdminDoc { body: None, sha256: crate::state::store::sha256_hex(b""), version: 0 }
    }
}

/// Both documents, read in one query.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AdminDocs {
    pub rules: AdminDoc,
    pub settings: AdminDoc,
}

/// The versions of (rules, settings): what the periodic check compares.
pub type Versions = (i64, i64);

impl AdminDocs {
    pub fn versions(&self) -> Versions {
        (self.rules.version, self.settings.version)
    }

    pub fn get(&self, name: &str) -> &AdminDoc {
        if name == RULES {
            &self.rules
        } else {
            &self.settings
        }
    }
}

const UPSERT: &str = "INSERT INTO admin_documents (name, body, sha256, version, updated_at, updated_by) \
     VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (name) DO UPDATE SET body = excluded.body, \
     sha256 = excluded.sha256, version = admin_documents.version + 1, updated_at = excluded.updated_at, \
     updated_by = excluded.updated_by";

impl Store {
    /// Both documents as they are now (absent rows: never written).
    pub fn admin_docs(&self) -> Result<AdminDocs, StoreError> {
        let rows = self.backend().query(
            "SELECT name, body, sha256, version FROM admin_documents WHERE name IN ($1, $2)",
            &[P::T(Some(RULES)), P::T(Some(SETTINGS))],
            &[Kind::T, Kind::T, Kind::T, Kind::I],
        )?;
        let mut docs = AdminDocs { rules: AdminDoc::absent(), settings: AdminDoc::absent() };
        for mut r in rows {
            let version = match r[3] {
                Cell::I(v) => v.unwrap_or(0),
                Cell::T(_) => 0,
            };
            let text = |c: &mut Cell| match c {
                Cell::T(v) => v.take(),
                Cell::I(_) => None,
            };
            let body = text(&mut r[1]);
            let sha256 = text(&mut r[2]).unwrap_or_else(|| crate::state::store::sha256_hex(b""));
            let doc = AdminDoc { body, sha256, version };
            match text(&mut r[0]).as_deref() {
                Some(RULES) => docs.rules = doc,
                Some(SETTINGS) => docs.settings = doc,
                _ => {}
            }
        }
        Ok(docs)
    }

    /// The documents' versions, without their bodies (the periodic check).
    pub fn admin_versions(&self) -> Result<Versions, StoreError> {
        let rows = self.backend().query(
            "SELECT name, version FROM admin_documents WHERE name IN ($1, $2)",
            &[P::T(Some(RULES)), P::T(Some(SETTINGS))],
            &[Kind::T, Kind::I],
        )?;
        let mut v = (0, 0);
        for r in rows {
            match (&r[0], &r[1]) {
                (Cell::T(Some(n)), Cell::I(Some(x))) if n == RULES => v.0 = *x,
                (Cell::T(Some(n)), Cell::I(Some(x))) if n == SETTINGS => v.1 = *x,
                _ => {}
            }
        }
        Ok(v)
    }

    /// Replace document `name` with `body` if it is still at version `expected` (0: never
    /// written). `Some(new version)`, or `None` when another write came first (read again).
    /// A `None` body puts the document back to never written (with a new version).
    pub fn put_admin_doc(
        &self,
        name: &str,
        body: Option<&str>,
        expected: i64,
        now: i64,
        by: &str,
    ) -> Result<Option<i64>, StoreError> {
        let sha = crate::state::store::sha256_hex(body.unwrap_or_default().as_bytes());
        let sql = format!("{UPSERT} WHERE admin_documents.version = $7");
        let n = self.backend().exec(
            &sql,
            &[
                P::T(Some(name)),
                P::T(body),
                P::T(Some(&sha)),
                P::I(Some(expected + 1)),
                P::I(Some(now)),
                P::T(Some(by)),
                P::I(Some(expected)),
            ],
        )?;
        Ok((n == 1).then_some(expected + 1))
    }

    /// Write several documents in one transaction, whatever their versions (`registry import`):
    /// each version moves on, so every replica reloads.
    pub fn import_admin_docs(&self, docs: &[(&str, &str)], now: i64, by: &str) -> Result<(), StoreError> {
        let shas: Vec<String> = docs.iter().map(|(_, b)| crate::state::store::sha256_hex(b.as_bytes())).collect();
        let rows: Vec<Vec<P<'_>>> = docs
            .iter()
            .zip(&shas)
            .map(|(&(name, body), sha)| {
                vec![
                    P::T(Some(name)),
                    P::T(Some(body)),
                    P::T(Some(sha)),
                    P::I(Some(1)),
                    P::I(Some(now)),
                    P::T(Some(by)),
                ]
            })
            .collect();
        self.backend().exec_many(UPSERT, &rows)?;
        Ok(())
    }

    /// Tell every listening replica that an admin document changed (PostgreSQL; SQLite has
    /// no notifications and relies on the periodic check). The payload names the document
    /// and its version, nothing of its content.
    pub fn notify_admin_change(&self, name: &str, version: i64) -> Result<(), StoreError> {
        if self.backend_name() != "postgres" {
            return Ok(());
        }
        let payload = format!("{name}:{version}");
        self.backend().exec("SELECT pg_notify($1, $2)", &[P::T(Some(CHANNEL)), P::T(Some(&payload))])?;
        Ok(())
    }
}

/// A dedicated PostgreSQL connection listening on [`CHANNEL`] (named [`LISTENER_NAME`]), over
/// TLS like the store's own when the URL asks for it.
pub fn listen(url: &str, ca_file: Option<&std::path::Path>) -> Result<postgres::Client, StoreError> {
    let mut client = super::postgres::connect_named(url, ca_file, LISTENER_NAME)?;
    client
        .batch_execute(&format!("LISTEN {CHANNEL}"))
        .map_err(|e| StoreError::new("postgres", crate::config::schema::error_with_causes(&e)))?;
    Ok(client)
}
