//! Issue #16, Auth0 fidelity: Auth0-shaped exports (tests/fixtures/auth0, each file's source in
//! its README) load unchanged through `dcr-gateway check`; `auth0_managed` lists map to local
//! files and block through the real gateway (the IdP never sees the request); an unknown list
//! fails `check` naming rule and list, or loads with `never_match` (warning + metric);
//! `check --auth0-compat` lists what Auth0 would refuse; the `acls_summary` line.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use support::upstream::Upstream;
use support::*;

const BIN: &str = env!("CARGO_BIN_EXE_dcr-gateway");
const REG: &str = r#"{"client_name":"Test App","redirect_uris":["https://app.example.com/cb"]}"#;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/auth0").join(name)
}

fn fixture_text(name: &str) -> String {
    std::fs::read_to_string(fixture(name)).unwrap()
}

const MANAGED: &str = "managed_lists = { \"auth0.icloud_relay_proxy\" = \"icloud-relay.txt\", \
                       \"auth0.low_reputation\" = \"low-reputation.txt\" }\n";

/// A City and an ASN database (the exports have geo and ASN rules, which need them).
fn databases(dir: &Path) {
    let mut w = mmdb_writer::MmdbWriter::new("GeoIP2-City", 6);
    w.insert("81.2.69.0/24", mmdb_writer::city_record("GB", &["ENG"]));
    std::fs::write(dir.join("city.mmdb"), w.to_bytes()).unwrap();
    let mut w = mmdb_writer::MmdbWriter::new("GeoLite2-ASN", 6);
    w.insert("12.81.92.0/22", mmdb_writer::asn_record(7018, "AT&T"));
    std::fs::write(dir.join("asn.mmdb"), w.to_bytes()).unwrap();
}

/// A directory with gateway.toml (`[acl]` keys + the rules file, the databases) and the list
/// and key files.
fn config_dir(rules_fixture: &str, acl_keys: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for f in ["icloud-relay.txt", "low-reputation.txt", "signature-keys.json"] {
        std::fs::copy(fixture(f), dir.path().join(f)).unwrap();
    }
    databases(dir.path());
    std::fs::copy(fixture(rules_fixture), dir.path().join("rules.json")).unwrap();
    std::fs::write(
        dir.path().join("gateway.toml"),
        format!(
            "[acl]\nrules = \"rules.json\"\n{acl_keys}\n[geoip]\ncountry_db = \"city.mmdb\"\nasn_db = \"asn.mmdb\"\n"
        ),
    )
    .unwrap();
    dir
}

fn run(args: &[&str], dir: &Path) -> (Option<i32>, String, String) {
    let out = Command::new(BIN).args(args).arg(dir.join("gateway.toml")).output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn auth0_exports_and_documented_rules_load_unchanged() {
    let keys = "signature_keys = \"signature-keys.json\"\n";
    for (file, acl) in [
        ("network-acls-export.json", MANAGED.to_string()),
        ("network-acls-export-paged.json", MANAGED.to_string()),
        ("auth0-managed-terraform.json", MANAGED.to_string()),
        ("match-all.json", String::new()),
        ("http-message-signature.json", keys.to_string()),
    ] {
        let dir = config_dir(file, &acl);
        let (code, out, err) = run(&["check", "-c"], dir.path());
        assert_eq!(code, Some(0), "{file}: {out}{err}");
        assert!(out.contains("configuration OK"), "{file}: {out}");
    }
    // The create body of Auth0's "block all traffic from China" example, as a one-rule file.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("rules.json"), format!("[{}]", fixture_text("create-block-china.json"))).unwrap();
    std::fs::write(dir.path().join("gateway.toml"), "[acl]\nrules = \"rules.json\"\n").unwrap();
    let (code, _, err) = run(&["check", "-c"], dir.path());
    // Its geo rule needs a database, which check asks for by name.
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("geoip.country_db"), "{err}");
}

