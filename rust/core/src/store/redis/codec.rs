//! The replies of the scripts, decoded strictly: anything a script does not promise is
//! [`StoreError::Corrupt`] rather than a wrong answer, and no stored value can make a later
//! step (such as formatting an HTTP date) fail.

use std::time::{Duration, SystemTime};

use ::redis::Value;
use bytes::Bytes;

use crate::clock::from_unix_millis;
use crate::etag::EntityTag;
use crate::id::SessionId;
use crate::session::{Protocol, Session};
use crate::store::{Executed, Meta, Outcome, StoreError};

/// The last millisecond of the year 9999: HTTP dates cannot go further.
const LAST_HTTP_DATE_MILLIS: u64 = 253_402_300_799_999;

/// A reply that is not what the script promises.
pub(super) fn corrupt(what: &str) -> StoreError {
    StoreError::Corrupt(format!("unexpected reply from Redis: {what}"))
}

/// The elements of an array reply; a server error becomes the error it is.
pub(super) fn array(value: Value) -> Result<Vec<Value>, StoreError> {
    match value {
        Value::Array(items) => Ok(items),
        // A key under the prefix that the store did not write (a string where a session hash
        // belongs): bad data, which waiting will not fix.
        Value::ServerError(error) if error.code() == "WRONGTYPE" => {
            Err(StoreError::Corrupt(format!(
                "a key is not what the store writes: {}",
                error.details().unwrap_or_default()
            )))
        }
        Value::ServerError(error) => Err(StoreError::Unavailable(format!(
            "Redis refused the call: {} {}",
            error.code(),
            error.details().unwrap_or_default()
        ))),
        _ => Err(corrupt("expected an array")),
    }
}

/// The integer of an integer reply (or of a decimal string).
pub(super) fn int(value: &Value) -> Result<u64, StoreError> {
    match value {
        Value::Int(n) => u64::try_from(*n).map_err(|_| corrupt("negative number")),
        Value::BulkString(bytes) => std::str::from_utf8(bytes)
            .ok()
            .filter(|text| !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|text| text.parse().ok())
            .ok_or_else(|| corrupt("not a decimal integer")),
        _ => Err(corrupt("expected a number")),
    }
}

/// A count.
pub(super) fn count(value: &Value) -> Result<usize, StoreError> {
    usize::try_from(int(value)?).map_err(|_| corrupt("count too large"))
}

/// A time in milliseconds since the epoch, within what an HTTP date can say.
pub(super) fn time(value: &Value) -> Result<SystemTime, StoreError> {
    let millis = int(value)?;
    if millis > LAST_HTTP_DATE_MILLIS {
        return Err(corrupt("time beyond the year 9999"));
    }
    from_unix_millis(millis).ok_or_else(|| corrupt("time out of range"))
}

/// A wait in milliseconds.
fn wait(value: &Value) -> Result<Duration, StoreError> {
    Ok(Duration::from_millis(int(value)?))
}

fn etag(value: &Value) -> Result<EntityTag, StoreError> {
    let Value::BulkString(bytes) = value else {
        return Err(corrupt("missing etag"));
    };
    std::str::from_utf8(bytes)
        .ok()
        .and_then(EntityTag::from_opaque)
        .ok_or_else(|| corrupt("etag is not a valid entity tag"))
}

fn meta(etag_value: &Value, last_modified: &Value, expires: &Value) -> Result<Meta, StoreError> {
    Ok(Meta {
        etag: etag(etag_value)?,
        last_modified: time(last_modified)?,
        expires: time(expires)?,
    })
}

/// What a session script did. `id` and `new` describe the request: the session asked for,
/// and for a create or a replace the tag and lifetime it sent.
pub(super) struct Request<'a> {
    pub(super) id: SessionId,
    pub(super) protocol: Protocol,
    pub(super) new_etag: Option<&'a EntityTag>,
    pub(super) ttl: Duration,
}

