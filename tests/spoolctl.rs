//! `spoolctl` as an administrator uses it, on a spool that no daemon owns.

mod support;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use spool::{BadmailReason, Spool, State, UidlSet};
use support::queue_message;

fn setup() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("outpost.toml");
    std::fs::write(
        &config,
        format!(
            "spool_dir = {:?}\n[schedule]\ncron = \"0 7 * * Mon-Fri\"\n\n[[account]]\nname = \"isp\"\nserver = \"127.0.0.1\"\nport = 1\ntls = \"implicit\"\nuser = \"u\"\npassword = \"p\"\ndeliver_to = \"x@example.org\"\n",
            dir.path().join("spool")
        ),
    )
    .unwrap();
    (dir, config)
}

fn spoolctl(config: &Path, args: &[&str], stdin: &str) -> (bool, String, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_spoolctl"))
        .arg("--config")
        .arg(config)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn rows(config: &Path, args: &[&str]) -> Vec<serde_json::Value> {
    let (ok, out, err) = spoolctl(config, &[&["--json", "list"], args].concat(), "");
    assert!(ok, "{err}");
    serde_json::from_str(&out).unwrap()
}

fn state_of(config: &Path, id: &str) -> String {
    rows(config, &[])
        .into_iter()
        .find(|r| r["id"] == id)
        .map(|r| r["state"].as_str().unwrap().to_string())
        .unwrap_or_default()
}

#[test]
fn list_show_hold_release_requeue_delete() {
    let (dir, config) = setup();
    let (queued, deferred, bad) = {
        let spool = Spool::open(dir.path().join("spool")).unwrap();
        let a = queue_message(
            &spool,
            "ann@example.net",
            &["bob@example.org"],
            b"Subject: first\r\n\r\nhello\r\n",
        );
        let b = queue_message(
            &spool,
            "",
            &["cat@example.org"],
            b"Subject: second\r\n\r\nworld\r\n",
        );
        spool
            .update(b, |e| {
                e.state = State::Deferred;
                e.attempts = 2;
                e.next_try = spool::now() + 3600;
                e.last_error = Some("<cat@example.org>: 450 4.2.0 Mailbox busy".into());
            })
            .unwrap();
        let c = queue_message(
            &spool,
            "dan@example.net",
            &["eve@example.org"],
            b"Subject: third\r\n\r\nrefused\r\n",
        );
        spool
            .to_badmail(
                c,
                &["eve@example.org".to_string()],
                &BadmailReason {
                    reply: "550 5.1.1 No such user".into(),
                    attempts: 1,
                },
                true,
            )
            .unwrap();
        (a.to_string(), b.to_string(), c.to_string())
    };

    let all = rows(&config, &[]);
    assert_eq!(all.len(), 3);
    let by_id = |id: &str| all.iter().find(|r| r["id"] == id).unwrap().clone();
    assert_eq!(by_id(&queued)["subject"], "first");
    assert_eq!(by_id(&deferred)["state"], "deferred");
    assert_eq!(by_id(&deferred)["attempts"], 2);
    assert_eq!(by_id(&bad)["state"], "badmail");
    assert!(by_id(&bad)["last_error"].as_str().unwrap().contains("550"));
    assert_eq!(rows(&config, &["--state", "deferred"]).len(), 1);

    let (ok, text, _) = spoolctl(&config, &["list"], "");
    assert!(
        ok && text.contains("3 message(s)") && text.contains("Mailbox busy"),
        "{text}"
    );
    let (ok, text, _) = spoolctl(&config, &["show", &queued, "--body"], "");
    assert!(
        ok && text.contains("sender:      ann@example.net")
            && text.ends_with("Subject: first\r\n\r\nhello\r\n"),
        "{text}"
    );

    assert!(spoolctl(&config, &["hold", &queued], "").0);
    assert_eq!(state_of(&config, &queued), "held");
    let (ok, _, err) = spoolctl(&config, &["hold", &queued], "");
    assert!(!ok && err.contains("is held"), "{err}");
    assert!(spoolctl(&config, &["release", &queued], "").0);
    assert_eq!(state_of(&config, &queued), "queued");

    assert!(spoolctl(&config, &["requeue", &deferred], "").0);
    let row = rows(&config, &[])
        .into_iter()
        .find(|r| r["id"] == deferred.as_str())
        .unwrap();
    assert_eq!(
        (row["state"].as_str(), row["next_try"].as_u64()),
        (Some("queued"), Some(0))
    );

    assert!(spoolctl(&config, &["requeue", &bad], "").0);
    assert!(
        dir.path().join(format!("spool/pickup/{bad}.eml")).exists(),
        "a badmail file goes back through pickup/"
    );

    let (ok, text, _) = spoolctl(&config, &["delete", &queued], "n\n");
    assert!(!ok && text.contains("not deleted"));
    assert_eq!(state_of(&config, &queued), "queued");
    assert!(spoolctl(&config, &["delete", &queued, "--yes"], "").0);
    assert_eq!(
        state_of(&config, &queued),
        "badmail",
        "kept in badmail, out of the queue"
    );
    let reason =
        std::fs::read_to_string(dir.path().join(format!("spool/badmail/{queued}.reason"))).unwrap();
    assert!(reason.contains("deleted by the administrator"));
}

#[test]
fn status_and_windows() {
    let (dir, config) = setup();
    {
        let spool = Spool::open(dir.path().join("spool")).unwrap();
        queue_message(
            &spool,
            "a@example.net",
            &["b@example.org"],
            b"Subject: s\r\n\r\nx\r\n",
        );
        spool
            .add_uidl(UidlSet::Oversized, "isp", "UID-BIG", 30_000_000)
            .unwrap();
        let mut record = spool.account_record("isp").unwrap();
        record.auth_failures = 2;
        record.last_error = Some((
            spool::now(),
            "authentication failed (user): bad password".into(),
        ));
        spool.set_account_record("isp", &record).unwrap();
        let mut window = spool::WindowRecord {
            started: spool::now(),
            online_seconds: 42.0,
            bytes_in: 1_500_000,
            cost: Some(1.25),
            ..Default::default()
        };
        window.messages.insert("isp".into(), 7);
        spool.record_window(&window).unwrap();
    }
    let (ok, out, err) = spoolctl(&config, &["--json", "status"], "");
    assert!(ok, "{err}");
    let status: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(status["queue"]["queued"], 1);
    assert_eq!(status["accounts"][0]["oversized"][0][0], "UID-BIG");
    assert!(
        status["accounts"][0]["next_window"].as_i64().is_some(),
        "a scheduled next window"
    );
    let (_, text, _) = spoolctl(&config, &["status"], "");
    assert!(
        text.contains("AUTHENTICATION FAILING for 2 window(s)")
            && text.contains("UID-BIG (30.0 MB)"),
        "{text}"
    );

    let (ok, out, _) = spoolctl(&config, &["--json", "windows", "--last", "5"], "");
    assert!(ok);
    let windows: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(windows[0]["messages"]["isp"], 7);
    let (_, text, _) = spoolctl(&config, &["windows"], "");
    assert!(
        text.contains("42.0s") && text.contains("1.5 MB") && text.contains("1.25"),
        "{text}"
    );
}

#[test]
fn a_spool_owned_by_another_process_without_a_socket_is_refused_clearly() {
    let (dir, config) = setup();
    let _owner = Spool::open(dir.path().join("spool")).unwrap();
    let (ok, _, err) = spoolctl(&config, &["list"], "");
    assert!(!ok && err.contains("in use by another process"), "{err}");
}

/// JSON output without the fields that change from one second to the next.
fn stable(json: &str) -> serde_json::Value {
    let mut value: serde_json::Value = serde_json::from_str(json).unwrap();
    if let Some(rows) = value.as_array_mut() {
        for row in rows {
            row.as_object_mut().unwrap().remove("age_seconds");
        }
    }
    value
}

#[test]
fn the_same_commands_through_a_running_daemon_give_the_same_output() {
    let (dir, config) = setup();
    let id = {
        let spool = Spool::open(dir.path().join("spool")).unwrap();
        queue_message(
            &spool,
            "ann@example.net",
            &["bob@example.org"],
            b"Subject: via the daemon\r\n\r\nhello\r\n",
        )
        .to_string()
    };
    // No local server listens on port 1: the deliverer waits, and the queue stays as it is.
    let text = std::fs::read_to_string(&config).unwrap().replace(
        "[schedule]",
        "[local]\nhost = \"127.0.0.1\"\nport = 1\n\n[schedule]",
    );
    std::fs::write(&config, text).unwrap();
    let direct: Vec<String> = [
        &["--json", "list"][..],
        &["--json", "status"],
        &["show", &id],
        &["windows"],
    ]
    .iter()
    .map(|args| spoolctl(&config, args, "").1)
    .collect();

    let mut daemon = Command::new(env!("CARGO_BIN_EXE_outpost"))
        .arg("--config")
        .arg(&config)
        .arg("run")
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let socket = dir.path().join("spool/control.sock");
    for _ in 0..100 {
        if socket.exists() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&socket).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let via: Vec<String> = [
        &["--json", "list"][..],
        &["--json", "status"],
        &["show", &id],
        &["windows"],
    ]
    .iter()
    .map(|args| {
        let (ok, out, err) = spoolctl(&config, args, "");
        assert!(ok, "{args:?}: {err}");
        out
    })
    .collect();
    assert_eq!(stable(&via[0]), stable(&direct[0]));
    assert_eq!(stable(&via[1]), stable(&direct[1]));
    assert_eq!(
        via[2].replace(|c: char| c.is_ascii_digit(), "#"),
        direct[2].replace(|c: char| c.is_ascii_digit(), "#")
    );
    assert_eq!(via[3], direct[3]);

    assert!(
        spoolctl(&config, &["hold", &id], "").0,
        "steering works through the daemon too"
    );
    assert_eq!(state_of(&config, &id), "held");
    let (ok, out, _) = spoolctl(&config, &["delete", &id], "y\n");
    assert!(ok && out.contains("deleted"), "{out}");
    assert_eq!(state_of(&config, &id), "badmail");

    // SAFETY: signalling our own child.
    unsafe { libc::kill(daemon.id() as libc::pid_t, libc::SIGTERM) };
    assert!(daemon.wait().unwrap().success());
    assert!(!socket.exists(), "the socket goes with the daemon");
}
