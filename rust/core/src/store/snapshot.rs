//! Snapshots of the memory store, so that a single Synapse process without Redis keeps QR
//! logins in progress across a restart.
//!
//! Layout, all integers big-endian: the magic `SRVSNAP1`, the session count (u32), then per
//! session its id (16 bytes), expires and last-modified (u64 milliseconds since the epoch),
//! the tag (u8 length + bytes) and the payload (u32 length + bytes); last, the SHA-256 of
//! everything before it, so that a truncated or damaged file is refused whole.

use std::fmt;
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use sha2::{Digest, Sha256};
use ulid::Ulid;

use crate::etag::EntityTag;
use crate::id::SessionId;
use crate::session::Session;

const MAGIC: &[u8; 8] = b"SRVSNAP1";
const DIGEST_LEN: usize = 32;

/// Why a snapshot could not be used.
#[derive(Debug)]
pub enum SnapshotError {
    /// The file could not be read or written.
    Io(io::Error),
    /// The file is not a complete snapshot of this format.
    Corrupt(&'static str),
}

impl fmt::Display for SnapshotError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Io(error) => write!(f, "snapshot i/o failed: {error}"),
            Self::Corrupt(why) => write!(f, "snapshot is corrupt: {why}"),
        }
    }
}

impl std::error::Error for SnapshotError {}

impl From<io::Error> for SnapshotError {
    fn from(error: io::Error) -> Self {
        Self::Io(error)
    }
}

/// Writes `sessions` to `path` atomically: a reader sees the old file or the whole new one.
///
/// # Errors
/// [`SnapshotError::Io`] when the file cannot be written.
pub fn save(path: &Path, sessions: &[Session]) -> Result<(), SnapshotError> {
    let encoded = encode(sessions)?;
    let mut temporary = path.as_os_str().to_owned();
    temporary.push(".tmp");
    let temporary = Path::new(&temporary);
    let mut file = File::create(temporary)?;
    file.write_all(&encoded)?;
    file.sync_all()?;
    drop(file);
    fs::rename(temporary, path)?;
    Ok(())
}

/// Reads the sessions of the snapshot at `path` that are still live at `now`, then removes
/// the file so that it is never loaded twice. `Ok(None)` when there is no snapshot.
///
/// # Errors
/// [`SnapshotError`] when the file exists but cannot be read or decoded; it is left in place
/// for inspection.
pub fn take(path: &Path, now: SystemTime) -> Result<Option<Vec<Session>>, SnapshotError> {
    let data = match fs::read(path) {
        Ok(data) => data,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(error.into()),
    };
    let sessions = decode(&data)?;
    fs::remove_file(path)?;
    Ok(Some(
        sessions
            .into_iter()
            .filter(|s| !s.is_expired(now))
            .collect(),
    ))
}

fn encode(sessions: &[Session]) -> Result<Vec<u8>, SnapshotError> {
    let too_big = || SnapshotError::Corrupt("a session is too large to snapshot");
    let mut out = BytesMut::new();
    out.put_slice(MAGIC);
    out.put_u32(u32::try_from(sessions.len()).map_err(|_| too_big())?);
    for session in sessions {
        out.put_slice(&session.id.to_bytes());
        out.put_u64(millis(session.expires));
        out.put_u64(millis(session.last_modified));
        let tag = session.etag.opaque().as_bytes();
        out.put_u8(u8::try_from(tag.len()).map_err(|_| too_big())?);
        out.put_slice(tag);
        out.put_u32(u32::try_from(session.payload.len()).map_err(|_| too_big())?);
        out.put_slice(&session.payload);
    }
    let digest = Sha256::digest(&out);
    out.put_slice(&digest);
    Ok(out.to_vec())
}

