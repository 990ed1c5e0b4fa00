//! Snapshots of the memory store, so that a single Synapse process without Redis keeps QR
//! logins in progress across a restart.
//!
//! Layout, all integers big-endian: the magic `SRVSNAP1`, the session count (u32), then per
//! session its id (16 bytes), expires and last-modified (u64 milliseconds since the epoch),
//! the tag (u8 length + bytes) and the payload (u32 length + bytes); last, the SHA-256 of
//! everything before it, so that a truncated or damaged file is refused whole.
//!
//! Version 2 (`SRVSNAP2`) is the same with one more byte per session, right after its id:
//! its protocol (0 for MSC4108, 1 for MSC4388). A snapshot holding only MSC4108 sessions is
//! still written as version 1, so that an older release can load it after a downgrade;
//! both versions load (a version 1 session is an MSC4108 session).
//!
//! The checksum catches accidents, not forgery: whoever can write the file can compute it.
//! So the file is written private to its owner through a fresh temporary file that nobody
//! could have planted; it is read only when the path itself is a regular file (never
//! through a symbolic link) no larger than the configuration allows; and every session in
//! it is checked against the limits of the process that restores it, so that no file can
//! bring back a session this configuration could not have created.

use std::collections::HashSet;
use std::ffi::OsString;
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use sha2::{Digest, Sha256};
use ulid::Ulid;

use crate::clock::{from_unix_millis, unix_millis};
use crate::entropy::{Entropy, SystemEntropy};
use crate::etag::EntityTag;
use crate::id::SessionId;
use crate::session::{Protocol, Session};

const MAGIC: &[u8; 8] = b"SRVSNAP1";
/// Version 2: a protocol byte per session.
const MAGIC_V2: &[u8; 8] = b"SRVSNAP2";
const DIGEST_LEN: usize = 32;
/// The magic, the session count and the digest.
const FRAME_LEN: u64 = 8 + 4 + 32;
/// The most a session takes besides its payload: id, two times, a tag of up to 255 bytes
/// with its length byte, and the payload's length.
const SESSION_OVERHEAD: u64 = 16 + 8 + 8 + 1 + 255 + 4;
/// The last millisecond of the year 9999: HTTP dates cannot go further.
const LAST_HTTP_DATE_MILLIS: u64 = 253_402_300_799_999;
/// Fresh temporary names tried before a save gives up. Each has 128 random bits, so a
/// second attempt only happens when something is planting files at random names.
const TEMPORARY_ATTEMPTS: usize = 8;

/// Why a snapshot could not be used.
#[derive(Debug)]
pub enum SnapshotError {
    /// The file could not be read or written.
    Io(io::Error),
    /// The file is not a complete snapshot of this format.
    Corrupt(&'static str),
    /// The path is not a regular file (it names what is said here); it was not read.
    NotAFile(&'static str),
    /// The file is larger than any snapshot of this configuration; it was not read.
    TooLarge {
        /// The largest file accepted, in bytes.
        limit: u64,
    },
}

impl fmt::Display for SnapshotError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Io(error) => write!(f, "snapshot i/o failed: {error}"),
            Self::Corrupt(why) => write!(f, "snapshot is corrupt: {why}"),
            Self::NotAFile(what) => {
                write!(f, "snapshot path is {what}, not a regular file: not read")
            }
            Self::TooLarge { limit } => write!(
                f,
                "snapshot is larger than the {limit} bytes that `capacity` sessions of \
                 `max_payload_bytes` can take: not read"
            ),
        }
    }
}

impl std::error::Error for SnapshotError {}

impl From<io::Error> for SnapshotError {
    fn from(error: io::Error) -> Self {
        Self::Io(error)
    }
}

/// What the configuration of the process that restores a snapshot allows it to hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Most sessions the store holds (`capacity`).
    pub capacity: usize,
    /// Largest payload of a session (`max_payload_bytes`; the limit itself is allowed).
    pub max_payload_bytes: usize,
    /// Lifetime of a session (`ttl`): no session this process could have created expires
    /// later than this from now.
    pub ttl: Duration,
    /// Whether this process serves MSC4388: if not, MSC4388 sessions are not restored (no
    /// path could reach them). Their data is held to [`crate::MSC4388_MAX_DATA_BYTES`], not to
    /// `max_payload_bytes`.
    pub msc4388: bool,
}

