//! The registry store: one interface ([`Backend`]) with two implementations — SQLite (the
//! embedded default, [`super::sqlite`]) and PostgreSQL (fleets, [`super::postgres`]) — and the
//! registry's queries written once over it ([`Store`]). Both backends run the same SQL text
//! (`$n` parameters, `BIGINT`/`TEXT` columns, `ON CONFLICT` upserts), so the two cannot drift.
//!
//! Errors carry the backend's message only, never a parameter value (a sealed token, a
//! client's metadata).

use std::sync::Arc;

/// A query parameter.
#[derive(Debug, Clone, Copy)]
pub enum P<'a> {
    I(Option<i64>),
    T(Option<&'a str>),
}

/// A result cell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cell {
    I(Option<i64>),
    T(Option<String>),
}

impl Cell {
    fn int(&self) -> Option<i64> {
        match self {
            Cell::I(v) => *v,
            Cell::T(_) => None,
        }
    }
    fn text(&mut self) -> Option<String> {
        match self {
            Cell::T(v) => v.take(),
            Cell::I(_) => None,
        }
    }
}

/// The type of a result column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    I,
    T,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("registry store ({backend}): {message}")]
pub struct StoreError {
    pub backend: &'static str,
    pub message: String,
}

impl StoreError {
    pub fn new(backend: &'static str, message: impl Into<String>) -> StoreError {
        StoreError { backend, message: message.into() }
    }
}

