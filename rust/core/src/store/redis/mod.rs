//! The shared store: sessions in Redis, so that every process (Synapse's main process, its
//! workers, standalone servers) sees the same sessions, limits and capacity, and sessions
//! survive a restart of any of them.
//!
//! Sans-IO: [`RedisStore::call`] turns an [`Operation`] into one script call and
//! [`RedisStore::decode`] its reply into an [`Executed`]; the caller sends the call, through
//! a [`Link`] or any Redis client. Every request is exactly one call.
//!
//! # Data model
//!
//! With `{prefix}` the configured `key_prefix`, and times in milliseconds since the epoch:
//!
//! - `{prefix}session:{id}`, one hash per session: `payload` (the exact bytes), `etag` (the
//!   opaque tag), `last_modified`, `expires`, and `owner` (the client it counts against, when
//!   a quota applies). `PEXPIREAT` at `expires` lets Redis free it by itself.
//! - `{prefix}session:msc4388:{id}`, one hash per MSC4388 (2025) session, with the same
//!   fields: `payload` holds the `data` string's UTF-8 bytes and `etag` the current
//!   `sequence_token`. A ULID never contains `:`, so no id of one protocol can name a key of
//!   the other: the separate namespace is what keeps each protocol's sessions out of the
//!   other's paths, with no extra field to check, and every key written before MSC4388
//!   support is an MSC4108 session, as it was.
//! - `{prefix}sessions`, a sorted set of every stored session scored by `expires`: the
//!   capacity count, consistent across processes, shared by both protocols. Its member is
//!   what follows `session:` in the session's key (`{id}`, or `msc4388:{id}`), so that
//!   trimming and maintenance cover both protocols unchanged.
//! - `{prefix}client:{client}`, a sorted set per client with a quota: its sessions (index
//!   members), scored by `expires`; it expires with its newest session.
//! - `{prefix}group:{network}`, a sorted set per prefix group (IPv4 /24, IPv6 /56 and /48)
//!   sharing the capacity fairly: its sessions, scored by `expires`; the hash's `groups`
//!   field names the groups of a session.
//! - `{prefix}bucket:{create|session}:{client}`, a token bucket (`tokens`, `updated`); it
//!   expires once it would be full again.
//!
//! Every time comes from Redis's own clock (`TIME` inside the scripts), so every process
//! agrees on expiry and refill whatever its own clock says. Scripts reach session keys
//! through the index, so the store needs a single Redis server (not Redis Cluster), with an
//! eviction policy that does not evict the index (`noeviction`, the default, or a
//! `volatile-*` one).

mod codec;
mod link;
mod replies;
mod scripts;
mod target;

use std::time::SystemTime;

use ::redis::Cmd;

use self::codec::Request;
pub use self::link::{Effect, Link, LinkConfig};
pub use self::replies::{Malformed, Replies};
pub use self::scripts::Call;
use self::scripts::SCRIPTS;
pub use self::target::{Address, Target, Tls};
use super::{Action, Admission, Executed, Maintenance, Operation, StoreError};
use crate::clock::unix_millis;
use crate::config::RedisConfig;
use crate::etag::EntityTagList;
use crate::id::SessionId;
use crate::session::Protocol;
/// A reply from Redis, as [`RedisStore::decode`] takes it.
pub use ::redis::Value;

/// Most ended sessions one maintenance call removes: it stays short however many ended at
/// once, and the next call takes the rest.
const MAINTENANCE_BATCH: usize = 10_000;

/// What precedes an MSC4388 session's id in its index member and key.
const MSC4388_MEMBER: &str = "msc4388:";

/// How operations on the sessions under one key prefix become Redis calls.
#[derive(Debug, Clone)]
pub struct RedisStore {
    prefix: String,
    index: String,
    capacity: usize,
    /// Largest payload a session written by this store can hold: a larger one was not.
    max_payload: String,
    /// Whether MSC4388 sessions are held to MSC4388's data limit (set with the bounds).
    msc4388_bounded: bool,
    /// Longest a session written by this store lives, in ms: one ending later was not.
    ttl: String,
}

impl RedisStore {
    /// The store under `config`'s key prefix, holding at most `capacity` live sessions
    /// across every process sharing the prefix. Every session it finds is taken as its own
    /// until [`RedisStore::with_bounds`] says what it can have written.
    pub fn new(config: &RedisConfig, capacity: usize) -> Self {
        Self {
            prefix: config.key_prefix.clone(),
            index: format!("{}sessions", config.key_prefix),
            capacity,
            max_payload: u64::MAX.to_string(),
            msc4388_bounded: false,
            ttl: (1_u64 << 53).to_string(),
        }
    }

    /// The same store, dropping (and reporting as discarded) every session it reads or
    /// maintains whose payload is over `max_payload_bytes` or whose expiry lies beyond now +
    /// `ttl`: sessions it cannot have written, which would otherwise hold capacity or
    /// memory for as long as their forger wants. MSC4388 sessions are held to
    /// [`crate::MSC4388_MAX_DATA_BYTES`] instead of `max_payload_bytes` (and to the same `ttl`,
    /// their lifetime too).
    #[must_use]
    pub fn with_bounds(mut self, max_payload_bytes: usize, ttl: std::time::Duration) -> Self {
        self.max_payload = max_payload_bytes.to_string();
        self.msc4388_bounded = true;
        self.ttl = millis_of(ttl);
        self
    }

