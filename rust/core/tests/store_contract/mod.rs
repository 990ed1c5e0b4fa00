//! The contract every [`Store`] keeps, as generic checks run against each implementation
//! with the same assertions. Each check gets a factory of empty stores of a given capacity.
//!
//! Times start an hour ahead of the real clock, at a sub-millisecond instant, so that a
//! store backed by a server with its own expiry keeps every key during the test and times
//! must round-trip to the nanosecond.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use synapse_rendezvous_core::{
    CreateOutcome, EntityTag, EntityTagList, ReplaceOutcome, Session, SessionId, Store,
    SystemEntropy, Version,
};

/// Makes an empty store holding at most the given number of live sessions.
pub type Factory<'a> = &'a dyn Fn(usize) -> Box<dyn Store>;

const TTL: Duration = Duration::from_secs(120);
const NS: Duration = Duration::from_nanos(1);

/// An hour from now, rounded to the second, plus 123 456 789 ns.
fn start() -> SystemTime {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    UNIX_EPOCH + Duration::new(now.as_secs() + 3600, 123_456_789)
}

fn session(created: SystemTime, ttl: Duration, payload: &[u8]) -> Session {
    Session::create(
        Bytes::copy_from_slice(payload),
        created,
        ttl,
        &SystemEntropy,
    )
    .unwrap()
}

fn version(id: SessionId, payload: &[u8], at: SystemTime) -> Version {
    Session::next_version(id, Bytes::copy_from_slice(payload), at, &SystemEntropy).unwrap()
}

fn tags(list: &[&str]) -> EntityTagList {
    EntityTagList::Tags(list.iter().map(|&tag| tag.to_owned()).collect())
}

fn unknown_id() -> SessionId {
    SessionId::generate(start(), &SystemEntropy).unwrap()
}

/// Sessions come back exactly as stored: any bytes, empty, large, every validator.
pub fn create_then_get_round_trips_exactly(make: Factory<'_>) {
    let store = make(10);
    let t0 = start();
    let payloads: [Vec<u8>; 5] = [
        b"hello".to_vec(),
        Vec::new(),
        vec![0xff, 0x00, 0xfe, 0x80, b'"', b'\r', b'\n', 0xc3],
        vec![0x5a; 4096],
        vec![0xa5; 65_536],
    ];
    for payload in &payloads {
        let s = session(t0, TTL, payload);
        assert_eq!(store.create(s.clone(), t0).unwrap(), CreateOutcome::Created);
        assert_eq!(store.get(s.id, t0).unwrap(), Some(s.clone()));
        assert_eq!(store.get(s.id, s.expires - NS).unwrap(), Some(s));
    }
    let odd = EntityTag::from_opaque("!#$%&'()*+,-./09:;<=>?@AZ[\\]^_`az{|}~").unwrap();
    let s = Session {
        etag: odd.clone(),
        ..session(t0, TTL, b"odd tag")
    };
    store.create(s.clone(), t0).unwrap();
    assert_eq!(store.get(s.id, t0).unwrap(), Some(s.clone()));
    let v = version(s.id, b"next", t0);
    assert!(matches!(
        store.replace(s.id, &tags(&[odd.opaque()]), v, t0).unwrap(),
        ReplaceOutcome::Replaced(_)
    ));
    assert_eq!(store.live_count(t0).unwrap(), 6);
    assert_eq!(store.get(unknown_id(), t0).unwrap(), None);
}

/// A write lands only when `If-Match` names the current tag or is `*`; expiry never moves.
pub fn replace_checks_the_current_tag(make: Factory<'_>) {
    let store = make(10);
    let t0 = start();
    let s = session(t0, TTL, b"first");
    store.create(s.clone(), t0).unwrap();
    let at = t0 + Duration::new(1, 500_000_007);
    let v1 = version(s.id, &[0x80, 0xff, 0x00], at);
    assert_eq!(
        store
            .replace(s.id, &tags(&["nope"]), v1.clone(), at)
            .unwrap(),
        ReplaceOutcome::PreconditionFailed(s.clone())
    );
    assert_eq!(
        store.replace(s.id, &tags(&[]), v1.clone(), at).unwrap(),
        ReplaceOutcome::PreconditionFailed(s.clone())
    );
    let after_v1 = Session {
        payload: v1.payload.clone(),
        etag: v1.etag.clone(),
        last_modified: v1.last_modified,
        ..s.clone()
    };
    assert_eq!(
        store
            .replace(s.id, &tags(&["other", s.etag.opaque()]), v1, at)
            .unwrap(),
        ReplaceOutcome::Replaced(after_v1.clone())
    );
    assert_eq!(store.get(s.id, at).unwrap(), Some(after_v1.clone()));
    let v2 = version(s.id, b"", at + NS);
    assert_eq!(
        store
            .replace(s.id, &tags(&[s.etag.opaque()]), v2.clone(), at + NS)
            .unwrap(),
        ReplaceOutcome::PreconditionFailed(after_v1.clone()),
        "the old tag no longer matches"
    );
    let after_v2 = Session {
        payload: Bytes::new(),
        etag: v2.etag.clone(),
        last_modified: v2.last_modified,
        ..s.clone()
    };
    assert_eq!(
        store
            .replace(s.id, &EntityTagList::Any, v2, at + NS)
            .unwrap(),
        ReplaceOutcome::Replaced(after_v2.clone())
    );
    assert_eq!(store.get(s.id, s.expires - NS).unwrap(), Some(after_v2));
}

