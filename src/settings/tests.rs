//! Unit tests of `orderbridge.toml` parsing: each section's checks and their located messages.

use super::site::DEFAULT_COLOR;
use super::*;

fn parse(text: &str) -> Result<Settings, Vec<Diagnostic>> {
    let raw: RawSettings = toml::from_str(text).unwrap();
    raw.parse(Path::new("."), Path::new("orderbridge.toml"), text, false)
}

#[test]
fn intake_max_amount_is_read_per_currency_and_checked_with_its_line() {
    let s = parse("[intake.max_amount]\nCNY = \"10000000000\"\nusd = \"1500000000.50\"\n").unwrap();
    let limits: Vec<String> = s.intake.max_amount.iter().map(|(c, d)| format!("{c} {d}")).collect();
    assert_eq!(limits, ["CNY 10000000000", "USD 1500000000.50"]);
    assert!(parse("").unwrap().intake.max_amount.is_empty(), "no limits unless configured");

    let text = "[intake.max_amount]\nCNY = \"ten billion\"\nUSD = \"0\"\nEURO = \"5\"\nJPY = \"1e9\"\n";
    let problems: Vec<String> = parse(text).unwrap_err().iter().map(ToString::to_string).collect();
    assert_eq!(
        problems,
        [
            "orderbridge.toml:2:7: `ten billion` is not a decimal amount; write the limit as a decimal string, e.g. \"10000000000\"",
            "orderbridge.toml:4:8: `EURO` is not an ISO 4217 currency code (three letters, e.g. CNY)",
            "orderbridge.toml:5:7: `1e9` is not a decimal amount; write the limit as a decimal string, e.g. \"10000000000\"",
            "orderbridge.toml:3:7: the limit for USD must be positive, got `0`",
        ]
    );
    // A number instead of a string is a shape error, located by toml.
    assert!(toml::from_str::<RawSettings>("[intake.max_amount]\nCNY = 10000000000\n").is_err());
}

#[test]
fn server_timeouts_have_defaults_and_zero_is_refused_with_its_line() {
    let s = parse("").unwrap();
    assert_eq!(
        (s.header_read_timeout, s.idle_timeout, s.body_timeout, s.queue_timeout, s.request_timeout),
        (
            Duration::from_secs(10),
            Duration::from_secs(60),
            Duration::from_secs(30),
            Duration::from_secs(10),
            Duration::from_secs(30)
        )
    );
    assert_eq!(s.admin_listen, "127.0.0.1:8081".parse().unwrap());

    let text = "[server]\nheader_read_timeout_secs = 0\nidle_timeout_secs = 0\nbody_timeout_secs = 0\nrequest_timeout_secs = 5\nqueue_timeout_secs = 6\n";
    let problems: Vec<String> = parse(text).unwrap_err().iter().map(ToString::to_string).collect();
    assert_eq!(
        problems,
        [
            "orderbridge.toml:2:28: must be at least 1 (seconds); there is no \"no limit\"",
            "orderbridge.toml:3:21: must be at least 1 (seconds); there is no \"no limit\"",
            "orderbridge.toml:4:21: must be at least 1 (seconds); there is no \"no limit\"",
            "orderbridge.toml:6:22: must not exceed request_timeout_secs (5): the wait for a slot is part of the request's time",
        ]
    );
}

#[test]
fn the_admin_listener_is_an_address_with_a_port_of_its_own() {
    let s = parse("[server.admin]\nhost = \"10.0.0.5\"\nport = 9443\n").unwrap();
    assert_eq!(s.admin_listen, "10.0.0.5:9443".parse().unwrap());
    let problems: Vec<String> = parse("[server]\nport = 8080\n[server.admin]\nhost = \"admin.local\"\nport = 8080\n")
        .unwrap_err()
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(problems.len(), 2, "{problems:?}");
    assert!(problems[0].contains("`admin.local` is not an IP address"), "{problems:?}");
    assert!(problems[1].contains("needs a port of its own, not server.port (8080)"), "{problems:?}");
    // Off loopback, the example's demo secrets are not accepted any more.
    let s = parse("example = true\n[server.admin]\nhost = \"0.0.0.0\"\n").unwrap();
    assert!(s.secret_policy.example.is_none() && s.secret_policy.example_off_loopback);
}

