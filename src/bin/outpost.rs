//! `outpost`: the service (`run`), one-shot jobs (`fetch`, `deliver`), the demo and the tools for
//! administrators (`check-config`, `route`). Argument parsing and error reporting only; the work
//! is in the library.

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};
use outpost::cli;
use outpost::config::{Config, LoadError};
use outpost::fetch::{self, AccountProgress};
use outpost::progress::{self, LiveDisplay};

#[derive(Parser)]
#[command(
    version,
    about = "Brings POP3 mail into your own mail server over a slow or metered link"
)]
struct Args {
    #[command(flatten)]
    config: cli::ConfigArg,
    #[command(flatten)]
    log: cli::LogArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Fetch every account (or one) now, in the foreground, and print a summary.
    Fetch {
        /// Only this account.
        #[arg(long)]
        account: Option<String>,
    },
    /// See outpost work, with nothing installed: built-in POP3 and SMTP servers, a simulated
    /// satellite link, one window, delivery.
    Demo {
        /// Where to keep the demo's files (default: a new folder under the system's temp dir).
        #[arg(long)]
        dir: Option<std::path::PathBuf>,
    },
    /// Run as a service: deliver continuously, watch pickup/, and fetch in the scheduled windows.
    /// SIGTERM or SIGINT stops at safe points; SIGHUP reloads the configuration.
    Run,
    /// Take in the pickup folder, deliver every message that is due to the local mail server,
    /// once, and print a summary.
    Deliver,
    /// Show how a catch-all account would route a message (a dry run, for writing routes).
    Route {
        /// The message, as an .eml file.
        file: std::path::PathBuf,
        /// The catch-all account (needed when there are several).
        #[arg(long)]
        account: Option<String>,
    },
    /// Check the configuration and print every error found.
    CheckConfig,
}

