//! `orderbridge tokens …`: API tokens for clients and personal tokens for people,
//! made, listed, revoked and rotated in the data directory's token file
//! (`crate::auth::tokens`), whether or not the daemon runs. A secret is printed once.

use std::path::Path;

use anyhow::{Context as _, bail};
use chrono::Utc;
use clap::Subcommand;

use crate::auth::tokens::{Holder, TokenFile, TokenRecord};
use crate::engine::access::Action;

#[derive(Subcommand, Debug)]
pub(crate) enum TokensCmd {
    /// A new token; its secret is printed once.
    Create {
        /// For an API client (an integration) of this name.
        #[arg(long, conflicts_with = "person", required_unless_present = "person")]
        client: Option<String>,
        /// A personal token acting as this directory person.
        #[arg(long)]
        person: Option<String>,
        /// Actions it may take, comma-separated (a client needs at least one; a
        /// personal token without any may do what its person's roles allow).
        #[arg(long, value_delimiter = ',')]
        scopes: Vec<String>,
        /// Lifetime: `90d`, `12h`, …; without it the token does not expire.
        #[arg(long)]
        expires: Option<String>,
    },
    /// Every token (never a secret).
    List {
        #[arg(long)]
        json: bool,
    },
    /// Stops a token at once.
    Revoke { id: String },
    /// A new secret for a token (printed once); the old one stops at once.
    Rotate { id: String },
}

fn line(t: &TokenRecord) -> String {
    let (kind, name) = match &t.holder {
        Holder::Client(n) => ("client", n),
        Holder::Person(n) => ("person", n),
    };
    let scopes = if t.scopes.is_empty() {
        "(the person's roles)".to_owned()
    } else {
        t.scopes.iter().map(|a| a.name()).collect::<Vec<_>>().join(",")
    };
    let state = match (t.revoked_at, t.expires_at) {
        (Some(at), _) => format!("revoked {}", at.to_rfc3339()),
        (None, Some(at)) if at <= Utc::now() => format!("expired {}", at.to_rfc3339()),
        (None, Some(at)) => format!("expires {}", at.to_rfc3339()),
        (None, None) => "no expiry".to_owned(),
    };
    format!("{}  {kind}:{name}  {scopes}  {state}", t.id)
}

pub(crate) fn tokens(dir: &Path, cmd: TokensCmd) -> anyhow::Result<i32> {
    let settings = crate::settings::Settings::load_with(dir, false)
        .map_err(|p| anyhow::anyhow!(p.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n")))?;
    let file = TokenFile::under(&settings.store_path);
    let now = Utc::now();
    match cmd {
        TokensCmd::Create { client, person, scopes, expires } => {
            let scopes = scopes
                .iter()
                .map(|s| s.trim().parse::<Action>())
                .collect::<Result<Vec<_>, _>>()
                .map_err(anyhow::Error::msg)?;
            let holder = match (client, person) {
                (Some(c), None) => Holder::Client(c),
                (None, Some(p)) => {
                    let directory = crate::directory::Directory::load(dir).map_err(|p| {
                        anyhow::anyhow!(p.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))
                    })?;
                    if directory.person(&p).is_none() {
                        bail!("no person `{p}` in config/directory.toml");
                    }
                    Holder::Person(p)
                }
                _ => bail!("give --client NAME or --person ID"),
            };
            let expires_at = expires
                .as_deref()
                .map(crate::directory::parse_duration)
                .transpose()
                .map_err(anyhow::Error::msg)?
                .map(|d| now + chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX));
            let (rec, secret) = file.create(holder, scopes, expires_at, now)?;
            println!("{}", line(&rec));
            println!("{secret}");
            eprintln!("the token is shown only now: keep it in your secret store");
        }
        TokensCmd::List { json } => {
            let list = file.list()?;
            if json {
                println!("{}", serde_json::to_string_pretty(&list).context("tokens as JSON")?);
            } else {
                list.iter().for_each(|t| println!("{}", line(t)));
            }
        }
        TokensCmd::Revoke { id } => println!("{}", line(&file.revoke(&id, now)?)),
        TokensCmd::Rotate { id } => {
            let (rec, secret) = file.rotate(&id, now)?;
            println!("{}", line(&rec));
            println!("{secret}");
            eprintln!("the new token is shown only now; the old one no longer works");
        }
    }
    Ok(0)
}
