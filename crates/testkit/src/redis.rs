//! A redis-server of the test's own, on a random port, with no persistence,
//! in a temp dir: the shared one is never touched, and a test may stop and
//! restart it. Stopped when dropped.

use std::path::PathBuf;
use std::time::Duration;

use crate::required_tool;

/// How long a (re)started server gets to accept connections.
const START_WITHIN: Duration = Duration::from_secs(10);

pub struct RedisServer {
    pub port: u16,
    program: PathBuf,
    dir: tempfile::TempDir,
    child: Option<tokio::process::Child>,
}

impl RedisServer {
    /// Starts one; `None` (the test skips) when redis-server is not
    /// installed, which under `CI=true` fails the test instead.
    pub async fn start() -> Option<Self> {
        let program = required_tool("redis-server")?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .unwrap_or_else(|e| panic!("no free port: {e}"))
            .port();
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("temp dir: {e}"));
        let mut server = Self {
            port,
            program,
            dir,
            child: None,
        };
        server.restart().await;
        Some(server)
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Starts the server again (after [`stop`](Self::stop)) on the same
    /// port; returns once it accepts connections.
    pub async fn restart(&mut self) {
        let child = tokio::process::Command::new(&self.program)
            .args([
                "--port",
                &self.port.to_string(),
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", self.program.display()));
        self.child = Some(child);
        let deadline = tokio::time::Instant::now() + START_WITHIN;
        while tokio::net::TcpStream::connect(("127.0.0.1", self.port))
            .await
            .is_err()
        {
            assert!(
                tokio::time::Instant::now() < deadline,
                "redis-server did not accept connections within {START_WITHIN:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Kills the server (the port stays this server's to restart on).
    pub async fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill()
                .await
                .unwrap_or_else(|e| panic!("killing redis-server: {e}"));
        }
    }
}
