//! The [`Link`] state machine alone, without Redis: the test plays the caller (sockets,
//! timer) and the server (reply bytes), and checks the effects the link asks for.
// Test code: failing loudly is the point, and times are computed from known constants.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::unchecked_time_subtraction
)]

use std::time::{Duration, Instant, SystemTime};

use redis::{cmd, Cmd};
use synapse_rendezvous_core::store::redis::{Call, Effect, Link, LinkConfig, Value};
use synapse_rendezvous_core::store::{Action, Operation};
use synapse_rendezvous_core::{RedisConfig, RedisStore, SessionId, StoreError, SystemEntropy};

const TIMEOUT: Duration = Duration::from_millis(100);

/// A real call of the store (a read of a fresh id): the link never looks inside it.
fn call() -> Call {
    let id = SessionId::generate(SystemTime::now(), &SystemEntropy).unwrap();
    let operation = Operation {
        admission: None,
        action: Action::Read {
            id,
            if_none_match: None,
        },
    };
    RedisStore::new(&RedisConfig::default(), 10).call(&operation, None)
}

fn link(connections: usize, max_pending: usize, handshake: Vec<Cmd>) -> Link<u32> {
    Link::new(
        LinkConfig {
            connections,
            max_pending,
            timeout: TIMEOUT,
        },
        handshake,
    )
}

/// A link of one connection, up, with no handshake.
fn connected_link(max_pending: usize) -> (Link<u32>, Instant) {
    let mut link = link(1, max_pending, Vec::new());
    let now = Instant::now();
    let mut out = Vec::new();
    link.connected(0, now, |_| true, &mut out);
    assert!(out.is_empty(), "{out:?}");
    (link, now)
}

/// What the effects wrote, per connection.
fn writes(effects: &[Effect<u32>]) -> Vec<(usize, Vec<u8>)> {
    effects
        .iter()
        .filter_map(|effect| match effect {
            Effect::Write { connection, bytes } => Some((*connection, bytes.clone())),
            _ => None,
        })
        .collect()
}

/// The calls the effects answered, in order.
fn answered(effects: &[Effect<u32>]) -> Vec<(u32, Result<Value, StoreError>)> {
    effects
        .iter()
        .filter_map(|effect| match effect {
            Effect::Done { token, reply, .. } => Some((*token, reply.clone())),
            _ => None,
        })
        .collect()
}

/// The connections the effects close.
fn closed(effects: &[Effect<u32>]) -> Vec<usize> {
    effects
        .iter()
        .filter_map(|effect| match effect {
            Effect::Close { connection, .. } => Some(*connection),
            _ => None,
        })
        .collect()
}

fn submit(link: &mut Link<u32>, token: u32, retry: bool, now: Instant) -> Vec<Effect<u32>> {
    let mut out = Vec::new();
    link.submit(token, call(), retry, now, &mut out);
    out
}

fn receive(link: &mut Link<u32>, connection: usize, data: &[u8], now: Instant) -> Vec<Effect<u32>> {
    let mut out = Vec::new();
    link.received(connection, data, now, &mut out);
    out
}

fn lost_connection() -> StoreError {
    StoreError::Unavailable("the connection to Redis was lost".to_owned())
}

#[test]
fn replies_are_matched_in_order_across_pipelined_calls() {
    let (mut link, now) = connected_link(10);
    let calls: Vec<Call> = (0..3).map(|_| call()).collect();
    let mut out = Vec::new();
    for (token, call) in (1..).zip(&calls) {
        link.submit(token, call.clone(), false, now, &mut out);
    }
    let sent: Vec<_> = calls
        .iter()
        .map(|call| (0, call.command().get_packed_command()))
        .collect();
    assert_eq!(writes(&out), sent);
    assert_eq!(link.pending(), 3);
    let out = receive(&mut link, 0, b":1\r\n$2\r\nok\r\n*1\r\n:3\r\n", now);
    assert_eq!(
        answered(&out),
        [
            (1, Ok(Value::Int(1))),
            (2, Ok(Value::BulkString(b"ok".to_vec()))),
            (3, Ok(Value::Array(vec![Value::Int(3)]))),
        ]
    );
    assert_eq!(link.pending(), 0);
}

