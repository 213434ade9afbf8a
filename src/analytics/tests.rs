//! The KPIs against hand-computed values, and bottlenecks found in a generated history.

use chrono::{DateTime, Duration, TimeZone, Utc};
use rust_decimal::Decimal;

use super::journey::{Entry, Journey, Mark, Subject};
use super::report::Report;
use crate::domain::Money;
use crate::engine::calendar::Calendar;
use crate::engine::lifecycle::Stage;
use crate::engine::{Actor, OrderEvent as E, OrderState as S};

fn sh(s: &str) -> DateTime<Utc> {
    let naive = chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M").unwrap();
    chrono_tz::Asia::Shanghai.from_local_datetime(&naive).unwrap().with_timezone(&Utc)
}

/// Shanghai office hours (09:00–17:30, Mon–Fri) with New Year's Day 2027 off.
fn calendar() -> Calendar {
    let mut c = Calendar::office(chrono_tz::Asia::Shanghai);
    c.holidays.insert("2027-01-01".parse().unwrap());
    c
}

/// An audit trail written entry by entry.
struct Trail {
    subject: Subject,
    entries: Vec<(DateTime<Utc>, Actor, E, S)>,
}

impl Trail {
    fn new(product: &str, owner: &str) -> Trail {
        let subject = Subject { product: product.into(), sales_owner: owner.into(), rating: "A".into() };
        Trail { subject, entries: Vec::new() }
    }

    fn at(mut self, at: DateTime<Utc>, actor: Actor, event: E, state: S) -> Trail {
        self.entries.push((at, actor, event, state));
        self
    }

    fn received(self, at: DateTime<Utc>) -> Trail {
        let crm = Actor::Connector("crm".into());
        self.at(at, crm, E::Received { connector: "crm".into(), external_id: "x".into(), version: 1 }, S::Received).at(
            at,
            Actor::System,
            E::ScreeningStarted { rules_version: "v1".into() },
            S::Screening,
        )
    }

    fn awaiting(self, at: DateTime<Utc>, level: u8, of: u8) -> Trail {
        self.at(at, Actor::System, E::ApprovalReminderDue { level }, S::AwaitingApproval { level, of })
    }

    fn approved(self, at: DateTime<Utc>, by: Actor, level: u8, next: S) -> Trail {
        let event = E::Approved { level, role: format!("role{level}"), comment: String::new(), on_behalf_of: None };
        self.at(at, by, event, next)
    }

    fn task(self, from: DateTime<Utc>, to: DateTime<Utc>, department: &str, next: S) -> Trail {
        self.at(from, Actor::System, assigned(department), S::Executing).at(
            to,
            Actor::Connector("erp".into()),
            completed(department),
            next,
        )
    }

    /// The trail's journey, read from its events and, as a report reads its rows,
    /// from their JSON: both give the same journey.
    fn journey(&self) -> Journey {
        let full = Journey::of(
            self.subject.clone(),
            self.entries.iter().map(|(at, actor, event, state)| Entry::of(*at, actor, event, state)),
        );
        let marks: Vec<Mark> = self
            .entries
            .iter()
            .map(|(_, _, e, _)| serde_json::from_value(serde_json::to_value(e).unwrap()).unwrap())
            .collect();
        let read = Journey::of(
            self.subject.clone(),
            self.entries.iter().zip(&marks).map(|((at, actor, _, state), mark)| Entry {
                at: *at,
                actor,
                mark: std::borrow::Cow::Borrowed(mark),
                state,
            }),
        );
        assert_eq!(read, full, "the journey read from the JSON");
        full
    }
}

fn assigned(department: &str) -> E {
    let task = format!("{department}-task");
    E::TaskAssigned { task: task.clone(), name: task, department: department.into() }
}

fn completed(department: &str) -> E {
    E::TaskCompleted { task: format!("{department}-task"), note: String::new() }
}

fn person(p: &str) -> Actor {
    Actor::Person(p.into())
}

