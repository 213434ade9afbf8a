//! Evidence packs: a pack of an approved order verifies, with the CLI and with the
//! book's standard tools (openssl, sha256sum); one changed byte in one file makes
//! both fail, and the CLI names the file.

use std::io::{Read as _, Write as _};
use std::path::Path;
use std::process::{Command, Output};

use serde_json::{Value, json};

use crate::helpers::*;

fn cli(dir: &Path, args: &[&str]) -> Output {
    Command::new(bin()).args(args).arg("--config-dir").arg(dir).output().unwrap()
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

/// The book's standard-tools check (docs/src/admin/audit.md), run by `sh -e` in `cwd`.
fn readme_check(cwd: &Path, pack: &Path, pubkey: &Path) -> Output {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/src/admin/audit.md")).unwrap();
    let at = readme.find("**The same check with standard tools**").unwrap();
    let block = &readme[at..];
    let start = block.find("```sh\n").unwrap() + 6;
    let script = &block[start..start + block[start..].find("```").unwrap()];
    Command::new("sh").arg("-ec").arg(script).current_dir(cwd).env("PACK", pack).env("PUBKEY", pubkey).output().unwrap()
}

/// `pack` again with one byte of `name` changed.
fn tampered(pack: &[u8], name: &str) -> Vec<u8> {
    let mut zip = zip::ZipArchive::new(std::io::Cursor::new(pack)).unwrap();
    let mut out = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    for i in 0..zip.len() {
        let mut f = zip.by_index(i).unwrap();
        let n = f.name().unwrap().into_owned();
        let mut b = Vec::new();
        f.read_to_end(&mut b).unwrap();
        if n == name {
            let k = b.len() / 2;
            b[k] ^= 0x01;
        }
        out.start_file(n.as_str(), zip::write::SimpleFileOptions::default()).unwrap();
        out.write_all(&b).unwrap();
    }
    out.finish().unwrap().into_inner()
}

#[tokio::test]
async fn a_pack_verifies_and_one_changed_byte_is_named() {
    let app = TestApp::builder().start().await;
    let (s, b) = app.post_webhook(&deal("D-EVIDENCE", 1, "500000.00")).await;
    assert_eq!(s, 202, "{b}");
    let id = b["order_id"].as_str().unwrap().to_owned();
    let (s, b) = app
        .api_post_json_as(
            "wang.fang",
            &format!("/orders/{id}/approvals"),
            &json!({"decision": "approve", "comment": "同意，资料齐全"}),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    app.drain_outbox().await;
    let dir = app.stop_and_release().await;
    let d = dir.path();

    let pack = d.join("pack.zip");
    let out = cli(d, &["evidence", &id, "--out", pack.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    let out = cli(d, &["evidence", "public-key"]);
    assert!(out.status.success(), "{}", text(&out));
    let pubkey = d.join("orderbridge-evidence.pem");
    std::fs::write(&pubkey, &out.stdout).unwrap();

    let out = cli(d, &["evidence", "verify", pack.to_str().unwrap(), "--public-key", pubkey.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).contains(&format!("evidence intact: {id}")), "{}", text(&out));

    // What is inside: the approval with who and how, the rules in force, the chain.
    let bytes = std::fs::read(&pack).unwrap();
    let mut zip = zip::ZipArchive::new(std::io::Cursor::new(bytes.as_slice())).unwrap();
    let read = |zip: &mut zip::ZipArchive<_>, n: &str| {
        let mut s = String::new();
        zip.by_name(n).unwrap().read_to_string(&mut s).unwrap();
        s
    };
    let approvals: Value = serde_json::from_str(&read(&mut zip, "approvals.json")).unwrap();
    let person = approvals["approvals"].as_array().unwrap().iter().find(|a| a["who"]["id"] == "wang.fang");
    let person = person.unwrap_or_else(|| panic!("{approvals:#}"));
    assert_eq!(person["comment"], "同意，资料齐全");
    // wang.fang approved with her personal token: the channel is the API.
    assert_eq!(person["channel"], "api", "{person}");
    assert!(read(&mut zip, "audit/chain.txt").starts_with("chain intact:"));
    let rules_file = (0..zip.len())
        .map(|i| zip.by_index(i).unwrap().name().unwrap().into_owned())
        .find(|n| n.starts_with("versions/rules/") && n.ends_with("/config/rules.toml"))
        .expect("the rules in force");
    assert_eq!(read(&mut zip, &rules_file), std::fs::read_to_string(d.join("config/rules.toml")).unwrap());
    let effects = read(&mut zip, "effects.json");
    assert!(effects.contains("effect_succeeded"), "{effects}");

    // The book's procedure with standard tools accepts it.
    let work = tempfile::tempdir().unwrap();
    let out = readme_check(work.path(), &pack, &pubkey);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("Signature Verified Successfully"), "{}", text(&out));

    // One byte changed in one file: both fail, and the CLI names the file.
    let bad = d.join("bad.zip");
    std::fs::write(&bad, tampered(&bytes, "approvals.json")).unwrap();
    let out = cli(d, &["evidence", "verify", bad.to_str().unwrap(), "--public-key", pubkey.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("evidence BROKEN: approvals.json:"), "{}", text(&out));
    let work = tempfile::tempdir().unwrap();
    let out = readme_check(work.path(), &bad, &pubkey);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("approvals.json: FAILED"), "{}", text(&out));

    // A changed manifest breaks the signature, for both.
    std::fs::write(&bad, tampered(&bytes, "manifest.json")).unwrap();
    let out = cli(d, &["evidence", "verify", bad.to_str().unwrap(), "--public-key", pubkey.to_str().unwrap()]);
    assert!(text(&out).contains("evidence BROKEN: manifest.json: the signature does not verify"), "{}", text(&out));
    let work = tempfile::tempdir().unwrap();
    assert!(!readme_check(work.path(), &bad, &pubkey).status.success());
}
