//! Benchmark: fetch a workload from a real Dovecot through a simulated satellite link and compare
//! the link time with the physical limit. Run it with `scripts/bench-fetch`.
//!
//! Workload: 5 mailboxes × 25 messages of 2 to 6 kB, plus 3 larger ones (50, 100, 200 kB).
//! Link: 1 Mbit/s down, 256 kbit/s up, 600 ms round trip, shared by all connections.
//! Limit: bytes down × 8 / 1 Mbit/s + 6 round trips (TCP handshake and greeting, CAPA, login with
//! the listing, the first RETR, the last DELEs with QUIT); TLS adds the handshake's round trip.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use outpost::config::Config;
use outpost::fetch::{self, AccountProgress};
use outpost::linksim::{LinkSim, LinkSpec};

const USERS: [&str; 5] = ["b1", "b2", "b3", "b4", "b5"];
const SPEC: LinkSpec = LinkSpec {
    down_bps: 1_000_000,
    up_bps: 256_000,
    rtt: Duration::from_millis(600),
};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn deliver_workload(dovecot: &Path) -> usize {
    let mut count = 0;
    let mut put = |user: &str, size: usize| {
        let mut text = format!("From: sender{count}@example.net\r\nTo: {user}@example.org\r\nSubject: bench {count}\r\nMessage-ID: <bench{count}@example.net>\r\n\r\n");
        while text.len() < size {
            text.push_str("Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor.\r\n");
        }
        static UNIQUE: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let name = format!("bench{}.eml", UNIQUE.fetch_add(1, Ordering::Relaxed));
        let tmp = dovecot.join("mail").join(user).join("tmp").join(&name);
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(
            &tmp,
            dovecot.join("mail").join(user).join("new").join(&name),
        )
        .unwrap();
        count += 1;
    };
    for (u, user) in USERS.iter().enumerate() {
        for i in 0..25 {
            put(user, 2000 + (i * 167 + u * 379) % 4000);
        }
    }
    for (user, size) in [("b1", 50_000), ("b2", 100_000), ("b3", 200_000)] {
        put(user, size);
    }
    count
}

async fn run(
    label: &str,
    dovecot: &Path,
    target_port: u16,
    account_extra: &str,
    round_trips: f64,
) -> f64 {
    let messages = deliver_workload(dovecot);
    let link = LinkSim::start(
        "127.0.0.1:0".parse().unwrap(),
        format!("127.0.0.1:{target_port}").parse().unwrap(),
        SPEC,
    )
    .await
    .unwrap();
    let spool_dir = tempfile::tempdir().unwrap();
    let mut text = format!("spool_dir = {:?}\n", spool_dir.path());
    for user in USERS {
        text.push_str(&format!(
            "[[account]]\nname = \"{user}\"\nserver = \"localhost\"\nport = {}\nuser = \"{user}\"\npassword = \"pw\"\n\
             deliver_to = \"{user}@example.org\"\n{account_extra}\n",
            link.addr.port()
        ));
    }
    let config = Config::parse(&text, Path::new("/")).expect("bench config");
    let spool = spool::Spool::open(&config.spool_dir).unwrap();
    let accounts: Vec<_> = config
        .accounts
        .iter()
        .map(|a| (a.clone(), AccountProgress::new(&a.name)))
        .collect();
    let started = Instant::now();
    let report = fetch::run_window(&config, &spool, &accounts).await;
    let wall = started.elapsed().as_secs_f64();
    assert!(!report.failed(), "{report:?}");
    assert_eq!(report.fetched() as usize, messages, "every message fetched");

    link.stats.wait_idle(Duration::from_secs(10)).await;
    let down = link.stats.bytes_down.load(Ordering::Relaxed);
    let up = link.stats.bytes_up.load(Ordering::Relaxed);
    let busy = link.stats.busy_seconds();
    let limit = down as f64 * 8.0 / SPEC.down_bps as f64 + round_trips * SPEC.rtt.as_secs_f64();
    let ratio = busy / limit;
    println!("{label}:");
    println!(
        "  {messages} messages, {} of mail; {down} bytes down, {up} bytes up the link",
        outpost::progress::format_bytes(report.bytes())
    );
    println!("  link busy {busy:.2} s (fetch call {wall:.2} s); physical limit {limit:.2} s = {down} B × 8 / 1 Mbit/s + {round_trips} × 600 ms");
    println!("  ratio to the limit: {ratio:.3}");
    // The simulator lets a greeting through 1.5 round trips after the connect (a TCP handshake),
    // so half a round trip of the limit's six cannot be spent by any client.
    let floor = limit - 0.5 * SPEC.rtt.as_secs_f64();
    println!(
        "  (the simulator's own floor is {floor:.2} s: outpost is {:.2} s above it)",
        busy - floor
    );
    ratio
}

fn main() {
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .init();
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let dir = tempfile::Builder::new()
        .prefix("outpost-bench-")
        .tempdir()
        .unwrap();
    let (pop3, pop3s) = (free_port(), free_port());
    let status = Command::new(root.join("scripts/dovecot-start"))
        .arg(dir.path())
        .arg(pop3.to_string())
        .arg(pop3s.to_string())
        .args(USERS.iter().map(|u| format!("{u}:pw")))
        .status()
        .unwrap();
    assert!(status.success());
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let ca = dir.path().join("tls/ca.crt");
    let plain = runtime.block_on(run(
        "POP3, USER/PASS, PIPELINING",
        dir.path(),
        pop3,
        "tls = \"none\"\nauth = \"user\"\nallow_insecure_auth = true",
        6.0,
    ));
    let tls = runtime.block_on(run(
        "POP3S (TLS 1.3 adds one round trip), USER/PASS, PIPELINING",
        dir.path(),
        pop3s,
        &format!("tls = \"implicit\"\nauth = \"user\"\nca_file = {ca:?}"),
        7.0,
    ));
    let _ = Command::new(root.join("scripts/dovecot-stop"))
        .arg(dir.path())
        .status();
    println!(
        "target: ratio under 1.15 -> plain {:.3} {}, TLS {:.3} {}",
        plain,
        verdict(plain),
        tls,
        verdict(tls)
    );
}

fn verdict(ratio: f64) -> &'static str {
    if ratio < 1.15 {
        "met"
    } else {
        "NOT met"
    }
}
