//! `orderbridge check` on broken files names file, line and column, and exits 78.

use std::path::Path;
use std::process::Command;

use crate::helpers::*;

fn check(dir: &Path) -> (i32, String) {
    let out = Command::new(bin())
        .args(["check", "--config-dir"])
        .arg(dir)
        .env_remove("ORDERBRIDGE_TEST_MISSING_SECRET")
        .output()
        .unwrap();
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Replaces `from` by `to` in a file and returns the 1-based line of the change.
fn edit(dir: &Path, file: &str, from: &str, to: &str) -> usize {
    let mut line = 0;
    edit_file(dir, file, |text| {
        let at = text.find(from).unwrap_or_else(|| panic!("{file} has no `{from}`"));
        line = text[..at].matches('\n').count() + 1;
        text.replacen(from, to, 1)
    });
    line
}

async fn config_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path(), "127.0.0.1:9".parse().unwrap());
    dir
}

#[tokio::test]
async fn the_example_configuration_is_clean() {
    let dir = config_dir().await;
    let (code, out) = check(dir.path());
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!((code, lines.len(), lines.last().copied()), (0, 3, Some("43 files checked, 0 problems")), "{out}");
    // Review of rule changes is off in the example, and it says so.
    assert!(lines[1].contains("warning: `rules.require_review = false` is a development setting"), "{out}");
    // The example's own secrets (test values here) are accepted, and it says so.
    let note = format!("{}:", dir.path().join("config/orderbridge.toml").display());
    assert!(lines[0].starts_with(&note) && lines[0].contains("note: this is the example configuration"), "{out}");
}

#[tokio::test]
async fn every_problem_is_reported_with_file_line_and_column() {
    let dir = config_dir().await;
    let d = dir.path();
    let l_type = edit(d, "config/orderbridge.toml", "max_body_bytes = 1048576", "max_body_bytes = \"1 MiB\"");
    let l_unknown = edit(d, "connectors/demo-crm.toml", "tolerance_secs = 300", "tolerence_secs = 300");
    let l_conn = edit(d, "mappings/demo-crm.toml", "connector = \"demo-crm\"", "connector = \"demo-crn\"");
    let l_secret = edit(
        d,
        "connectors/demo-erp.toml",
        "token = \"file:secrets/demo-erp\"",
        "token = \"${ORDERBRIDGE_TEST_MISSING_SECRET}\"",
    );
    let l_rule = edit(d, "config/rules.toml", "operation = \"create_order\"", "operation = \"create_ordr\"");
    let (code, out) = check(d);
    assert_eq!(code, 78, "{out}");
    let p = |f: &str| d.join(f).display().to_string();
    let expect = [
        format!("{}:{l_type}:18: invalid type: string \"1 MiB\", expected usize", p("config/orderbridge.toml")),
        format!("{}:{l_unknown}:1: unknown field `tolerence_secs`", p("connectors/demo-crm.toml")),
        format!("{}:{l_conn}:13: connector `demo-crn` does not exist", p("mappings/demo-crm.toml")),
        format!(
            "{}:{l_secret}:9: secret ${{ORDERBRIDGE_TEST_MISSING_SECRET}}: environment variable ORDERBRIDGE_TEST_MISSING_SECRET is not set",
            p("connectors/demo-erp.toml")
        ),
    ];
    for e in &expect {
        assert!(out.lines().any(|l| l.starts_with(e.as_str())), "missing `{e}` in:\n{out}");
    }
    // The rules file refers to an operation; its connector failed to load, so the
    // cross-check waits until the connector files are fixed. Fix them and re-check.
    edit(d, "connectors/demo-erp.toml", "${ORDERBRIDGE_TEST_MISSING_SECRET}", "file:secrets/demo-erp");
    edit(d, "connectors/demo-crm.toml", "tolerence_secs", "tolerance_secs");
    edit(d, "mappings/demo-crm.toml", "demo-crn", "demo-crm");
    let (_, out) = check(d);
    let rule_line = format!("{}:", p("config/rules.toml"));
    let line = out.lines().find(|l| l.starts_with(&rule_line)).unwrap_or_else(|| panic!("no rules problem in:\n{out}"));
    assert!(
        line.contains("has no operation `create_ordr` (it has: create_order, create_task, store_document)"),
        "{line}"
    );
    assert!(line.starts_with(&format!("{rule_line}{}:", l_rule - 3)), "points at the [[effects]] table: {line}");
    assert!(out.trim_end().ends_with("43 files checked, 2 problems"), "{out}");
}

