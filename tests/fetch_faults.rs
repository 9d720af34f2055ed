//! A POP3 server that misbehaves: whatever it does, nothing is lost, nothing is deleted that was
//! not spooled, and nothing is fetched twice on the next run.

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use outpost::fetch::{FetchError, WindowReport};
use outpost::net::NetError;
use outpost::pop3::Pop3Error;
use spool::Spool;
use support::scripted::{Fault, Options, ScriptedPop3};
use support::{fetch_once, message, spooled_ids};

fn messages(n: usize) -> Vec<Vec<u8>> {
    (1..=n)
        .map(|i| {
            message(
                &format!("m{i}"),
                &format!("body of message {i}\r\n.a line with a dot\r\n"),
            )
        })
        .collect()
}

/// Every message of `n` is in the spool exactly once, and the spool's temporary folder is empty.
fn assert_spooled_once(spool_dir: &Path, n: usize) {
    let ids = spooled_ids(spool_dir);
    for i in 1..=n {
        assert_eq!(
            ids.get(&format!("m{i}")),
            Some(&1),
            "message m{i} in {ids:?}"
        );
    }
    assert_eq!(ids.len(), n, "{ids:?}");
    assert_eq!(
        std::fs::read_dir(spool_dir.join("tmp")).unwrap().count(),
        0,
        "partial files left in tmp/"
    );
}

struct Case {
    server: ScriptedPop3,
    dir: tempfile::TempDir,
    config: String,
}

impl Case {
    async fn new(options: Options, n: usize, extra: &str) -> Case {
        let server = ScriptedPop3::start(options, messages(n)).await;
        let dir = tempfile::tempdir().unwrap();
        let config =
            support::config_text(&dir.path().join("spool"), &[server.account("isp", extra)]);
        Case {
            server,
            dir,
            config,
        }
    }
    fn spool_dir(&self) -> std::path::PathBuf {
        self.dir.path().join("spool")
    }
    async fn fetch(&self) -> WindowReport {
        fetch_once(&self.config).await
    }
}

#[tokio::test]
async fn a_connection_cut_in_the_middle_of_a_message_loses_nothing() {
    for pipelining in [true, false] {
        let case = Case::new(
            Options {
                pipelining,
                ..Default::default()
            },
            5,
            "",
        )
        .await;
        case.server.add_fault(Fault::CutInRetr { n: 3, after: 40 });

        let first = case.fetch().await;
        assert!(
            matches!(
                first.accounts[0].error,
                Some(FetchError::Pop3(Pop3Error::Net(NetError::Closed(_))))
            ),
            "{first:?}"
        );
        assert_eq!(
            case.server.remaining(),
            5,
            "no QUIT, so the server deleted nothing"
        );
        assert_eq!(
            first.accounts[0].fetched, 2,
            "the two whole messages before the cut are kept"
        );
        assert_spooled_once(&case.spool_dir().clone(), 2);

        let second = case.fetch().await;
        assert!(second.accounts[0].error.is_none(), "{second:?}");
        assert_eq!(second.accounts[0].fetched, 3);
        assert_eq!(second.accounts[0].deleted, 5);
        assert_eq!(case.server.remaining(), 0);
        assert_spooled_once(&case.spool_dir(), 5);
        let retrieved = case.server.retrieved();
        assert_eq!(
            retrieved.len(),
            5,
            "nothing downloaded twice: {retrieved:?}"
        );
    }
}

#[tokio::test]
async fn a_cut_after_dele_before_quit_deletes_on_the_next_run_without_downloading() {
    let case = Case::new(Options::default(), 5, "").await;
    case.server.add_fault(Fault::CutAfterDele);

    let first = case.fetch().await;
    assert!(first.accounts[0].error.is_some());
    assert_eq!(first.accounts[0].fetched, 5);
    assert_eq!(
        case.server.remaining(),
        5,
        "DELE without QUIT deletes nothing"
    );

    let second = case.fetch().await;
    assert!(second.accounts[0].error.is_none(), "{second:?}");
    assert_eq!(
        (second.accounts[0].fetched, second.accounts[0].deleted),
        (0, 5)
    );
    assert_eq!(case.server.remaining(), 0);
    assert_eq!(
        case.server.retrieved().len(),
        5,
        "seen messages are deleted, not downloaded again"
    );
    assert_spooled_once(&case.spool_dir(), 5);
}