#[test]
fn an_unknown_managed_list_fails_check_naming_the_rule_and_the_list_unless_never_match() {
    let dir = config_dir(
        "auth0-managed-terraform.json",
        "managed_lists = { \"auth0.low_reputation\" = \"low-reputation.txt\" }\n",
    );
    let (code, _, err) = run(&["check", "-c"], dir.path());
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("rule 0")
            && err.contains("rule.match.auth0_managed[0]")
            && err.contains("\"auth0.icloud_relay_proxy\""),
        "{err}"
    );
    assert!(err.contains("[acl.managed_lists]") && err.contains("never_match"), "{err}");

    let dir = config_dir(
        "auth0-managed-terraform.json",
        "managed_lists = { \"auth0.low_reputation\" = \"low-reputation.txt\" }\nunknown_managed_lists = \"never_match\"\n",
    );
    let (code, out, err) = run(&["check", "-c"], dir.path());
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(err.contains("warning:") && err.contains("\"auth0.icloud_relay_proxy\" is not configured"), "{err}");

    // A malformed list file is named with its line.
    let dir = config_dir("auth0-managed-terraform.json", MANAGED);
    std::fs::write(dir.path().join("icloud-relay.txt"), "172.224.226.0/27\n172.224.226.999/27\n").unwrap();
    let (code, _, err) = run(&["check", "-c"], dir.path());
    assert_eq!(code, Some(1));
    assert!(err.contains("icloud-relay.txt") && err.contains("line 2: malformed CIDR"), "{err}");
}

#[test]
fn check_auth0_compat_lists_every_rule_auth0_would_refuse() {
    // Auth0's own answers go back as they are (their duplicate priority 7 aside).
    let dir = config_dir("network-acls-export.json", MANAGED);
    let (code, out, err) = run(&["check", "--auth0-compat", "-c"], dir.path());
    assert_eq!(code, Some(1), "{out}{err}");
    assert!(out.contains("rule 3 (id \"acl_") && out.contains("priority: 7 is also the priority of rule 2"), "{out}");
    assert!(out.contains("Auth0 would refuse 1 of 5 rules (1 problem(s))"), "{out}");

    // A file using the gateway's room: every refusal named.
    let dir = tempfile::tempdir().unwrap();
    let cidrs: Vec<String> = (0..25).map(|i| format!("\"10.0.{i}.0/24\"")).collect();
    std::fs::write(
        dir.path().join("rules.json"),
        format!(
            r#"[{{"id":"wide","active":true,"priority":500,"rule":{{"action":{{"block":true}},"scope":"dcr",
                  "match":{{"ipv4_cidrs":[{}]}}}}}},
                {{"id":"fine","description":"ok","active":true,"priority":1,"rule":{{"action":{{"block":true}},
                  "scope":"dynamic_client_registration","match_all":true}}}}]"#,
            cidrs.join(",")
        ),
    )
    .unwrap();
    std::fs::write(dir.path().join("gateway.toml"), "[acl]\nrules = \"rules.json\"\n").unwrap();
    let (code, out, _) = run(&["check", "--auth0-compat", "-c"], dir.path());
    assert_eq!(code, Some(1), "{out}");
    for want in [
        "rule 0 (id \"wide\"): description: missing",
        "rule 0 (id \"wide\"): priority: 500 is outside Auth0's range 1–100",
        "rule 0 (id \"wide\"): rule.scope: \"dcr\"",
        "rule 0 (id \"wide\"): rule.match.ipv4_cidrs: 25 entries; Auth0 takes at most 10",
    ] {
        assert!(out.contains(want), "missing {want:?} in {out}");
    }
    assert!(!out.contains("id \"fine\""), "{out}");
    assert!(out.contains("Auth0 would refuse 1 of 2 rules"), "{out}");

    // Without the flag, the same file is fine for the gateway.
    let (code, out, _) = run(&["check", "-c"], dir.path());
    assert_eq!(code, Some(0), "{out}");
}

fn register_from(gw: &Gateway, ip: &str) -> (u16, String) {
    response_parts(
        agent()
            .post(&gw.url("/oidc/register"))
            .set("content-type", "application/json")
            .set("x-forwarded-for", ip)
            .send_string(REG),
    )
}