#[tokio::test]
async fn a_syntax_error_names_its_line() {
    let dir = config_dir().await;
    let line = edit(dir.path(), "mappings/demo-crm.toml", "[fields]", "[fields");
    let (code, out) = check(dir.path());
    assert_eq!(code, 78);
    let prefix = format!("{}:{line}:", dir.path().join("mappings/demo-crm.toml").display());
    assert!(out.lines().any(|l| l.starts_with(&prefix)), "{out}");
}

#[tokio::test]
async fn run_refuses_to_start_on_the_same_problems() {
    let dir = config_dir().await;
    edit(dir.path(), "config/orderbridge.toml", "format = \"text\"", "format = \"xml\"");
    let out = Command::new(bin()).args(["run", "--config-dir"]).arg(dir.path()).output().unwrap();
    assert_eq!(out.status.code(), Some(78));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("`xml` is not a log format"), "{err}");
}

#[tokio::test]
async fn a_bad_environment_override_is_named() {
    let dir = config_dir().await;
    for (var, value, expect) in [
        ("ORDERBRIDGE__SERVER__PORT", "eighty", "env ORDERBRIDGE__SERVER__PORT: invalid type: string \"eighty\""),
        ("ORDERBRIDGE__SERVER__PROT", "80", "env ORDERBRIDGE__SERVER__PROT: unknown field `prot`"),
    ] {
        let out = Command::new(bin()).args(["check", "--config-dir"]).arg(dir.path()).env(var, value).output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(78), "{text}");
        assert!(text.lines().any(|l| l.starts_with(expect)), "{text}");
    }
}

#[tokio::test]
async fn an_unknown_signature_scheme_points_at_its_value() {
    let dir = config_dir().await;
    let line = edit(dir.path(), "connectors/demo-crm.toml", "signature = \"standard_webhooks\"", "signature = \"md5\"");
    let (code, out) = check(dir.path());
    assert_eq!(code, 78);
    let expect =
        format!("{}:{line}:13: unknown signature scheme `md5`", dir.path().join("connectors/demo-crm.toml").display());
    assert!(out.lines().any(|l| l.starts_with(&expect)), "{out}");
}

#[tokio::test]
async fn mail_configuration_is_cross_checked() {
    let dir = tempfile::tempdir().unwrap();
    write_mail_config(dir.path(), "127.0.0.1:9".parse().unwrap(), 2525);
    let d = dir.path();
    let (code, out) = check(d);
    assert_eq!(code, 0, "{out}");
    let p = |f: &str| d.join(f).display().to_string();
    let expect_all = |out: &str, expect: &[String]| {
        for e in expect {
            assert!(out.lines().any(|l| l.starts_with(e.as_str())), "missing `{e}` in:\n{out}");
        }
    };

    // Each file's own problems, located.
    let l_person = edit(d, "config/directory.toml", "email = \"chen.jing@bank.example\"", "email = \"chen.jing\"");
    let l_syntax = edit(d, "config/templates/en/survey.txt", "{% endblock %}", "{% endblok %}");
    let l_link =
        edit(d, "config/orderbridge.toml", "secret = \"file:secrets/links\"", "secret = \"file:secrets/nope\"");
    let (code, out) = check(d);
    assert_eq!(code, 78, "{out}");
    expect_all(
        &out,
        &[
            format!("{}:{l_syntax}:", p("config/templates/en/survey.txt")),
            format!("{}:{l_link}:", p("config/orderbridge.toml")),
            format!("{}:{}:1: person `chen.jing`: email", p("config/directory.toml"), l_person - 3),
        ],
    );
    assert!(out.contains("unknown statement endblok"), "{out}");
    assert!(out.contains("secret file") && !out.contains(LINK_SECRET), "{out}");

    // Once those are fixed: the rules are checked against templates and the directory.
    edit(d, "config/directory.toml", "email = \"chen.jing\"", "email = \"chen.jing@bank.example\"");
    edit(d, "config/templates/en/survey.txt", "{% endblok %}", "{% endblock %}");
    edit(d, "config/orderbridge.toml", "file:secrets/nope", "file:secrets/links");
    let l_template =
        edit(d, "config/notifications.toml", "template = \"order_flagged\"", "template = \"order_flaged\"");
    let l_role = edit(d, "config/notifications.toml", "\"role:after_sales\"", "\"role:aftersales\"");
    let l_chain = edit(d, "config/rules.toml", "chain = [\"line_supervisor\"]", "chain = [\"line_supervisr\"]");
    let (code, out) = check(d);
    assert_eq!(code, 78, "{out}");
    expect_all(
        &out,
        &[
            format!(
                "{}:{}:1: notify: template `order_flaged` does not exist",
                p("config/notifications.toml"),
                l_template - 2
            ),
            format!(
                "{}:{}:1: notify: nobody in config/directory.toml has role `aftersales`",
                p("config/notifications.toml"),
                l_role - 3
            ),
            format!(
                "{}:{}:1: approval matrix row STANDARD: nobody in config/directory.toml has role `line_supervisr`",
                p("config/rules.toml"),
                l_chain - 3
            ),
        ],
    );
}

