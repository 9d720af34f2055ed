//! `spoolctl`: see and steer outpost's queue, in the manner of Postfix's postqueue/postsuper.
//!
//! When `outpost run` owns the spool, the command goes to it over the control socket; otherwise
//! `spoolctl` takes the spool's lock and works on it directly. Both run the same code
//! ([`outpost::control::execute`]), so the output is the same.

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};
use outpost::cli;
use outpost::config::Config;
use outpost::control::{self, Call, Request};
use spool::{Spool, SpoolError};

#[derive(Parser)]
#[command(version, about = "See and steer outpost's mail queue")]
struct Args {
    #[command(flatten)]
    config: cli::ConfigArg,
    /// Machine-readable output (for list, show, status, windows).
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// List the queued messages (oldest first) and the badmail files.
    List {
        /// Only this state: queued, deferred, held, delivering or badmail.
        #[arg(long)]
        state: Option<String>,
    },
    /// Show one message's envelope and state, and with --body the message itself.
    Show {
        id: String,
        #[arg(long)]
        body: bool,
    },
    /// Make deferred or held messages due now; put badmail files back into pickup/ to replay them.
    Requeue {
        ids: Vec<String>,
        /// Every message (of --state, if given).
        #[arg(long)]
        all: bool,
        #[arg(long)]
        state: Option<String>,
    },
    /// Stop a message from being delivered.
    Hold { id: String },
    /// Let a held message go.
    Release { id: String },
    /// Take a message out of the queue (it is kept in badmail); remove a badmail file for good.
    Delete {
        id: String,
        /// Do not ask.
        #[arg(long)]
        yes: bool,
    },
    /// Run a connect window now (the SBS "Retrieve now") and print its summary.
    Fetch {
        #[arg(long)]
        account: Option<String>,
    },
    /// Accounts (last success, last error, oversized messages waiting, next window) and the queue.
    Status,
    /// The window history: bytes, seconds, cost.
    Windows {
        #[arg(long, default_value_t = 10)]
        last: usize,
    },
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(args) {
        Ok(code) => ExitCode::from(code.clamp(0, 255) as u8),
        Err(e) => {
            eprintln!("spoolctl: {e:#}");
            ExitCode::FAILURE
        }
    }
}

impl Command {
    fn request(self) -> (Request, bool) {
        let mut ask = false;
        let request = match self {
            Command::List { state } => Request::List { state },
            Command::Show { id, body } => Request::Show { id, body },
            Command::Requeue { ids, all, state } => Request::Requeue { ids, all, state },
            Command::Hold { id } => Request::Hold { id },
            Command::Release { id } => Request::Release { id },
            Command::Delete { id, yes } => {
                ask = !yes;
                Request::Delete { id }
            }
            Command::Fetch { account } => Request::Fetch { account },
            Command::Status => Request::Status,
            Command::Windows { last } => Request::Windows { last },
        };
        (request, ask)
    }
}

/// Where the commands go: the spool itself, or the daemon that owns it.
enum Target {
    Direct(Box<Config>, Spool),
    Daemon(std::path::PathBuf),
}

impl Target {
    /// Runs one call, printing its output; returns the exit code.
    fn call(&self, call: &Call) -> anyhow::Result<i32> {
        let stdout = std::io::stdout();
        let mut out = stdout.lock();
        let (code, error) = match self {
            Target::Direct(config, spool) => {
                let fetch = |account: Option<String>| direct_fetch(config, spool, account);
                match control::execute(call, config, spool, &mut out, &fetch) {
                    Ok(code) => (code, String::new()),
                    Err(e) => (1, e),
                }
            }
            Target::Daemon(dir) => control::call_daemon(dir, call, &mut out).with_context(|| {
                format!(
                    "the spool {} is in use by another process, and no daemon answers on its control socket \
                     (another outpost fetch or deliver may be running; try again when it is done)",
                    dir.display()
                )
            })?,
        };
        if !error.is_empty() {
            eprintln!("spoolctl: {error}");
        }
        Ok(code)
    }
}

/// `spoolctl fetch` without a daemon: the window runs here.
fn direct_fetch(
    config: &Config,
    spool: &Spool,
    account: Option<String>,
) -> Result<(String, bool), String> {
    let accounts: Vec<_> = config
        .accounts
        .iter()
        .filter(|a| account.as_deref().is_none_or(|n| a.name == n))
        .cloned()
        .collect();
    let runtime = tokio::runtime::Runtime::new().map_err(|e| e.to_string())?;
    let limits = Arc::new(outpost::fetch::Limits::new(
        config.window.max_duration,
        config.window.max_bytes,
    ));
    let (report, _) = runtime.block_on(outpost::window::run(config, spool, &accounts, limits));
    Ok((outpost::progress::summary(&report), report.failed()))
}

fn run(args: Args) -> anyhow::Result<i32> {
    let config = Config::load(&args.config.config)?;
    let target = match Spool::open(&config.spool_dir) {
        Ok(spool) => Target::Direct(Box::new(config), spool),
        Err(SpoolError::Locked(dir)) => Target::Daemon(dir),
        Err(e) => {
            return Err(e).context(format!(
                "opening the spool in {}",
                config.spool_dir.display()
            ))
        }
    };
    let (request, ask) = args.command.request();
    if let (true, Request::Delete { id }) = (ask, &request) {
        // Show what would go, and ask.
        let show = Call {
            request: Request::Show {
                id: id.clone(),
                body: false,
            },
            json: false,
        };
        let code = target.call(&show)?;
        if code != 0 {
            return Ok(code);
        }
        eprint!("delete this message? [y/N] ");
        let mut answer = String::new();
        std::io::stdin().read_line(&mut answer)?;
        if !matches!(answer.trim(), "y" | "Y" | "yes") {
            println!("not deleted");
            return Ok(1);
        }
    }
    target.call(&Call {
        request,
        json: args.json,
    })
}
