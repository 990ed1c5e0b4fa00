//! Creating, reading, replacing and deleting sessions, and the capacity.

use std::time::Duration;

use bytes::Bytes;
use synapse_rendezvous_core::store::{Action, Executed, Maintenance, Meta, Outcome};
use synapse_rendezvous_core::{EntityTag, EntityTagList, Session};

use super::{
    create, delete, new_session, outcome, read, replace, run, start, tags, unknown_id, Factory, MS,
    TTL,
};

/// Sessions come back exactly as stored: any bytes, empty, large, every validator.
pub fn create_then_read_round_trips_exactly(make: Factory<'_>) {
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
        let new = new_session(payload, TTL);
        let session = create(&*store, &new, t0);
        assert_eq!(session.expires, t0 + TTL);
        assert_eq!(
            outcome(&*store, read(new.id), t0),
            Outcome::Found(session.clone())
        );
        assert_eq!(
            outcome(&*store, read(new.id), session.expires - MS),
            Outcome::Found(session)
        );
    }
    let odd = EntityTag::from_opaque("!#$%&'()*+,-./09:;<=>?@AZ[\\]^_`az{|}~").unwrap();
    let new = super::NewSession {
        etag: odd.clone(),
        ..new_session(b"odd tag", TTL)
    };
    let session = create(&*store, &new, t0);
    assert_eq!(outcome(&*store, read(new.id), t0), Outcome::Found(session));
    let (write, _) = replace(new.id, tags(&[odd.opaque()]), b"next");
    assert!(matches!(outcome(&*store, write, t0), Outcome::Replaced(_)));
    assert_eq!(store.maintain(t0).unwrap().live, 6);
    assert_eq!(outcome(&*store, read(unknown_id()), t0), Outcome::NotFound);
}

/// A read whose `If-None-Match` names the current version (or is `*`) gets the validators
/// and the payload's length, not the payload.
pub fn conditional_read_names_the_current_version(make: Factory<'_>) {
    let store = make(10);
    let t0 = start();
    let new = new_session(b"hello", TTL);
    let session = create(&*store, &new, t0);
    let conditional = |if_none_match: EntityTagList| Action::Read {
        id: new.id,
        if_none_match: Some(if_none_match),
    };
    let not_modified = Outcome::NotModified {
        meta: Meta::from(&session),
        length: 5,
    };
    for current in [
        tags(&[session.etag.opaque()]),
        tags(&["other", session.etag.opaque()]),
        EntityTagList::Any,
    ] {
        assert_eq!(outcome(&*store, conditional(current), t0), not_modified);
    }
    assert_eq!(
        outcome(&*store, conditional(tags(&["other"])), t0),
        Outcome::Found(session.clone())
    );
    let (write, etag) = replace(new.id, EntityTagList::Any, b"world");
    run(&*store, write, t0);
    let written = Session {
        payload: Bytes::from_static(b"world"),
        etag,
        ..session.clone()
    };
    assert_eq!(
        outcome(&*store, conditional(tags(&[session.etag.opaque()])), t0),
        Outcome::Found(written)
    );
    let unknown = Action::Read {
        id: unknown_id(),
        if_none_match: Some(EntityTagList::Any),
    };
    assert_eq!(outcome(&*store, unknown, t0), Outcome::NotFound);
}

