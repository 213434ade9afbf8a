//! Tests of screening, routing and rule validation against the repository rules.

use std::path::Path;

use rust_decimal::Decimal;
use serde_json::json;

use super::*;
use crate::domain::Order;
use crate::engine::table::{History, inputs};

fn repo_rules() -> Rules {
    crate::config::load_rules(Path::new(env!("CARGO_MANIFEST_DIR"))).unwrap_or_else(|e| panic!("{e:?}"))
}

/// A real-looking order: 张伟, a valid resident ID, rating A, KYC done.
fn order(f: impl FnOnce(&mut serde_json::Value)) -> Order {
    let mut v = json!({
        "customer": {"id": "C-778", "name": "张伟", "kind": "individual",
            "id_document": {"type": "cn_resident_id", "number": "11010519491231002X"},
            "credit_rating": "A", "kyc_verified": true, "email": "zhang.wei@example.com"},
        "product": {"type": "wealth_management", "code": "WM-STABLE-12M"},
        "need": "客户希望配置稳健型理财产品，期限一年",
        "amount": {"amount": "1250000.00", "currency": "CNY"},
        "term_months": 12
    });
    f(&mut v);
    serde_json::from_value(v).unwrap()
}

fn screen(r: &Rules, o: &Order, h: &History) -> Screening {
    r.screen(&inputs(o, r.watch_list.matches(o), h))
}

fn fired(s: &Screening) -> Vec<String> {
    match s {
        Screening::Passed => vec![],
        Screening::Flagged(h) | Screening::Rejected(h) => h.iter().map(|h| h.rule_id.clone()).collect(),
    }
}

#[test]
fn the_matrix_picks_the_right_row_at_every_band_edge() {
    let r = repo_rules();
    let chain = |names: &[&str]| names.iter().map(|n| Level::Role((*n).into())).collect::<Vec<_>>();
    let table: &[(&str, &str, Vec<Level>)] = &[
        ("0.01", "AUTO-SMALL", chain(&["line_supervisor"])),
        ("100000.00", "AUTO-SMALL", chain(&["line_supervisor"])),
        ("100000.01", "STANDARD", chain(&["line_supervisor"])),
        ("1000000.00", "STANDARD", chain(&["line_supervisor"])),
        ("1000000.01", "LARGE", chain(&["line_supervisor", "branch_manager"])),
        ("10000000.00", "LARGE", chain(&["line_supervisor", "branch_manager"])),
        ("10000000.01", "VERY-LARGE", chain(&["line_supervisor", "branch_manager", "risk_committee"])),
    ];
    for (amount, row, want) in table {
        let o = order(|v| v["amount"]["amount"] = (*amount).into());
        let route = r.route(&inputs(&o, false, &History::default())).unwrap();
        assert_eq!((&route.row, &route.chain), (&(*row).to_owned(), want), "amount {amount}");
        assert_eq!(route.auto_on_behalf_of.is_some(), *row == "AUTO-SMALL", "amount {amount}");
        assert!(route.reason.contains(row), "{}", route.reason);
    }
}

#[test]
fn an_order_no_row_covers_gets_a_clear_error() {
    let r = repo_rules();
    let o = order(|v| v["amount"] = json!({"amount": "5000.00", "currency": "USD"}));
    let e = r.route(&inputs(&o, false, &History::default())).unwrap_err();
    assert!(
        e.contains("no approval matrix row matches") && e.contains("USD") && e.contains("wealth_management"),
        "{e}"
    );

    // A matrix keyed by product: a product it does not list has no route.
    let by_product = crate::engine::decide::tests::rules_from(
        r#"
version = "t"
[approval]
[[approval.matrix]]
id = "WM"
when = { "product.type" = "'wealth_management'" }
chain = ["line_supervisor"]
"#,
    );
    let loan = order(|v| v["product"] = json!({"type": "loan", "code": "LN-1"}));
    let e = by_product.route(&inputs(&loan, false, &History::default())).unwrap_err();
    assert!(e.contains("product loan"), "{e}");
}

#[test]
fn every_credit_rating_is_screened_as_the_table_says() {
    let r = repo_rules();
    for (rating, want) in [
        (Some("AAA"), vec![]),
        (Some("AA"), vec![]),
        (Some("A"), vec![]),
        (Some("BBB"), vec![]),
        (Some("BB"), vec![]),
        (Some("B"), vec!["CREDIT-001"]),
        (Some("CCC"), vec!["CREDIT-001"]),
        (Some("CC"), vec!["CREDIT-001"]),
        (Some("C"), vec!["CREDIT-001"]),
        (Some("D"), vec!["CREDIT-001"]),
        (None, vec!["CREDIT-002"]),
    ] {
        let o = order(|v| v["customer"]["credit_rating"] = rating.map_or(json!(null), |r| json!(r)));
        let s = screen(&r, &o, &History::default());
        assert_eq!(fired(&s), want, "rating {rating:?}");
        if rating.is_some() && !want.is_empty() {
            assert!(matches!(s, Screening::Rejected(_)), "below BB rejects");
        }
    }
}

