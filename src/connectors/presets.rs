//! Vendor presets: a `connectors/<id>.toml` whose `kind` names a vendor is completed
//! with that vendor's defaults (base URL, auth shape, signature scheme, paging,
//! operation paths and references). The file's own values always win. The presets
//! are TOML, shown in the README, and built into the binary.

/// The preset text of a kind, if it has one.
pub fn text(kind: &str) -> Option<&'static str> {
    Some(match kind {
        "hubspot" => include_str!("presets/hubspot.toml"),
        "xero" => include_str!("presets/xero.toml"),
        "stripe" => include_str!("presets/stripe.toml"),
        "erpnext" => include_str!("presets/erpnext.toml"),
        _ => return None,
    })
}

/// The preset of a kind, parsed.
pub fn preset(kind: &str) -> Option<super::rest::Config> {
    text(kind).map(|t| toml::from_str(t).unwrap_or_else(|e| panic!("preset {kind} is broken: {e}")))
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_preset_parses() {
        for kind in super::super::KINDS {
            if let Some(p) = super::preset(kind) {
                assert_eq!(&p.kind, kind);
            }
        }
    }
}
