//! `[site]`: how the daemon presents itself to people: name, public URL, time zone,
//! default language, the pages' logo and accent colour.

use std::path::Path;

use serde::Deserialize;

use super::Problems;
use crate::locale::{Locale, Presentation};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawSite {
    /// Shown in mail and pages.
    pub(crate) name: String,
    /// Where people reach the daemon's pages: the base of every link in mail
    /// (default: `http://` and the address the daemon listens on).
    pub(crate) public_url: Option<String>,
    /// IANA zone for everything shown to people (times stay UTC inside).
    pub(crate) time_zone: String,
    /// Language for people whose locale is not known: `zh-CN` or `en`.
    pub(crate) default_locale: String,
    /// The pages' logo: an SVG, PNG, JPEG or WebP file (relative to the configuration
    /// directory), served by the daemon itself; none: the site's name alone.
    pub(crate) logo: Option<String>,
    /// The pages' accent colour (header, buttons, stepper), `#rrggbb`.
    pub(crate) color: String,
}

impl Default for RawSite {
    fn default() -> Self {
        RawSite {
            name: "orderbridge".into(),
            public_url: None,
            time_zone: "Asia/Shanghai".into(),
            default_locale: "zh-CN".into(),
            logo: None,
            color: DEFAULT_COLOR.into(),
        }
    }
}

/// The pages' accent colour when none is configured.
pub(crate) const DEFAULT_COLOR: &str = "#1f3a5f";
/// Largest logo file served.
const MAX_LOGO_BYTES: u64 = 512 * 1024;

/// The pages' logo, read once at start.
#[derive(Clone, PartialEq, Eq)]
pub struct Logo {
    pub content_type: &'static str,
    pub bytes: std::sync::Arc<[u8]>,
}

impl std::fmt::Debug for Logo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Logo").field("content_type", &self.content_type).field("bytes", &self.bytes.len()).finish()
    }
}

impl Logo {
    /// Reads a logo file; the type follows the extension.
    fn read(path: &Path) -> Result<Logo, String> {
        let ext = path.extension().and_then(|e| e.to_str()).unwrap_or_default().to_ascii_lowercase();
        let content_type = match ext.as_str() {
            "svg" => "image/svg+xml",
            "png" => "image/png",
            "jpg" | "jpeg" => "image/jpeg",
            "webp" => "image/webp",
            _ => return Err(format!("`{}`: a logo is an .svg, .png, .jpg or .webp file", path.display())),
        };
        let meta = std::fs::metadata(path).map_err(|e| format!("cannot read `{}`: {e}", path.display()))?;
        if meta.len() > MAX_LOGO_BYTES {
            return Err(format!("`{}` is larger than {MAX_LOGO_BYTES} bytes", path.display()));
        }
        let bytes = std::fs::read(path).map_err(|e| format!("cannot read `{}`: {e}", path.display()))?;
        Ok(Logo { content_type, bytes: bytes.into() })
    }
}

/// `#rrggbb`.
fn is_hex_color(s: &str) -> bool {
    s.len() == 7 && s.starts_with('#') && s[1..].chars().all(|c| c.is_ascii_hexdigit())
}

/// The site's presentation and logo, checked.
pub(super) fn parse(s: &RawSite, config_dir: &Path, p: &mut Problems<'_>) -> (Presentation, Option<Logo>) {
    let time_zone = match s.time_zone.parse::<chrono_tz::Tz>() {
        Ok(tz) => tz,
        Err(_) => {
            p.bad(&["site", "time_zone"], format!("`{}` is not an IANA time zone (e.g. Asia/Shanghai)", s.time_zone));
            chrono_tz::UTC
        }
    };
    let default_locale = match s.default_locale.parse::<Locale>() {
        Ok(l) => l,
        Err(e) => {
            p.bad(&["site", "default_locale"], e.to_string());
            Locale::ZhCn
        }
    };
    if let Some(u) = &s.public_url
        && !(u.starts_with("http://") || u.starts_with("https://"))
    {
        p.bad(&["site", "public_url"], format!("`{u}` is not an http(s) URL"));
    }
    if !is_hex_color(&s.color) {
        p.bad(&["site", "color"], format!("`{}` is not a colour written #rrggbb", s.color));
    }
    let logo = match s.logo.as_deref().map(|l| Logo::read(&config_dir.join(l))) {
        Some(Ok(logo)) => Some(logo),
        Some(Err(e)) => {
            p.bad(&["site", "logo"], e);
            None
        }
        None => None,
    };
    (Presentation { time_zone, default_locale }, logo)
}
