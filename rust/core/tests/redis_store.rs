//! The Redis store against a real `redis-server`: the store contract run against both the
//! memory and the Redis store, then what only a shared store does (several processes,
//! concurrent writers, key prefixes, the data model, data it did not write).

// The contract checks and helpers are not `#[test]` functions, which clippy's
// allow-unwrap-in-tests does not reach.
// Test code: failing loudly is the point, and times are computed from known constants.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::unchecked_time_subtraction
)]

mod redis_support;
mod store_contract;

use std::net::IpAddr;
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use redis_support::{
    create, delete, new_session, read, replace, run, store, LinkedRedis, RedisServer, Watchdog,
    LIMIT,
};
use synapse_rendezvous_core::rate_limit::ClientKey;
use synapse_rendezvous_core::store::{Action, Meta, NewSession, Outcome, Quota};
use synapse_rendezvous_core::{unix_millis, EntityTagList, Session, SessionId, StoreError};

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
            use std::sync::atomic::{AtomicU32, Ordering};
            $(
                #[test]
                fn $check() {
                    let _watchdog = crate::Watchdog::arm(stringify!($check), crate::LIMIT);
                    let server = crate::RedisServer::start();
                    let port = server.port();
                    // A fresh prefix is a fresh store.
                    let stores = AtomicU32::new(0);
                    crate::store_contract::$check(&|capacity| {
                        let prefix = format!("contract{}:", stores.fetch_add(1, Ordering::Relaxed));
                        Box::new(crate::redis_support::store_on_caller_clock(port, &prefix, capacity))
                    });
                }
            )*
        }
    };
}

contract!(
    create_then_read_round_trips_exactly,
    conditional_read_names_the_current_version,
    replace_checks_the_current_tag,
    unknown_ids_are_not_found,
    delete_removes_the_session,
    full_store_refuses_without_evicting,
    quota_caps_the_live_sessions_of_a_client,
    quota_and_capacity_refusals_take_nothing,
    admission_is_taken_before_anything_else,
    prefix_groups_share_the_last_half_fairly,
    expiry_is_exact_to_the_millisecond,
    expired_sessions_are_invisible_before_maintenance,
    maintenance_removes_only_ended_sessions,
    every_expiry_is_counted_once,
);

fn raw(server: &RedisServer) -> redis::Connection {
    redis::Client::open(server.url())
        .unwrap()
        .get_connection_with_timeout(Duration::from_secs(2))
        .unwrap()
}

fn outcome(store: &LinkedRedis, action: Action) -> Outcome {
    run(store, action, SystemTime::now()).unwrap().outcome
}

fn found(store: &LinkedRedis, id: SessionId) -> Session {
    match outcome(store, read(id)) {
        Outcome::Found(session) => session,
        other => panic!("read {id}: {other:?}"),
    }
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
    let first = new_session(b"from a");
    create(&a, &first, now);
    assert_eq!(found(&b, first.id).payload, first.payload);
    create(&b, &new_session(b"from b"), now);
    assert!(matches!(
        outcome(&a, Action::Create(new_session(b"third"))),
        Outcome::Full { .. }
    ));
    let live = |store: &LinkedRedis| store.maintain_now().live;
    assert_eq!((live(&a), live(&b)), (2, 2));
    assert_eq!(outcome(&b, delete(first.id)), Outcome::Deleted);
    assert_eq!(outcome(&a, read(first.id)), Outcome::NotFound);
    create(&a, &new_session(b"room"), now);

    // A new process (a new store) finds the sessions of the old one.
    let kept = new_session(b"kept");
    drop((a, b));
    let c = store(server.port(), "rv:", 3);
    create(&c, &kept, now);
    drop(c);
    let d = store(server.port(), "rv:", 3);
    assert_eq!(found(&d, kept.id).etag, kept.etag);
    assert_eq!(live(&d), 3);
}

#[test]
fn racing_replaces_let_exactly_one_through_per_round() {
    let _watchdog = Watchdog::arm("racing_replaces_let_exactly_one_through_per_round", LIMIT);
    let server = RedisServer::start();
    let writers = 8;
    // One store per writer: each has its own connection, so the writes really race.
    let stores: Vec<Arc<LinkedRedis>> = (0..writers)
        .map(|_| Arc::new(store(server.port(), "race:", 10)))
        .collect();
    let session = new_session(b"start");
    create(&*stores[0], &session, SystemTime::now());
    let mut current = session.etag.opaque().to_owned();
    for round in 0..20 {
        let barrier = Arc::new(Barrier::new(writers));
        let handles: Vec<_> = stores
            .iter()
            .enumerate()
            .map(|(n, store)| {
                let (store, barrier) = (store.clone(), barrier.clone());
                let if_match = EntityTagList::Tags(vec![current.clone()]);
                let payload = format!("round {round} writer {n}");
                thread::spawn(move || {
                    let write = replace(session.id, if_match, payload.as_bytes());
                    barrier.wait();
                    (payload, outcome(&store, write))
                })
            })
            .collect();
        let outcomes: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        let winners: Vec<_> = outcomes
            .iter()
            .filter_map(|(payload, outcome)| match outcome {
                Outcome::Replaced(meta) => Some((payload, meta)),
                _ => None,
            })
            .collect();
        assert_eq!(winners.len(), 1, "round {round}: {outcomes:?}");
        let (payload, meta) = winners[0];
        for (_, outcome) in &outcomes {
            if let Outcome::PreconditionFailed(seen) = outcome {
                assert_eq!(seen, meta, "round {round}: losers see the winner's write");
            }
        }
        let read_back = found(&stores[round % writers], session.id);
        assert_eq!(
            (read_back.payload.as_ref(), &Meta::from(&read_back)),
            (payload.as_bytes(), meta)
        );
        current = meta.etag.opaque().to_owned();
    }
}

