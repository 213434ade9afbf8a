//! Templates against their snapshots, escaping, page text in both locales, and
//! located errors of broken templates.

use super::*;

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn load() -> Templates {
    Templates::load(repo(), Presentation::default()).unwrap_or_else(|e| panic!("{e:#?}"))
}

/// Every template in both languages against `tests/snapshots/templates/`. After an
/// intended change, run with `UPDATE_SNAPSHOTS=1` and review the diff.
#[test]
fn rendered_templates_match_their_snapshots() {
    let t = load();
    let dir = repo().join("tests/snapshots/templates");
    let update = std::env::var_os("UPDATE_SNAPSHOTS").is_some();
    let mut failures = Vec::new();
    for name in TEMPLATE_NAMES {
        for loc in LOCALES {
            let r = t.render(name, loc, sample_context(loc)).unwrap();
            let got = format!("Subject: {}\n\n--- text ---\n{}\n--- html ---\n{}", r.subject, r.text, r.html);
            let path = dir.join(loc.as_str()).join(format!("{name}.snap"));
            if update {
                std::fs::create_dir_all(path.parent().unwrap()).unwrap();
                std::fs::write(&path, &got).unwrap();
                continue;
            }
            match std::fs::read_to_string(&path) {
                Ok(want) if want == got => {}
                Ok(_) => failures.push(format!("{} differs", path.display())),
                Err(_) => failures.push(format!("{} is missing", path.display())),
            }
        }
    }
    assert!(failures.is_empty(), "{failures:#?}\n(run with UPDATE_SNAPSHOTS=1 after an intended change)");
}

#[test]
fn order_data_is_escaped_in_html_and_kept_in_text() {
    let t = load();
    for loc in LOCALES {
        let r = t.render("order_flagged", loc, sample_context(loc)).unwrap();
        assert!(r.text.contains("张伟 <b>&"), "{}", r.text);
        assert!(r.html.contains("张伟 &lt;b&gt;&amp;"), "{}", r.html);
        assert!(!r.html.contains("<b>&"), "raw markup leaked into HTML");
        assert!(!r.subject.contains('\n'));
        let s = t.render("survey", loc, sample_context(loc)).unwrap();
        assert!(s.text.contains("https://orders.bank.example/pages/survey/TOKEN"), "{}", s.text);
    }
    let zh = t.render("order_flagged", Locale::ZhCn, sample_context(Locale::ZhCn)).unwrap();
    assert!(zh.text.contains("¥1,250,000.00"), "{}", zh.text);
    assert!(zh.text.contains("KYC-001"), "staff mail lists the rules that fired: {}", zh.text);
    let en = t.render("order_flagged", Locale::En, sample_context(Locale::En)).unwrap();
    assert!(en.text.contains("CNY 1,250,000.00"), "{}", en.text);
}

#[test]
fn page_text_says_screening_and_route_in_words() {
    let t = load();
    let large = |loc| {
        let mut ctx = sample_page_contexts()[0].clone();
        ctx["event"]["chain"] = serde_json::json!(["line_supervisor", "branch_manager"]);
        t.render_fragment("history", loc, ctx).unwrap()
    };
    assert_eq!(large(Locale::ZhCn), "筛查通过：金额 125 万元，需经直线主管和支行行长两级审批。");
    assert_eq!(
        large(Locale::En),
        "Screening passed: CNY 1,250,000.00 needs 2 approvals, by the line supervisor and then the branch manager."
    );
    for loc in LOCALES {
        for ctx in sample_page_contexts().into_iter().filter(|c| fits("history", c)) {
            let text = t.render_fragment("history", loc, ctx.clone()).unwrap();
            assert!(!text.contains("matrix") && !text.contains("line_supervisor"), "{text}");
            if loc == Locale::ZhCn {
                assert!(!text.contains("customer KYC"), "{text}");
            }
        }
    }
    let own = serde_json::json!({"refusal": {"kind": "own_order", "person": "李娜"}});
    assert_eq!(
        t.render_fragment("refusal", Locale::ZhCn, own).unwrap(),
        "根据岗位分离要求，李娜是该订单的客户经理，不能审批此订单。"
    );
    let flagged = t.render_fragment("history", Locale::ZhCn, sample_page_contexts()[2].clone()).unwrap();
    assert_eq!(flagged, "筛查提示：客户未完成 KYC 认证（规则 KYC-001）。");
}

