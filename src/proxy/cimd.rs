//! `[cimd]` on the IdP's endpoints. `enforce`: an authorization request (GET or POST on
//! `authorize_paths`) or a pushed authorization request (POST on the PAR paths) whose
//! `client_id` is a URL passes only when the client's metadata document allows it. `bridge`:
//! the same, and on those and the token, revocation and introspection endpoints a URL
//! client_id is replaced by the IdP's client for the document (`registry::bridge`, registered
//! on first use) in what is forwarded — the query, or the form body (read whole, rewritten,
//! its length set again). The decisions are `fetch::cimd::Documents` and `cimd::bridge`; this
//! file reads the request and writes the answers.

use bytes::Bytes;
use pingora::http::ResponseHeader;
use pingora::prelude::*;

use super::{Gateway, RequestCtx};
use crate::acl::Decision;
use crate::cimd::bridge::{self as rules, ClientIdAt, Endpoint, Paths};
use crate::cimd::{self, Document, Mode};
use crate::core::outcome::Outcome;
use crate::fetch::cimd::AuthorizeDecision;
use crate::state::snapshot::Snapshot;

/// A form body (authorization POST, PAR, token, revocation, introspection), read whole before
/// it is judged and forwarded.
const FORM_LIMIT: usize = 16 * 1024;
const FORM_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

fn is_form(session: &Session) -> bool {
    session
        .req_header()
        .headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.to_ascii_lowercase().starts_with("application/x-www-form-urlencoded"))
}