#[test]
fn the_pages_logo_and_colour_are_read_and_checked() {
    let s = parse("").unwrap();
    assert_eq!((s.site_color.as_str(), s.site_logo.is_none()), (DEFAULT_COLOR, true));
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("logo.svg"), "<svg xmlns=\"http://www.w3.org/2000/svg\"/>").unwrap();
    std::fs::write(dir.path().join("logo.gif"), "GIF89a").unwrap();
    let parse_in = |text: &str| {
        let raw: RawSettings = toml::from_str(text).unwrap();
        raw.parse(dir.path(), Path::new("orderbridge.toml"), text, false)
    };
    let s = parse_in("[site]\nlogo = \"logo.svg\"\ncolor = \"#8a1c2b\"\n").unwrap();
    assert_eq!(s.site_color, "#8a1c2b");
    assert_eq!(s.site_logo.as_ref().map(|l| l.content_type), Some("image/svg+xml"));
    let problems: Vec<String> = parse_in("[site]\nlogo = \"logo.gif\"\ncolor = \"red\"\n")
        .unwrap_err()
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(problems.len(), 2, "{problems:?}");
    assert!(problems[0].contains("`red` is not a colour written #rrggbb"), "{problems:?}");
    assert!(problems[1].contains("a logo is an .svg, .png, .jpg or .webp file"), "{problems:?}");
    assert!(parse_in("[site]\nlogo = \"missing.png\"\n").is_err());
}

#[test]
fn queue_alert_sizes_have_defaults_and_must_be_positive() {
    let alerts = parse("").unwrap().dispatcher.queue_alerts;
    assert_eq!(alerts, QueueAlerts { outbox: 100_000, dead_letters: 1_000, unmatched_payments: 1_000 });
    assert_eq!(alerts, QueueAlerts::default());
    assert_eq!(parse("[limits]\noutbox_alert = 5000\n").unwrap().dispatcher.queue_alerts.outbox, 5000);
    let problems: Vec<String> =
        parse("[limits]\ndead_letters_alert = 0\n").unwrap_err().iter().map(ToString::to_string).collect();
    assert_eq!(problems, ["orderbridge.toml:2:22: must be at least 1"]);
    assert!(toml::from_str::<RawSettings>("[limits]\noutbox = 5\n").is_err(), "unknown keys are refused");
}

#[test]
fn the_background_threads_run_ten_nice_steps_down_unless_told_and_stay_in_range() {
    assert_eq!(parse("").unwrap().dispatcher.background_nice, 10);
    assert_eq!(parse("[dispatcher]\nbackground_nice = 0\n").unwrap().dispatcher.background_nice, 0);
    let problems: Vec<String> =
        parse("[dispatcher]\nbackground_nice = 20\n").unwrap_err().iter().map(ToString::to_string).collect();
    assert_eq!(problems, ["orderbridge.toml:2:19: must be 0 to 19, got 20"]);
}

#[test]
fn the_dispatcher_holds_back_under_full_intake_load_unless_told_not_to() {
    let d = parse("").unwrap().dispatcher;
    assert_eq!((d.busy_intake, d.busy_concurrency, d.concurrency), (Some(16), 2, 16));
    assert_eq!(parse("[dispatcher]\nbusy_intake = 0\n").unwrap().dispatcher.busy_intake, None, "0: never");
    let one = parse("[dispatcher]\nconcurrency = 1\n").unwrap().dispatcher;
    assert_eq!(one.busy_concurrency, 1, "unset, it is never more than concurrency");
    for (text, problem) in [
        ("[dispatcher]\nbusy_concurrency = 0\n", "orderbridge.toml:2:20: must be 1 to concurrency (16), got 0"),
        (
            "[dispatcher]\nconcurrency = 4\nbusy_concurrency = 5\n",
            "orderbridge.toml:3:20: must be 1 to concurrency (4), got 5",
        ),
    ] {
        let problems: Vec<String> = parse(text).unwrap_err().iter().map(ToString::to_string).collect();
        assert_eq!(problems, [problem], "{text}");
    }
}