impl Limits {
    /// The largest file that `capacity` sessions within these limits make; a larger file is
    /// not read at all.
    ///
    /// Without MSC4388 this is the bound of a version 1 file; a version 2 file written with
    /// MSC4388 on and read with it off may then, if near its own bound, be refused whole
    /// (its MSC4388 sessions would be dropped anyway).
    pub fn max_file_bytes(&self) -> u64 {
        let (payload, overhead) = if self.msc4388 {
            // The protocol byte, and MSC4388's own data limit.
            (
                self.max_payload_bytes.max(crate::MSC4388_MAX_DATA_BYTES),
                SESSION_OVERHEAD + 1,
            )
        } else {
            (self.max_payload_bytes, SESSION_OVERHEAD)
        };
        let payload = u64::try_from(payload).unwrap_or(u64::MAX);
        let sessions = u64::try_from(self.capacity).unwrap_or(u64::MAX);
        sessions
            .saturating_mul(payload.saturating_add(overhead))
            .saturating_add(FRAME_LEN)
    }

    /// The largest payload a session of `protocol` may hold.
    fn max_payload(&self, protocol: Protocol) -> usize {
        match protocol {
            Protocol::Msc4108 => self.max_payload_bytes,
            Protocol::Msc4388 => crate::MSC4388_MAX_DATA_BYTES,
        }
    }
}

/// The sessions of a snapshot, sorted by what becomes of them.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Contents {
    /// The live sessions within the limits, in file order: to restore.
    pub sessions: Vec<Session>,
    /// Sessions that had ended: dropped, as any restart would.
    pub expired: usize,
    /// Dropped: a payload over `max_payload_bytes`.
    pub oversized: usize,
    /// Dropped: an expiry later than `ttl` from now (or than an HTTP date can say), or a
    /// last modification after the expiry.
    pub bad_times: usize,
    /// Dropped: an id already given to an earlier session of the file.
    pub duplicates: usize,
    /// Not restored: live MSC4388 sessions, while this configuration does not serve MSC4388.
    /// Not counted in [`Contents::dropped`]: turning MSC4388 off is a choice, not damage.
    pub unserved: usize,
}

impl Contents {
    /// How many sessions the limits dropped: none in a snapshot this configuration wrote.
    pub fn dropped(&self) -> usize {
        self.oversized + self.bad_times + self.duplicates
    }
}

/// Writes `sessions` to `path` atomically: a reader sees the old file or the whole new one.
/// The new file has mode 0600. It is written under a fresh, unpredictable name next to
/// `path` that is created exclusively, so no file or symbolic link planted in the directory
/// is ever written through or reused; then it is synced, renamed over `path` (replacing a
/// symbolic link there, not its target) and the directory is synced.
///
/// # Errors
/// [`SnapshotError::Io`] when the file cannot be written; the temporary file is removed.
pub fn save(path: &Path, sessions: &[Session]) -> Result<(), SnapshotError> {
    save_with(path, sessions, &SystemEntropy)
}

fn save_with(
    path: &Path,
    sessions: &[Session],
    entropy: &dyn Entropy,
) -> Result<(), SnapshotError> {
    let encoded = encode(sessions)?;
    let (temporary, file) = create_temporary(path, entropy)?;
    if let Err(error) = fill_and_rename(file, &encoded, &temporary, path) {
        // A file this call created, never one that was there before: best effort, the
        // error that matters is the one above.
        let _ = fs::remove_file(&temporary);
        return Err(error.into());
    }
    sync_directory(path).map_err(|error| {
        io::Error::new(
            error.kind(),
            format!("snapshot written, but its directory could not be synced: {error}"),
        )
    })?;
    Ok(())
}