#[test]
fn calls_fill_one_connection_then_spill_and_each_answers_its_own() {
    let fill = Link::<u32>::FILL;
    let mut link = link(2, 100, Vec::new());
    let now = Instant::now();
    let mut out = Vec::new();
    link.connected(0, now, |_| true, &mut out);
    link.connected(1, now, |_| true, &mut out);
    let mut out = Vec::new();
    for token in 1..=u32::try_from(fill).unwrap() + 1 {
        out.extend(submit(&mut link, token, false, now));
    }
    let connections: Vec<usize> = writes(&out).iter().map(|(c, _)| *c).collect();
    let mut expected = vec![0; fill];
    expected.push(1);
    assert_eq!(connections, expected);
    let spilled = u32::try_from(fill).unwrap() + 1;
    assert_eq!(
        answered(&receive(&mut link, 1, b":20\r\n", now)),
        [(spilled, Ok(Value::Int(20)))]
    );
    assert_eq!(
        answered(&receive(&mut link, 0, b":10\r\n", now)),
        [(1, Ok(Value::Int(10)))]
    );
}

#[test]
fn replies_split_at_every_byte_boundary_come_out_whole() {
    let stream: &[u8] = b"$7\r\nhe\r\nllo\r\n*3\r\n:1\r\n$-1\r\n*0\r\n-ERR odd\r\n";
    for split in 0..=stream.len() {
        let (mut link, now) = connected_link(10);
        for token in 1..=3 {
            submit(&mut link, token, false, now);
        }
        let mut out = receive(&mut link, 0, &stream[..split], now);
        out.extend(receive(&mut link, 0, &stream[split..], now));
        let replies = answered(&out);
        let tokens: Vec<u32> = replies.iter().map(|(token, _)| *token).collect();
        assert_eq!(tokens, [1, 2, 3], "split at {split}");
        assert_eq!(replies[0].1, Ok(Value::BulkString(b"he\r\nllo".to_vec())));
        assert_eq!(
            replies[1].1,
            Ok(Value::Array(vec![
                Value::Int(1),
                Value::Nil,
                Value::Array(vec![])
            ]))
        );
        assert!(
            matches!(&replies[2].1, Ok(Value::ServerError(_))),
            "{replies:?}"
        );
    }
    let (mut link, now) = connected_link(10);
    submit(&mut link, 1, false, now);
    let mut out = Vec::new();
    for byte in b"$3\r\nabc\r\n".chunks(1) {
        out.extend(receive(&mut link, 0, byte, now));
    }
    assert_eq!(
        answered(&out),
        [(1, Ok(Value::BulkString(b"abc".to_vec())))]
    );
}

#[test]
fn a_call_past_its_timeout_is_answered_and_its_late_reply_dropped() {
    // Submitted while no connection is up, sent once one is: its time runs from submission,
    // the connection's from sending.
    let mut link = link(1, 10, Vec::new());
    let start = Instant::now();
    submit(&mut link, 1, false, start);
    let sent = start + Duration::from_millis(60);
    let mut out = Vec::new();
    link.connected(0, sent, |_| true, &mut out);
    submit(&mut link, 2, false, sent);
    let mut out = Vec::new();
    link.tick(start + TIMEOUT - Duration::from_millis(1), &mut out);
    assert!(out.is_empty(), "{out:?}");
    assert_eq!(link.next_deadline(), Some(start + TIMEOUT));
    link.tick(start + TIMEOUT, &mut out);
    assert_eq!(answered(&out), [(1, Err(StoreError::Timeout))]);
    assert!(
        closed(&out).is_empty(),
        "the connection has not waited the timeout yet"
    );
    // The abandoned call still holds its slot until its reply comes.
    assert_eq!(link.pending(), 2);
    let late = start + TIMEOUT + Duration::from_millis(1);
    let out = receive(&mut link, 0, b":1\r\n:2\r\n", late);
    assert_eq!(answered(&out), [(2, Ok(Value::Int(2)))]);
    assert_eq!(link.pending(), 0);
}