    /// What every connection sends when it opens: the URL's `AUTH` and `SELECT`, then a
    /// `SCRIPT LOAD` of each script, so that calls can name them by hash.
    pub fn handshake(target: &Target) -> Vec<Cmd> {
        let mut commands = target.handshake();
        commands.extend(SCRIPTS.all().iter().map(|script| script.load()));
        commands
    }

    /// The one call that carries out `operation`. With `now`, the scripts take that as the
    /// time instead of Redis's clock (for tests that drive a manual clock).
    pub fn call(&self, operation: &Operation, now: Option<SystemTime>) -> Call {
        let now = now.map_or_else(String::new, |now| unix_millis(now).to_string());
        let (bucket, rate, burst) = self.admission(operation.admission.as_ref());
        let mut args: Vec<Vec<u8>> = vec![now.into_bytes(), rate.into_bytes(), burst.into_bytes()];
        match &operation.action {
            Action::Create(new) | Action::Msc4388Create(new) => {
                let (client, quota) = new.quota.map_or_else(
                    || ("none".to_owned(), String::new()),
                    |quota| (quota.client.to_string(), quota.max.to_string()),
                );
                let member = member(operation.action.protocol(), new.id);
                let session = self.session_key(&member);
                let client_set = format!("{}client:{client}", self.prefix);
                let names: Vec<String> = new.groups.iter().map(ToString::to_string).collect();
                let group_sets: Vec<String> = names
                    .iter()
                    .map(|name| format!("{}group:{name}", self.prefix))
                    .collect();
                let mut keys = vec![
                    bucket.as_bytes(),
                    session.as_bytes(),
                    self.index.as_bytes(),
                    client_set.as_bytes(),
                ];
                keys.extend(group_sets.iter().map(String::as_bytes));
                args.extend([
                    self.prefix.as_bytes().to_vec(),
                    member.into_bytes(),
                    new.payload.to_vec(),
                    new.etag.opaque().as_bytes().to_vec(),
                    millis_of(new.ttl).into_bytes(),
                    self.capacity.to_string().into_bytes(),
                    quota.into_bytes(),
                    client.into_bytes(),
                    names.join(" ").into_bytes(),
                ]);
                SCRIPTS.create.call(&keys, &borrowed(&args))
            }
            Action::Read { id, if_none_match } => {
                let id = id.to_string();
                self.push_bounds(&mut args, &id);
                push_tags(&mut args, if_none_match.as_ref());
                let session = self.session_key(&id);
                let keys = [bucket.as_bytes(), session.as_bytes(), self.index.as_bytes()];
                SCRIPTS.read.call(&keys, &borrowed(&args))
            }
            Action::Replace {
                id,
                if_match,
                payload,
                etag,
            } => {
                let id = id.to_string();
                args.push(payload.to_vec());
                args.push(etag.opaque().as_bytes().to_vec());
                self.push_bounds(&mut args, &id);
                push_tags(&mut args, Some(if_match));
                let session = self.session_key(&id);
                let keys = [bucket.as_bytes(), session.as_bytes(), self.index.as_bytes()];
                SCRIPTS.replace.call(&keys, &borrowed(&args))
            }
            Action::Delete { id } | Action::Msc4388Delete { id } => {
                let member = member(operation.action.protocol(), *id);
                args.push(self.prefix.as_bytes().to_vec());
                args.push(member.as_bytes().to_vec());
                let session = self.session_key(&member);
                let keys = [bucket.as_bytes(), session.as_bytes(), self.index.as_bytes()];
                SCRIPTS.delete.call(&keys, &borrowed(&args))
            }
            Action::Msc4388Read { id } => {
                let member = member(Protocol::Msc4388, *id);
                self.push_msc4388_bounds(&mut args, &member);
                // No If-None-Match: the payload always comes back.
                push_tags(&mut args, None);
                let session = self.session_key(&member);
                let keys = [bucket.as_bytes(), session.as_bytes(), self.index.as_bytes()];
                SCRIPTS.read.call(&keys, &borrowed(&args))
            }
            Action::Msc4388Write(write) => {
                let member = member(Protocol::Msc4388, write.id);
                self.push_msc4388_bounds(&mut args, &member);
                args.push(write.presented.as_bytes().to_vec());
                args.push(
                    write
                        .next
                        .as_ref()
                        .map_or_else(Vec::new, |next| next.opaque().as_bytes().to_vec()),
                );
                args.push(write.data.to_vec());
                let session = self.session_key(&member);
                let keys = [bucket.as_bytes(), session.as_bytes(), self.index.as_bytes()];
                SCRIPTS.msc4388_write.call(&keys, &borrowed(&args))
            }
        }
    }

