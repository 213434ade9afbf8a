//! The generic `rest` kind: inbound webhooks (Standard Webhooks signatures, a mapping)
//! and outbound operations (method + path, JSON body, idempotency key header, auth),
//! driven entirely by TOML.
//!
//! - `config`: the file as written, and presets filling it in.
//! - `builder`: validating the file and building the connector.
//! - `client`: what pushes, polls and the health call share (client, auth, URLs).
//! - `push`: outbound operations.
//! - `poll`: listing changed records, page by page.

mod builder;
mod client;
mod config;
mod poll;
mod push;

use std::ops::Range;

pub(crate) use config::Config;
pub(crate) use push::SNAPSHOT_BODY;

/// Every problem of one file, located where known.
type Problems = Vec<(Option<Range<usize>>, String)>;
