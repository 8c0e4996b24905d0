//! A real redis-server on a free loopback port, killed on drop (the shared rate-limit tests).

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::{free_port, wait_until};

pub struct Redis {
    child: Child,
    pub port: u16,
}

impl Redis {
    /// On a free port, with extra `redis-server` arguments.
    pub fn start_with(extra: &[&str]) -> Redis {
        Redis::start_on_with(free_port(), extra)
    }

    /// On `port` (to bring a Redis back where it was).
    pub fn start_on(port: u16) -> Redis {
        Redis::start_on_with(port, &[])
    }

    fn start_on_with(port: u16, extra: &[&str]) -> Redis {
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is installed (scripts/prereqs.sh installs it)");
        assert!(wait_until(Duration::from_secs(10), || std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()));
        Redis { child, port }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
