//! The catalogue of known MCP clients (conf/known-clients.toml) through the gateway binary:
//! impersonating registrations never reach the IdP; the genuine shapes of the corpus do, and
//! carry the `known_client` label on their audit line and metric; `known:<id>` presets allow a
//! client's callbacks by name.

mod support;

use serde_json::json;
use support::upstream::Upstream;
use support::*;

fn post(gw: &Gateway, body: &serde_json::Value) -> (u16, String) {
    response_parts(
        agent().post(&gw.url("/oidc/register")).set("content-type", "application/json").send_string(&body.to_string()),
    )
}

fn corpus(name: &str) -> serde_json::Value {
    let path = format!("{}/tests/corpus/mcp-clients/{name}.json", env!("CARGO_MANIFEST_DIR"));
    let mut v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    v.as_object_mut().unwrap().remove("_source");
    v
}

#[test]
fn impersonation_is_refused_and_genuine_clients_are_labelled() {
    let up = Upstream::start();
    let gw = GatewayBuilder::new(&up.origin()).start();
    let fakes = [
        json!({"client_name": "Claude", "redirect_uris": ["https://claude-mcp.example/api/mcp/auth_callback"], "token_endpoint_auth_method": "none"}),
        // Cyrillic С and а: the same name to a reader.
        json!({"client_name": "\u{421}l\u{430}ude", "redirect_uris": ["https://evil.example/cb"], "token_endpoint_auth_method": "none"}),
        json!({"client_name": "ChatGPT", "redirect_uris": ["https://chatgpt.com.evil.example/connector_platform_oauth_redirect"], "token_endpoint_auth_method": "none"}),
        json!({"client_name": "Cursor", "redirect_uris": ["cursor://anysphere.cursor-mcp/oauth/callback", "https://collect.example/cb"], "token_endpoint_auth_method": "none"}),
    ];
    for f in &fakes {
        let (status, text) = post(&gw, f);
        assert_eq!(status, 400, "{f}: {text}");
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["error"], "invalid_client_metadata", "{text}");
        assert!(v["error_description"].as_str().unwrap().contains("names the known client"), "{text}");
    }
    assert_eq!(up.count(), 0, "an impersonating registration reached the IdP");

    let genuine = [
        ("claude-ai", "claude"),
        ("claude-com", "claude"),
        ("claude-code", "claude-code"),
        ("chatgpt", "chatgpt"),
        ("chatgpt-callback-id", "chatgpt"),
        ("cursor", "cursor"),
        ("cursor-desktop", "cursor"),
        ("cline", "cline"),
        ("cline-loopback", "cline"),
        ("codex", "codex"),
    ];
    for (file, _) in &genuine {
        let (status, text) = post(&gw, &corpus(file));
        assert_eq!(status, 201, "{file}: {text}");
    }
    assert_eq!(up.count(), genuine.len());
    let lines = gw.wait_audit(fakes.len() + genuine.len());
    let created: Vec<&serde_json::Value> = lines.iter().filter(|l| l["status"] == 201).collect();
    assert_eq!(created.len(), genuine.len());
    for ((file, id), line) in genuine.iter().zip(&created) {
        assert_eq!(line["known_client"], *id, "{file}: {line}");
    }
    for line in lines.iter().filter(|l| l["status"] == 400) {
        assert!(line.get("known_client").is_none(), "{line}");
    }
    // A client not in the catalogue carries no label.
    let (status, _) = post(&gw, &corpus("mcp-inspector"));
    assert_eq!(status, 201);
    let (_, metrics) = http_get(&gw.admin_url("/metrics"));
    assert_eq!(
        metric_value(
            &metrics,
            "dcr_gateway_known_client_registrations_total{known_client=\"claude\",result=\"created\"}"
        ),
        2.0
    );
    assert_eq!(
        metric_value(
            &metrics,
            "dcr_gateway_known_client_registrations_total{known_client=\"cursor\",result=\"created\"}"
        ),
        2.0
    );
}

#[test]
fn known_presets_allow_a_clients_callbacks_by_name() {
    let up = Upstream::start();
    let gw =
        GatewayBuilder::new(&up.origin()).dcr("redirect_host_allow = [\"known:claude\", \"known:chatgpt\"]").start();
    assert_eq!(post(&gw, &corpus("claude-ai")).0, 201);
    assert_eq!(post(&gw, &corpus("chatgpt")).0, 201);
    let other = json!({"client_name": "Acme", "redirect_uris": ["https://acme.example/cb"], "token_endpoint_auth_method": "none"});
    let (status, text) = post(&gw, &other);
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("not in the allowed redirect hosts"), "{text}");
    assert_eq!(up.count(), 2);
}
