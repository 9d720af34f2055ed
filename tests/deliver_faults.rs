//! A local server that misbehaves: 421 in the middle of a session, a hang on a poison message,
//! Exchange's MaxProtocolErrors. Whatever it does, the rest of the queue flows and nothing is lost.

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use outpost::config::Config;
use outpost::deliver::{deliver_due, DeliveryReport};
use spool::Spool;
use support::queue_message;
use support::scripted_smtp::{ScriptedSmtp, SmtpFault};

fn config(spool_dir: &Path, local: &str, delivery: &str) -> Config {
    let text = format!(
        "spool_dir = {spool_dir:?}\ndefault_domain = \"example.org\"\n{local}\n[delivery]\n{delivery}\n\n\
         [[account]]\nname = \"unused\"\nserver = \"127.0.0.1\"\ntls = \"implicit\"\nuser = \"u\"\npassword = \"p\"\n\
         deliver_to = \"x@example.org\"\n"
    );
    Config::parse(&text, Path::new("/")).expect("valid test config")
}

async fn deliver(config: &Config) -> DeliveryReport {
    let spool = Spool::open(&config.spool_dir).unwrap();
    deliver_due(config, &spool).await.expect("a delivery pass")
}

/// Makes every deferred message due now.
fn make_due(spool_dir: &Path) {
    let spool = Spool::open(spool_dir).unwrap();
    for (id, _) in spool.list().unwrap() {
        spool.update(id, |e| e.next_try = 0).unwrap();
    }
}

fn message(i: usize, extra: &str) -> Vec<u8> {
    format!("From: a@example.net\r\nSubject: m{i}\r\nMessage-ID: <m{i}@example.net>\r\n\r\nbody {i} {extra}\r\n").into_bytes()
}

fn subjects(server: &ScriptedSmtp) -> Vec<String> {
    let mut got: Vec<String> = server
        .received()
        .iter()
        .map(|(_, _, data)| {
            String::from_utf8_lossy(data)
                .lines()
                .find_map(|l| l.strip_prefix("Subject: ").map(str::to_string))
                .unwrap()
        })
        .collect();
    got.sort();
    got
}

#[tokio::test]
async fn a_421_in_the_middle_of_a_session_defers_one_message_and_the_rest_flows() {
    let server = ScriptedSmtp::start().await;
    server.add_fault(SmtpFault::Close421AtMail { n: 3 });
    let dir = tempfile::tempdir().unwrap();
    let spool_dir = dir.path().join("spool");
    {
        let spool = Spool::open(&spool_dir).unwrap();
        for i in 0..6 {
            queue_message(&spool, "a@example.net", &["b@example.org"], &message(i, ""));
        }
    }
    let config = config(&spool_dir, &server.local_section("5s"), "sessions = 1");
    let first = deliver(&config).await;
    assert_eq!(
        (first.delivered, first.deferred, first.badmail),
        (5, 1, 0),
        "{first:?}"
    );
    make_due(&spool_dir);
    let second = deliver(&config).await;
    assert_eq!(second.delivered, 1, "{second:?}");
    assert_eq!(
        subjects(&server),
        ["m0", "m1", "m2", "m3", "m4", "m5"],
        "each exactly once"
    );
}

#[tokio::test]
async fn a_poison_message_is_isolated_then_sent_to_badmail_and_the_rest_flows() {
    let server = ScriptedSmtp::start().await;
    server.add_fault(SmtpFault::HangOnDataWith("POISON".into()));
    let dir = tempfile::tempdir().unwrap();
    let spool_dir = dir.path().join("spool");
    {
        let spool = Spool::open(&spool_dir).unwrap();
        queue_message(
            &spool,
            "a@example.net",
            &["b@example.org"],
            &message(0, "POISON"),
        );
        for i in 1..=5 {
            queue_message(&spool, "a@example.net", &["b@example.org"], &message(i, ""));
        }
    }
    let config = config(
        &spool_dir,
        &server.local_section("1s"),
        "sessions = 1\npoison_limit = 3",
    );
    let started = Instant::now();
    let first = deliver(&config).await;
    assert_eq!((first.delivered, first.deferred), (5, 1), "{first:?}");
    assert_eq!(
        subjects(&server).len(),
        5,
        "everything behind the poison message went through"
    );
    let sessions_before = server.state.lock().unwrap().sessions;
    for _ in 0..2 {
        make_due(&spool_dir);
        deliver(&config).await;
    }
    assert!(started.elapsed() < Duration::from_secs(20));
    // Tried alone: each later attempt had a session of its own.
    assert_eq!(server.state.lock().unwrap().sessions - sessions_before, 2);
    let spool = Spool::open(&spool_dir).unwrap();
    assert!(
        spool.list().unwrap().is_empty(),
        "the poison message left the queue"
    );
    let reason = support::badmail_reason(&spool);
    assert!(reason.contains("dropped the session 3 times"), "{reason}");
}