impl Gateway {
    /// `Ok(true)`: answered here (refused); `Ok(false)`: the request goes on to the IdP.
    pub(super) async fn cimd_phase(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        snap: &Snapshot,
    ) -> Result<bool> {
        let settings = &snap.config.cimd;
        let Some(docs) = self.cimd.clone() else { return Ok(false) };
        if settings.mode == Mode::Off {
            return Ok(false);
        }
        let bridging = settings.mode == Mode::Bridge;
        let Some(target) = ctx.admission.route.as_ref().map(|r| r.upstream_target.clone()) else { return Ok(false) };
        let (path, query) = target.split_once('?').unwrap_or((&target, ""));
        let Some(endpoint) = self.cimd_paths.endpoint_of(path) else { return Ok(false) };
        if !bridging && !matches!(endpoint, Endpoint::Authorize | Endpoint::Par) {
            return Ok(false);
        }
        let method = session.req_header().method.clone();
        // HEAD: IdPs route it as GET (koa-router does), so it is judged as GET.
        let get = (method == http::Method::GET || method == http::Method::HEAD) && endpoint == Endpoint::Authorize;
        if !get && method != http::Method::POST {
            return Ok(false);
        }
        if bridging {
            let basic = session
                .req_header()
                .headers
                .get(http::header::AUTHORIZATION)
                .and_then(|v| rules::basic_client_id(v.as_bytes()));
            if basic.is_some_and(|id| cimd::is_url_client_id(&id)) {
                // A document cannot hold a shared secret: its client is public (RFC 6749 §2.3.1
                // needs one).
                return self
                    .cimd_answer(
                        session,
                        ctx,
                        401,
                        "invalid_client",
                        "a client identified by a metadata document URL is public: send client_id in the request \
                         (token_endpoint_auth_method \"none\"); HTTP Basic client authentication is not supported",
                    )
                    .await;
            }
        }
        // OIDC Core §3.1.2.1 (authorization POST), RFC 9126 (PAR) and the token-side endpoints
        // take form bodies: read whole here, judged and forwarded as read (or as rewritten).
        let mut form: Option<Vec<u8>> = None;
        if method == http::Method::POST {
            let form_type = is_form(session);
            let body = match self.read_body(session, FORM_LIMIT, FORM_TIMEOUT).await {
                Ok(b) => b,
                Err(e) => return self.refuse(session, ctx, Outcome::Invalid, e).await,
            };
            ctx.registration.body_type = session.req_header().headers.get(http::header::CONTENT_TYPE).cloned();
            ctx.registration.body = Some(Bytes::from(body.clone()));
            if form_type {
                form = Some(body);
            }
        }
        let at = match rules::client_id_in(query, form.as_deref()) {
            Ok(at) => at,
            Err(e) => {
                let any_url = url::form_urlencoded::parse(query.as_bytes())
                    .chain(url::form_urlencoded::parse(form.as_deref().unwrap_or_default()))
                    .any(|(k, v)| k == "client_id" && cimd::is_url_client_id(&v));
                if !any_url {
                    return Ok(false);
                }
                return self
                    .cimd_refused(session, ctx, endpoint, &cimd::CimdError::unjudgeable(format!("request: {e}")))
                    .await;
            }
        };
        let client_id = match &at {
            ClientIdAt::Query(c) | ClientIdAt::Body(c) if cimd::is_url_client_id(c) => c.clone(),
            _ => return Ok(false),
        };
        if matches!(at, ClientIdAt::Body(_)) && snap.acl.uses_client_id_hosts() {
            if let Some(answered) = self.acl_with_body_client_id(session, ctx, snap, &client_id).await? {
                return Ok(answered);
            }
        }
        let doc = match endpoint {
            Endpoint::Authorize | Endpoint::Par => {
                let body = form.as_deref().map(String::from_utf8_lossy).unwrap_or_default();
                let decision = if endpoint == Endpoint::Par {
                    docs.pushed(&format!("{query}&{body}"), settings, &snap.config.dcr).await
                } else {
                    docs.authorize(&format!("{query}&{body}"), settings, &snap.config.dcr).await
                };
                match decision {
                    AuthorizeDecision::NotCimd => return Ok(false),
                    AuthorizeDecision::Allow(doc) => doc,
                    AuthorizeDecision::RedirectError { location, error } if endpoint == Endpoint::Authorize => {
                        tracing::info!(request_id = %ctx.admission.request_id, error = error.code(), "cimd: authorization refused (to the proven redirect URI)");
                        ctx.refuse(Outcome::Invalid);
                        return self.redirect(session, ctx, &location).await;
                    }
                    // PAR is answered to the client itself (RFC 9126 §2.3), never by redirect.
                    AuthorizeDecision::RedirectError { error, .. } | AuthorizeDecision::ErrorPage(error) => {
                        return self.cimd_refused(session, ctx, endpoint, &error).await;
                    }
                }
            }
            _ => match docs.resolve(&client_id, settings, &snap.config.dcr).await {
                Ok(doc) => doc,
                Err(error) => return self.cimd_refused(session, ctx, endpoint, &error).await,
            },
        };
        if !bridging {
            return Ok(false);
        }
        let idp_client = match self.bridge_client(ctx, snap, doc).await {
            Ok(id) => id,
            Err(BridgeDenied::Answer(status, code, description)) => {
                return self.cimd_answer(session, ctx, status, code, &description).await
            }
            Err(BridgeDenied::Refused(outcome, err)) => return self.refuse(session, ctx, outcome, err).await,
        };
        match at {
            ClientIdAt::Query(_) => {
                if let (Some(q), Some(route)) =
                    (rules::rewrite_client_id(query, &idp_client), ctx.admission.route.as_mut())
                {
                    route.upstream_target = format!("{path}?{q}");
                }
            }
            ClientIdAt::Body(_) => {
                let Some(text) = form.as_deref().and_then(|b| std::str::from_utf8(b).ok()) else {
                    let e = cimd::CimdError::unjudgeable("request: the form body is not UTF-8");
                    return self.cimd_refused(session, ctx, endpoint, &e).await;
                };
                if let Some(b) = rules::rewrite_client_id(text, &idp_client) {
                    ctx.registration.body = Some(Bytes::from(b));
                }
            }
            ClientIdAt::None => {}
        }
        Ok(false)
    }