#[test]
fn a_connection_whose_oldest_call_waited_the_timeout_is_closed() {
    let (mut link, start) = connected_link(10);
    submit(&mut link, 1, false, start);
    let mut out = Vec::new();
    link.tick(start + TIMEOUT, &mut out);
    assert_eq!(answered(&out), [(1, Err(StoreError::Timeout))]);
    assert_eq!(closed(&out), [0]);
    // The caller closes it and reports the loss: the abandoned call's slot is freed.
    let mut out = Vec::new();
    link.lost(0, start + TIMEOUT, &mut out);
    assert!(out.is_empty(), "{out:?}");
    assert_eq!(link.pending(), 0);
}

#[test]
fn beyond_max_pending_a_call_is_overloaded_at_once() {
    let (mut link, now) = connected_link(2);
    submit(&mut link, 1, false, now);
    submit(&mut link, 2, false, now);
    let out = submit(&mut link, 3, false, now);
    assert!(writes(&out).is_empty());
    assert_eq!(answered(&out), [(3, Err(StoreError::Overloaded))]);
    receive(&mut link, 0, b":1\r\n", now);
    let out = submit(&mut link, 4, false, now);
    assert_eq!(writes(&out).len(), 1);
    assert!(answered(&out).is_empty());
}

#[test]
fn a_lost_connection_fails_writes_and_resends_a_read_once() {
    let (mut link, now) = connected_link(10);
    submit(&mut link, 1, true, now);
    submit(&mut link, 2, false, now);
    let mut out = Vec::new();
    link.lost(0, now, &mut out);
    assert_eq!(answered(&out), [(2, Err(lost_connection()))]);
    assert!(
        writes(&out).is_empty(),
        "no connection is up: the read waits"
    );
    let mut out = Vec::new();
    link.connected(0, now, |_| true, &mut out);
    assert_eq!(writes(&out).len(), 1, "the read goes out again");
    // Lost a second time, it fails: one retry only.
    let mut out = Vec::new();
    link.lost(0, now, &mut out);
    assert_eq!(answered(&out), [(1, Err(lost_connection()))]);
    assert_eq!(link.pending(), 0);
}

#[test]
fn a_read_is_resent_at_once_on_another_connection_that_is_up() {
    let mut link = link(2, 10, Vec::new());
    let now = Instant::now();
    let mut out = Vec::new();
    link.connected(0, now, |_| true, &mut out);
    submit(&mut link, 1, true, now);
    link.connected(1, now, |_| true, &mut out);
    let mut out = Vec::new();
    link.lost(0, now, &mut out);
    let resent: Vec<usize> = writes(&out).iter().map(|(c, _)| *c).collect();
    assert_eq!(resent, [1]);
    assert_eq!(
        answered(&receive(&mut link, 1, b":5\r\n", now)),
        [(1, Ok(Value::Int(5)))]
    );
}

#[test]
fn a_read_out_of_time_is_not_resent() {
    let (mut link, start) = connected_link(10);
    submit(&mut link, 1, true, start);
    let mut out = Vec::new();
    link.lost(0, start + TIMEOUT, &mut out);
    assert_eq!(answered(&out), [(1, Err(lost_connection()))]);
}

