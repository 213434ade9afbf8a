//! Showing values to people: money, dates and codes in the reader's language, times
//! in the configured time zone. Everything inside stays UTC and codes; only mail and
//! pages go through here.

use chrono::{DateTime, NaiveDate, Utc};
use chrono_tz::Tz;
use rust_decimal::Decimal;

use crate::domain::Money;
pub use crate::domain::order::Locale;

/// The reader-facing settings every rendering needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Presentation {
    pub(crate) time_zone: Tz,
    pub default_locale: Locale,
}

impl Default for Presentation {
    fn default() -> Self {
        Presentation { time_zone: chrono_tz::Asia::Shanghai, default_locale: Locale::ZhCn }
    }
}

/// `1250000.5 CNY` → `¥1,250,000.50` (zh-CN) or `CNY 1,250,000.50` (en). Never rounds:
/// an amount with more than two decimals keeps them all.
pub(crate) fn money(m: &Money, locale: Locale) -> String {
    let digits = group(m.amount());
    match (locale, m.currency().as_str()) {
        (Locale::ZhCn, "CNY") => format!("¥{digits}"),
        (_, code) => format!("{code} {digits}"),
    }
}

/// An amount as said in a sentence: `125 万元` / `1.2 亿元` for yuan in Chinese (the
/// way a person reads 1,250,000.00), the exact amount otherwise.
pub(crate) fn amount_words(m: &Money, locale: Locale) -> String {
    let a = m.amount();
    let wan = Decimal::from(10_000);
    let yi = Decimal::from(100_000_000);
    match (locale, m.currency().as_str()) {
        (Locale::ZhCn, "CNY") if a.abs() >= yi => format!("{} 亿元", (a / yi).round_dp(4).normalize()),
        (Locale::ZhCn, "CNY") if a.abs() >= wan => format!("{} 万元", (a / wan).round_dp(2).normalize()),
        (Locale::ZhCn, "CNY") => format!("{} 元", a.normalize()),
        _ => money(m, locale),
    }
}

/// The reader's half of a bilingual text written `中文 / English` (as rule messages
/// are); the whole text when it has no such halves.
pub(crate) fn bilingual(text: &str, locale: Locale) -> &str {
    match (text.split_once(" / "), locale) {
        (Some((zh, _)), Locale::ZhCn) => zh.trim(),
        (Some((_, en)), Locale::En) => en.trim(),
        (None, _) => text,
    }
}