    /// The IdP's client_id for `doc`, registered or updated now when needed (blocking store and
    /// IdP calls, off the async workers). A registration or update is first counted against
    /// `[rate_limit]` for the client's address, as a registration through the registration
    /// endpoint is: any number of document URLs can be made up, IdP clients must not be. With
    /// `[dcr] resolve_metadata_uris` the document's fetched URIs are resolved and judged first,
    /// as a registration's are.
    async fn bridge_client(
        &self,
        ctx: &mut RequestCtx,
        snap: &Snapshot,
        doc: std::sync::Arc<Document>,
    ) -> std::result::Result<String, BridgeDenied> {
        let internal = BridgeDenied::Answer(500, "server_error", "the gateway could not map the client".to_string());
        let Some(bridge) = self.bridge.clone() else { return Err(internal) };
        let Some(target) = bridge_target(snap) else { return Err(internal) };
        let (url, request_id) = (doc.client_id.clone(), ctx.admission.request_id.to_string());
        let failed = |e: crate::registry::bridge::BridgeError| {
            tracing::warn!(request_id = %request_id, url = %url, error = %e, "cimd bridge: no IdP client for the document");
            let (status, code) = e.answer();
            BridgeDenied::Answer(status, code, e.public_description())
        };
        let (b, d) = (bridge.clone(), doc.clone());
        match tokio::task::spawn_blocking(move || b.stored(&d)).await {
            Ok(Ok(Some(id))) => return Ok(id),
            Ok(Ok(None)) => {}
            Ok(Err(e)) => return Err(failed(e)),
            Err(_) => return Err(internal),
        }
        if let Some(denied) = self.bridge_registration_refused(ctx, snap, &doc) {
            return Err(denied);
        }
        // A catalogued hosted client (claude.ai, ChatGPT) proven by its document — fetched from
        // its catalogued CIMD URL, or listing only its own callbacks — is counted per client,
        // not per shared egress address, as its registrations are.
        let hosted = hosted_key(&doc);
        if let Some(err) = self.rate_limit(ctx, snap, crate::ratelimit::RateClass::Main, hosted).await {
            tracing::info!(request_id = %ctx.admission.request_id, url = %doc.client_id, "cimd bridge: registration refused by the rate limit");
            return Err(BridgeDenied::Refused(Outcome::RateLimited, err));
        }
        let policy = &snap.config.dcr;
        if policy.resolve_metadata_uris {
            // The IdP fetches the registered document's URIs as it would a client's own
            // registration's: the same resolution first (strict mode's literal screening
            // already ran on the document).
            let screened = match crate::dcr::screen::metadata_hosts(&doc.registration.document) {
                Ok(hosts) if hosts.is_empty() => Ok(()),
                Ok(hosts) => {
                    self.metadata
                        .screen(&hosts, std::time::Duration::from_millis(policy.resolve_metadata_timeout_ms))
                        .await
                }
                Err(e) => Err(e),
            };
            if let Err(e) = screened {
                tracing::info!(request_id = %request_id, url = %url, error = %e.description, "cimd bridge: the document's metadata URIs refused; not registered");
                let description = format!("client metadata document: {}", e.description);
                return Err(BridgeDenied::Answer(400, "invalid_client", description));
            }
        }
        let known_client = doc.known_client;
        match tokio::task::spawn_blocking(move || bridge.client_for(&doc, &target)).await {
            Ok(Ok((id, outcome))) => {
                if let (Some(k), true) = (known_client, outcome != crate::registry::bridge::BridgeOutcome::Stored) {
                    // The bridge registered (or updated) an IdP client for a catalogued client.
                    self.metrics.known_client_registrations.with_label_values(&[k, "bridged"]).inc();
                }
                Ok(id)
            }
            Ok(Err(e)) => Err(failed(e)),
            Err(_) => Err(internal),
        }
    }

    /// The network ACL again, now with the host of the URL client_id read from the form body:
    /// the first evaluation, before any body was read, saw only the query's (`client_id_hosts`),
    /// so a rule on the host would be passed by moving the client_id into an authorization
    /// `POST` or a pushed request. Only a refusal is applied and recorded here (the first
    /// evaluation's allow was recorded already). `Some`: answered.
    async fn acl_with_body_client_id(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        snap: &Snapshot,
        client_id: &str,
    ) -> Result<Option<bool>> {
        let hosts: Vec<String> = crate::core::target::client_id_url_host(client_id).into_iter().collect();
        let (Some(scope), Some(signals), false) =
            (ctx.admission.route.as_ref().map(|r| r.scope), ctx.admission.signals.as_ref(), hosts.is_empty())
        else {
            return Ok(None);
        };
        let signature_key = snap
            .acl
            .uses_signatures()
            .then(|| {
                let authority = ctx.admission.upstream_host.as_ref().and_then(|h| h.to_str().ok()).unwrap_or_default();
                super::signals::signature_key(
                    session,
                    snap,
                    authority,
                    super::signals::is_tls(session, &self.tls_listeners),
                )
            })
            .flatten();
        let verdict = snap.acl.evaluate_with(
            scope,
            signals,
            &crate::acl::Request { signature_key: signature_key.as_deref(), client_id_hosts: &hosts },
        );
        let decision = verdict.decision.clone();
        if decision == Decision::Allow {
            return Ok(None);
        }
        self.record_acl(&verdict);
        ctx.admission.verdict = Some(verdict);
        tracing::info!(request_id = %ctx.admission.request_id, host = %hosts[0], "cimd: the form body's client_id host refused by the network ACL");
        Ok(Some(match decision {
            Decision::Redirect(uri) => {
                ctx.refuse(Outcome::Redirected);
                self.redirect(session, ctx, &uri).await?
            }
            _ => self.refuse(session, ctx, Outcome::Blocked, crate::errors::GatewayError::AccessDenied).await?,
        }))
    }