/// The vendor examples (examples/connectors, examples/mappings) pass `check` as shipped.
#[tokio::test]
async fn the_vendor_examples_are_clean() {
    let dir = config_dir().await;
    let d = dir.path();
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    for sub in ["connectors", "mappings"] {
        for e in std::fs::read_dir(repo.join(sub)).unwrap() {
            let p = e.unwrap().path();
            std::fs::copy(&p, d.join(sub).join(p.file_name().unwrap())).unwrap();
        }
    }
    let mut cmd = Command::new(bin());
    cmd.args(["check", "--config-dir"]).arg(d);
    for var in VENDOR_SECRETS {
        cmd.env(var, "example-value");
    }
    let out = cmd.output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.ends_with("files checked, 0 problems\n"), "{text}");

    // Without the secrets, each missing one is named at its line.
    let (code, out) = check(d);
    assert_eq!(code, 78);
    for var in ["HUBSPOT_TOKEN", "XERO_CLIENT_SECRET", "STRIPE_SECRET_KEY", "ODOO_API_KEY"] {
        assert!(out.contains(var), "{var} missing from: {out}");
    }
}

#[tokio::test]
async fn an_outbound_mapping_that_reads_a_missing_field_is_found_before_it_runs() {
    let dir = config_dir().await;
    let d = dir.path();
    std::fs::write(
        d.join("mappings/erp-order.toml"),
        "version = \"1\"\nconnector = \"demo-erp\"\ndirection = \"outbound\"\nbody = '''\n{\n  \"customer\": {{ order.customer.name | json }},\n  \"rate\": {{ order.amount.amont | number }}\n}\n'''\n",
    )
    .unwrap();
    let line = edit(
        d,
        "connectors/demo-erp.toml",
        "idempotency_header = \"Idempotency-Key\"",
        "idempotency_header = \"Idempotency-Key\"\nbody = \"erp-orders\"",
    ) + 1;
    let (code, out) = check(d);
    assert_eq!(code, 78, "{out}");
    let p = |f: &str| d.join(f).display().to_string();
    assert!(
        out.contains(&format!(
            "{}:{line}:8: outbound mapping `erp-orders` does not exist",
            p("connectors/demo-erp.toml")
        )),
        "{out}"
    );
    assert!(
        out.contains(&format!("{}:4:8: body: body line 3: undefined value", p("mappings/erp-order.toml"))),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_online_calls_every_health_check_and_the_smtp_server() {
    use axum::routing::get;
    let router = axum::Router::new()
        .route("/health", get(|| async { "ok" }))
        .route("/refused", get(|| async { (axum::http::StatusCode::UNAUTHORIZED, "{\"error\":\"invalid token\"}") }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    let smtp = SmtpServer::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_mail_config(d, addr, smtp.port);
    edit(d, "connectors/demo-erp.toml", "concurrency = 8", "concurrency = 8\n\n[health]\npath = \"/health\"");
    edit(d, "connectors/service-desk.toml", "concurrency = 4", "concurrency = 4\n\n[health]\npath = \"/refused\"");
    let out = Command::new(bin()).args(["check", "--online", "--config-dir"]).arg(d).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(69), "{text}");
    assert!(text.contains("demo-erp: ok (GET /health answered 200)"), "{text}");
    assert!(
        text.contains("service-desk: FAILED: authentication failed: HTTP 401: {\"error\":\"invalid token\"}"),
        "{text}"
    );
    assert!(text.contains("mail: ok (the SMTP server accepted a connection)"), "{text}");
    assert!(text.contains("demo-crm: no health check"), "{text}");
    assert!(!text.contains("desk-token") && !text.contains("erp-token"), "no secret in the report: {text}");

    // With the desk answering, everything is reachable.
    edit(d, "connectors/service-desk.toml", "path = \"/refused\"", "path = \"/health\"");
    let out = Command::new(bin()).args(["check", "--online", "--config-dir"]).arg(d).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.ends_with("every system answered\n"), "{text}");
}

#[tokio::test]
async fn execution_rules_are_cross_checked_with_connectors_and_the_directory() {
    let dir = config_dir().await;
    let d = dir.path();
    let l_task = edit(d, "config/rules.toml", "department = \"credit_operations\"", "department = \"loan_office\"");
    edit(d, "config/rules.toml", "operation = \"create_invoice\"", "operation = \"create_bill\"");
    let (code, out) = check(d);
    assert_eq!(code, 78, "{out}");
    let rules = d.join("config/rules.toml").display().to_string();
    let line = out.lines().find(|l| l.contains("loan_office")).unwrap_or_else(|| panic!("{out}"));
    assert!(line.contains("tasks loan_disbursement: nobody in config/directory.toml has role `loan_office`"), "{line}");
    let at: usize = line.trim_start_matches(&format!("{rules}:")).split(':').next().unwrap().parse().unwrap();
    assert!(at < l_task && at + 8 > l_task, "points at the task's table ({at}, edited {l_task}): {line}");
    assert!(
        out.contains("settlement: connector `demo-finance` has no operation `create_bill` (it has: create_ar_voucher, create_invoice, invoice_status)"),
        "{out}"
    );
}

#[tokio::test]
async fn intake_max_amount_problems_name_their_line_or_variable() {
    let dir = config_dir().await;
    let line = edit(dir.path(), "config/orderbridge.toml", "CNY = \"10000000000\"", "CNY = \"ten billion\"");
    let out = Command::new(bin())
        .args(["check", "--config-dir"])
        .arg(dir.path())
        .env("ORDERBRIDGE__INTAKE__MAX_AMOUNT__USD", "-1")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(78));
    let out = String::from_utf8_lossy(&out.stdout);
    let file = dir.path().join("config/orderbridge.toml").display().to_string();
    assert!(
        out.contains(&format!("{file}:{line}:7: `ten billion` is not a decimal amount")),
        "the file's value, at its line: {out}"
    );
    assert!(
        out.contains("the limit for USD must be positive, got `-1` (set by env ORDERBRIDGE__INTAKE__MAX_AMOUNT__USD)"),
        "the variable's value, named: {out}"
    );
    assert!(out.trim_end().ends_with("43 files checked, 2 problems"), "{out}");

    // A variable overrides the file's limit, like any other key.
    edit(dir.path(), "config/orderbridge.toml", "CNY = \"ten billion\"", "CNY = \"10000000000\"");
    let out = Command::new(bin())
        .args(["check", "--config-dir"])
        .arg(dir.path())
        .env("ORDERBRIDGE__INTAKE__MAX_AMOUNT__CNY", "5000000000")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stdout));
}

