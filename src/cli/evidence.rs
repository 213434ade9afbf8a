//! `evidence`: an order's evidence pack (`crate::evidence`), its check, and the public
//! key that checks it.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use clap::{Args, Subcommand};
use secrecy::ExposeSecret as _;

use super::{Source, fetch_order};
use crate::evidence;
use crate::settings::Settings;

#[derive(Args, Debug)]
#[command(args_conflicts_with_subcommands = true)]
pub(crate) struct EvidenceArgs {
    #[command(subcommand)]
    cmd: Option<EvidenceCmd>,
    /// The order (`ord_…`).
    id: Option<String>,
    /// The zip file to write.
    #[arg(long)]
    out: Option<PathBuf>,
}

#[derive(Subcommand, Debug)]
enum EvidenceCmd {
    /// Check a pack offline; exit 1 naming the first file that fails.
    Verify {
        file: PathBuf,
        /// The daemon's public key (PEM, from `evidence public-key`); default: the key
        /// the configuration holds, else the one inside the pack (integrity only).
        #[arg(long)]
        public_key: Option<PathBuf>,
    },
    /// Print the public key that checks this daemon's packs (PEM).
    PublicKey,
}

fn settings(config_dir: &Path) -> anyhow::Result<Settings> {
    Settings::load_with(config_dir, false)
        .map_err(|ds| anyhow::anyhow!(ds.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n")))
}

fn signing_key(s: &Settings) -> anyhow::Result<ring::signature::Ed25519KeyPair> {
    let Some(k) = &s.evidence_key else {
        bail!("no evidence signing key: set [evidence] signing_key (a secret reference) and make it readable here")
    };
    evidence::key::signing_key(k.expose_secret()).map_err(anyhow::Error::msg)
}

pub(super) async fn run(config_dir: &Path, args: EvidenceArgs) -> anyhow::Result<i32> {
    match args.cmd {
        Some(EvidenceCmd::PublicKey) => {
            print!("{}", evidence::key::public_pem(&signing_key(&settings(config_dir)?)?));
            Ok(0)
        }
        Some(EvidenceCmd::Verify { file, public_key }) => verify(config_dir, &file, public_key.as_deref()),
        None => {
            let (Some(id), Some(out)) = (args.id, args.out) else {
                bail!("usage: orderbridge evidence ORDER_ID --out FILE.zip (or evidence verify / public-key)")
            };
            let s = settings(config_dir)?;
            let key = signing_key(&s)?;
            let src = Source::open(config_dir).await?;
            let order = fetch_order(&src, id.parse()?).await?;
            let zip = evidence::build(&order, &s.store_path, &key, chrono::Utc::now()).map_err(anyhow::Error::msg)?;
            std::fs::write(&out, &zip).with_context(|| format!("writing {}", out.display()))?;
            println!("{}: evidence pack of {id} ({} bytes), signed", out.display(), zip.len());
            Ok(0)
        }
    }
}

fn verify(config_dir: &Path, file: &Path, public_key: Option<&Path>) -> anyhow::Result<i32> {
    let bytes = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
    let pem = match public_key {
        Some(p) => Some(std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?),
        None => settings(config_dir).ok().and_then(|s| signing_key(&s).ok()).map(|k| evidence::key::public_pem(&k)),
    };
    match evidence::verify(&bytes, pem.as_deref()) {
        Ok(c) => {
            println!("evidence intact: {} ({} files verified)", c.order_id, c.files);
            if c.own_key {
                println!(
                    "note: checked with the public key inside the pack, which proves it is unchanged, not who made it; pass --public-key"
                );
            }
            Ok(0)
        }
        Err(e) => {
            println!("evidence BROKEN: {e}");
            Ok(1)
        }
    }
}