    /// A refusal of `[cimd]`'s rules: `400` with the OAuth error (never a redirect).
    async fn cimd_refused(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        endpoint: Endpoint,
        error: &cimd::CimdError,
    ) -> Result<bool> {
        tracing::info!(request_id = %ctx.admission.request_id, endpoint = endpoint.as_str(), error = error.code(), description = %error.description, "cimd: request refused");
        self.cimd_answer(session, ctx, 400, error.code(), &error.description).await
    }

    /// The gateway's own OAuth error answer (JSON, `no-store`, the request id).
    async fn cimd_answer(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        status: u16,
        code: &str,
        description: &str,
    ) -> Result<bool> {
        ctx.refuse(if status >= 500 { Outcome::UpstreamError } else { Outcome::Invalid });
        // A browser sent to /authorize gets a page (the redirect URI was not proven, so the
        // error cannot go back to the client); API clients get the JSON.
        let page = session.req_header().method == http::Method::GET && wants_html(session);
        let body = if page {
            error_page(status, code, description, &ctx.admission.request_id)
        } else {
            serde_json::json!({
                "error": code,
                "error_description": description,
                "request_id": ctx.admission.request_id,
            })
            .to_string()
        };
        let mut resp = ResponseHeader::build(status, Some(7))?;
        if page {
            resp.insert_header("content-type", "text/html; charset=utf-8")?;
            resp.insert_header("content-security-policy", "default-src 'none'; style-src 'unsafe-inline'")?;
        } else {
            resp.insert_header("content-type", "application/json")?;
        }
        resp.insert_header("cache-control", "no-store")?;
        resp.insert_header("content-length", body.len().to_string())?;
        resp.insert_header("x-request-id", ctx.admission.request_id.as_str())?;
        if status == 401 {
            resp.insert_header("www-authenticate", "Basic realm=\"token\", error=\"invalid_client\"")?;
        }
        ctx.admission.status = status;
        session.write_response_header(Box::new(resp), false).await?;
        session.write_response_body(Some(Bytes::from(body)), true).await?;
        Ok(true)
    }
}

/// The rate-limit key of a document proven to be a catalogued hosted client's.
fn hosted_key(doc: &Document) -> Option<&'static str> {
    if let Some(k) = doc.known_client.filter(|k| crate::dcr::catalogue::find(k).is_some_and(|c| c.hosted)) {
        return Some(k);
    }
    let uris: Vec<&str> = doc
        .registration
        .document
        .get("redirect_uris")
        .and_then(serde_json::Value::as_array)
        .map(|a| a.iter().filter_map(serde_json::Value::as_str).collect())
        .unwrap_or_default();
    crate::dcr::catalogue::hosted_rate_key(&uris)
}

/// The request's `Accept` names `text/html` (a browser navigating to /authorize).
fn wants_html(session: &Session) -> bool {
    session
        .req_header()
        .headers
        .get_all(http::header::ACCEPT)
        .iter()
        .any(|v| v.as_bytes().windows(9).any(|w| w.eq_ignore_ascii_case(b"text/html")))
}