#[test]
fn the_postgres_backend_needs_a_url_reference_and_never_echoes_it() {
    let dir = tempfile::tempdir().unwrap();
    let url = dir.path().join("url");
    let parse_in = |text: &str| {
        let raw: RawSettings = toml::from_str(text).unwrap();
        raw.parse(dir.path(), Path::new("orderbridge.toml"), text, true)
    };
    let problems = |text: &str| -> Vec<String> {
        parse_in(text).err().unwrap_or_default().iter().map(ToString::to_string).collect()
    };
    std::fs::write(&url, "postgres://orderbridge:s3cret-pw@db.internal:5432/orderbridge\n").unwrap();
    let ok = "[store]\nbackend = \"postgres\"\nurl = \"file:url\"\npool_size = 8\n";
    let s = parse_in(ok).unwrap_or_else(|ps| panic!("{ps:?}"));
    let pg = s.store.postgres.expect("postgres options");
    assert_eq!((s.store.backend, pg.max_connections), (crate::store::Backend::Postgres, 8));
    assert!(!format!("{pg:?}").contains("s3cret-pw"), "the URL is a secret");

    let missing = problems("[store]\nbackend = \"postgres\"\n");
    assert!(missing.iter().any(|p| p.contains("store.url") || p.contains("required")), "{missing:?}");
    let inline = problems("[store]\nbackend = \"postgres\"\nurl = \"postgres://u:pw@h/db\"\n");
    assert!(inline.iter().any(|p| p.contains("a secret must be a reference")), "{inline:?}");
    assert!(!inline.concat().contains("u:pw"), "{inline:?}");
    std::fs::write(&url, "mysql://u:s3cret-pw@h/db").unwrap();
    let other = problems(ok);
    assert!(other.iter().any(|p| p.contains("not a PostgreSQL URL")), "{other:?}");
    assert!(!other.concat().contains("s3cret-pw"), "{other:?}");
    let embedded = problems("[store]\nurl = \"file:url\"\n");
    assert!(embedded.iter().any(|p| p.contains("only for backend")), "{embedded:?}");
    let zero = problems("[store]\npool_size = 0\nacquire_timeout_secs = 0\n");
    assert_eq!(zero.len(), 2, "{zero:?}");
}

#[test]
fn secret_refs() {
    assert_eq!(SecretRef::parse("${A_B}"), Ok(SecretRef::Env("A_B".into())));
    assert_eq!(SecretRef::parse("file:/run/secrets/x"), Ok(SecretRef::File("/run/secrets/x".into())));
    assert!(SecretRef::parse("hunter2").is_err());
    assert!(SecretRef::parse("${}").is_err());
    assert_eq!(SecretRef::parse("${A_B:-demo}"), Ok(SecretRef::EnvOrDemo("A_B".into())));
    assert!(SecretRef::parse("${A_B:-other}").is_err());
    // Unset: the value in config/demo-secrets.toml under the configuration directory.
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("config")).unwrap();
    std::fs::write(dir.path().join("config/demo-secrets.toml"), "ORDERBRIDGE_TEST_SURELY_UNSET = \"demo-x\"\n")
        .unwrap();
    let demo = SecretRef::EnvOrDemo("ORDERBRIDGE_TEST_SURELY_UNSET".into()).resolve(dir.path()).unwrap();
    assert_eq!(secrecy::ExposeSecret::expose_secret(&demo), "demo-x");
    let e = SecretRef::EnvOrDemo("ORDERBRIDGE_TEST_OTHER_UNSET".into()).resolve(dir.path()).unwrap_err();
    assert!(e.contains("has no string `ORDERBRIDGE_TEST_OTHER_UNSET`"), "{e}");
    let e = SecretRef::Env("ORDERBRIDGE_TEST_SURELY_UNSET".into()).resolve(Path::new(".")).unwrap_err();
    assert!(e.contains("ORDERBRIDGE_TEST_SURELY_UNSET"));
}

