//! Personal data is masked for principals the policy table does not grant
//! `see_personal_data`: an API client or person who works on orders reads them with
//! the ID number, phone and e-mail masked (names stay), and the clear values appear
//! nowhere in the body; with the action (or the bootstrap admin token) they read them
//! in clear. In the console, a person without the action sees customer names in the
//! work lists, never the masked fields, and cannot open the order page.

use serde_json::{Value, json};

use crate::console::sign_in;
use crate::console_pages::two_orders;
use crate::helpers::*;

const ID_NUMBER: &str = "11010519491231002X";
const PHONE: &str = "+86 138 0013 8000";
const EMAIL: &str = "zhang.wei@example.com";
const CLEAR: [&str; 3] = [ID_NUMBER, PHONE, EMAIL];

/// `GET /api{path}` with `token`: the status and the body as sent.
async fn get_text(app: &TestApp, token: &str, path: &str) -> (u16, String) {
    let r = app.client.get(app.admin_url(&format!("/api{path}"))).bearer_auth(token).send().await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

fn assert_masked(body: &str) {
    for clear in CLEAR {
        assert!(!body.contains(clear), "`{clear}` in clear: {body}");
    }
}

fn assert_masked_customer(c: &Value) {
    assert_eq!(c["id_document"]["number"], "110*************2X", "{c}");
    assert_eq!(c["phone"], "+** *** **** 8000", "{c}");
    assert_eq!(c["email"], "z***@example.com", "{c}");
    assert_eq!(c["name"], "张伟", "names stay visible: {c}");
}

#[tokio::test]
async fn order_reads_are_masked_without_see_personal_data_and_clear_with_it() {
    let app = spawn_app().await;
    let mut deal = deal("D-MASK-1", 1, "500000.00");
    deal["deal"]["need"] = format!("张伟 asks to be called on {PHONE} (身份证 {ID_NUMBER})").into();
    let (s, b) = app.post_webhook(&deal).await;
    assert_eq!((s, b["state"].as_str()), (202, Some("awaiting_approval")), "{b}");
    let id = b["order_id"].as_str().unwrap().to_owned();

    // An integration that records deliveries, without the action: masked everywhere.
    let ops = app.token("client:fulfilment", &["record_delivery"], None);
    let (s, body) = get_text(&app, &ops, &format!("/orders/{id}")).await;
    assert_eq!(s, 200, "{body}");
    assert_masked(&body);
    let order: Value = serde_json::from_str(&body).unwrap();
    assert_masked_customer(&order["order"]["customer"]);
    assert_eq!(order["order"]["need"], "张伟 asks to be called on +** *** **** 8000 (身份证 110*************2X)");
    assert!(!order["events"].as_array().unwrap().is_empty(), "{order}");
    let (s, body) = get_text(&app, &ops, "/orders?state=awaiting_approval").await;
    assert_eq!(s, 200, "{body}");
    assert_masked(&body);
    let list: Value = serde_json::from_str(&body).unwrap();
    let listed = list["orders"].as_array().unwrap().iter().find(|o| o["id"] == id.as_str()).unwrap();
    assert_masked_customer(&listed["order"]["customer"]);
    let connector = order["source"]["connector"].as_str().unwrap();
    let (s, body) = get_text(&app, &ops, &format!("/orders?connector={connector}&external_id=D-MASK-1")).await;
    assert_eq!(s, 200, "{body}");
    assert_masked(&body);
    assert!(body.contains(&id), "{body}");
    // Documents cannot be masked: they stay behind the action.
    let (s, body) = get_text(&app, &ops, &format!("/orders/{id}/documents/contract")).await;
    assert_eq!(s, 403, "{body}");
    assert!(body.contains("see_personal_data"), "{body}");

    // A person without the action decides: the answer is masked too.
    let (s, b) =
        app.api_post_json_as("wang.fang", &format!("/orders/{id}/approvals"), &json!({"decision": "approve"})).await;
    assert_eq!(s, 200, "{b}");
    assert_masked(&b.to_string());
    assert_masked_customer(&b["order"]["customer"]);

    // With the action, and with the bootstrap admin token: in clear.
    let crm = app.token("client:crm-sync", &["see_personal_data"], None);
    let (s, body) = get_text(&app, &crm, &format!("/orders/{id}")).await;
    assert_eq!(s, 200, "{body}");
    for clear in CLEAR {
        assert!(body.contains(clear), "`{clear}` missing: {body}");
    }
    let zhou = app.person_token("zhou.min");
    let (s, body) = get_text(&app, &zhou, "/orders?state=executing").await;
    assert_eq!(s, 200, "{body}");
    assert!(body.contains(ID_NUMBER) && body.contains(EMAIL), "{body}");
    let admin = app.order(&id).await;
    assert_eq!(admin["order"]["customer"]["id_document"]["number"], ID_NUMBER, "{admin}");
    assert_eq!(admin["order"]["customer"]["phone"], PHONE, "{admin}");
    app.stop().await;
}

#[tokio::test]
async fn a_console_person_without_the_action_sees_names_only_and_no_order_page() {
    let smtp = SmtpServer::start(&[]);
    let app = TestApp::builder().mail(&smtp).start().await;
    let (_, small) = two_orders(&app).await;

    // liu.yang (after sales: exceptions and acceptance, no personal data).
    let mut liu = sign_in(&app, &smtp, "after-sales@bank.example").await;
    let list = liu.get("/console/exceptions").await;
    assert_eq!(list.status, 200, "{}", list.body);
    assert!(list.body.contains("张伟") && list.body.contains(&small), "{}", list.body);
    assert_masked(&list.body);
    assert!(
        !list.body.contains(&format!("href=\"/console/orders/{small}")),
        "no link to the order page: {}",
        list.body
    );
    let page = liu.get(&format!("/console/orders/{small}")).await;
    assert_eq!(page.status, 403, "{}", page.body);
    assert!(page.body.contains("liu.yang may not see_personal_data"), "{}", page.body);
    assert_masked(&page.body);
    // Through the API the same person reads the order masked.
    let (s, body) = get_text(&app, &app.person_token("liu.yang"), &format!("/orders/{small}")).await;
    assert_eq!(s, 200, "{body}");
    assert_masked(&body);
    app.stop().await;
}
