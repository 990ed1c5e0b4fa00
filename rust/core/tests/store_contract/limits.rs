//! The rate limit (an [`Admission`], taken first) and the per-client quota (a [`Quota`] on a
//! create), decided atomically with the operation they guard.

use std::net::IpAddr;
use std::time::Duration;

use synapse_rendezvous_core::rate_limit::{BucketConfig, ClientKey, Limit};
use synapse_rendezvous_core::store::{Action, Admission, NewSession, Operation, Outcome, Quota};
use synapse_rendezvous_core::{EntityTagList, Store};

use super::{create, delete, new_session, outcome, read, replace, start, Factory, TTL};

fn client(address: &str) -> ClientKey {
    ClientKey::new(address.parse::<IpAddr>().unwrap())
}

/// A session to create that counts against `client`'s quota of `max`.
fn owned(client: ClientKey, max: usize) -> NewSession {
    NewSession {
        quota: Some(Quota { client, max }),
        ..new_session(b"owned", TTL)
    }
}

/// `action` drawing from `client`'s `limit` bucket.
fn admitted(client: ClientKey, limit: Limit, bucket: BucketConfig, action: Action) -> Operation {
    Operation {
        admission: Some(Admission {
            client,
            limit,
            bucket,
        }),
        action,
    }
}

fn execute(store: &dyn Store, operation: &Operation, now: std::time::SystemTime) -> Outcome {
    store.execute(operation, now).unwrap().outcome
}

/// A client with its maximum of live sessions is refused until one ends or is deleted, with
/// the wait until its oldest ends; other clients and unowned sessions are not affected.
pub fn quota_caps_the_live_sessions_of_a_client(make: Factory<'_>) {
    let store = make(10);
    let t0 = start();
    let (alice, bob) = (client("192.0.2.1"), client("2001:db8::1"));
    let first = create(&*store, &owned(alice, 2), t0);
    let second = create(&*store, &owned(alice, 2), t0 + Duration::from_secs(1));
    let now = t0 + Duration::from_secs(2);
    assert_eq!(
        outcome(&*store, Action::Create(owned(alice, 2)), now),
        Outcome::QuotaExceeded {
            retry_after: TTL - Duration::from_secs(2)
        }
    );
    create(&*store, &owned(bob, 2), now);
    create(&*store, &new_session(b"nobody's", TTL), now);
    assert_eq!(outcome(&*store, delete(first.id), now), Outcome::Deleted);
    let third = create(&*store, &owned(alice, 2), now);
    // The second session's end frees its slot at that very instant.
    create(&*store, &owned(alice, 2), second.expires);
    assert_eq!(
        outcome(&*store, Action::Create(owned(alice, 2)), second.expires),
        Outcome::QuotaExceeded {
            retry_after: third.expires.duration_since(second.expires).unwrap()
        }
    );
}

/// Neither a quota refusal nor a capacity refusal takes anything: no room, no slot.
pub fn quota_and_capacity_refusals_take_nothing(make: Factory<'_>) {
    let store = make(2);
    let t0 = start();
    let (alice, bob, carol) = (
        client("192.0.2.1"),
        client("192.0.2.2"),
        client("192.0.2.3"),
    );
    create(&*store, &owned(alice, 1), t0);
    assert!(matches!(
        outcome(&*store, Action::Create(owned(alice, 1)), t0),
        Outcome::QuotaExceeded { .. }
    ));
    let bobs = create(&*store, &owned(bob, 1), t0);
    assert_eq!(
        outcome(&*store, Action::Create(owned(carol, 1)), t0),
        Outcome::Full { retry_after: TTL }
    );
    assert_eq!(store.maintain(t0).unwrap().live, 2);
    assert_eq!(outcome(&*store, delete(bobs.id), t0), Outcome::Deleted);
    create(&*store, &owned(carol, 1), t0);
}

