//! The Redis store against a real `redis-server`: the store contract run against both the
//! memory and the Redis store, then what only a shared store does (several processes,
//! concurrent writers, key prefixes, the data model, data it did not write).

// The contract checks and helpers are not `#[test]` functions, which clippy's
// allow-unwrap-in-tests does not reach.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod redis_support;
mod store_contract;

use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use redis_support::{fresh, store, RedisServer, Watchdog, LIMIT};
use synapse_rendezvous_core::{
    CreateOutcome, EntityTagList, ReplaceOutcome, Session, Store, StoreError, SystemEntropy,
};

macro_rules! contract {
    ($($check:ident),* $(,)?) => {
        mod on_memory {
            use synapse_rendezvous_core::MemoryStore;
            $(
                #[test]
                fn $check() {
                    let _watchdog = crate::Watchdog::arm(stringify!($check), crate::LIMIT);
                    crate::store_contract::$check(&|capacity| Box::new(MemoryStore::new(capacity)));
                }
            )*
        }
        mod on_redis {
            $(
                #[test]
                fn $check() {
                    let _watchdog = crate::Watchdog::arm(stringify!($check), crate::LIMIT);
                    let server = crate::RedisServer::start();
                    let port = server.port();
                    crate::store_contract::$check(&|capacity| {
                        Box::new(crate::store(port, "contract:", capacity))
                    });
                }
            )*
        }
    };
}

contract!(
    create_then_get_round_trips_exactly,
    replace_checks_the_current_tag,
    unknown_ids_are_not_found,
    delete_removes_the_session,
    full_store_refuses_without_evicting,
    expiry_is_exact_to_the_nanosecond,
    expired_sessions_are_invisible_before_reclamation,
    reclaim_counts_only_ended_sessions,
    every_expiry_is_counted_once,
);

fn raw(server: &RedisServer) -> redis::Connection {
    redis::Client::open(server.url())
        .unwrap()
        .get_connection_with_timeout(Duration::from_secs(2))
        .unwrap()
}

#[test]
fn two_instances_share_sessions_and_capacity() {
    let _watchdog = Watchdog::arm("two_instances_share_sessions_and_capacity", LIMIT);
    let server = RedisServer::start();
    let (a, b) = (
        store(server.port(), "rv:", 2),
        store(server.port(), "rv:", 2),
    );
    let now = SystemTime::now();
    let first = fresh(b"from a");
    assert_eq!(
        a.create(first.clone(), now).unwrap(),
        CreateOutcome::Created
    );
    assert_eq!(b.get(first.id, now).unwrap(), Some(first.clone()));
    assert_eq!(
        b.create(fresh(b"from b"), now).unwrap(),
        CreateOutcome::Created
    );
    assert!(matches!(
        a.create(fresh(b"third"), now).unwrap(),
        CreateOutcome::Full { .. }
    ));
    assert_eq!(
        (a.live_count(now).unwrap(), b.live_count(now).unwrap()),
        (2, 2)
    );
    assert!(b.delete(first.id, now).unwrap());
    assert_eq!(a.get(first.id, now).unwrap(), None);
    assert_eq!(
        a.create(fresh(b"room"), now).unwrap(),
        CreateOutcome::Created
    );

    // A new process (a new store) finds the sessions of the old one.
    let kept = fresh(b"kept");
    drop((a, b));
    let c = store(server.port(), "rv:", 3);
    c.create(kept.clone(), now).unwrap();
    drop(c);
    let d = store(server.port(), "rv:", 3);
    assert_eq!(d.get(kept.id, now).unwrap(), Some(kept));
    assert_eq!(d.live_count(now).unwrap(), 3);
}

#[test]
fn racing_replaces_let_exactly_one_through_per_round() {
    let _watchdog = Watchdog::arm("racing_replaces_let_exactly_one_through_per_round", LIMIT);
    let server = RedisServer::start();
    let stores: [Arc<dyn Store>; 2] = [
        Arc::new(store(server.port(), "race:", 10)),
        Arc::new(store(server.port(), "race:", 10)),
    ];
    let session = fresh(b"start");
    stores[0]
        .create(session.clone(), SystemTime::now())
        .unwrap();
    let mut current = session.etag.opaque().to_owned();
    for round in 0..20 {
        let threads = 8;
        let barrier = Arc::new(Barrier::new(threads));
        let handles: Vec<_> = (0..threads)
            .map(|n| {
                let (store, barrier) = (stores[n % 2].clone(), barrier.clone());
                let if_match = EntityTagList::Tags(vec![current.clone()]);
                thread::spawn(move || {
                    let now = SystemTime::now();
                    let payload = Bytes::from(format!("round {round} writer {n}"));
                    let version =
                        Session::next_version(session.id, payload, now, &SystemEntropy).unwrap();
                    barrier.wait();
                    store.replace(session.id, &if_match, version, now).unwrap()
                })
            })
            .collect();
        let outcomes: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        let winners: Vec<&Session> = outcomes
            .iter()
            .filter_map(|o| match o {
                ReplaceOutcome::Replaced(s) => Some(s),
                _ => None,
            })
            .collect();
        assert_eq!(winners.len(), 1, "round {round}: {outcomes:?}");
        let winner = winners[0].clone();
        for outcome in &outcomes {
            if let ReplaceOutcome::PreconditionFailed(seen) = outcome {
                assert_eq!(
                    seen, &winner,
                    "round {round}: losers see the winner's write"
                );
            }
        }
        assert_eq!(
            stores[1].get(session.id, SystemTime::now()).unwrap(),
            Some(winner.clone())
        );
        current = winner.etag.opaque().to_owned();
    }
}

