//! The watch list compares normalised text: an order whose customer's name hides a
//! zero-width character, or whose ID number is written with separators, is still held
//! for compliance review under the watch-list rule.

use orderbridge::clock::Clock;

use crate::helpers::*;

#[tokio::test]
async fn disguised_names_and_id_numbers_are_flagged_for_review() {
    let app = TestApp::builder().clock(Clock::system()).start().await;
    // config/watchlist.csv lists the name 示例可疑公司 and the ID number 110101199003074477.
    let mut by_name = deal("D-WATCH-NAME", 1, "500000.00");
    by_name["deal"]["customer"]["name"] = "示例\u{200B}可疑\u{200D}公司".into();
    let mut by_number = deal("D-WATCH-ID", 1, "500000.00");
    by_number["deal"]["customer"]["id_document"]["number"] = "110101-19900307-4477".into();
    let plain = deal("D-WATCH-NONE", 1, "500000.00");

    for (d, on_list) in [(by_name, true), (by_number, true), (plain, false)] {
        let (s, b) = app.post_webhook(&d).await;
        assert_eq!(s, 202, "{b}");
        let (_, order) = app.api(&format!("/orders/{}", b["order_id"].as_str().unwrap())).await;
        let events = order["events"].to_string();
        assert_eq!(events.contains("WATCH-001"), on_list, "{}: {events}", d["deal"]["id"]);
        if on_list {
            assert_eq!(b["state"], "flagged", "{b}");
        }
    }
    app.stop().await;
}