#[tokio::test]
async fn gibberish_and_endless_lines_are_clear_errors() {
    let case = Case::new(Options::default(), 2, "").await;
    case.server.add_fault(Fault::GibberishGreeting);
    let report = case.fetch().await;
    let error = report.accounts[0]
        .error
        .as_ref()
        .expect("an error")
        .to_string();
    assert!(
        error.contains("protocol error") && error.contains("HTTP/1.1"),
        "{error}"
    );

    case.server.add_fault(Fault::EndlessLine);
    let report = case.fetch().await;
    let error = report.accounts[0]
        .error
        .as_ref()
        .expect("an error")
        .to_string();
    assert!(error.contains("longer than"), "{error}");
    assert_eq!(case.server.remaining(), 2);
    assert_spooled_once(&case.spool_dir(), 0);

    let report = case.fetch().await;
    assert!(!report.failed());
    assert_spooled_once(&case.spool_dir(), 2);
}

#[tokio::test]
async fn a_refused_retr_leaves_that_message_on_the_server_and_fetches_the_rest() {
    let case = Case::new(Options::default(), 4, "").await;
    case.server.add_fault(Fault::ErrOnRetr { n: 2 });
    let report = case.fetch().await;
    let account = &report.accounts[0];
    assert!(account.error.is_none());
    assert_eq!(account.message_errors.len(), 1, "{account:?}");
    assert!(
        report.failed(),
        "a message left behind makes the window report a failure"
    );
    assert_eq!((account.fetched, account.deleted), (3, 3));
    assert_eq!(case.server.remaining(), 1);

    let report = case.fetch().await;
    assert!(!report.failed());
    assert_spooled_once(&case.spool_dir(), 4);
    assert_eq!(case.server.remaining(), 0);
}

#[tokio::test]
async fn a_server_that_stops_talking_times_out() {
    for command in ["RETR", "UIDL", "QUIT"] {
        let case = Case::new(Options::default(), 3, "").await;
        case.server.add_fault(Fault::StallOn(command));
        let started = Instant::now();
        let report = case.fetch().await;
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{command}: took {:?}",
            started.elapsed()
        );
        let error = report.accounts[0].error.as_ref().expect("an error");
        assert!(
            matches!(
                error,
                FetchError::Pop3(Pop3Error::Net(NetError::Timeout(..)))
            ),
            "{command}: {error}"
        );
        // Whatever was spooled stays; nothing was deleted without QUIT.
        assert_eq!(case.server.remaining(), 3, "{command}");

        let report = case.fetch().await;
        assert!(!report.failed(), "{command}: {report:?}");
        assert_spooled_once(&case.spool_dir(), 3);
        assert_eq!(
            case.server.retrieved().len(),
            3,
            "{command}: nothing fetched twice"
        );
    }
}

#[tokio::test]
async fn one_failing_account_does_not_stop_the_others() {
    let good = ScriptedPop3::start(Options::default(), messages(3)).await;
    let bad = ScriptedPop3::start(Options::default(), messages(1)).await;
    bad.add_fault(Fault::GibberishGreeting);
    let dir = tempfile::tempdir().unwrap();
    let text = support::config_text(
        &dir.path().join("spool"),
        &[good.account("good", ""), bad.account("bad", "")],
    );
    let report = fetch_once(&text).await;
    assert!(report.accounts[0].error.is_none());
    assert!(report.accounts[1].error.is_some());
    assert_eq!(report.fetched(), 3);
    assert_eq!(good.remaining(), 0);
}

