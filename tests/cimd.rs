//! Client ID Metadata Documents fetched from a real local HTTPS server (test CA given to the
//! fetcher): validation, the authorization-request decision, caching by the answer's headers
//! within bounds with an injected clock (an updated document is picked up after expiry, not
//! before), errors and invalid documents never cached.

#[path = "fetch_support/doc_server.rs"]
mod doc_server;
mod support;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dcr_gateway::cimd::{ErrorKind, Settings};
use dcr_gateway::dcr::Policy;
use dcr_gateway::fetch::cimd::{AuthorizeDecision, Documents};
use dcr_gateway::fetch::{FetchConfig, Fetcher};
use doc_server::{Answer, DocServer, TableResolver};
use serde_json::json;

struct Setup {
    server: DocServer,
    docs: Documents,
    clock: Arc<Mutex<Instant>>,
    url: String,
}

fn setup() -> Setup {
    let (cert, key) = support::certs::self_signed("client.test");
    let server = DocServer::start("127.0.0.1:0", Some((&cert, &key)));
    let r = TableResolver::new();
    r.set("client.test", &["127.0.0.1"]);
    let fetcher = Fetcher::new(
        FetchConfig {
            allow_cidrs: vec!["127.0.0.1/32".parse().unwrap()],
            extra_ca_pem: Some(cert),
            per_host_per_minute: 1000,
            ..FetchConfig::default()
        },
        r,
    )
    .unwrap();
    let clock = Arc::new(Mutex::new(Instant::now()));
    let c = clock.clone();
    let docs = Documents::with_clock(Arc::new(fetcher), 100, Arc::new(move || *c.lock().unwrap()));
    let url = format!("https://client.test:{}/oauth/client.json", server.addr.port());
    Setup { server, docs, clock, url }
}

fn document(url: &str, redirect: &str) -> String {
    json!({
        "client_id": url,
        "client_name": "Test MCP Client",
        "redirect_uris": [redirect],
        "grant_types": ["authorization_code", "refresh_token"],
        "response_types": ["code"],
        "token_endpoint_auth_method": "none"
    })
    .to_string()
}

fn query(client_id: &str, redirect: &str, response_type: &str) -> String {
    url::form_urlencoded::Serializer::new(String::new())
        .append_pair("response_type", response_type)
        .append_pair("client_id", client_id)
        .append_pair("redirect_uri", redirect)
        .append_pair("state", "xyz")
        .append_pair("code_challenge", "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM")
        .append_pair("code_challenge_method", "S256")
        .finish()
}

#[tokio::test]
async fn a_valid_document_is_cached_by_its_headers_and_refetched_after_expiry() {
    let s = setup();
    let (settings, policy) = (Settings::default(), Policy::default());
    let cb1 = "https://app.client.test/cb";
    let cb2 = "https://app.client.test/cb2";
    s.server.set(
        "/oauth/client.json",
        Answer::ok("application/json", document(&s.url, cb1).as_bytes(), &["Cache-Control: max-age=600"]),
    );
    let d = s.docs.resolve(&s.url, &settings, &policy).await.unwrap();
    assert_eq!(d.redirect_uris, [cb1]);
    assert_eq!(d.host, "client.test");
    // The document changes at its origin; the cached copy is served until it expires.
    s.server.set(
        "/oauth/client.json",
        Answer::ok("application/json", document(&s.url, cb2).as_bytes(), &["Cache-Control: max-age=600"]),
    );
    *s.clock.lock().unwrap() += Duration::from_secs(599);
    assert_eq!(s.docs.resolve(&s.url, &settings, &policy).await.unwrap().redirect_uris, [cb1]);
    assert_eq!(s.server.requests_for("/oauth/client.json"), 1);
    *s.clock.lock().unwrap() += Duration::from_secs(2);
    assert_eq!(s.docs.resolve(&s.url, &settings, &policy).await.unwrap().redirect_uris, [cb2]);
    assert_eq!(s.server.requests_for("/oauth/client.json"), 2);
    // max-age below the minimum is raised to it (5 min by default).
    s.server.set(
        "/oauth/client.json",
        Answer::ok("application/json", document(&s.url, cb1).as_bytes(), &["Cache-Control: max-age=1"]),
    );
    *s.clock.lock().unwrap() += Duration::from_secs(601);
    s.docs.resolve(&s.url, &settings, &policy).await.unwrap();
    *s.clock.lock().unwrap() += Duration::from_secs(299);
    s.docs.resolve(&s.url, &settings, &policy).await.unwrap();
    assert_eq!(s.server.requests_for("/oauth/client.json"), 3);
}