/// Unknown ids: nothing to read, write or delete.
pub fn unknown_ids_are_not_found(make: Factory<'_>) {
    let store = make(10);
    let (t0, id) = (start(), unknown_id());
    assert_eq!(store.get(id, t0).unwrap(), None);
    assert_eq!(
        store
            .replace(id, &EntityTagList::Any, version(id, b"x", t0), t0)
            .unwrap(),
        ReplaceOutcome::NotFound
    );
    assert!(!store.delete(id, t0).unwrap());
    assert_eq!(store.live_count(t0).unwrap(), 0);
}

/// Delete removes the session everywhere, and frees its room at once.
pub fn delete_removes_the_session(make: Factory<'_>) {
    let store = make(1);
    let t0 = start();
    let s = session(t0, TTL, b"bye");
    store.create(s.clone(), t0).unwrap();
    assert!(store.delete(s.id, t0).unwrap());
    assert!(!store.delete(s.id, t0).unwrap());
    assert_eq!(store.get(s.id, t0).unwrap(), None);
    let v = version(s.id, b"x", t0);
    assert_eq!(
        store.replace(s.id, &EntityTagList::Any, v, t0).unwrap(),
        ReplaceOutcome::NotFound
    );
    assert_eq!(store.live_count(t0).unwrap(), 0);
    let next = session(t0, TTL, b"next");
    assert_eq!(store.create(next, t0).unwrap(), CreateOutcome::Created);
    assert_eq!(store.reclaim_expired(t0 + TTL).unwrap(), 1);
}

/// At capacity a create is refused with the wait until the oldest expiry; nothing is evicted.
pub fn full_store_refuses_without_evicting(make: Factory<'_>) {
    let store = make(2);
    let t0 = start();
    let a = session(t0, TTL, b"a");
    let b = session(t0 + Duration::from_secs(10), TTL, b"b");
    assert_eq!(store.create(a.clone(), t0).unwrap(), CreateOutcome::Created);
    assert_eq!(store.create(b.clone(), t0).unwrap(), CreateOutcome::Created);
    let later = t0 + Duration::from_secs(20);
    let c = session(later, TTL, b"c");
    assert_eq!(
        store.create(c.clone(), later).unwrap(),
        CreateOutcome::Full {
            retry_after: Duration::from_secs(100)
        }
    );
    assert_eq!(store.get(a.id, later).unwrap(), Some(a));
    assert_eq!(store.get(b.id, later).unwrap(), Some(b));
    assert_eq!(store.get(c.id, later).unwrap(), None);
    assert_eq!(store.live_count(later).unwrap(), 2);
}

/// Expiry is exact to the nanosecond, even for sessions ending in the same millisecond.
pub fn expiry_is_exact_to_the_nanosecond(make: Factory<'_>) {
    let store = make(2);
    let t0 = start();
    let base = UNIX_EPOCH + t0.duration_since(UNIX_EPOCH).unwrap() + TTL;
    let whole_ms = base
        - Duration::from_nanos(u64::from(
            base.duration_since(UNIX_EPOCH).unwrap().subsec_nanos() % 1_000_000,
        ));
    let late = Session {
        expires: whole_ms + Duration::from_micros(900),
        ..session(t0, TTL, b"late")
    };
    let early = Session {
        expires: whole_ms + Duration::from_micros(300),
        ..session(t0, TTL, b"early")
    };
    store.create(late.clone(), t0).unwrap();
    store.create(early.clone(), t0).unwrap();
    let now = whole_ms - Duration::from_secs(5) + Duration::from_nanos(17);
    assert_eq!(
        store.create(session(now, TTL, b"x"), now).unwrap(),
        CreateOutcome::Full {
            retry_after: Duration::from_secs(5) - Duration::from_nanos(17)
                + Duration::from_micros(300)
        }
    );
    let just_before = early.expires - NS;
    assert_eq!(store.live_count(just_before).unwrap(), 2);
    assert_eq!(
        store.get(early.id, just_before).unwrap(),
        Some(early.clone())
    );
    let c = session(early.expires, TTL, b"c");
    assert_eq!(
        store.create(c.clone(), early.expires).unwrap(),
        CreateOutcome::Created,
        "the early session ended exactly now and makes room"
    );
    assert_eq!(store.get(early.id, early.expires).unwrap(), None);
    assert_eq!(store.live_count(late.expires - NS).unwrap(), 2);
    assert_eq!(
        store.get(late.id, late.expires - NS).unwrap(),
        Some(late.clone())
    );
    assert_eq!(store.get(late.id, late.expires).unwrap(), None);
    assert_eq!(store.reclaim_expired(late.expires).unwrap(), 1);
    assert_eq!(store.live_count(late.expires).unwrap(), 1);
}

