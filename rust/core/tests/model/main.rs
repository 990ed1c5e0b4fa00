//! Random sequences of operations, hostile ones included, driven through
//! [`Service::handle`] and checked response by response against a small reference model of
//! MSC4108 sessions (a map of id to payload, tag and expiry).
//!
//! The model is generic over the store ([`check_model`] takes a store factory), so that every
//! store gives the same observable behaviour. It runs for the memory store, and for the Redis
//! store against a `redis-server` the test starts itself on a free loopback port (it fails,
//! rather than skipping, when `redis-server` is not installed; `REDIS_SERVER` may name
//! another binary). `PROPTEST_CASES` sets the number of random sequences per store.
//!
//! Also home to the replay of the fuzz target's seed corpus (`rust/core/fuzz`, whose harness
//! is compiled into this test too) and to regression tests of what the fuzzer found.
//!
//! The modules: [`system`] (the core under test), [`ops`] and [`strategies`] (what random
//! sequences are made of), [`reference`], [`requests`] and [`expected`] (the model and what it
//! predicts), [`run`] and [`verify`] (driving a sequence and checking each response),
//! [`checks`] (checks on responses), [`stores`] (the Redis store's clock and broken stores).
//! The `redis-server` launcher is shared with the other Redis tests (`redis_support`).

// Helpers outside #[test] functions are test code too.
// Test code: failing loudly is the point, and times are computed from known constants.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::unchecked_time_subtraction
)]

/// Fails the case with a message when `cond` is false.
macro_rules! ensure {
    ($cond:expr, $($why:tt)+) => {
        if !$cond {
            return Err(format!($($why)+));
        }
    };
}

mod checks;
mod expected;
mod ops;
#[path = "../redis_support/mod.rs"]
mod redis_support;
mod reference;
mod requests;
mod run;
mod stores;
mod strategies;
#[path = "../support/mod.rs"]
mod support;
mod system;
mod verify;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use synapse_rendezvous_core::{MemoryStore, RedisConfig, Store};

use crate::expected::EVERY_OUTCOME;
use crate::ops::{
    Advance, Condition, ContentTypeChoice, Length, Op, OtherMethod, Pick, Target, Upload,
};
use crate::redis_support::{LinkedRedis, RedisServer, Watchdog, LIMIT};
use crate::run::{cases, check_model, run_ops};
use crate::stores::{redis_start, refuted, Fault, Faulty};
use crate::system::{fixed_start, MAX_PAYLOAD};

// ---------------------------------------------------------------------------------------
// The stores
// ---------------------------------------------------------------------------------------

/// 512 sequences of up to 80 operations (about two seconds unoptimised);
/// `PROPTEST_CASES` overrides the count.
#[test]
fn memory_store_follows_the_model() {
    let seen = check_model(
        "memory store",
        cases(512),
        80,
        &|capacity| Arc::new(MemoryStore::new(capacity)),
        fixed_start,
    );
    let missed: Vec<_> = EVERY_OUTCOME
        .iter()
        .filter(|label| !seen.contains_key(*label))
        .collect();
    assert!(
        missed.is_empty(),
        "the random runs never produced {missed:?}; seen: {seen:?}"
    );
}

/// The same model against the Redis store on a `redis-server` of its own, through the
/// production path (calls, a link, decoding) with the scripts on the manual clock: fewer
/// cases, since each operation is a round trip. Each case gets a fresh key prefix, which is
/// a fresh store. Fails (does not skip) without `redis-server`; `REDIS_SERVER` may name the
/// binary.
#[test]
fn redis_store_follows_the_model() {
    let _watchdog = Watchdog::arm("redis_store_follows_the_model", LIMIT);
    let server = RedisServer::start();
    let url = server.url();
    let stores = AtomicU64::new(0);
    let factory = |capacity| -> Arc<dyn Store> {
        let config = RedisConfig {
            key_prefix: format!("model{}:", stores.fetch_add(1, Ordering::Relaxed)),
            timeout: Duration::from_secs(5),
            pool_size: 1,
            ..RedisConfig::default()
        };
        Arc::new(LinkedRedis::new(&url, &config, capacity, true))
    };
    check_model("Redis store", cases(96), 40, &factory, redis_start);
}

// ---------------------------------------------------------------------------------------
// The model itself: it must refute broken stores
// ---------------------------------------------------------------------------------------

