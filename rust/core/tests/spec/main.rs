//! The behaviour MSC4108 (2024) clients rely on, as summarised in the project's brief and in
//! `docs/differences.md`, one test per rule, through the public API only: requests in,
//! responses out, time moved by a [`ManualClock`]. These tests are the semantic spec; the
//! Python suite tests what only Synapse and Twisted can break. One file per concept.
//!
//! [`ManualClock`]: synapse_rendezvous_core::ManualClock
// Test code: failing loudly is the point, and times are computed from known constants.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::unchecked_time_subtraction
)]

// Under cfg(test) so that clippy's allow-expect-in-tests covers the helpers too.
#[cfg(test)]
#[path = "../support/mod.rs"]
mod support;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use http::{Method, StatusCode};
use serde_json::json;
use support::{
    at, for_each_upload, list_contains, random_part, session_path, CountingEntropy, Harness,
    BASEURL,
};
use synapse_rendezvous_core::{Config, CREATE_PATH, SESSION_PREFIX};

/// An id that is well formed but was never issued.
const UNKNOWN_ID: &str = "01KQ3ZZZZZZZZZZZZZZZZZZZZZ";

/// The 4097-byte body: one byte over the default limit.
fn too_large() -> String {
    "x".repeat(4097)
}

mod checks;
mod clock;
mod conditional;
mod create;
mod headers;
mod ids;
mod lifecycle;