fn cny(s: &str) -> Money {
    serde_json::from_value(serde_json::json!({"amount": s, "currency": "CNY"})).unwrap()
}

/// Three orders whose every figure is computed by hand in the comments.
fn fixture() -> Vec<Journey> {
    // A: received Thursday 2026-12-31 16:00. Level 1 waits to Monday 10:00: 1.5 h on
    // Thursday, New Year's Day and the weekend off, 1 h on Monday = 2.5 h of business
    // hours (3 d 18 h elapsed). Ops works 10:00–15:00; closed at 16:00: 4 d elapsed,
    // 1.5 h + 7 h = 8.5 h of business hours. Survey: 5.
    let a = Trail::new("loan", "zhang@example.cn")
        .received(sh("2026-12-31 16:00"))
        .awaiting(sh("2026-12-31 16:00"), 1, 1)
        .approved(sh("2027-01-04 10:00"), person("wang@example.cn"), 1, S::Approved)
        .at(sh("2027-01-04 10:00"), Actor::System, E::ExecutionStarted, S::Executing)
        .task(sh("2027-01-04 10:00"), sh("2027-01-04 15:00"), "ops", S::Delivered)
        .at(sh("2027-01-04 16:00"), Actor::System, E::Closed, S::Closed)
        .at(
            sh("2027-01-05 09:00"),
            person("c"),
            E::SurveyAnswered { score: 5, comment: "好".into(), complaint: false },
            S::Closed,
        );
    // B: received Monday 2027-01-04 09:00, approved automatically at once. Ops from
    // 09:00 to Tuesday 09:30: 8.5 h + 0.5 h = 9 h of business hours. An exception,
    // invoiced Tuesday 10:00, overdue, dunned, paid and closed on Tuesday 2027-01-12
    // 10:00: invoice to cash 7 d; received to closed 8 d 1 h elapsed and 6 × 8.5 h +
    // 1 h = 52 h of business hours. Survey: 2 with a complaint, so a ticket.
    let b = Trail::new("loan", "li@example.cn")
        .received(sh("2027-01-04 09:00"))
        .awaiting(sh("2027-01-04 09:00"), 1, 1)
        .approved(sh("2027-01-04 09:00"), Actor::System, 1, S::Approved)
        .at(sh("2027-01-04 09:00"), Actor::System, E::ExecutionStarted, S::Executing)
        .at(sh("2027-01-04 09:00"), Actor::System, assigned("ops"), S::Executing)
        .at(
            sh("2027-01-04 11:00"),
            person("ops"),
            E::ExceptionOpened { reason: "缺件".into() },
            S::Exception { during: Stage::Executing },
        )
        .at(
            sh("2027-01-04 12:00"),
            person("ops"),
            E::ExceptionResolved { resolution: "ok".into(), cancel: false },
            S::Executing,
        )
        .at(sh("2027-01-05 09:30"), person("ops"), completed("ops"), S::Delivered)
        .at(sh("2027-01-05 10:00"), Actor::System, invoice(), S::Invoiced)
        .at(sh("2027-01-08 00:00"), Actor::System, E::PaymentOverdue, S::Overdue)
        .at(sh("2027-01-09 00:00"), Actor::System, E::DunningDue { step: "first".into(), days_overdue: 1 }, S::Overdue)
        .at(sh("2027-01-12 10:00"), Actor::Connector("bank".into()), paid(), S::Paid)
        .at(sh("2027-01-12 10:00"), Actor::System, E::Closed, S::Closed)
        .at(
            sh("2027-01-12 11:00"),
            person("c"),
            E::SurveyAnswered { score: 2, comment: "慢".into(), complaint: true },
            S::Closed,
        )
        .at(sh("2027-01-12 11:00"), Actor::System, ticket(), S::Closed);
    // C: received Monday 2027-01-04 11:00, declined by li after 1 h.
    let c = Trail::new("card", "zhang@example.cn")
        .received(sh("2027-01-04 11:00"))
        .awaiting(sh("2027-01-04 11:00"), 1, 1)
        .at(
            sh("2027-01-04 12:00"),
            person("li@example.cn"),
            E::ApprovalDeclined { level: 1, role: "role1".into(), comment: "no".into() },
            S::Rejected,
        );
    vec![a.journey(), b.journey(), c.journey()]
}

