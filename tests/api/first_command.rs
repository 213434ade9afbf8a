//! The quick start's first command (docs/src/admin/installation.md) on a fresh copy
//! of the repository's configuration:
//! `orderbridge run` from its directory with no environment variable at all starts
//! the example (its demo secrets come from `config/demo-secrets.toml`), says where
//! the console and the API are, and answers `/readyz`.

use std::io::BufRead;
use std::path::Path;
use std::time::Duration;

use crate::helpers::*;

#[tokio::test]
async fn the_example_starts_with_no_environment_at_all() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    for sub in ["config", "connectors", "mappings"] {
        copy_tree(&repo.join(sub), &d.join(sub));
    }
    // The one change: ports the OS picks (tests run side by side); nothing else.
    replace_in_file(d, "config/orderbridge.toml", &[("port = 8080", "port = 0"), ("port = 8081", "port = 0")]);
    let mut child = std::process::Command::new(bin())
        .arg("run")
        .env_clear()
        .current_dir(d)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut lines = Vec::new();
    let (mut public, mut admin) = (None, None);
    while public.is_none() || !lines.iter().any(|l: &String| l.contains("example configuration with DEMO secrets")) {
        let line = rx.recv_timeout(Duration::from_secs(60)).unwrap_or_else(|_| {
            let _ = child.kill();
            panic!("the daemon did not start:\n{}", lines.join("\n"))
        });
        let addr = |l: &str, after: &str| -> Option<String> {
            let rest = l.split(after).nth(1)?;
            Some(rest.chars().take_while(|c| c.is_ascii_digit() || *c == '.' || *c == ':').collect())
        };
        if line.contains("orderbridge listening on") {
            public = addr(&line, "listening on http://");
            admin = addr(&line, "admin API and metrics on http://");
        }
        lines.push(line);
    }
    let (public, admin) = (public.unwrap(), admin.unwrap());
    let welcome = lines.iter().find(|l| l.contains("example configuration with DEMO secrets")).unwrap();
    assert!(
        welcome.contains(&format!("http://{admin}/api"))
            && welcome.contains(&format!("http://{public}/signin"))
            && welcome.contains("wang.fang@bank.example")
            && welcome.contains("tokens create --person wang.fang")
            && welcome.contains("the administration page: it-admin@bank.example"),
        "{welcome}"
    );
    let http = client();
    let mut ready = false;
    for _ in 0..500 {
        if http.get(format!("http://{public}/readyz")).send().await.is_ok_and(|r| r.status() == 200) {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(ready, "never ready");
    assert_eq!(http.get(format!("http://{public}/signin")).send().await.unwrap().status(), 200);
    // The admin API takes the demo admin token from the file; a demo person acts with
    // the personal token the welcome line says how to make (the daemon running).
    let made = std::process::Command::new(bin())
        .args(["tokens", "create", "--person", "wang.fang"])
        .env_clear()
        .current_dir(d)
        .output()
        .unwrap();
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    let personal = String::from_utf8(made.stdout).unwrap().lines().last().unwrap().to_owned();
    assert!(personal.starts_with("obt_"), "{personal}");
    let r = http
        .get(format!("http://{admin}/api/reports/kpis?from=2026-11-30&to=2026-11-30"))
        .bearer_auth(&personal)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "line supervisors see reports");
    let r = http.get(format!("http://{admin}/api/audit/verify")).bearer_auth(&personal).send().await.unwrap();
    assert_eq!(r.status(), 403, "but do not administer");
    // The example's administrator does (the console's administration page asks the same).
    let made = std::process::Command::new(bin())
        .args(["tokens", "create", "--person", "ma.lin"])
        .env_clear()
        .current_dir(d)
        .output()
        .unwrap();
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    let admin_token = String::from_utf8(made.stdout).unwrap().lines().last().unwrap().to_owned();
    let r = http.get(format!("http://{admin}/api/audit/verify")).bearer_auth(&admin_token).send().await.unwrap();
    assert_eq!(r.status(), 200, "the example's administrator administers");
    let demo: toml::Table =
        toml::from_str(&std::fs::read_to_string(d.join("config/demo-secrets.toml")).unwrap()).unwrap();
    let token = demo["ORDERBRIDGE_ADMIN_TOKEN"].as_str().unwrap();
    let status = http.get(format!("http://{admin}/api/connectors")).bearer_auth(token).send().await.unwrap().status();
    assert_eq!(status, 200);
    let _ = child.kill();
    let _ = child.wait();
}
