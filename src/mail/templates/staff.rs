//! The staff console's page text beyond sign-in and "my approvals": its frame
//! (`console_nav`), orders (`console_orders`), process map (`console_process`), KPIs
//! (`console_reports`),
//! work lists (`console_work`), administration (`console_admin`) and rules review
//! (`console_rules`). Their shipped
//! copies (compiled in, for a configuration without them) and the sample contexts
//! `Templates::load` renders every view with, so `check` finds a broken one.

use serde_json::{Value, json};

/// The console's page text files besides `console`, each with the views it has.
pub(crate) const FRAGMENTS: &[(&str, &[&str])] = &[
    ("console_nav", &["nav", "title_refused", "refused"]),
    ("console_orders", &["title_search", "search", "title_order", "order"]),
    ("console_process", &["title", "map"]),
    ("console_reports", &["title", "report"]),
    ("console_admin", &["title", "admin"]),
    ("console_rules", &["title", "rules"]),
    (
        "feedback",
        &["title", "form", "done", "title_list", "list", "mail_subject", "mail_text", "mail_footer", "page_footer"],
    ),
    (
        "console_work",
        &[
            "title_exceptions",
            "exceptions",
            "title_dead_letters",
            "dead_letters",
            "title_connectors",
            "connectors",
            "title_review",
            "review",
            "title_payments",
            "payments",
            "title_receivables",
            "receivables",
        ],
    ),
];

/// The shipped copies, compiled in.
pub(super) const BUILTIN_PAGES: &[(&str, &str)] = &[
    ("zh-CN/pages/console_nav.html", include_str!("../../../config/templates/zh-CN/pages/console_nav.html")),
    ("zh-CN/pages/console_orders.html", include_str!("../../../config/templates/zh-CN/pages/console_orders.html")),
    ("zh-CN/pages/console_process.html", include_str!("../../../config/templates/zh-CN/pages/console_process.html")),
    ("zh-CN/pages/console_reports.html", include_str!("../../../config/templates/zh-CN/pages/console_reports.html")),
    ("zh-CN/pages/console_work.html", include_str!("../../../config/templates/zh-CN/pages/console_work.html")),
    ("zh-CN/pages/console_admin.html", include_str!("../../../config/templates/zh-CN/pages/console_admin.html")),
    ("zh-CN/pages/console_rules.html", include_str!("../../../config/templates/zh-CN/pages/console_rules.html")),
    ("en/pages/console_nav.html", include_str!("../../../config/templates/en/pages/console_nav.html")),
    ("en/pages/console_orders.html", include_str!("../../../config/templates/en/pages/console_orders.html")),
    ("en/pages/console_process.html", include_str!("../../../config/templates/en/pages/console_process.html")),
    ("en/pages/console_reports.html", include_str!("../../../config/templates/en/pages/console_reports.html")),
    ("en/pages/console_work.html", include_str!("../../../config/templates/en/pages/console_work.html")),
    ("en/pages/console_admin.html", include_str!("../../../config/templates/en/pages/console_admin.html")),
    ("en/pages/console_rules.html", include_str!("../../../config/templates/en/pages/console_rules.html")),
    ("zh-CN/pages/feedback.html", include_str!("../../../config/templates/zh-CN/pages/feedback.html")),
    ("en/pages/feedback.html", include_str!("../../../config/templates/en/pages/feedback.html")),
];

/// Whether sample `ctx` is one of page text `name`'s (`Some`), or `name` is not the
/// console's (`None`).
pub(super) fn fits(name: &str, ctx: &Value) -> Option<bool> {
    FRAGMENTS.iter().any(|(n, _)| *n == name).then(|| ctx.get("fragment").and_then(Value::as_str) == Some(name))
}

