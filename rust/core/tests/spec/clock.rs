//! Time: what the injected clock decides.

#[allow(clippy::wildcard_imports)]
use super::*;
use crate::lifecycle::assert_gone;

// ---------------------------------------------------------------------------------------
// Clock
// ---------------------------------------------------------------------------------------

#[test]
fn clock_stepped_backwards_breaks_nothing() {
    let h = Harness::with_capacity(2);
    let session = h.create("hello");
    h.clock.set(at(0) - Duration::from_secs(3600));

    let read = h.get(&session.path, None);
    read.assert_status(StatusCode::OK).assert_common_headers();
    assert_eq!(read.expires(), at(120));
    h.get(&session.path, Some(&session.etag))
        .assert_status(StatusCode::NOT_MODIFIED);
    let written = h.put(&session.path, "world", Some(&session.etag));
    written.assert_status(StatusCode::ACCEPTED);
    assert_eq!(written.expires(), at(120));
    let other = h.create("other");
    h.post("third").assert_error(429, "M_LIMIT_EXCEEDED");
    assert_eq!(h.reclaim_expired(), 0);
    assert_eq!(h.live_count(), 2);
    h.delete(&other.path).assert_status(StatusCode::NO_CONTENT);

    h.clock.set(at(120));
    assert_gone(&h, &session.path);
    assert_eq!(h.live_count(), 0);
    h.create("again");
}