/// What a registry backend offers: statements with parameters, in one dialect both speak.
pub trait Backend: Send + Sync {
    /// `sqlite` or `postgres`.
    fn name(&self) -> &'static str;
    /// Run one statement; the number of rows it changed.
    fn exec(&self, sql: &str, params: &[P<'_>]) -> Result<u64, StoreError>;
    /// Run one query; each row's cells typed by `kinds`.
    fn query(&self, sql: &str, params: &[P<'_>], kinds: &[Kind]) -> Result<Vec<Vec<Cell>>, StoreError>;
    /// Run one statement once per parameter row, in one transaction.
    fn exec_many(&self, sql: &str, rows: &[Vec<P<'_>>]) -> Result<u64, StoreError>;
    /// Apply the migrations past the stored schema version, in a transaction under the
    /// backend's lock (two replicas starting at once apply them once). `(from, to)` versions.
    fn migrate(&self, migrations: &[&str]) -> Result<(i64, i64), StoreError>;
    /// A number that changes whenever another connection — another process — commits to the
    /// store; `None` for a store shared by design (PostgreSQL), whose counts are always asked of
    /// the store. Where it is `Some`, the registry keeps caps' counts in memory
    /// (`super::tally`) and counts again when it changes.
    fn data_version(&self) -> Result<Option<i64>, StoreError> {
        Ok(None)
    }
}

/// The schema, one entry per version. Both backends run the same text.
pub const MIGRATIONS: &[&str] = &[
    // 1: clients, the reaper's lease, initial-access-token uses.
    "CREATE TABLE IF NOT EXISTS clients (
        client_id TEXT PRIMARY KEY,
        created_at BIGINT NOT NULL,
        last_used_at BIGINT,
        deleted_at BIGINT,
        deleted_reason TEXT,
        client_ip TEXT NOT NULL,
        prefix TEXT NOT NULL,
        country TEXT,
        asn BIGINT,
        user_agent TEXT,
        software_id TEXT,
        software_version TEXT,
        client_name TEXT,
        software_key TEXT NOT NULL,
        redirect_hosts TEXT NOT NULL,
        auth_method TEXT,
        public BIGINT NOT NULL,
        fingerprint TEXT NOT NULL,
        admitted_by TEXT,
        registration_client_uri TEXT,
        idp_client_uri TEXT,
        token_sealed TEXT,
        answer TEXT
    );
    CREATE INDEX IF NOT EXISTS clients_dedupe ON clients (fingerprint, prefix, created_at);
    CREATE INDEX IF NOT EXISTS clients_prefix ON clients (prefix, created_at);
    CREATE INDEX IF NOT EXISTS clients_software ON clients (software_key);
    CREATE INDEX IF NOT EXISTS clients_created ON clients (created_at);
    CREATE INDEX IF NOT EXISTS clients_last_used ON clients (last_used_at);
    CREATE TABLE IF NOT EXISTS leases (name TEXT PRIMARY KEY, holder TEXT NOT NULL, expires_at BIGINT NOT NULL);
    CREATE TABLE IF NOT EXISTS token_uses (token TEXT PRIMARY KEY, uses BIGINT NOT NULL);",
    // The admin API's documents with `[admin] store = "registry"` (super::admin_store): the
    // network ACL rules and the tenant settings, each with a version every write bumps (a
    // NULL body: put back to never written; rows are never deleted, so versions never repeat).
    "CREATE TABLE IF NOT EXISTS admin_documents (
        name TEXT PRIMARY KEY,
        body TEXT,
        sha256 TEXT NOT NULL,
        version BIGINT NOT NULL,
        updated_at BIGINT NOT NULL,
        updated_by TEXT NOT NULL
    );",
    // `[cimd] mode = "bridge"` (super::bridge): the IdP client registered for each client ID
    // metadata document — its client_id, the document's fingerprint when it was registered or
    // last updated, and the RFC 7592 URI and sealed token that update it.
    "CREATE TABLE IF NOT EXISTS cimd_clients (
        url TEXT PRIMARY KEY,
        client_id TEXT NOT NULL,
        fingerprint TEXT NOT NULL,
        idp_client_uri TEXT,
        token_sealed TEXT,
        created_at BIGINT NOT NULL,
        updated_at BIGINT NOT NULL
    );",
    // 4: the de-duplication index holds only what de-duplication can answer with — live public
    // clients. Every index entry is a page the writer may touch per row: a confidential or
    // deleted client in it cost each commit a write for nothing (its key, a fingerprint, is
    // random). `find_duplicate` names both conditions, so both planners use it.
    "DROP INDEX IF EXISTS clients_dedupe;
    CREATE INDEX IF NOT EXISTS clients_dedupe_live_public ON clients (fingerprint, prefix, created_at)
        WHERE public = 1 AND deleted_at IS NULL;",
];

/// How many matches [`Store::find_duplicate`] reads at a time.
const DUPLICATE_PAGE: usize = 16;

/// One registered client, as stored. The sealed token and the stored answer are never
/// serialized from here: the admin API builds its own view ([`ClientRow::view`]).
#[derive(Clone, PartialEq, Eq)]
pub struct ClientRow {
    pub client_id: String,
    pub created_at: i64,
    pub last_used_at: Option<i64>,
    pub deleted_at: Option<i64>,
    pub deleted_reason: Option<String>,
    pub client_ip: String,
    pub prefix: String,
    pub country: Option<String>,
    pub asn: Option<i64>,
    pub user_agent: Option<String>,
    pub software_id: Option<String>,
    pub software_version: Option<String>,
    pub client_name: Option<String>,
    pub software_key: String,
    pub redirect_hosts: Vec<String>,
    pub auth_method: Option<String>,
    pub public: bool,
    pub fingerprint: String,
    /// The initial access token label or the software statement issuer that admitted it.
    pub admitted_by: Option<String>,
    /// The `registration_client_uri` as the client saw it (through the gateway).
    pub registration_client_uri: Option<String>,
    /// The same URI as the IdP answered it (what the reaper calls).
    pub idp_client_uri: Option<String>,
    /// `registration_access_token`, sealed ([`super::crypto::KeyRing::seal`]).
    pub token_sealed: Option<String>,
    /// The IdP's answer without its secrets (for de-duplicated answers).
    pub answer: Option<String>,
}

impl std::fmt::Debug for ClientRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientRow")
            .field("client_id", &self.client_id)
            .field("created_at", &self.created_at)
            .field("last_used_at", &self.last_used_at)
            .field("deleted_at", &self.deleted_at)
            .field("software_key", &self.software_key)
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

const COLS: &str = "client_id, created_at, last_used_at, deleted_at, deleted_reason, client_ip, prefix, country, asn, \
     user_agent, software_id, software_version, client_name, software_key, redirect_hosts, auth_method, public, \
     fingerprint, admitted_by, registration_client_uri, idp_client_uri, token_sealed, answer";

const KINDS: &[Kind] = &[
    Kind::T,
    Kind::I,
    Kind::I,
    Kind::I,
    Kind::T,
    Kind::T,
    Kind::T,
    Kind::T,
    Kind::I,
    Kind::T,
    Kind::T,
    Kind::T,
    Kind::T,
    Kind::T,
    Kind::T,
    Kind::T,
    Kind::I,
    Kind::T,
    Kind::T,
    Kind::T,
    Kind::T,
    Kind::T,
    Kind::T,
];

impl ClientRow {
    fn from_cells(mut c: Vec<Cell>) -> ClientRow {
        let hosts = c[14].text().unwrap_or_default();
        ClientRow {
            client_id: c[0].text().unwrap_or_default(),
            created_at: c[1].int().unwrap_or_default(),
            last_used_at: c[2].int(),
            deleted_at: c[3].int(),
            deleted_reason: c[4].text(),
            client_ip: c[5].text().unwrap_or_default(),
            prefix: c[6].text().unwrap_or_default(),
            country: c[7].text(),
            asn: c[8].int(),
            user_agent: c[9].text(),
            software_id: c[10].text(),
            software_version: c[11].text(),
            client_name: c[12].text(),
            software_key: c[13].text().unwrap_or_default(),
            redirect_hosts: serde_json::from_str(&hosts).unwrap_or_default(),
            auth_method: c[15].text(),
            public: c[16].int() == Some(1),
            fingerprint: c[17].text().unwrap_or_default(),
            admitted_by: c[18].text(),
            registration_client_uri: c[19].text(),
            idp_client_uri: c[20].text(),
            token_sealed: c[21].text(),
            answer: c[22].text(),
        }
    }

    /// What the admin API and the CLI show: everything but the sealed token, the stored
    /// answer and the IdP-side URI.
    pub fn view(&self, state: super::policy::ClientState) -> serde_json::Value {
        let t = |s: i64| crate::registry::rfc3339(s);
        serde_json::json!({
            "client_id": self.client_id,
            "state": state.as_str(),
            "created_at": t(self.created_at),
            "last_used_at": self.last_used_at.map(t),
            "deleted_at": self.deleted_at.map(t),
            "deleted_reason": self.deleted_reason,
            "client_ip": self.client_ip,
            "prefix": self.prefix,
            "country": self.country,
            "asn": self.asn,
            "user_agent": self.user_agent,
            "software_id": self.software_id,
            "software_version": self.software_version,
            "client_name": self.client_name,
            "redirect_hosts": self.redirect_hosts,
            "token_endpoint_auth_method": self.auth_method,
            "public": self.public,
            "fingerprint": self.fingerprint,
            "admitted_by": self.admitted_by,
            "registration_client_uri": self.registration_client_uri,
            "has_registration_access_token": self.token_sealed.is_some(),
        })
    }
}

/// A filter for listing clients.
#[derive(Debug, Clone, Default)]
pub struct ListQuery {
    /// `active`, `unused`, `idle` or `deleted`, judged at `now` with the limits.
    pub state: Option<super::policy::ClientState>,
    /// Clients not used since this time (never used ones by their creation).
    pub idle_since: Option<i64>,
    /// `software_id`, or the software key (`name:...`).
    pub software: Option<String>,
    pub offset: u64,
    pub limit: u64,
}

/// The registry's queries over a backend.
#[derive(Clone)]
pub struct Store {
    backend: Arc<dyn Backend>,
}

fn b(v: bool) -> P<'static> {
    P::I(Some(i64::from(v)))
}

impl Store {
    pub fn new(backend: Arc<dyn Backend>) -> Store {
        Store { backend }
    }

    pub fn backend_name(&self) -> &'static str {
        self.backend.name()
    }

    /// The backend, for the queries kept beside this file (`super::admin_store`).
    pub(super) fn backend(&self) -> &dyn Backend {
        self.backend.as_ref()
    }

    pub fn migrate(&self) -> Result<(i64, i64), StoreError> {
        self.backend.migrate(MIGRATIONS)
    }

    /// Insert a client; a second insert of one client_id changes nothing (retries are safe).
    pub fn insert(&self, r: &ClientRow) -> Result<bool, StoreError> {
        Ok(self.insert_many(std::slice::from_ref(r))? == 1)
    }

    /// Insert clients in one transaction; rows already there are left as they are. The number
    /// inserted.
    pub fn insert_many<R: std::borrow::Borrow<ClientRow>>(&self, rows: &[R]) -> Result<u64, StoreError> {
        let rows: Vec<&ClientRow> = rows.iter().map(R::borrow).collect();
        let sql = format!(
            "INSERT INTO clients ({COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, \
             $16, $17, $18, $19, $20, $21, $22, $23) ON CONFLICT (client_id) DO NOTHING"
        );
        let hosts: Vec<String> =
            rows.iter().map(|r| serde_json::to_string(&r.redirect_hosts).unwrap_or_else(|_| "[]".into())).collect();
        let params: Vec<Vec<P<'_>>> = rows
            .iter()
            .zip(&hosts)
            .map(|(r, hosts)| {
                vec![
                    P::T(Some(&r.client_id)),
                    P::I(Some(r.created_at)),
                    P::I(r.last_used_at),
                    P::I(r.deleted_at),
                    P::T(r.deleted_reason.as_deref()),
                    P::T(Some(&r.client_ip)),
                    P::T(Some(&r.prefix)),
                    P::T(r.country.as_deref()),
                    P::I(r.asn),
                    P::T(r.user_agent.as_deref()),
                    P::T(r.software_id.as_deref()),
                    P::T(r.software_version.as_deref()),
                    P::T(r.client_name.as_deref()),
                    P::T(Some(&r.software_key)),
                    P::T(Some(hosts)),
                    P::T(r.auth_method.as_deref()),
                    b(r.public),
                    P::T(Some(&r.fingerprint)),
                    P::T(r.admitted_by.as_deref()),
                    P::T(r.registration_client_uri.as_deref()),
                    P::T(r.idp_client_uri.as_deref()),
                    P::T(r.token_sealed.as_deref()),
                    P::T(r.answer.as_deref()),
                ]
            })
            .collect();
        self.backend.exec_many(&sql, &params)
    }

    /// Move last-used times forward (never back), in one transaction.
    pub fn touch_many(&self, uses: &[(String, i64)]) -> Result<u64, StoreError> {
        if uses.is_empty() {
            return Ok(0);
        }
        let rows: Vec<Vec<P<'_>>> = uses.iter().map(|(id, t)| vec![P::T(Some(id)), P::I(Some(*t))]).collect();
        self.backend.exec_many(
            "UPDATE clients SET last_used_at = $2 WHERE client_id = $1 AND deleted_at IS NULL \
             AND (last_used_at IS NULL OR last_used_at < $2)",
            &rows,
        )
    }

    pub fn get(&self, client_id: &str) -> Result<Option<ClientRow>, StoreError> {
        let sql = format!("SELECT {COLS} FROM clients WHERE client_id = $1");
        let rows = self.backend.query(&sql, &[P::T(Some(client_id))], KINDS)?;
        Ok(rows.into_iter().next().map(ClientRow::from_cells))
    }

    /// The where-clause and parameters of a list filter, judged at `now`.
    fn filter<'a>(q: &'a ListQuery, limits: &super::policy::Limits, now: i64) -> (String, Vec<P<'a>>) {
        use super::policy::ClientState;
        let mut clauses: Vec<String> = Vec::new();
        let mut params: Vec<P<'a>> = Vec::new();
        let mut add = |clause: &str, p: &mut Vec<P<'a>>, values: Vec<P<'a>>| {
            let mut c = clause.to_string();
            for v in values {
                p.push(v);
                c = c.replacen('?', &format!("${}", p.len()), 1);
            }
            clauses.push(c);
        };
        let unused_before = if limits.unused_grace_secs > 0 { now - limits.unused_grace_secs } else { i64::MIN };
        let idle_before = if limits.idle_after_secs > 0 { now - limits.idle_after_secs } else { i64::MIN };
        match q.state {
            Some(ClientState::Deleted) => add("deleted_at IS NOT NULL", &mut params, vec![]),
            Some(ClientState::Unused) => add(
                "deleted_at IS NULL AND last_used_at IS NULL AND created_at <= ?",
                &mut params,
                vec![P::I(Some(unused_before))],
            ),
            Some(ClientState::Idle) => add(
                "deleted_at IS NULL AND last_used_at IS NOT NULL AND last_used_at <= ?",
                &mut params,
                vec![P::I(Some(idle_before))],
            ),
            Some(ClientState::Active) => add(
                "deleted_at IS NULL AND ((last_used_at IS NULL AND created_at > ?) OR (last_used_at IS NOT NULL \
                 AND last_used_at > ?))",
                &mut params,
                vec![P::I(Some(unused_before)), P::I(Some(idle_before))],
            ),
            None => {}
        }
        if let Some(t) = q.idle_since {
            add("COALESCE(last_used_at, created_at) < ?", &mut params, vec![P::I(Some(t))]);
        }
        if let Some(s) = q.software.as_deref() {
            add("(software_id = ? OR software_key = ?)", &mut params, vec![P::T(Some(s)), P::T(Some(s))]);
        }
        let w = if clauses.is_empty() { String::new() } else { format!(" WHERE {}", clauses.join(" AND ")) };
        (w, params)
    }

