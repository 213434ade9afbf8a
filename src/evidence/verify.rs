//! Checking an evidence pack offline: the manifest's signature, then every file's
//! SHA-256 against it; the first file that fails is named. Files in the zip that the
//! manifest does not list fail too.

use std::collections::BTreeMap;
use std::io::Read as _;

use serde_json::Value;

use super::{FORMAT, MANIFEST, PUBLIC_KEY, SIGNATURE, SUMS, key};
use crate::versions::sha256_hex;

/// A pack that verified.
#[derive(Debug)]
pub struct Checked {
    pub order_id: String,
    pub files: usize,
    /// The key came from the pack itself (integrity only, not who made it).
    pub own_key: bool,
}

/// Checks `zip_bytes` against `public_key` (PEM; `None`: the key inside the pack).
///
/// # Errors
/// What failed, naming the file.
pub fn verify(zip_bytes: &[u8], public_key: Option<&str>) -> Result<Checked, String> {
    let files = read_all(zip_bytes)?;
    let get = |name: &str| files.get(name).ok_or_else(|| format!("{name}: missing from the pack"));
    let manifest_bytes = get(MANIFEST)?;
    let pem = match public_key {
        Some(p) => p.to_owned(),
        None => String::from_utf8_lossy(get(PUBLIC_KEY)?).into_owned(),
    };
    let public = key::parse_public_pem(&pem).map_err(|e| format!("public key: {e}"))?;
    if !key::verifies(&public, manifest_bytes, get(SIGNATURE)?) {
        return Err(format!("{MANIFEST}: the signature does not verify with this public key"));
    }
    let manifest: Value = serde_json::from_slice(manifest_bytes).map_err(|e| format!("{MANIFEST}: {e}"))?;
    if manifest["format"] != FORMAT {
        return Err(format!("{MANIFEST}: not an {FORMAT} manifest"));
    }
    let mut listed = vec![(SUMS.to_owned(), manifest["sha256sums"]["sha256"].as_str().unwrap_or_default().to_owned())];
    for f in manifest["files"].as_array().into_iter().flatten() {
        listed.push((
            f["path"].as_str().unwrap_or_default().to_owned(),
            f["sha256"].as_str().unwrap_or_default().to_owned(),
        ));
    }
    listed.rotate_left(1);
    for (path, want) in &listed {
        let bytes = get(path)?;
        if sha256_hex(bytes) != *want {
            return Err(format!("{path}: its SHA-256 differs from the manifest's (the file was changed)"));
        }
    }
    if let Some(extra) =
        files.keys().find(|n| ![MANIFEST, SIGNATURE].contains(&n.as_str()) && !listed.iter().any(|(p, _)| p == *n))
    {
        return Err(format!("{extra}: in the pack but not in the manifest"));
    }
    Ok(Checked {
        order_id: manifest["order_id"].as_str().unwrap_or_default().to_owned(),
        files: listed.len(),
        own_key: public_key.is_none(),
    })
}

/// Every entry of the zip by name; a name given twice is refused.
fn read_all(zip_bytes: &[u8]) -> Result<BTreeMap<String, Vec<u8>>, String> {
    let mut zip = zip::ZipArchive::new(std::io::Cursor::new(zip_bytes)).map_err(|e| format!("not a zip file: {e}"))?;
    let mut out = BTreeMap::new();
    for i in 0..zip.len() {
        let mut f = zip.by_index(i).map_err(|e| format!("zip entry {i}: {e}"))?;
        let name = f.name().map_err(|e| format!("zip entry {i}: {e}"))?.into_owned();
        let mut bytes = Vec::new();
        f.read_to_end(&mut bytes).map_err(|e| format!("{name}: {e}"))?;
        if out.insert(name.clone(), bytes).is_some() {
            return Err(format!("{name}: twice in the pack"));
        }
    }
    Ok(out)
}