fn decode(data: &[u8]) -> Result<Vec<Session>, SnapshotError> {
    let body_len = data
        .len()
        .checked_sub(DIGEST_LEN)
        .ok_or(SnapshotError::Corrupt("too short"))?;
    let (body, digest) = data.split_at(body_len);
    if Sha256::digest(body).as_slice() != digest {
        return Err(SnapshotError::Corrupt("checksum mismatch"));
    }
    let mut reader = Bytes::copy_from_slice(body);
    let magic = take_bytes(&mut reader, MAGIC.len())?;
    if magic.as_ref() != MAGIC {
        return Err(SnapshotError::Corrupt("not a synapse-rendezvous snapshot"));
    }
    let count = take_u32(&mut reader)?;
    let mut sessions = Vec::new();
    for _ in 0..count {
        let id_bytes: [u8; 16] = take_bytes(&mut reader, 16)?
            .as_ref()
            .try_into()
            .map_err(|_| SnapshotError::Corrupt("bad id"))?;
        let expires = from_millis(take_u64(&mut reader)?);
        let last_modified = from_millis(take_u64(&mut reader)?);
        let tag_len = usize::from(take_bytes(&mut reader, 1)?[0]);
        let tag = take_bytes(&mut reader, tag_len)?;
        let etag = std::str::from_utf8(&tag)
            .ok()
            .and_then(EntityTag::from_opaque)
            .ok_or(SnapshotError::Corrupt("bad tag"))?;
        let payload_len = usize::try_from(take_u32(&mut reader)?)
            .map_err(|_| SnapshotError::Corrupt("bad length"))?;
        let payload = take_bytes(&mut reader, payload_len)?;
        sessions.push(Session {
            id: SessionId::from_ulid(Ulid::from_bytes(id_bytes)),
            payload,
            etag,
            last_modified,
            expires,
        });
    }
    if reader.has_remaining() {
        return Err(SnapshotError::Corrupt("trailing bytes"));
    }
    Ok(sessions)
}

fn take_bytes(reader: &mut Bytes, len: usize) -> Result<Bytes, SnapshotError> {
    if reader.remaining() < len {
        return Err(SnapshotError::Corrupt("truncated"));
    }
    Ok(reader.split_to(len))
}

fn take_u32(reader: &mut Bytes) -> Result<u32, SnapshotError> {
    Ok(take_bytes(reader, 4)?.get_u32())
}

fn take_u64(reader: &mut Bytes) -> Result<u64, SnapshotError> {
    Ok(take_bytes(reader, 8)?.get_u64())
}

fn millis(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn from_millis(millis: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(millis)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entropy::SystemEntropy;

    fn start() -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(1_800_000_000_123)
    }

    fn session(payload: &'static [u8], ttl_secs: u64) -> Session {
        Session::create(
            Bytes::from_static(payload),
            start(),
            Duration::from_secs(ttl_secs),
            &SystemEntropy,
        )
        .unwrap()
    }

    fn temp_path(name: &str) -> std::path::PathBuf {
        std::env::temp_dir().join(format!("srv-snapshot-{}-{name}", std::process::id()))
    }

    #[test]
    fn round_trip_keeps_live_sessions_exactly() {
        let path = temp_path("round-trip");
        let live = session(b"\xff\x00 not utf-8", 120);
        let empty = session(b"", 120);
        let expired = session(b"old", 1);
        save(&path, &[live.clone(), empty.clone(), expired]).unwrap();
        let loaded = take(&path, start() + Duration::from_secs(2))
            .unwrap()
            .unwrap();
        assert_eq!(loaded, vec![live, empty]);
        assert!(!path.exists(), "a snapshot is loaded only once");
        assert!(take(&path, start()).unwrap().is_none());
    }

    #[test]
    fn damaged_files_are_refused_and_kept() {
        let path = temp_path("damaged");
        save(&path, &[session(b"hello", 120)]).unwrap();
        let mut data = fs::read(&path).unwrap();
        data[20] ^= 1;
        fs::write(&path, &data).unwrap();
        assert!(matches!(
            take(&path, start()),
            Err(SnapshotError::Corrupt(_))
        ));
        fs::write(&path, &data[..10]).unwrap();
        assert!(matches!(
            take(&path, start()),
            Err(SnapshotError::Corrupt(_))
        ));
        assert!(path.exists());
        fs::remove_file(&path).unwrap();
    }
}