/// An order as `GET /api/orders/{id}` shows it, with events.
fn sample_order() -> Value {
    let amount = json!({"amount": "1250000.00", "currency": "CNY"});
    let at = "2026-11-26T09:30:00Z";
    json!({
        "id": "ord_01", "state": "awaiting_approval", "state_detail": {"level": 2, "of": 2},
        "source": {"connector": "demo-crm", "external_id": "D-1001", "version": 1}, "mapping_version": "abc123",
        "order": {"customer": {"id": "C-778", "name": "张伟", "kind": "individual", "credit_rating": "A",
                "kyc_verified": true, "email": "zhang.wei@example.com", "phone": "+8613800000000"},
            "product": {"type": "wealth_management", "code": "WM-STABLE-12M"}, "amount": amount,
            "term_months": 12, "need": "稳健型理财", "sales_owner": "li.na@bank.example", "placed_at": at},
        "created_at": at, "updated_at": at,
        "archived": {"segment": "2026-11.seg", "archived_at": at, "ended": "closed", "ended_at": at, "legal_hold": null},
        "events": [
            {"at": at, "actor": {"kind": "connector", "id": "demo-crm"}, "event": {"type": "received"}},
            {"at": at, "actor": {"kind": "person", "id": "wang.fang"}, "channel": "console",
                "event": {"type": "approved", "level": 1, "role": "line_supervisor", "comment": "同意"}},
            {"at": at, "actor": {"kind": "system"}, "event": {"type": "effect_succeeded",
                "effect": "mail.approval_request", "receipt": "SMTP 250: queued"}},
            {"at": at, "actor": {"kind": "person", "id": "sun.li"}, "channel": "api",
                "event": {"type": "exception_opened", "reason": "合同金额与约定不符"}},
        ],
    })
}

/// What the order page is rendered with, `explain` included.
fn sample_order_page() -> Value {
    let at = "2026-11-26T09:30:00Z";
    json!({
        "order": sample_order(),
        "explain": {
            "screening": [
                {"at": at, "rules_version": "1", "result": "passed", "matrix_row": "LARGE",
                    "route": ["line_supervisor", {"any": ["branch_manager", "risk_officer"]}, {"all": ["compliance", "cfo"]}]},
                {"at": at, "rules_version": "1", "result": "flagged", "fired": [{"rule_id": "KYC-001", "severity": "flag",
                    "message": "客户未完成 KYC 认证 / customer KYC not verified"}]},
            ],
            "decisions": [
                {"at": at, "by": {"kind": "person", "id": "wang.fang"}, "decision": "approved", "level": 1,
                    "role": "line_supervisor", "comment": "同意"},
                {"at": at, "by": {"kind": "person", "id": "chen.jing"}, "decision": "released", "comment": "已核实",
                    "route": ["line_supervisor"]},
                {"at": at, "decision": "escalated", "level": 2},
            ],
            "effects": [
                {"at": at, "effect": "demo-erp.create_task", "result": "succeeded", "attempts": 1, "receipt": "HTTP 201: created"},
                {"at": at, "effect": "mail.order_received", "result": "dead letter", "attempts": 5, "error": "550 mailbox unavailable"},
            ],
        },
        "people": {"wang.fang": "王芳", "chen.jing": "陈静"},
        "documents": [{"kind": "contract", "sha256": "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"}],
        "mails": [{"at": at, "template": "approval_request", "receipt": "SMTP 250: queued"}],
        "waiting": [
            {"id": "ord_01.3.0", "effect": "demo-erp.create_task", "status": "pending", "attempts": 1, "next_at": at,
                "last_error": "HTTP 503"},
            {"id": "ord_01.4.0", "effect": "mail.order_received", "status": "dead", "attempts": 5, "next_at": at},
        ],
    })
}