    /// One page of clients (oldest first) and the total matching the filter.
    pub fn list(
        &self,
        q: &ListQuery,
        limits: &super::policy::Limits,
        now: i64,
    ) -> Result<(Vec<ClientRow>, u64), StoreError> {
        let (w, mut params) = Store::filter(q, limits, now);
        let n = params.len();
        // The total comes from the same statement as the page (a window count, taken before
        // LIMIT): two statements could see different rows when the writer commits between them.
        let sql = format!(
            "SELECT {COLS}, COUNT(*) OVER () FROM clients{w} ORDER BY created_at, client_id LIMIT ${} OFFSET ${}",
            n + 1,
            n + 2
        );
        let filter_params = params.clone();
        params.push(P::I(Some(q.limit.min(i64::MAX as u64) as i64)));
        params.push(P::I(Some(q.offset.min(i64::MAX as u64) as i64)));
        let kinds: Vec<Kind> = KINDS.iter().copied().chain([Kind::I]).collect();
        let mut rows = self.backend.query(&sql, &params, &kinds)?;
        let total = match rows.first() {
            Some(r) => r[KINDS.len()].int().unwrap_or(0).max(0) as u64,
            // An empty page (past the end) carries no count: asked on its own.
            None => self.count(&format!("SELECT COUNT(*) FROM clients{w}"), &filter_params)?,
        };
        for r in &mut rows {
            r.truncate(KINDS.len());
        }
        Ok((rows.into_iter().map(ClientRow::from_cells).collect(), total))
    }