/// Decodes the reply of a session script; `reply` is `{status, now, ...}`.
pub(super) fn executed(request: &Request<'_>, reply: Value) -> Result<Executed, StoreError> {
    let mut items = array(reply)?;
    let (status, now) = match items.as_slice() {
        [status, now, ..] => (int(status)?, time(now)?),
        _ => return Err(corrupt("short reply")),
    };
    let new_etag = || {
        request
            .new_etag
            .cloned()
            .ok_or_else(|| corrupt("a status for another request"))
    };
    let outcome = match (status, &items[2..]) {
        (0, [dropped]) => {
            return Ok(Executed::expiring(
                Outcome::Created(Meta {
                    etag: new_etag()?,
                    last_modified: now,
                    expires: now + request.ttl,
                }),
                count(dropped)?,
            ))
        }
        (1, [retry]) => Outcome::RateLimited {
            retry_after: wait(retry)?,
        },
        (2, [retry]) => Outcome::QuotaExceeded {
            retry_after: wait(retry)?,
        },
        (3, [retry, dropped]) => {
            return Ok(Executed::expiring(
                Outcome::Full {
                    retry_after: wait(retry)?,
                },
                count(dropped)?,
            ))
        }
        (4, []) => Outcome::NotFound,
        (4, [dropped]) => return Ok(Executed::expiring(Outcome::NotFound, count(dropped)?)),
        (5, [tag, last_modified, expires, length]) => Outcome::NotModified {
            meta: meta(tag, last_modified, expires)?,
            length: count(length)?,
        },
        (6, [tag, last_modified, expires, _]) => {
            let meta = meta(tag, last_modified, expires)?;
            let Some(Value::BulkString(payload)) = items.pop() else {
                return Err(StoreError::Corrupt(format!(
                    "session {} has no payload",
                    request.id.short()
                )));
            };
            Outcome::Found(Session {
                id: request.id,
                protocol: request.protocol,
                payload: Bytes::from(payload),
                etag: meta.etag,
                last_modified: meta.last_modified,
                expires: meta.expires,
            })
        }
        (7, [expires]) => Outcome::Replaced(Meta {
            etag: new_etag()?,
            last_modified: now,
            expires: time(expires)?,
        }),
        (8, [tag, last_modified, expires]) => {
            Outcome::PreconditionFailed(meta(tag, last_modified, expires)?)
        }
        (9, []) => Outcome::Deleted,
        (12, [tag, last_modified, expires]) => {
            Outcome::Unchanged(meta(tag, last_modified, expires)?)
        }
        (11, []) => {
            return Ok(Executed {
                discarded: 1,
                ..Executed::only(Outcome::NotFound)
            })
        }
        (10, []) => {
            return Err(StoreError::Corrupt(format!(
                "session {} is missing fields",
                request.id.short()
            )))
        }
        _ => return Err(corrupt("unknown status")),
    };
    Ok(Executed::only(outcome))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entropy::SystemEntropy;

    fn id() -> SessionId {
        SessionId::generate(SystemTime::UNIX_EPOCH, &SystemEntropy).unwrap()
    }

    fn read(reply: Vec<Value>) -> Result<Executed, StoreError> {
        let request = Request {
            id: id(),
            protocol: Protocol::Msc4108,
            new_etag: None,
            ttl: Duration::ZERO,
        };
        executed(&request, Value::Array(reply))
    }

    fn bulk(text: &str) -> Value {
        Value::BulkString(text.as_bytes().to_vec())
    }

    #[test]
    fn a_found_session_decodes() {
        let found = read(vec![
            Value::Int(6),
            Value::Int(5),
            bulk("abc"),
            bulk("1000"),
            Value::Int(2000),
            bulk("payload"),
        ])
        .unwrap();
        let Outcome::Found(session) = found.outcome else {
            panic!("{found:?}");
        };
        assert_eq!(session.payload.as_ref(), b"payload");
        assert_eq!(
            session.expires,
            SystemTime::UNIX_EPOCH + Duration::from_secs(2)
        );
    }

    #[test]
    fn malformed_replies_are_corrupt() {
        let good = || {
            vec![
                Value::Int(5),
                Value::Int(5),
                bulk("abc"),
                bulk("1000"),
                bulk("2000"),
                Value::Int(3),
            ]
        };
        assert!(read(good()).is_ok());
        for (index, bad) in [
            (2, bulk("a\"b")),
            (3, bulk("-5")),
            (4, bulk("")),
            (
                4,
                Value::Int(i64::try_from(LAST_HTTP_DATE_MILLIS).unwrap() + 1),
            ),
            (5, Value::Nil),
        ] {
            let mut reply = good();
            reply[index] = bad;
            assert!(
                matches!(read(reply), Err(StoreError::Corrupt(_))),
                "field {index}"
            );
        }
        assert!(matches!(
            read(good()[..4].to_vec()),
            Err(StoreError::Corrupt(_))
        ));
        // A create's status on a read: nothing to take the tag from.
        assert!(matches!(
            read(vec![Value::Int(0), Value::Int(5), Value::Int(0)]),
            Err(StoreError::Corrupt(_))
        ));
    }
}
