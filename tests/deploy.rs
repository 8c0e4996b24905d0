//! The deployment artifacts under deploy/ (and .dockerignore), checked without a cluster, a
//! container runtime or systemd: manifests parse and agree with each other, the configurations
//! they embed pass the real `dcr-gateway check`, the dashboard only queries metrics the gateway
//! exports, and a ConfigMap update (the kubelet's `..data` symlink swap) reaches a running gateway.

use std::collections::{BTreeMap, BTreeSet};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use yaml_rust2::{Yaml, YamlLoader};

const BIN: &str = env!("CARGO_BIN_EXE_dcr-gateway");
const ADMIN_PORT: i64 = 9464;
const HTTP_PORT: i64 = 8080;
const CONFIG_DIR: &str = "/etc/dcr-gateway";
/// Stand-in for upstream host names that only resolve inside a cluster / compose network.
const RESOLVABLE_ORIGIN: &str = "http://127.0.0.1:1";

/// Every metric the gateway exports (without histogram suffixes).
const METRICS: &[&str] = &[
    "dcr_gateway_registry_clients",
    "dcr_gateway_registry_dedupes_total",
    "dcr_gateway_registry_cap_refusals_total",
    "dcr_gateway_registry_reaped_total",
    "dcr_gateway_registry_store_errors_total",
    "dcr_gateway_registry_records_lost_total",
    "dcr_gateway_registry_queue_depth",
    "dcr_gateway_requests_total",
    "dcr_gateway_acl_matches_total",
    "dcr_gateway_registrations_total",
    "dcr_gateway_request_duration_seconds",
    "dcr_gateway_check_duration_seconds",
    "dcr_gateway_registration_body_read_seconds",
    "dcr_gateway_upstream_responses_total",
    "dcr_gateway_upstream_errors_total",
    "dcr_gateway_reloads_total",
    "dcr_gateway_last_reload_success",
    "dcr_gateway_rules_loaded",
    "dcr_gateway_config_info",
    "dcr_gateway_geoip_lookups_without_record_total",
    "dcr_gateway_upstream_healthy_origins",
    "dcr_gateway_audit_write_errors_total",
    "dcr_gateway_rate_limited_total",
    "dcr_gateway_rate_limit_decisions_total",
    "dcr_gateway_build_info",
];
const HISTOGRAMS: &[&str] = &[
    "dcr_gateway_registry_store_seconds",
    "dcr_gateway_request_duration_seconds",
    "dcr_gateway_check_duration_seconds",
    "dcr_gateway_registration_body_read_seconds",
];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> String {
    let p = root().join(rel);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn k8s_dir() -> PathBuf {
    root().join("deploy/kubernetes")
}

/// `*.yaml` file names in deploy/kubernetes, sorted.
fn k8s_files() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(k8s_dir())
        .expect("deploy/kubernetes")
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".yaml") || n.ends_with(".yml"))
        .collect();
    names.sort();
    names
}

/// (file, document) for every non-empty YAML document in deploy/kubernetes.
fn k8s_docs() -> Vec<(String, Yaml)> {
    let mut out = Vec::new();
    for f in k8s_files() {
        let text = read(&format!("deploy/kubernetes/{f}"));
        let docs = YamlLoader::load_from_str(&text).unwrap_or_else(|e| panic!("{f}: invalid YAML: {e}"));
        for d in docs {
            if !d.is_null() && !d.is_badvalue() {
                out.push((f.clone(), d));
            }
        }
    }
    out
}

fn find_kind(docs: &[(String, Yaml)], kind: &str) -> Yaml {
    let found: Vec<&Yaml> = docs.iter().filter(|(_, d)| d["kind"].as_str() == Some(kind)).map(|(_, d)| d).collect();
    assert_eq!(found.len(), 1, "expected exactly one {kind}, found {}", found.len());
    found[0].clone()
}

fn s<'a>(y: &'a Yaml, what: &str) -> &'a str {
    y.as_str().unwrap_or_else(|| panic!("{what}: expected a string, got {y:?}"))
}

fn arr<'a>(y: &'a Yaml, what: &str) -> &'a Vec<Yaml> {
    y.as_vec().unwrap_or_else(|| panic!("{what}: expected a list, got {y:?}"))
}

/// Label map of a `matchLabels` / `labels` node.
fn labels(y: &Yaml) -> BTreeMap<String, String> {
    y.as_hash()
        .map(|h| h.iter().filter_map(|(k, v)| Some((k.as_str()?.to_string(), v.as_str()?.to_string()))).collect())
        .unwrap_or_default()
}

fn selects(selector: &BTreeMap<String, String>, labels: &BTreeMap<String, String>) -> bool {
    !selector.is_empty() && selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

fn the_container(deploy: &Yaml) -> Yaml {
    let containers = arr(&deploy["spec"]["template"]["spec"]["containers"], "containers");
    let c: Vec<&Yaml> = containers.iter().filter(|c| c["name"].as_str() == Some("dcr-gateway")).collect();
    assert_eq!(c.len(), 1, "one container named dcr-gateway");
    c[0].clone()
}

/// A probe's / Service's port: a number, or a named container port resolved to its number.
fn port_number(port: &Yaml, container: &Yaml) -> i64 {
    if let Some(n) = port.as_i64() {
        return n;
    }
    let name = s(port, "port");
    arr(&container["ports"], "ports")
        .iter()
        .find(|p| p["name"].as_str() == Some(name))
        .and_then(|p| p["containerPort"].as_i64())
        .unwrap_or_else(|| panic!("named port {name:?} is not a container port"))
}

fn configmap_data(docs: &[(String, Yaml)], key: &str) -> String {
    let cm = find_kind(docs, "ConfigMap");
    s(&cm["data"][key], &format!("ConfigMap data.{key}")).to_string()
}

fn toml_table(text: &str, what: &str) -> toml::Table {
    text.parse::<toml::Table>().unwrap_or_else(|e| panic!("{what}: invalid TOML: {e}"))
}

fn toml_get<'a>(t: &'a toml::Table, dotted: &str) -> Option<&'a toml::Value> {
    let mut parts = dotted.split('.');
    let mut v = t.get(parts.next()?)?;
    for p in parts {
        v = v.get(p)?;
    }
    Some(v)
}