#[test]
fn managed_lists_block_through_the_gateway_and_the_idp_sees_nothing() {
    let up = Upstream::start();
    let gw = GatewayBuilder::new(&up.origin())
        .file("icloud-relay.txt", std::fs::read(fixture("icloud-relay.txt")).unwrap())
        .file("low-reputation.txt", std::fs::read(fixture("low-reputation.txt")).unwrap())
        .acl_keys(MANAGED)
        .acl_keys("summary_interval_seconds = 1")
        .rules(
            r#"[{"id":"relay","description":"Block iCloud Private Relay","active":true,"priority":7,
                 "rule":{"action":{"block":true},"scope":"authentication","match":{"auth0_managed":["auth0.icloud_relay_proxy"]}}},
                {"id":"watch-low-rep","active":true,"priority":8,
                 "rule":{"action":{"block":true,"log":true},"scope":"dcr","match":{"auth0_managed":["auth0.low_reputation"]}}}]"#,
        )
        .start();
    let (status, body) = register_from(&gw, "172.224.226.9");
    assert_eq!(status, 403, "{body}");
    let (status, _) = register_from(&gw, "2a02:26f7:b3c0:4000::1");
    assert_eq!(status, 403);
    assert_eq!(up.count(), 0, "blocked requests never reach the IdP");
    // Monitoring mode: the block is recorded, not executed.
    let (status, body) = register_from(&gw, "198.51.100.20");
    assert_eq!(status, 201, "{body}");
    assert_eq!(up.count(), 1);
    let audit = gw.wait_audit(3);
    assert!(audit.iter().any(|l| l["logged_rules"] == serde_json::json!(["watch-low-rep"])), "{audit:?}");
    assert_eq!(gw.metric("dcr_gateway_acl_unknown_managed_lists"), 0.0);

    // The acls_summary lines: matches per rule and action over each interval (the requests
    // may fall into two intervals).
    let summaries = || -> Vec<String> {
        let logs = format!("{}{}", gw.stderr_text(), gw.stdout_text());
        logs.lines().filter(|l| l.contains("acls_summary") && l.contains("total_matches")).map(str::to_string).collect()
    };
    assert!(
        wait_until(Duration::from_secs(10), || {
            let s = summaries();
            s.iter().any(|l| l.contains("watch-low-rep"))
                && s.iter().any(|l| l.contains("\\\"relay\\\"") || l.contains("\"relay\""))
        }),
        "no acls_summary line with both rules:\n{}{}",
        gw.stderr_text(),
        gw.stdout_text()
    );
}

#[test]
fn never_match_loads_with_a_warning_and_a_metric() {
    let up = Upstream::start();
    let gw = GatewayBuilder::new(&up.origin())
        .acl_keys("unknown_managed_lists = \"never_match\"")
        .rules(
            r#"[{"id":"relay","active":true,"priority":7,
                 "rule":{"action":{"block":true},"scope":"tenant","match":{"auth0_managed":["auth0.icloud_relay_proxy"]}}}]"#,
        )
        .start();
    assert_eq!(gw.wait_metric("dcr_gateway_acl_unknown_managed_lists", 1.0), 1.0);
    assert!(
        wait_until(Duration::from_secs(5), || {
            let logs = format!("{}{}", gw.stderr_text(), gw.stdout_text());
            logs.contains("auth0.icloud_relay_proxy") && logs.contains("matches no address")
        }),
        "{}{}",
        gw.stderr_text(),
        gw.stdout_text()
    );
    assert_eq!(register_from(&gw, "172.224.226.9").0, 201, "the unknown list matches nothing");
}

/// The edge proxy's half, written here from RFC 9421 §2.5 rather than with the gateway's
/// signature-base code: HMAC-SHA256 over the base, Auth0's required parameters.
fn sign(secret: &[u8], method: &str, authority: &str, path: &str, created: u64, expires: u64) -> (String, String) {
    use base64::Engine as _;
    use hmac::Mac;
    let params = format!(
        r#"("@method" "@authority" "@path");created={created};expires={expires};keyid="key_edge_proxy_01";alg="hmac-sha256""#
    );
    let base = format!(
        "\"@method\": {method}\n\"@authority\": {authority}\n\"@path\": {path}\n\"@signature-params\": {params}"
    );
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret).unwrap();
    mac.update(base.as_bytes());
    let sig = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    (format!("edge={params}"), format!("edge=:{sig}:"))
}

