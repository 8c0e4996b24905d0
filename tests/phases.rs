//! The phase-timing build (`cargo test --features phase-timing --test phases`): a running
//! gateway measures each phase a request passes through, once per request, and no more CPU
//! than the process used. Without the feature this file compiles to nothing.
#![cfg(feature = "phase-timing")]

mod support;

use support::upstream::Upstream;
use support::*;

const GOOD: &str = r#"{"client_name":"Phase Test","redirect_uris":["https://phase.example.com/cb"]}"#;
const RULES: &str = r#"[{"id":"block-flood-ua","active":true,"priority":1,"rule":{"action":{"block":true},"scope":"tenant","match":{"user_agents":["flood-bot/*"]}}}]"#;

fn calls(gw: &Gateway, phase: &str) -> f64 {
    gw.metric(&format!("dcr_gateway_phase_calls_total{{phase=\"{phase}\"}}"))
}

fn seconds(text: &str, phase: &str) -> f64 {
    metric_value(text, &format!("dcr_gateway_phase_cpu_seconds_total{{phase=\"{phase}\"}}"))
}

#[test]
fn each_phase_of_a_request_is_measured_once_and_within_the_process_cpu() {
    let up = Upstream::start();
    let gw = GatewayBuilder::new(&up.origin()).rules(RULES).start();
    let n = 20;
    for _ in 0..n {
        let (status, _) = response_parts(
            agent().post(&gw.url("/oidc/register")).set("content-type", "application/json").send_string(GOOD),
        );
        assert_eq!(status, 201);
        assert_eq!(http_get(&gw.url("/authorize?client_id=x&response_type=code")).0, 200);
        let (status, _) = response_parts(
            agent()
                .post(&gw.url("/oidc/register"))
                .set("content-type", "application/json")
                .set("user-agent", "flood-bot/1.0")
                .send_string(GOOD),
        );
        assert_eq!(status, 403);
    }
    // Logging runs just after the client has its answer.
    gw.wait_metric("dcr_gateway_phase_calls_total{phase=\"logging\"}", (3 * n) as f64);
    assert_eq!(up.count(), 2 * n, "the blocked requests never reached the IdP");

    let every = (3 * n) as f64;
    assert_eq!(calls(&gw, "request_view"), every);
    assert_eq!(calls(&gw, "acl"), every);
    assert_eq!(calls(&gw, "logging"), every);
    // The rest of request_filter runs before the verdict is applied.
    assert_eq!(calls(&gw, "request_filter"), every);
    assert_eq!(calls(&gw, "refusal"), n as f64, "one 403 per blocked request");
    assert_eq!(calls(&gw, "validation"), n as f64, "registrations only");
    assert_eq!(calls(&gw, "body_read"), n as f64);
    assert_eq!(calls(&gw, "dcr_admission"), n as f64, "the blocked POSTs never reach the dcr phase");
    assert_eq!(calls(&gw, "upstream_request_filter"), (2 * n) as f64);
    // upstream_response_filter + response_filter (+ response_body_filter per body chunk).
    assert!(calls(&gw, "response_hooks") >= (4 * n) as f64, "{}", calls(&gw, "response_hooks"));

    let text = gw.metrics();
    let mut sum = 0.0;
    for phase in [
        "request_view",
        "acl",
        "request_filter",
        "dcr_admission",
        "rate_limit",
        "body_read",
        "validation",
        "refusal",
        "upstream_request_filter",
        "response_hooks",
        "logging",
    ] {
        let s = seconds(&text, phase);
        assert!(s >= 0.0, "{phase}: {s}");
        sum += s;
    }
    for phase in ["request_view", "acl", "validation", "refusal", "logging"] {
        assert!(seconds(&text, phase) > 0.0, "{phase} measured no time");
    }
    // The phases are part of the process's CPU time (exclusive times: nothing counted twice).
    // From /proc (utime + stime in clock ticks): prometheus' process_cpu_seconds_total counts
    // whole seconds only.
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", gw.pid())).unwrap();
    let fields: Vec<&str> = stat.rsplit_once(')').unwrap().1.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    // SAFETY: sysconf reads a constant.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let process = ticks as f64 / hz;
    assert!(sum <= process + 2.0 / hz, "phases {sum} s > process {process} s");
    let overhead = metric_value(&text, "dcr_gateway_phase_timer_overhead_seconds");
    assert!(overhead > 0.0 && overhead < 1e-4, "one clock read: {overhead} s");
}
