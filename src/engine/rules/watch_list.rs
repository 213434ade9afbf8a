//! The watch list: customers nobody may sell to without a second look, and how an
//! order's customer is compared with it. Both sides go through the same normalisation
//! (Unicode NFKC, invisible characters removed), so a zero-width space inside a name,
//! full-width digits or hyphens in an ID number do not slip past it.

use std::collections::HashSet;

use unicode_normalization::{IsNormalized, UnicodeNormalization};

use crate::domain::Order;

/// Customers nobody may sell to without a second look: ids, ID numbers, names.
#[derive(Clone, Debug, Default)]
pub(crate) struct WatchList {
    customer_ids: HashSet<String>,
    id_numbers: HashSet<String>,
    names: HashSet<String>,
}

/// Characters that show as nothing: zero-width space, non-joiner and joiner, word
/// joiner, byte-order mark, soft hyphen.
fn invisible(c: char) -> bool {
    matches!(c, '\u{200B}'..='\u{200D}' | '\u{2060}' | '\u{FEFF}' | '\u{00AD}')
}

/// NFKC (full-width letters and digits become ASCII, the ideographic space a space)
/// without invisible characters, trimmed.
fn clean(text: &str) -> String {
    let visible = || text.chars().filter(|c| !invisible(*c));
    // Most text is in NFKC already (ASCII always is): the quick check spares the
    // decomposition and recomposition every order's customer would go through.
    let normal: String = if unicode_normalization::is_nfkc_quick(visible()) == IsNormalized::Yes {
        visible().collect()
    } else {
        visible().nfkc().collect()
    };
    normal.trim().to_owned()
}

/// A name: clean, blanks collapsed, case folded.
pub(crate) fn name_key(name: &str) -> String {
    clean(name).split_whitespace().collect::<Vec<_>>().join(" ").to_lowercase()
}

/// An ID number: clean, without separators (blanks, hyphens, dots), upper case (the
/// trailing `X` of a Chinese resident ID).
pub(crate) fn id_number_key(number: &str) -> String {
    clean(number).chars().filter(|c| !(c.is_whitespace() || matches!(c, '-' | '.'))).collect::<String>().to_uppercase()
}

impl WatchList {
    /// Parses `kind,value[,reason]` lines (`kind`: customer_id, id_number, name);
    /// `#` starts a comment. Errors carry the 1-based line.
    pub(crate) fn parse(text: &str) -> Result<WatchList, Vec<(usize, String)>> {
        let mut w = WatchList::default();
        let mut problems = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let mut parts = line.splitn(3, ',').map(str::trim);
            let (kind, value) = (parts.next().unwrap_or_default(), parts.next().unwrap_or_default());
            if clean(value).is_empty() {
                problems.push((i + 1, format!("expected `kind,value[,reason]`, got `{line}`")));
                continue;
            }
            match kind {
                "customer_id" => w.customer_ids.insert(clean(value)),
                "id_number" => w.id_numbers.insert(id_number_key(value)),
                "name" => w.names.insert(name_key(value)),
                other => {
                    problems.push((i + 1, format!("unknown kind `{other}` (customer_id, id_number, name)")));
                    continue;
                }
            };
        }
        if problems.is_empty() { Ok(w) } else { Err(problems) }
    }

    pub(crate) fn matches(&self, order: &Order) -> bool {
        let c = &order.customer;
        self.customer_ids.contains(&clean(c.id.as_str()))
            || c.id_document.as_ref().is_some_and(|d| self.id_numbers.contains(&id_number_key(d.number.as_str())))
            || self.names.contains(&name_key(c.name.as_str()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list() -> WatchList {
        WatchList::parse("name,示例可疑公司\nname,ACME  Trading\nid_number,11010519491231002X\ncustomer_id,C-9001\n")
            .unwrap()
    }

    proptest::proptest! {
        #[test]
        fn the_quick_check_cleans_as_full_normalisation_does(text in "\\PC{0,24}|[ -~\u{3000}-\u{30FF}\u{FF01}-\u{FF5E}\u{200B}\u{FEFF}\u{00AD}]{0,24}") {
            let full = text.chars().filter(|c| !invisible(*c)).nfkc().collect::<String>().trim().to_owned();
            proptest::prop_assert_eq!(clean(&text), full);
        }
    }

    #[test]
    fn zero_width_characters_inside_a_name_still_hit() {
        let w = list();
        for name in [
            "示例\u{200B}可疑公司",
            "示\u{200D}例可疑\u{FEFF}公司",
            "示例可\u{2060}疑\u{00AD}公司",
            "示例\u{200C}可疑公司",
        ] {
            assert!(w.names.contains(&name_key(name)), "{name:?}");
        }
        assert!(w.names.contains(&name_key("ＡＣＭＥ\u{3000}trading")), "full-width letters and space");
        assert!(!w.names.contains(&name_key("示例可疑公")), "a different name");
    }

    #[test]
    fn id_numbers_hit_with_full_width_digits_separators_and_lower_case_x() {
        let w = list();
        for n in [
            "１１０１０５１９４９１２３１００２Ｘ",
            "110105-19491231-002X",
            "110105 19491231 002X",
            "110.105.194.912.310.02X",
            "11010519491231002x",
            "\u{200B}11010519491231002x\u{FEFF}",
        ] {
            assert!(w.id_numbers.contains(&id_number_key(n)), "{n:?}");
        }
        assert!(!w.id_numbers.contains(&id_number_key("110105194912310021")));
    }

    #[test]
    fn the_list_itself_is_normalised() {
        let w =
            WatchList::parse("id_number,１１０１０５-１９４９１２３１-００２ｘ\nname,示例\u{200B}可疑公司\n").unwrap();
        assert!(w.id_numbers.contains("11010519491231002X"));
        assert!(w.names.contains("示例可疑公司"));
        assert_eq!(WatchList::parse("name,\u{200B}\n").unwrap_err()[0].0, 1, "an invisible value is empty");
        assert!(w.customer_ids.is_empty() && list().customer_ids.contains("C-9001"));
    }
}
