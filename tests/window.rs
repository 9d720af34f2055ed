//! Connect windows: link commands in order and always down, caps that stop a window cleanly, the
//! window record.

mod support;

use std::path::Path;
use std::sync::Arc;

use outpost::config::Config;
use outpost::fetch::Limits;
use spool::Spool;
use support::message;
use support::scripted::{Options, ScriptedPop3};

fn config(dir: &Path, server: &ScriptedPop3, extra: &str) -> Config {
    let text = format!(
        "spool_dir = {:?}\n{extra}\n\n[[account]]\n{}",
        dir.join("spool"),
        server.account("isp", "")
    );
    Config::parse(&text, Path::new("/")).expect("valid test config")
}

async fn window(config: &Config) -> (outpost::fetch::WindowReport, spool::WindowRecord) {
    let spool = Spool::open(&config.spool_dir).unwrap();
    let limits = Arc::new(Limits::new(
        config.window.max_duration,
        config.window.max_bytes,
    ));
    outpost::window::run(config, &spool, &config.accounts, limits).await
}

#[tokio::test]
async fn link_commands_run_in_order_and_down_runs_whatever_happens() {
    let server = ScriptedPop3::start(Options::default(), vec![message("w1", "x")]).await;
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("marker");
    let link = format!(
        "[link]\nup = \"echo up >> {m}\"\non_up = [\"echo hook >> {m}\"]\ndown = \"echo down >> {m}\"\nready_timeout = \"3s\"\ncost_per_minute = 60.0\ncost_per_mb = 1.0",
        m = marker.display()
    );
    let (report, record) = window(&config(dir.path(), &server, &link)).await;
    assert!(!report.failed());
    assert_eq!(
        std::fs::read_to_string(&marker).unwrap(),
        "up\nhook\ndown\n"
    );
    assert_eq!(record.messages["isp"], 1);
    assert!(
        record.bytes_in > report.bytes(),
        "the link carried the protocol too: {}",
        record.bytes_in
    );
    assert!(record.cost.unwrap() > 0.0 && record.online_seconds > 0.0);

    // A link that comes up but whose server never answers: no fetch, and down still runs.
    std::fs::remove_file(&marker).unwrap();
    let dead = link.replace(&format!("port = {}", server.addr.port()), "port = 1");
    let mut unreachable = config(dir.path(), &server, &dead);
    unreachable.accounts[0].port = 1;
    unreachable.link.ready_timeout = std::time::Duration::from_secs(1);
    let (_, record) = window(&unreachable).await;
    assert_eq!(std::fs::read_to_string(&marker).unwrap(), "up\ndown\n");
    assert!(
        record.errors[0].contains("did not answer"),
        "{:?}",
        record.errors
    );

    // A link-up command that fails: down runs all the same.
    std::fs::remove_file(&marker).unwrap();
    let failing = link.replace("up = \"echo up", "up = \"false && echo up");
    let (_, record) = window(&config(dir.path(), &server, &failing)).await;
    assert_eq!(std::fs::read_to_string(&marker).unwrap(), "down\n");
    assert!(
        record.errors[0].contains("link up command failed"),
        "{:?}",
        record.errors
    );

    let spool = Spool::open(dir.path().join("spool")).unwrap();
    assert_eq!(
        spool.windows(10).unwrap().len(),
        3,
        "every window is recorded"
    );
}

#[tokio::test]
async fn the_time_cap_starts_nothing_new_and_still_quits() {
    let server = ScriptedPop3::start(
        Options::default(),
        (0..5).map(|i| message(&format!("t{i}"), "x")).collect(),
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let (report, record) = window(&config(
        dir.path(),
        &server,
        "[window]\nmax_duration = \"1ms\"",
    ))
    .await;
    assert_eq!(report.fetched(), 0);
    assert_eq!(
        record.capped.as_deref(),
        Some("time cap (window.max_duration)")
    );
    assert!(
        server.commands().contains(&"QUIT".to_string()),
        "the session ended with QUIT"
    );
    assert_eq!(server.remaining(), 5);
    let (report, _) = window(&config(dir.path(), &server, "")).await;
    assert_eq!(report.fetched(), 5);
    assert_eq!(server.remaining(), 0);
}

#[tokio::test]
async fn a_byte_budget_takes_the_smallest_first_and_leaves_the_rest_for_the_next_window() {
    let sizes = [1000, 200, 3000, 500];
    let messages: Vec<Vec<u8>> = sizes
        .iter()
        .enumerate()
        .map(|(i, &n)| {
            let mut m = message(&format!("b{i}"), "");
            m.resize(n, b'x');
            m.extend_from_slice(b"\r\n");
            m
        })
        .collect();
    let server = ScriptedPop3::start(Options::default(), messages).await;
    let dir = tempfile::tempdir().unwrap();
    let (report, record) = window(&config(dir.path(), &server, "[window]\nmax_bytes = 800")).await;
    assert_eq!(
        report.fetched(),
        2,
        "the 202 and 502 byte messages fit, the 1002 does not"
    );
    assert_eq!(
        record.capped.as_deref(),
        Some("byte budget (window.max_bytes)")
    );
    assert_eq!(
        server.remaining(),
        2,
        "the deletions of the two fetched ones were committed"
    );
    let ids = support::spooled_ids(&dir.path().join("spool"));
    assert!(ids.contains_key("b1") && ids.contains_key("b3"), "{ids:?}");
    let (report, _) = window(&config(dir.path(), &server, "")).await;
    assert_eq!(report.fetched(), 2);
    assert_eq!(server.remaining(), 0);
}
