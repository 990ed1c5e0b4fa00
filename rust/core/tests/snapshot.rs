//! The memory store's snapshot file against a hostile filesystem and forged contents: it is
//! written private and never through a planted link, read only as a regular file within a
//! size bound, and restores no session the configuration could not have created.
// Test code: failing loudly is the point, and times are computed from known constants.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::unchecked_time_subtraction
)]
#![cfg(all(test, unix))]

use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{BufMut, Bytes, BytesMut};
use sha2::{Digest, Sha256};
use synapse_rendezvous_core::store::snapshot::{self, Limits, SnapshotError};
use synapse_rendezvous_core::{
    unix_millis, Backend, Config, EntityTag, Notice, Session, SessionId, SystemEntropy,
};

/// The last millisecond an HTTP date can say: 9999-12-31T23:59:59.999Z.
const LAST_HTTP_DATE_MILLIS: u64 = 253_402_300_799_999;

fn start() -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(1_800_000_000_123)
}

fn limits() -> Limits {
    Limits {
        capacity: 10_000,
        max_payload_bytes: 4096,
        ttl: Duration::from_secs(120),
        msc4388: false,
    }
}

fn session(payload: &[u8], ttl: Duration) -> Session {
    Session::create(
        Bytes::copy_from_slice(payload),
        start(),
        ttl,
        &SystemEntropy,
    )
    .unwrap()
}