fn invoice() -> E {
    E::InvoiceIssued {
        number: "INV-1".into(),
        net: cny("100.00"),
        tax: cny("6.00"),
        total: cny("106.00"),
        due: "2027-01-07".parse().unwrap(),
    }
}

fn paid() -> E {
    E::PaymentReceived {
        amount: cny("106.00"),
        settled: true,
        payment_id: "p1".into(),
        outstanding: None,
        excess: None,
    }
}

fn ticket() -> E {
    E::AfterSalesTicketRequested { score: 2, comment: "慢".into(), reason: "score 2".into() }
}

const H: i64 = 3600;
const D: i64 = 86_400;

#[test]
fn every_kpi_equals_its_hand_computed_value() {
    let cal = calendar();
    let journeys = fixture();
    let r = Report::of(sh("2026-12-01 00:00"), sh("2027-02-01 00:00"), &journeys, &[], &cal);
    let k = &r.kpis;
    assert_eq!(k.orders, 3);
    assert_eq!(k.ended.get("closed"), Some(&2));
    assert_eq!(k.ended.get("rejected"), Some(&1));
    // Received → closed: A 4 d (8.5 h of business hours), B 8 d 1 h (52 h).
    let closed = &k.processing.to_closed;
    assert_eq!((closed.elapsed.count, closed.elapsed.median_s, closed.elapsed.p90_s), (2, 4 * D, 8 * D + H));
    assert_eq!(closed.business_hours.total_s, 8 * H + H / 2 + 52 * H);
    // Level 1: A 2.5 h (by wang), B at once (automatic), C 1 h (declined by li).
    let level = &k.approval_levels[0];
    assert_eq!((level.key.as_str(), level.approved, level.declined), ("1", 2, 1));
    assert_eq!(level.wait.business_hours.total_s, 2 * H + H / 2 + H);
    assert_eq!(level.wait.business_hours.median_s, H);
    assert_eq!(level.wait.elapsed.p90_s, 3 * D + 18 * H);
    let approvers: Vec<_> = k.approvers.iter().map(|d| (d.key.as_str(), d.wait.business_hours.total_s)).collect();
    assert_eq!(approvers, [("li@example.cn", H), ("wang@example.cn", 2 * H + H / 2)]);
    // Ops: A 5 h, B 9 h of business hours (24.5 h elapsed).
    let ops = &k.departments["ops"];
    assert_eq!((ops.business_hours.total_s, ops.elapsed.p90_s), (14 * H, 24 * H + H / 2));
    // The approval wait of A, as a stage, is the same 2.5 h.
    assert_eq!(k.stages["awaiting_approval.1"].business_hours.p90_s, 2 * H + H / 2);
    let dec = |s: &str| Some(s.parse::<Decimal>().unwrap());
    assert_eq!(k.auto_approval_share, dec("0.5"));
    assert_eq!(k.exceptions_per_100, dec("33.33"));
    assert_eq!(k.tickets_per_100, dec("33.33"));
    assert_eq!((k.rework, k.sla_breaches), (0, 0));
    assert_eq!(k.invoice_to_cash.median_s, 7 * D);
    assert_eq!(k.overdue_ratio, dec("1"));
    assert_eq!(k.dunning_success, dec("1"));
    let s = &k.satisfaction;
    assert_eq!((s.answers, s.promoters, s.passives, s.detractors, s.complaints), (2, 1, 0, 1, 1));
    assert_eq!((s.average, s.net), (dec("3.5"), dec("0")));
    // By product: two loans (both closed), one card.
    let loan = &k.by_product[0];
    assert_eq!((loan.key.as_str(), loan.orders, loan.closed, loan.to_closed_median_s), ("loan", 2, 2, Some(4 * D)));
    let months: Vec<_> = k.by_month.iter().map(|h| (h.key.as_str(), h.orders)).collect();
    assert_eq!(months, [("2027-01", 2), ("2026-12", 1)]);
    assert_eq!(r.current.orders, 3);
    assert_eq!(r.previous.orders, 0);
}

