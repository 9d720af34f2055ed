//! `outpost run` end to end: a window every two seconds against Dovecot, delivery into Postfix,
//! link commands around each window, SIGHUP with a broken configuration, SIGTERM.

mod support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::{dovecot_account, message, Dovecot, Postfix};

/// Starts `outpost run` with `config`, its log going to `log`.
fn start_daemon(config: &std::path::Path, log: &std::path::Path) -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_outpost"))
        .args(["--config", config.to_str().unwrap(), "run"])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap()
}

fn signal(child: &std::process::Child, signal: i32) {
    // SAFETY: sending a signal to our own child process.
    assert_eq!(unsafe { libc::kill(child.id() as libc::pid_t, signal) }, 0);
}

#[test]
fn the_service_fetches_in_windows_delivers_reloads_and_stops() {
    let dovecot = Dovecot::start(&[("field", "pw")]);
    let postfix = Postfix::start(10_240_000);
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("link.log");
    let config_text = format!(
        "spool_dir = {:?}\n{}\n[schedule]\ncron = \"*/2 * * * * *\"\n\n[link]\nup = \"echo up >> {m}\"\ndown = \"echo down >> {m}\"\nready_timeout = \"5s\"\n\n[[account]]\n{}",
        dir.path().join("spool"),
        postfix.local_section(""),
        dovecot_account(&dovecot, "field", "field", "pw", ""),
        m = marker.display()
    );
    let config = dir.path().join("outpost.toml");
    std::fs::write(&config, &config_text).unwrap();
    let mut child = start_daemon(&config, &dir.path().join("outpost.log"));

    dovecot.deliver(
        "field",
        &message("first", "fetched in a window, delivered at once"),
    );
    let copies = postfix.wait_for(1);
    assert_eq!(copies[0].recipient, "field@example.org");
    assert_eq!(dovecot.count("field"), 0);

    // A broken configuration on SIGHUP: reported, and the old one keeps working.
    std::fs::write(&config, "spool_dir = 7\n[[account]]\n").unwrap();
    signal(&child, libc::SIGHUP);
    dovecot.deliver("field", &message("second", "after the failed reload"));
    assert_eq!(postfix.wait_for(2).len(), 2);
    let log_text = std::fs::read_to_string(dir.path().join("outpost.log")).unwrap();
    assert!(
        log_text.contains("the old one stays in force"),
        "{log_text}"
    );

    // `outpost fetch` while the daemon owns the spool asks the daemon for the window.
    std::fs::write(&config, &config_text).unwrap();
    dovecot.deliver("field", &message("third", "fetched on request"));
    let output = support::outpost(&["--config", config.to_str().unwrap(), "fetch"]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && stdout.contains("field:"),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(postfix.wait_for(3).len(), 3);

    signal(&child, libc::SIGTERM);
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(started.elapsed() < Duration::from_secs(20), "did not stop");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status:?}");
    let link = std::fs::read_to_string(&marker).unwrap();
    assert!(
        link.starts_with("up\n") && link.ends_with("down\n"),
        "{link}"
    );
    assert_eq!(
        link.matches("up\n").count(),
        link.matches("down\n").count(),
        "every up has its down: {link}"
    );
    assert!(
        link.matches("up\n").count() >= 2,
        "windows every two seconds: {link}"
    );
    let log_text = std::fs::read_to_string(dir.path().join("outpost.log")).unwrap();
    assert!(
        log_text.contains("window done") && log_text.contains("stopped"),
        "{log_text}"
    );
}

#[test]
fn a_refused_password_in_two_windows_sends_the_postmaster_exactly_one_notice() {
    let dovecot = Dovecot::start(&[("sales", "new-password")]);
    let postfix = Postfix::start(10_240_000);
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("outpost.toml");
    std::fs::write(
        &config,
        format!(
            "spool_dir = {:?}\npostmaster = \"postmaster@example.org\"\n{}\n[schedule]\ncron = \"*/2 * * * * *\"\n\n[[account]]\n{}",
            dir.path().join("spool"),
            postfix.local_section(""),
            dovecot_account(&dovecot, "sales", "sales", "old-password", "")
        ),
    )
    .unwrap();
    let mut child = start_daemon(&config, &dir.path().join("outpost.log"));
    let notice = std::panic::catch_unwind(|| postfix.wait_for(1)).unwrap_or_else(|_| {
        panic!(
            "no notice; the log:\n{}",
            std::fs::read_to_string(dir.path().join("outpost.log")).unwrap_or_default()
        )
    });
    assert_eq!(notice[0].recipient, "postmaster@example.org");
    let text = String::from_utf8_lossy(&notice[0].message).into_owned();
    assert!(
        text.contains("Subject: outpost: the mailbox sales refuses its password"),
        "{text}"
    );
    assert_eq!(notice[0].return_path, "", "sent from the null sender");
    // More failing windows: still one notice (once per cause per day).
    std::thread::sleep(Duration::from_secs(8));
    assert_eq!(postfix.delivered().len(), 1);
    signal(&child, libc::SIGTERM);
    assert!(child.wait().unwrap().success());
}

