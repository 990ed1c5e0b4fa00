//! `synapse-rendezvous-server --config FILE`: the standalone MSC4108 rendezvous server.
//!
//! Exit status: 0 after a clean stop (`SIGTERM`, `SIGINT`), 2 for a bad command line or
//! configuration (the message names the key), 1 when it cannot start otherwise (a port in
//! use, Redis TLS set-up).

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use synapse_rendezvous_server::config::Settings;
use synapse_rendezvous_server::{init_logging, run, trivial, Failure};

const USAGE: &str = "\
usage: synapse-rendezvous-server --config FILE [--check-config]

Serves the MSC4108 rendezvous API (sign in with QR code) for Synapse's
experimental_features.msc4108_delegation_endpoint. FILE is YAML: the module's keys (ttl,
capacity, store, redis, rate_limit, ...) plus listen, public_base_url, metrics_listen and the
server's own settings; see docs/standalone.md.

  --config FILE    the configuration file (required)
  --check-config   check the configuration and exit: 0 if it is good, 2 if not
  --version        print the version and exit
  --help           print this and exit
";

enum Command {
    Serve { config: PathBuf, check_only: bool },
    Trivial(std::net::SocketAddr),
    Print(String),
}

fn parse(args: impl Iterator<Item = String>) -> Result<Command, String> {
    let mut config = None;
    let mut check_only = false;
    let mut args = args.peekable();
    while let Some(arg) = args.next() {
        let (name, inline) = match arg.split_once('=') {
            Some((name, value)) if name.starts_with("--") => (name.to_owned(), Some(value)),
            _ => (arg.clone(), None),
        };
        let mut value = |name: &str| {
            inline
                .map(str::to_owned)
                .or_else(|| args.next())
                .ok_or_else(|| format!("{name} needs a value"))
        };
        match name.as_str() {
            "--config" | "-c" => config = Some(PathBuf::from(value("--config")?)),
            "--check-config" => check_only = true,
            "--version" | "-V" => {
                return Ok(Command::Print(format!(
                    "synapse-rendezvous-server {}\n",
                    env!("CARGO_PKG_VERSION")
                )))
            }
            "--help" | "-h" => return Ok(Command::Print(USAGE.to_owned())),
            // Not in the usage: the benchmark's ceiling for its load generator.
            "--bench-trivial" => {
                let address = value("--bench-trivial")?;
                return address
                    .parse()
                    .map(Command::Trivial)
                    .map_err(|_| format!("--bench-trivial: not an address: {address:?}"));
            }
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    let config = config.ok_or_else(|| "--config FILE is required".to_owned())?;
    Ok(Command::Serve { config, check_only })
}

/// Writes to stderr, ignoring failure: there is nowhere else to say it.
fn complain(message: &str) {
    let _ = writeln!(std::io::stderr(), "synapse-rendezvous-server: {message}");
}

fn main() -> ExitCode {
    let command = match parse(std::env::args().skip(1)) {
        Ok(command) => command,
        Err(why) => {
            complain(&why);
            let _ = std::io::stderr().write_all(USAGE.as_bytes());
            return ExitCode::from(2);
        }
    };
    let (path, check_only) = match command {
        Command::Print(text) => {
            let _ = std::io::stdout().write_all(text.as_bytes());
            return ExitCode::SUCCESS;
        }
        Command::Trivial(address) => {
            return match trivial::run(address) {
                Ok(()) => ExitCode::SUCCESS,
                Err(why) => {
                    complain(&why);
                    ExitCode::FAILURE
                }
            };
        }
        Command::Serve { config, check_only } => (config, check_only),
    };
    let settings = match Settings::load(&path) {
        Ok(settings) => settings,
        Err(error) => {
            complain(&format!("{}: {error}", path.display()));
            return ExitCode::from(2);
        }
    };
    if check_only {
        let _ = writeln!(
            std::io::stdout(),
            "{}: configuration is valid: {}",
            path.display(),
            settings.core
        );
        return ExitCode::SUCCESS;
    }
    init_logging(settings.log_format, settings.log_level);
    match run(&settings) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Config(why)) => {
            complain(&format!("{}: {why}", path.display()));
            ExitCode::from(2)
        }
        Err(Failure::Start(why)) => {
            tracing::error!("{why}");
            complain(&why);
            ExitCode::FAILURE
        }
    }
}