fn toml_int(t: &toml::Table, dotted: &str, default: i64) -> i64 {
    toml_get(t, dotted).map(|v| v.as_integer().unwrap_or_else(|| panic!("{dotted}: not an integer"))).unwrap_or(default)
}

/// Run the real `dcr-gateway check` on `config` (upstream origins replaced by a resolvable
/// address; every other key untouched) with `rules` as the rules file next to it.
fn assert_check_passes(config: &str, rules: &str, what: &str) {
    let mut t = toml_table(config, what);
    let up = t
        .entry("upstream")
        .or_insert_with(|| toml::Value::Table(toml::Table::new()))
        .as_table_mut()
        .unwrap_or_else(|| panic!("{what}: [upstream] is not a table"));
    up.insert("origins".into(), toml::Value::Array(vec![toml::Value::String(RESOLVABLE_ORIGIN.into())]));
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("gateway.toml");
    std::fs::write(&cfg, toml::to_string(&t).unwrap()).unwrap();
    let rules_name = toml_get(&t, "acl.rules").and_then(|v| v.as_str()).unwrap_or("rules.json");
    assert!(!Path::new(rules_name).is_absolute(), "{what}: acl.rules should be relative to the config directory");
    std::fs::write(dir.path().join(rules_name), rules).unwrap();
    let out = Command::new(BIN).arg("check").arg("-c").arg(&cfg).output().expect("run dcr-gateway check");
    assert!(
        out.status.success(),
        "{what}: `dcr-gateway check` failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn assert_container_listeners(t: &toml::Table, what: &str) {
    let http: Vec<&str> = toml_get(t, "listen.http")
        .and_then(|v| v.as_array())
        .map(|a| a.iter().filter_map(|v| v.as_str()).collect())
        .unwrap_or_default();
    assert!(
        http.contains(&format!("0.0.0.0:{HTTP_PORT}").as_str()),
        "{what}: listen.http must bind 0.0.0.0:{HTTP_PORT}, got {http:?}"
    );
    assert_eq!(
        toml_get(t, "listen.admin").and_then(|v| v.as_str()),
        Some(format!("0.0.0.0:{ADMIN_PORT}").as_str()),
        "{what}: listen.admin must bind 0.0.0.0:{ADMIN_PORT} (probes / scrapes come from outside the container)"
    );
    assert_eq!(toml_get(t, "log.format").and_then(|v| v.as_str()), Some("json"), "{what}: log.format = \"json\"");
}

// ---------------------------------------------------------------------------------------------
// Kubernetes

#[test]
fn kubernetes_manifests_parse_and_name_themselves() {
    let docs = k8s_docs();
    assert!(!docs.is_empty());
    let mut kinds = BTreeSet::new();
    for (f, d) in &docs {
        assert!(d.as_hash().is_some(), "{f}: a document is not a mapping");
        let api = s(&d["apiVersion"], &format!("{f}: apiVersion"));
        let kind = s(&d["kind"], &format!("{f}: kind"));
        let name = s(&d["metadata"]["name"], &format!("{f}: metadata.name"));
        assert!(!api.is_empty() && !kind.is_empty() && !name.is_empty(), "{f}");
        assert!(
            d["metadata"]["namespace"].is_badvalue(),
            "{f}: {kind} sets a namespace; the manifests are namespace-agnostic"
        );
        kinds.insert(kind.to_string());
    }
    for k in [
        "ConfigMap",
        "Deployment",
        "Service",
        "PodDisruptionBudget",
        "HorizontalPodAutoscaler",
        "ServiceMonitor",
        "Kustomization",
    ] {
        assert!(kinds.contains(k), "no {k} in deploy/kubernetes (found {kinds:?})");
    }
    let api_of = |k: &str| {
        docs.iter()
            .find(|(_, d)| d["kind"].as_str() == Some(k))
            .map(|(_, d)| d["apiVersion"].as_str().unwrap().to_string())
    };
    assert_eq!(api_of("HorizontalPodAutoscaler").as_deref(), Some("autoscaling/v2"));
    assert_eq!(api_of("ServiceMonitor").as_deref(), Some("monitoring.coreos.com/v1"));
    assert_eq!(api_of("PodDisruptionBudget").as_deref(), Some("policy/v1"));
}

#[test]
fn kustomization_lists_every_manifest() {
    let docs = k8s_docs();
    let k = find_kind(&docs, "Kustomization");
    let listed: BTreeSet<String> =
        arr(&k["resources"], "resources").iter().map(|r| s(r, "resource").to_string()).collect();
    let files: BTreeSet<String> = k8s_files().into_iter().filter(|f| f != "kustomization.yaml").collect();
    assert_eq!(listed, files, "kustomization.yaml resources vs deploy/kubernetes/*.yaml");
}

#[test]
fn deployment_probes_security_and_config_mount() {
    let docs = k8s_docs();
    let d = find_kind(&docs, "Deployment");
    let pod = &d["spec"]["template"]["spec"];
    let c = the_container(&d);

    assert_eq!(d["spec"]["replicas"].as_i64(), Some(2), "replicas");
    for (probe, path) in [("readinessProbe", "/readyz"), ("livenessProbe", "/healthz"), ("startupProbe", "/healthz")] {
        let g = &c[probe]["httpGet"];
        assert_eq!(g["path"].as_str(), Some(path), "{probe} path");
        assert_eq!(port_number(&g["port"], &c), ADMIN_PORT, "{probe} must use the admin port");
    }
    let ports: BTreeMap<i64, String> = arr(&c["ports"], "ports")
        .iter()
        .map(|p| (p["containerPort"].as_i64().unwrap(), p["name"].as_str().unwrap_or("").to_string()))
        .collect();
    assert_eq!(ports.get(&HTTP_PORT).map(String::as_str), Some("http"));
    assert_eq!(ports.get(&ADMIN_PORT).map(String::as_str), Some("metrics"));

    // Security context.
    let psc = &pod["securityContext"];
    assert_eq!(psc["runAsNonRoot"].as_bool(), Some(true));
    assert!(psc["runAsUser"].as_i64().is_some_and(|u| u > 0), "runAsUser non-root");
    assert_eq!(psc["seccompProfile"]["type"].as_str(), Some("RuntimeDefault"));
    let sc = &c["securityContext"];
    assert_eq!(sc["readOnlyRootFilesystem"].as_bool(), Some(true));
    assert_eq!(sc["allowPrivilegeEscalation"].as_bool(), Some(false));
    assert!(arr(&sc["capabilities"]["drop"], "capabilities.drop").iter().any(|x| x.as_str() == Some("ALL")));
    for r in ["requests", "limits"] {
        assert!(c["resources"][r]["memory"].as_str().is_some(), "resources.{r}.memory");
        assert!(!c["resources"][r]["cpu"].is_badvalue(), "resources.{r}.cpu");
    }

    // The ConfigMap is mounted as a directory at /etc/dcr-gateway, never through subPath.
    let cm_name = s(&find_kind(&docs, "ConfigMap")["metadata"]["name"], "ConfigMap name").to_string();
    let volumes = arr(&pod["volumes"], "volumes");
    let cfg_vol = volumes
        .iter()
        .find(|v| v["configMap"]["name"].as_str() == Some(cm_name.as_str()))
        .expect("a volume from the ConfigMap");
    let cfg_vol_name = s(&cfg_vol["name"], "volume name");
    let mounts = arr(&c["volumeMounts"], "volumeMounts");
    let cfg_mounts: Vec<&Yaml> = mounts.iter().filter(|m| m["name"].as_str() == Some(cfg_vol_name)).collect();
    assert_eq!(cfg_mounts.len(), 1);
    assert_eq!(cfg_mounts[0]["mountPath"].as_str(), Some(CONFIG_DIR));
    for m in mounts {
        assert!(m["subPath"].is_badvalue() && m["subPathExpr"].is_badvalue(), "no subPath mounts: {m:?}");
    }
    assert!(cfg_vol["configMap"]["items"].is_badvalue(), "mount every key (gateway.toml and rules.json side by side)");
    let args: Vec<&str> = arr(&c["args"], "args").iter().filter_map(|a| a.as_str()).collect();
    assert_eq!(args, ["run", "-c", "/etc/dcr-gateway/gateway.toml"]);

    // pid_file / upgrade_sock live on a writable volume (the root filesystem is read-only).
    let conf = toml_table(&configmap_data(&docs, "gateway.toml"), "ConfigMap gateway.toml");
    for key in ["server.pid_file", "server.upgrade_sock"] {
        let p = toml_get(&conf, key).and_then(|v| v.as_str()).unwrap_or(if key.ends_with("pid_file") {
            "/tmp/dcr-gateway.pid"
        } else {
            "/tmp/dcr-gateway-upgrade.sock"
        });
        let writable = mounts.iter().any(|m| {
            let mp = m["mountPath"].as_str().unwrap_or("");
            let vol = volumes.iter().find(|v| v["name"] == m["name"]);
            Path::new(p).starts_with(mp)
                && vol.is_some_and(|v| !v["emptyDir"].is_badvalue())
                && m["readOnly"].as_bool() != Some(true)
        });
        assert!(writable, "{key} = {p:?} is not on a writable emptyDir mount");
    }

    // Shutdown: the grace period covers preStop + drain + Pingora's own shutdown timeout.
    let pre_stop: Vec<&str> = arr(&c["lifecycle"]["preStop"]["exec"]["command"], "preStop command")
        .iter()
        .filter_map(|a| a.as_str())
        .collect();
    assert_eq!(pre_stop.first().copied(), Some("/bin/sleep"));
    let sleep: i64 = pre_stop.get(1).and_then(|x| x.parse().ok()).expect("preStop sleep seconds");
    let drain = toml_int(&conf, "server.drain_timeout_seconds", 30);
    let shutdown = toml_int(&conf, "server.graceful_shutdown_timeout_seconds", 5);
    let grace = pod["terminationGracePeriodSeconds"].as_i64().expect("terminationGracePeriodSeconds");
    assert!(
        grace > sleep + drain + shutdown,
        "terminationGracePeriodSeconds {grace} <= {sleep} + {drain} + {shutdown}"
    );
}

#[test]
fn service_pdb_hpa_and_servicemonitor_agree_with_the_deployment() {
    let docs = k8s_docs();
    let d = find_kind(&docs, "Deployment");
    let c = the_container(&d);
    let deploy_name = s(&d["metadata"]["name"], "Deployment name");
    let pod_labels = labels(&d["spec"]["template"]["metadata"]["labels"]);
    assert!(selects(&labels(&d["spec"]["selector"]["matchLabels"]), &pod_labels), "Deployment selector vs pod labels");

    let svc = find_kind(&docs, "Service");
    assert!(selects(&labels(&svc["spec"]["selector"]), &pod_labels), "Service selector vs pod labels");
    let svc_ports: BTreeMap<String, (i64, i64)> = arr(&svc["spec"]["ports"], "Service ports")
        .iter()
        .map(|p| {
            (s(&p["name"], "port name").to_string(), (p["port"].as_i64().unwrap(), port_number(&p["targetPort"], &c)))
        })
        .collect();
    assert_eq!(svc_ports.get("http"), Some(&(80, HTTP_PORT)));
    assert_eq!(svc_ports.get("metrics"), Some(&(ADMIN_PORT, ADMIN_PORT)));

    let pdb = find_kind(&docs, "PodDisruptionBudget");
    assert_eq!(pdb["spec"]["minAvailable"].as_i64(), Some(1));
    assert!(selects(&labels(&pdb["spec"]["selector"]["matchLabels"]), &pod_labels), "PDB selector");

    let hpa = find_kind(&docs, "HorizontalPodAutoscaler");
    assert_eq!(hpa["spec"]["scaleTargetRef"]["kind"].as_str(), Some("Deployment"));
    assert_eq!(hpa["spec"]["scaleTargetRef"]["name"].as_str(), Some(deploy_name));
    let cpu = arr(&hpa["spec"]["metrics"], "HPA metrics")
        .iter()
        .find(|m| m["resource"]["name"].as_str() == Some("cpu"))
        .expect("HPA CPU metric");
    assert_eq!(cpu["resource"]["target"]["averageUtilization"].as_i64(), Some(70));
    assert!(hpa["spec"]["minReplicas"].as_i64().is_some_and(|n| n >= 2), "HPA minReplicas >= 2 (PDB minAvailable 1)");

    let sm = find_kind(&docs, "ServiceMonitor");
    assert!(
        selects(&labels(&sm["spec"]["selector"]["matchLabels"]), &labels(&svc["metadata"]["labels"])),
        "ServiceMonitor selector vs Service labels"
    );
    let ep = &arr(&sm["spec"]["endpoints"], "endpoints")[0];
    assert_eq!(ep["port"].as_str(), Some("metrics"));
    assert_eq!(ep["path"].as_str(), Some("/metrics"));
}

#[test]
fn configmap_config_and_rules_pass_the_real_check() {
    let docs = k8s_docs();
    let toml_text = configmap_data(&docs, "gateway.toml");
    let rules = configmap_data(&docs, "rules.json");
    let t = toml_table(&toml_text, "ConfigMap gateway.toml");
    assert_container_listeners(&t, "ConfigMap gateway.toml");
    let rules_json: serde_json::Value = serde_json::from_str(&rules).expect("ConfigMap rules.json is JSON");
    assert!(rules_json.is_array(), "rules.json is a JSON array");
    assert_eq!(
        toml_get(&t, "acl.rules").and_then(|v| v.as_str()),
        Some("rules.json"),
        "acl.rules names the ConfigMap key"
    );
    assert!(
        toml_get(&t, "upstream.origins").and_then(|v| v.as_array()).is_some_and(|a| !a.is_empty()),
        "upstream.origins is set"
    );
    assert_check_passes(&toml_text, &rules, "deploy/kubernetes/configmap.yaml");
}

// ---------------------------------------------------------------------------------------------
// Docker

#[test]
fn docker_config_passes_the_real_check() {
    let text = read("deploy/docker/gateway.toml");
    let t = toml_table(&text, "deploy/docker/gateway.toml");
    assert_container_listeners(&t, "deploy/docker/gateway.toml");
    let origins = toml_get(&t, "upstream.origins").and_then(|v| v.as_array()).expect("upstream.origins");
    assert!(origins.iter().any(|o| o.as_str() == Some("http://idp:3000")), "docker config points at the `idp` service");
    // The image ships an empty rules file next to it (deploy/Dockerfile).
    assert_check_passes(&text, "[]", "deploy/docker/gateway.toml");
}

/// Very small .dockerignore matcher: enough for the patterns this repository uses.
fn docker_ignored(path: &str, patterns: &[String]) -> bool {
    fn wildcard(p: &str, s: &str) -> bool {
        match p.split_once('*') {
            None => p == s,
            Some((pre, rest)) => {
                s.starts_with(pre)
                    && (0..=s.len() - pre.len())
                        .any(|i| wildcard(rest, &s[pre.len() + i..]) && !s[pre.len()..pre.len() + i].contains('/'))
            }
        }
    }
    patterns.iter().any(|pat| {
        let pat = pat.trim_end_matches('/');
        let (anywhere, pat) = match pat.strip_prefix("**/") {
            Some(p) => (true, p),
            None => (false, pat),
        };
        let comps: Vec<&str> = path.split('/').collect();
        let starts: Vec<usize> = if anywhere { (0..comps.len()).collect() } else { vec![0] };
        starts.into_iter().any(|i| {
            let tail = comps[i..].join("/");
            let n = pat.split('/').count();
            let head: Vec<&str> = comps[i..].iter().take(n).copied().collect();
            head.len() == n && wildcard(pat, &head.join("/")) || wildcard(pat, &tail)
        })
    })
}

#[test]
fn dockerfile_is_multi_stage_non_root_and_copies_what_exists() {
    let text = read("deploy/Dockerfile");
    let joined = text.replace("\\\n", " ");
    let lines: Vec<&str> = joined.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).collect();
    let instr = |l: &str| l.split_whitespace().next().unwrap_or("").to_ascii_uppercase();
    let froms: Vec<usize> = lines.iter().enumerate().filter(|(_, l)| instr(l) == "FROM").map(|(i, _)| i).collect();
    assert!(froms.len() >= 2, "multi-stage build (>= 2 FROM)");
    let last_stage = &lines[*froms.last().unwrap()..];
    let user = last_stage.iter().rev().find(|l| instr(l) == "USER").expect("USER in the runtime stage");
    let user = user.split_whitespace().nth(1).unwrap();
    let uid = user.split(':').next().unwrap();
    assert!(uid != "root" && uid != "0", "runtime USER must not be root: {user}");
    let has = |prefix: &str| last_stage.iter().any(|l| l.starts_with(prefix));
    assert!(has(r#"ENTRYPOINT ["dcr-gateway"]"#), "ENTRYPOINT");
    assert!(
        has(r#"CMD ["run", "-c", "/etc/dcr-gateway/gateway.toml"]"#)
            || has(r#"CMD ["run","-c","/etc/dcr-gateway/gateway.toml"]"#),
        "CMD"
    );
    assert!(has("STOPSIGNAL SIGTERM"), "STOPSIGNAL SIGTERM");
    let exposed: BTreeSet<&str> =
        last_stage.iter().filter(|l| instr(l) == "EXPOSE").flat_map(|l| l.split_whitespace().skip(1)).collect();
    assert!(exposed.contains("8080") && exposed.contains("9464"), "EXPOSE 8080 9464, got {exposed:?}");
    if let Some(hc) = last_stage.iter().find(|l| instr(l) == "HEALTHCHECK") {
        let cmd = &hc[hc.find("CMD").expect("HEALTHCHECK CMD") + 3..];
        let v: Vec<String> = serde_json::from_str(cmd.trim()).expect("HEALTHCHECK CMD is a JSON array");
        assert!(v.join(" ").contains(&format!("/{ADMIN_PORT}")), "HEALTHCHECK talks to the admin port");
    }

    let ignore: Vec<String> = read(".dockerignore")
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(String::from)
        .collect();
    for must in ["target", ".git", "node_modules", "geoip/*.mmdb"] {
        assert!(
            ignore.iter().any(|p| p.trim_end_matches('/') == must || p.trim_end_matches('/') == format!("**/{must}")),
            ".dockerignore lacks {must}"
        );
    }
    assert!(
        docker_ignored("target/release/x", &ignore)
            && docker_ignored("geoip/a.mmdb", &ignore)
            && docker_ignored("deploy/demo-idp/node_modules/x", &ignore)
    );
    // Every COPY source from the build context exists and is not excluded by .dockerignore.
    for l in &lines {
        if instr(l) != "COPY" || l.contains("--from=") {
            continue;
        }
        let words: Vec<&str> = l.split_whitespace().skip(1).filter(|w| !w.starts_with("--")).collect();
        for src in &words[..words.len() - 1] {
            assert!(root().join(src).exists(), "Dockerfile COPY {src}: not in the repository");
            assert!(!docker_ignored(src, &ignore), "Dockerfile COPY {src}: excluded by .dockerignore");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Grafana

fn metric_names(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find("dcr_gateway_") {
        let tail = &rest[i..];
        let end = tail.find(|c: char| !(c.is_ascii_lowercase() || c == '_')).unwrap_or(tail.len());
        out.insert(tail[..end].to_string());
        rest = &tail[end..];
    }
    out
}

fn base_metric(name: &str) -> Option<&'static str> {
    if let Some(m) = METRICS.iter().find(|m| **m == name) {
        return Some(m);
    }
    for suffix in ["_bucket", "_sum", "_count"] {
        if let Some(b) = name.strip_suffix(suffix) {
            if let Some(h) = HISTOGRAMS.iter().find(|h| **h == b) {
                return Some(h);
            }
        }
    }
    None
}

#[test]
fn grafana_dashboard_is_valid_and_queries_real_metrics() {
    let text = read("deploy/grafana/dcr-gateway-dashboard.json");
    let d: serde_json::Value = serde_json::from_str(&text).expect("dashboard JSON");
    assert!(d["schemaVersion"].as_i64().is_some_and(|v| v >= 36), "schemaVersion");
    assert!(d["title"].as_str().is_some_and(|t| !t.is_empty()) && d["uid"].as_str().is_some());
    let ds_var = d["templating"]["list"].as_array().is_some_and(|l| l.iter().any(|v| v["type"] == "datasource"));
    assert!(ds_var || d["__inputs"].as_array().is_some_and(|i| !i.is_empty()), "a datasource variable or __inputs");

    let mut panels: Vec<&serde_json::Value> = Vec::new();
    for p in d["panels"].as_array().expect("panels") {
        panels.push(p);
        if let Some(inner) = p["panels"].as_array() {
            panels.extend(inner);
        }
    }
    let mut ids = BTreeSet::new();
    let mut exprs = Vec::new();
    for p in &panels {
        let id = p["id"].as_i64().unwrap_or_else(|| panic!("panel without id: {}", p["title"]));
        assert!(ids.insert(id), "duplicate panel id {id}");
        let g = &p["gridPos"];
        for k in ["h", "w", "x", "y"] {
            assert!(g[k].as_i64().is_some(), "panel {id}: gridPos.{k}");
        }
        assert!(g["x"].as_i64().unwrap() + g["w"].as_i64().unwrap() <= 24, "panel {id} wider than the grid");
        if p["type"] != "row" {
            let targets = p["targets"].as_array().unwrap_or_else(|| panic!("panel {id} has no targets"));
            assert!(!targets.is_empty(), "panel {id} has no targets");
            for t in targets {
                let e = t["expr"].as_str().unwrap_or_else(|| panic!("panel {id}: target without expr"));
                assert_eq!(e.matches('(').count(), e.matches(')').count(), "panel {id}: unbalanced parentheses in {e}");
                exprs.push(e.to_string());
            }
        }
    }
    let all = exprs.join("\n");
    let used = metric_names(&text);
    let unknown: Vec<&String> = used.iter().filter(|m| base_metric(m).is_none()).collect();
    assert!(unknown.is_empty(), "dashboard references metrics the gateway does not export: {unknown:?}");
    // The names above are the ones the gateway registers (guards against a rename in src/).
    // (the client registry registers its own, in src/registry/mod.rs)
    if let Ok(src) = std::fs::read_to_string(root().join("src/telemetry/metrics.rs"))
        .map(|m| m + &std::fs::read_to_string(root().join("src/registry/mod.rs")).unwrap_or_default())
    {
        for m in used.iter().filter_map(|m| base_metric(m)) {
            assert!(
                src.contains(&format!("\"{m}\"")),
                "{m} is not registered in src/telemetry/metrics.rs or src/registry/mod.rs"
            );
        }
    }
    for needle in [
        "sum by (outcome) (rate(dcr_gateway_requests_total",
        "topk(10, sum by (rule) (rate(dcr_gateway_acl_matches_total",
        "dcr_gateway_request_duration_seconds_bucket",
        "dcr_gateway_check_duration_seconds_bucket",
        "dcr_gateway_registrations_total",
        "dcr_gateway_upstream_responses_total",
        "dcr_gateway_upstream_errors_total",
        "dcr_gateway_upstream_healthy_origins",
        "dcr_gateway_reloads_total",
        "dcr_gateway_last_reload_success",
        "dcr_gateway_rules_loaded",
        "dcr_gateway_config_info",
        "sum by (limit) (rate(dcr_gateway_rate_limited_total",
        "sum by (backend, result) (rate(dcr_gateway_rate_limit_decisions_total",
        "dcr_gateway_build_info",
    ] {
        assert!(all.contains(needle), "no panel queries {needle}");
    }
    for q in ["0.5,", "0.95,", "0.99,"] {
        assert!(
            all.contains(&format!(
                "histogram_quantile({q} sum by (le, scope) (rate(dcr_gateway_request_duration_seconds_bucket"
            )) || all.contains(&format!(
                "histogram_quantile({q}0 sum by (le, scope) (rate(dcr_gateway_request_duration_seconds_bucket"
            )),
            "latency quantile {q}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// systemd

fn unit_values(text: &str, key: &str) -> Vec<String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#') && !l.starts_with(';'))
        .filter_map(|l| l.split_once('='))
        .filter(|(k, _)| k.trim() == key)
        .map(|(_, v)| v.trim().to_string())
        .collect()
}

#[test]
fn systemd_unit_is_hardened_and_verifies() {
    let text = read("deploy/systemd/dcr-gateway.service");
    let one = |k: &str| {
        let v = unit_values(&text, k);
        assert_eq!(v.len(), 1, "{k}: expected once, got {v:?}");
        v[0].clone()
    };
    assert_eq!(one("Type"), "simple");
    assert!(one("ExecReload").contains("-HUP $MAINPID"), "ExecReload sends SIGHUP");
    assert!(one("ExecStartPre").contains(" check -c /etc/dcr-gateway/gateway.toml"));
    assert!(one("ExecStart").contains(" run -c /etc/dcr-gateway/gateway.toml"));
    assert_eq!(one("KillSignal"), "SIGTERM");
    assert_eq!(one("Restart"), "on-failure");
    assert!(one("TimeoutStopSec").parse::<u64>().is_ok_and(|t| t > 35), "TimeoutStopSec > default drain 30 s + 5 s");
    for (k, v) in [
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("PrivateDevices", "yes"),
        ("ProtectKernelTunables", "yes"),
        ("ProtectKernelModules", "yes"),
        ("ProtectKernelLogs", "yes"),
        ("ProtectControlGroups", "yes"),
        ("RestrictAddressFamilies", "AF_INET AF_INET6 AF_UNIX"),
        ("RestrictNamespaces", "yes"),
        ("LockPersonality", "yes"),
        ("MemoryDenyWriteExecute", "yes"),
        ("RestrictRealtime", "yes"),
        ("SystemCallArchitectures", "native"),
        ("CapabilityBoundingSet", "CAP_NET_BIND_SERVICE"),
        ("RuntimeDirectory", "dcr-gateway"),
    ] {
        assert_eq!(one(k), v, "{k}");
    }
    assert!(
        unit_values(&text, "User").len() == 1 || unit_values(&text, "DynamicUser") == ["yes"],
        "runs as a non-root user"
    );
    assert!(!unit_values(&text, "LimitNOFILE").is_empty(), "LimitNOFILE");

    // scripts/prereqs.sh installs systemd (for systemd-analyze): a missing tool is a failure,
    // not a silent skip.
    let analyze = which("systemd-analyze").expect("systemd-analyze on PATH (scripts/prereqs.sh installs systemd)");
    // verify insists that ExecStart binaries exist: point the copy at the binary under test.
    let dir = tempfile::tempdir().unwrap();
    let unit = dir.path().join("dcr-gateway.service");
    std::fs::write(&unit, text.replace("/usr/local/bin/dcr-gateway", BIN)).unwrap();
    let out = Command::new(analyze).arg("verify").arg(&unit).output().expect("systemd-analyze verify");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let ours: Vec<&str> = stderr.lines().filter(|l| l.contains("dcr-gateway")).collect();
    assert!(out.status.success() && ours.is_empty(), "systemd-analyze verify: {}\n{stderr}", out.status);
}

/// Directories the unit leaves writable under ProtectSystem=strict: ReadWritePaths= and the
/// directories systemd creates for it (RuntimeDirectory=, StateDirectory=, LogsDirectory=).
fn unit_writable_dirs(text: &str) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = unit_values(text, "ReadWritePaths")
        .iter()
        .flat_map(|v| v.split_whitespace().map(|p| PathBuf::from(p.trim_start_matches(['-', '+']))).collect::<Vec<_>>())
        .collect();
    for (key, base) in [("RuntimeDirectory", "/run"), ("StateDirectory", "/var/lib"), ("LogsDirectory", "/var/log")] {
        for v in unit_values(text, key) {
            dirs.extend(v.split_whitespace().map(|d| Path::new(base).join(d)));
        }
    }
    dirs
}

#[test]
fn systemd_sandbox_lets_the_gateway_write_what_it_is_configured_to_write() {
    let unit = read("deploy/systemd/dcr-gateway.service");
    assert_eq!(unit_values(&unit, "ProtectSystem"), ["strict"], "the rest of the file system stays read-only");
    let writable = unit_writable_dirs(&unit);
    let config = read("deploy/systemd/gateway.toml");
    let t = toml_table(&config, "deploy/systemd/gateway.toml");
    // Every file the running gateway writes: the admin API's two files (replaced by a temporary
    // file + rename in their directory, so the directory must be writable), the pid file and the
    // upgrade socket.
    for key in ["acl.rules", "admin.settings_file", "server.pid_file", "server.upgrade_sock"] {
        let path = toml_get(&t, key).and_then(|v| v.as_str()).unwrap_or_else(|| panic!("{key} not set"));
        let dir = Path::new(path).parent().unwrap();
        assert!(
            writable.iter().any(|w| dir.starts_with(w)),
            "{key} = {path:?}: {} is not writable under the unit's sandbox ({writable:?})",
            dir.display()
        );
    }
    // The unit's own ExecStartPre check passes on this configuration, its directories mapped
    // into a temporary root (rules file installed, state and runtime directories created as
    // systemd would).
    let root = tempfile::tempdir().unwrap();
    let map = |p: &str| root.path().join(p.trim_start_matches('/')).display().to_string();
    let mut text = config.clone();
    for d in ["/etc/dcr-gateway", "/var/lib/dcr-gateway", "/run/dcr-gateway"] {
        std::fs::create_dir_all(map(d)).unwrap();
        text = text.replace(&format!("\"{d}/"), &format!("\"{}/", map(d)));
    }
    std::fs::write(map("/var/lib/dcr-gateway/rules.json"), "[]").unwrap();
    let mut t = toml_table(&text, "mapped systemd config");
    t["upstream"]["origins"] = toml::Value::Array(vec![toml::Value::String(RESOLVABLE_ORIGIN.into())]);
    let cfg = map("/etc/dcr-gateway/gateway.toml");
    std::fs::write(&cfg, toml::to_string(&t).unwrap()).unwrap();
    let out = Command::new(BIN).args(["check", "-c", &cfg]).output().expect("dcr-gateway check");
    assert!(out.status.success(), "{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
}

// ---------------------------------------------------------------------------------------------
// Linters: kubernetes-validate --strict and yamllint (installed by scripts/prereqs.sh)

/// A linter scripts/prereqs.sh installs (on PATH, or in its virtual environment). Missing: a
/// failure when `CI` is set (.ci/run, CI systems), else a skip that says so on stderr.
fn linter(name: &str) -> Option<PathBuf> {
    let found = which(name).or_else(|| {
        let p = Path::new("/opt/dcr-gateway-tools/bin").join(name);
        p.is_file().then_some(p)
    });
    if found.is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "{name} is not installed: scripts/prereqs.sh installs it (CI is set, so this is a failure)"
        );
        eprintln!("SKIPPED: {name} is not installed (run scripts/prereqs.sh); with CI set this test fails");
    }
    found
}

#[test]
fn kubernetes_manifests_pass_kubernetes_validate_strict() {
    let Some(kv) = linter("kubernetes-validate") else { return };
    let files: Vec<PathBuf> = k8s_files().iter().map(|f| k8s_dir().join(f)).collect();
    let out = Command::new(&kv).arg("--strict").args(&files).output().expect("kubernetes-validate");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "kubernetes-validate --strict failed:\n{text}");
    for kind in ["configmap", "deployment", "horizontalpodautoscaler", "poddisruptionbudget", "service"] {
        assert!(text.contains(&format!("passed for resource {kind}/")), "no {kind} validated:\n{text}");
    }
    // Only custom resources may lack a schema (kustomize's and the Prometheus operator's).
    for line in text.lines().filter(|l| l.contains("Couldn't find schema")) {
        assert!(line.contains("kind Kustomization") || line.contains("kind ServiceMonitor"), "{line}");
    }
    // --strict refuses a member the API does not define (what this check is for).
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("deployment.yaml");
    std::fs::write(
        &bad,
        read("deploy/kubernetes/deployment.yaml").replacen("\nspec:\n", "\nspec:\n  replicaz: 2\n", 1),
    )
    .unwrap();
    let out = Command::new(&kv).arg("--strict").arg(&bad).output().expect("kubernetes-validate");
    assert!(!out.status.success(), "an unknown member passed --strict: {}", String::from_utf8_lossy(&out.stdout));
}

#[test]
fn kubernetes_manifests_pass_yamllint_at_120_columns() {
    let Some(yl) = linter("yamllint") else { return };
    let conf = k8s_dir().join(".yamllint");
    let files: Vec<PathBuf> = k8s_files().iter().map(|f| k8s_dir().join(f)).collect();
    let out = Command::new(&yl).arg("--strict").arg("-c").arg(&conf).args(&files).output().expect("yamllint");
    assert!(
        out.status.success(),
        "yamllint --strict:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // The limit is 120 columns: a 121-column line fails.
    let dir = tempfile::tempdir().unwrap();
    let long = dir.path().join("service.yaml");
    std::fs::write(&long, format!("{}# {}abcd\n", read("deploy/kubernetes/service.yaml"), "abcd ".repeat(23))).unwrap();
    let out = Command::new(&yl).arg("--strict").arg("-c").arg(&conf).arg(&long).output().expect("yamllint");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success() && text.contains("line too long (121 > 120"), "{text}");
}

fn which(cmd: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| std::env::split_paths(&paths).map(|p| p.join(cmd)).find(|p| p.is_file()))
}

// ---------------------------------------------------------------------------------------------
// ConfigMap hot reload, end to end: the kubelet's atomic writer layout and update sequence.

struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn readyz(admin: u16) -> Option<serde_json::Value> {
    let agent = ureq::AgentBuilder::new().timeout(Duration::from_secs(2)).build();
    let body = match agent.get(&format!("http://127.0.0.1:{admin}/readyz")).call() {
        Ok(r) => r.into_string().ok()?,
        Err(ureq::Error::Status(_, r)) => r.into_string().ok()?,
        Err(_) => return None,
    };
    serde_json::from_str(&body).ok()
}

fn sha256_hex(b: &[u8]) -> String {
    hex::encode(Sha256::digest(b))
}

fn wait_for(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    f()
}

/// What the kubelet does on a ConfigMap update: write a new timestamped directory, repoint
/// `..data` by an atomic rename, delete the old directory.
fn kubelet_write(vol: &Path, version: &str, files: &[(&str, &str)], old: Option<&str>) {
    let ts = vol.join(version);
    std::fs::create_dir(&ts).unwrap();
    for (name, content) in files {
        std::fs::write(ts.join(name), content).unwrap();
    }
    let tmp = vol.join("..data_tmp");
    std::os::unix::fs::symlink(version, &tmp).unwrap();
    std::fs::rename(&tmp, vol.join("..data")).unwrap();
    for (name, _) in files {
        let link = vol.join(name);
        if std::fs::symlink_metadata(&link).is_err() {
            std::os::unix::fs::symlink(format!("..data/{name}"), &link).unwrap();
        }
    }
    if let Some(old) = old {
        std::fs::remove_dir_all(vol.join(old)).unwrap();
    }
}

#[test]
fn configmap_update_is_hot_reloaded_through_the_data_symlink_swap() {
    let dir = tempfile::tempdir().unwrap();
    let vol = dir.path().join("etc-dcr-gateway");
    std::fs::create_dir(&vol).unwrap();
    let (http, admin) = (free_port(), free_port());
    let upstream = TcpListener::bind("127.0.0.1:0").unwrap();
    let config = format!(
        "[server]\npid_file = \"{d}/gw.pid\"\nupgrade_sock = \"{d}/gw.sock\"\ndrain_timeout_seconds = 0\ngraceful_shutdown_timeout_seconds = 0\n\
         [listen]\nhttp = [\"127.0.0.1:{http}\"]\nadmin = \"127.0.0.1:{admin}\"\n\
         [upstream]\norigins = [\"http://{up}\"]\nhealth_check = \"none\"\n\
         [acl]\nrules = \"rules.json\"\n[reload]\ndebounce_ms = 50\n",
        d = dir.path().display(),
        up = upstream.local_addr().unwrap(),
    );
    let rules_v1 = "[]";
    let rules_v2 = r#"[{"id":"block-doc-net","active":true,"priority":1,"rule":{"action":{"block":true},"scope":"dcr","match":{"ipv4_cidrs":["192.0.2.0/24"]}}}]"#;
    kubelet_write(&vol, "..2026_01_01_00_00_00.1", &[("gateway.toml", &config), ("rules.json", rules_v1)], None);

    let log = std::fs::File::create(dir.path().join("stderr.log")).unwrap();
    let child = Command::new(BIN)
        .args(["run", "-c"])
        .arg(vol.join("gateway.toml"))
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start dcr-gateway");
    let _running = Running(child);
    let stderr = || std::fs::read_to_string(dir.path().join("stderr.log")).unwrap_or_default();

    let rules_sha = |v: &serde_json::Value| v["rules_sha256"].as_str().unwrap_or("").to_string();
    assert!(
        wait_for(Duration::from_secs(20), || readyz(admin)
            .is_some_and(|v| rules_sha(&v) == sha256_hex(rules_v1.as_bytes()))),
        "gateway did not come up with rules v1:\n{}",
        stderr()
    );

    kubelet_write(
        &vol,
        "..2026_01_01_00_01_00.2",
        &[("gateway.toml", &config), ("rules.json", rules_v2)],
        Some("..2026_01_01_00_00_00.1"),
    );
    assert!(
        wait_for(Duration::from_secs(10), || readyz(admin)
            .is_some_and(|v| rules_sha(&v) == sha256_hex(rules_v2.as_bytes()))),
        "a ConfigMap update (..data swap, old directory removed) was not reloaded; last /readyz: {:?}\n{}",
        readyz(admin),
        stderr()
    );

    // And a second update, so the first reload did not leave the watcher on a dead directory.
    kubelet_write(
        &vol,
        "..2026_01_01_00_02_00.3",
        &[("gateway.toml", &config), ("rules.json", rules_v1)],
        Some("..2026_01_01_00_01_00.2"),
    );
    assert!(
        wait_for(Duration::from_secs(10), || readyz(admin)
            .is_some_and(|v| rules_sha(&v) == sha256_hex(rules_v1.as_bytes()))),
        "a second ConfigMap update was not reloaded\n{}",
        stderr()
    );
}
