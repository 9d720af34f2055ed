//! Crash test (`harness = false`): `outpost deliver` is killed with SIGKILL at random moments while
//! it delivers 500 messages (400 queued, 100 dropped into pickup/) into a real Postfix, then one run
//! goes to the end. Nothing may be lost. A duplicate is possible only for a kill between Postfix's
//! 250 and the spool's record of it: each is counted and printed, and there can be at most one per
//! session per kill.
//!
//! `OUTPOST_CRASH_KILLS` sets the number of kills (default 30); `OUTPOST_CRASH_SEED` replays a run.

mod support;

use std::collections::HashMap;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::{queue_message, Postfix};

const QUEUED: usize = 400;
const PICKED_UP: usize = 100;
const SESSIONS: usize = 2;

fn main() {
    let kills_wanted = support::crash::kills_wanted(30);
    let mut rng = support::crash::Rng::from_env("crash_deliver");

    let postfix = Postfix::start(10_240_000);
    let dir = tempfile::tempdir().unwrap();
    let spool_dir = dir.path().join("spool");
    {
        let spool = spool::Spool::open(&spool_dir).unwrap();
        for i in 0..QUEUED {
            let body = format!(
                "From: a@example.net\r\nSubject: q{i}\r\nMessage-ID: <q{i}@crash>\r\n\r\n{}",
                "text of the message\r\n".repeat(1 + i % 30)
            );
            queue_message(
                &spool,
                "a@example.net",
                &[&format!("user{}@example.org", i % 7)],
                body.as_bytes(),
            );
        }
        for i in 0..PICKED_UP {
            let body = format!("From: b@example.net\r\nTo: user{}@example.org\r\nSubject: p{i}\r\nMessage-ID: <p{i}@crash>\r\n\r\npicked up\r\n", i % 7);
            std::fs::write(spool.pickup_dir().join(format!("p{i}.eml")), body).unwrap();
        }
    }
    let config = dir.path().join("outpost.toml");
    std::fs::write(
        &config,
        format!(
            "spool_dir = {spool_dir:?}\n{}\n[delivery]\nsessions = {SESSIONS}\n\n[[account]]\nname = \"unused\"\nserver = \"127.0.0.1\"\n\
             tls = \"implicit\"\nuser = \"u\"\npassword = \"p\"\ndeliver_to = \"x@example.org\"\n",
            postfix.local_section("")
        ),
    )
    .unwrap();
    let deliver = || {
        Command::new(env!("CARGO_BIN_EXE_outpost"))
            .args(["--config", config.to_str().unwrap(), "deliver"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };
    let queued = || {
        std::fs::read_dir(spool_dir.join("queue"))
            .map(|d| d.count())
            .unwrap_or(0)
    };
    let pickup_left = || {
        std::fs::read_dir(spool_dir.join("pickup"))
            .map(|d| d.count())
            .unwrap_or(0)
    };

    let started = Instant::now();
    let (mut kills, mut runs) = (0, 0);
    while kills < kills_wanted && (queued() > 0 || pickup_left() > 0) {
        runs += 1;
        let mut child = deliver();
        std::thread::sleep(Duration::from_millis(10 + rng.below(150)));
        if child.try_wait().unwrap().is_none() {
            child.kill().unwrap();
            kills += 1;
        }
        child.wait().unwrap();
    }
    println!(
        "crash_deliver: {kills} kills in {runs} runs, {:?}",
        started.elapsed()
    );
    for _ in 0..5 {
        if queued() == 0 && pickup_left() == 0 {
            break;
        }
        assert!(
            deliver().wait().unwrap().success(),
            "the final delivery run failed"
        );
    }
    assert_eq!(
        (queued(), pickup_left()),
        (0, 0),
        "the queue and pickup drained"
    );
    let badmail = std::fs::read_dir(spool_dir.join("badmail"))
        .unwrap()
        .count();
    assert_eq!(badmail, 0, "nothing went to badmail");

    let total = QUEUED + PICKED_UP;
    let delivered = postfix.wait_for(total);
    std::thread::sleep(Duration::from_millis(1000));
    let delivered = if postfix.delivered().len() > delivered.len() {
        postfix.delivered()
    } else {
        delivered
    };
    let mut copies: HashMap<String, usize> = HashMap::new();
    for d in &delivered {
        let id = support::message_id(&d.message).expect("a Message-ID");
        *copies.entry(id).or_default() += 1;
    }
    let missing: Vec<String> = (0..QUEUED)
        .map(|i| format!("q{i}"))
        .chain((0..PICKED_UP).map(|i| format!("p{i}")))
        .filter(|id| !copies.contains_key(id))
        .collect();
    assert!(missing.is_empty(), "lost: {missing:?}");
    let duplicates: usize = copies.values().map(|n| n - 1).sum();
    let twice: Vec<&String> = copies
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|(id, _)| id)
        .collect();
    println!("crash_deliver: {total} messages delivered, {duplicates} duplicate(s) from kills between 250 and the record: {twice:?}");
    assert!(
        duplicates <= kills * SESSIONS,
        "more duplicates than kills can explain"
    );
    println!("crash_deliver: 1 passed, 0 failed");
}
