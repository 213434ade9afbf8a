//! The sample order and the sample mail context (an order, its event, a recipient)
//! that configuration checks render templates with: mail templates at load, and
//! outbound mappings when connectors load. Also used by snapshots and screenshots.

use crate::locale::Locale;

/// A complete order as effects and mails carry it (amounts as exact strings).
pub(crate) fn order() -> serde_json::Value {
    serde_json::json!({
        "customer": {"id": "C-778", "name": "张伟 <b>&", "kind": "individual", "credit_rating": "A",
            "kyc_verified": true, "email": "zhang.wei@example.com",
            "id_document": {"type": "cn_resident_id", "number": "11010519491231002X"}},
        "product": {"type": "wealth_management", "code": "WM-STABLE-12M"},
        "need": "客户希望配置稳健型理财产品，期限一年",
        "amount": {"amount": "1250000.00", "currency": "CNY"},
        "term_months": 12,
        "sales_owner": "li.na@bank.example",
        "placed_at": "2026-11-26T09:30:00Z"
    })
}

/// A complete context, as the mailer builds it, for checks and snapshots.
pub fn mail_context(locale: Locale) -> serde_json::Value {
    serde_json::json!({
        "site": {"name": "示例银行订单中心", "public_url": "https://orders.bank.example"},
        "recipient": {"name": if locale == Locale::ZhCn { "李娜" } else { "Li Na" }, "email": "li.na@bank.example"},
        "order_id": "ord_0193a5e2c4b87d21a4f0c9e8b7d6a5f4",
        "state": "flagged",
        "order": order(),
        "event": {"type": "screening_flagged", "rules_version": "2026-11-26.1",
            "fired": [{"rule_id": "KYC-001", "severity": "flag", "message": "客户未完成 KYC 认证 / customer KYC not verified"}],
            "score": 2, "comment": "办理太慢 <script>", "reason": "score 2 (at or below 2)",
            "level": 1, "role": "line_supervisor", "number": "INV-2026-0042", "question": "请提供客户近三年的财务报表。",
            "amount": {"amount": "1250000.00", "currency": "CNY"}},
        "links": {"survey": "https://orders.bank.example/pages/survey/TOKEN"},
        "extra": {
            "level": 2, "of": 3, "role": "branch_manager", "due_at": "2026-11-27T09:30:00Z", "escalated_from": "王芳",
            "tasks": [{"name": "产品配置", "department": "运营部"}, {"name": "合同生成", "department": "法务部"}],
            "delivered_at": "2026-12-01T02:00:00Z",
            "invoice": {"number": "INV-2026-0042", "amount": {"amount": "1250000.00", "currency": "CNY"},
                "tax": {"amount": "75000.00", "currency": "CNY"}, "due_date": "2026-12-31"},
            "stage": "friendly", "days_overdue": 7,
            "invoices": [{"number": "INV-2026-0042", "amount": {"amount": "1250000.00", "currency": "CNY"}, "due_date": "2026-12-31"}],
            "total": {"amount": "1250000.00", "currency": "CNY"},
            "ticket_id": "SD-1024"
        },
        "items": [
            {"order_id": "ord_0193a5e2c4b87d21a4f0c9e8b7d6a5f4", "template": "order_flagged", "state": "flagged",
             "customer": "张伟", "amount": {"amount": "1250000.00", "currency": "CNY"}, "at": "2026-11-26T09:30:00Z"},
            {"order_id": "ord_0193a5e2c4b87d21a4f0c9e8b7d6a5f5", "template": "approval_request", "state": "awaiting_approval",
             "customer": "上海某某科技有限公司", "amount": {"amount": "8800000.00", "currency": "CNY"}, "at": "2026-11-26T10:00:00Z"}
        ],
        "count": 2
    })
}