/// Text for an HTML element: the five characters that could end it escaped.
fn escape_html(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The error page a browser gets for a refused authorization request: no script, nothing the
/// client controls unescaped.
fn error_page(status: u16, code: &str, description: &str, request_id: &str) -> String {
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>Sign-in refused</title>\
         <style>body{{font:16px/1.5 system-ui,sans-serif;max-width:40em;margin:3em auto;padding:0 1em;color:#1a1a1a}}\
         code{{background:#f2f2f2;padding:0 .2em}}</style></head>\n<body><h1>This sign-in request was refused</h1>\
         <p>The application's client ID metadata document did not allow it, so you were not sent back to the \
         application.</p><p><strong>{status} <code>{}</code></strong>: {}</p><p>Request ID: <code>{}</code></p>\
         </body></html>\n",
        escape_html(code),
        escape_html(description),
        escape_html(request_id)
    )
}

impl Gateway {
    /// A registration the bridge would make is a registration: what closes the registration
    /// endpoint closes it too. Registration disabled (`[dcr] enabled`, the tenant setting), or
    /// closed to holders of an initial access token (the bridge has none to present), or a
    /// `dcr`-scope ACL rule that blocks (or redirects) this client: no IdP client is created.
    /// Clients already registered keep their mapping (this runs only before a registration or
    /// an update).
    fn bridge_registration_refused(&self, ctx: &RequestCtx, snap: &Snapshot, doc: &Document) -> Option<BridgeDenied> {
        let dcr = &snap.config.dcr;
        if !dcr.enabled {
            tracing::info!(request_id = %ctx.admission.request_id, url = %doc.client_id, "cimd bridge: registration disabled");
            return Some(BridgeDenied::Refused(Outcome::Disabled, crate::errors::GatewayError::RegistrationDisabled));
        }
        if dcr.registration == crate::dcr::RegistrationMode::Token {
            tracing::info!(request_id = %ctx.admission.request_id, url = %doc.client_id, "cimd bridge: registration needs an initial access token");
            let why = "registration needs an initial access token: this client_id cannot be registered";
            return Some(BridgeDenied::Answer(403, "access_denied", why.to_string()));
        }
        let signals = ctx.admission.signals.as_ref()?;
        let hosts = [doc.host.clone()];
        let verdict = snap.acl.evaluate_with(
            crate::scope::Scope::Dcr,
            signals,
            &crate::acl::Request { signature_key: None, client_id_hosts: &hosts },
        );
        self.record_acl(&verdict);
        match verdict.decision {
            Decision::Allow => None,
            Decision::Block | Decision::Redirect(_) => {
                tracing::info!(request_id = %ctx.admission.request_id, url = %doc.client_id, "cimd bridge: registration blocked by a dcr-scope rule");
                Some(BridgeDenied::Refused(Outcome::Blocked, crate::errors::GatewayError::AccessDenied))
            }
        }
    }
}

/// Why the bridge gives no IdP client: an OAuth error answer (status, code, description), or
/// a refusal the registration endpoint would give too (rate limit, ACL, registration disabled).
enum BridgeDenied {
    Answer(u16, &'static str, String),
    Refused(Outcome, crate::errors::GatewayError),
}

/// How the bridge reaches the IdP: the proxy's first upstream origin and upstream settings,
/// the snapshot's secrets (reloadable).
fn bridge_target(snap: &Snapshot) -> Option<crate::registry::bridge::IdpTarget> {
    let cfg = &snap.config;
    let origin = cfg.upstream.origins.first()?.clone();
    let secrets = &snap.upstream_secrets;
    let text = |v: &http::HeaderValue| v.to_str().ok().map(str::to_string);
    Some(crate::registry::bridge::IdpTarget {
        upstream: cfg.upstream.clone(),
        host: cfg.idp.host_header.clone().unwrap_or_else(|| origin.authority()),
        origin,
        registration_path: cfg.routes.upstream_registration_path.clone(),
        authorization: secrets.registration_authorization.as_ref().and_then(text),
        headers: secrets.headers.iter().filter_map(|(n, v)| Some((n.as_str().to_string(), text(v)?))).collect(),
        derive: cfg.idp.derive.clone(),
    })
}

/// The endpoints `[cimd]` looks at: `authorize_paths`; the PAR, token, revocation and
/// introspection paths as configured, else as the IdP's discovery document names them (asked
/// once, at start), else the common ones.
pub fn endpoint_paths(cfg: &crate::config::Config) -> Paths {
    let s = &cfg.cimd;
    let mut discovered: [Option<String>; 4] = Default::default();
    let lists = [&s.par_paths, &s.token_paths, &s.revocation_paths, &s.introspection_paths];
    if s.mode != Mode::Off && lists.iter().any(|l| l.is_empty()) {
        if let Some(origin) = cfg.upstream.origins.first() {
            for doc in ["/.well-known/openid-configuration", "/.well-known/oauth-authorization-server"] {
                match crate::registry::http::call(&cfg.upstream, origin, "GET", &origin.authority(), doc, None) {
                    Ok(a) if a.status == 200 => {
                        discovered = Paths::from_discovery(&a.body);
                        break;
                    }
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "cimd: the IdP's discovery document not read; using the common endpoint paths");
                        break;
                    }
                }
            }
        }
    }
    let pick = |configured: &Vec<String>, found: &Option<String>, common: &[&str]| -> Vec<String> {
        if !configured.is_empty() {
            configured.clone()
        } else if let Some(p) = found {
            vec![p.clone()]
        } else {
            common.iter().map(|p| p.to_string()).collect()
        }
    };
    let [par, token, revocation, introspection] = discovered;
    let paths = Paths {
        authorize: s.authorize_paths.clone(),
        par: pick(&s.par_paths, &par, rules::COMMON_PAR),
        token: pick(&s.token_paths, &token, rules::COMMON_TOKEN),
        revocation: pick(&s.revocation_paths, &revocation, rules::COMMON_REVOCATION),
        introspection: pick(&s.introspection_paths, &introspection, rules::COMMON_INTROSPECTION),
    };
    if s.mode != Mode::Off {
        tracing::info!(?paths, "cimd: endpoint paths");
    }
    paths
}