#[test]
fn key_prefixes_isolate_stores() {
    let _watchdog = Watchdog::arm("key_prefixes_isolate_stores", LIMIT);
    let server = RedisServer::start();
    let (a, b) = (store(server.port(), "a:", 1), store(server.port(), "b:", 1));
    let now = SystemTime::now();
    let s = new_session(b"only in a");
    create(&a, &s, now);
    assert_eq!(outcome(&b, read(s.id)), Outcome::NotFound);
    assert_eq!(b.maintain_now().live, 0);
    assert_eq!(outcome(&b, delete(s.id)), Outcome::NotFound);
    assert_eq!(
        outcome(&b, replace(s.id, EntityTagList::Any, b"")),
        Outcome::NotFound
    );
    create(&b, &new_session(b"b"), now);
    assert_eq!(found(&a, s.id).payload, s.payload);
    assert_eq!(a.maintain_now().live, 1);
}

#[test]
fn data_model_is_one_hash_per_session_an_index_and_client_sets() {
    let _watchdog = Watchdog::arm(
        "data_model_is_one_hash_per_session_an_index_and_client_sets",
        LIMIT,
    );
    let server = RedisServer::start();
    let store = store(server.port(), "dm:", 10);
    let alice = ClientKey::new("2001:db8:0:1::7".parse::<IpAddr>().unwrap());
    let s = NewSession {
        quota: Some(Quota {
            client: alice,
            max: 5,
        }),
        ..new_session(b"\x00payload\xff")
    };
    create(&store, &s, SystemTime::now());
    let session = found(&store, s.id);
    let key = format!("dm:session:{}", s.id);
    let mut conn = raw(&server);
    let fields: (Vec<u8>, String, u64, u64, String) = redis::cmd("HMGET")
        .arg(&key)
        .arg(&["payload", "etag", "last_modified", "expires", "owner"])
        .query(&mut conn)
        .unwrap();
    let (payload, etag, last_modified, expires, owner) = fields;
    assert_eq!(
        (payload.as_slice(), etag.as_str()),
        (&s.payload[..], s.etag.opaque())
    );
    assert_eq!(last_modified, unix_millis(session.last_modified));
    assert_eq!(expires, unix_millis(session.expires));
    assert_eq!(expires - last_modified, 120_000);
    assert_eq!(owner, "2001:db8:0:1::/64");
    let expire_at: u64 = redis::cmd("PEXPIRETIME")
        .arg(&key)
        .query(&mut conn)
        .unwrap();
    assert_eq!(expire_at, expires);
    for index in ["dm:sessions", "dm:client:2001:db8:0:1::/64"] {
        let scored: String = redis::cmd("ZSCORE")
            .arg(index)
            .arg(s.id.to_string())
            .query(&mut conn)
            .unwrap();
        assert_eq!(scored, expires.to_string(), "{index}");
    }
    let bucketed = LinkedRedis::new(
        &server.url(),
        &redis_support::config("dm:", Duration::from_secs(2)),
        10,
        false,
    );
    let limited = synapse_rendezvous_core::store::Operation {
        admission: Some(synapse_rendezvous_core::store::Admission {
            client: alice,
            limit: synapse_rendezvous_core::rate_limit::Limit::Session,
            bucket: synapse_rendezvous_core::rate_limit::BucketConfig {
                per_second: 1.0,
                burst: 5,
            },
        }),
        action: read(s.id),
    };
    let done = synapse_rendezvous_core::Store::execute(&bucketed, &limited, SystemTime::now());
    assert!(matches!(done.unwrap().outcome, Outcome::Found(_)));
    let bucket: (String, u64) = redis::cmd("HMGET")
        .arg("dm:bucket:session:2001:db8:0:1::/64")
        .arg(&["tokens", "updated"])
        .query(&mut conn)
        .unwrap();
    assert_eq!(bucket.0, "4");

    // Redis drops a session's key by itself once it has expired.
    let short = NewSession {
        ttl: Duration::from_millis(200),
        ..new_session(b"")
    };
    create(&store, &short, SystemTime::now());
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
    let (wrong_type, bad_tag, partial, far_future) = (
        new_session(b"1"),
        new_session(b"2"),
        new_session(b"3"),
        new_session(b"4"),
    );
    let key = |s: &NewSession| format!("bad:session:{}", s.id);
    let mut set = |command: &str, args: &[&str]| {
        let _: redis::Value = redis::cmd(command).arg(args).query(&mut conn).unwrap();
    };
    set("SET", &[&key(&wrong_type), "x"]);
    create(&store, &bad_tag, now);
    set("HSET", &[&key(&bad_tag), "etag", "a\"b"]);
    set("HSET", &[&key(&partial), "payload", "p"]);
    // A millisecond past the last HTTP date (the end of the year 9999).
    create(&store, &far_future, now);
    set("HSET", &[&key(&far_future), "expires", "253402300800000"]);
    let corrupt = |action: Action, what: &str| {
        let result = run(&store, action, SystemTime::now());
        assert!(
            matches!(result, Err(StoreError::Corrupt(_))),
            "{what}: {result:?}"
        );
    };
    for s in [&wrong_type, &bad_tag, &partial, &far_future] {
        corrupt(read(s.id), &format!("read {}", s.id));
    }
    for s in [&wrong_type, &partial, &far_future] {
        let write = replace(s.id, EntityTagList::Any, b"");
        corrupt(write, &format!("replace {}", s.id));
    }
    let stale = EntityTagList::Tags(vec!["x".to_owned()]);
    corrupt(
        replace(bad_tag.id, stale, b""),
        "stale replace of a bad tag",
    );
}

