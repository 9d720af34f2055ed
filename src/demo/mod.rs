//! `outpost demo`: the whole job in one process, with nothing installed. A built-in POP3 server
//! plays the provider (three mailboxes of sample mail) behind a simulated satellite link, a
//! built-in SMTP server plays the site's mail server (it files what it receives in a folder), and
//! the real fetcher, spool and deliverer do the work between them.
//!
//! The built-in servers are small and honest ([`pop3`], [`smtp`]); they are not the production
//! path and speak plain TCP only.

pub mod pop3;
pub mod smtp;

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::config::Config;
use crate::control::{self, Call, Request};
use crate::fetch::{AccountProgress, Limits};
use crate::linksim::{LinkSim, LinkSpec};
use crate::progress::{self, LiveDisplay};

#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("{0}: {1}")]
    Io(String, std::io::Error),
    #[error("the demo's configuration: {0:?}")]
    Config(Vec<crate::config::ConfigError>),
    #[error(transparent)]
    Spool(#[from] spool::SpoolError),
    #[error(transparent)]
    Deliver(#[from] crate::deliver::DeliverError),
    #[error("{0}")]
    Control(String),
}

/// The demo's link: a satellite terminal (512 kbit/s down, 128 kbit/s up, 600 ms round trip).
const LINK: LinkSpec = LinkSpec {
    down_bps: 512_000,
    up_bps: 128_000,
    rtt: Duration::from_millis(600),
};

fn sample(n: usize, from: &str, to: &str, subject: &str, body: &str) -> (String, Vec<u8>) {
    let text = format!(
        "Return-Path: <{from}>\r\nFrom: {from}\r\nTo: {to}\r\nSubject: {subject}\r\nMessage-ID: <demo{n}@example.net>\r\n\
         Date: Sat, 21 Nov 2026 09:{:02}:00 +0000\r\n\r\n{body}\r\n",
        n % 60
    );
    (format!("demo-{n}"), text.into_bytes())
}

/// The provider's mailboxes: user → (password, messages).
fn sample_mailboxes() -> HashMap<String, pop3::Mailbox> {
    let mut boxes = HashMap::new();
    let mut n = 0;
    let mut next = |from: &str, to: &str, subject: &str, body: &str| {
        n += 1;
        sample(n, from, to, subject, body)
    };
    boxes.insert(
        "office".to_string(),
        pop3::Mailbox {
            password: "office-pw".into(),
            messages: vec![
                next(
                    "Ann Smith <ann@customer.example>",
                    "office@example.org",
                    "Order 4711",
                    "Please send 20 more units.",
                ),
                next(
                    "billing@supplier.example",
                    "office@example.org",
                    "Invoice March",
                    "Your invoice, as every month.",
                ),
                next(
                    "root",
                    "office@example.org",
                    "Cron output",
                    "A sender without a domain gets default_domain.",
                ),
            ],
        },
    );
    boxes.insert(
        "sales".to_string(),
        pop3::Mailbox {
            password: "sales-pw".into(),
            messages: vec![
                next(
                    "lead@prospect.example",
                    "sales@example.org",
                    "Quote request",
                    "How much for 500?",
                ),
                next(
                    "list-bounces@lists.example",
                    "sales@example.org",
                    "[list] weekly digest",
                    &"News of the week.\r\n".repeat(300),
                ),
            ],
        },
    );
    let mut photos = next(
        "photos@family.example",
        "info@example.org",
        "Holiday photos",
        "",
    );
    photos.1.extend(std::iter::repeat_n(b'x', 400_000));
    photos.1.extend_from_slice(b"\r\n");
    boxes.insert(
        "info".to_string(),
        pop3::Mailbox {
            password: "info-pw".into(),
            messages: vec![
                next(
                    "visitor@web.example",
                    "info@example.org",
                    "Opening hours",
                    "Are you open on Saturday?",
                ),
                photos,
            ],
        },
    );
    boxes
}

fn configuration(dir: &Path, pop3: std::net::SocketAddr, smtp: std::net::SocketAddr) -> String {
    let account = |name: &str, deliver_to: &str, extra: &str| {
        format!(
            "\n[[account]]\nname = \"{name}\"\nserver = \"127.0.0.1\"\nport = {}\ntls = \"none\"\n\
             # The built-in server speaks plain POP3 on loopback; never do this over the Internet.\n\
             allow_insecure_auth = true\nuser = \"{name}\"\npassword = \"{name}-pw\"\ndeliver_to = {deliver_to}\n{extra}",
            pop3.port()
        )
    };
    format!(
        "# Written by `outpost demo`: the spool, the site's server and three provider mailboxes.\n\
         spool_dir = {:?}\ndefault_domain = \"example.org\"\n\n[local]\nhost = \"127.0.0.1\"\nport = {}\nhelo = \"outpost.demo\"\n{}{}{}",
        dir.join("spool"),
        smtp.port(),
        account("office", "\"office@example.org\"", ""),
        account("sales", "[\"sales@example.org\", \"boss@example.org\"]", ""),
        account("info", "\"info@example.org\"", "max_message_size = \"100kB\"\n"),
    )
}

/// Runs the demo in `dir`, printing what happens to `out`. Returns the folder of delivered mail.
pub async fn run(dir: &Path, out: &mut (dyn Write + Send)) -> Result<PathBuf, DemoError> {
    let io = |what: &str| {
        let what = what.to_string();
        move |e| DemoError::Io(what, e)
    };
    std::fs::create_dir_all(dir).map_err(io("creating the demo folder"))?;
    let delivered = dir.join("delivered");
    let mailboxes: pop3::Mailboxes = Arc::new(Mutex::new(sample_mailboxes()));
    let pop3_addr = pop3::serve(mailboxes.clone())
        .await
        .map_err(io("starting the POP3 server"))?;
    let smtp_addr = smtp::serve(delivered.clone())
        .await
        .map_err(io("starting the SMTP server"))?;
    let link = LinkSim::start("127.0.0.1:0".parse().expect("an address"), pop3_addr, LINK)
        .await
        .map_err(io("starting the link simulator"))?;
    let text = configuration(dir, link.addr, smtp_addr);
    let config_path = dir.join("outpost.toml");
    std::fs::write(&config_path, &text).map_err(io("writing the configuration"))?;
    let config = Config::parse(&text, dir).map_err(DemoError::Config)?;
    let spool = spool::Spool::open(&config.spool_dir)?;
    let say = |out: &mut (dyn Write + Send), text: String| {
        out.write_all(text.as_bytes()).map_err(io("writing"))
    };

    say(out, format!(
        "outpost demo in {}\n  provider: built-in POP3 server with mailboxes office, sales, info, behind a simulated link\n  \
         (512 kbit/s down, 128 kbit/s up, 600 ms round trip)\n  site: built-in SMTP server filing mail in {}\n\n== a connect window\n",
        dir.display(),
        delivered.display()
    ))?;
    let accounts: Vec<_> = config
        .accounts
        .iter()
        .map(|a| (a.clone(), AccountProgress::new(&a.name)))
        .collect();
    let display = LiveDisplay::start(accounts.iter().map(|(_, p)| p.clone()).collect());
    let limits = Arc::new(Limits::new(None, None));
    let (report, _) = crate::window::run(&config, &spool, &config.accounts, limits).await;
    display.finish().await;
    say(out, progress::summary(&report))?;
    say(
        out,
        format!(
            "link busy {:.1} s for {} received\n",
            link.stats.busy_seconds(),
            progress::format_bytes(
                link.stats
                    .bytes_down
                    .load(std::sync::atomic::Ordering::Relaxed)
            )
        ),
    )?;

    let run_control =
        |out: &mut (dyn Write + Send), title: &str, request: Request| -> Result<(), DemoError> {
            say(out, format!("\n== spoolctl {title}\n"))?;
            let fetch = |_: Option<String>| Err("not in the demo".to_string());
            control::execute(
                &Call {
                    request,
                    json: false,
                },
                &config,
                &spool,
                out,
                &fetch,
            )
            .map_err(DemoError::Control)?;
            Ok(())
        };
    run_control(out, "list", Request::List { state: None })?;

    say(out, "\n== delivery to the site's mail server\n".into())?;
    let delivery = crate::deliver::deliver_due(&config, &spool).await?;
    say(out, progress::delivery_summary(&delivery))?;

    run_control(out, "status", Request::Status)?;
    run_control(out, "windows", Request::Windows { last: 5 })?;

    say(
        out,
        format!(
            "\n== delivered mail, one file per recipient, in {}\n",
            delivered.display()
        ),
    )?;
    let mut files: Vec<PathBuf> = Vec::new();
    for entry in std::fs::read_dir(&delivered)
        .map_err(io("reading the delivered mail"))?
        .flatten()
    {
        files.extend(
            std::fs::read_dir(entry.path())
                .into_iter()
                .flatten()
                .flatten()
                .map(|e| e.path()),
        );
    }
    files.sort();
    for file in &files {
        let head = std::fs::read(file)
            .map(|b| b[..b.len().min(2048)].to_vec())
            .unwrap_or_default();
        let subject = String::from_utf8_lossy(&head)
            .lines()
            .find_map(|l| l.strip_prefix("Subject: ").map(str::to_string))
            .unwrap_or_default();
        say(
            out,
            format!(
                "  {}  {subject}\n",
                file.strip_prefix(&delivered).unwrap_or(file).display()
            ),
        )?;
    }
    let left: usize = mailboxes
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .values()
        .map(|m| m.messages.len())
        .sum();
    say(out, format!(
        "\n{} message(s) delivered as {} file(s); {left} left at the provider (too large for its account's limit).\n\
         The configuration is {}; try `spoolctl --config {} status`.\n",
        delivery.delivered,
        files.len(),
        config_path.display(),
        config_path.display()
    ))?;
    Ok(delivered)
}
