//! Segregation of duties compares mailboxes, not text: a plus-alias or another case
//! of the sales owner's address is still the sales owner. A sales owner who is not in
//! the directory still hears about a flagged order, but not why (no watch-list hits:
//! that would be tipping-off).

use orderbridge::clock::Clock;
use serde_json::json;

use crate::helpers::*;

#[tokio::test]
async fn the_sales_owner_cannot_approve_their_own_order_under_an_alias() {
    let app = spawn_app().await;
    // zhao.lei is a line supervisor; the CRM names him as the owner, aliased.
    for (ext, owner) in [("D-SOD-1", "zhao.lei+deals@bank.example"), ("D-SOD-2", "Zhao.Lei@Bank.Example")] {
        let mut d = deal(ext, 1, "500000.00");
        d["deal"]["owner_email"] = owner.into();
        let (s, b) = app.post_webhook(&d).await;
        assert_eq!((s, b["state"].as_str()), (202, Some("awaiting_approval")), "{b}");
        let id = b["order_id"].as_str().unwrap().to_owned();

        let (s, b) = app
            .api_post_json_as(
                "zhao.lei",
                &format!("/orders/{id}/approvals"),
                &json!({"decision": "approve", "comment": "同意"}),
            )
            .await;
        assert_eq!((s, b["error"]["code"].as_str()), (403, Some("forbidden")), "{owner}: {b}");
        assert!(b["error"]["message"].as_str().unwrap().contains("segregation of duties"), "{b}");
        assert_eq!(app.order(&id).await["state"], "awaiting_approval");
        // Another line supervisor may.
        let (s, b) = app
            .api_post_json_as(
                "wang.fang",
                &format!("/orders/{id}/approvals"),
                &json!({"decision": "approve", "comment": "同意"}),
            )
            .await;
        assert_eq!(s, 200, "{b}");
    }
    app.stop().await;
}

#[tokio::test]
async fn a_sales_owner_outside_the_directory_gets_no_screening_details() {
    let smtp = SmtpServer::start(&[]);
    let app = TestApp::builder().clock(Clock::system()).mail(&smtp).start().await;
    // A customer on the watch list, owned by someone the directory does not know.
    let mut d = deal("D-TIPOFF", 1, "500000.00");
    d["deal"]["customer"]["id"] = "C-9001".into();
    d["deal"]["owner_email"] = "broker@partner.example".into();
    let (s, b) = app.post_webhook(&d).await;
    assert_eq!((s, b["state"].as_str()), (202, Some("flagged")), "{b}");

    wait_until("the owner's flagged-order mail", || async {
        smtp.messages().iter().any(|m| m.rcpt() == vec!["broker@partner.example".to_owned()])
    })
    .await;
    let mails = smtp.messages();
    let to_owner = mails.iter().find(|m| m.rcpt() == vec!["broker@partner.example".to_owned()]).unwrap();
    let text = format!("{}\n{}", to_owner.part("text/plain"), to_owner.part("text/html"));
    assert!(text.contains("D-TIPOFF") || text.contains("张伟"), "it is the order's mail: {text}");
    for never in ["WATCH-001", "关注名单", "watch list"] {
        assert!(!text.contains(never), "`{never}` told to an outsider: {text}");
    }
    // The audit trail keeps why (staff in the directory are told it).
    let (_, order) = app.api(&format!("/orders/{}", b["order_id"].as_str().unwrap())).await;
    assert!(order["events"].to_string().contains("WATCH-001"), "the audit keeps it");
    app.stop().await;
}