#[tokio::test]
async fn garbage_return_paths_never_reach_the_server_as_protocol_errors() {
    // The SBS connector stalled for ever behind five such messages on an Exchange that drops the
    // session after five protocol errors.
    let server = ScriptedSmtp::start().await;
    let dir = tempfile::tempdir().unwrap();
    let spool_dir = dir.path().join("spool");
    let garbage = [
        "<<>>",
        "<not an address>",
        "<@@>",
        "<a@b> RCPT TO:<victim@example.com>",
        "<root@>",
    ];
    {
        let spool = Spool::open(&spool_dir).unwrap();
        for (i, path) in garbage.iter().enumerate() {
            let bytes = format!("Return-Path: {path}\r\nFrom: \"Broken\" <{path}>\r\nSubject: g{i}\r\n\r\nbad headers\r\n").into_bytes();
            // As the fetcher would: the envelope comes from the headers.
            let origin = spool::Origin {
                account: "isp".into(),
                uidl: None,
                arrived: spool::now(),
            };
            let mut writer = spool
                .writer(origin, |headers| spool::Envelope {
                    sender: outpost::envelope::sender_from_headers(headers, Some("example.org")),
                    recipients: vec!["office@example.org".into()],
                })
                .unwrap();
            writer.write(&bytes).unwrap();
            let spooled = writer.finish().unwrap();
            spool.commit(&[spooled]).unwrap();
        }
        for i in 0..20 {
            queue_message(&spool, "a@example.net", &["b@example.org"], &message(i, ""));
        }
    }
    let report = deliver(&config(&spool_dir, &server.local_section("5s"), "")).await;
    assert_eq!(
        (report.delivered, report.deferred, report.badmail),
        (25, 0, 0),
        "{report:?}"
    );
    assert_eq!(server.state.lock().unwrap().protocol_errors, 0);
    // Each became the null sender or a plain address found further down (Sender, From).
    let senders: Vec<String> = server
        .received()
        .into_iter()
        .take(5)
        .map(|(s, _, _)| s)
        .collect();
    assert!(
        senders
            .iter()
            .all(|s| s.is_empty() || outpost::envelope::is_valid_address(s)),
        "{senders:?}"
    );
}

#[tokio::test]
async fn eight_bit_mail_says_so_when_it_may_and_is_delivered_as_received_when_it_may_not() {
    for offered in [true, false] {
        let server = ScriptedSmtp::start_with(offered).await;
        let dir = tempfile::tempdir().unwrap();
        let spool_dir = dir.path().join("spool");
        let bytes = "Subject: Grüße\r\n\r\nÄÖÜ\r\n".as_bytes();
        queue_message(
            &Spool::open(&spool_dir).unwrap(),
            "a@example.net",
            &["b@example.org"],
            bytes,
        );
        let report = deliver(&config(&spool_dir, &server.local_section("5s"), "")).await;
        assert_eq!(report.delivered, 1, "{report:?}");
        let mail = server.state.lock().unwrap().mail_commands[0].clone();
        assert_eq!(mail.contains("BODY=8BITMIME"), offered, "{mail}");
        assert!(mail.contains(&format!("SIZE={}", bytes.len())), "{mail}");
        assert_eq!(server.received()[0].2, bytes);
    }
}
