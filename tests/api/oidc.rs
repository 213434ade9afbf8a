//! The console's sign-in through OpenID Connect. In headless Chromium against a real
//! provider (panva's certified `oidc-provider`, tests/support/oidc-provider.mjs, with
//! its development login and consent forms): the sign-in page's button, the
//! provider's forms, the inbox of the person signed in, sign-out; an answer with a
//! state this browser did not start, and a person the directory does not know, are
//! refused. Over plain HTTP against a provider played by a small axum server that
//! signs what the test asks: forged, altered, unsigned, replayed and misaddressed ID
//! tokens are refused, the code exchange carries PKCE's verifier and the client's
//! credentials, a provider that is down gets a page and is tried again later.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::HeaderMap;
use axum::routing::{get, post};
use base64::Engine as _;
use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair as _};
use serde_json::{Value, json};

use crate::helpers::*;
use crate::screens::{Browser, WIDTHS, problems};

const NODE_MODULES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/target/node/node_modules");
const PROVIDER_SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/support/oidc-provider.mjs");
const CLIENT_ID: &str = "orderbridge-console";
const CLIENT_SECRET: &str = "oidc-test-client-secret-5f2c9e81d4b7a036";
const PROVIDER_NAME: &str = "Bank SSO";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// The daemon, its console signing in through the provider at `issuer`.
async fn daemon(issuer: &str) -> TestApp {
    let issuer = issuer.to_owned();
    TestApp::builder()
        .files(move |dir| {
            std::fs::write(dir.join("secrets/oidc"), CLIENT_SECRET).unwrap();
            set_in_file(
                dir,
                &[
                    ("console.oidc.issuer", issuer.as_str().into()),
                    ("console.oidc.client_id", CLIENT_ID.into()),
                    ("console.oidc.client_secret", "file:secrets/oidc".into()),
                    ("console.oidc.name", PROVIDER_NAME.into()),
                ],
            );
        })
        .start()
        .await
}

/// `oidc-provider` on a loopback port, with one client whose redirect URI is
/// `redirect`; stopped on drop.
struct Provider {
    child: Child,
    issuer: String,
}

