//! `check` and `run` refuse weak secrets: empty ones, placeholders, the values this
//! repository publishes (the quick start, scripts) and short HMAC keys or admin
//! tokens. The repository's example configuration (`example = true`, on loopback)
//! keeps working with the quick start's demo values and says so in one note.

use std::path::Path;
use std::process::{Command, Output};

use crate::helpers::*;

/// The repository's configuration as shipped (secrets as `${VAR}` references), in `dir`.
fn repo_config(dir: &Path) {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    for sub in ["config", "connectors", "mappings"] {
        copy_tree(&repo.join(sub), &dir.join(sub));
    }
}

/// `NAME=value` pairs of the lines in `text` that `line_filter` keeps.
fn assignments(text: &str, line_filter: impl Fn(&str) -> Option<&str>) -> Vec<(String, String)> {
    text.lines()
        .filter_map(|l| line_filter(l.trim()))
        .flat_map(|l| l.split_whitespace())
        .filter_map(|w| w.split_once('='))
        .filter(|(k, _)| !k.is_empty() && k.chars().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_'))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

/// The example's demo secrets (`config/demo-secrets.toml`) as `NAME=value` pairs.
fn readme_exports() -> Vec<(String, String)> {
    let file = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("config/demo-secrets.toml")).unwrap();
    let table: toml::Table = toml::from_str(&file).unwrap();
    let vars: Vec<(String, String)> = table.iter().map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned())).collect();
    assert_eq!(vars.len(), 9, "{vars:?}");
    vars
}

fn orderbridge(args: &[&str], dir: &Path, env: &[(String, String)]) -> Output {
    let mut cmd = Command::new(bin());
    cmd.env_clear().args(args).arg("--config-dir").arg(dir);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn with(env: &[(String, String)], name: &str, value: &str) -> Vec<(String, String)> {
    env.iter().map(|(k, v)| (k.clone(), if k == name { value.to_owned() } else { v.clone() })).collect()
}

#[test]
fn the_example_configuration_takes_the_readme_and_test_script_values_with_one_note() {
    let dir = tempfile::tempdir().unwrap();
    repo_config(dir.path());
    let script = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/test.sh")).unwrap();
    let start = script.find("== orderbridge check on the example configuration").unwrap();
    let end = start + script[start..].find("cargo run --locked -q -- check").unwrap();
    let script_vars = assignments(&script[start..end], |l| Some(l.trim_end_matches('\\')));
    assert_eq!(script_vars.len(), 9, "{script_vars:?}");
    // The demo secrets from the environment, from the script, and from nowhere (the
    // quick start's first command: `config/demo-secrets.toml`).
    for env in [readme_exports(), script_vars, Vec::new()] {
        let out = orderbridge(&["check"], dir.path(), &env);
        let text = stdout(&out);
        assert_eq!(out.status.code(), Some(0), "{text}");
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "the note, the review warning, the count: {text}");
        assert!(
            lines[0].contains("config/orderbridge.toml:")
                && lines[0].contains("note: this is the example configuration")
        );
        assert!(
            lines[0].contains("9 published or short secrets accepted") && lines[0].contains("${DEMO_CRM_SECRET:-demo}")
        );
        assert!(lines[0].contains("DEMO VALUES from config/demo-secrets.toml"), "{text}");
        assert!(lines[2].ends_with("files checked, 0 problems"), "{text}");
    }
}