    fn count(&self, sql: &str, params: &[P<'_>]) -> Result<u64, StoreError> {
        let rows = self.backend.query(sql, params, &[Kind::I])?;
        Ok(rows.first().and_then(|r| r[0].int()).unwrap_or(0).max(0) as u64)
    }

    /// The counts a registration from `prefix` of `software_key` is judged against.
    pub fn counts(&self, software_key: &str, prefix: &str, since: i64) -> Result<super::policy::Counts, StoreError> {
        let all = super::policy::Counts { live_total: u64::MAX, live_software: u64::MAX, prefix_recent: u64::MAX };
        self.counts_up_to(software_key, prefix, since, all)
    }

    /// [`Store::counts`] in one query, each count stopping at its bound (a cap only asks
    /// whether it is reached; a bound of 0 skips that count): the cost follows the caps, not
    /// the number of clients stored.
    pub fn counts_up_to(
        &self,
        software_key: &str,
        prefix: &str,
        since: i64,
        bound: super::policy::Counts,
    ) -> Result<super::policy::Counts, StoreError> {
        let limit = |n: u64| P::I(Some(n.min(i64::MAX as u64) as i64));
        let rows = self.backend.query(
            "SELECT (SELECT COUNT(*) FROM (SELECT 1 FROM clients WHERE deleted_at IS NULL LIMIT $4) t), \
             (SELECT COUNT(*) FROM (SELECT 1 FROM clients WHERE deleted_at IS NULL AND software_key = $1 LIMIT $5) s), \
             (SELECT COUNT(*) FROM (SELECT 1 FROM clients WHERE prefix = $2 AND created_at >= $3 LIMIT $6) p)",
            &[
                P::T(Some(software_key)),
                P::T(Some(prefix)),
                P::I(Some(since)),
                limit(bound.live_total),
                limit(bound.live_software),
                limit(bound.prefix_recent),
            ],
            &[Kind::I, Kind::I, Kind::I],
        )?;
        let n = |i: usize| rows.first().and_then(|r| r[i].int()).unwrap_or(0).max(0) as u64;
        Ok(super::policy::Counts { live_total: n(0), live_software: n(1), prefix_recent: n(2) })
    }

    /// A page of [`Store::find_duplicate`]'s lookup: at `$3` or (`later`) strictly after it.
    /// Public for the test that asks each planner which index it uses.
    pub fn duplicate_query(later: bool) -> String {
        let op = if later { ">" } else { ">=" };
        format!(
            "SELECT {COLS} FROM clients WHERE fingerprint = $1 AND prefix = $2 AND public = 1 AND deleted_at IS NULL \
             AND created_at {op} $3 AND answer IS NOT NULL LIMIT {DUPLICATE_PAGE}"
        )
    }

    /// The newest live public client with this fingerprint from this prefix since `since`.
    pub fn find_duplicate(&self, fingerprint: &str, prefix: &str, since: i64) -> Result<Option<ClientRow>, StoreError> {
        // No ORDER BY (nor MAX()): SQLite re-prepares such a cached statement each time another
        // connection wrote — here after every batch the registry commits — which cost more
        // than the lookup. The index yields matches oldest first, a page of 16 at a time; a
        // full page moves the lower bound past its newest time. Matches are few (a duplicate
        // is answered, not registered again), so this is one query in practice.
        let (first, later) = (Store::duplicate_query(false), Store::duplicate_query(true));
        let mut newest: Option<ClientRow> = None;
        let mut sql = &first;
        let mut bound = since;
        loop {
            let rows =
                self.backend.query(sql, &[P::T(Some(fingerprint)), P::T(Some(prefix)), P::I(Some(bound))], KINDS)?;
            let full = rows.len() == DUPLICATE_PAGE;
            for row in rows.into_iter().map(ClientRow::from_cells) {
                if newest.as_ref().is_none_or(|n| row.created_at > n.created_at) {
                    newest = Some(row);
                }
            }
            match (&newest, full) {
                // Strictly later each time: the loop ends.
                (Some(n), true) => (sql, bound) = (&later, n.created_at),
                _ => return Ok(newest),
            }
        }
    }

    /// Live public clients created at or after `since` that de-duplication could answer with:
    /// (fingerprint, prefix, created_at) — the seed of [`super::recent`].
    /// At most `limit` rows (the caller treats a full answer as too many to keep).
    pub fn recent_public(&self, since: i64, limit: usize) -> Result<Vec<(String, String, i64)>, StoreError> {
        let rows = self.backend.query(
            "SELECT fingerprint, prefix, created_at FROM clients WHERE created_at >= $1 AND public = 1 \
             AND deleted_at IS NULL AND answer IS NOT NULL LIMIT $2",
            &[P::I(Some(since)), P::I(Some(limit.min(i64::MAX as usize) as i64))],
            &[Kind::T, Kind::T, Kind::I],
        )?;
        Ok(rows
            .into_iter()
            .map(|mut r| (r[0].text().unwrap_or_default(), r[1].text().unwrap_or_default(), r[2].int().unwrap_or(0)))
            .collect())
    }

    /// Live clients unused since `unused_before` (never used) or idle since `idle_before`,
    /// oldest first.
    pub fn reap_candidates(
        &self,
        unused_before: Option<i64>,
        idle_before: Option<i64>,
        limit: u64,
    ) -> Result<Vec<ClientRow>, StoreError> {
        let sql = format!(
            "SELECT {COLS} FROM clients WHERE deleted_at IS NULL AND ((last_used_at IS NULL AND created_at <= $1) \
             OR (last_used_at IS NOT NULL AND last_used_at <= $2)) ORDER BY created_at LIMIT $3"
        );
        let rows = self.backend.query(
            &sql,
            &[
                P::I(Some(unused_before.unwrap_or(i64::MIN))),
                P::I(Some(idle_before.unwrap_or(i64::MIN))),
                P::I(Some(limit.min(i64::MAX as u64) as i64)),
            ],
            KINDS,
        )?;
        Ok(rows.into_iter().map(ClientRow::from_cells).collect())
    }

    /// A client changed through RFC 7592 (PUT): its stored fingerprint no longer describes it,
    /// so it is never handed out as another registration's duplicate.
    pub fn mark_updated(&self, client_id: &str) -> Result<bool, StoreError> {
        let n = self.backend.exec(
            "UPDATE clients SET fingerprint = '' WHERE client_id = $1 AND deleted_at IS NULL",
            &[P::T(Some(client_id))],
        )?;
        Ok(n == 1)
    }

    /// Mark a client deleted (and forget its token). False when it already was.
    pub fn mark_deleted(&self, client_id: &str, at: i64, reason: &str) -> Result<bool, StoreError> {
        let n = self.backend.exec(
            "UPDATE clients SET deleted_at = $2, deleted_reason = $3, token_sealed = NULL \
             WHERE client_id = $1 AND deleted_at IS NULL",
            &[P::T(Some(client_id)), P::I(Some(at)), P::T(Some(reason))],
        )?;
        Ok(n == 1)
    }

    /// Take (or renew) the lease `name` for `holder` until `until`; false while another holder's
    /// lease runs. One statement, atomic in both backends.
    pub fn try_lease(&self, name: &str, holder: &str, now: i64, until: i64) -> Result<bool, StoreError> {
        let n = self.backend.exec(
            "INSERT INTO leases (name, holder, expires_at) VALUES ($1, $2, $3) ON CONFLICT (name) DO UPDATE \
             SET holder = excluded.holder, expires_at = excluded.expires_at \
             WHERE leases.expires_at < $4 OR leases.holder = $2",
            &[P::T(Some(name)), P::T(Some(holder)), P::I(Some(until)), P::I(Some(now))],
        )?;
        Ok(n == 1)
    }

    /// Release a lease held by `holder`.
    pub fn release_lease(&self, name: &str, holder: &str) -> Result<(), StoreError> {
        self.backend
            .exec("DELETE FROM leases WHERE name = $1 AND holder = $2", &[P::T(Some(name)), P::T(Some(holder))])?;
        Ok(())
    }

    /// Spend one use of an initial access token (by its hash) if fewer than `max` are spent.
    pub fn take_token_use(&self, token: &str, max: u64) -> Result<bool, StoreError> {
        let n = self.backend.exec(
            "INSERT INTO token_uses (token, uses) VALUES ($1, 1) ON CONFLICT (token) DO UPDATE \
             SET uses = token_uses.uses + 1 WHERE token_uses.uses < $2",
            &[P::T(Some(token)), P::I(Some(max.min(i64::MAX as u64) as i64))],
        )?;
        Ok(n == 1 && max > 0)
    }

    /// Give one use back (the IdP refused the registration).
    pub fn return_token_use(&self, token: &str) -> Result<(), StoreError> {
        self.backend
            .exec("UPDATE token_uses SET uses = uses - 1 WHERE token = $1 AND uses > 0", &[P::T(Some(token))])?;
        Ok(())
    }

    /// Uses spent of a token.
    pub fn token_uses(&self, token: &str) -> Result<u64, StoreError> {
        self.count("SELECT COALESCE(MAX(uses), 0) FROM token_uses WHERE token = $1", &[P::T(Some(token))])
    }

    /// Clients by stored state (`live`, `deleted`), for the metrics.
    pub fn totals(&self) -> Result<(u64, u64), StoreError> {
        Ok((
            self.count("SELECT COUNT(*) FROM clients WHERE deleted_at IS NULL", &[])?,
            self.count("SELECT COUNT(*) FROM clients WHERE deleted_at IS NOT NULL", &[])?,
        ))
    }

    /// The sealed token column of a row, raw (tests and the key-rotation report).
    pub fn raw_token(&self, client_id: &str) -> Result<Option<String>, StoreError> {
        let rows = self.backend.query(
            "SELECT token_sealed FROM clients WHERE client_id = $1",
            &[P::T(Some(client_id))],
            &[Kind::T],
        )?;
        Ok(rows.into_iter().next().and_then(|mut r| r[0].text()))
    }
}

/// What the kept counts ([`super::tally`]) are seeded from.
impl Store {
    /// See [`Backend::data_version`].
    pub fn data_version(&self) -> Result<Option<i64>, StoreError> {
        self.backend.data_version()
    }

