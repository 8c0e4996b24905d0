//! `cargo fuzz run request_head`: raw request heads (request line + headers) through the
//! gateway's canonicalisation, as Pingora hands them over (httparse, the parser it uses).
//! Never panics; every accepted request is forwarded with a target that (a) is origin-form
//! visible ASCII without dot segments, empty segments or a fragment, (b) is classified into
//! the same route as the request itself, and (c) is a fixed point of forwarding.
#![no_main]

use dcr_gateway::core::target::{self, Head, TargetForm};
use dcr_gateway::routes::Router;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut req = httparse::Request::new(&mut headers);
    let Ok(httparse::Status::Complete(_)) = req.parse(data) else { return };
    let (Some(method), Some(path)) = (req.method, req.path) else { return };
    let hosts: Vec<&[u8]> =
        req.headers.iter().filter(|h| h.name.eq_ignore_ascii_case("host")).map(|h| h.value).collect();
    let head = Head {
        method_is_options: method == "OPTIONS",
        target: path.as_bytes(),
        hosts: &hosts,
        host_required: req.version == Some(1),
    };
    let Ok(view) = target::parse(&head) else { return };
    if let Some(a) = &view.authority {
        assert!(http::HeaderValue::from_str(&a.header_value()).is_ok(), "host {:?}", a);
    }
    for router in [
        Router::new("/oidc/register", "/reg", &["/api/v2/".into(), "/scim/".into()]),
        Router::new("/oidc/register", "/oidc/register", &[]),
    ] {
        let Ok(route) = router.classify(&view) else { continue };
        let t = &route.upstream_target;
        if view.form == TargetForm::Asterisk {
            assert_eq!(t, "*");
            continue;
        }
        assert!(t.starts_with('/'), "{t}");
        assert!(t.bytes().all(|b| (0x21..=0x7e).contains(&b)), "{t}");
        assert!(!t.contains('#'), "{t}");
        let path = t.split('?').next().unwrap();
        for seg in path.split('/').skip(1) {
            assert!(seg != "." && seg != "..", "dot segment in {t}");
        }
        let again = router.classify_target(t).unwrap_or_else(|e| panic!("forwarded {t} refused: {e}"));
        assert_eq!((again.scope, again.is_registration), (route.scope, route.is_registration), "{t}");
        assert_eq!(&again.upstream_target, t);
    }
});