/// What the KPI page is rendered with: a report as `GET /api/reports/kpis` gives it
/// (every section with a row), the states' rows, and directory names.
fn sample_report() -> Value {
    let summary = |n: u64, s: i64| json!({"count": n, "mean_s": s, "median_s": s, "p90_s": s * 3, "total_s": s * 5});
    let timing = |n: u64, s: i64| json!({"elapsed": summary(n, s * 2), "business_hours": summary(n, s)});
    let headline = |key: &str, orders: u64| {
        json!({"key": key, "orders": orders, "closed": 1, "to_closed_median_s": 93_784, "approval_median_s": 5400,
            "exceptions_per_100": "33.33", "satisfaction": "4.5", "overdue_ratio": "0.25"})
    };
    let level = |key: &str| json!({"key": key, "approved": 2, "declined": 1, "wait": timing(3, 3600)});
    let report = json!({
        "from": "2026-10-31T16:00:00Z", "to": "2026-11-30T16:00:00Z", "time_zone": "Asia/Shanghai",
        "current": headline("current", 3), "previous": headline("previous", 2),
        "kpis": {"orders": 3, "ended": {"closed": 1, "rejected": 1},
            "processing": {"to_executing": timing(2, 7200), "to_closed": timing(1, 93_784)},
            "approval_levels": [level("1"), level("2")], "approvers": [level("wang.fang")],
            "stages": {"awaiting_approval.1": timing(3, 3600), "exception": timing(1, 60)},
            "departments": {"legal": timing(1, 1800)}, "sla_breaches": 1, "auto_approval_share": "0.5",
            "rework": 1, "rework_per_100": "33.33", "exceptions_per_100": "33.33",
            "invoice_to_cash": summary(1, 86_400), "overdue_ratio": "0.25", "dunning_success": null,
            "satisfaction": {"answers": 2, "average": "4.5", "promoters": 1, "passives": 1, "detractors": 0,
                "net": "50", "complaints": 0},
            "tickets_per_100": "0", "by_product": [headline("wealth_management", 3)],
            "by_sales_owner": [headline("li.na@bank.example", 3)], "by_rating": [headline("A", 3)],
            "by_month": [headline("2026-11", 3)]},
        "process": {"arcs": [], "bottlenecks": [{"kind": "stage", "name": "awaiting_approval.1",
                "business_hours": summary(3, 3600)}, {"kind": "department", "name": "legal", "business_hours": summary(1, 1800)}],
            "approvers": [{"kind": "approver", "name": "wang.fang", "business_hours": summary(2, 3600)}],
            "variants": [{"path": ["received", "screening", "awaiting_approval.1", "approved"], "orders": 2, "share": "0.6667"}],
            "variant_count": 2},
    });
    let states = json!([
        {"state": "awaiting_approval", "open": true, "ended": 0,
            "places": [{"node": "awaiting_approval.1", "level": "1", "timing": timing(3, 3600)}]},
        {"state": "rejected", "open": false, "ended": 1, "places": []},
    ]);
    json!({"report": report, "states": states, "people": {"wang.fang": "王芳"}, "from": "2026-11-01",
        "to": "2026-11-30", "time_zone": "Asia/Shanghai"})
}

/// The rules review page: a candidate proposed and approved, one running in shadow
/// with a difference, and a proposal's problems.
fn rules_sample(ctx: &mut Value) {
    let at = "2026-11-26T09:30:00Z";
    let change = |what: &str, by: &str| {
        json!({"seq": 1, "at": at, "what": what, "version": "abc123def456", "by": by, "name": "陈静",
            "channel": "console", "note": "STANDARD 至 200 万", "effective_at": at})
    };
    let candidate = |shadow: bool, approved: bool| {
        json!({"version": "abc123def4567890", "short": "abc123def456", "label": "2026-12-06.1",
            "proposed": change("proposed", "chen.jing"), "approved": approved.then(|| change("approved", "james.wong")),
            "live": false, "shadow": shadow})
    };
    let difference = json!({"kind": "route", "live": "LARGE", "shadow": "STANDARD"});
    *ctx = json!({"fragment": "console_rules", "view": ctx["view"], "csrf": "CSRF", "me": "chen.jing",
        "may_propose": true, "may_approve": true, "notice": {"what": "approved", "version": "abc123def456"},
        "live": {"version": "fed987", "short": "fed987", "label": "2026-11-27.1"},
        "scheduled": [change("activated", "james.wong")], "shadow": change("shadow_started", "james.wong"),
        "candidates": [candidate(true, true), candidate(false, false)],
        "changes": [change("proposed", "chen.jing"), change("rolled_back", "system")],
        "report": {"shadow_version": "abc123def4567890", "running": true, "orders": [{"order_id": "ord_01",
            "kinds": ["route"], "decisions": [{"step": "intake", "differences": [difference]}]}]},
        "report_summary": "1 order(s) decided differently under rules abc123def456 (1 route)",
        "proposed": {"version": "abc123def4567890", "label": "2026-12-06.1", "summary": "3 order(s) replayed"},
        "problems": ["candidate rules.toml:3:1: unknown role `nobody_role`"], "text": "version = \"x\"", "note": "说明"});
}