/// The token is taken before anything else: a refused operation does nothing at all, and
/// each client and each limit has its own bucket.
pub fn admission_is_taken_before_anything_else(make: Factory<'_>) {
    let store = make(10);
    let t0 = start();
    let bucket = BucketConfig {
        per_second: 0.5,
        burst: 2,
    };
    let (alice, bob) = (client("192.0.2.1"), client("198.51.100.7"));
    let creating = |client, new: &NewSession| {
        admitted(client, Limit::Create, bucket, Action::Create(new.clone()))
    };
    for _ in 0..2 {
        let new = new_session(b"a", TTL);
        assert!(matches!(
            execute(&*store, &creating(alice, &new), t0),
            Outcome::Created(_)
        ));
    }
    let refused = new_session(b"refused", TTL);
    assert_eq!(
        execute(&*store, &creating(alice, &refused), t0),
        Outcome::RateLimited {
            retry_after: Duration::from_secs(2)
        }
    );
    assert_eq!(outcome(&*store, read(refused.id), t0), Outcome::NotFound);
    assert_eq!(store.maintain(t0).unwrap().live, 2);
    assert!(matches!(
        execute(&*store, &creating(bob, &new_session(b"b", TTL)), t0),
        Outcome::Created(_)
    ));
    let refilled = t0 + Duration::from_secs(2);
    assert!(matches!(
        execute(&*store, &creating(alice, &refused), refilled),
        Outcome::Created(_)
    ));

    // The session budget is another bucket; a refused write or delete changes nothing.
    let session = create(&*store, &new_session(b"kept", TTL), t0);
    let strict = BucketConfig {
        per_second: 1.0,
        burst: 1,
    };
    let on_session = |action| admitted(alice, Limit::Session, strict, action);
    assert_eq!(
        execute(&*store, &on_session(read(session.id)), t0),
        Outcome::Found(session.clone())
    );
    let (write, _) = replace(session.id, EntityTagList::Any, b"changed");
    let limited = Outcome::RateLimited {
        retry_after: Duration::from_secs(1),
    };
    for action in [read(session.id), write, delete(session.id)] {
        assert_eq!(execute(&*store, &on_session(action), t0), limited);
    }
    assert_eq!(
        outcome(&*store, read(session.id), t0),
        Outcome::Found(session)
    );
}

/// A session of `client` counted against its quota and, for the fair share, its groups.
fn grouped(client: ClientKey) -> NewSession {
    NewSession {
        groups: client.groups(),
        ..owned(client, 1)
    }
}

/// Once the store is more than half full, a prefix group holding as many live sessions as
/// are free gets no more: many /64s of one /48 stop at about half the capacity, and other
/// groups still create until the store is full; a group's sessions ending frees its share.
pub fn prefix_groups_share_the_last_half_fairly(make: Factory<'_>) {
    let store = make(10);
    let t0 = start();
    let mut attacker = 0;
    loop {
        let address = format!("2001:db8:1:{attacker:x}::1");
        match outcome(&*store, Action::Create(grouped(client(&address))), t0) {
            Outcome::Created(_) => attacker += 1,
            Outcome::Full { retry_after } => {
                assert_eq!(retry_after, TTL);
                break;
            }
            other => panic!("{other:?}"),
        }
        assert!(attacker <= 10, "the group was never stopped");
    }
    // Half of 10 plus one: at 6 live, 4 are free and the /48 holds 6.
    assert_eq!(attacker, 6);
    // Another /48 (and an IPv4 /24) still get in, each while it holds fewer than are free.
    let other48 = |n: u32| client(&format!("2001:db8:2:{n:x}::1"));
    assert!(matches!(
        outcome(&*store, Action::Create(grouped(other48(0))), t0),
        Outcome::Created(_)
    ));
    assert!(matches!(
        outcome(&*store, Action::Create(grouped(other48(1))), t0),
        Outcome::Created(_)
    ));
    assert!(matches!(
        outcome(&*store, Action::Create(grouped(other48(2))), t0),
        Outcome::Full { .. }
    ));
    assert!(matches!(
        outcome(&*store, Action::Create(grouped(client("192.0.2.9"))), t0),
        Outcome::Created(_)
    ));
    // A create without groups (an exempt client) is bound by the capacity alone.
    create(&*store, &new_session(b"exempt", TTL), t0);
    assert!(matches!(
        outcome(&*store, Action::Create(new_session(b"exempt", TTL)), t0),
        Outcome::Full { .. }
    ));
    // The attacker's sessions ending gives the group its share again.
    let later = t0 + TTL;
    assert!(matches!(
        outcome(&*store, Action::Create(grouped(other48(3))), later),
        Outcome::Created(_)
    ));
}
