//! Masking a customer's personal data for principals the policy table does not grant
//! `see_personal_data`: the one home for what is masked and how. Pure functions over
//! the order's JSON representation (what the API and the console show), so every
//! reader masks the same way.
//!
//! Rules (characters, not bytes, so Chinese text is cut where people read it):
//! - ID document number (`customer.id_document.number`): the first 3 and the last 2
//!   characters stay (`110*************2X`); 6 to 7 characters keep the first and
//!   the last; shorter ones are masked whole.
//! - Phone (`customer.phone`): the last 4 digits stay (half of them for fewer than 8
//!   digits); every other digit becomes `*`, separators keep their place
//!   (`+** *** **** 8000`).
//! - E-mail (`customer.email`): the first character of the local part and the domain
//!   (`z***@example.com`); the local part's length is not shown.
//! - Postal address (`customer.address`, when a mapping provides one): the region only,
//!   up to the first city (`市`), else the first province or region (`省`, `自治区`,
//!   `特别行政区`), else the first comma-separated part, then `***`.
//! - Names and the CRM customer id stay visible: approvers, operations and work lists
//!   need to know whose order it is.
//!
//! Every clear value masked in a `customer` object is also replaced wherever else it
//! occurs in the same document (an event's order snapshot, a comment, an effect's
//! body), so a masked document never carries the clear value.

//!
//! Stored personal values may be tokens (`TOKEN_PREFIX`, encrypted by `crate::vault`):
//! the domain types take them as they are, and readers see them opened, or as
//! `ERASED` once the order's data key was deleted (masking leaves that word alone).

use serde_json::Value;

const MASK: char = '*';

/// How an encrypted personal value starts (`crate::vault::token`).
pub(crate) const TOKEN_PREFIX: &str = "enc:v1:";

/// What a personal value reads as once its order's data key was deleted.
pub(crate) const ERASED: &str = "erased";

/// Whether `s` is an encrypted personal value (its shape only: `crate::vault` opens it).
pub(crate) fn is_token(s: &str) -> bool {
    s.strip_prefix(TOKEN_PREFIX).and_then(|r| r.split_once(':')).is_some_and(|(id, body)| {
        id.starts_with("ord_")
            && !body.is_empty()
            && body.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    })
}

/// The ID document number with the first 3 and the last 2 characters kept.
pub(crate) fn mask_id_number(number: &str) -> String {
    let chars: Vec<char> = number.chars().collect();
    let n = chars.len();
    let (head, tail) = match n {
        8.. => (3, 2),
        6..=7 => (1, 1),
        _ => (0, 0),
    };
    chars.iter().enumerate().map(|(i, c)| if i < head || i >= n - tail { *c } else { MASK }).collect()
}

/// The phone number with only its last 4 digits (half of them when it has fewer
/// than 8); separators stay where they are.
pub(crate) fn mask_phone(phone: &str) -> String {
    let digits = phone.chars().filter(char::is_ascii_digit).count();
    let keep = if digits >= 8 { 4 } else { digits / 2 };
    let mut seen = 0;
    phone
        .chars()
        .map(|c| {
            if c.is_ascii_digit() {
                seen += 1;
                if seen > digits - keep { c } else { MASK }
            } else if c.is_alphanumeric() {
                MASK
            } else {
                c
            }
        })
        .collect()
}

/// The e-mail address with the local part's first character and the domain.
pub(crate) fn mask_email(email: &str) -> String {
    match email.rsplit_once('@') {
        Some((local, domain)) if local.chars().count() > 1 => {
            let first: String = local.chars().take(1).collect();
            format!("{first}***@{domain}")
        }
        Some((_, domain)) => format!("***@{domain}"),
        None => "***".to_owned(),
    }
}

/// The postal address cut after its region (city, else province), then `***`.
pub(crate) fn mask_address(address: &str) -> String {
    let t = address.trim();
    let end_after = |marker: &str| t.find(marker).map(|i| i + marker.len());
    let cut = end_after("市")
        .filter(|i| t[..*i].chars().count() <= 12)
        .or_else(|| ["省", "自治区", "特别行政区"].iter().filter_map(|m| end_after(m)).min())
        .or_else(|| t.find([',', '，']));
    match cut {
        Some(i) if i < t.len() => format!("{}***", &t[..i]),
        _ => "***".to_owned(),
    }
}

/// How one kind of personal value is masked.
type Rule = fn(&str) -> String;

/// The personal fields of a `customer` object: each one's path from there and its rule.
const FIELDS: [(&[&str], Rule); 4] = [
    (&["id_document", "number"], mask_id_number),
    (&["phone"], mask_phone),
    (&["email"], mask_email),
    (&["address"], mask_address),
];

/// Shortest clear value replaced elsewhere in the document: shorter ones would
/// match unrelated text.
const MIN_REPLACED_CHARS: usize = 4;

/// Masks, in place, the personal fields of every `customer` object in `doc` (the
/// order, each event's snapshot), then every other occurrence of their clear values.
pub(crate) fn mask_order_json(doc: &mut Value) {
    let mut found: Vec<(String, String)> = Vec::new();
    mask_customers(doc, &mut found);
    found.retain(|(clear, masked)| clear.chars().count() >= MIN_REPLACED_CHARS && clear != masked);
    // Longest first, so a value that contains another is replaced whole.
    found.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then_with(|| a.0.cmp(&b.0)));
    found.dedup();
    if !found.is_empty() {
        replace_everywhere(doc, &found);
    }
}