/// The KPI page with a period that does not parse: the form alone, its field named.
fn period_errors(shared: &Value) -> Vec<Value> {
    ["from", "to", "order"]
        .into_iter()
        .map(|error| {
            let mut ctx = shared.clone();
            (ctx["fragment"], ctx["view"], ctx["error"]) = ("console_reports".into(), "report".into(), error.into());
            (ctx["from"], ctx["to"]) = ("2026-13-01".into(), "2026-11-30".into());
            ctx
        })
        .collect()
}

/// `shared` with what the feedback form and listing name (`pages/feedback.html`).
fn with_feedback(mut shared: Value, at: &str) -> Value {
    let feedback = json!({"action": "/pages/feedback/TOKEN", "category": "problem", "order_ref": "ord_01",
        "text": "审批邮件链接打不开", "max_text": 2000, "id": 7, "site": "示例银行",
        "feedback": [{"id": 7, "at": at, "category": "complaint", "order_id": "ord_01", "author": "王芳",
            "channel": "mail", "text": "审批邮件链接打不开"}]});
    for (k, v) in feedback.as_object().into_iter().flatten() {
        shared[k.as_str()] = v.clone();
    }
    shared
}

/// What one page's sample context holds beyond the shared one.
fn page_sample(fragment: &str, ctx: &mut Value, kpis: &Value) {
    if fragment == "console_rules" {
        rules_sample(ctx);
    }
    if fragment == "console_reports" {
        for key in ["report", "states", "people", "from", "to", "time_zone"] {
            ctx[key] = kpis[key].clone();
        }
        ctx["feedback"] = json!({"problem": 2, "suggestion": 1, "complaint": 0, "total": 3});
    }
}

