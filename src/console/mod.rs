//! The admin web console: server-rendered pages under `/console/` on the admin listener (never
//! on the public one), for a security team that would rather look than read JSON.
//!
//! | page                   | needs                    | writes (same service as the API)          |
//! |------------------------|--------------------------|-------------------------------------------|
//! | `/console/rules`       | `read:network_acls`      | toggle active / monitoring, edit, create, delete |
//! | `/console/decisions`   | `read:network_acls`      | –                                         |
//! | `/console/explain`     | `read:network_acls`      | –                                         |
//! | `/console/tenant`      | `read:tenant_settings`   | `PATCH` tenant settings                   |
//! | `/console/clients`     | `read:clients`           | delete a client (`delete:clients`)        |
//!
//! Sign-in takes an admin token (checked like an API bearer token: known, not expired,
//! `max_uses` counted) and keeps a server-side session: the browser holds a random id in an
//! `HttpOnly`, `SameSite=Strict` cookie (`Secure` on TLS), the server the token's SHA-256 —
//! never the token — looked up again in the current snapshot on every request, so removing a
//! token from the file ends its sessions. Every write is a form `POST` carrying the session's
//! CSRF token, and goes through [`AdminApi::handle_for_console`]: the routing, scope check,
//! validation, `If-Match`, atomic write, reload and audit line of the API itself. Pages are
//! askama templates (HTML-escaped), the CSS and JS are embedded in the binary, and the
//! `Content-Security-Policy` allows no inline script or style. See `docs/console.md`.

mod explain;
mod form;
mod history;
mod pages;
mod session;

use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant, SystemTime};

use http::{HeaderMap, HeaderValue, Method, Response, StatusCode};
use serde_json::Value;

use self::form::{Form, RuleForm};
use self::history::History;
use self::pages::{
    render, Chrome, ClientsPage, DecisionFilter, DecisionsPage, ExplainPage, ExplainQuery, LoginPage, MessagePage,
    RuleEditPage, RuleRow, RulesPage, TenantForm, TenantPage,
};
use self::session::{Notice, SessionStore};
use crate::admin::error::ApiError;
use crate::admin::{AdminApi, ApiBody, RequestHead};
use crate::snapshot::{Snapshot, Store};
use crate::telemetry::{AuditLog, Metrics};

pub const PREFIX: &str = "/console";
/// The session cookie: a random id, nothing else.
pub const COOKIE: &str = "dcrgw_console";
const FORM_LIMIT: usize = 64 * 1024;
const FORM_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the match history reads the counters (each page view reads them too).
const SAMPLE_EVERY: Duration = Duration::from_secs(10);
/// Decision rows shown at most.
const DECISION_ROWS: usize = 200;
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
                       form-action 'self'; frame-ancestors 'none'; base-uri 'none'";
const CSS: &str = include_str!("../../assets/console/console.css");
const JS: &str = include_str!("../../assets/console/console.js");

/// Characters escaped in a rule id put in a path segment: all but RFC 3986 unreserved ones.
const PATH_SEGMENT: &percent_encoding::AsciiSet =
    &percent_encoding::NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

/// Is `path` the console's (the admin listener hands these to [`Console::handle`])?
pub fn is_console_path(path: &str) -> bool {
    path == PREFIX || path.starts_with("/console/")
}

pub struct Console {
    store: Arc<Store>,
    metrics: Arc<Metrics>,
    audit: Arc<AuditLog>,
    sessions: Mutex<SessionStore>,
    history: Arc<Mutex<History>>,
}

/// The signed-in caller of one request.
struct Caller {
    session_id: String,
    token_sha256: String,
    label: String,
    csrf: String,
    notice: Option<Notice>,
    scopes: Vec<String>,
}

impl Caller {
    fn can(&self, scope: &str) -> bool {
        self.scopes.iter().any(|s| s == scope)
    }

    fn chrome(&self, nav: &'static str) -> Chrome {
        let read_only = !self.scopes.iter().any(|s| !s.starts_with("read:"));
        Chrome {
            signed_in: true,
            label: self.label.clone(),
            csrf: self.csrf.clone(),
            nav: nav.to_string(),
            notice: self.notice.clone(),
            read_only,
        }
    }
}

fn now_secs() -> u64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// `dcr_gateway_acl_matches_total{rule, action}`: every series and its total.
fn acl_totals(metrics: &Metrics) -> Vec<(String, String, u64)> {
    use prometheus::core::Collector;
    let mut out = Vec::new();
    for family in metrics.acl_matches.collect() {
        for m in family.get_metric() {
            let label = |name: &str| m.get_label().iter().find(|l| l.get_name() == name).map(|l| l.get_value());
            if let (Some(rule), Some(action)) = (label("rule"), label("action")) {
                out.push((rule.to_string(), action.to_string(), m.get_counter().get_value() as u64));
            }
        }
    }
    out
}

fn sample(history: &Mutex<History>, metrics: &Metrics) {
    let totals = acl_totals(metrics);
    if let Ok(mut h) = history.lock() {
        h.record(now_secs(), totals.iter().map(|(r, a, t)| (r.as_str(), a.as_str(), *t)));
    }
}