#[test]
fn outside_the_example_published_short_and_empty_secrets_are_refused_at_their_line() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    repo_config(d);
    // The subject of the test, and lines are counted: an edit of the text itself.
    replace_in_file(d, "config/orderbridge.toml", &[("\nexample = true\n", "\n")]);
    let line_of = |file: &str, needle: &str| {
        let t = std::fs::read_to_string(d.join(file)).unwrap();
        t[..t.find(needle).unwrap()].matches('\n').count() + 1
    };
    let at = |file: &str, needle: &str| format!("{}:{}:", d.join(file).display(), line_of(file, needle));

    // The quick start's demo values: each refused at its line.
    let readme = readme_exports();
    let out = orderbridge(&["check"], d, &readme);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(78), "{text}");
    for (file, needle, reference) in [
        ("config/orderbridge.toml", "admin_token =", "${ORDERBRIDGE_ADMIN_TOKEN:-demo}"),
        ("config/orderbridge.toml", "secret = \"${ORDERBRIDGE_LINK_SECRET", "${ORDERBRIDGE_LINK_SECRET:-demo}"),
        ("connectors/demo-crm.toml", "secret =", "${DEMO_CRM_SECRET:-demo}"),
        ("connectors/demo-erp.toml", "token =", "${DEMO_ERP_TOKEN:-demo}"),
        ("connectors/demo-finance.toml", "secret =", "${DEMO_FINANCE_SECRET:-demo}"),
    ] {
        let want = format!("secret {reference} is a demo value from config/demo-secrets.toml");
        assert!(
            text.lines().any(|l| l.starts_with(&at(file, needle)) && l.contains(&want)),
            "no `{want}` at {}:\n{text}",
            at(file, needle)
        );
    }
    assert!(text.trim_end().ends_with("9 problems"), "{text}");
    for (_, v) in &readme {
        assert!(!text.contains(v.as_str()), "a secret value in the output: {v}");
    }

    // Short keys: the admin token and a Standard Webhooks key (16 bytes).
    let short_token = "9f86d081884c7d659a2feaa0c55ad015";
    let env = with(&readme, "ORDERBRIDGE_ADMIN_TOKEN", &short_token[..20]);
    let env = with(&env, "DEMO_CRM_SECRET", "whsec_ZmVkY2JhOTg3NjU0MzIxMA==");
    let text = stdout(&orderbridge(&["check"], d, &env));
    assert!(
        text.contains("secret ${ORDERBRIDGE_ADMIN_TOKEN:-demo} is 20 bytes; an admin token needs at least 32"),
        "{text}"
    );
    assert!(
        text.contains(
            "secret ${DEMO_CRM_SECRET:-demo} is 16 bytes; a Standard Webhooks key (after whsec_, decoded) needs at least 24"
        ),
        "{text}"
    );

    // `run` refuses to start on the same problems.
    let out = orderbridge(&["run"], d, &readme);
    assert_eq!(out.status.code(), Some(78));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("secret ${ORDERBRIDGE_ADMIN_TOKEN:-demo} is a demo value from config/demo-secrets.toml"),
        "{err}"
    );
    // With no variable set, the demo values fall back from the file: refused alike.
    let text = stdout(&orderbridge(&["check"], d, &[]));
    assert!(text.contains("secret ${DEMO_ERP_TOKEN:-demo} is a demo value from config/demo-secrets.toml"), "{text}");
    assert!(text.trim_end().ends_with("9 problems"), "{text}");
}

#[test]
fn an_empty_secret_file_is_refused_even_in_the_example() {
    // An empty `file:` secret would be an empty HMAC key: anyone could sign.
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    repo_config(d);
    std::fs::create_dir_all(d.join("secrets")).unwrap();
    std::fs::write(d.join("secrets/empty"), "\n").unwrap();
    std::fs::write(
        d.join("connectors/git-hooks.toml"),
        "kind = \"rest\"\n\n[webhook]\nsignature = \"github\"\nsecret = \"file:secrets/empty\"\nmapping = \"demo-crm\"\n",
    )
    .unwrap();
    let out = orderbridge(&["check"], d, &readme_exports());
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(78), "{text}");
    assert!(text.contains("git-hooks.toml:5:10: secret file:secrets/empty is empty"), "{text}");
}

#[test]
fn the_deploy_env_files_placeholders_are_refused_until_replaced() {
    let dir = tempfile::tempdir().unwrap();
    repo_config(dir.path());
    let file =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/orderbridge.env.example")).unwrap();
    let env = assignments(&file, |l| (!l.starts_with('#')).then_some(l));
    assert!(env.iter().any(|(k, v)| k == "ORDERBRIDGE__EXAMPLE" && v == "false"), "{env:?}");
    let out = orderbridge(&["check"], dir.path(), &env);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(78), "{text}");
    let secrets: Vec<&(String, String)> = env.iter().filter(|(k, _)| !k.starts_with("ORDERBRIDGE__")).collect();
    assert_eq!(secrets.len(), 9);
    for (name, _) in secrets {
        let want = format!("secret ${{{name}:-demo}} still holds a placeholder from deploy/orderbridge.env.example");
        assert!(text.contains(&want), "missing `{want}` in:\n{text}");
    }
    // Replaced by real values, the same file passes.
    let real = |n: u64| format!("{:064x}", n.wrapping_mul(0x9e37_79b9_7f4a_7c15));
    let webhook = "whsec_c2VjcmV0LWtleS1mb3ItdGhlLWRlbW8tY3JtLTAxMjM0NTY3ODk=";
    let env: Vec<(String, String)> = env
        .iter()
        .enumerate()
        .map(|(i, (k, v))| {
            let v = match k.as_str() {
                k if k.starts_with("ORDERBRIDGE__") => v.clone(),
                k if k.ends_with("_SECRET") && k != "ORDERBRIDGE_LINK_SECRET" => webhook.to_owned(),
                _ => real(i as u64 + 1),
            };
            (k.clone(), v)
        })
        .collect();
    let out = orderbridge(&["check"], dir.path(), &env);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    assert!(!stdout(&out).contains("note:"), "not the example any more: {}", stdout(&out));
}