#[test]
fn noscript_resends_the_call_once_with_its_source_on_the_same_connection() {
    let (mut link, now) = connected_link(10);
    let call = call();
    let mut out = Vec::new();
    link.submit(1, call.clone(), false, now, &mut out);
    let out = receive(&mut link, 0, b"-NOSCRIPT No matching script.\r\n", now);
    assert!(answered(&out).is_empty(), "{out:?}");
    assert_eq!(writes(&out), [(0, call.with_source().get_packed_command())]);
    assert_eq!(
        answered(&receive(&mut link, 0, b":7\r\n", now)),
        [(1, Ok(Value::Int(7)))]
    );

    // Once only: a second NOSCRIPT is the answer.
    submit(&mut link, 2, false, now);
    receive(&mut link, 0, b"-NOSCRIPT No matching script.\r\n", now);
    let out = receive(&mut link, 0, b"-NOSCRIPT No matching script.\r\n", now);
    let replies = answered(&out);
    assert!(
        matches!(&replies[..], [(2, Ok(Value::ServerError(error)))] if error.code() == "NOSCRIPT"),
        "{replies:?}"
    );
}

#[test]
fn a_handshake_refused_closes_the_connection() {
    let mut select = cmd("SELECT");
    select.arg(1);
    let mut link = link(1, 10, vec![cmd("PING"), select]);
    let now = Instant::now();
    // Submitted before any connection is up: it waits, then follows the handshake.
    submit(&mut link, 1, false, now);
    let mut out = Vec::new();
    link.connected(0, now, |_| true, &mut out);
    let sent: Vec<Vec<u8>> = writes(&out).into_iter().map(|(_, bytes)| bytes).collect();
    assert_eq!(sent.len(), 2);
    assert_eq!(
        sent[0],
        b"*1\r\n$4\r\nPING\r\n*2\r\n$6\r\nSELECT\r\n$1\r\n1\r\n"
    );
    let out = receive(
        &mut link,
        0,
        b"+PONG\r\n-ERR DB index is out of range\r\n",
        now,
    );
    assert_eq!(closed(&out), [0]);
    assert!(answered(&out).is_empty());
    let mut out = Vec::new();
    link.lost(0, now, &mut out);
    assert_eq!(answered(&out), [(1, Err(lost_connection()))]);
}

#[test]
fn close_fails_everything_and_refuses_later_calls() {
    let mut link = link(2, 10, Vec::new());
    let now = Instant::now();
    let mut out = Vec::new();
    link.connected(0, now, |_| true, &mut out);
    submit(&mut link, 1, false, now);
    let mut idle = self::link(1, 10, Vec::new());
    submit(&mut idle, 9, false, now);

    let shutting_down = || Err(StoreError::Unavailable("shutting down".to_owned()));
    let mut out = Vec::new();
    link.close(now, &mut out);
    assert_eq!(answered(&out), [(1, shutting_down())]);
    assert_eq!(closed(&out), [0]);
    assert_eq!(link.pending(), 0);
    assert_eq!(
        answered(&submit(&mut link, 2, false, now)),
        [(2, shutting_down())]
    );
    let mut out = Vec::new();
    link.connected(1, now, |_| true, &mut out);
    assert_eq!(closed(&out), [1]);

    // A call that was only waiting for a connection fails too.
    let mut out = Vec::new();
    idle.close(now, &mut out);
    assert_eq!(answered(&out), [(9, shutting_down())]);
}

#[test]
fn waiting_calls_nobody_wants_are_dropped_and_free_their_slot() {
    let mut link = link(1, 3, Vec::new());
    let now = Instant::now();
    for token in 1..=3 {
        submit(&mut link, token, false, now);
    }
    assert_eq!(
        answered(&submit(&mut link, 4, false, now)),
        [(4, Err(StoreError::Overloaded))]
    );
    let mut out = Vec::new();
    link.connected(0, now, |token| *token != 2, &mut out);
    assert_eq!(writes(&out).len(), 2);
    assert!(answered(&out).is_empty(), "dropped unanswered: {out:?}");
    assert_eq!(link.pending(), 2);
    assert_eq!(writes(&submit(&mut link, 5, false, now)).len(), 1);
    let out = receive(&mut link, 0, b":1\r\n:3\r\n:5\r\n", now);
    let tokens: Vec<u32> = answered(&out).iter().map(|(token, _)| *token).collect();
    assert_eq!(tokens, [1, 3, 5]);
}