    /// Live clients in all and per software key, and the prefix and creation time of every
    /// client created at or after `since`.
    pub fn tally_seed(&self, since: i64) -> Result<super::tally::Seed, StoreError> {
        let live_total = self.count("SELECT COUNT(*) FROM clients WHERE deleted_at IS NULL", &[])?;
        let software = self.backend.query(
            "SELECT software_key, COUNT(*) FROM clients WHERE deleted_at IS NULL GROUP BY software_key",
            &[],
            &[Kind::T, Kind::I],
        )?;
        let recent = self.backend.query(
            "SELECT prefix, created_at FROM clients WHERE created_at >= $1",
            &[P::I(Some(since))],
            &[Kind::T, Kind::I],
        )?;
        Ok(super::tally::Seed {
            live_total,
            live_software: software
                .into_iter()
                .map(|mut r| (r[0].text().unwrap_or_default(), r[1].int().unwrap_or(0).max(0) as u64))
                .collect(),
            recent: recent
                .into_iter()
                .map(|mut r| (r[0].text().unwrap_or_default(), r[1].int().unwrap_or(0)))
                .collect(),
        })
    }
}

/// A client ID metadata document's IdP client (`[cimd] mode = "bridge"`). The sealed token is
/// never printed (`Debug` leaves it out).
#[derive(Clone, PartialEq, Eq)]
pub struct BridgeRow {
    /// The document's URL (the client's `client_id` on the gateway).
    pub url: String,
    /// The IdP's client_id for it.
    pub client_id: String,
    /// `cimd::Document::fingerprint` of the document registered (or last updated).
    pub fingerprint: String,
    /// `registration_client_uri` as the IdP answered it (RFC 7592).
    pub idp_client_uri: Option<String>,
    /// `registration_access_token`, sealed ([`super::crypto::KeyRing::seal`] with the IdP's
    /// client_id).
    pub token_sealed: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
}

impl std::fmt::Debug for BridgeRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BridgeRow")
            .field("url", &self.url)
            .field("client_id", &self.client_id)
            .field("fingerprint", &self.fingerprint)
            .finish_non_exhaustive()
    }
}