#[tokio::test]
async fn errors_and_invalid_documents_are_not_cached() {
    let s = setup();
    let (settings, policy) = (Settings::default(), Policy::default());
    let cb = "https://app.client.test/cb";
    s.server.set(
        "/oauth/client.json",
        Answer::raw("HTTP/1.1 503 Service Unavailable\r\nCache-Control: max-age=86400\r\nContent-Length: 0", b""),
    );
    let e = s.docs.resolve(&s.url, &settings, &policy).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Unreachable);
    assert!(e.description.contains("503"), "{}", e.description);
    // An invalid document (client_id of another URL), even with long cache headers.
    let other = document("https://client.test/other.json", cb);
    s.server
        .set("/oauth/client.json", Answer::ok("application/json", other.as_bytes(), &["Cache-Control: max-age=86400"]));
    let e = s.docs.resolve(&s.url, &settings, &policy).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::InvalidDocument);
    assert!(e.description.contains("client_id: not equal"), "{}", e.description);
    // Fixed at the origin: the very next request sees it, no clock advance needed.
    s.server.set("/oauth/client.json", Answer::json(&document(&s.url, cb)));
    assert!(s.docs.resolve(&s.url, &settings, &policy).await.is_ok());
    assert_eq!(s.server.requests_for("/oauth/client.json"), 3);
    // A document served with a non-JSON media type is not read at all.
    let url2 = s.url.replace("client.json", "html.json");
    s.server.set("/oauth/html.json", Answer::ok("text/html", document(&url2, cb).as_bytes(), &[]));
    let e = s.docs.resolve(&url2, &settings, &policy).await.unwrap_err();
    assert!(e.description.contains("media type"), "{}", e.description);
    // A bad URL is refused before any fetch.
    let before = s.server.connects();
    for bad in ["https://client.test/", "https://client.test/a/../client.json", "https://client.test/c.json#x"] {
        assert_eq!(s.docs.resolve(bad, &settings, &policy).await.unwrap_err().kind, ErrorKind::BadClientId, "{bad}");
    }
    assert_eq!(s.server.connects(), before);
}

#[tokio::test]
async fn authorization_requests_are_decided_on_the_document() {
    let s = setup();
    let (settings, policy) = (Settings::default(), Policy::default());
    let cb = "http://127.0.0.1:43123/callback";
    s.server.set("/oauth/client.json", Answer::json(&document(&s.url, cb)));
    // Listed redirect URI, registered response type: allowed.
    match s.docs.authorize(&query(&s.url, cb, "code"), &settings, &policy).await {
        AuthorizeDecision::Allow(d) => assert_eq!(d.client_id, s.url),
        other => panic!("{other:?}"),
    }
    // A redirect URI the document does not list: an error page, never a redirect to it.
    match s.docs.authorize(&query(&s.url, "https://evil.example/cb", "code"), &settings, &policy).await {
        AuthorizeDecision::ErrorPage(e) => assert_eq!(e.code(), "invalid_request"),
        other => panic!("{other:?}"),
    }
    // Proven redirect URI, unregistered response type: the error goes back to the client.
    match s.docs.authorize(&query(&s.url, cb, "token"), &settings, &policy).await {
        AuthorizeDecision::RedirectError { location, error } => {
            assert_eq!(error.code(), "unauthorized_client");
            assert!(location.starts_with(&format!("{cb}?error=unauthorized_client&")), "{location}");
            assert!(location.ends_with("&state=xyz"), "{location}");
        }
        other => panic!("{other:?}"),
    }
    // Not a URL client_id: not CIMD's business.
    assert!(matches!(
        s.docs.authorize(&query("abc123", cb, "code"), &settings, &policy).await,
        AuthorizeDecision::NotCimd
    ));
    // A document whose name impersonates a catalogued client is invalid: error page.
    let url2 = s.url.replace("client.json", "claude.json");
    let fake = json!({"client_id": url2, "client_name": "Claude", "redirect_uris": [cb], "token_endpoint_auth_method": "none"});
    s.server.set("/oauth/claude.json", Answer::json(&fake.to_string()));
    match s.docs.authorize(&query(&url2, cb, "code"), &settings, &policy).await {
        AuthorizeDecision::ErrorPage(e) => {
            assert!(e.description.contains("names the known client"), "{}", e.description)
        }
        other => panic!("{other:?}"),
    }
    // Host lists apply before any fetch.
    let deny = Settings { host_deny: vec!["client.test".into()], ..Settings::default() };
    let before = s.server.connects();
    match s.docs.authorize(&query(&s.url, cb, "code"), &deny, &policy).await {
        AuthorizeDecision::ErrorPage(e) => assert_eq!(e.kind, ErrorKind::BadClientId),
        other => panic!("{other:?}"),
    }
    assert_eq!(s.server.connects(), before);
}