fn main() -> ExitCode {
    let args = Args::parse();
    args.log.init(matches!(args.command, Command::Demo { .. }));
    if let Command::Demo { dir } = &args.command {
        return demo(dir.clone()).unwrap_or_else(|e| {
            eprintln!("outpost demo: {e:#}");
            ExitCode::FAILURE
        });
    }
    let config = match Config::load(&args.config.config) {
        Ok(config) => config,
        Err(e @ LoadError::Invalid { .. }) => {
            eprintln!("{e}");
            return cli::config_error();
        }
        Err(e @ LoadError::Read(..)) => {
            eprintln!("outpost: {e}");
            return cli::config_error();
        }
    };
    let result = match args.command {
        Command::CheckConfig => {
            println!(
                "{}: ok, {} account(s)",
                args.config.config.display(),
                config.accounts.len()
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Fetch { account } => fetch(config, account),
        Command::Deliver => deliver(config),
        Command::Route { file, account } => route(&config, &file, account.as_deref()),
        Command::Run => run(config, args.config.config.clone()),
        Command::Demo { .. } => unreachable!("handled before the configuration is read"),
    };
    result.unwrap_or_else(|e| {
        eprintln!("outpost: {e:#}");
        ExitCode::FAILURE
    })
}

fn fetch(config: Config, only: Option<String>) -> anyhow::Result<ExitCode> {
    let accounts: Vec<_> = config
        .accounts
        .iter()
        .filter(|a| only.as_deref().is_none_or(|name| a.name == name))
        .map(|a| (a.clone(), AccountProgress::new(&a.name)))
        .collect();
    if accounts.is_empty() {
        anyhow::bail!(
            "no account named {:?} in the configuration",
            only.unwrap_or_default()
        );
    }
    let spool = match spool::Spool::open(&config.spool_dir) {
        Ok(spool) => spool,
        Err(spool::SpoolError::Locked(dir)) => {
            // The daemon owns the spool: ask it for the window, as `spoolctl fetch` does.
            let call = outpost::control::Call {
                request: outpost::control::Request::Fetch { account: only },
                json: false,
            };
            let (code, error) = outpost::control::call_daemon(&dir, &call, &mut std::io::stdout())
                .with_context(|| {
                    format!(
                        "the spool {} is in use, and no daemon answers on its control socket",
                        dir.display()
                    )
                })?;
            if !error.is_empty() {
                eprintln!("outpost: {error}");
            }
            return Ok(ExitCode::from(code.clamp(0, 255) as u8));
        }
        Err(e) => {
            return Err(e).context(format!(
                "opening the spool in {}",
                config.spool_dir.display()
            ))
        }
    };
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    let report = runtime.block_on(async {
        let display = LiveDisplay::start(accounts.iter().map(|(_, p)| Arc::clone(p)).collect());
        let report = fetch::run_window(&config, &spool, &accounts).await;
        display.finish().await;
        report
    });
    print!("{}", progress::summary(&report));
    Ok(if report.failed() {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

fn deliver(config: Config) -> anyhow::Result<ExitCode> {
    let spool = open_spool(&config)?;
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    let pickup = outpost::pickup::ingest_pickup(&spool, config.default_domain.as_deref())?;
    if pickup != Default::default() {
        println!(
            "pickup: {} file(s) ingested, {} already in the spool, {} to badmail",
            pickup.ingested, pickup.already_ingested, pickup.badmail
        );
    }
    let report = runtime.block_on(outpost::deliver::deliver_due(&config, &spool))?;
    print!("{}", progress::delivery_summary(&report));
    Ok(if report.outage.is_some() {
        ExitCode::from(cli::EX_TEMPFAIL)
    } else {
        ExitCode::SUCCESS
    })
}

fn open_spool(config: &Config) -> anyhow::Result<spool::Spool> {
    spool::Spool::open(&config.spool_dir)
        .with_context(|| format!("opening the spool in {}", config.spool_dir.display()))
}

fn run(config: Config, path: std::path::PathBuf) -> anyhow::Result<ExitCode> {
    let spool = open_spool(&config)?;
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(async {
        use tokio::signal::unix::{signal, SignalKind};
        let shared = outpost::daemon::Shared::new(config, path, spool);
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        let mut hup = signal(SignalKind::hangup())?;
        tracing::info!("outpost running");
        let service = tokio::spawn(outpost::daemon::run(shared.clone()));
        loop {
            tokio::select! {
                _ = term.recv() => break,
                _ = int.recv() => break,
                _ = hup.recv() => { let _ = shared.reload(); }
            }
        }
        tracing::info!("stopping at a safe point");
        shared.shutdown();
        match tokio::time::timeout(outpost::daemon::SHUTDOWN_LIMIT, service).await {
            Ok(_) => tracing::info!("stopped"),
            Err(_) => tracing::error!("did not stop in time; exiting anyway"),
        }
        Ok(ExitCode::SUCCESS)
    })
}

fn demo(dir: Option<std::path::PathBuf>) -> anyhow::Result<ExitCode> {
    let dir = match dir {
        Some(dir) => dir,
        None => std::env::temp_dir().join(format!("outpost-demo-{}", std::process::id())),
    };
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    let mut out = std::io::stdout();
    runtime.block_on(outpost::demo::run(&dir, &mut out))?;
    Ok(ExitCode::SUCCESS)
}

fn route(
    config: &Config,
    file: &std::path::Path,
    account: Option<&str>,
) -> anyhow::Result<ExitCode> {
    let catch_alls: Vec<_> = config
        .accounts
        .iter()
        .filter(|a| a.routing.is_some())
        .filter(|a| account.is_none_or(|n| a.name == n))
        .collect();
    let account = match catch_alls.as_slice() {
        [one] => one,
        [] => anyhow::bail!(
            "no catch-all account{} in the configuration",
            account.map(|n| format!(" named {n:?}")).unwrap_or_default()
        ),
        _ => anyhow::bail!("several catch-all accounts: name one with --account"),
    };
    use std::io::Read;
    let mut head = Vec::new();
    std::fs::File::open(file)
        .with_context(|| format!("opening {}", file.display()))?
        .take(spool::HEADER_PREREAD as u64)
        .read_to_end(&mut head)?;
    let rules = &account.routing.as_ref().expect("filtered on routing").rules;
    print!("{}", rules.route(&head, &account.name).explain());
    Ok(ExitCode::SUCCESS)
}
