//! Rate-limit state an attacker cannot steer (issue 13): refused requests count nowhere,
//! Redis keys exist only for admitted requests and expire, a silent Redis costs at most the
//! budget, and an unauthenticated flood in token mode leaves token holders their buckets.

mod support;

use std::net::IpAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use dcr_gateway::ratelimit::{
    Answered, Backend, Limit, LimitKind, OnBackendError, RateClass, RateDecision, RateLimitPolicy,
};
use dcr_gateway::state::ratelimiter::RateLimiter;
use support::redis_server::Redis;
use support::upstream::Upstream;
use support::*;

fn ip(a: u8, b: u8, c: u8, d: u8) -> IpAddr {
    IpAddr::from([a, b, c, d])
}

#[tokio::test]
async fn redis_keys_exist_only_for_admitted_requests_and_expire() {
    let long = long_window();
    let redis = Redis::start_with(&[]);
    let policy = RateLimitPolicy {
        per_ip: Some(Limit { requests: 5, window_seconds: long }),
        per_prefix: Some(Limit { requests: 50, window_seconds: long }),
        global: Some(Limit { requests: 20, window_seconds: long }),
        backend: Backend::Redis,
        redis_url: redis.url(),
        redis_timeout_ms: 1000,
        on_backend_error: OnBackendError::FailClosed,
        key_prefix: format!("t{}", redis.port),
        ..Default::default()
    };
    let rl = RateLimiter::new();
    // One address floods: 5 admitted, the rest refused by its own bucket and counted nowhere.
    for i in 0..200 {
        let (d, a) = rl.check(&policy, ip(203, 0, 113, 66), RateClass::Main, None).await;
        assert_eq!(a, Answered::Redis);
        assert_eq!(d == RateDecision::Allow, i < 5, "request {i}: {d:?}");
    }
    // Everyone else still has the other 15 of the global budget.
    for i in 0..15u8 {
        assert_eq!(rl.check(&policy, ip(198, 51, i, 1), RateClass::Main, None).await.0, RateDecision::Allow, "{i}");
    }
    // A rotating-address flood is refused by the global bucket and creates no key.
    for i in 0..500u32 {
        let d = rl.check(&policy, ip(10, (i >> 8) as u8, i as u8, 7), RateClass::Main, None).await.0;
        assert!(matches!(d, RateDecision::Limited { kind: LimitKind::Global, .. }), "{d:?}");
    }
    let client = redis::Client::open(redis.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let keys: Vec<String> =
        redis::cmd("KEYS").arg(format!("{}:*", policy.key_prefix)).query_async(&mut conn).await.unwrap();
    // 16 addresses, 16 networks, one global key.
    assert_eq!(keys.len(), 16 + 16 + 1, "{keys:?}");
    for k in &keys {
        let ttl: i64 = redis::cmd("TTL").arg(k).query_async(&mut conn).await.unwrap();
        assert!(ttl > 0 && ttl as u64 <= long, "{k} has TTL {ttl}");
    }
    let flooder: u64 = redis::cmd("GET")
        .arg(keys.iter().find(|k| k.contains("ip:203.0.113.66")).unwrap())
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(flooder, 5, "refused requests are not counted");
}

/// A Redis that accepts connections and never answers.
fn silent_listener() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for s in l.incoming().flatten() {
            held.push(s);
        }
    });
    port
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_redis_costs_at_most_the_budget_per_call() {
    let port = silent_listener();
    let budget = Duration::from_millis(50);
    let policy = RateLimitPolicy {
        backend: Backend::Redis,
        redis_url: format!("redis://127.0.0.1:{port}/0"),
        redis_timeout_ms: budget.as_millis() as u64,
        on_backend_error: OnBackendError::Local,
        ..Default::default()
    };
    let rl = RateLimiter::new();
    let started = Instant::now();
    let mut worst = Duration::ZERO;
    let mut calls = 0;
    // Long enough for several reconnection attempts (at most one per second).
    while started.elapsed() < Duration::from_millis(2500) {
        let t = Instant::now();
        let (_, a) = rl.check(&policy, ip(192, 0, 2, calls as u8), RateClass::Main, None).await;
        worst = worst.max(t.elapsed());
        calls += 1;
        assert_eq!(a, Answered::LocalFallback);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Generous slack for a loaded CI machine; the bug this guards against took ~400 ms.
    assert!(worst < budget + Duration::from_millis(250), "worst call took {worst:?} over {calls} calls");
}

fn mint(dir: &std::path::Path, label: &str) -> String {
    let out = Command::new(BIN)
        .args(["token", "new", "--file"])
        .arg(dir.join("tokens.toml"))
        .args(["--label", label])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

fn register(gw: &Gateway, from: &str, token: Option<&str>) -> u16 {
    let mut req =
        agent().post(&gw.url("/oidc/register")).set("x-forwarded-for", from).set("content-type", "application/json");
    if let Some(t) = token {
        req = req.set("authorization", &format!("Bearer {t}"));
    }
    match req.send_string(r#"{"client_name":"P","redirect_uris":["https://p.example/cb"]}"#) {
        Ok(r) => r.status(),
        Err(ureq::Error::Status(c, _)) => c,
        Err(e) => panic!("{e}"),
    }
}

#[test]
fn an_unauthenticated_flood_does_not_lock_token_holders_out() {
    let long = long_window();
    let up = Upstream::start();
    let dir = tempfile::tempdir().unwrap();
    let token = mint(dir.path(), "partner");
    let gw = GatewayBuilder::new(&up.origin())
        .file("tokens.toml", std::fs::read(dir.path().join("tokens.toml")).unwrap())
        .dcr("registration = \"token\"\ntoken_file = \"tokens.toml\"")
        .extra(&format!("[rate_limit]\nglobal = {{ requests = 5, window_seconds = {long} }}"))
        .start();
    let mut statuses = std::collections::BTreeMap::new();
    for i in 0..40 {
        *statuses.entry(register(&gw, &format!("203.0.113.{i}"), None)).or_insert(0) += 1;
    }
    // The flood has its own buckets: 5 answered 401, then 429.
    assert_eq!(statuses.get(&401), Some(&5), "{statuses:?}");
    assert_eq!(statuses.get(&429), Some(&35), "{statuses:?}");
    // The partner's registrations count in the main buckets, untouched by the flood.
    for i in 0..5 {
        assert_eq!(register(&gw, "198.51.100.7", Some(&token)), 201, "registration {i}");
    }
    assert_eq!(register(&gw, "198.51.100.7", Some(&token)), 429);
    assert_eq!(up.count(), 5);
}

/// Fill `redis` with filler keys until it refuses writes (OOM under `noeviction`).
async fn fill_to_maxmemory(conn: &mut redis::aio::MultiplexedConnection) {
    let blob = "x".repeat(16 * 1024);
    for i in 0..100_000u32 {
        let r: redis::RedisResult<()> = redis::cmd("SET").arg(format!("filler:{i}")).arg(&blob).query_async(conn).await;
        if let Err(e) = r {
            assert!(e.to_string().contains("OOM"), "{e}");
            return;
        }
    }
    panic!("redis never reached maxmemory");
}

#[tokio::test]
async fn redis_at_maxmemory_keeps_limiting_as_configured() {
    let long = long_window();
    // What the docs recommend against a flood: a bounded Redis that refuses writes when full.
    let redis = Redis::start_with(&["--maxmemory", "2mb", "--maxmemory-policy", "noeviction"]);
    let client = redis::Client::open(redis.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let policy = |on_error| RateLimitPolicy {
        per_ip: Some(Limit { requests: 3, window_seconds: long }),
        per_prefix: Some(Limit { requests: 1000, window_seconds: long }),
        global: Some(Limit { requests: 100_000, window_seconds: long }),
        backend: Backend::Redis,
        redis_url: redis.url(),
        redis_timeout_ms: 1000,
        on_backend_error: on_error,
        key_prefix: format!("m{}", redis.port),
        ..Default::default()
    };
    // Before it is full, Redis answers.
    let rl = RateLimiter::new();
    let (d, a) = rl.check(&policy(OnBackendError::Local), ip(198, 51, 100, 1), RateClass::Main, None).await;
    assert_eq!((d, a), (RateDecision::Allow, Answered::Redis));

    fill_to_maxmemory(&mut conn).await;
    // Keep it over the limit whatever it frees meanwhile (at the edge a write can slip in).
    let _: () = redis::cmd("CONFIG").arg("SET").arg("maxmemory").arg("1mb").query_async(&mut conn).await.unwrap();

    // Local fallback: a fixed address still gets exactly its limit, never more (with
    // fail_open it would register freely: the case the issue reproduced).
    let rl = RateLimiter::new();
    let local = policy(OnBackendError::Local);
    for i in 0..10 {
        let (d, a) = rl.check(&local, ip(203, 0, 113, 9), RateClass::Main, None).await;
        assert_eq!(a, Answered::LocalFallback, "request {i}: Redis is full, so the fallback decides");
        assert_eq!(d == RateDecision::Allow, i < 3, "request {i}: {d:?}");
    }
    // fail_closed: refused (503) while Redis refuses writes, as documented.
    let (d, a) = rl.check(&policy(OnBackendError::FailClosed), ip(203, 0, 113, 10), RateClass::Main, None).await;
    assert_eq!((d, a), (RateDecision::BackendUnavailable, Answered::FailClosed));

    // Memory freed: Redis decides again.
    let _: () = redis::cmd("FLUSHDB").query_async(&mut conn).await.unwrap();
    let _: () = redis::cmd("CONFIG").arg("SET").arg("maxmemory").arg("2mb").query_async(&mut conn).await.unwrap();
    let rl = RateLimiter::new();
    let (d, a) = rl.check(&local, ip(203, 0, 113, 9), RateClass::Main, None).await;
    assert_eq!((d, a), (RateDecision::Allow, Answered::Redis));
}
