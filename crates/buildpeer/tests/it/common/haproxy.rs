//! A real HAProxy (`haproxy -db`, in the foreground) in front of one or
//! more servers, as a deployment puts one in front of its replicas:
//! round-robin, health checks on `GET /readyz` every 300 ms that take a
//! server out after one failure and back after one success, and connection
//! failures and requests without a body that a dying server never answered
//! retried (up to 3 times) and redispatched to another server.
//! Its log (health changes, one line per request) is collected, and its
//! stats socket tells how many requests each server has in flight.

use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt as _, BufReader};

/// A loopback address nothing listens on right now (the port the kernel
/// picked for a listener that is closed again): for a process that must
/// be told its address before it starts.
pub fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
}

/// `haproxy -db` listening on a loopback port, stopped when dropped.
pub struct Haproxy {
    child: tokio::process::Child,
    pub addr: SocketAddr,
    log: Arc<Mutex<Vec<String>>>,
    dir: tempfile::TempDir,
}

impl Haproxy {
    /// In front of `backends`, on a port of its own; `None` (after a
    /// "skipped" line; a failure under `CI=true`) without `haproxy` on `PATH`.
    pub async fn start(backends: &[SocketAddr]) -> Option<Self> {
        Self::start_on(free_addr(), backends).await
    }

    /// In front of `backends`, listening on `addr`.
    pub async fn start_on(addr: SocketAddr, backends: &[SocketAddr]) -> Option<Self> {
        let bin = buildpeer_testkit::required_tool("haproxy")?;
        let dir = tempfile::tempdir().expect("a temp dir");
        let cfg = dir.path().join("haproxy.cfg");
        let stats = dir.path().join("stats.sock");
        let servers: String = backends
            .iter()
            .enumerate()
            .map(|(i, b)| format!("  server s{i} {b} check inter 300ms fall 1 rise 1\n"))
            .collect();
        let config = [
            "global",
            "  maxconn 256",
            "  log stderr format raw local0 info",
            &format!("  stats socket {} mode 600 level user", stats.display()),
            "defaults",
            "  mode http",
            "  log global",
            "  option httplog",
            "  timeout connect 5s",
            "  timeout client 30s",
            "  timeout server 30s",
            "  option redispatch",
            "  retries 3",
            // A bodiless request (a tus HEAD) caught by a dying server is
            // sent again to another: tus-js-client starts a file over on a
            // failed resume HEAD. HAProxy never resends a body it did not
            // buffer, so a PATCH caught so gets the 502 and resumes.
            "  retry-on conn-failure empty-response response-timeout",
            "frontend fe",
            &format!("  bind {addr}"),
            "  default_backend be",
            "backend be",
            "  balance roundrobin",
            "  option httpchk GET /readyz",
        ]
        .join("\n");
        std::fs::write(&cfg, format!("{config}\n{servers}")).expect("writing haproxy.cfg");
        let mut child = tokio::process::Command::new(bin)
            .arg("-db")
            .arg("-f")
            .arg(&cfg)
            .kill_on_drop(true)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawning haproxy");
        let log = Arc::new(Mutex::new(Vec::new()));
        let stderr = child.stderr.take().expect("haproxy's stderr");
        let into = Arc::clone(&log);
        tokio::spawn(async move {
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if let Ok(mut v) = into.lock() {
                    v.push(line);
                }
            }
        });
        for _ in 0..100 {
            if tokio::net::TcpStream::connect(addr).await.is_ok() {
                return Some(Self {
                    child,
                    addr,
                    log,
                    dir,
                });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!(
            "haproxy did not listen on {addr}\n{}",
            log.lock().expect("haproxy's log").join("\n")
        );
    }

    /// How many requests server `index` (of the backends given to
    /// [`start`](Self::start), in order) has in flight now: its `scur` in
    /// `show stat`.
    pub async fn sessions(&self, index: usize) -> u64 {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let mut socket = tokio::net::UnixStream::connect(self.dir.path().join("stats.sock"))
            .await
            .expect("haproxy's stats socket");
        socket.write_all(b"show stat\n").await.expect("show stat");
        let mut csv = String::new();
        socket.read_to_string(&mut csv).await.expect("show stat");
        let mut lines = csv.lines();
        let header: Vec<&str> = lines
            .next()
            .and_then(|h| h.strip_prefix("# "))
            .unwrap_or_else(|| panic!("show stat: {csv}"))
            .split(',')
            .collect();
        let column = |name: &str| header.iter().position(|h| *h == name).expect(name);
        let (px, sv, scur) = (column("pxname"), column("svname"), column("scur"));
        let server = format!("s{index}");
        lines
            .map(|l| l.split(',').collect::<Vec<_>>())
            .find(|row| row.get(px) == Some(&"be") && row.get(sv) == Some(&server.as_str()))
            .and_then(|row| row.get(scur)?.parse().ok())
            .unwrap_or_else(|| panic!("no {server} in show stat: {csv}"))
    }

    /// `http://ADDR`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Its log lines so far (health changes and one line per request).
    pub fn log(&self) -> Vec<String> {
        self.log.lock().expect("haproxy's log").clone()
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        // Only this child, by its own handle.
        let _ = self.child.start_kill();
    }
}