/// A new file next to `path`, named `.<file name>.<32 random hex digits>.tmp`.
fn create_temporary(path: &Path, entropy: &dyn Entropy) -> io::Result<(PathBuf, File)> {
    let name = path.file_name().ok_or_else(|| {
        io::Error::new(io::ErrorKind::InvalidInput, "snapshot_path names no file")
    })?;
    for _ in 0..TEMPORARY_ATTEMPTS {
        let mut nonce = [0u8; 16];
        entropy.fill(&mut nonce).map_err(io::Error::other)?;
        let mut candidate = OsString::from(".");
        candidate.push(name);
        candidate.push(format!(".{:032x}.tmp", u128::from_be_bytes(nonce)));
        let temporary = path.with_file_name(candidate);
        match creating().open(&temporary) {
            Ok(file) => return Ok((temporary, file)),
            // Planted, or left by a crash: not ours, so neither opened nor removed.
            Err(error) if error.kind() == io::ErrorKind::AlreadyExists => {}
            Err(error) => return Err(error),
        }
    }
    Err(io::Error::new(
        io::ErrorKind::AlreadyExists,
        "every fresh temporary name tried next to the snapshot was taken",
    ))
}

fn fill_and_rename(mut file: File, data: &[u8], temporary: &Path, path: &Path) -> io::Result<()> {
    restrict(&file)?;
    file.write_all(data)?;
    file.sync_all()?;
    drop(file);
    fs::rename(temporary, path)
}

/// Options that create a file that does not exist yet: `O_EXCL` also refuses a symbolic
/// link, even a dangling one.
fn creating() -> OpenOptions {
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options
}

/// Exactly 0600, whatever the umask took away from the mode at creation.
#[cfg(unix)]
fn restrict(file: &File) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    file.set_permissions(fs::Permissions::from_mode(0o600))
}

#[cfg(not(unix))]
#[allow(clippy::unnecessary_wraps)]
fn restrict(_: &File) -> io::Result<()> {
    Ok(())
}

/// Makes the rename durable: it is an entry of the directory.
#[cfg(unix)]
fn sync_directory(path: &Path) -> io::Result<()> {
    let directory = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    File::open(directory)?.sync_all()
}

#[cfg(not(unix))]
#[allow(clippy::unnecessary_wraps)]
fn sync_directory(_: &Path) -> io::Result<()> {
    Ok(())
}

/// Reads the snapshot at `path` and sorts its sessions against `limits` at `now`, then
/// removes the file so that it is never loaded twice. `Ok(None)` when there is no snapshot.
///
/// # Errors
/// [`SnapshotError`] when the path is a symbolic link or anything but a regular file, when
/// the file is larger than [`Limits::max_file_bytes`], or when it cannot be read or
/// decoded; it is then left in place for inspection.
pub fn take(
    path: &Path,
    limits: &Limits,
    now: SystemTime,
) -> Result<Option<Contents>, SnapshotError> {
    let Some(data) = read_capped(path, limits.max_file_bytes())? else {
        return Ok(None);
    };
    let records = decode(data)?;
    fs::remove_file(path)?;
    Ok(Some(sort(records, limits, now)))
}

/// The whole file, if `path` is a regular file of at most `limit` bytes.
fn read_capped(path: &Path, limit: u64) -> Result<Option<Vec<u8>>, SnapshotError> {
    let Some((file, len)) = open_regular(path)? else {
        return Ok(None);
    };
    if len > limit {
        return Err(SnapshotError::TooLarge { limit });
    }
    let mut data = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
    // The file may grow after the check: never read past the limit all the same.
    file.take(limit.saturating_add(1)).read_to_end(&mut data)?;
    if u64::try_from(data.len()).map_or(true, |read| read > limit) {
        return Err(SnapshotError::TooLarge { limit });
    }
    Ok(Some(data))
}