#[test]
fn model_refutes_broken_stores() {
    assert!(
        refuted(&|capacity| Arc::new(MemoryStore::new(capacity + 1))),
        "a store over capacity passed"
    );
    for (fault, what) in [
        (Fault::IgnoresPrecondition, "ignores If-Match"),
        (Fault::KeepsLastModified, "keeps Last-Modified"),
        (Fault::TagsByPayload, "tags by payload only"),
    ] {
        let factory = move |capacity| -> Arc<dyn Store> {
            Arc::new(Faulty {
                inner: MemoryStore::new(capacity),
                fault,
            })
        };
        assert!(refuted(&factory), "a store that {what} passed");
    }
}

// ---------------------------------------------------------------------------------------
// Regressions and fixed sequences
// ---------------------------------------------------------------------------------------

fn upload(body: &[u8]) -> Upload {
    Upload {
        body: body.to_vec(),
        length: Length::Exact,
        content_type: ContentTypeChoice::Valid("text/plain"),
    }
}

fn first() -> Pick {
    Pick(0)
}

/// A whole exchange with every kind of answer, so that the model itself is known to accept
/// a correct run (a model that refutes everything would fail here, not hide).
#[test]
fn scripted_exchange_follows_the_model() {
    let ops = vec![
        Op::Create(upload(b"")),
        Op::Get {
            target: Target::Known(first()),
            condition: Condition::Missing,
            head: false,
        },
        Op::Get {
            target: Target::Known(first()),
            condition: Condition::CurrentWeak,
            head: true,
        },
        Op::Put {
            target: Target::KnownEscaped(first()),
            condition: Condition::CurrentWeak,
            upload: upload(&[0xff; MAX_PAYLOAD]),
        },
        Op::Put {
            target: Target::Known(first()),
            condition: Condition::Stale(first()),
            upload: upload(b"late"),
        },
        Op::Put {
            target: Target::Known(first()),
            condition: Condition::Star,
            upload: upload(&[0xff; MAX_PAYLOAD]),
        },
        Op::Create(upload(b"b")),
        Op::Create(upload(b"c")),
        Op::Create(upload(b"d")),
        Op::Advance(Advance::JustBeforeExpiry(first())),
        Op::Create(upload(b"d")),
        Op::Advance(Advance::ToExpiry(first())),
        Op::Get {
            target: Target::Known(first()),
            condition: Condition::Missing,
            head: false,
        },
        Op::Create(upload(b"d")),
        Op::Delete(Target::Known(Pick(1))),
        Op::Delete(Target::Known(Pick(1))),
        Op::Other(Target::Known(first()), OtherMethod::Options),
        Op::Other(Target::Known(first()), OtherMethod::Patch),
        Op::Advance(Advance::PastTtl(0)),
        Op::Maintain,
        Op::Delete(Target::Known(Pick(2))),
    ];
    let seen = run_ops(
        &|capacity| Arc::new(MemoryStore::new(capacity)),
        fixed_start(),
        &ops,
    )
    .unwrap();
    assert!(
        seen.contains(&"429 capacity") && seen.contains(&"412"),
        "{seen:?}"
    );
}

// ---------------------------------------------------------------------------------------
// The fuzz harness, replayed without libFuzzer
// ---------------------------------------------------------------------------------------

/// The harness of the fuzz target (`rust/core/fuzz`), built here too so that it cannot rot
/// while the fuzz crate stays outside the workspace.
#[path = "../../fuzz/src/harness.rs"]
mod fuzz_harness;

/// Every seed of the fuzz corpus runs cleanly through the harness.
#[test]
fn fuzz_seed_corpus_replays_cleanly() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/handle_request");
    let mut seeds = 0;
    for entry in std::fs::read_dir(&dir).expect("the seed corpus") {
        let path = entry.unwrap().path();
        let data = std::fs::read(&path).unwrap();
        let outcome = std::panic::catch_unwind(|| fuzz_harness::run(&data));
        assert!(
            outcome.is_ok(),
            "seed {} broke an invariant",
            path.display()
        );
        seeds += 1;
    }
    assert!(seeds >= 12, "only {seeds} seeds in {}", dir.display());
}

/// Inputs the fuzzer once found crashing or breaking an invariant, each with what it was.
const FUZZ_REGRESSIONS: &[&[u8]] = &[
    // A failed HEAD (404 on an unknown path) carries the JSON error body, where a
    // successful HEAD carries none: the harness had assumed every HEAD answer is empty.
    b"GET /_synapsen/client/rendezvous/$0\n\n===\nGET /_synapse/client/rendezvousDELETE \
      None-Match: $T0\n\n===\nHEAD /_synapse/client/rendezusvo/$1\nIf-None-Match: $W1\n\n",
    b"HEAD /_synapse/client/rendezvous/$U\n\n",
];

#[test]
fn fuzz_regressions_stay_fixed() {
    for data in FUZZ_REGRESSIONS {
        fuzz_harness::run(data);
    }
}
