//! The ceiling of the engine: a Pingora 0.9.1 HTTP proxy that implements `upstream_peer` and
//! nothing else, with the same `ServerConf` settings and allocator dcr-gateway uses. `bench/run.sh` compares
//! the gateway with it.
//!
//! ```sh
//! cargo build --release --example bare_proxy
//! ./target/release/examples/bare_proxy LISTEN_ADDR UPSTREAM_ADDR [THREADS] [WORK_STEALING] [KEEPALIVE_POOL]
//! ./target/release/examples/bare_proxy 127.0.0.1:18090 127.0.0.1:18081 1
//! ```

use async_trait::async_trait;
use pingora::prelude::*;
use pingora::proxy::{http_proxy_service, ProxyHttp, Session};
use pingora::server::configuration::ServerConf;

// The gateway's allocator (src/main.rs), so that the comparison measures the gateway's own work.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

struct Bare {
    upstream: String,
}

#[async_trait]
impl ProxyHttp for Bare {
    type CTX = ();
    fn new_ctx(&self) {}

    async fn upstream_peer(&self, _session: &mut Session, _ctx: &mut ()) -> Result<Box<HttpPeer>> {
        Ok(Box::new(HttpPeer::new(self.upstream.as_str(), false, String::new())))
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 3 {
        eprintln!("usage: {} LISTEN_ADDR UPSTREAM_ADDR [THREADS=1] [WORK_STEALING=true] [KEEPALIVE_POOL=128]", args[0]);
        std::process::exit(2);
    }
    let arg = |i: usize, default: &str| args.get(i).cloned().unwrap_or_else(|| default.to_string());
    let threads: usize = arg(3, "1").parse().expect("THREADS: a number");
    let work_stealing: bool = arg(4, "true").parse().expect("WORK_STEALING: true or false");
    let pool: usize = arg(5, "128").parse().expect("KEEPALIVE_POOL: a number");
    let pid = std::process::id();
    // The gateway's [server] settings, with the bench's values.
    let conf = ServerConf {
        threads,
        work_stealing: work_stealing && threads > 1, // as src/proxy/server.rs does
        grace_period_seconds: Some(0),
        graceful_shutdown_timeout_seconds: Some(5),
        pid_file: format!("/tmp/bare-proxy-{pid}.pid"),
        upgrade_sock: format!("/tmp/bare-proxy-{pid}.sock"),
        upstream_keepalive_pool_size: pool,
        ..Default::default()
    };
    let opt = Opt { upgrade: false, daemon: false, nocapture: false, test: false, conf: None };
    let mut server = Server::new_with_opt_and_conf(opt, conf);
    server.bootstrap();
    let mut proxy = http_proxy_service(&server.configuration, Bare { upstream: args[2].clone() });
    proxy.add_tcp(&args[1]);
    server.add_service(proxy);
    server.run_forever();
}