/// The HTML part: one summary (the body's facts), the link behind a button with a
/// short fallback, the stylesheet inlined; the text part as the template wrote it.
#[test]
fn the_html_part_has_one_summary_and_a_button() {
    let t = load();
    let mut ctx = sample_context(Locale::ZhCn);
    ctx["links"] = serde_json::json!({"approval": "https://orders.bank.example/pages/approval/v2.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"});
    ctx["items"] = serde_json::Value::Null;
    let r = t.render("approval_request", Locale::ZhCn, ctx).unwrap();
    assert!(r.text.contains("\nhttps://orders.bank.example/pages/approval/v2.AAAA"), "{}", r.text);
    assert_eq!(r.html.matches("¥1,250,000.00").count(), 3, "title, heading and summary only: {}", r.html);
    assert_eq!(r.html.matches("订单概要").count(), 1, "{}", r.html);
    assert!(r.html.contains("orders.bank.example/pages/approval/…</a>"), "{}", r.html);
    assert!(!r.html.contains(">https://"), "no bare URL as text: {}", r.html);
    assert!(r.html.contains("class=\"button\"") && r.html.contains("style=\""), "{}", r.html);
    assert!(r.html.contains("prefers-color-scheme: dark") || r.html.contains("prefers-color-scheme:dark"));
}

#[test]
fn customer_mail_never_shows_internal_rules() {
    let t = load();
    for loc in LOCALES {
        for name in ["order_received", "delivery_acceptance", "invoice_issued", "payment_reminder", "survey"] {
            let r = t.render(name, loc, sample_context(loc)).unwrap();
            assert!(!r.text.contains("KYC-001"), "{name} ({loc}) shows a rule id");
        }
    }
}

#[test]
fn page_text_a_configuration_lacks_is_the_shipped_one() {
    fn copy(from: &Path, to: &Path) {
        std::fs::create_dir_all(to).unwrap();
        for e in std::fs::read_dir(from).unwrap() {
            let p = e.unwrap().path();
            let target = to.join(p.file_name().unwrap());
            if p.is_dir() { copy(&p, &target) } else { std::fs::copy(&p, &target).map(drop).unwrap() }
        }
    }
    let dir = tempfile::tempdir().unwrap();
    copy(&repo().join("config/templates"), &dir.path().join("config/templates"));
    for loc in LOCALES {
        std::fs::remove_file(dir.path().join("config/templates").join(loc.as_str()).join("pages/words.html")).unwrap();
    }
    let t = Templates::load(dir.path(), Presentation::default()).unwrap_or_else(|e| panic!("{e:#?}"));
    let shipped = load();
    for loc in LOCALES {
        let ctx = serde_json::json!({"key": "title.approval"});
        let said = t.render_fragment("words", loc, ctx.clone()).unwrap();
        assert!(!said.is_empty());
        assert_eq!(said, shipped.render_fragment("words", loc, ctx).unwrap());
    }
}

#[test]
fn broken_templates_are_reported_with_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("config/templates");
    for loc in LOCALES {
        let d = root.join(loc.as_str());
        std::fs::create_dir_all(&d).unwrap();
        for f in std::fs::read_dir(repo().join("config/templates").join(loc.as_str())).unwrap() {
            let f = f.unwrap().path();
            if f.is_file() {
                std::fs::copy(&f, d.join(f.file_name().unwrap())).unwrap();
            }
        }
    }
    let broken = root.join("en/survey.txt");
    std::fs::write(
        &broken,
        "{% block subject %}Hi{% endblock %}\n{% block body %}\nline two\n{% if x %}\n{% endblock %}\n",
    )
    .unwrap();
    std::fs::write(
        root.join("zh-CN/order_received.txt"),
        "{% block subject %}{{ order.amount|nope }}{% endblock %}{% block body %}x{% endblock %}",
    )
    .unwrap();
    std::fs::remove_file(root.join("zh-CN/digest.txt")).unwrap();
    let errs = Templates::load(dir.path(), Presentation::default()).err().expect("broken templates refused");
    let shown: Vec<String> = errs.iter().map(ToString::to_string).collect();
    let has = |needle: &str| shown.iter().any(|s| s.contains(needle));
    assert!(has("config/templates/en/survey.txt:5"), "{shown:#?}");
    assert!(shown.iter().any(|s| s.contains("zh-CN/digest.txt") && s.contains("missing")), "{shown:#?}");
    assert!(has("zh-CN/order_received.txt:1") && has("unknown filter"), "{shown:#?}");
}

#[test]
fn builtin_page_text_says_every_sentence_in_both_locales() {
    let t =
        Templates::builtin_pages(Presentation { time_zone: chrono_tz::Asia::Shanghai, default_locale: Locale::ZhCn });
    for loc in LOCALES {
        for ctx in sample_page_contexts().into_iter().filter(|c| fits("words", c)) {
            let text = t.render_fragment("words", loc, ctx.clone()).unwrap();
            assert!(!text.is_empty(), "{loc:?} {ctx}");
            let ascii = text.is_ascii();
            assert_eq!(ascii, loc == Locale::En, "{loc:?} {text}");
        }
    }
}