#[tokio::test]
async fn a_wrong_password_is_an_authentication_failure() {
    let case = Case::new(
        Options {
            password: "changed".into(),
            ..Default::default()
        },
        1,
        "",
    )
    .await;
    let report = case.fetch().await;
    let error = report.accounts[0].error.as_ref().unwrap();
    assert!(error.is_auth_failure(), "{error}");
    assert!(outpost::progress::summary(&report).contains("AUTHENTICATION FAILED"));
}

#[tokio::test]
async fn ntlm_logs_in_with_a_valid_ntlmv2_answer() {
    let case = Case::new(
        Options {
            ntlm: true,
            ..Default::default()
        },
        2,
        "auth = \"ntlm\"",
    )
    .await;
    let report = case.fetch().await;
    assert!(!report.failed(), "{report:?}");
    assert_spooled_once(&case.spool_dir(), 2);

    let wrong = Case::new(
        Options {
            ntlm: true,
            password: "other".into(),
            ..Default::default()
        },
        1,
        "auth = \"ntlm\"",
    )
    .await;
    let report = wrong.fetch().await;
    assert!(report.accounts[0].error.as_ref().unwrap().is_auth_failure());
}

#[tokio::test]
async fn oversized_messages_stay_on_the_server_and_are_reported_once() {
    let server = ScriptedPop3::start(
        Options::default(),
        vec![message("small", "x"), message("big", &"y".repeat(5000))],
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let text = support::config_text(
        &dir.path().join("spool"),
        &[server.account("isp", "max_message_size = \"1KB\"")],
    );
    let first = fetch_once(&text).await;
    assert_eq!(first.accounts[0].new_oversized, 1);
    assert_eq!(first.accounts[0].oversized.len(), 1);
    assert!(outpost::progress::summary(&first).contains("too large"));
    assert_eq!(server.remaining(), 1);
    let second = fetch_once(&text).await;
    assert_eq!(
        second.accounts[0].new_oversized, 0,
        "reported as new only once"
    );
    assert_eq!(
        second.accounts[0].oversized.len(),
        1,
        "still listed as waiting"
    );
    assert_eq!(server.remaining(), 1);
}

#[tokio::test]
async fn lock_step_without_pipelining_sends_one_command_at_a_time() {
    let case = Case::new(
        Options {
            pipelining: false,
            ..Default::default()
        },
        3,
        "",
    )
    .await;
    let report = case.fetch().await;
    assert!(!report.failed(), "{report:?}");
    assert_spooled_once(&case.spool_dir(), 3);
    assert_eq!(case.server.remaining(), 0);
    assert!(
        !case.server.saw_pipelining(),
        "a command was sent before the previous answer"
    );

    let pipelined = Case::new(Options::default(), 3, "").await;
    assert!(!pipelined.fetch().await.failed());
    assert!(
        pipelined.server.saw_pipelining(),
        "PIPELINING offered but not used"
    );
}

#[tokio::test]
async fn messages_are_stored_exactly_as_received() {
    let tricky: Vec<Vec<u8>> = vec![
        b"Subject: dots\r\nMessage-ID: <d1@x>\r\n\r\n.\r\n..\r\n.leading\r\nend".to_vec(),
        b"Subject: bare lf\nMessage-ID: <d2@x>\n\nline\nline\n".to_vec(),
        b"Subject: nul\r\nMessage-ID: <d3@x>\r\n\r\na\0b\r\n".to_vec(),
        b"Subject: =?UTF-8?Q?caf=C3=A9?=\r\nMessage-ID: <d4@x>\r\n\r\n\xc3\xa9t\xc3\xa9\r\n"
            .to_vec(),
    ];
    let server = ScriptedPop3::start(Options::default(), tricky.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let spool_dir = dir.path().join("spool");
    let report = fetch_once(&support::config_text(
        &spool_dir,
        &[server.account("isp", "")],
    ))
    .await;
    assert!(!report.failed());
    let mut stored: Vec<Vec<u8>> = std::fs::read_dir(spool_dir.join("queue"))
        .unwrap()
        .map(|e| support::spooled_message(&e.unwrap().path()))
        .collect();
    stored.sort_by_key(|m| support::message_id(m));
    // The scripted server ends an unterminated last line with CRLF, as POP3 requires.
    let mut expected = tricky.clone();
    expected[0].extend_from_slice(b"\r\n");
    assert_eq!(stored, expected);
}

#[tokio::test]
async fn login_delay_is_respected() {
    let case = Case::new(
        Options {
            login_delay: Some(900),
            ..Default::default()
        },
        1,
        "",
    )
    .await;
    assert!(!case.fetch().await.failed());
    let second = case.fetch().await;
    let skipped = second.accounts[0].skipped.as_deref().expect("skipped");
    assert!(skipped.contains("LOGIN-DELAY"), "{skipped}");
    assert_eq!(
        case.server.state.lock().unwrap().sessions,
        1,
        "not even a connection within the delay"
    );
}

#[tokio::test]
async fn data_injected_before_stls_completes_is_refused() {
    let case = Case::new(
        Options {
            stls_injection: true,
            ..Default::default()
        },
        1,
        "",
    )
    .await;
    let text = case.config.replace("tls = \"none\"", "tls = \"starttls\"");
    let report = fetch_once(&text).await;
    let error = report.accounts[0].error.as_ref().expect("refused");
    assert!(
        matches!(error, FetchError::Pop3(Pop3Error::StartTlsInjection)),
        "{error}"
    );
    assert!(
        !case
            .server
            .commands()
            .iter()
            .any(|c| c.starts_with("USER") || c.starts_with("PASS")),
        "no credentials after the attack"
    );
}

#[tokio::test]
async fn protocol_traces_never_show_the_password() {
    let case = Case::new(Options::default(), 1, "auth = \"user\"").await;
    let config = case.dir.path().join("outpost.toml");
    std::fs::write(&config, &case.config).unwrap();
    let output = tokio::task::spawn_blocking(move || {
        support::outpost(&["-v", "--config", config.to_str().unwrap(), "fetch"])
    })
    .await
    .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(stderr.contains("C: PASS [redacted]"), "{stderr}");
    assert!(stderr.contains("C: RETR 1"), "{stderr}");
    assert!(!stderr.contains("secret"), "the password leaked:\n{stderr}");
}

#[tokio::test]
async fn seen_marks_are_forgotten_once_the_server_stops_listing_them() {
    let case = Case::new(Options::default(), 3, "keep = true").await;
    assert_eq!(case.fetch().await.fetched(), 3);
    let seen = |dir: &Path| {
        Spool::open(dir)
            .unwrap()
            .uidls(spool::UidlSet::Seen, "isp")
            .unwrap()
            .len()
    };
    assert_eq!(seen(&case.spool_dir()), 3);
    // Someone deletes a message at the provider (webmail, another client).
    case.server.state.lock().unwrap().mailbox.remove(0);
    let report = case.fetch().await;
    assert_eq!(report.fetched(), 0, "kept messages are not fetched again");
    assert_eq!(
        seen(&case.spool_dir()),
        2,
        "the mark of the vanished message is gone"
    );
}

#[tokio::test]
async fn the_local_servers_size_limit_applies_to_fetching_too() {
    let server = ScriptedPop3::start(
        Options::default(),
        vec![
            message("fits", "x"),
            message("too-big-for-exchange", &"y".repeat(5000)),
        ],
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let spool_dir = dir.path().join("spool");
    Spool::open(&spool_dir)
        .unwrap()
        .set_local_size_limit(Some(2000))
        .unwrap();
    let report = fetch_once(&support::config_text(
        &spool_dir,
        &[server.account("isp", "max_message_size = \"1MB\"")],
    ))
    .await;
    assert_eq!(report.fetched(), 1);
    assert_eq!(
        report.accounts[0].oversized.len(),
        1,
        "the smaller of the two limits applies"
    );
    assert_eq!(server.remaining(), 1, "left on the server, not deleted");
}