#[test]
fn sigterm_in_the_middle_of_a_window_loses_nothing_and_takes_the_link_down() {
    let dovecot = Dovecot::start(&[("busy", "pw")]);
    for i in 0..400 {
        dovecot.deliver(
            "busy",
            &message(
                &format!("busy{i}"),
                &"a line of text in a longer message\r\n".repeat(200),
            ),
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let spool_dir = dir.path().join("spool");
    let marker = dir.path().join("link.log");
    let config = dir.path().join("outpost.toml");
    std::fs::write(
        &config,
        format!(
            "spool_dir = {spool_dir:?}\n[local]\nhost = \"127.0.0.1\"\nport = 1\n[schedule]\ncron = \"* * * * * *\"\n\n[link]\nup = \"echo up >> {m}\"\ndown = \"echo down >> {m}\"\n\n[[account]]\n{}",
            dovecot_account(&dovecot, "busy", "busy", "pw", ""),
            m = marker.display()
        ),
    )
    .unwrap();
    let mut child = start_daemon(&config, &dir.path().join("outpost.log"));
    // Wait until the window is under way, then stop.
    let started = Instant::now();
    while support::spooled_ids(&spool_dir).len() < 20 {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the window did not start"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    signal(&child, libc::SIGTERM);
    assert!(child.wait().unwrap().success());
    let link = std::fs::read_to_string(&marker).unwrap();
    assert!(link.ends_with("down\n"), "the link went down: {link}");
    let spooled = support::spooled_ids(&spool_dir);
    assert!(
        spooled.len() < 400,
        "stopped early: {} spooled",
        spooled.len()
    );
    assert!(spooled.values().all(|&n| n == 1));
    assert_eq!(
        spooled.len() + dovecot.count("busy"),
        400,
        "every message is either spooled or still on the server"
    );

    // The next run finishes the job, without fetching anything twice.
    let output = support::outpost(&["--config", config.to_str().unwrap(), "fetch"]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stdout)
    );
    let spooled = support::spooled_ids(&spool_dir);
    assert_eq!(spooled.len(), 400);
    assert!(spooled.values().all(|&n| n == 1));
    assert_eq!(dovecot.count("busy"), 0);
}

#[test]
fn requeue_of_a_badmail_file_through_the_daemon_delivers_it() {
    let postfix = Postfix::start(10_240_000);
    let dir = tempfile::tempdir().unwrap();
    let spool_dir = dir.path().join("spool");
    let id = {
        let spool = spool::Spool::open(&spool_dir).unwrap();
        let id = support::queue_message(
            &spool,
            "list@example.net",
            &["reject-joe@example.org"],
            b"Subject: replayed\r\n\r\nagain\r\n",
        );
        let reason = spool::BadmailReason {
            reply: "550 5.1.1 No such user here".into(),
            attempts: 1,
        };
        spool
            .to_badmail(id, &["reject-joe@example.org".to_string()], &reason, true)
            .unwrap();
        id.to_string()
    };
    postfix.set_access("");
    let config = dir.path().join("outpost.toml");
    std::fs::write(
        &config,
        format!(
            "spool_dir = {spool_dir:?}\n{}\n[[account]]\nname = \"unused\"\nserver = \"127.0.0.1\"\ntls = \"implicit\"\nuser = \"u\"\npassword = \"p\"\ndeliver_to = \"x@example.org\"\n",
            postfix.local_section("")
        ),
    )
    .unwrap();
    let mut child = start_daemon(&config, &dir.path().join("outpost.log"));
    let socket = spool_dir.join("control.sock");
    for _ in 0..100 {
        if socket.exists() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let output = Command::new(env!("CARGO_BIN_EXE_spoolctl"))
        .args(["--config", config.to_str().unwrap(), "requeue", &id])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let delivered = postfix.wait_for(1);
    assert_eq!(
        (
            delivered[0].recipient.as_str(),
            delivered[0].return_path.as_str()
        ),
        ("reject-joe@example.org", "list@example.net")
    );
    signal(&child, libc::SIGTERM);
    assert!(child.wait().unwrap().success());
}