/// Opens `path` without following a symbolic link and without waiting on a FIFO, and
/// checks, on what was opened (no race), that it is a regular file; with its length.
fn open_regular(path: &Path) -> Result<Option<(File, u64)>, SnapshotError> {
    #[cfg(not(unix))]
    if fs::symlink_metadata(path).is_ok_and(|meta| meta.file_type().is_symlink()) {
        return Err(SnapshotError::NotAFile("a symbolic link"));
    }
    let file = match reading().open(path) {
        Ok(file) => file,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(None),
        // `O_NOFOLLOW` on a symbolic link: ELOOP on Linux, other codes elsewhere.
        Err(error) => {
            return Err(match fs::symlink_metadata(path) {
                Ok(meta) if meta.file_type().is_symlink() => {
                    SnapshotError::NotAFile("a symbolic link")
                }
                _ => error.into(),
            })
        }
    };
    let meta = file.metadata()?;
    let kind = meta.file_type();
    if kind.is_file() {
        Ok(Some((file, meta.len())))
    } else if kind.is_dir() {
        Err(SnapshotError::NotAFile("a directory"))
    } else {
        Err(SnapshotError::NotAFile("a FIFO, socket or device"))
    }
}

fn reading() -> OpenOptions {
    let mut options = OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        // O_NONBLOCK: opening a FIFO returns at once instead of hanging the startup; it
        // changes nothing for a regular file, the only kind that is then read.
        options.custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK);
    }
    options
}

/// A session as the file has it, before any check of its times and size.
struct Record {
    id: SessionId,
    protocol: Protocol,
    expires: u64,
    last_modified: u64,
    etag: EntityTag,
    payload: Bytes,
}

/// Keeps the live sessions that this configuration could have created.
fn sort(records: Vec<Record>, limits: &Limits, now: SystemTime) -> Contents {
    // Rounded up, so that a session created just before the shutdown, on a clock that has
    // not gone back since, is always within it.
    let ttl = u64::try_from(limits.ttl.as_nanos().div_ceil(1_000_000)).unwrap_or(u64::MAX);
    let latest = unix_millis(now)
        .saturating_add(ttl)
        .min(LAST_HTTP_DATE_MILLIS);
    let mut contents = Contents::default();
    let mut seen = HashSet::new();
    for record in records {
        let times = if record.expires <= latest && record.last_modified <= record.expires {
            from_unix_millis(record.expires).zip(from_unix_millis(record.last_modified))
        } else {
            None
        };
        let Some((expires, last_modified)) = times else {
            contents.bad_times += 1;
            continue;
        };
        if now >= expires {
            contents.expired += 1;
        } else if record.protocol == Protocol::Msc4388 && !limits.msc4388 {
            contents.unserved += 1;
        } else if record.payload.len() > limits.max_payload(record.protocol) {
            contents.oversized += 1;
        } else if !seen.insert(record.id) {
            contents.duplicates += 1;
        } else {
            contents.sessions.push(Session {
                id: record.id,
                protocol: record.protocol,
                // Its own buffer, so that the file's is freed once restored.
                payload: Bytes::copy_from_slice(&record.payload),
                etag: record.etag,
                last_modified,
                expires,
            });
        }
    }
    contents
}

