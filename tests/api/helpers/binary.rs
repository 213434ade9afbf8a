//! The built binary (`CARGO_BIN_EXE_orderbridge`) as a child process: `start_daemon`
//! runs it on a configuration directory with the test defaults passed as
//! `ORDERBRIDGE__…` environment overrides (so they hold across restarts without
//! touching the files), and the API calls a test makes to such a daemon.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;

use super::{ADMIN_TOKEN, TestDefaults};

pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_orderbridge"))
}

/// The built binary running as a child process.
pub struct Daemon {
    pub child: std::process::Child,
    /// The public listener.
    pub addr: SocketAddr,
    /// The admin listener (`/api/*`, `/metrics`).
    pub admin: SocketAddr,
    /// Every line it wrote to stderr so far.
    pub log: Arc<Mutex<Vec<String>>>,
}

/// A failing test must not leave a daemon behind.
impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `orderbridge run` on `dir` with the test defaults (`TestDefaults::env`) and
/// waits until it reports its addresses.
pub fn start_daemon(dir: &Path, args: &[&str]) -> Daemon {
    start_daemon_with_env(dir, args, &TestDefaults::env())
}

/// Starts `orderbridge run` on `dir` with `env` (`ORDERBRIDGE__…` overrides) and waits
/// until it reports its addresses.
pub fn start_daemon_with_env(dir: &Path, args: &[&str], env: &[(String, String)]) -> Daemon {
    use std::io::BufRead;
    let mut child = std::process::Command::new(bin())
        .arg("run")
        .args(args)
        .arg("--config-dir")
        .arg(dir)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("the binary starts");
    let stderr = child.stderr.take().unwrap();
    let log: Arc<Mutex<Vec<String>>> = Arc::default();
    let (tx, rx) = std::sync::mpsc::channel();
    let sink = log.clone();
    // Keep draining stderr so the daemon never blocks on a full pipe.
    std::thread::spawn(move || {
        let mut tx = Some(tx);
        for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
            // "orderbridge listening on http://A (admin API and metrics on http://B)"
            if let Some(rest) = line.split("listening on http://").nth(1)
                && let Some(admin) = line.split("admin API and metrics on http://").nth(1)
                && let Some(t) = tx.take()
            {
                let addr = |s: &str| -> String {
                    s.chars().take_while(|c| c.is_ascii_digit() || *c == '.' || *c == ':').collect()
                };
                let _ = t.send((addr(rest), addr(admin)));
            }
            if std::env::var_os("TEST_LOG").is_some() {
                eprintln!("daemon: {line}");
            }
            sink.lock().unwrap().push(line);
        }
    });
    let (addr, admin) = rx.recv_timeout(Duration::from_secs(60)).expect("daemon reports its addresses");
    Daemon { child, addr: addr.parse().unwrap(), admin: admin.parse().unwrap(), log }
}

/// `GET /api{path}` on a running daemon whose admin listener is `addr`, with the admin token.
pub async fn daemon_api(client: &reqwest::Client, addr: SocketAddr, path: &str) -> Value {
    client.get(format!("http://{addr}/api{path}")).bearer_auth(ADMIN_TOKEN).send().await.unwrap().json().await.unwrap()
}

/// Every order a running daemon (admin listener `addr`) holds (`filter`: e.g. `&state=approved`),
/// paging through `/api/orders`.
pub async fn all_orders(client: &reqwest::Client, addr: SocketAddr, filter: &str) -> Vec<Value> {
    let mut out = Vec::new();
    let mut after = String::new();
    loop {
        let page = daemon_api(client, addr, &format!("/orders?limit=1000{filter}{after}")).await;
        out.extend(page["orders"].as_array().unwrap().iter().cloned());
        match page["next_after"].as_str() {
            Some(n) => after = format!("&after={n}"),
            None => return out,
        }
    }
}
