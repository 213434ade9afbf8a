//! Vendor presets: a `connectors/<id>.toml` whose `kind` names a vendor is completed
//! with that vendor's defaults (base URL, auth shape, signature scheme, paging,
//! operation paths and references). The file's own values always win. The presets
//! are TOML, shown in the README, and built into the binary.

use super::ConnectorKind;

/// The preset text of a kind, if it has one.
pub fn text(kind: ConnectorKind) -> Option<&'static str> {
    Some(match kind {
        ConnectorKind::Hubspot => include_str!("presets/hubspot.toml"),
        ConnectorKind::Xero => include_str!("presets/xero.toml"),
        ConnectorKind::Stripe => include_str!("presets/stripe.toml"),
        ConnectorKind::Erpnext => include_str!("presets/erpnext.toml"),
        ConnectorKind::Rest | ConnectorKind::Odoo => return None,
    })
}

/// The preset of a kind, parsed.
pub fn preset(kind: ConnectorKind) -> Option<super::rest::Config> {
    text(kind).map(|t| toml::from_str(t).unwrap_or_else(|e| panic!("preset {kind} is broken: {e}")))
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_preset_parses() {
        for kind in super::ConnectorKind::ALL {
            if let Some(p) = super::preset(kind) {
                assert_eq!(p.kind, kind.name());
            }
        }
    }
}
