//! End-to-end tests over real TCP against the real daemon (in-process or the built
//! binary). One test binary, one module per feature.
// Test functions tell a story end to end; the 80-line limit is for the product code.
#![allow(clippy::too_many_lines)]

mod helpers;

mod amounts;
mod anchor;
mod approval;
mod archive;
mod audit_keys;
mod bench_peers;
mod book;
mod cash;
mod check;
mod cli;
mod compliance;
mod console;
mod console_pages;
mod console_reports;
mod console_rules;
mod console_screens;
mod crash;
mod credentials;
mod dispatcher;
mod docker;
mod event_permissions;
mod evidence;
mod export;
mod fairness;
mod feedback;
mod first_command;
mod intake;
mod intake_path;
mod leaks;
mod listeners;
mod mail;
mod masking;
mod oidc;
mod outbound_bodies;
mod poll;
mod postgres;
mod principals;
mod prism;
mod privacy;
mod replicas;
mod reports;
mod rules_diff;
mod rules_review;
mod runbooks;
mod scheduled_reports;
mod screens;
mod separation;
mod shadow;
mod signatures;
mod store;
mod vendor_shapes;
mod versions;
mod watch_list;
mod weak_secrets;
