//! How session fields are written to and read back from Redis: times as whole milliseconds
//! plus the nanoseconds within the millisecond, and replies decoded strictly, so that anything
//! unexpected is [`StoreError::Corrupt`] rather than a wrong answer.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ::redis::Value;
use bytes::Bytes;

use crate::etag::EntityTag;
use crate::id::SessionId;
use crate::session::Session;
use crate::store::StoreError;

/// The hash fields of a session, in the order scripts and `HMGET` return them.
pub(super) const FIELDS: [&str; 6] = [
    "payload",
    "etag",
    "last_modified",
    "last_modified_ns",
    "expires",
    "expires_ns",
];

/// Largest millisecond count a Lua number (a double) holds exactly.
const MAX_EXACT_MILLIS: u64 = (1 << 53) - 1;

const NANOS_PER_MILLI: u32 = 1_000_000;

/// A time as Redis stores it: milliseconds since the Unix epoch and the nanoseconds within
/// that millisecond.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Millis {
    pub(super) ms: u64,
    pub(super) ns: u32,
}

impl Millis {
    /// Splits `time`. Times before the epoch count as the epoch and times past year 285 000
    /// as that year: neither occurs with a working clock.
    pub(super) fn from_time(time: SystemTime) -> Self {
        let since = time.duration_since(UNIX_EPOCH).unwrap_or_default();
        let ms = u64::try_from(since.as_millis()).unwrap_or(u64::MAX);
        if ms > MAX_EXACT_MILLIS {
            return Self {
                ms: MAX_EXACT_MILLIS,
                ns: 0,
            };
        }
        Self {
            ms,
            ns: since.subsec_nanos() % NANOS_PER_MILLI,
        }
    }

    /// The time back, or `None` for values no [`Millis::from_time`] produces.
    pub(super) fn to_time(self) -> Option<SystemTime> {
        if self.ms > MAX_EXACT_MILLIS || self.ns >= NANOS_PER_MILLI {
            return None;
        }
        UNIX_EPOCH
            .checked_add(Duration::from_millis(self.ms) + Duration::from_nanos(self.ns.into()))
    }

    /// The first whole millisecond at or after this time: when Redis may drop the key.
    pub(super) fn ceil_ms(self) -> u64 {
        self.ms + u64::from(self.ns > 0)
    }
}

/// A reply that is not what the script promises.
pub(super) fn corrupt(what: &str) -> StoreError {
    StoreError::Corrupt(format!("unexpected reply from Redis: {what}"))
}

/// The integer of an integer reply.
pub(super) fn int(value: &Value) -> Result<i64, StoreError> {
    match value {
        Value::Int(n) => Ok(*n),
        _ => Err(corrupt("expected an integer")),
    }
}

/// A count from an integer reply.
pub(super) fn count(value: &Value) -> Result<usize, StoreError> {
    usize::try_from(int(value)?).map_err(|_| corrupt("negative count"))
}

/// The elements of an array reply.
pub(super) fn array(value: Value) -> Result<Vec<Value>, StoreError> {
    match value {
        Value::Array(items) => Ok(items),
        _ => Err(corrupt("expected an array")),
    }
}

/// A time from its two parts, each an integer or a decimal string.
pub(super) fn time(ms: &Value, ns: &Value) -> Result<SystemTime, StoreError> {
    let ms = number(ms)?;
    let ns = u32::try_from(number(ns)?).map_err(|_| corrupt("sub-millisecond part too large"))?;
    Millis { ms, ns }
        .to_time()
        .ok_or_else(|| corrupt("time out of range"))
}

fn number(value: &Value) -> Result<u64, StoreError> {
    match value {
        Value::Int(n) => u64::try_from(*n).map_err(|_| corrupt("negative time")),
        Value::BulkString(bytes) => std::str::from_utf8(bytes)
            .ok()
            .filter(|text| !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|text| text.parse().ok())
            .ok_or_else(|| corrupt("time is not a decimal integer")),
        _ => Err(corrupt("missing time")),
    }
}

fn bytes(value: Value) -> Result<Bytes, StoreError> {
    match value {
        Value::BulkString(bytes) => Ok(Bytes::from(bytes)),
        _ => Err(corrupt("missing payload")),
    }
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

/// The session stored under `id`, from the [`FIELDS`] in order; `None` when none of them is
/// set (no such key).
///
/// # Errors
/// [`StoreError::Corrupt`] when only some fields are set or one does not decode.
pub(super) fn session(id: SessionId, fields: Vec<Value>) -> Result<Option<Session>, StoreError> {
    if fields.iter().all(|field| matches!(field, Value::Nil)) {
        return Ok(None);
    }
    let [payload, tag, last_modified, last_modified_ns, expires, expires_ns]: [Value; 6] = fields
        .try_into()
        .map_err(|_| corrupt("expected six session fields"))?;
    Ok(Some(Session {
        id,
        etag: etag(&tag)?,
        last_modified: time(&last_modified, &last_modified_ns)?,
        expires: time(&expires, &expires_ns)?,
        payload: bytes(payload)?,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_round_trip_to_the_nanosecond() {
        let time = UNIX_EPOCH + Duration::new(1_800_000_000, 123_456_789);
        let millis = Millis::from_time(time);
        assert_eq!(
            millis,
            Millis {
                ms: 1_800_000_000_123,
                ns: 456_789
            }
        );
        assert_eq!(millis.to_time(), Some(time));
        assert_eq!(millis.ceil_ms(), 1_800_000_000_124);
        let whole = Millis::from_time(UNIX_EPOCH + Duration::from_millis(5));
        assert_eq!(whole.ceil_ms(), 5);
    }

    #[test]
    fn out_of_range_times_are_clamped_or_refused() {
        let before = UNIX_EPOCH - Duration::from_secs(1);
        assert_eq!(Millis::from_time(before), Millis { ms: 0, ns: 0 });
        assert_eq!(
            Millis {
                ms: 1,
                ns: NANOS_PER_MILLI
            }
            .to_time(),
            None
        );
        assert_eq!(
            Millis {
                ms: MAX_EXACT_MILLIS + 1,
                ns: 0
            }
            .to_time(),
            None
        );
    }

    #[test]
    fn malformed_fields_are_corrupt() {
        let id: SessionId = "01J9ZQ4V7S0000000000000000".parse().unwrap();
        let good = || {
            vec![
                Value::BulkString(b"x".to_vec()),
                Value::BulkString(b"abc".to_vec()),
                Value::BulkString(b"5".to_vec()),
                Value::BulkString(b"0".to_vec()),
                Value::BulkString(b"6".to_vec()),
                Value::BulkString(b"1".to_vec()),
            ]
        };
        assert!(session(id, good()).unwrap().is_some());
        assert_eq!(session(id, vec![Value::Nil; 6]), Ok(None));
        for (index, bad) in [
            (0, Value::Nil),
            (1, Value::BulkString(b"a\"b".to_vec())),
            (2, Value::BulkString(b"-5".to_vec())),
            (3, Value::BulkString(b"1000000".to_vec())),
            (4, Value::BulkString(b"".to_vec())),
            (5, Value::Nil),
        ] {
            let mut fields = good();
            fields[index] = bad;
            assert!(
                matches!(session(id, fields), Err(StoreError::Corrupt(_))),
                "field {index}"
            );
        }
        assert!(matches!(
            session(id, good()[..5].to_vec()),
            Err(StoreError::Corrupt(_))
        ));
    }
}