#[test]
fn archive_has_defaults_and_a_zero_is_refused_with_its_line() {
    let s = parse("").unwrap();
    assert!(s.archive.enabled);
    assert_eq!((s.archive.after_days, s.archive.retain_years), (90, 10));
    assert_eq!(s.archive.dir, Path::new("./data/archive"), "beside the store's rows by default");
    let s = parse("[archive]\nenabled = false\npath = \"/srv/archive\"\n").unwrap();
    assert!(!s.archive.enabled);
    assert_eq!(s.archive.dir, Path::new("/srv/archive"));

    let problems: Vec<String> =
        parse("[archive]\nafter_days = 0\nretain_years = 0\n").unwrap_err().iter().map(ToString::to_string).collect();
    assert_eq!(
        problems,
        [
            "orderbridge.toml:2:14: must be at least 1 (set archive.enabled = false to keep every order hot)",
            "orderbridge.toml:3:16: must be at least 1",
        ]
    );
}

#[test]
fn console_limits_have_defaults_and_zero_is_refused_and_the_admin_token_can_be_switched_off() {
    let s = parse("").unwrap();
    assert_eq!(s.console.idle, chrono::Duration::minutes(30));
    assert_eq!(s.console.absolute, chrono::Duration::hours(12));
    assert_eq!(s.console.sign_in_link, chrono::Duration::minutes(15));
    let problems = parse("[console]\nsession_idle_minutes = 0\n").unwrap_err();
    assert!(problems.iter().any(|p| p.line == 2 && p.message.contains("at least 1")), "{problems:?}");
    // Off: the reference is not even read (this variable is surely unset).
    let s =
        parse("[server]\nadmin_token = \"${ORDERBRIDGE_TEST_SURELY_UNSET}\"\nadmin_token_enabled = false\n").unwrap();
    assert!(s.admin_token.is_none());
}

#[test]
fn console_oidc_reads_its_secret_by_reference_and_refuses_plain_http_off_loopback() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("oidc-secret"), "a-client-secret-of-the-provider-7d1f\n").unwrap();
    let parse_in = |text: &str| {
        let raw: RawSettings = toml::from_str(text).unwrap();
        raw.parse(dir.path(), Path::new("orderbridge.toml"), text, false)
    };
    assert!(parse_in("").unwrap().oidc.is_none(), "off unless configured");
    let s = parse_in(
        "[console.oidc]\nissuer = \"https://login.bank.example/realms/staff\"\nclient_id = \"ob\"\nclient_secret = \"file:oidc-secret\"\n",
    )
    .unwrap();
    let o = s.oidc.unwrap();
    assert_eq!((o.name.as_str(), o.claim.as_str(), o.redirect_url.as_deref()), ("login.bank.example", "email", None));
    assert_eq!(secrecy::ExposeSecret::expose_secret(&o.client_secret), "a-client-secret-of-the-provider-7d1f");
    assert!(format!("{o:?}").contains("REDACTED") && !format!("{o:?}").contains("7d1f"));
    let local = "[console.oidc]\nissuer = \"http://127.0.0.1:9400\"\nclient_id = \"ob\"\nclient_secret = \"file:oidc-secret\"\n";
    assert!(parse_in(local).is_ok(), "plain http on loopback (a provider on this machine)");

    let text = "[console.oidc]\nissuer = \"http://login.bank.example\"\nclient_id = \"\"\nclient_secret = \"the-secret-itself\"\nredirect_url = \"ftp://x\"\n";
    let problems: Vec<String> = parse_in(text).unwrap_err().iter().map(ToString::to_string).collect();
    assert_eq!(
        problems,
        [
            "orderbridge.toml:2:10: `http://login.bank.example` must be an https URL (plain http only on loopback)",
            "orderbridge.toml:5:16: `ftp://x` must be an https URL (plain http only on loopback)",
            "orderbridge.toml:3:13: `client_id` must not be empty",
            "orderbridge.toml:4:17: a secret must be a reference, `${ENV_NAME}` or `file:PATH`, never the value itself",
        ]
    );
    assert!(toml::from_str::<RawSettings>("[console.oidc]\nissuer = \"https://a\"\nclient = \"ob\"\n").is_err());
}