fn encode(sessions: &[Session]) -> Result<Vec<u8>, SnapshotError> {
    let too_big = || SnapshotError::Corrupt("a session is too large to snapshot");
    let mut out = BytesMut::new();
    let v2 = sessions
        .iter()
        .any(|session| session.protocol != Protocol::Msc4108);
    out.put_slice(if v2 { MAGIC_V2 } else { MAGIC });
    out.put_u32(u32::try_from(sessions.len()).map_err(|_| too_big())?);
    for session in sessions {
        out.put_slice(&session.id.to_bytes());
        if v2 {
            out.put_u8(match session.protocol {
                Protocol::Msc4108 => 0,
                Protocol::Msc4388 => 1,
            });
        }
        out.put_u64(unix_millis(session.expires));
        out.put_u64(unix_millis(session.last_modified));
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

fn decode(mut data: Vec<u8>) -> Result<Vec<Record>, SnapshotError> {
    let body_len = data
        .len()
        .checked_sub(DIGEST_LEN)
        .ok_or(SnapshotError::Corrupt("too short"))?;
    let digest = data.split_off(body_len);
    if Sha256::digest(&data).as_slice() != digest.as_slice() {
        return Err(SnapshotError::Corrupt("checksum mismatch"));
    }
    let mut reader = Bytes::from(data);
    let magic = take_bytes(&mut reader, MAGIC.len())?;
    let v2 = match magic.as_ref() {
        m if m == MAGIC => false,
        m if m == MAGIC_V2 => true,
        _ => return Err(SnapshotError::Corrupt("not a synapse-rendezvous snapshot")),
    };
    let count = take_u32(&mut reader)?;
    let mut records = Vec::new();
    for _ in 0..count {
        let id_bytes: [u8; 16] = take_bytes(&mut reader, 16)?
            .as_ref()
            .try_into()
            .map_err(|_| SnapshotError::Corrupt("bad id"))?;
        let protocol = if v2 {
            match take_bytes(&mut reader, 1)?[0] {
                0 => Protocol::Msc4108,
                1 => Protocol::Msc4388,
                _ => return Err(SnapshotError::Corrupt("unknown protocol")),
            }
        } else {
            Protocol::Msc4108
        };
        let expires = take_u64(&mut reader)?;
        let last_modified = take_u64(&mut reader)?;
        let tag_len = usize::from(take_bytes(&mut reader, 1)?[0]);
        let tag = take_bytes(&mut reader, tag_len)?;
        let etag = std::str::from_utf8(&tag)
            .ok()
            .and_then(EntityTag::from_opaque)
            .ok_or(SnapshotError::Corrupt("bad tag"))?;
        let payload_len = usize::try_from(take_u32(&mut reader)?)
            .map_err(|_| SnapshotError::Corrupt("bad length"))?;
        let payload = take_bytes(&mut reader, payload_len)?;
        records.push(Record {
            id: SessionId::from_ulid(Ulid::from_bytes(id_bytes)),
            protocol,
            expires,
            last_modified,
            etag,
            payload,
        });
    }
    if reader.has_remaining() {
        return Err(SnapshotError::Corrupt("trailing bytes"));
    }
    Ok(records)
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

#[cfg(test)]
#[cfg(unix)]
mod tests {
    //! What needs the private parts; the rest is in `tests/snapshot.rs`.

    use std::path::PathBuf;
    use std::sync::atomic::{AtomicU8, Ordering};
    use std::time::UNIX_EPOCH;

    use super::*;
    use crate::entropy::EntropyError;

    /// Fills with one byte, moved on by `step` after every draw.
    struct Counting {
        next: AtomicU8,
        step: u8,
    }

    impl Entropy for Counting {
        fn fill(&self, buf: &mut [u8]) -> Result<(), EntropyError> {
            buf.fill(self.next.fetch_add(self.step, Ordering::Relaxed));
            Ok(())
        }
    }

    fn counting(first: u8, step: u8) -> Counting {
        Counting {
            next: AtomicU8::new(first),
            step,
        }
    }

    fn start() -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(1_800_000_000_123)
    }

    fn limits() -> Limits {
        Limits {
            capacity: 10,
            max_payload_bytes: 64,
            ttl: Duration::from_secs(120),
            msc4388: false,
        }
    }

    fn session(payload: &'static [u8]) -> Session {
        Session::create(
            Bytes::from_static(payload),
            start(),
            Duration::from_secs(120),
            &SystemEntropy,
        )
        .unwrap()
    }

    /// A directory of its own, removed when dropped.
    struct Scratch(PathBuf);

    impl Scratch {
        fn new(name: &str) -> Self {
            let dir = std::env::temp_dir()
                .join(format!("srv-snapshot-unit-{}-{name}", std::process::id()));
            let _ = fs::remove_dir_all(&dir);
            fs::create_dir(&dir).unwrap();
            Self(dir)
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    /// The temporary name `save_with` draws from `byte` repeated.
    fn temporary_name(path: &Path, byte: u8) -> PathBuf {
        let name = path.file_name().unwrap().to_str().unwrap();
        path.with_file_name(format!(".{name}.{}.tmp", format!("{byte:02x}").repeat(16)))
    }

    #[test]
    fn a_taken_temporary_name_is_skipped_not_written_through() {
        let scratch = Scratch::new("skip");
        let path = scratch.0.join("sessions.snapshot");
        let victim = scratch.0.join("victim");
        fs::write(&victim, b"precious").unwrap();
        let planted = temporary_name(&path, 7);
        std::os::unix::fs::symlink(&victim, &planted).unwrap();
        let live = session(b"hello");
        save_with(&path, std::slice::from_ref(&live), &counting(7, 1)).unwrap();
        assert_eq!(fs::read(&victim).unwrap(), b"precious");
        assert_eq!(fs::read_link(&planted).unwrap(), victim);
        let contents = take(&path, &limits(), start()).unwrap().unwrap();
        assert_eq!(contents.sessions, vec![live]);
        // Only what was planted is left: the temporary file became the snapshot.
        let mut left: Vec<_> = fs::read_dir(&scratch.0)
            .unwrap()
            .map(|entry| entry.unwrap().path())
            .collect();
        left.sort();
        assert_eq!(left, vec![planted, victim]);
    }

    #[test]
    fn save_gives_up_when_every_name_is_taken() {
        let scratch = Scratch::new("give-up");
        let path = scratch.0.join("sessions.snapshot");
        let victim = scratch.0.join("victim");
        fs::write(&victim, b"precious").unwrap();
        let planted = temporary_name(&path, 9);
        std::os::unix::fs::symlink(&victim, &planted).unwrap();
        let error = save_with(&path, &[session(b"hello")], &counting(9, 0)).unwrap_err();
        assert!(
            matches!(&error, SnapshotError::Io(e) if e.kind() == io::ErrorKind::AlreadyExists),
            "{error}"
        );
        assert_eq!(fs::read(&victim).unwrap(), b"precious");
        assert_eq!(fs::read_link(&planted).unwrap(), victim);
        assert!(!path.exists());
    }

    #[test]
    fn a_failed_save_removes_its_temporary_file() {
        let scratch = Scratch::new("cleanup");
        // Renaming a file over a directory fails after the file is written.
        let path = scratch.0.join("sessions.snapshot");
        fs::create_dir(&path).unwrap();
        fs::write(path.join("inside"), b"kept").unwrap();
        assert!(save_with(&path, &[session(b"hello")], &counting(1, 1)).is_err());
        let left: Vec<_> = fs::read_dir(&scratch.0)
            .unwrap()
            .map(|entry| entry.unwrap().path())
            .collect();
        assert_eq!(left, vec![path.clone()]);
        assert_eq!(fs::read(path.join("inside")).unwrap(), b"kept");
    }

    #[test]
    fn damaged_files_are_refused_and_kept() {
        let scratch = Scratch::new("damaged");
        let path = scratch.0.join("sessions.snapshot");
        save(&path, &[session(b"hello")]).unwrap();
        let mut data = fs::read(&path).unwrap();
        data[20] ^= 1;
        fs::write(&path, &data).unwrap();
        assert!(matches!(
            take(&path, &limits(), start()),
            Err(SnapshotError::Corrupt(_))
        ));
        fs::write(&path, &data[..10]).unwrap();
        assert!(matches!(
            take(&path, &limits(), start()),
            Err(SnapshotError::Corrupt(_))
        ));
        assert!(path.exists());
    }

    #[test]
    fn the_size_bound_covers_the_largest_honest_session() {
        let limits = Limits {
            capacity: 1,
            max_payload_bytes: 64,
            ttl: Duration::from_secs(120),
            msc4388: false,
        };
        let mut largest = session(b"");
        largest.payload = Bytes::from(vec![b'x'; 64]);
        largest.etag = EntityTag::from_opaque(&"e".repeat(255)).unwrap();
        let encoded = encode(&[largest]).unwrap();
        assert_eq!(
            u64::try_from(encoded.len()).unwrap(),
            limits.max_file_bytes()
        );
    }
}