#[tokio::test]
async fn a_chain_role_without_decide_approval_in_the_policy_is_a_problem_at_its_level() {
    let dir = config_dir().await;
    let d = dir.path();
    edit(
        d,
        "config/directory.toml",
        "risk_committee = [\"decide_approval\", \"review_flagged\", \"see_reports\"]",
        "risk_committee = [\"review_flagged\", \"see_reports\"]",
    );
    let chain = "chain = [\"line_supervisor\", \"branch_manager\", \"risk_committee\"]";
    let rules = std::fs::read_to_string(d.join("config/rules.toml")).unwrap();
    let l_chain = rules[..rules.find(chain).expect("the VERY-LARGE chain")].matches('\n').count() + 1;
    let col = chain.find("\"risk_committee\"").unwrap() + 1;
    let (code, out) = check(d);
    assert_eq!(code, 78, "{out}");
    let expected = format!(
        "{}:{l_chain}:{col}: approval matrix row VERY-LARGE, level 3: role `risk_committee` is not granted \
         `decide_approval` in the policy table ([policy] in config/directory.toml), so its holders can never approve",
        d.join("config/rules.toml").display()
    );
    assert!(out.lines().any(|l| l == expected), "missing `{expected}` in:\n{out}");
    // Only that problem: the roles that keep the grant are fine.
    assert_eq!(out.lines().filter(|l| l.contains("decide_approval")).count(), 1, "{out}");
}