/// One context per view of each console page text, marked with its file (`fragment`).
pub(super) fn samples() -> Vec<Value> {
    let amount = json!({"amount": "1250000.00", "currency": "CNY"});
    let at = "2026-11-26T09:30:00Z";
    let page = sample_order_page();
    let shared = json!({
        "csrf": "CSRF", "notice": "ord_01: executing", "message": "不允许", "status": 403, "see_orders": true, "person": "王芳", "current": "orders",
        "pages": [{"key": "inbox", "href": "/console"}, {"key": "orders", "href": "/console/orders"},
            {"key": "process", "href": "/console/process"}, {"key": "exceptions", "href": "/console/exceptions"},
            {"key": "dead_letters", "href": "/console/dead-letters"}, {"key": "connectors", "href": "/console/connectors"}],
        "q": "张伟", "state": "awaiting_approval", "states": crate::engine::lifecycle::STATE_NAMES,
        "results": [page["order"].clone()], "complete": false, "scanned": 20000, "shown": 50,
        "order": page["order"], "explain": page["explain"], "people": page["people"], "documents": page["documents"],
        "check": ["config/rules.toml:12:1: warning: rule `KYC-001` never fires", "31 files checked, 0 problems"],
        "customer": "C-778", "found": {"customer": "C-778", "orders": 2, "outstanding": [amount],
            "invoices": [{"order_id": "ord_01", "state": "overdue", "invoice": {"number": "INV-2026-0001",
                "net": amount, "tax": amount, "total": amount, "issued_at": at, "due": "2026-12-26"},
                "paid": amount, "outstanding": amount, "overdue": true, "dunning": ["first_reminder"]}]},
        "check_ok": true, "rules": {"label": "2026-11", "version": "abc123def4567890"},
        "versions": [{"kind": "rules", "hash": "abc123def4567890", "label": "2026-11", "first_loaded": at,
            "last_loaded": at, "active": true}],
        "mails": page["mails"], "waiting": page["waiting"], "effects": page["explain"]["effects"], "at": at,
    });
    let shared = with_feedback(shared, at);
    let process = json!([
        {"state": "awaiting_approval", "orders": 3, "open": true, "share": 100, "age": {"days": 2, "hours": 3, "minutes": 4}},
        {"state": "closed", "orders": 0, "open": false, "share": 0, "age": null},
    ]);
    let exceptions = json!([{"id": "ord_01", "customer": "张伟", "product": "wealth_management", "code": "WM-STABLE-12M",
        "amount": amount, "opened_at": at, "reason": "合同金额与约定不符"}]);
    let dead = json!([{"id": "ord_01.4.0", "order_id": "ord_01", "effect": "mail.order_received", "attempts": 5,
        "created_at": at, "last_error": "550 mailbox unavailable"}]);
    let connectors = json!([
        {"id": "demo-erp", "kind": "rest", "webhook": true, "poll": true, "operations": ["create_task", "invoice"],
            "paused": true, "paused_because": "HTTP 401", "paused_at": at, "rate_limited_until": null},
        {"id": "demo-crm", "kind": "hubspot", "webhook": true, "poll": false, "operations": [], "paused": false,
            "rate_limited_until": at},
    ]);
    let review = json!([
        {"id": "ord_01", "state": "flagged", "customer": "张伟", "product": "wealth_management", "code": "WM-STABLE-12M",
            "amount": amount, "flagged_at": at, "fired": [{"rule_id": "KYC-001", "severity": "flag",
            "message": "客户未完成 KYC 认证 / customer KYC not verified"}]},
        {"id": "ord_02", "state": "manual_review", "customer": "张伟", "product": "wealth_management",
            "code": "WM-STABLE-12M", "amount": amount, "flagged_at": null, "fired": []},
    ]);
    let payments = json!([{"payment": {"source": "api", "payment_id": "P-3", "amount": amount,
        "invoice_number": "INV-NOPE", "reference": "张伟 货款"}, "reason": "no order has invoice `INV-NOPE`", "at": at}]);
    let kpis = sample_report();
    let mut out = period_errors(&shared);
    // A refusal for a form without its CSRF token, and one for a missing page.
    for (status, message) in [(403, "CSRF"), (404, "order ord_01 not found")] {
        let mut ctx = shared.clone();
        ctx["fragment"] = "console_nav".into();
        ctx["view"] = "refused".into();
        (ctx["status"], ctx["message"]) = (status.into(), message.into());
        out.push(ctx);
    }
    for (fragment, views) in FRAGMENTS {
        for view in *views {
            let mut ctx = shared.clone();
            ctx["fragment"] = (*fragment).into();
            ctx["view"] = (*view).into();
            ctx["items"] = match *view {
                "exceptions" => exceptions.clone(),
                "dead_letters" => dead.clone(),
                "review" => review.clone(),
                "payments" => payments.clone(),
                "list" => shared["feedback"].clone(),
                _ => connectors.clone(),
            };
            ctx["states"] = if *fragment == "console_process" { process.clone() } else { shared["states"].clone() };
            page_sample(fragment, &mut ctx, &kpis);
            out.push(ctx);
        }
    }
    out
}