impl Provider {
    async fn start(port: u16, redirect: &str) -> Provider {
        assert!(
            Path::new(NODE_MODULES).join("oidc-provider").exists(),
            "oidc-provider is not installed in {NODE_MODULES}: run scripts/test.sh, which installs it"
        );
        let log = tempfile::NamedTempFile::new().unwrap();
        let child = Command::new("node")
            .arg(PROVIDER_SCRIPT)
            .env("ORDERBRIDGE_NODE_MODULES", NODE_MODULES)
            .env("OIDC_PORT", port.to_string())
            .env("OIDC_CLIENT_ID", CLIENT_ID)
            .env("OIDC_CLIENT_SECRET", CLIENT_SECRET)
            .env("OIDC_REDIRECT_URI", redirect)
            .stdout(Stdio::from(log.reopen().unwrap()))
            .stderr(Stdio::from(log.reopen().unwrap()))
            .spawn()
            .expect("node starts (scripts/test.sh needs Node.js for Prism too)");
        let issuer = format!("http://127.0.0.1:{port}");
        let mut p = Provider { child, issuer };
        let discovery = format!("{}/.well-known/openid-configuration", p.issuer);
        for _ in 0..600 {
            if let Some(status) = p.child.try_wait().unwrap() {
                panic!("oidc-provider exited ({status}): {}", std::fs::read_to_string(log.path()).unwrap_or_default());
            }
            if let Ok(r) = client().get(&discovery).send().await
                && r.status().is_success()
            {
                return p;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        panic!("oidc-provider did not start: {}", std::fs::read_to_string(log.path()).unwrap_or_default());
    }
}

impl Drop for Provider {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The browser's steps, as a person takes them.
impl Browser {
    async fn open(&self, url: &str) {
        self.call(reqwest::Method::POST, "/url", Some(json!({"url": url}))).await;
    }

    async fn run(&self, script: &str) -> Value {
        self.call(reqwest::Method::POST, "/execute/sync", Some(json!({"script": script, "args": []}))).await
    }

    /// Waits until `cond` (a JavaScript expression) holds on a loaded page.
    async fn until(&self, what: &str, cond: &str) {
        let script = format!("return document.readyState === 'complete' && !!({cond});");
        for _ in 0..200 {
            if self.run(&script).await == json!(true) {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        let page = self.run("return location.href + '\\n' + document.body.innerText;").await;
        panic!("timed out waiting for {what}; the page: {page}");
    }

    async fn text(&self) -> String {
        self.run("return document.body.innerText;").await.as_str().unwrap_or_default().to_owned()
    }

    async fn href(&self) -> String {
        self.run("return location.href;").await.as_str().unwrap_or_default().to_owned()
    }

    /// Checks the page shown now as `screens` checks every page (phone and desktop,
    /// Chinese), its screenshots saved as `name`.
    async fn reads_well(&self, name: &str) {
        for width in WIDTHS {
            let seen = self.look_here(width, name).await;
            let found = problems(name, width, &seen, "zh-CN");
            assert!(found.is_empty(), "{found:#?}");
        }
    }

    /// From the console's sign-in page through the provider's login and consent forms.
    async fn sign_in_with_provider(&self, app: &TestApp, issuer: &str, login: &str) {
        self.open(&app.url("/signin")).await;
        let button = format!("使用 {PROVIDER_NAME} 登录");
        self.until("the sign-in page", "document.querySelector('a[href=\"/signin/oidc\"]')").await;
        assert!(self.text().await.contains(&button), "{}", self.text().await);
        self.reads_well("console-signin-oidc").await;
        self.run("document.querySelector('a[href=\"/signin/oidc\"]').click();").await;
        self.until("the provider's login form", "document.querySelector('input[name=login]')").await;
        assert!(self.href().await.starts_with(issuer), "at {}", self.href().await);
        self.run(&format!(
            "document.querySelector('input[name=login]').value = {login:?};
             document.querySelector('input[name=password]').value = 'any';
             document.querySelector('button[type=submit]').click();"
        ))
        .await;
        self.until("the provider's consent form", "document.querySelector('input[name=prompt][value=consent]')").await;
        self.run("document.querySelector('button[type=submit]').click();").await;
    }
}

#[tokio::test]
async fn staff_sign_in_through_the_oidc_provider_in_a_browser() {
    let port = free_port();
    let issuer = format!("http://127.0.0.1:{port}");
    let app = daemon(&issuer).await;
    let provider = Provider::start(port, &app.url("/signin/oidc/callback")).await;
    // 1,250,000 CNY: waiting for a line supervisor, wang.fang among them.
    let (s, b) = app.post_webhook(&deal("D-OIDC", 1, "1250000.00")).await;
    assert_eq!((s, b["state"].as_str()), (202, Some("awaiting_approval")), "{b}");
    let order = b["order_id"].as_str().unwrap().to_owned();
    let browser = Browser::start().await;

    // wang.fang signs in at the provider and lands in her inbox, in Chinese.
    browser.sign_in_with_provider(&app, &provider.issuer, "wang.fang@bank.example").await;
    let console = app.url("/console");
    browser.until("the console", &format!("location.href === {console:?}")).await;
    let inbox = browser.text().await;
    assert!(inbox.contains("当前登录：王芳") && inbox.contains(&order), "{inbox}");
    // The session cookie is HttpOnly: no script reads it.
    let cookies = browser.run("return document.cookie;").await;
    assert!(!cookies.as_str().unwrap_or_default().contains("ob_session"), "{cookies}");

    // Sign-out ends the session at the provider too (RP-initiated logout: its
    // end-session page, which asks to confirm), then leads back to sign-in, and the
    // console stays closed.
    browser.run("document.querySelector('form[action=\"/signout\"] button').click();").await;
    browser.until("the provider's sign-out page", "document.querySelector('button[name=logout][value=yes]')").await;
    let end_session = browser.href().await;
    assert!(end_session.starts_with(&format!("{}/session/end?", provider.issuer)), "at {end_session}");
    assert!(param(&end_session, "id_token_hint").split('.').count() == 3, "the ID token as the hint: {end_session}");
    assert_eq!(param(&end_session, "client_id"), CLIENT_ID);
    let back: String =
        form_urlencoded::parse(format!("u={}", param(&end_session, "post_logout_redirect_uri")).as_bytes())
            .map(|(_, v)| v.into_owned())
            .collect();
    assert_eq!(back, app.url("/signin"));
    browser.run("document.querySelector('button[name=logout][value=yes]').click();").await;
    let signin = app.url("/signin");
    browser.until("the sign-in page after sign-out", &format!("location.href === {signin:?}")).await;
    browser.open(&console).await;
    browser.until("sign-in instead of the console", &format!("location.href === {signin:?}")).await;
    // The provider forgot her too: signing in again asks for a login, it does not
    // come straight back signed in as wang.fang.
    browser.open(&app.url("/signin/oidc")).await;
    browser.until("the provider's login form again", "document.querySelector('input[name=login]')").await;

    // An answer carrying a state this browser did not start is refused.
    browser.open(&app.url("/signin/oidc/callback?code=stolen&state=forged")).await;
    browser.until("the refusal", "document.body.innerText.includes('此次登录无法识别或已过期')").await;
    browser.open(&console).await;
    browser.until("sign-in instead of the console", &format!("location.href === {signin:?}")).await;

    // Someone the provider knows but the directory does not: refused, not signed in.
    // (Cookies cleared: the provider would otherwise remember wang.fang.)
    browser.call(reqwest::Method::DELETE, "/cookie", None).await;
    browser.sign_in_with_provider(&app, &provider.issuer, "stranger@elsewhere.example").await;
    browser.until("the refusal", "location.href.includes('/signin/oidc/callback')").await;
    let refusal = browser.text().await;
    assert!(refusal.contains("通讯录中没有该邮箱"), "{refusal}");
    assert!(!refusal.contains("stranger@elsewhere.example"), "the page names no address: {refusal}");
    browser.reads_well("console-oidc-refused").await;
    browser.open(&console).await;
    browser.until("sign-in instead of the console", &format!("location.href === {signin:?}")).await;
    browser.quit().await;
}

/// A provider played by the test: it publishes `published`, and its token endpoint
/// answers whatever ID token the test put in `next`, recording each exchange.
#[derive(Clone, Default)]
struct Fake {
    issuer: Arc<Mutex<String>>,
    published: Arc<Mutex<Value>>,
    next: Arc<Mutex<String>>,
    down: Arc<Mutex<bool>>,
    /// Each exchange: (Authorization header, form).
    exchanges: Arc<Mutex<Vec<(String, String)>>>,
}

async fn fake_discovery(State(f): State<Fake>) -> axum::response::Response {
    use axum::response::IntoResponse as _;
    if *f.down.lock().unwrap() {
        return axum::http::StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    let i = f.issuer.lock().unwrap().clone();
    axum::Json(json!({"issuer": i, "authorization_endpoint": format!("{i}/auth"),
        "token_endpoint": format!("{i}/token"), "jwks_uri": format!("{i}/jwks"),
        "id_token_signing_alg_values_supported": ["ES256"]}))
    .into_response()
}

async fn fake_token(State(f): State<Fake>, headers: HeaderMap, body: String) -> axum::Json<Value> {
    let auth = headers.get("authorization").map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default();
    f.exchanges.lock().unwrap().push((auth, body));
    axum::Json(json!({"id_token": f.next.lock().unwrap().clone(), "token_type": "Bearer", "access_token": "at"}))
}

fn b64(b: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

fn es256_key() -> EcdsaKeyPair {
    let rng = SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
    EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng).unwrap()
}

fn jwk(k: &EcdsaKeyPair) -> Value {
    let p = k.public_key().as_ref();
    json!({"kty": "EC", "crv": "P-256", "kid": "k1", "use": "sig", "x": b64(&p[1..33]), "y": b64(&p[33..65])})
}

fn sign(k: &EcdsaKeyPair, claims: &Value) -> String {
    let signed = format!("{}.{}", b64(br#"{"alg":"ES256","kid":"k1"}"#), b64(claims.to_string().as_bytes()));
    format!("{signed}.{}", b64(k.sign(&SystemRandom::new(), signed.as_bytes()).unwrap().as_ref()))
}

/// One query parameter of a URL.
fn param(url: &str, name: &str) -> String {
    let query = url.split_once('?').map(|(_, q)| q).unwrap_or_default();
    let found = query.split('&').filter_map(|kv| kv.split_once('=')).find(|(k, _)| *k == name);
    found.map(|(_, v)| v.to_owned()).unwrap_or_else(|| panic!("no {name} in {url}"))
}

/// What the daemon answered a request (redirects not followed).
struct Answer {
    status: u16,
    location: String,
    cookies: Vec<String>,
    body: String,
}

async fn fetch(http: &reqwest::Client, url: &str, cookie: &str) -> Answer {
    let r = http.get(url).header("cookie", cookie).send().await.unwrap();
    let status = r.status().as_u16();
    let location = r.headers().get("location").map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default();
    let cookies = r.headers().get_all("set-cookie").iter().map(|v| v.to_str().unwrap().to_owned()).collect();
    Answer { status, location, cookies, body: r.text().await.unwrap() }
}

/// What `orderbridge check --online` on `dir` printed (one line per system).
async fn check_online(dir: &Path) -> String {
    // On a blocking thread: the provider it calls is served by this test's runtime.
    let dir = dir.to_owned();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(bin()).args(["check", "--online", "--config-dir"]).arg(dir).output().unwrap()
    })
    .await
    .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// One sign-in started: the daemon's redirect to the provider (its URL) and the state.
async fn begin(http: &reqwest::Client, app: &TestApp, issuer: &str) -> (String, String) {
    let r = fetch(http, &app.url("/signin/oidc"), "").await;
    assert_eq!(r.status, 303, "{}", r.body);
    assert!(r.location.starts_with(&format!("{issuer}/auth?")), "{}", r.location);
    let state = param(&r.location, "state");
    let cookie = r.cookies.iter().find(|c| c.starts_with("ob_oidc=")).unwrap();
    assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Lax"), "{cookie}");
    assert_eq!(cookie.split(';').next().unwrap(), format!("ob_oidc={state}"));
    (r.location, state)
}

#[tokio::test]
async fn the_callback_refuses_forged_replayed_and_misaddressed_id_tokens() {
    let fake = Fake::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let issuer = format!("http://{}", listener.local_addr().unwrap());
    *fake.issuer.lock().unwrap() = issuer.clone();
    let key = es256_key();
    *fake.published.lock().unwrap() = json!({"keys": [jwk(&key)]});
    let routes = axum::Router::new()
        .route("/.well-known/openid-configuration", get(fake_discovery))
        .route("/jwks", get(|State(f): State<Fake>| async move { axum::Json(f.published.lock().unwrap().clone()) }))
        .route("/token", post(fake_token))
        .with_state(fake.clone());
    tokio::spawn(async move { axum::serve(listener, routes).await.unwrap() });
    let app = daemon(&issuer).await;
    let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();

    // The provider is down: a page says so, and the daemon keeps serving; `check
    // --online` says so too.
    *fake.down.lock().unwrap() = true;
    let r = fetch(&http, &app.url("/signin/oidc"), "").await;
    assert_eq!(r.status, 503, "{}", r.body);
    assert!(r.body.contains("暂时无法连接 Bank SSO"), "{}", r.body);
    assert_eq!(fetch(&http, &app.url("/healthz"), "").await.status, 200);
    let text = check_online(app.dir.path()).await;
    assert!(text.contains(&format!("console.oidc: FAILED: the sign-in provider cannot be reached: {issuer}/.well-known/openid-configuration answered 503")), "{text}");
    *fake.down.lock().unwrap() = false;
    let text = check_online(app.dir.path()).await;
    assert!(text.contains(&format!("console.oidc: ok ({issuer} publishes its endpoints and 1 key)")), "{text}");
    assert!(!text.contains(CLIENT_SECRET), "{text}");

    let now = chrono::Utc::now().timestamp();
    let claims = |nonce: &str| {
        json!({"iss": issuer, "aud": CLIENT_ID, "sub": "u-7", "nonce": nonce, "iat": now, "exp": now + 300,
            "email": "wang.fang@bank.example", "email_verified": true})
    };
    let answer = |state: &str| app.url(&format!("/signin/oidc/callback?code=c-1&state={state}"));
    let refused_with = |r: &Answer, status: u16, what: &str| {
        assert_eq!(r.status, status, "{what}: {}", r.body);
        assert!(r.body.contains("无法验证身份认证服务的应答"), "{what}: {}", r.body);
        assert!(!r.cookies.iter().any(|c| c.starts_with("ob_session=")), "{what} signed someone in");
    };

    // A good token: signed in, and the exchange carried PKCE's verifier and Basic credentials.
    let (auth_url, state) = begin(&http, &app, &issuer).await;
    *fake.next.lock().unwrap() = sign(&key, &claims(&param(&auth_url, "nonce")));
    let r = fetch(&http, &answer(&state), &format!("ob_oidc={state}")).await;
    assert_eq!((r.status, r.location.as_str()), (303, "/console"), "{}", r.body);
    assert!(r.cookies.iter().any(|c| c.starts_with("ob_session=") && c.contains("HttpOnly")), "{:?}", r.cookies);
    let (authorization, form) = fake.exchanges.lock().unwrap().last().unwrap().clone();
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("{CLIENT_ID}:{CLIENT_SECRET}"));
    assert_eq!(authorization, format!("Basic {basic}"));
    let verifier = param(&format!("?{form}"), "code_verifier");
    use sha2::Digest as _;
    assert_eq!(param(&auth_url, "code_challenge"), b64(&sha2::Sha256::digest(verifier.as_bytes())));
    assert_eq!(param(&auth_url, "code_challenge_method"), "S256");
    assert!(form.contains("grant_type=authorization_code") && form.contains("code=c-1"), "{form}");
    let good = fake.next.lock().unwrap().clone();
    // Signing out where the provider publishes no end_session_endpoint: straight back
    // to sign-in, the console session ended.
    let session = r.cookies.iter().find(|c| c.starts_with("ob_session=")).unwrap();
    let session = session.split(';').next().unwrap().to_owned();
    let inbox = fetch(&http, &app.url("/console"), &session).await;
    assert_eq!(inbox.status, 200, "{}", inbox.body);
    let csrf = crate::console::csrf(&inbox.body);
    let out = http.post(app.url("/signout")).header("cookie", &session).form(&[("csrf", csrf)]).send().await.unwrap();
    assert_eq!((out.status().as_u16(), out.headers()["location"].to_str().unwrap()), (303, "/signin"));
    assert_eq!(fetch(&http, &app.url("/console"), &session).await.status, 303);

    // The same state again: used up.
    let r = fetch(&http, &answer(&state), &format!("ob_oidc={state}")).await;
    assert_eq!(r.status, 400, "{}", r.body);
    // A state this browser's cookie does not hold.
    let (_, other) = begin(&http, &app, &issuer).await;
    let r = fetch(&http, &answer(&other), "ob_oidc=someone-elses").await;
    assert_eq!(r.status, 400, "{}", r.body);

    // Signed by a key the provider does not publish (under its key id).
    let (auth_url, state) = begin(&http, &app, &issuer).await;
    *fake.next.lock().unwrap() = sign(&es256_key(), &claims(&param(&auth_url, "nonce")));
    refused_with(&fetch(&http, &answer(&state), &format!("ob_oidc={state}")).await, 400, "another key");
    // Changed after signing: wang.fang's token made out to zhao.lei.
    let (auth_url, state) = begin(&http, &app, &issuer).await;
    let signed = sign(&key, &claims(&param(&auth_url, "nonce")));
    let mut parts: Vec<String> = signed.split('.').map(str::to_owned).collect();
    let mut c = claims(&param(&auth_url, "nonce"));
    c["email"] = "zhao.lei@bank.example".into();
    parts[1] = b64(c.to_string().as_bytes());
    *fake.next.lock().unwrap() = parts.join(".");
    refused_with(&fetch(&http, &answer(&state), &format!("ob_oidc={state}")).await, 400, "altered");
    // Unsigned.
    let (auth_url, state) = begin(&http, &app, &issuer).await;
    let c = claims(&param(&auth_url, "nonce"));
    *fake.next.lock().unwrap() = format!("{}.{}.", b64(br#"{"alg":"none"}"#), b64(c.to_string().as_bytes()));
    refused_with(&fetch(&http, &answer(&state), &format!("ob_oidc={state}")).await, 400, "alg none");
    // Replayed: the first sign-in's token (its nonce) in a new sign-in.
    let (_, state) = begin(&http, &app, &issuer).await;
    *fake.next.lock().unwrap() = good;
    refused_with(&fetch(&http, &answer(&state), &format!("ob_oidc={state}")).await, 400, "replayed");
    // Made out to another client, or by another issuer.
    for (key_name, value) in [("aud", json!("another-client")), ("iss", json!("https://evil.example"))] {
        let (auth_url, state) = begin(&http, &app, &issuer).await;
        let mut c = claims(&param(&auth_url, "nonce"));
        c[key_name] = value;
        *fake.next.lock().unwrap() = sign(&key, &c);
        refused_with(&fetch(&http, &answer(&state), &format!("ob_oidc={state}")).await, 400, key_name);
    }
    // The provider declines (the person cancelled): refused, nothing exchanged.
    let (_, state) = begin(&http, &app, &issuer).await;
    let before = fake.exchanges.lock().unwrap().len();
    let r = fetch(
        &http,
        &app.url(&format!("/signin/oidc/callback?error=access_denied&state={state}")),
        &format!("ob_oidc={state}"),
    )
    .await;
    assert_eq!(r.status, 403, "{}", r.body);
    assert_eq!(fake.exchanges.lock().unwrap().len(), before);
}