/// A write lands only when `If-Match` names the current tag or is `*`; it stamps
/// `last_modified` with the store's `now`; expiry never moves.
pub fn replace_checks_the_current_tag(make: Factory<'_>) {
    let store = make(10);
    let t0 = start();
    let new = new_session(b"first", TTL);
    let first = create(&*store, &new, t0);
    let at = t0 + Duration::from_millis(1500);
    for stale in [tags(&["nope"]), tags(&[])] {
        let (write, _) = replace(new.id, stale, &[0x80, 0xff, 0x00]);
        assert_eq!(
            outcome(&*store, write, at),
            Outcome::PreconditionFailed(Meta::from(&first))
        );
    }
    let (write, etag) = replace(
        new.id,
        tags(&["other", first.etag.opaque()]),
        &[0x80, 0xff, 0x00],
    );
    let second = Session {
        payload: Bytes::from_static(&[0x80, 0xff, 0x00]),
        etag,
        last_modified: at,
        ..first.clone()
    };
    assert_eq!(
        outcome(&*store, write, at),
        Outcome::Replaced(Meta::from(&second))
    );
    assert_eq!(
        outcome(&*store, read(new.id), at),
        Outcome::Found(second.clone())
    );
    let (write, _) = replace(new.id, tags(&[first.etag.opaque()]), b"");
    assert_eq!(
        outcome(&*store, write, at + MS),
        Outcome::PreconditionFailed(Meta::from(&second)),
        "the old tag no longer matches"
    );
    let (write, etag) = replace(new.id, EntityTagList::Any, b"");
    let third = Session {
        payload: Bytes::new(),
        etag,
        last_modified: at + MS,
        ..first.clone()
    };
    assert_eq!(
        outcome(&*store, write, at + MS),
        Outcome::Replaced(Meta::from(&third))
    );
    assert_eq!(
        outcome(&*store, read(new.id), first.expires - MS),
        Outcome::Found(third)
    );
}

/// Unknown ids: nothing to read, write or delete, and nothing counted.
pub fn unknown_ids_are_not_found(make: Factory<'_>) {
    let store = make(10);
    let (t0, id) = (start(), unknown_id());
    let (write, _) = replace(id, EntityTagList::Any, b"x");
    for action in [read(id), write, delete(id)] {
        assert_eq!(run(&*store, action, t0), Executed::only(Outcome::NotFound));
    }
    assert_eq!(
        store.maintain(t0).unwrap(),
        Maintenance {
            expired: 0,
            live: 0,
            discarded: 0
        }
    );
}

/// Delete removes the session everywhere, and frees its room at once.
pub fn delete_removes_the_session(make: Factory<'_>) {
    let store = make(1);
    let t0 = start();
    let new = new_session(b"bye", TTL);
    create(&*store, &new, t0);
    assert_eq!(
        run(&*store, delete(new.id), t0),
        Executed::only(Outcome::Deleted)
    );
    assert_eq!(
        run(&*store, delete(new.id), t0),
        Executed::only(Outcome::NotFound)
    );
    assert_eq!(outcome(&*store, read(new.id), t0), Outcome::NotFound);
    let (write, _) = replace(new.id, EntityTagList::Any, b"x");
    assert_eq!(outcome(&*store, write, t0), Outcome::NotFound);
    assert_eq!(store.maintain(t0).unwrap().live, 0);
    create(&*store, &new_session(b"next", TTL), t0);
    assert_eq!(
        store.maintain(t0 + TTL).unwrap(),
        Maintenance {
            expired: 1,
            live: 0,
            discarded: 0
        }
    );
}

/// At capacity a create is refused with the wait until the oldest expiry; nothing is evicted.
pub fn full_store_refuses_without_evicting(make: Factory<'_>) {
    let store = make(2);
    let t0 = start();
    let a = create(&*store, &new_session(b"a", TTL), t0);
    let b = create(
        &*store,
        &new_session(b"b", TTL),
        t0 + Duration::from_secs(10),
    );
    let later = t0 + Duration::from_secs(20);
    let c = new_session(b"c", TTL);
    assert_eq!(
        run(&*store, Action::Create(c.clone()), later),
        Executed::only(Outcome::Full {
            retry_after: Duration::from_secs(100)
        })
    );
    for session in [a, b] {
        assert_eq!(
            outcome(&*store, read(session.id), later),
            Outcome::Found(session)
        );
    }
    assert_eq!(outcome(&*store, read(c.id), later), Outcome::NotFound);
    assert_eq!(store.maintain(later).unwrap().live, 2);
}