/// Feed the history from the counters every few seconds, for as long as the console lives.
fn start_sampler(history: Weak<Mutex<History>>, metrics: Arc<Metrics>) {
    let spawned = std::thread::Builder::new().name("console-history".into()).spawn(move || loop {
        let Some(h) = history.upgrade() else { return };
        sample(&h, &metrics);
        drop(h);
        std::thread::sleep(SAMPLE_EVERY);
    });
    if let Err(e) = spawned {
        tracing::warn!("console: the match history sampler did not start ({e}); counts are sampled on page views only");
    }
}

fn respond(status: StatusCode, content_type: &'static str, body: Vec<u8>) -> Response<Vec<u8>> {
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(http::header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(http::header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(http::header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    h.insert(http::header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(http::header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    // `same-origin`, not `no-referrer`: with no referrer Chromium sends `Origin: null` on the
    // console's own form posts, which `same_origin` refuses.
    h.insert(http::header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    h.insert("cross-origin-opener-policy", HeaderValue::from_static("same-origin"));
    h.insert("cross-origin-resource-policy", HeaderValue::from_static("same-origin"));
    let len = resp.body().len();
    resp.headers_mut().insert(http::header::CONTENT_LENGTH, HeaderValue::from(len));
    resp
}

fn html(status: StatusCode, body: String) -> Response<Vec<u8>> {
    respond(status, "text/html; charset=utf-8", body.into_bytes())
}

/// 303 See Other (a `POST` answered with a page to `GET`).
fn redirect(location: &str) -> Response<Vec<u8>> {
    let mut resp = respond(StatusCode::SEE_OTHER, "text/plain; charset=utf-8", Vec::new());
    if let Ok(v) = HeaderValue::from_str(location) {
        resp.headers_mut().insert(http::header::LOCATION, v);
    }
    resp
}

fn with_cookie(mut resp: Response<Vec<u8>>, cookie: &str) -> Response<Vec<u8>> {
    if let Ok(v) = HeaderValue::from_str(cookie) {
        resp.headers_mut().append(http::header::SET_COOKIE, v);
    }
    resp
}

/// The session cookie: no `Max-Age` (it ends with the browser; the server ends it sooner).
/// The browser reached the console over HTTPS through a trusted proxy (`[network]
/// trusted_proxies`, `X-Forwarded-Proto: https`): the admin listener itself is plain TCP, so a
/// TLS-terminating proxy in front of it is how a console is served over HTTPS, and the cookie
/// must then be `Secure` too. From any other peer the header is not believed.
fn behind_tls_proxy(head: &RequestHead, snap: &crate::snapshot::Snapshot) -> bool {
    let trusted = head.client_ip.parse::<std::net::IpAddr>().is_ok_and(|ip| snap.config.trusted_proxies.contains(ip));
    trusted
        && head
            .headers
            .get("x-forwarded-proto")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|p| p.trim().eq_ignore_ascii_case("https"))
}

fn session_cookie(id: &str, tls: bool) -> String {
    format!("{COOKIE}={id}; Path=/console; HttpOnly; SameSite=Strict{}", if tls { "; Secure" } else { "" })
}

fn clear_cookie(tls: bool) -> String {
    format!("{COOKIE}=; Path=/console; Max-Age=0; HttpOnly; SameSite=Strict{}", if tls { "; Secure" } else { "" })
}

fn cookie_value(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
        .filter(|v| !v.is_empty())
}

/// A `POST` that a browser says came from another site is refused (defence in depth beside
/// `SameSite=Strict` and the CSRF token): `Origin` must name this host, `Sec-Fetch-Site` must
/// not be `cross-site`.
fn same_origin(headers: &HeaderMap) -> bool {
    let get = |n: &str| headers.get(n).and_then(|v| v.to_str().ok());
    if get("sec-fetch-site").is_some_and(|s| s.eq_ignore_ascii_case("cross-site")) {
        return false;
    }
    match (get("origin"), get("host")) {
        (None, _) => true,
        (Some(origin), Some(host)) => {
            origin.eq_ignore_ascii_case(&format!("http://{host}"))
                || origin.eq_ignore_ascii_case(&format!("https://{host}"))
        }
        (Some(_), None) => false,
    }
}

fn is_form(headers: &HeaderMap) -> bool {
    headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/x-www-form-urlencoded"))
}

fn short(etag: &str) -> String {
    etag.get(..12).unwrap_or(etag).to_string()
}

fn path_id(id: &str) -> String {
    percent_encoding::utf8_percent_encode(id, PATH_SEGMENT).to_string()
}

fn anchor(id: &str) -> String {
    id.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' }).collect()
}

/// The admin API path of the rule `id` (escaped as one path segment).
fn acl_path(id: &str) -> String {
    format!("/api/v2/network-acls/{}", path_id(id))
}

/// `/rules/{id}{suffix}` → the decoded id.
fn rule_id_of(rest: &str, suffix: &str) -> Option<String> {
    let raw = rest.strip_prefix("/rules/")?.strip_suffix(suffix)?;
    if raw.is_empty() || raw.contains('/') {
        return None;
    }
    percent_encoding::percent_decode_str(raw).decode_utf8().ok().map(|s| s.into_owned())
}

/// What a refused write means, in words (the API's own answer, explained).
fn refusal(e: &ApiError, what: &str) -> String {
    match e.status.as_u16() {
        412 => format!(
            "{what} not saved: the file changed since this page was loaded (another admin, an API client or an edit \
             of the file on disk saved first; the console sent the version it showed as If-Match and the gateway \
             refused to overwrite a newer one). The page below is current: check it and apply your change again."
        ),
        403 => format!("{what} not saved: your token lacks the scope this needs ({}).", e.message),
        401 => format!("{what} not saved: your token is no longer accepted ({}). Sign in again.", e.message),
        400 if !e.fields.is_empty() => {
            format!("{what} not saved: {}", e.fields.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))
        }
        _ => format!("{what} not saved: {}", e.message),
    }
}

impl Console {
    /// The console over the gateway's store, counters and audit log; starts the match-history
    /// sampler thread (it ends with the console).
    pub fn new(store: Arc<Store>, metrics: Arc<Metrics>, audit: Arc<AuditLog>) -> Console {
        let history = Arc::new(Mutex::new(History::new()));
        start_sampler(Arc::downgrade(&history), metrics.clone());
        Console { store, metrics, audit, sessions: Mutex::new(SessionStore::new()), history }
    }

    /// Answer one `/console...` request. `tls`: the connection is TLS (the cookie gets
    /// `Secure`).
    pub async fn handle(
        &self,
        api: &AdminApi,
        head: &RequestHead,
        body: &mut dyn ApiBody,
        tls: bool,
    ) -> Response<Vec<u8>> {
        let snap = self.store.load_full();
        if !snap.config.admin.api_enabled {
            return respond(StatusCode::NOT_FOUND, "text/plain; charset=utf-8", b"not found\n".to_vec());
        }
        let tls = tls || behind_tls_proxy(head, &snap);
        let rest = head.path.strip_prefix(PREFIX).unwrap_or("");
        let get = head.method == Method::GET || head.method == Method::HEAD;
        let post = head.method == Method::POST;
        match rest {
            "" | "/" if get => return redirect("/console/rules"),
            "/assets/console.css" if get => {
                return respond(StatusCode::OK, "text/css; charset=utf-8", CSS.as_bytes().to_vec())
            }
            "/assets/console.js" if get => {
                return respond(StatusCode::OK, "text/javascript; charset=utf-8", JS.as_bytes().to_vec())
            }
            "/login" if get => {
                if self.caller(head, &snap, false).is_some() {
                    return redirect("/console/rules");
                }
                return html(StatusCode::OK, render(&LoginPage { chrome: Chrome::anonymous(), error: None }));
            }
            "/login" if post => return self.sign_in(api, head, body, tls).await,
            _ => {}
        }
        if !get && !post {
            let mut r =
                respond(StatusCode::METHOD_NOT_ALLOWED, "text/plain; charset=utf-8", b"method not allowed\n".to_vec());
            r.headers_mut().insert(http::header::ALLOW, HeaderValue::from_static("GET, HEAD, POST"));
            return r;
        }
        let Some(caller) = self.caller(head, &snap, get) else {
            return redirect("/console/login");
        };
        if get {
            let query = Form::parse(head.query.as_deref().unwrap_or("").as_bytes());
            if rest == "/clients" {
                return self.clients_page(api, &caller, head, &query).await;
            }
            return self.page(&caller, &snap, rest, &query);
        }
        if !same_origin(&head.headers) {
            return self.message(
                &caller,
                StatusCode::FORBIDDEN,
                "Refused",
                "This form was not sent from this console.",
            );
        }
        if !is_form(&head.headers) {
            return self.message(
                &caller,
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "Refused",
                "Console forms are sent as application/x-www-form-urlencoded.",
            );
        }
        let bytes = match body.read(FORM_LIMIT, FORM_TIMEOUT).await {
            Ok(b) => b,
            Err(e) => return self.message(&caller, e.status, "Refused", &e.message),
        };
        let form = Form::parse(&bytes);
        let csrf_ok = form.get("csrf").is_some_and(|t| {
            self.sessions
                .lock()
                .ok()
                .and_then(|mut s| s.get(&caller.session_id, Instant::now()).map(|s| s.csrf_matches(t)))
                .unwrap_or(false)
        });
        if !csrf_ok {
            tracing::warn!(actor = %caller.label, path = %head.path, "console: write refused, missing or wrong CSRF token");
            return self.message(
                &caller,
                StatusCode::FORBIDDEN,
                "Refused",
                "The form's CSRF token is missing or does not belong to this session (an old page, or a form from \
                 elsewhere). Nothing was changed; reload the page and try again.",
            );
        }
        self.write(api, &caller, head, rest, &form, tls).await
    }

    /// The signed-in caller: a live session whose token is still in the token file, not
    /// expired. A session whose token is gone is ended.
    fn caller(&self, head: &RequestHead, snap: &Snapshot, take_notice: bool) -> Option<Caller> {
        let id = cookie_value(&head.headers, COOKIE)?;
        let mut sessions = self.sessions.lock().ok()?;
        let s = sessions.get(&id, Instant::now())?;
        let entry = snap
            .admin_tokens
            .entries()
            .iter()
            .find(|e| e.sha256_hex == s.token_sha256)
            .filter(|e| !e.is_expired(SystemTime::now()));
        let Some(entry) = entry else {
            let gone = s.token_sha256.clone();
            sessions.remove_token(&gone);
            return None;
        };
        let notice = if take_notice { s.notice.take() } else { None };
        Some(Caller {
            session_id: id,
            token_sha256: s.token_sha256.clone(),
            label: entry.label.clone(),
            csrf: s.csrf.clone(),
            notice,
            scopes: entry.scopes.clone(),
        })
    }

    fn set_notice(&self, caller: &Caller, ok: bool, text: String) {
        if let Ok(mut s) = self.sessions.lock() {
            if let Some(s) = s.get(&caller.session_id, Instant::now()) {
                s.notice = Some(Notice { ok, text });
            }
        }
    }

    fn message(&self, caller: &Caller, status: StatusCode, heading: &str, text: &str) -> Response<Vec<u8>> {
        let page = MessagePage {
            chrome: caller.chrome(""),
            heading: heading.to_string(),
            text: text.to_string(),
            back: "/console/rules".into(),
        };
        html(status, render(&page))
    }

    fn lacks(&self, caller: &Caller, scope: &str) -> Response<Vec<u8>> {
        self.message(
            caller,
            StatusCode::FORBIDDEN,
            "Not allowed",
            &format!("Your token ({}) does not carry the {scope} scope this page needs.", caller.label),
        )
    }

    async fn sign_in(
        &self,
        api: &AdminApi,
        head: &RequestHead,
        body: &mut dyn ApiBody,
        tls: bool,
    ) -> Response<Vec<u8>> {
        let refuse = |status, why: &str| {
            html(status, render(&LoginPage { chrome: Chrome::anonymous(), error: Some(why.to_string()) }))
        };
        if !same_origin(&head.headers) {
            return refuse(StatusCode::FORBIDDEN, "This sign-in form was not sent from this console.");
        }
        if !is_form(&head.headers) {
            return refuse(StatusCode::UNSUPPORTED_MEDIA_TYPE, "Sign in with the form.");
        }
        let bytes = match body.read(FORM_LIMIT, FORM_TIMEOUT).await {
            Ok(b) => b,
            Err(e) => return refuse(e.status, &e.message),
        };
        let form = Form::parse(&bytes);
        let token = form.get("token").unwrap_or("").trim();
        match api.console_sign_in(token) {
            Ok((label, sha256)) => {
                let id = {
                    let Ok(mut sessions) = self.sessions.lock() else {
                        return refuse(StatusCode::INTERNAL_SERVER_ERROR, "The session store is unavailable.");
                    };
                    if let Some(old) = cookie_value(&head.headers, COOKIE) {
                        sessions.remove(&old);
                    }
                    sessions.create(&sha256, Instant::now())
                };
                tracing::info!(actor = %label, client_ip = %head.client_ip, "console sign-in");
                with_cookie(redirect("/console/rules"), &session_cookie(&id, tls))
            }
            Err(e) => {
                tracing::warn!(client_ip = %head.client_ip, reason = e.as_str(), "console sign-in refused");
                refuse(StatusCode::UNAUTHORIZED, &format!("Not signed in: {e}."))
            }
        }
    }

    // ------------------------------------------------------------------------------------
    // Pages

    fn page(&self, caller: &Caller, snap: &Snapshot, rest: &str, query: &Form) -> Response<Vec<u8>> {
        match rest {
            "/rules" => self.rules_page(caller, snap),
            "/rules/new" => {
                if !caller.can("create:network_acls") {
                    return self.lacks(caller, "create:network_acls");
                }
                let page = RuleEditPage::new(
                    caller.chrome("rules"),
                    true,
                    RuleForm::blank(),
                    "/console/rules".into(),
                    snap.rules_sha256.clone(),
                    Vec::new(),
                    Vec::new(),
                    false,
                    "/console/rules/new".into(),
                );
                html(StatusCode::OK, render(&page))
            }
            "/decisions" => self.decisions_page(caller, snap, query),
            "/explain" => self.explain_page(caller, snap, query),
            "/tenant" => self.tenant_page(caller, snap, None),
            _ => match rule_id_of(rest, "/edit") {
                Some(id) => {
                    if !caller.can("update:network_acls") {
                        return self.lacks(caller, "update:network_acls");
                    }
                    let Some((rule, id)) = snap.acl.rules().iter().zip(snap.acl.rule_ids()).find(|(_, i)| *i == id)
                    else {
                        return self.message(
                            caller,
                            StatusCode::NOT_FOUND,
                            "No such rule",
                            "The rule does not exist (any more).",
                        );
                    };
                    let page = RuleEditPage::new(
                        caller.chrome("rules"),
                        false,
                        RuleForm::from_rule(rule, id),
                        format!("/console/rules/{}", path_id(id)),
                        snap.rules_sha256.clone(),
                        Vec::new(),
                        Vec::new(),
                        false,
                        format!("/console/rules/{}/edit", path_id(id)),
                    );
                    html(StatusCode::OK, render(&page))
                }
                None => self.message(caller, StatusCode::NOT_FOUND, "Not found", "There is no such console page."),
            },
        }
    }

    fn rules_page(&self, caller: &Caller, snap: &Snapshot) -> Response<Vec<u8>> {
        if !caller.can("read:network_acls") {
            return self.lacks(caller, "read:network_acls");
        }
        sample(&self.history, &self.metrics);
        let rules = snap.acl.rules();
        let ids: Vec<&str> = snap.acl.rule_ids().collect();
        let mut order: Vec<usize> = (0..rules.len()).collect();
        order.sort_by(|a, b| rules[*a].priority.total_cmp(&rules[*b].priority).then(a.cmp(b)));
        let rows = {
            let history = self.history.lock().unwrap_or_else(|p| p.into_inner());
            order
                .iter()
                .enumerate()
                .map(|(pos, &i)| {
                    let (rule, id) = (&rules[i], ids[i]);
                    let action = form::action_of(rule);
                    let monitoring = form::is_monitoring(rule);
                    RuleRow {
                        order: pos + 1,
                        id: id.to_string(),
                        path_id: path_id(id),
                        anchor: anchor(id),
                        description: rule.description.clone().unwrap_or_default(),
                        active: rule.active,
                        priority: RuleForm::from_rule(rule, id).priority,
                        action,
                        monitoring,
                        log_only: action == "log",
                        action_label: match (action, monitoring) {
                            ("log", _) => "log only",
                            (a, false) => a,
                            ("block", true) => "block · monitoring",
                            ("allow", true) => "allow · monitoring",
                            (_, true) => "redirect · monitoring",
                        },
                        redirect_uri: rule.rule.action.redirect_uri.clone().unwrap_or_default(),
                        scope: rule.rule.scope.clone(),
                        signals: pages::signals_summary(rule),
                        counts: pages::counts(&history, id, if monitoring { "log" } else { action }),
                        spark_hour: pages::sparkline(&history.bins(id, 12, 5), "Last hour, 5-minute bins"),
                        spark_day: pages::sparkline(&history.bins(id, 24, 60), "Last 24 hours, hourly bins"),
                    }
                })
                .collect()
        };
        let page = RulesPage {
            chrome: caller.chrome("rules"),
            unavailable: snap.config.rules_file.is_none().then(|| {
                "No rules file is configured ([acl] rules in gateway.toml): there are no network ACLs to show or edit."
                    .to_string()
            }),
            default_action: match snap.acl.default_action() {
                crate::acl::DefaultAction::Allow => "allow",
                crate::acl::DefaultAction::Block => "block",
            },
            etag: snap.rules_sha256.clone(),
            etag_short: short(&snap.rules_sha256),
            rules: rows,
            can_create: caller.can("create:network_acls"),
            can_update: caller.can("update:network_acls"),
            can_delete: caller.can("delete:network_acls"),
        };
        html(StatusCode::OK, render(&page))
    }

    fn decisions_page(&self, caller: &Caller, snap: &Snapshot, query: &Form) -> Response<Vec<u8>> {
        if !caller.can("read:network_acls") {
            return self.lacks(caller, "read:network_acls");
        }
        let filter = DecisionFilter::from_form(query);
        let lines: Vec<Value> = self.audit.recent().into_iter().filter(|l| l.get("decision").is_some()).collect();
        let matching: Vec<&Value> = lines.iter().filter(|l| filter.accepts(l)).collect();
        let page = DecisionsPage {
            chrome: caller.chrome("decisions"),
            enabled: self.audit.is_enabled() && snap.config.audit_enabled,
            kept: crate::telemetry::audit::RECENT_LINES,
            rows: matching.iter().take(DECISION_ROWS).map(|l| pages::decision_row(l)).collect(),
            matching: matching.len(),
            total: lines.len(),
            filter,
            decision_choices: &["", "allow", "block", "redirect"],
            rule_ids: snap.acl.rule_ids().map(str::to_string).collect(),
            error_codes: &[
                "invalid_redirect_uri",
                "invalid_client_metadata",
                "invalid_software_statement",
                "unapproved_software_statement",
                "invalid_request",
                "invalid_token",
                "access_denied",
                "rate_limited",
            ],
        };
        html(StatusCode::OK, render(&page))
    }

    fn explain_page(&self, caller: &Caller, snap: &Snapshot, query: &Form) -> Response<Vec<u8>> {
        if !caller.can("read:network_acls") {
            return self.lacks(caller, "read:network_acls");
        }
        let q = ExplainQuery::from_form(query);
        let (result, error) = if q.ip.is_empty() {
            (None, query.get("ip").map(|_| "Give the client IP to explain a request.".to_string()))
        } else {
            match explain::run(snap, &q) {
                Ok(r) => (Some(r), None),
                Err(e) => (None, Some(e)),
            }
        };
        let page = ExplainPage {
            chrome: caller.chrome("explain"),
            q,
            scope_choices: &["dcr", "management", "authentication"],
            error,
            result,
        };
        html(if page.error.is_some() { StatusCode::BAD_REQUEST } else { StatusCode::OK }, render(&page))
    }

    /// The tenant page; `posted`: a refused form to show again, with its errors.
    fn tenant_page(&self, caller: &Caller, snap: &Snapshot, posted: Option<TenantRefusal>) -> Response<Vec<u8>> {
        if !caller.can("read:tenant_settings") {
            return self.lacks(caller, "read:tenant_settings");
        }
        let policy = &snap.config.dcr;
        let enabled = policy.enabled;
        let security_mode = serde_json::to_value(policy.security_mode)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        let allowed = policy.allowed_scopes.clone();
        let default_scope = policy.default_scope.clone();
        let current_form = TenantForm {
            enabled,
            security_mode: security_mode.clone(),
            allowed: allowed.as_ref().map(|a| a.join(" ")).unwrap_or_default(),
            allowed_any: allowed.is_none(),
            default_scope: default_scope.clone().unwrap_or_default(),
        };
        let (status, form, errors, general, conflict) = match posted {
            None => (StatusCode::OK, current_form, Vec::new(), Vec::new(), false),
            Some(p) => (p.status, p.form, p.errors, p.general, p.conflict),
        };
        let page = TenantPage {
            chrome: caller.chrome("tenant"),
            unavailable: None,
            etag: snap.settings_sha256.clone(),
            etag_short: short(&snap.settings_sha256),
            enabled,
            security_mode,
            allowed,
            default_scope,
            can_update: caller.can("update:tenant_settings"),
            form,
            form_etag: snap.settings_sha256.clone(),
            errors,
            general,
            conflict,
        };
        html(status, render(&page))
    }

    /// The client registry, read through `GET /api/v2/clients` (scope `read:clients`).
    async fn clients_page(
        &self,
        api: &AdminApi,
        caller: &Caller,
        head: &RequestHead,
        query: &Form,
    ) -> Response<Vec<u8>> {
        if !caller.can("read:clients") {
            return self.lacks(caller, "read:clients");
        }
        let mut page = ClientsPage {
            chrome: caller.chrome("clients"),
            status: None,
            counts: Vec::new(),
            state: String::new(),
            state_choices: &["", "active", "unused", "idle", "deleted"],
            rows: Vec::new(),
            total: 0,
            can_delete: caller.can("delete:clients"),
        };
        if api.registry.get().is_none() {
            page.status = Some(
                "Registry not configured: this gateway keeps no client registry ([registry] enabled = false), so \
                 there are no clients to list. With the registry on, this page lists every client registered \
                 through the gateway: unused, idle, deleted (reaped) and active ones."
                    .into(),
            );
            return html(StatusCode::OK, render(&page));
        }
        let state = query.text("state");
        page.state = if page.state_choices.contains(&state.as_str()) { state } else { String::new() };
        let list = |q: String| {
            let head = RequestHead {
                method: Method::GET,
                path: "/api/v2/clients".into(),
                query: Some(q),
                headers: HeaderMap::new(),
                client_ip: head.client_ip.clone(),
            };
            async move { api.handle_for_console(&caller.token_sha256, &head, None).await }
        };
        let total = |v: &Option<Value>| v.as_ref().and_then(|v| v["total"].as_u64()).unwrap_or(0);
        for s in ["active", "unused", "idle", "deleted"] {
            match list(format!("per_page=1&include_totals=true&state={s}")).await {
                Ok((_, v, _)) => page.counts.push((s, total(&v))),
                Err(e) => {
                    page.status = Some(refusal(&e, "Clients").replacen("Clients not saved", "Clients not listed", 1));
                    return html(e.status, render(&page));
                }
            }
        }
        let mut q = "per_page=100&include_totals=true".to_string();
        if !page.state.is_empty() {
            q.push_str(&format!("&state={}", page.state));
        }
        match list(q).await {
            Ok((_, v, _)) => {
                page.total = total(&v) as usize;
                page.rows = v
                    .as_ref()
                    .and_then(|v| v["clients"].as_array())
                    .map(|items| {
                        items
                            .iter()
                            .map(|c| pages::client_row(c, path_id(c["client_id"].as_str().unwrap_or(""))))
                            .collect()
                    })
                    .unwrap_or_default();
                html(StatusCode::OK, render(&page))
            }
            Err(e) => {
                page.status = Some(refusal(&e, "Clients").replacen("Clients not saved", "Clients not listed", 1));
                html(e.status, render(&page))
            }
        }
    }

    // ------------------------------------------------------------------------------------
    // Writes: each one is the API call an API client would make, through the API's service.

    #[allow(clippy::too_many_arguments)]
    async fn call(
        &self,
        api: &AdminApi,
        caller: &Caller,
        head: &RequestHead,
        method: Method,
        path: String,
        etag: &str,
        body: Option<Value>,
    ) -> Result<(StatusCode, Option<Value>, Option<String>), ApiError> {
        let mut headers = HeaderMap::new();
        if !etag.is_empty() {
            if let Ok(v) = HeaderValue::from_str(&format!("\"{etag}\"")) {
                headers.insert(http::header::IF_MATCH, v);
            }
        }
        let api_head = RequestHead { method, path, query: None, headers, client_ip: head.client_ip.clone() };
        api.handle_for_console(&caller.token_sha256, &api_head, body).await
    }

    #[allow(clippy::too_many_arguments)]
    async fn write(
        &self,
        api: &AdminApi,
        caller: &Caller,
        head: &RequestHead,
        rest: &str,
        form: &Form,
        tls: bool,
    ) -> Response<Vec<u8>> {
        let etag = form.text("etag");
        if rest == "/logout" {
            if let Ok(mut s) = self.sessions.lock() {
                s.remove(&caller.session_id);
            }
            tracing::info!(actor = %caller.label, "console sign-out");
            return with_cookie(redirect("/console/login"), &clear_cookie(tls));
        }
        if rest == "/tenant" {
            let patch = form::settings_patch(form, &settings_now(&self.store.load_full()));
            return match self
                .call(api, caller, head, Method::PATCH, "/api/v2/tenants/settings".into(), &etag, Some(patch))
                .await
            {
                Ok(_) => {
                    self.set_notice(caller, true, "Tenant settings saved; the gateway enforces them now.".into());
                    redirect("/console/tenant")
                }
                Err(e) => {
                    let mut errors = Vec::new();
                    let mut general = Vec::new();
                    for f in &e.fields {
                        match form::settings_field(&f.field) {
                            k if k.is_empty() => general.push(f.to_string()),
                            k => errors.push((k, f.message.clone())),
                        }
                    }
                    let conflict = e.status == StatusCode::PRECONDITION_FAILED;
                    if e.fields.is_empty() && !conflict {
                        general.push(refusal(&e, "Settings"));
                    }
                    let posted = TenantRefusal {
                        status: e.status,
                        form: TenantForm {
                            enabled: form.get("enable_dynamic_client_registration").is_some(),
                            security_mode: form.text("security_mode"),
                            allowed: form.text("allowed_scopes"),
                            allowed_any: form.get("allowed_any").is_some(),
                            default_scope: form.text("default_scope"),
                        },
                        errors,
                        general,
                        conflict,
                    };
                    self.tenant_page(caller, &self.store.load_full(), Some(posted))
                }
            };
        }
        if rest == "/rules" {
            let rf = RuleForm::from_form(form);
            let result = self
                .call(api, caller, head, Method::POST, "/api/v2/network-acls".into(), &etag, Some(rf.to_json(true)))
                .await;
            return match result {
                Ok((_, body, _)) => {
                    let id = body.as_ref().and_then(|b| b["id"].as_str()).unwrap_or("").to_string();
                    self.set_notice(caller, true, format!("Rule {id} created; the gateway enforces it now."));
                    redirect(&format!("/console/rules#rule-{}", anchor(&id)))
                }
                Err(e) => self.refused_edit(caller, true, rf, "/console/rules".into(), "/console/rules/new".into(), &e),
            };
        }
        if let Some(id) = rest.strip_prefix("/clients/").and_then(|r| r.strip_suffix("/delete")) {
            let id = percent_encoding::percent_decode_str(id).decode_utf8_lossy().into_owned();
            let r = self
                .call(api, caller, head, Method::DELETE, format!("/api/v2/clients/{}", path_id(&id)), "", None)
                .await;
            match r {
                Ok(_) => self.set_notice(caller, true, format!("Client {id} deleted at the IdP and in the registry.")),
                Err(e) => self.set_notice(caller, false, refusal(&e, "Deletion").replacen("not saved", "not done", 1)),
            }
            return redirect("/console/clients");
        }
        if let Some(id) = rule_id_of(rest, "/active") {
            let active = form.text("active") == "true";
            let r = self
                .call(
                    api,
                    caller,
                    head,
                    Method::PATCH,
                    acl_path(&id),
                    &etag,
                    Some(serde_json::json!({"active": active})),
                )
                .await;
            let text =
                if active { "active: the gateway evaluates it now" } else { "inactive: the gateway skips it now" };
            return self.after_rule_write(caller, &id, r.map(|_| format!("Rule {id} is {text}.")));
        }
        if let Some(id) = rule_id_of(rest, "/mode") {
            // Auth0's monitoring mode: `log` set beside the rule's action (a merge PATCH), and
            // removed again to enforce; a rule that only logs gets an action to enforce.
            let mode = form.text("mode");
            let action = match mode.as_str() {
                "log" => serde_json::json!({"log": true}),
                "enforce" => serde_json::json!({"log": null}),
                "block" | "allow" => serde_json::json!({"log": null, mode.as_str(): true}),
                _ => return self.message(caller, StatusCode::BAD_REQUEST, "Refused", "Unknown mode."),
            };
            let r = self
                .call(
                    api,
                    caller,
                    head,
                    Method::PATCH,
                    acl_path(&id),
                    &etag,
                    Some(serde_json::json!({ "rule": { "action": action } })),
                )
                .await;
            let text = if mode == "log" {
                format!("Rule {id} is in monitoring mode (log): matching requests are recorded, not enforced.")
            } else {
                format!("Rule {id} is enforced again: matching requests get its action.")
            };
            return self.after_rule_write(caller, &id, r.map(|_| text));
        }
        if let Some(id) = rule_id_of(rest, "/delete") {
            let r = self.call(api, caller, head, Method::DELETE, acl_path(&id), &etag, None).await;
            return self.after_rule_write(caller, "", r.map(|_| format!("Rule {id} deleted.")));
        }
        if let Some(id) = rule_id_of(rest, "") {
            let mut rf = RuleForm::from_form(form);
            rf.id = id.clone();
            let result = self.call(api, caller, head, Method::PUT, acl_path(&id), &etag, Some(rf.to_json(false))).await;
            return match result {
                Ok(_) => {
                    self.set_notice(caller, true, format!("Rule {id} saved; the gateway enforces it now."));
                    redirect(&format!("/console/rules#rule-{}", anchor(&id)))
                }
                Err(e) => {
                    let action = format!("/console/rules/{}", path_id(&id));
                    let reload = format!("/console/rules/{}/edit", path_id(&id));
                    self.refused_edit(caller, false, rf, action, reload, &e)
                }
            };
        }
        self.message(caller, StatusCode::NOT_FOUND, "Not found", "There is no such console form.")
    }

    fn after_rule_write(&self, caller: &Caller, id: &str, r: Result<String, ApiError>) -> Response<Vec<u8>> {
        match r {
            Ok(text) => self.set_notice(caller, true, text),
            Err(e) => self.set_notice(caller, false, refusal(&e, "Change")),
        }
        if id.is_empty() {
            redirect("/console/rules")
        } else {
            redirect(&format!("/console/rules#rule-{}", anchor(id)))
        }
    }

    /// A refused create or edit: the form again, with the API's errors at their fields; after a
    /// 412 with the current version's ETag, so that saving again is a deliberate overwrite.
    fn refused_edit(
        &self,
        caller: &Caller,
        is_new: bool,
        rf: RuleForm,
        action: String,
        reload_href: String,
        e: &ApiError,
    ) -> Response<Vec<u8>> {
        let conflict = e.status == StatusCode::PRECONDITION_FAILED;
        let mut errors = Vec::new();
        let mut general = Vec::new();
        for f in &e.fields {
            match form::form_field(&f.field) {
                k if k.is_empty() => general.push(f.to_string()),
                k => errors.push((k, f.message.clone())),
            }
        }
        if e.status == StatusCode::CONFLICT && e.message == crate::admin::network_acls::PRIORITY_TAKEN {
            // Auth0's rule: one rule per priority.
            errors.push(("priority".to_string(), e.message.clone()));
        } else if e.fields.is_empty() && !conflict {
            general.push(refusal(e, "Rule"));
        }
        let current = self.store.load_full();
        let page = RuleEditPage::new(
            caller.chrome("rules"),
            is_new,
            rf,
            action,
            current.rules_sha256.clone(),
            errors,
            general,
            conflict,
            reload_href,
        );
        html(e.status, render(&page))
    }
}

/// The settings in force, in the shape of a `PATCH /api/v2/tenants/settings` body.
fn settings_now(snap: &Snapshot) -> Value {
    let p = &snap.config.dcr;
    serde_json::json!({
        "flags": {"enable_dynamic_client_registration": p.enabled},
        "dynamic_client_registration_security_mode": serde_json::to_value(p.security_mode).unwrap_or(Value::Null),
        "default_dcr_scopes": {"allowed": p.allowed_scopes, "default": p.default_scope},
    })
}

struct TenantRefusal {
    status: StatusCode,
    form: TenantForm,
    errors: Vec<(String, String)>,
    general: Vec<String>,
    conflict: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(http::HeaderName::from_bytes(k.as_bytes()).unwrap(), HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn console_paths() {
        assert!(is_console_path("/console") && is_console_path("/console/rules"));
        assert!(!is_console_path("/consoles") && !is_console_path("/api/v2/console"));
    }

    #[test]
    fn cookies_are_read_and_written_strictly() {
        let h = headers(&[("cookie", "a=1; dcrgw_console=abc; b=2")]);
        assert_eq!(cookie_value(&h, COOKIE).as_deref(), Some("abc"));
        assert_eq!(cookie_value(&headers(&[("cookie", "dcrgw_console=")]), COOKIE), None);
        let c = session_cookie("id", false);
        assert!(c.contains("HttpOnly") && c.contains("SameSite=Strict") && c.contains("Path=/console"));
        assert!(!c.contains("Secure"));
        assert!(session_cookie("id", true).ends_with("; Secure"));
    }

    #[test]
    fn cross_site_posts_are_refused() {
        assert!(same_origin(&headers(&[("host", "127.0.0.1:9464")])));
        assert!(same_origin(&headers(&[("host", "127.0.0.1:9464"), ("origin", "http://127.0.0.1:9464")])));
        assert!(!same_origin(&headers(&[("host", "127.0.0.1:9464"), ("origin", "https://evil.example")])));
        assert!(!same_origin(&headers(&[("host", "127.0.0.1:9464"), ("origin", "null")])));
        assert!(!same_origin(&headers(&[("host", "h"), ("sec-fetch-site", "cross-site")])));
    }

    #[test]
    fn rule_ids_in_paths() {
        assert_eq!(rule_id_of("/rules/a%20b/edit", "/edit").as_deref(), Some("a b"));
        assert_eq!(rule_id_of("/rules/a/b/edit", "/edit"), None);
        assert_eq!(rule_id_of("/rules//edit", "/edit"), None);
        assert_eq!(rule_id_of("/rules/x", "").as_deref(), Some("x"));
        assert_eq!(path_id("a b/c"), "a%20b%2Fc");
        assert_eq!(anchor("a b.c"), "a_b_c");
    }

    #[test]
    fn pages_carry_the_strict_headers() {
        let r = html(StatusCode::OK, "<p>x</p>".into());
        assert_eq!(r.headers()[http::header::CONTENT_SECURITY_POLICY], CSP);
        assert!(CSP.contains("script-src 'self'") && !CSP.contains("unsafe-inline"));
        assert_eq!(r.headers()[http::header::CACHE_CONTROL], "no-store");
        assert_eq!(r.headers()[http::header::X_FRAME_OPTIONS], "DENY");
    }

    #[test]
    fn embedded_assets_have_no_inline_code_in_templates() {
        for t in [
            include_str!("../../templates/console/base.html"),
            include_str!("../../templates/console/rules.html"),
            include_str!("../../templates/console/rule_edit.html"),
            include_str!("../../templates/console/decisions.html"),
            include_str!("../../templates/console/explain.html"),
            include_str!("../../templates/console/tenant.html"),
            include_str!("../../templates/console/login.html"),
        ] {
            assert!(!t.contains(" style="), "inline style");
            assert!(!t.contains("<style"), "style element");
            assert!(!t.contains(" onclick") && !t.contains(" onsubmit") && !t.contains(" onchange"), "inline handler");
            assert!(!t.contains("<script>"), "inline script");
        }
        assert!(JS.contains("use strict") && CSS.contains(":focus-visible"));
    }
}