#[test]
fn the_process_map_counts_moves_and_paths() {
    let r = Report::of(sh("2026-12-01 00:00"), sh("2027-02-01 00:00"), &fixture(), &[], &calendar());
    let arc = |from: &str, to: &str| r.process.arcs.iter().find(|a| a.from == from && a.to == to).cloned();
    let screened = arc("screening", "awaiting_approval.1").unwrap();
    assert_eq!(screened.count, 3);
    let declined = arc("awaiting_approval.1", "rejected").unwrap();
    assert_eq!((declined.count, declined.median_s), (1, H));
    assert_eq!(r.process.variant_count, 3);
    assert!(r.process.variants.iter().all(|v| v.orders == 1));
    // Approvers waited for: wang (2.5 h) before li (1 h); the automatic one is no person.
    let names: Vec<_> = r.process.approvers.iter().map(|b| b.name.as_str()).collect();
    assert_eq!(names, ["wang@example.cn", "li@example.cn"]);
}

/// A small deterministic generator (no dependency for tests' randomness).
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self.0.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % n
    }
}

#[test]
fn injected_delays_are_named_as_the_top_bottlenecks_with_their_durations() {
    let cal = calendar();
    let start = sh("2026-09-01 09:00");
    let mut rng = Lcg(7);
    let mut journeys = Vec::new();
    // 3 000 orders over 90 days; every stage takes 30–90 minutes of business hours,
    // except approval level 2 (16 h more) and the legal department's tasks (8 h more).
    for n in 0..3000_i64 {
        let received = cal.add(start + Duration::minutes(n * 43), Duration::zero());
        let mut at = received;
        let mut step = |extra_h: i64, rng: &mut Lcg| {
            let took = Duration::minutes(30 + i64::try_from(rng.below(61)).unwrap()) + Duration::hours(extra_h);
            at = cal.add(at, took);
            at
        };
        let l1 = step(0, &mut rng);
        let l2 = step(16, &mut rng);
        let department = ["ops", "legal", "it"][usize::try_from(rng.below(3)).unwrap()];
        let done = step(if department == "legal" { 8 } else { 0 }, &mut rng);
        let closed = step(0, &mut rng);
        let trail = Trail::new("loan", "zhang@example.cn")
            .received(received)
            .awaiting(received, 1, 2)
            .approved(l1, person("a1"), 1, S::AwaitingApproval { level: 2, of: 2 })
            .approved(l2, person("a2"), 2, S::Approved)
            .at(l2, Actor::System, E::ExecutionStarted, S::Executing)
            .task(l2, done, department, S::Delivered)
            .at(closed, Actor::System, E::Closed, S::Closed);
        journeys.push(trail.journey());
    }
    let r = Report::of(start, start + Duration::days(90), &journeys, &[], &cal);
    let top: Vec<_> = r.process.bottlenecks.iter().take(2).map(|b| (b.kind, b.name.as_str())).collect();
    assert_eq!(top, [("stage", "awaiting_approval.2"), ("department", "legal")]);
    // The medians are the injected delay plus the usual hour (30–90 minutes, median 60).
    let median = |i: usize| r.process.bottlenecks[i].business_hours.median_s;
    let about = |hours: i64| (hours * H + 55 * 60)..=(hours * H + 65 * 60);
    assert!(about(16).contains(&median(0)), "level 2: {} s", median(0));
    assert!(about(8).contains(&median(1)), "legal: {} s", median(1));
    // The others take about an hour.
    assert!(r.process.bottlenecks[2..].iter().all(|b| b.business_hours.median_s <= 91 * 60));
    assert_eq!(r.process.approvers[0].name, "a2");
}