    /// What Redis did with `operation`, from the reply to its [`RedisStore::call`].
    ///
    /// # Errors
    /// [`StoreError::Corrupt`] for a reply or stored data that is not what the store
    /// writes, [`StoreError::Unavailable`] when Redis refused the call.
    pub fn decode(&self, operation: &Operation, reply: Value) -> Result<Executed, StoreError> {
        let protocol = operation.action.protocol();
        let request = match &operation.action {
            Action::Create(new) | Action::Msc4388Create(new) => Request {
                id: new.id,
                protocol,
                new_etag: Some(&new.etag),
                ttl: new.ttl,
            },
            Action::Replace { id, etag, .. } => Request {
                id: *id,
                protocol,
                new_etag: Some(etag),
                ttl: std::time::Duration::ZERO,
            },
            Action::Msc4388Write(write) => Request {
                id: write.id,
                protocol,
                new_etag: write.next.as_ref(),
                ttl: std::time::Duration::ZERO,
            },
            Action::Read { id, .. }
            | Action::Delete { id }
            | Action::Msc4388Read { id }
            | Action::Msc4388Delete { id } => Request {
                id: *id,
                protocol,
                new_etag: None,
                ttl: std::time::Duration::ZERO,
            },
        };
        codec::executed(&request, reply)
    }

    /// The call that frees ended sessions and counts the live ones (see
    /// [`RedisStore::call`] for `now`).
    pub fn maintenance(&self, now: Option<SystemTime>) -> Call {
        let now = now.map_or_else(String::new, |now| unix_millis(now).to_string());
        let batch = MAINTENANCE_BATCH.to_string();
        SCRIPTS.maintain.call(
            &[self.index.as_bytes()],
            &[
                now.as_bytes(),
                self.prefix.as_bytes(),
                batch.as_bytes(),
                self.ttl.as_bytes(),
            ],
        )
    }

    /// What a maintenance call found.
    ///
    /// # Errors
    /// [`StoreError`] for a reply that is not what the script promises.
    pub fn decode_maintenance(reply: Value) -> Result<Maintenance, StoreError> {
        match codec::array(reply)?.as_slice() {
            [_, expired, live, discarded] => Ok(Maintenance {
                expired: codec::count(expired)?,
                live: codec::count(live)?,
                discarded: codec::count(discarded)?,
            }),
            _ => Err(codec::corrupt("maintenance")),
        }
    }

    /// The key prefix, the id and the bounds, for scripts that drop what the store cannot
    /// have written.
    fn push_bounds(&self, args: &mut Vec<Vec<u8>>, id: &str) {
        args.push(self.prefix.as_bytes().to_vec());
        args.push(id.as_bytes().to_vec());
        args.push(self.max_payload.as_bytes().to_vec());
        args.push(self.ttl.as_bytes().to_vec());
    }

    /// The same for an MSC4388 session, under MSC4388's data limit.
    fn push_msc4388_bounds(&self, args: &mut Vec<Vec<u8>>, member: &str) {
        args.push(self.prefix.as_bytes().to_vec());
        args.push(member.as_bytes().to_vec());
        let max = if self.msc4388_bounded {
            crate::MSC4388_MAX_DATA_BYTES.to_string()
        } else {
            u64::MAX.to_string()
        };
        args.push(max.into_bytes());
        args.push(self.ttl.as_bytes().to_vec());
    }

    /// The key of the session whose index member is `member`.
    fn session_key(&self, member: &str) -> String {
        format!("{}session:{member}", self.prefix)
    }

    /// The bucket key, rate and burst of a request; an empty rate means no limit.
    fn admission(&self, admission: Option<&Admission>) -> (String, String, String) {
        match admission {
            Some(admission) => (
                format!(
                    "{}bucket:{}:{}",
                    self.prefix,
                    admission.limit.name(),
                    admission.client
                ),
                admission.bucket.per_second.to_string(),
                admission.bucket.burst.to_string(),
            ),
            None => (
                format!("{}bucket:none", self.prefix),
                String::new(),
                String::new(),
            ),
        }
    }
}

/// A session's index member: its id, behind `msc4388:` for an MSC4388 session.
fn member(protocol: Protocol, id: SessionId) -> String {
    match protocol {
        Protocol::Msc4108 => id.to_string(),
        Protocol::Msc4388 => format!("{MSC4388_MEMBER}{id}"),
    }
}

/// `*` as `1`; otherwise `0` and the opaque tags.
fn push_tags(args: &mut Vec<Vec<u8>>, tags: Option<&EntityTagList>) {
    match tags {
        Some(EntityTagList::Any) => args.push(b"1".to_vec()),
        Some(EntityTagList::Tags(tags)) => {
            args.push(b"0".to_vec());
            args.extend(tags.iter().map(|tag| tag.as_bytes().to_vec()));
        }
        None => args.push(b"0".to_vec()),
    }
}

fn borrowed(args: &[Vec<u8>]) -> Vec<&[u8]> {
    args.iter().map(Vec::as_slice).collect()
}

fn millis_of(duration: std::time::Duration) -> String {
    duration.as_millis().to_string()
}