#[test]
fn http_message_signatures_gate_requests_through_the_gateway() {
    use base64::Engine as _;
    let up = Upstream::start();
    let keys = fixture_text("signature-keys.json");
    let secret = base64::engine::general_purpose::STANDARD
        .decode("dGhpcyBpcyBhIHRlc3Qga2V5IGZvciBkY3ItZ2F0ZXdheSAhIQ==")
        .unwrap();
    assert!(keys.contains("dGhpcyBpcyBhIHRlc3Qga2V5IGZvciBkY3ItZ2F0ZXdheSAhIQ=="));
    let gw = GatewayBuilder::new(&up.origin())
        .file("signature-keys.json", keys.into_bytes())
        .acl_keys("signature_keys = \"signature-keys.json\"")
        .rules(&fixture_text("http-message-signature.json"))
        .start();
    let authority = gw.http.to_string();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let send = |sig: Option<(String, String)>| {
        let mut req = agent().post(&gw.url("/oidc/register")).set("content-type", "application/json");
        if let Some((input, signature)) = sig {
            req = req.set("signature-input", &input).set("signature", &signature);
        }
        response_parts(req.send_string(REG))
    };
    // Missing: blocked by the not_match rule; the IdP sees nothing.
    assert_eq!(send(None).0, 403);
    assert_eq!(up.count(), 0);
    // Valid: through.
    let (status, body) = send(Some(sign(&secret, "POST", &authority, "/oidc/register", now - 5, now + 300)));
    assert_eq!(status, 201, "{body}");
    assert_eq!(up.count(), 1);
    // Invalid: another path signed, a wrong key, an expired signature.
    assert_eq!(send(Some(sign(&secret, "POST", &authority, "/authorize", now - 5, now + 300))).0, 403);
    assert_eq!(
        send(Some(sign(b"another key of 32 bytes........", "POST", &authority, "/oidc/register", now, now + 60))).0,
        403
    );
    assert_eq!(send(Some(sign(&secret, "POST", &authority, "/oidc/register", now - 4000, now - 3700))).0, 403);
    assert_eq!(up.count(), 1, "refused requests never reach the IdP");
    let logs = format!("{}{}", gw.stderr_text(), gw.stdout_text());
    assert!(!logs.contains("dGhpcyBpcyBhIHRlc3Qga2V5"), "key material never logged");
}

/// A managed list file is reloaded like the rules: an address added to it is blocked once the
/// file changes, without a restart.
#[test]
fn an_edited_managed_list_file_is_reloaded() {
    let up = Upstream::start();
    let gw = GatewayBuilder::new(&up.origin())
        .file("low-reputation.txt", b"# nothing yet\n192.0.2.0/24\n".to_vec())
        // The polling below registers until the reload lands: no rate limit to run into.
        .extra("[rate_limit]\nenabled = false")
        .acl_keys("managed_lists = { \"auth0.low_reputation\" = \"low-reputation.txt\" }\n")
        .rules(
            r#"[{"id":"low-rep","active":true,"priority":1,
                 "rule":{"action":{"block":true},"scope":"dcr","match":{"auth0_managed":["auth0.low_reputation"]}}}]"#,
        )
        .start();
    assert_eq!(register_from(&gw, "198.51.100.20").0, 201);
    std::fs::write(gw.path("low-reputation.txt"), "192.0.2.0/24\n198.51.100.0/24 # seen abusing\n").unwrap();
    assert!(
        wait_until(Duration::from_secs(10), || register_from(&gw, "198.51.100.20").0 == 403),
        "the edited list was not reloaded: {}",
        gw.stderr_text()
    );
    assert_eq!(register_from(&gw, "203.0.113.5").0, 201, "addresses not on the list still pass");
}