#[test]
fn sessions_the_store_cannot_have_written_are_dropped() {
    let _watchdog = Watchdog::arm("sessions_the_store_cannot_have_written_are_dropped", LIMIT);
    let server = RedisServer::start();
    let store = store(server.port(), "forged:", 10).with_bounds(16, redis_support::TTL);
    let mut conn = raw(&server);
    let now = SystemTime::now();
    let oversized = NewSession {
        payload: bytes::Bytes::from(vec![b'x'; 100]),
        ..new_session(b"")
    };
    let (lasting, indexed_only, honest) = (new_session(b"1"), new_session(b"2"), new_session(b"3"));
    for s in [&oversized, &lasting, &indexed_only, &honest] {
        create(&store, s, now);
    }
    // The year 8307, in the session and in the index, as a forger would write it.
    let far = "200000000000000";
    let mut set = |command: &str, args: &[&str]| {
        let _: redis::Value = redis::cmd(command).arg(args).query(&mut conn).unwrap();
    };
    for s in [&lasting, &indexed_only] {
        set(
            "HSET",
            &[&format!("forged:session:{}", s.id), "expires", far],
        );
        set("ZADD", &["forged:sessions", far, &s.id.to_string()]);
    }
    for s in [&oversized, &lasting] {
        let executed = run(&store, read(s.id), SystemTime::now()).unwrap();
        assert_eq!(executed.outcome, Outcome::NotFound);
        assert_eq!(executed.discarded, 1);
        let write = run(
            &store,
            replace(s.id, EntityTagList::Any, b""),
            SystemTime::now(),
        )
        .unwrap();
        assert_eq!(write.outcome, Outcome::NotFound, "gone after the read");
    }
    let found = store.maintain_now();
    assert_eq!((found.discarded, found.live), (1, 1), "{found:?}");
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("forged:session:*")
        .query(&mut raw(&server))
        .unwrap();
    assert_eq!(keys, [format!("forged:session:{}", honest.id)]);
}

impl LinkedRedis {
    /// One maintenance run on Redis's clock, which must succeed.
    fn maintain_now(&self) -> synapse_rendezvous_core::store::Maintenance {
        synapse_rendezvous_core::Store::maintain(self, SystemTime::now()).unwrap()
    }
}

#[test]
fn times_are_whole_milliseconds_of_redis_clock() {
    let _watchdog = Watchdog::arm("times_are_whole_milliseconds_of_redis_clock", LIMIT);
    let server = RedisServer::start();
    let store = store(server.port(), "clock:", 10);
    let before = unix_millis(SystemTime::now());
    let s = new_session(b"x");
    // The caller's `now` is ignored: the scripts read Redis's TIME.
    let executed = run(&store, Action::Create(s.clone()), UNIX_EPOCH).unwrap();
    let Outcome::Created(meta) = executed.outcome else {
        panic!("{executed:?}");
    };
    let after = unix_millis(SystemTime::now());
    let created = unix_millis(meta.last_modified);
    assert!(
        (before..=after).contains(&created),
        "{before} {created} {after}"
    );
    assert_eq!(meta.expires, meta.last_modified + redis_support::TTL);
}