#[test]
fn key_prefixes_isolate_stores() {
    let _watchdog = Watchdog::arm("key_prefixes_isolate_stores", LIMIT);
    let server = RedisServer::start();
    let (a, b) = (store(server.port(), "a:", 1), store(server.port(), "b:", 1));
    let now = SystemTime::now();
    let s = fresh(b"only in a");
    a.create(s.clone(), now).unwrap();
    assert_eq!(b.get(s.id, now).unwrap(), None);
    assert_eq!(b.live_count(now).unwrap(), 0);
    assert!(!b.delete(s.id, now).unwrap());
    let v = Session::next_version(s.id, Bytes::new(), now, &SystemEntropy).unwrap();
    assert_eq!(
        b.replace(s.id, &EntityTagList::Any, v, now).unwrap(),
        ReplaceOutcome::NotFound
    );
    assert_eq!(b.create(fresh(b"b"), now).unwrap(), CreateOutcome::Created);
    assert_eq!(a.get(s.id, now).unwrap(), Some(s));
    assert_eq!(a.live_count(now).unwrap(), 1);
}

#[test]
fn data_model_is_one_hash_per_session_and_an_index() {
    let _watchdog = Watchdog::arm("data_model_is_one_hash_per_session_and_an_index", LIMIT);
    let server = RedisServer::start();
    let store = store(server.port(), "dm:", 10);
    let now = SystemTime::now();
    let s = fresh(b"\x00payload\xff");
    store.create(s.clone(), now).unwrap();
    let key = format!("dm:session:{}", s.id);
    let mut conn = raw(&server);
    let (payload, etag, expires_ms): (Vec<u8>, String, u64) = redis::cmd("HMGET")
        .arg(&key)
        .arg(&["payload", "etag", "expires"])
        .query(&mut conn)
        .unwrap();
    assert_eq!(
        (payload.as_slice(), etag.as_str()),
        (&s.payload[..], s.etag.opaque())
    );
    let since = s.expires.duration_since(UNIX_EPOCH).unwrap();
    assert_eq!(u128::from(expires_ms), since.as_millis());
    let expire_at: u64 = redis::cmd("PEXPIRETIME")
        .arg(&key)
        .query(&mut conn)
        .unwrap();
    assert!(
        expire_at.abs_diff(expires_ms) <= 1,
        "{expire_at} vs {expires_ms}"
    );
    let indexed: String = redis::cmd("ZSCORE")
        .arg("dm:sessions")
        .arg(s.id.to_string())
        .query(&mut conn)
        .unwrap();
    assert_eq!(indexed, expires_ms.to_string());

    // Redis drops a session's key by itself once it has expired.
    let short = Session::create(
        Bytes::new(),
        SystemTime::now(),
        Duration::from_millis(200),
        &SystemEntropy,
    )
    .unwrap();
    store.create(short.clone(), SystemTime::now()).unwrap();
    let short_key = format!("dm:session:{}", short.id);
    let deadline = Instant::now() + Duration::from_secs(5);
    while redis::cmd("EXISTS")
        .arg(&short_key)
        .query::<u64>(&mut conn)
        .unwrap()
        == 1
    {
        assert!(
            Instant::now() < deadline,
            "Redis kept an expired session's key"
        );
        thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn foreign_data_under_the_prefix_is_corrupt() {
    let _watchdog = Watchdog::arm("foreign_data_under_the_prefix_is_corrupt", LIMIT);
    let server = RedisServer::start();
    let store = store(server.port(), "bad:", 10);
    let now = SystemTime::now();
    let mut conn = raw(&server);
    let (wrong_type, bad_tag, partial) = (fresh(b"1"), fresh(b"2"), fresh(b"3"));
    let key = |s: &Session| format!("bad:session:{}", s.id);
    let () = redis::cmd("SET")
        .arg(key(&wrong_type))
        .arg("x")
        .query(&mut conn)
        .unwrap();
    store.create(bad_tag.clone(), now).unwrap();
    let () = redis::cmd("HSET")
        .arg(key(&bad_tag))
        .arg("etag")
        .arg("a\"b")
        .query(&mut conn)
        .unwrap();
    let () = redis::cmd("HSET")
        .arg(key(&partial))
        .arg("payload")
        .arg("p")
        .query(&mut conn)
        .unwrap();
    for s in [&wrong_type, &bad_tag, &partial] {
        let result = store.get(s.id, now);
        assert!(
            matches!(result, Err(StoreError::Corrupt(_))),
            "get {}: {result:?}",
            s.id
        );
    }
    let any = EntityTagList::Any;
    let version =
        |s: &Session| Session::next_version(s.id, Bytes::new(), now, &SystemEntropy).unwrap();
    for s in [&wrong_type, &partial] {
        let result = store.replace(s.id, &any, version(s), now);
        assert!(
            matches!(result, Err(StoreError::Corrupt(_))),
            "replace {}: {result:?}",
            s.id
        );
    }
    let stale = EntityTagList::Tags(vec!["x".to_owned()]);
    let result = store.replace(bad_tag.id, &stale, version(&bad_tag), now);
    assert!(matches!(result, Err(StoreError::Corrupt(_))), "{result:?}");
}
