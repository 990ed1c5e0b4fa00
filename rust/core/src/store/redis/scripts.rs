//! The Lua scripts of the store, one per request kind so that each request is one atomic
//! call. Each is `common.lua` (clock, token bucket, tag matching, trimming) followed by its
//! own file.

use std::sync::LazyLock;

use ::redis::{cmd, Cmd, Script};

/// One script: its source and the SHA1 that `EVALSHA` names it by.
#[derive(Debug)]
pub struct LuaScript {
    /// What the script does, for logs.
    pub name: &'static str,
    source: &'static str,
    hash: String,
}

impl LuaScript {
    fn new(name: &'static str, source: &'static str) -> Self {
        Self {
            name,
            source,
            hash: Script::new(source).get_hash().to_owned(),
        }
    }

    /// `SCRIPT LOAD` of this script, so that later calls can name it by hash.
    pub fn load(&self) -> Cmd {
        let mut load = cmd("SCRIPT");
        load.arg("LOAD").arg(self.source);
        load
    }

    /// The `EVALSHA` of this script with `keys` and `args`.
    pub(super) fn call(&'static self, keys: &[&[u8]], args: &[&[u8]]) -> Call {
        let mut command = cmd("EVALSHA");
        command.arg(&self.hash).arg(keys.len()).arg(keys).arg(args);
        Call {
            script: self,
            command,
        }
    }
}

macro_rules! script {
    ($name:literal, $file:literal) => {
        LuaScript::new(
            $name,
            concat!(include_str!("common.lua"), include_str!($file)),
        )
    };
}

/// Every script.
pub(super) struct Scripts {
    pub(super) create: LuaScript,
    pub(super) read: LuaScript,
    pub(super) replace: LuaScript,
    pub(super) delete: LuaScript,
    pub(super) maintain: LuaScript,
    /// MSC4388's compare-and-swap; its creates, reads and deletes use the scripts above.
    pub(super) msc4388_write: LuaScript,
}

pub(super) static SCRIPTS: LazyLock<Scripts> = LazyLock::new(|| Scripts {
    create: script!("create", "create.lua"),
    read: script!("read", "read.lua"),
    replace: script!("replace", "replace.lua"),
    delete: script!("delete", "delete.lua"),
    maintain: script!("maintain", "maintain.lua"),
    msc4388_write: script!("msc4388_write", "msc4388_write.lua"),
});

impl Scripts {
    pub(super) fn all(&self) -> [&LuaScript; 6] {
        [
            &self.create,
            &self.read,
            &self.replace,
            &self.delete,
            &self.maintain,
            &self.msc4388_write,
        ]
    }
}

/// One script call: what a request sends to Redis.
#[derive(Debug, Clone)]
pub struct Call {
    script: &'static LuaScript,
    command: Cmd,
}

impl Call {
    /// The call as a command, naming the script by hash (`EVALSHA`).
    pub fn command(&self) -> &Cmd {
        &self.command
    }

    /// The same call sending the whole script (`EVAL`), for a server that answered
    /// `NOSCRIPT` (its script cache was flushed).
    pub fn with_source(&self) -> Cmd {
        let mut eval = cmd("EVAL");
        eval.arg(self.script.source);
        for arg in self.command.args_iter().skip(2) {
            if let ::redis::Arg::Simple(bytes) = arg {
                eval.arg(bytes);
            }
        }
        eval
    }

    /// The script called, for logs.
    pub fn script(&self) -> &'static str {
        self.script.name
    }
}