#[test]
fn every_screening_rule_fires_on_its_case_and_only_there() {
    let r = repo_rules();
    let none = History::default();
    assert_eq!(screen(&r, &order(|_| {}), &none), Screening::Passed);
    let cases: Vec<(&str, Order, History)> = vec![
        ("KYC-001", order(|v| v["customer"]["kyc_verified"] = false.into()), none.clone()),
        // A resident ID with a wrong check character (GB 11643).
        ("ID-001", order(|v| v["customer"]["id_document"]["number"] = "110105194912310021".into()), none.clone()),
        (
            "ID-001",
            order(|v| v["customer"].as_object_mut().unwrap().remove("id_document").map(|_| ()).unwrap()),
            none.clone(),
        ),
        ("LIMIT-WM", order(|v| v["amount"]["amount"] = "50000000.01".into()), none.clone()),
        ("TERM-001", order(|v| v["term_months"] = 121.into()), none.clone()),
        ("WATCH-001", order(|v| v["customer"]["name"] = "示例可疑公司".into()), none.clone()),
        ("WATCH-001", order(|v| v["customer"]["id"] = "C-9001".into()), none.clone()),
        ("WATCH-001", order(|v| v["customer"]["id_document"]["number"] = "110101199003074477".into()), none.clone()),
        (
            "VELOCITY-001",
            order(|v| v["product"]["code"] = "WM-OTHER".into()),
            History { orders: 5, amount: Some(Decimal::ZERO), same_product: 0 },
        ),
        ("DUP-001", order(|_| {}), History { orders: 1, amount: Some(Decimal::ONE), same_product: 1 }),
    ];
    for (rule, o, h) in cases {
        assert_eq!(fired(&screen(&r, &o, &h)), vec![rule.to_owned()], "{rule}");
    }
    // Limits sit exactly on the edge: equal is allowed.
    assert_eq!(screen(&r, &order(|v| v["amount"]["amount"] = "50000000.00".into()), &none), Screening::Passed);
    assert_eq!(screen(&r, &order(|v| v["term_months"] = 120.into()), &none), Screening::Passed);
    assert_eq!(
        screen(&r, &order(|v| v["term_months"] = json!(null)), &none),
        Screening::Passed,
        "no term, no term rule"
    );
    // A loan bought again is not a duplicate by DUP-001 (it lists other products).
    let loan = order(|v| v["product"] = json!({"type": "loan", "code": "LN-1"}));
    assert_eq!(
        screen(&r, &loan, &History { orders: 1, amount: Some(Decimal::ONE), same_product: 1 }),
        Screening::Passed
    );
}

#[test]
fn history_counts_only_this_currency_and_product() {
    let o = order(|_| {});
    let p = |a: &str, c: &str, code: &str| crate::engine::table::Prior {
        amount: crate::domain::Money::parse(a, c).unwrap(),
        product_code: code.into(),
    };
    let h = History::of(&o, &[p("100", "CNY", "WM-STABLE-12M"), p("50", "USD", "X"), p("1.5", "CNY", "Y")]);
    assert_eq!(h, History { orders: 3, amount: Some("101.5".parse().unwrap()), same_product: 1 });
}

#[test]
fn a_history_total_too_large_to_compute_flags_the_order_for_review() {
    let r = repo_rules();
    let o = order(|_| {});
    let p = |a: &str| crate::engine::table::Prior {
        amount: crate::domain::Money::parse(a, "CNY").unwrap(),
        product_code: "OTHER".into(),
    };
    let max = Decimal::MAX.to_string();
    let h = History::of(&o, &[p(&max), p(&max), p("1")]);
    assert_eq!(h, History { orders: 3, amount: None, same_product: 0 });
    let ins = inputs(&o, false, &h);
    assert_eq!(ins["history.amount"], crate::engine::table::Input::Null);
    let s = screen(&r, &o, &h);
    assert_eq!(fired(&s), ["HISTORY-OVERFLOW"]);
    assert!(matches!(s, Screening::Flagged(_)), "review, not rejection: {s:?}");
    // Other rules still count: a rejection stays a rejection.
    let bad = order(|v| v["customer"]["credit_rating"] = "CCC".into());
    let s = screen(&r, &bad, &History::of(&bad, &[p(&max), p(&max)]));
    assert_eq!(fired(&s), ["HISTORY-OVERFLOW", "CREDIT-001"]);
    assert!(matches!(s, Screening::Rejected(_)));
    // Exactly the largest total is still a number.
    assert_eq!(History::of(&o, &[p(&max)]).amount, Some(Decimal::MAX));
}

#[test]
fn rule_problems_are_reported_for_each_row() {
    let text = r#"
version = "t"
[[screening]]
id = "A"
when = { amont = "> 1" }
message = "typo"
[[screening]]
id = "B"
when = { amount = "> > 1" }
message = "bad cell"
[[screening]]
id = "C"
message = "fires on everything"
[approval]
[[approval.matrix]]
id = "ALL"
chain = ["x"]
[[approval.matrix]]
id = "NEVER"
when = { amount = "> 1" }
chain = ["y"]
[[approval.matrix]]
id = "NEITHER"
"#;
    let file: RulesFile = toml::from_str(text).unwrap();
    let errs: Vec<String> =
        file.validate(&|_| Err("none".into())).unwrap_err().into_iter().map(|p| p.message).collect();
    let has = |s: &str| errs.iter().any(|e| e.contains(s));
    assert!(has("screening rule A: unknown input `amont`"), "{errs:#?}");
    assert!(has("screening rule B: cell `amount = > > 1`"), "{errs:#?}");
    assert!(has("screening rule C: `when` is empty"), "{errs:#?}");
    assert!(has("row NEVER can never match: row ALL before it matches everything"), "{errs:#?}");
    assert!(has("row NEITHER: give either `chain` or `auto = true`"), "{errs:#?}");
}

#[test]
fn watch_list_lines_are_checked() {
    let e = WatchList::parse("# c\ncustomer_id,C-1\nphone,123\nname\n").unwrap_err();
    assert_eq!(e.iter().map(|(l, _)| *l).collect::<Vec<_>>(), vec![3, 4]);
}
