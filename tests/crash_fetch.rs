//! Crash test (`harness = false`): `outpost fetch` is killed with SIGKILL at random moments while it
//! fetches from a real Dovecot, again and again, while new mail keeps arriving. Then one run goes to
//! the end. Every message must be in the spool exactly once and the server must be empty.
//!
//! `OUTPOST_CRASH_KILLS` sets how many kills must land mid-run (default 50); `OUTPOST_CRASH_SEED`
//! replays a run.

mod support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::{dovecot_account, message, spooled_ids, Dovecot};

fn main() {
    let kills_wanted = support::crash::kills_wanted(50);
    let mut rng = support::crash::Rng::from_env("crash_fetch");

    let users = ["crash1", "crash2"];
    let dovecot = Dovecot::start(&users.map(|u| (u, "pw")));
    let dir = tempfile::tempdir().unwrap();
    let spool_dir = dir.path().join("spool");
    let config = dir.path().join("outpost.toml");
    let accounts: Vec<String> = users
        .iter()
        .map(|u| dovecot_account(&dovecot, u, u, "pw", "timeout = \"10s\""))
        .collect();
    std::fs::write(&config, support::config_text(&spool_dir, &accounts)).unwrap();

    let mut delivered = Vec::new();
    let mut deliver = |rng: &mut support::crash::Rng, count: usize| {
        for _ in 0..count {
            let user = users[rng.below(users.len() as u64) as usize];
            let id = format!("c{}", delivered.len());
            // Mostly small messages, some of a few hundred kB, so kills land inside bodies too.
            let lines = if rng.below(10) == 0 {
                4000 + rng.below(4000)
            } else {
                1 + rng.below(60)
            } as usize;
            dovecot.deliver(
                user,
                &message(
                    &id,
                    &"a line of the message body, long enough to matter\r\n".repeat(lines),
                ),
            );
            delivered.push(id);
        }
    };
    deliver(&mut rng, 200);

    let outpost = env!("CARGO_BIN_EXE_outpost");
    let fetch = || {
        Command::new(outpost)
            .args(["--config", config.to_str().unwrap(), "fetch"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };
    let started = Instant::now();
    let (mut kills, mut runs) = (0, 0);
    while kills < kills_wanted {
        assert!(
            runs < kills_wanted * 5,
            "only {kills} of {runs} runs were still going when killed"
        );
        runs += 1;
        let mut child = fetch();
        std::thread::sleep(Duration::from_millis(20 + rng.below(300)));
        if child.try_wait().unwrap().is_none() {
            child.kill().unwrap();
            kills += 1;
        }
        child.wait().unwrap();
        if rng.below(3) == 0 {
            let count = 10 + rng.below(20) as usize;
            deliver(&mut rng, count);
        }
    }
    println!(
        "crash_fetch: {kills} kills in {runs} runs, {} messages delivered, {:?}",
        delivered.len(),
        started.elapsed()
    );

    // Now to the end. A killed session may leave Dovecot's mailbox lock for a moment: retry.
    let mut finished = false;
    for _ in 0..10 {
        if fetch().wait().unwrap().success() && users.iter().all(|u| dovecot.count(u) == 0) {
            finished = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    assert!(finished, "the final fetch did not empty the server");

    let ids = spooled_ids(&spool_dir);
    let missing: Vec<_> = delivered
        .iter()
        .filter(|id| !ids.contains_key(*id))
        .collect();
    let twice: Vec<_> = ids.iter().filter(|(_, &n)| n > 1).collect();
    assert!(missing.is_empty(), "lost: {missing:?}");
    assert!(twice.is_empty(), "spooled more than once: {twice:?}");
    assert_eq!(ids.len(), delivered.len());
    let spool = spool::Spool::open(&spool_dir).unwrap();
    assert_eq!(
        spool.list().unwrap().len(),
        delivered.len(),
        "the index agrees with the files"
    );
    println!(
        "crash_fetch: {} messages, each spooled exactly once",
        delivered.len()
    );
    println!("crash_fetch: 1 passed, 0 failed");
}