const BRIDGE_COLS: &str = "url, client_id, fingerprint, idp_client_uri, token_sealed, created_at, updated_at";

/// The CIMD bridge's rows (`super::bridge`).
impl Store {
    pub fn bridge_get(&self, url: &str) -> Result<Option<BridgeRow>, StoreError> {
        let rows = self.backend.query(
            &format!("SELECT {BRIDGE_COLS} FROM cimd_clients WHERE url = $1"),
            &[P::T(Some(url))],
            &[Kind::T, Kind::T, Kind::T, Kind::T, Kind::T, Kind::I, Kind::I],
        )?;
        Ok(rows.into_iter().next().map(|mut c| BridgeRow {
            url: c[0].text().unwrap_or_default(),
            client_id: c[1].text().unwrap_or_default(),
            fingerprint: c[2].text().unwrap_or_default(),
            idp_client_uri: c[3].text(),
            token_sealed: c[4].text(),
            created_at: c[5].int().unwrap_or_default(),
            updated_at: c[6].int().unwrap_or_default(),
        }))
    }

    /// Insert the row for a document registered for the first time; false when another
    /// replica's row for the URL is already there (the row is left as it is).
    pub fn bridge_insert(&self, r: &BridgeRow) -> Result<bool, StoreError> {
        let n = self.backend.exec(
            &format!(
                "INSERT INTO cimd_clients ({BRIDGE_COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7) \
                 ON CONFLICT (url) DO NOTHING"
            ),
            &[
                P::T(Some(&r.url)),
                P::T(Some(&r.client_id)),
                P::T(Some(&r.fingerprint)),
                P::T(r.idp_client_uri.as_deref()),
                P::T(r.token_sealed.as_deref()),
                P::I(Some(r.created_at)),
                P::I(Some(r.updated_at)),
            ],
        )?;
        Ok(n == 1)
    }

    /// Replace the row of `r.url` when it still names `previous` (the IdP client this replica
    /// updated or replaced); false when another replica changed it first.
    pub fn bridge_update(&self, r: &BridgeRow, previous: &str) -> Result<bool, StoreError> {
        let n = self.backend.exec(
            "UPDATE cimd_clients SET client_id = $2, fingerprint = $3, idp_client_uri = $4, token_sealed = $5, \
             updated_at = $6 WHERE url = $1 AND client_id = $7",
            &[
                P::T(Some(&r.url)),
                P::T(Some(&r.client_id)),
                P::T(Some(&r.fingerprint)),
                P::T(r.idp_client_uri.as_deref()),
                P::T(r.token_sealed.as_deref()),
                P::I(Some(r.updated_at)),
                P::T(Some(previous)),
            ],
        )?;
        Ok(n == 1)
    }
}
