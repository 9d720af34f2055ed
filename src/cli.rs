//! What both binaries share at their edge: logging setup and exit codes.

use std::io::IsTerminal;
use std::process::ExitCode;

/// sysexits.h: the configuration is wrong.
pub const EX_CONFIG: u8 = 78;

/// sysexits.h: a temporary failure (the local server could not be reached); try again later.
pub const EX_TEMPFAIL: u8 = 75;

/// The exit code for a configuration error.
pub fn config_error() -> ExitCode {
    ExitCode::from(EX_CONFIG)
}

/// The `--config` option both binaries take.
#[derive(Debug, clap::Args)]
pub struct ConfigArg {
    /// Configuration file.
    #[arg(
        short,
        long,
        global = true,
        env = "OUTPOST_CONFIG",
        default_value = "/etc/outpost/outpost.toml"
    )]
    pub config: std::path::PathBuf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, clap::Args)]
pub struct LogArgs {
    /// More detail: -v adds protocol traces (never a password or token), -vv everything.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Log line format on standard error.
    #[arg(long, global = true, value_enum, default_value = "text")]
    pub log_format: LogFormat,
}

impl LogArgs {
    /// Installs the global logger. `RUST_LOG` overrides the level given by `-v`; `quiet` leaves
    /// out the info lines (for a command whose own output tells the story).
    pub fn init(&self, quiet: bool) {
        let level = match self.verbose {
            0 if quiet => "warn",
            0 => "warn,outpost=info,spool=info",
            1 => "warn,outpost=debug,spool=debug",
            _ => "debug",
        };
        let filter = tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
        let builder = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .with_ansi(std::io::stderr().is_terminal());
        match self.log_format {
            LogFormat::Text => builder.init(),
            LogFormat::Json => builder.json().init(),
        }
    }
}