/// A directory of its own for one test, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "srv-snapshot-{}-{}-{name}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir(&dir).unwrap();
        Self(dir)
    }

    fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    /// Every name in the directory, sorted.
    fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(&self.0)
            .unwrap()
            .map(|entry| entry.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn mode(path: &Path) -> u32 {
    fs::symlink_metadata(path).unwrap().permissions().mode() & 0o7777
}

/// One session as a forger writes it: any times, any payload.
struct Forged {
    expires: u64,
    last_modified: u64,
    payload: Vec<u8>,
}

/// A snapshot in the documented format, with a valid checksum over whatever it holds.
fn forge(sessions: &[Forged]) -> Vec<u8> {
    let mut out = BytesMut::new();
    out.put_slice(b"SRVSNAP1");
    out.put_u32(u32::try_from(sessions.len()).unwrap());
    for forged in sessions {
        let id = SessionId::generate(start(), &SystemEntropy).unwrap();
        out.put_slice(&id.to_bytes());
        out.put_u64(forged.expires);
        out.put_u64(forged.last_modified);
        let tag = EntityTag::generate(id, &SystemEntropy).unwrap();
        out.put_u8(u8::try_from(tag.opaque().len()).unwrap());
        out.put_slice(tag.opaque().as_bytes());
        out.put_u32(u32::try_from(forged.payload.len()).unwrap());
        out.put_slice(&forged.payload);
    }
    let digest = Sha256::digest(&out);
    out.put_slice(&digest);
    out.to_vec()
}

/// A session that starts now and lives `ttl`, as this configuration would make it.
fn honest(payload: &[u8], ttl: Duration) -> Forged {
    let now = unix_millis(start());
    Forged {
        expires: now + u64::try_from(ttl.as_millis()).unwrap(),
        last_modified: now,
        payload: payload.to_vec(),
    }
}

fn memory_config(path: &Path, extra: &serde_json::Value) -> Config {
    let mut json = serde_json::json!({ "snapshot_path": path.to_str().unwrap() });
    for (key, value) in extra.as_object().unwrap() {
        json[key] = value.clone();
    }
    Config::from_json(&json).unwrap()
}

/// Opens the memory store of `config` at `now`: its live sessions and the notices.
fn open(config: &Config, now: SystemTime) -> (Vec<Session>, Vec<Notice>) {
    let (backend, notices) = Backend::open(config, None, now).unwrap();
    let Backend::Memory { store, .. } = backend else {
        panic!("not the memory store");
    };
    (store.live_sessions(now), notices)
}

fn warnings(notices: &[Notice]) -> Vec<&str> {
    notices
        .iter()
        .filter_map(|notice| match notice {
            Notice::Warning(message) => Some(message.as_str()),
            Notice::Info(_) => None,
        })
        .collect()
}

#[test]
fn honest_sessions_round_trip_through_a_private_file() {
    let scratch = Scratch::new("round-trip");
    let path = scratch.join("sessions.snapshot");
    let ttl = Duration::from_secs(120);
    let live = session(b"\xff\x00 not utf-8", ttl);
    let empty = session(b"", ttl);
    let largest = session(&[b'x'; 4096], ttl);
    let expired = session(b"old", Duration::from_secs(1));
    snapshot::save(
        &path,
        &[live.clone(), empty.clone(), largest.clone(), expired],
    )
    .unwrap();
    assert_eq!(mode(&path), 0o600);
    assert!(fs::symlink_metadata(&path).unwrap().is_file());
    // Nothing else is left next to it.
    assert_eq!(scratch.names(), vec!["sessions.snapshot"]);

    let later = start() + Duration::from_secs(2);
    let contents = snapshot::take(&path, &limits(), later).unwrap().unwrap();
    assert_eq!(contents.sessions, vec![live, empty, largest]);
    assert_eq!(contents.expired, 1);
    assert_eq!(contents.dropped(), 0);
    assert!(!path.exists(), "a snapshot is loaded only once");
    assert!(snapshot::take(&path, &limits(), later).unwrap().is_none());
}

#[test]
fn a_save_replaces_an_older_snapshot_with_a_private_one() {
    let scratch = Scratch::new("replace");
    let path = scratch.join("sessions.snapshot");
    // As the previous version wrote it: world-readable.
    fs::write(&path, b"old").unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
    let live = session(b"new", Duration::from_secs(120));
    snapshot::save(&path, std::slice::from_ref(&live)).unwrap();
    assert_eq!(mode(&path), 0o600);
    let contents = snapshot::take(&path, &limits(), start()).unwrap().unwrap();
    assert_eq!(contents.sessions, vec![live]);
}

#[test]
fn a_symlink_at_the_old_temporary_name_is_not_written_through() {
    let scratch = Scratch::new("old-tmp");
    let path = scratch.join("sessions.snapshot");
    let victim = scratch.join("victim");
    fs::write(&victim, b"precious").unwrap();
    fs::set_permissions(&victim, fs::Permissions::from_mode(0o644)).unwrap();
    let planted = scratch.join("sessions.snapshot.tmp");
    symlink(&victim, &planted).unwrap();

    let live = session(b"hello", Duration::from_secs(120));
    snapshot::save(&path, std::slice::from_ref(&live)).unwrap();

    assert_eq!(fs::read(&victim).unwrap(), b"precious");
    assert_eq!(mode(&victim), 0o644);
    assert_eq!(fs::read_link(&planted).unwrap(), victim);
    assert!(fs::symlink_metadata(&path).unwrap().is_file());
    assert_eq!(
        scratch.names(),
        vec!["sessions.snapshot", "sessions.snapshot.tmp", "victim"]
    );
    let contents = snapshot::take(&path, &limits(), start()).unwrap().unwrap();
    assert_eq!(contents.sessions, vec![live]);
}

#[test]
fn symlinks_planted_at_other_names_are_left_alone() {
    let scratch = Scratch::new("other-names");
    let path = scratch.join("sessions.snapshot");
    let victim = scratch.join("victim");
    fs::write(&victim, b"precious").unwrap();
    let planted = [
        ".sessions.snapshot.tmp".to_owned(),
        ".sessions.snapshot.tmp.tmp".to_owned(),
        format!(".sessions.snapshot.{}.tmp", "0".repeat(32)),
        format!(".sessions.snapshot.{}.tmp", "f".repeat(32)),
        "sessions.snapshot~".to_owned(),
        "sessions.snapshot.new".to_owned(),
        // Dangling: creating through it would make the file it names.
        "dangling-target-is-absent".to_owned(),
    ];
    for name in &planted[..planted.len() - 1] {
        symlink(&victim, scratch.join(name)).unwrap();
    }
    let absent = scratch.join("absent");
    symlink(&absent, scratch.join(&planted[planted.len() - 1])).unwrap();

    for round in 0..20 {
        let live = session(
            format!("round {round}").as_bytes(),
            Duration::from_secs(120),
        );
        snapshot::save(&path, std::slice::from_ref(&live)).unwrap();
    }

    assert_eq!(fs::read(&victim).unwrap(), b"precious");
    assert!(!absent.exists());
    let mut expected: Vec<String> = planted.to_vec();
    expected.extend(["sessions.snapshot".to_owned(), "victim".to_owned()]);
    expected.sort();
    assert_eq!(scratch.names(), expected);
    for name in &planted {
        assert!(fs::symlink_metadata(scratch.join(name))
            .unwrap()
            .file_type()
            .is_symlink());
    }
}

#[test]
fn a_symlink_at_the_path_is_replaced_not_written_through() {
    let scratch = Scratch::new("path-link-save");
    let path = scratch.join("sessions.snapshot");
    let victim = scratch.join("victim");
    fs::write(&victim, b"precious").unwrap();
    symlink(&victim, &path).unwrap();
    snapshot::save(&path, &[session(b"hello", Duration::from_secs(120))]).unwrap();
    assert_eq!(fs::read(&victim).unwrap(), b"precious");
    assert!(fs::symlink_metadata(&path).unwrap().is_file());
    assert_eq!(mode(&path), 0o600);
}

#[test]
fn a_snapshot_path_that_is_a_symlink_is_not_read() {
    let scratch = Scratch::new("path-link-read");
    let real = scratch.join("real.snapshot");
    let live = session(b"hello", Duration::from_secs(120));
    snapshot::save(&real, std::slice::from_ref(&live)).unwrap();
    let path = scratch.join("sessions.snapshot");
    symlink(&real, &path).unwrap();

    let refused = snapshot::take(&path, &limits(), start()).unwrap_err();
    assert!(
        matches!(refused, SnapshotError::NotAFile("a symbolic link")),
        "{refused}"
    );
    assert!(refused.to_string().contains("symbolic link"), "{refused}");
    // Both are left for inspection.
    assert!(fs::symlink_metadata(&path)
        .unwrap()
        .file_type()
        .is_symlink());
    assert!(real.exists());

    // A dangling link is refused too, rather than read as "no snapshot".
    let dangling = scratch.join("dangling.snapshot");
    symlink(scratch.join("absent"), &dangling).unwrap();
    assert!(matches!(
        snapshot::take(&dangling, &limits(), start()),
        Err(SnapshotError::NotAFile("a symbolic link"))
    ));

    // The file itself is still a good snapshot.
    let contents = snapshot::take(&real, &limits(), start()).unwrap().unwrap();
    assert_eq!(contents.sessions, vec![live]);
}

#[test]
fn a_snapshot_path_that_is_not_a_regular_file_is_not_read() {
    let scratch = Scratch::new("not-a-file");
    let path = scratch.join("sessions.snapshot");
    fs::create_dir(&path).unwrap();
    assert!(matches!(
        snapshot::take(&path, &limits(), start()),
        Err(SnapshotError::NotAFile("a directory"))
    ));
    assert!(path.is_dir());
    // A character device: endless, and never read.
    assert!(matches!(
        snapshot::take(Path::new("/dev/zero"), &limits(), start()),
        Err(SnapshotError::NotAFile(_))
    ));
}

#[test]
fn a_file_larger_than_the_configuration_allows_is_not_read() {
    let scratch = Scratch::new("oversized");
    let path = scratch.join("sessions.snapshot");
    let small = Limits {
        capacity: 2,
        max_payload_bytes: 16,
        ttl: Duration::from_secs(120),
        msc4388: false,
    };
    let limit = small.max_file_bytes();
    // The header and digest, and per session its fields, a tag of up to 255 bytes and the
    // payload.
    assert_eq!(limit, 8 + 4 + 32 + 2 * (16 + 8 + 8 + 1 + 255 + 4 + 16));

    fs::write(&path, vec![0u8; usize::try_from(limit).unwrap() + 1]).unwrap();
    let refused = snapshot::take(&path, &small, start()).unwrap_err();
    assert!(
        matches!(refused, SnapshotError::TooLarge { limit: l } if l == limit),
        "{refused}"
    );
    assert!(path.exists(), "left in place for inspection");

    // At the bound it is read, and found not to be a snapshot.
    fs::write(&path, vec![0u8; usize::try_from(limit).unwrap()]).unwrap();
    assert!(matches!(
        snapshot::take(&path, &small, start()),
        Err(SnapshotError::Corrupt(_))
    ));

    // A full store of the largest sessions fits.
    let full = [
        session(&[b'a'; 16], Duration::from_secs(120)),
        session(&[b'b'; 16], Duration::from_secs(120)),
    ];
    snapshot::save(&path, &full).unwrap();
    let contents = snapshot::take(&path, &small, start()).unwrap().unwrap();
    assert_eq!(contents.sessions, full);
}

#[test]
fn an_oversized_file_is_a_warning_and_the_store_starts_empty() {
    let scratch = Scratch::new("oversized-open");
    let path = scratch.join("sessions.snapshot");
    let config = memory_config(
        &path,
        &serde_json::json!({"capacity": 1, "max_payload_bytes": 16}),
    );
    // A valid snapshot, only too large for this configuration.
    let data = forge(&[honest(&[b'x'; 4096], Duration::from_secs(60))]);
    fs::write(&path, &data).unwrap();

    let (sessions, notices) = open(&config, start());
    assert!(sessions.is_empty());
    let warned = warnings(&notices);
    assert_eq!(warned.len(), 1, "{notices:?}");
    assert!(warned[0].contains(path.to_str().unwrap()), "{notices:?}");
    assert!(warned[0].contains("larger than"), "{notices:?}");
    assert_eq!(fs::read(&path).unwrap(), data, "left in place");
}

#[test]
fn a_forged_snapshot_restores_only_what_the_configuration_allows() {
    let scratch = Scratch::new("forged");
    let path = scratch.join("sessions.snapshot");
    let config = memory_config(&path, &serde_json::json!({}));
    let now = unix_millis(start());
    let forged = forge(&[
        // 8 MiB, where 4096 bytes is the limit.
        honest(&vec![b'x'; 8 << 20], Duration::from_secs(60)),
        // Expiring in the year 8307: it would hold capacity forever.
        Forged {
            expires: 200_000_000_000_000,
            last_modified: now,
            payload: b"forever".to_vec(),
        },
        // Beyond what an HTTP date can say.
        Forged {
            expires: u64::MAX,
            last_modified: now,
            payload: b"year 584 million".to_vec(),
        },
        honest(b"good", Duration::from_secs(60)),
    ]);
    fs::write(&path, forged).unwrap();

    let (sessions, notices) = open(&config, start());

    assert_eq!(sessions.len(), 1, "{sessions:?}");
    assert_eq!(sessions[0].payload.as_ref(), b"good");
    assert_eq!(sessions[0].expires, start() + Duration::from_secs(60));
    let warned = warnings(&notices);
    assert_eq!(
        warned.len(),
        1,
        "one warning for the whole file: {notices:?}"
    );
    assert!(warned[0].contains("dropped 3 sessions"), "{notices:?}");
    assert!(warned[0].contains(path.to_str().unwrap()), "{notices:?}");
    assert!(
        notices.contains(&Notice::Info(format!(
            "restored 1 of 1 live sessions from {}",
            path.display()
        ))),
        "{notices:?}"
    );
    assert!(!path.exists(), "a snapshot is loaded only once");
}

#[test]
fn no_restored_time_is_beyond_ttl_from_now_or_the_last_http_date() {
    let scratch = Scratch::new("times");
    let path = scratch.join("sessions.snapshot");
    let ttl = Duration::from_secs(86_400);
    let at = |millis: u64| UNIX_EPOCH + Duration::from_millis(millis);
    // A clock an hour before the end of the year 9999, so that now + ttl is past it.
    let now_millis = LAST_HTTP_DATE_MILLIS - 3_600_000;
    let record = |expires: u64, last_modified: u64, payload: &[u8]| Forged {
        expires,
        last_modified,
        payload: payload.to_vec(),
    };
    fs::write(
        &path,
        forge(&[
            record(LAST_HTTP_DATE_MILLIS, now_millis, b"last"),
            record(LAST_HTTP_DATE_MILLIS + 1, now_millis, b"past 9999"),
            record(
                now_millis + 60_000,
                now_millis + 60_001,
                b"modified after expiry",
            ),
            record(now_millis + 60_000, now_millis, b"fine"),
            record(now_millis, now_millis - 1, b"expired"),
        ]),
    )
    .unwrap();
    let limits = Limits { ttl, ..limits() };
    let contents = snapshot::take(&path, &limits, at(now_millis))
        .unwrap()
        .unwrap();
    let kept: Vec<&[u8]> = contents
        .sessions
        .iter()
        .map(|s| s.payload.as_ref())
        .collect();
    assert_eq!(kept, vec![&b"last"[..], b"fine"]);
    assert_eq!(
        (contents.bad_times, contents.expired, contents.dropped()),
        (2, 1, 2)
    );
    for session in &contents.sessions {
        assert!(session.expires <= at(LAST_HTTP_DATE_MILLIS));
        assert!(session.last_modified <= session.expires);
    }

    // With an ordinary clock, one millisecond past now + ttl is too late.
    let now = unix_millis(start());
    let ttl_ms = u64::try_from(limits.ttl.as_millis()).unwrap();
    fs::write(
        &path,
        forge(&[
            record(now + ttl_ms, now, b"at the bound"),
            record(now + ttl_ms + 1, now, b"past it"),
        ]),
    )
    .unwrap();
    let contents = snapshot::take(&path, &limits, start()).unwrap().unwrap();
    assert_eq!(contents.sessions.len(), 1);
    assert_eq!(contents.sessions[0].payload.as_ref(), b"at the bound");
    assert_eq!(contents.bad_times, 1);
}

#[test]
fn sessions_with_the_same_id_are_restored_once() {
    let scratch = Scratch::new("duplicates");
    let path = scratch.join("sessions.snapshot");
    let first = session(b"first", Duration::from_secs(120));
    let mut second = first.clone();
    second.payload = Bytes::from_static(b"second");
    snapshot::save(&path, &[first.clone(), second]).unwrap();
    let contents = snapshot::take(&path, &limits(), start()).unwrap().unwrap();
    assert_eq!(contents.sessions, vec![first]);
    assert_eq!(contents.duplicates, 1);
}

#[test]
fn an_honest_snapshot_restores_with_no_warning() {
    let scratch = Scratch::new("honest-open");
    let path = scratch.join("sessions.snapshot");
    let config = memory_config(&path, &serde_json::json!({"ttl": "60s"}));
    let sessions = [
        session(b"one", Duration::from_secs(60)),
        session(b"two", Duration::from_secs(60)),
    ];
    snapshot::save(&path, &sessions).unwrap();
    let (restored, notices) = open(&config, start() + Duration::from_secs(1));
    assert_eq!(restored.len(), 2);
    assert!(warnings(&notices).is_empty(), "{notices:?}");
    assert_eq!(
        notices,
        vec![Notice::Info(format!(
            "restored 2 of 2 live sessions from {}",
            path.display()
        ))]
    );
}
