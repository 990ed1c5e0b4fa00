//! The Lua scripts of the store, one per multi-step operation so that each runs atomically
//! in Redis. Each is `common.lua` (time comparison and index trimming) followed by its own
//! file; `redis` sends them by SHA1 and loads them again after a Redis restart.

use ::redis::Script;

macro_rules! script {
    ($file:literal) => {
        Script::new(concat!(include_str!("common.lua"), include_str!($file)))
    };
}

/// Every script, hashed once per store.
pub(super) struct Scripts {
    /// Capacity check and insert.
    pub(super) create: Script,
    /// Compare-and-set of the content.
    pub(super) replace: Script,
    /// Removal of the key and its index entry.
    pub(super) delete: Script,
    /// Trim, then count.
    pub(super) live_count: Script,
    /// Trim, returning how many entries went.
    pub(super) reclaim: Script,
}

impl Scripts {
    pub(super) fn new() -> Self {
        Self {
            create: script!("create.lua"),
            replace: script!("replace.lua"),
            delete: script!("delete.lua"),
            live_count: script!("live_count.lua"),
            reclaim: script!("reclaim.lua"),
        }
    }
}
