//! The test SMTP server (`tests/support/smtp_server.py`, aiosmtpd, as a child process
//! writing one maildir) and the mails it accepted, decoded by Python's `email`
//! package.

use std::path::{Path, PathBuf};

use serde_json::Value;

use super::wait_until;

/// One message the test SMTP server accepted: envelope, raw bytes, and the decoded
/// view (`parsed`: subject, headers, parts) from Python's `email` package.
#[derive(Debug, Clone)]
pub struct Mail {
    pub raw: String,
    pub meta: Value,
}

impl Mail {
    pub fn subject(&self) -> &str {
        self.meta["parsed"]["subject"].as_str().unwrap_or_default()
    }
    pub fn header(&self, name: &str) -> &str {
        self.meta["parsed"]["headers"][name].as_str().unwrap_or_default()
    }
    pub fn rcpt(&self) -> Vec<String> {
        self.meta["rcpt_tos"].as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_owned()).collect()
    }
    /// The decoded content of the part with this content type.
    pub fn part(&self, content_type: &str) -> &str {
        self.meta["parsed"]["parts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["content_type"] == content_type)
            .and_then(|p| p["content"].as_str())
            .unwrap_or_else(|| panic!("no {content_type} part in {}", self.meta))
    }
    /// The first link to one of the daemon's pages in the text part.
    pub fn page_link(&self) -> String {
        let text = self.part("text/plain");
        let start = text.find("http://").unwrap_or_else(|| panic!("no link in: {text}"));
        text[start..].split_whitespace().next().unwrap().to_owned()
    }
}

/// `tests/support/smtp_server.py` (aiosmtpd, installed by scripts/test.sh) as a child
/// process on its own maildir. Killed on drop.
pub struct SmtpServer {
    child: std::process::Child,
    pub port: u16,
    pub maildir: PathBuf,
    _dir: Option<tempfile::TempDir>,
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl SmtpServer {
    pub fn start(args: &[&str]) -> SmtpServer {
        let dir = tempfile::tempdir().unwrap();
        let maildir = dir.path().join("mail");
        let mut s = SmtpServer::start_on(0, &maildir, args);
        s._dir = Some(dir);
        s
    }

    /// Starts on `port` (0: any) with `maildir`, e.g. again after `stop`.
    pub fn start_on(port: u16, maildir: &Path, args: &[&str]) -> SmtpServer {
        use std::io::BufRead;
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/smtp_server.py");
        let mut child = std::process::Command::new("python3")
            .arg(script)
            .args(["--host", "127.0.0.1", "--port", &port.to_string(), "--maildir"])
            .arg(maildir)
            .args(args)
            .stdout(std::process::Stdio::piped())
            .stderr(if std::env::var_os("TEST_LOG").is_some() {
                std::process::Stdio::inherit()
            } else {
                std::process::Stdio::null()
            })
            .spawn()
            .expect("python3 runs (scripts/test.sh installs what the tests need)");
        let stdout = child.stdout.take().unwrap();
        let mut line = String::new();
        std::io::BufReader::new(stdout).read_line(&mut line).unwrap();
        let port = line
            .strip_prefix("READY ")
            .and_then(|p| p.trim().parse().ok())
            .unwrap_or_else(|| {
                let _ = child.kill();
                panic!("the test SMTP server did not start (got {line:?}); run the tests with scripts/test.sh, which installs aiosmtpd")
            });
        SmtpServer { child, port, maildir: maildir.to_owned(), _dir: None }
    }

    /// A port that is free now (to start a server on later).
    pub fn free_port() -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
    }

    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Every message accepted so far, in arrival order.
    pub fn messages(&self) -> Vec<Mail> {
        messages_in(&self.maildir)
    }

    /// Waits until at least `n` messages arrived; returns all of them.
    pub async fn wait_for(&self, n: usize) -> Vec<Mail> {
        let dir = self.maildir.clone();
        wait_until(&format!("{n} mails arrive"), || {
            let dir = dir.clone();
            async move { messages_in(&dir).len() >= n }
        })
        .await;
        self.messages()
    }
}

pub fn messages_in(dir: &Path) -> Vec<Mail> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut jsons: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    jsons.sort();
    jsons
        .into_iter()
        .map(|j| Mail {
            meta: serde_json::from_slice(&std::fs::read(&j).unwrap()).unwrap(),
            raw: String::from_utf8_lossy(&std::fs::read(j.with_extension("eml")).unwrap()).into_owned(),
        })
        .collect()
}