fn mask_customers(v: &mut Value, found: &mut Vec<(String, String)>) {
    match v {
        Value::Object(map) => {
            if let Some(customer) = map.get_mut("customer").filter(|c| c.is_object()) {
                for (path, rule) in FIELDS {
                    let Some(Value::String(s)) = path.iter().try_fold(&mut *customer, |c, k| c.get_mut(*k)) else {
                        continue;
                    };
                    if s == ERASED || is_token(s) {
                        continue;
                    }
                    let masked = rule(s);
                    found.push((std::mem::replace(s, masked.clone()), masked));
                }
            }
            map.values_mut().for_each(|c| mask_customers(c, found));
        }
        Value::Array(items) => items.iter_mut().for_each(|c| mask_customers(c, found)),
        _ => {}
    }
}

fn replace_everywhere(v: &mut Value, found: &[(String, String)]) {
    match v {
        Value::String(s) => {
            for (clear, masked) in found {
                if s.contains(clear.as_str()) {
                    *s = s.replace(clear.as_str(), masked);
                }
            }
        }
        Value::Object(map) => map.values_mut().for_each(|c| replace_everywhere(c, found)),
        Value::Array(items) => items.iter_mut().for_each(|c| replace_everywhere(c, found)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn id_numbers_keep_the_first_three_and_the_last_two() {
        assert_eq!(mask_id_number("11010519491231002X"), "110*************2X");
        assert_eq!(mask_id_number("91350100M000100Y43"), "913*************43");
        assert_eq!(mask_id_number("E12345678"), "E12****78");
        assert_eq!(mask_id_number("1234567"), "1*****7");
        assert_eq!(mask_id_number("123456"), "1****6");
        assert_eq!(mask_id_number("12345"), "*****");
        assert_eq!(mask_id_number("1"), "*");
        assert_eq!(mask_id_number(""), "");
    }

    #[test]
    fn phones_keep_the_last_four_digits_and_their_layout() {
        assert_eq!(mask_phone("+86 138 0013 8000"), "+** *** **** 8000");
        assert_eq!(mask_phone("13800138000"), "*******8000");
        assert_eq!(mask_phone("(010) 6552-9988"), "(***) ****-9988");
        // Fewer than 8 digits: half of them.
        assert_eq!(mask_phone("123456"), "***456");
        assert_eq!(mask_phone("12-34"), "**-34");
    }

    #[test]
    fn e_mail_keeps_the_first_character_and_the_domain() {
        assert_eq!(mask_email("zhang.wei@example.com"), "z***@example.com");
        assert_eq!(mask_email("z@example.cn"), "***@example.cn");
        assert_eq!(mask_email("张伟@例子.中国"), "张***@例子.中国");
        assert_eq!(mask_email("not-an-address"), "***");
    }

    #[test]
    fn addresses_keep_the_region_only_and_cut_on_characters() {
        assert_eq!(mask_address("北京市朝阳区建国路88号"), "北京市***");
        assert_eq!(mask_address("广东省深圳市南山区科技园1号"), "广东省深圳市***");
        assert_eq!(mask_address("新疆维吾尔自治区乌鲁木齐县某乡12号"), "新疆维吾尔自治区***");
        assert_eq!(mask_address("香港特别行政区中环皇后大道中1号"), "香港特别行政区***");
        assert_eq!(mask_address("Springfield, 742 Evergreen Terrace"), "Springfield***");
        assert_eq!(mask_address("上海市"), "***");
        assert_eq!(mask_address("某地某号"), "***");
    }

    #[test]
    fn an_order_document_is_masked_everywhere_and_names_stay() {
        let customer = json!({
            "id": "C-778", "name": "张伟", "kind": "individual",
            "id_document": {"type": "cn_resident_id", "number": "11010519491231002X"},
            "email": "zhang.wei@example.com", "phone": "+86 138 0013 8000",
            "address": "北京市朝阳区建国路88号",
        });
        let mut doc = json!({
            "order": {"customer": customer, "sales_owner": "li.na@bank.example"},
            "events": [
                {"event": {"type": "received", "order": {"customer": customer}}},
                {"event": {"type": "commented", "comment": "called +86 138 0013 8000 about 11010519491231002X"}},
            ],
        });
        mask_order_json(&mut doc);
        let text = doc.to_string();
        for clear in ["11010519491231002X", "zhang.wei@example.com", "+86 138 0013 8000", "建国路88号"] {
            assert!(!text.contains(clear), "{clear} in {text}");
        }
        let c = &doc["order"]["customer"];
        assert_eq!(c["id_document"]["number"], "110*************2X");
        assert_eq!(c["phone"], "+** *** **** 8000");
        assert_eq!(c["email"], "z***@example.com");
        assert_eq!(c["address"], "北京市***");
        assert_eq!((c["name"].as_str(), c["id"].as_str()), (Some("张伟"), Some("C-778")));
        assert_eq!(doc["order"]["sales_owner"], "li.na@bank.example");
        assert_eq!(doc["events"][0]["event"]["order"]["customer"], *c);
        assert_eq!(doc["events"][1]["event"]["comment"], "called +** *** **** 8000 about 110*************2X");
    }

    #[test]
    fn a_document_without_personal_data_is_left_as_it_is() {
        let mut doc = json!({"order": {"customer": {"id": "C-1", "name": "王芳"}}, "state": "received"});
        let before = doc.clone();
        mask_order_json(&mut doc);
        assert_eq!(doc, before);
    }
}
