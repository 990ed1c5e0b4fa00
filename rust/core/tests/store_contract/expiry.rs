//! Sessions end at `expires`, to the millisecond; ended ones are invisible at once, removed
//! by whichever call meets them first, and counted once.

use std::time::Duration;

use synapse_rendezvous_core::store::{Action, Executed, Maintenance, Outcome};
use synapse_rendezvous_core::EntityTagList;

use super::{
    create, delete, new_session, outcome, read, replace, run, start, tags, Factory, MS, TTL,
};

fn maintenance(expired: usize, live: usize) -> Maintenance {
    Maintenance {
        expired,
        live,
        discarded: 0,
    }
}

/// A session is live until the millisecond before `expires` and gone at it, even beside one
/// ending a millisecond later; the room it frees is usable at that very instant.
pub fn expiry_is_exact_to_the_millisecond(make: Factory<'_>) {
    let store = make(2);
    let t0 = start();
    let early = create(&*store, &new_session(b"early", TTL), t0);
    let late = create(&*store, &new_session(b"late", TTL + MS), t0);
    let now = early.expires - Duration::from_secs(5) + Duration::from_millis(17);
    assert_eq!(
        outcome(&*store, Action::Create(new_session(b"x", TTL)), now),
        Outcome::Full {
            retry_after: Duration::from_secs(5) - Duration::from_millis(17)
        }
    );
    let just_before = early.expires - MS;
    assert_eq!(store.maintain(just_before).unwrap(), maintenance(0, 2));
    assert_eq!(
        outcome(&*store, read(early.id), just_before),
        Outcome::Found(early.clone())
    );
    let made_room = run(
        &*store,
        Action::Create(new_session(b"c", TTL)),
        early.expires,
    );
    assert!(
        matches!(made_room.outcome, Outcome::Created(_)),
        "the early session ended exactly now and makes room: {made_room:?}"
    );
    assert_eq!(made_room.expired, 1);
    assert_eq!(
        outcome(&*store, read(early.id), early.expires),
        Outcome::NotFound
    );
    assert_eq!(
        outcome(&*store, read(late.id), late.expires - MS),
        Outcome::Found(late.clone())
    );
    assert_eq!(
        store.maintain(late.expires - MS).unwrap(),
        maintenance(0, 2)
    );
    assert_eq!(
        outcome(&*store, read(late.id), late.expires),
        Outcome::NotFound
    );
    assert_eq!(store.maintain(late.expires).unwrap(), maintenance(1, 1));
}

/// An ended session answers like an unknown one before maintenance removes it; a delete
/// that meets it removes it and counts it.
pub fn expired_sessions_are_invisible_before_maintenance(make: Factory<'_>) {
    let store = make(10);
    let t0 = start();
    let session = create(&*store, &new_session(b"short-lived", TTL), t0);
    assert_eq!(
        outcome(&*store, read(session.id), session.expires - MS),
        Outcome::Found(session.clone())
    );
    let end = session.expires;
    let conditional = Action::Read {
        id: session.id,
        if_none_match: Some(EntityTagList::Any),
    };
    let (any, _) = replace(session.id, EntityTagList::Any, b"late write");
    let (current, _) = replace(session.id, tags(&[session.etag.opaque()]), b"late write");
    for action in [read(session.id), conditional, any, current] {
        assert_eq!(run(&*store, action, end), Executed::only(Outcome::NotFound));
    }
    assert_eq!(
        run(&*store, delete(session.id), end),
        Executed::expiring(Outcome::NotFound, 1)
    );
    assert_eq!(store.maintain(end).unwrap(), maintenance(0, 0));
}

/// Maintenance removes exactly the ended sessions and counts them; expiry frees room.
pub fn maintenance_removes_only_ended_sessions(make: Factory<'_>) {
    let store = make(3);
    let t0 = start();
    let ttls = [10, 20, 30].map(Duration::from_secs);
    let sessions = ttls.map(|ttl| create(&*store, &new_session(b"s", ttl), t0));
    assert_eq!(store.maintain(t0).unwrap(), maintenance(0, 3));
    assert_eq!(store.maintain(t0 + ttls[0]).unwrap(), maintenance(1, 2));
    assert_eq!(
        outcome(&*store, read(sessions[1].id), t0 + ttls[0]),
        Outcome::Found(sessions[1].clone())
    );
    let between = t0 + Duration::from_secs(25);
    assert_eq!(store.maintain(between).unwrap(), maintenance(1, 1));
    assert_eq!(store.maintain(between).unwrap(), maintenance(0, 1));
    assert_eq!(
        store.maintain(t0 + ttls[2] - MS).unwrap(),
        maintenance(0, 1)
    );
    let late = t0 + ttls[2] + Duration::from_secs(3600);
    assert_eq!(store.maintain(late).unwrap(), maintenance(1, 0));
    assert_eq!(store.maintain(late).unwrap(), maintenance(0, 0));
    for _ in 0..3 {
        create(&*store, &new_session(b"again", TTL), late);
    }
}

/// Every removal of an ended session is counted once, whichever call removes it: a create, a
/// maintenance run, or a delete that finds it ended; reads and writes that meet it count
/// nothing.
pub fn every_expiry_is_counted_once(make: Factory<'_>) {
    let store = make(10);
    let t0 = start();
    let ttl = Duration::from_secs(10);
    let [a, b, ..] = [0; 4].map(|_| create(&*store, &new_session(b"x", ttl), t0));
    let ended = t0 + ttl;
    let (write, _) = replace(b.id, EntityTagList::Any, b"y");
    for action in [read(b.id), write] {
        assert_eq!(
            run(&*store, action, ended),
            Executed::only(Outcome::NotFound)
        );
    }
    assert_eq!(run(&*store, delete(a.id), ended).expired, 1);
    let created = run(&*store, Action::Create(new_session(b"y", ttl)), ended);
    assert!(
        matches!(created.outcome, Outcome::Created(_)),
        "{created:?}"
    );
    assert_eq!(created.expired, 3);
    assert_eq!(store.maintain(ended).unwrap(), maintenance(0, 1));
    assert_eq!(store.maintain(ended + ttl).unwrap(), maintenance(1, 0));
    assert_eq!(store.maintain(ended + ttl).unwrap(), maintenance(0, 0));
}