/// An ended session answers like an unknown one before anything reclaims it.
pub fn expired_sessions_are_invisible_before_reclamation(make: Factory<'_>) {
    let store = make(10);
    let t0 = start();
    let s = session(t0, TTL, b"short-lived");
    store.create(s.clone(), t0).unwrap();
    assert_eq!(store.get(s.id, s.expires - NS).unwrap(), Some(s.clone()));
    let end = s.expires;
    assert_eq!(store.get(s.id, end).unwrap(), None);
    let v = version(s.id, b"late write", end);
    assert_eq!(
        store
            .replace(s.id, &EntityTagList::Any, v.clone(), end)
            .unwrap(),
        ReplaceOutcome::NotFound
    );
    assert_eq!(
        store
            .replace(s.id, &tags(&[s.etag.opaque()]), v, end)
            .unwrap(),
        ReplaceOutcome::NotFound
    );
    assert!(!store.delete(s.id, end).unwrap());
    assert_eq!(store.live_count(end).unwrap(), 0);
    assert_eq!(store.reclaim_expired(end).unwrap(), 0);
}

/// Reclaim drops exactly the ended sessions and counts them; expiry frees room for creates.
pub fn reclaim_counts_only_ended_sessions(make: Factory<'_>) {
    let store = make(3);
    let t0 = start();
    let ttls = [10, 20, 30].map(Duration::from_secs);
    let sessions = ttls.map(|ttl| session(t0, ttl, b"s"));
    for s in &sessions {
        store.create(s.clone(), t0).unwrap();
    }
    assert_eq!(store.reclaim_expired(t0).unwrap(), 0);
    assert_eq!(store.reclaim_expired(t0 + ttls[0]).unwrap(), 1);
    assert_eq!(store.live_count(t0 + ttls[0]).unwrap(), 2);
    assert_eq!(
        store.get(sessions[1].id, t0 + ttls[0]).unwrap(),
        Some(sessions[1].clone())
    );
    assert_eq!(store.live_count(t0 + Duration::from_secs(25)).unwrap(), 1);
    assert_eq!(
        store.reclaim_expired(t0 + Duration::from_secs(25)).unwrap(),
        0
    );
    assert_eq!(store.reclaim_expired(t0 + ttls[2] - NS).unwrap(), 0);
    let late = t0 + ttls[2] + Duration::from_secs(3600);
    assert_eq!(store.reclaim_expired(late).unwrap(), 1);
    assert_eq!(store.reclaim_expired(late).unwrap(), 0);
    assert_eq!(store.live_count(late).unwrap(), 0);
    for _ in 0..3 {
        assert_eq!(
            store.create(session(late, TTL, b"again"), late).unwrap(),
            CreateOutcome::Created
        );
    }
}

/// Every removal of an ended session is counted once, whichever call removes it: a create, a
/// count, a reclaim, or a delete that finds it ended.
pub fn every_expiry_is_counted_once(make: Factory<'_>) {
    let store = make(10);
    let t0 = start();
    let ttl = Duration::from_secs(10);
    let [a, b, c, d] = [0; 4].map(|_| session(t0, ttl, b"x"));
    for s in [&a, &b, &c, &d] {
        store.create(s.clone(), t0).unwrap();
    }
    assert_eq!(store.expired_total(), 0);
    let ended = t0 + ttl;
    assert!(!store.delete(a.id, ended).unwrap());
    assert_eq!(store.expired_total(), 1);
    store.create(session(ended, ttl, b"y"), ended).unwrap();
    assert_eq!(store.expired_total(), 4);
    assert_eq!(store.live_count(ended).unwrap(), 1);
    assert_eq!(store.reclaim_expired(ended).unwrap(), 0);
    assert_eq!(store.expired_total(), 4);
    let later = ended + ttl;
    assert_eq!(store.live_count(later).unwrap(), 0);
    assert_eq!(store.reclaim_expired(later).unwrap(), 0);
    assert_eq!(store.expired_total(), 5);
}