/// Thousands separators and at least two decimals.
fn group(amount: Decimal) -> String {
    let mut a = amount.normalize();
    if a.scale() < 2 {
        a.rescale(2);
    }
    let text = a.to_string();
    let (int, frac) = text.split_once('.').unwrap_or((&text, ""));
    let (sign, int) = int.strip_prefix('-').map_or(("", int), |i| ("-", i));
    let mut out = String::with_capacity(text.len() + int.len() / 3);
    out.push_str(sign);
    for (i, c) in int.chars().enumerate() {
        if i > 0 && (int.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    if !frac.is_empty() {
        out.push('.');
        out.push_str(frac);
    }
    out
}

/// A moment in the configured zone, with its UTC offset so nobody has to guess.
pub(crate) fn datetime(at: DateTime<Utc>, tz: Tz, locale: Locale) -> String {
    let local = at.with_timezone(&tz);
    match locale {
        Locale::ZhCn => local.format("%Y年%-m月%-d日 %H:%M（UTC%:z）").to_string(),
        Locale::En => local.format("%-d %b %Y, %H:%M (UTC%:z)").to_string(),
    }
}

pub(crate) fn date(d: NaiveDate, locale: Locale) -> String {
    match locale {
        Locale::ZhCn => d.format("%Y年%-m月%-d日").to_string(),
        Locale::En => d.format("%-d %b %Y").to_string(),
    }
}

/// A day without its year, for a stepper or a list: `11月26日` / `26 Nov`.
pub(crate) fn short_date(d: NaiveDate, locale: Locale) -> String {
    match locale {
        Locale::ZhCn => d.format("%-m月%-d日").to_string(),
        Locale::En => d.format("%-d %b").to_string(),
    }
}

/// A duration of whole seconds, its two largest units: `2 天 3 小时` / `2 d 3 h`,
/// `3 h 5 min`, `12 min`, `42 s`.
pub(crate) fn duration(seconds: i64, locale: Locale) -> String {
    let (d, h, m) = (seconds / 86_400, seconds % 86_400 / 3600, seconds % 3600 / 60);
    let [day, hour, minute, second] = match locale {
        Locale::ZhCn => ["天", "小时", "分钟", "秒"],
        Locale::En => ["d", "h", "min", "s"],
    };
    match (d, h, m) {
        (0, 0, 0) => format!("{seconds} {second}"),
        (0, 0, m) => format!("{m} {minute}"),
        (0, h, m) => format!("{h} {hour} {m} {minute}"),
        (d, h, _) => format!("{d} {day} {h} {hour}"),
    }
}

/// A share (0–1) as a percentage to one place, without float: `0.3333` → `33.3 %`.
pub(crate) fn percent(share: Decimal) -> String {
    format!("{} %", (share * Decimal::ONE_HUNDRED).round_dp(1).normalize())
}

/// The reader's wording for a code (state, product type, customer kind, severity,
/// link purpose, template). Unknown codes are shown as they are.
pub(crate) fn label(code: &str, locale: Locale) -> &str {
    let Some(&(_, en, zh)) = LABELS.iter().find(|(c, _, _)| *c == code) else {
        return code;
    };
    match locale {
        Locale::ZhCn => zh,
        Locale::En => en,
    }
}

const LABELS: &[(&str, &str, &str)] = &[
    // States
    ("received", "received", "已接收"),
    ("screening", "screening", "筛查中"),
    ("flagged", "flagged for review", "待人工复核"),
    ("manual_review", "in manual review", "人工复核中"),
    ("awaiting_approval", "awaiting approval", "待审批"),
    ("approved", "approved", "已批准"),
    ("rejected", "rejected", "已拒绝"),
    ("executing", "in execution", "执行中"),
    ("delivered", "delivered", "已交付"),
    ("accepted", "accepted", "已验收"),
    ("exception", "exception", "异常处理中"),
    ("invoiced", "invoiced", "已开票"),
    ("overdue", "overdue", "已逾期"),
    ("paid", "paid", "已付款"),
    ("closed", "closed", "已结案"),
    ("archived", "archived", "已归档"),
    ("cancelled", "cancelled", "已取消"),
    // Product types
    ("wealth_management", "wealth management", "理财产品"),
    ("loan", "loan", "贷款"),
    ("insurance", "insurance", "保险"),
    ("fund", "fund", "基金"),
    ("deposit", "deposit", "存款"),
    ("brokerage", "brokerage", "证券经纪"),
    ("advisory", "advisory", "投资顾问"),
    // Customer kinds
    ("individual", "individual", "个人客户"),
    ("corporate", "corporate", "企业客户"),
    // Severities
    ("flag", "review", "需复核"),
    ("reject", "reject", "拒绝"),
    // Link purposes
    ("approval", "Review and decide", "查看并审批"),
    ("status", "Track your order", "查看订单进度"),
    ("acceptance", "Confirm acceptance", "确认验收"),
    ("survey", "Rate our service", "评价我们的服务"),
    // Dunning stages
    ("friendly", "reminder", "温馨提醒"),
    ("firm", "second reminder", "再次提醒"),
    ("escalation", "final notice", "最后通知"),
    // Roles (the example directory's; others show as their code)
    ("line_supervisor", "line supervisor", "直线主管"),
    ("branch_manager", "branch manager", "支行行长"),
    ("risk_committee", "risk committee", "风险管理委员会"),
    ("risk_officer", "risk officer", "风险经理"),
    ("after_sales", "after-sales team", "售后服务团队"),
    ("sales", "sales", "客户经理"),
    // Templates (as digest lines)
    ("order_received", "order received", "订单已接收"),
    ("order_flagged", "flagged for review", "待人工复核"),
    ("approval_request", "approval requested", "待您审批"),
    ("approval_reminder", "approval reminder", "审批提醒"),
    ("approval_escalation", "approval escalated", "审批升级"),
    ("info_requested", "information requested", "需补充信息"),
    ("compliance_officer", "compliance officer", "合规专员"),
    ("chief_risk_officer", "chief risk officer", "首席风险官"),
    ("order_approved", "approved", "已批准"),
    ("order_rejected", "rejected", "已拒绝"),
    ("tasks_assigned", "tasks assigned", "执行任务已分派"),
    ("delivery_acceptance", "awaiting acceptance", "待验收"),
    ("exception_opened", "exception opened", "异常已登记"),
    ("invoice_issued", "invoice issued", "发票已开具"),
    ("payment_reminder", "payment reminder", "付款提醒"),
    ("ticket_opened", "after-sales ticket", "售后工单"),
];

#[cfg(test)]
mod tests {
    use super::*;

    fn m(a: &str, c: &str) -> Money {
        Money::parse(a, c).unwrap()
    }

    #[test]
    fn money_is_grouped_and_never_rounded() {
        assert_eq!(money(&m("1250000", "CNY"), Locale::ZhCn), "¥1,250,000.00");
        assert_eq!(money(&m("1250000.5", "CNY"), Locale::En), "CNY 1,250,000.50");
        assert_eq!(money(&m("999.125", "USD"), Locale::ZhCn), "USD 999.125");
        assert_eq!(money(&m("0", "EUR"), Locale::En), "EUR 0.00");
        assert_eq!(money(&m("100", "HKD"), Locale::En), "HKD 100.00");
    }

    #[test]
    fn times_are_shown_in_the_zone_with_the_offset() {
        let at: DateTime<Utc> = "2026-11-26T21:07:00Z".parse().unwrap();
        let sh = chrono_tz::Asia::Shanghai;
        assert_eq!(datetime(at, sh, Locale::ZhCn), "2026年11月27日 05:07（UTC+08:00）");
        assert_eq!(datetime(at, sh, Locale::En), "27 Nov 2026, 05:07 (UTC+08:00)");
        assert_eq!(datetime(at, chrono_tz::Europe::London, Locale::En), "26 Nov 2026, 21:07 (UTC+00:00)");
    }

    #[test]
    fn durations_and_shares_read_in_the_readers_language() {
        assert_eq!(duration(93_784, Locale::ZhCn), "1 天 2 小时");
        assert_eq!(duration(3 * 3600 + 5 * 60, Locale::En), "3 h 5 min");
        assert_eq!(duration(600, Locale::ZhCn), "10 分钟");
        assert_eq!(duration(42, Locale::En), "42 s");
        assert_eq!(percent(Decimal::new(3333, 4)), "33.3 %");
        assert_eq!(percent(Decimal::ONE), "100 %");
    }

    #[test]
    fn labels_fall_back_to_the_code() {
        assert_eq!(label("awaiting_approval", Locale::ZhCn), "待审批");
        assert_eq!(label("loan", Locale::En), "loan");
        assert_eq!(label("something_new", Locale::ZhCn), "something_new");
    }
}
