//! Delivery into a real Postfix: byte-exact, per-recipient outcomes, badmail, an outage.

mod support;

use std::path::Path;

use outpost::config::Config;
use outpost::deliver::{deliver_due, DeliveryReport};
use spool::{Spool, State};
use support::{queue_message, unix_line_ends, Postfix};

/// A configuration for the spool in `spool_dir` delivering to `postfix` (the account is required by
/// the configuration but not used here).
fn config(spool_dir: &Path, postfix: &Postfix, local_extra: &str, delivery: &str) -> Config {
    let text = format!(
        "spool_dir = {spool_dir:?}\ndefault_domain = \"example.org\"\n{}\n[delivery]\n{delivery}\n\n\
         [[account]]\nname = \"unused\"\nserver = \"127.0.0.1\"\ntls = \"implicit\"\nuser = \"u\"\npassword = \"p\"\n\
         deliver_to = \"x@example.org\"\n",
        postfix.local_section(local_extra)
    );
    Config::parse(&text, Path::new("/")).expect("valid test config")
}

/// A Postfix accepting messages up to `size_limit`, and where a spool goes.
fn setup(size_limit: u64) -> (Postfix, tempfile::TempDir, std::path::PathBuf) {
    let postfix = Postfix::start(size_limit);
    let dir = tempfile::tempdir().unwrap();
    let spool_dir = dir.path().join("spool");
    (postfix, dir, spool_dir)
}

async fn deliver(config: &Config) -> DeliveryReport {
    let spool = Spool::open(&config.spool_dir).unwrap();
    deliver_due(config, &spool).await.expect("a delivery pass")
}

fn message(id: usize, body: &str) -> Vec<u8> {
    format!("From: sender@example.net\r\nTo: list@example.org\r\nSubject: message {id}\r\nMessage-ID: <d{id}@example.net>\r\n\r\n{body}\r\n").into_bytes()
}

fn spool_with(dir: &Path, messages: &[(Vec<&str>, Vec<u8>)]) {
    let spool = Spool::open(dir).unwrap();
    for (recipients, bytes) in messages {
        queue_message(&spool, "sender@example.net", recipients, bytes);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_thousand_messages_arrive_byte_exact() {
    let (postfix, _dir, spool_dir) = setup(10_240_000);
    let mut originals = std::collections::HashMap::new();
    {
        let spool = Spool::open(&spool_dir).unwrap();
        for i in 0..1000 {
            let bytes = message(
                i,
                &format!(
                    "line one of {i}\r\n.a line that starts with a dot\r\n{}",
                    "text\r\n".repeat(i % 50)
                ),
            );
            let rcpt = format!("user{}@example.org", i % 10);
            queue_message(&spool, "sender@example.net", &[&rcpt], &bytes);
            originals.insert(format!("message {i}"), (rcpt, bytes));
        }
    }
    let report = deliver(&config(&spool_dir, &postfix, "", "")).await;
    assert_eq!(
        (report.delivered, report.badmail, report.deferred),
        (1000, 0, 0),
        "{report:?}"
    );
    assert!(report.outage.is_none());
    let delivered = postfix.wait_for(1000);
    assert_eq!(delivered.len(), 1000);
    for copy in &delivered {
        let subject = String::from_utf8_lossy(&copy.message)
            .lines()
            .find_map(|l| l.strip_prefix("Subject: ").map(str::to_string))
            .unwrap();
        let (rcpt, original) = &originals[&subject];
        assert_eq!(&copy.recipient, rcpt);
        assert_eq!(copy.return_path, "sender@example.net");
        assert_eq!(
            copy.message,
            unix_line_ends(original),
            "{subject} changed on the way"
        );
    }
    assert!(
        Spool::open(&spool_dir).unwrap().list().unwrap().is_empty(),
        "the queue is empty"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_450_recipient_is_retried_and_the_others_get_the_message_once() {
    let (postfix, _dir, spool_dir) = setup(10_240_000);
    spool_with(
        &spool_dir,
        &[(
            vec![
                "ann@example.org",
                "defer-bob@example.org",
                "cat@example.org",
            ],
            message(1, "hello"),
        )],
    );
    let config = config(&spool_dir, &postfix, "", "retry = [\"1s\"]");

    let first = deliver(&config).await;
    assert_eq!(
        (first.delivered, first.deferred, first.recipients),
        (0, 1, 2),
        "{first:?}"
    );
    {
        let spool = Spool::open(&spool_dir).unwrap();
        let (_, entry) = spool.list().unwrap().remove(0);
        assert_eq!(entry.state, State::Deferred);
        assert_eq!(
            entry.envelope.recipients,
            ["defer-bob@example.org"],
            "only the refused recipient remains"
        );
        assert!(entry.last_error.unwrap().contains("450"));
    }
    // Not due yet: nothing happens.
    assert_eq!(deliver(&config).await.deferred, 0);
    postfix.set_access("");
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let second = deliver(&config).await;
    assert_eq!((second.delivered, second.recipients), (1, 1), "{second:?}");
    let copies = postfix.wait_for(3);
    std::thread::sleep(std::time::Duration::from_millis(500));
    let mut recipients: Vec<_> = postfix
        .delivered()
        .into_iter()
        .map(|c| c.recipient)
        .collect();
    recipients.sort();
    assert_eq!(copies.len(), 3);
    assert_eq!(
        recipients,
        [
            "ann@example.org",
            "cat@example.org",
            "defer-bob@example.org"
        ],
        "each exactly once"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_550_recipient_goes_to_badmail_and_the_others_are_delivered() {
    let (postfix, _dir, spool_dir) = setup(10_240_000);
    let original = message(2, "for two");
    spool_with(
        &spool_dir,
        &[(
            vec!["ann@example.org", "reject-zed@example.org"],
            original.clone(),
        )],
    );
    let report = deliver(&config(&spool_dir, &postfix, "", "")).await;
    assert_eq!(
        (report.delivered, report.badmail, report.recipients),
        (0, 1, 1),
        "{report:?}"
    );
    assert_eq!(postfix.wait_for(1)[0].recipient, "ann@example.org");

    let spool = Spool::open(&spool_dir).unwrap();
    assert!(
        spool.list().unwrap().is_empty(),
        "nothing left to do: the message left the queue"
    );
    let badmail: Vec<_> = std::fs::read_dir(spool.badmail_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    let eml = badmail
        .iter()
        .find(|p| p.extension().is_some_and(|e| e == "eml"))
        .expect("a badmail file");
    let reason = std::fs::read_to_string(eml.with_extension("reason")).unwrap();
    assert!(
        reason.contains("550") && reason.contains("No such user"),
        "{reason}"
    );
    let mut expected =
        b"X-Sender: sender@example.net\r\nX-Receiver: reject-zed@example.org\r\n".to_vec();
    expected.extend_from_slice(&original);
    assert_eq!(
        std::fs::read(eml).unwrap(),
        expected,
        "replay lines, then the message as received"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_message_over_the_servers_size_goes_to_badmail_unsent() {
    let (postfix, _dir, spool_dir) = setup(50_000);
    spool_with(
        &spool_dir,
        &[
            (vec!["ann@example.org"], message(3, &"x".repeat(100_000))),
            (vec!["ann@example.org"], message(4, "small")),
        ],
    );
    let report = deliver(&config(&spool_dir, &postfix, "", "")).await;
    assert_eq!((report.delivered, report.badmail), (1, 1), "{report:?}");
    let spool = Spool::open(&spool_dir).unwrap();
    assert_eq!(
        spool.local_size_limit().unwrap(),
        Some(50_000),
        "remembered for the fetcher"
    );
    let reason = support::badmail_reason(&spool);
    assert!(
        reason.contains("not sent") && reason.contains("100") && reason.contains("50000"),
        "{reason}"
    );
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert_eq!(
        postfix.wait_for(1).len(),
        1,
        "only the small one reached Postfix"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_outage_waits_and_sends_nothing_to_badmail() {
    let (postfix, _dir, spool_dir) = setup(10_240_000);
    let messages: Vec<_> = (0..100)
        .map(|i| (vec!["ann@example.org"], message(i, "during an outage")))
        .collect();
    spool_with(&spool_dir, &messages);
    let config = config(&spool_dir, &postfix, "", "give_up_after = \"1s\"");
    postfix.stop();

    let down = deliver(&config).await;
    assert!(down.outage.is_some(), "{down:?}");
    assert_eq!((down.delivered, down.badmail, down.deferred), (0, 0, 0));
    {
        let spool = Spool::open(&spool_dir).unwrap();
        let entries = spool.list().unwrap();
        assert_eq!(entries.len(), 100);
        assert!(
            entries
                .iter()
                .all(|(_, e)| e.attempts == 0 && e.state == State::Queued),
            "an outage counts no attempt"
        );
    }
    std::thread::sleep(std::time::Duration::from_millis(1100));
    postfix.start_again(10_240_000);
    let up = deliver(&config).await;
    assert_eq!((up.delivered, up.badmail), (100, 0), "{up:?}");
    assert_eq!(postfix.wait_for(100).len(), 100);
}

#[tokio::test(flavor = "multi_thread")]
async fn starttls_with_the_sites_own_ca() {
    let (postfix, _dir, spool_dir) = setup(10_240_000);
    spool_with(
        &spool_dir,
        &[(vec!["ann@example.org"], message(5, "over TLS"))],
    );
    let tls = format!("tls = \"starttls\"\nca_file = {:?}", postfix.ca_file());
    // Postfix's certificate names localhost and 127.0.0.1.
    let report = deliver(&config(&spool_dir, &postfix, &tls, "")).await;
    assert_eq!(report.delivered, 1, "{report:?}");
    let received = postfix.wait_for(1);
    assert!(
        String::from_utf8_lossy(&std::fs::read(postfix.dir.path().join("maillog")).unwrap())
            .contains("TLS connection established")
    );
    assert_eq!(received[0].recipient, "ann@example.org");

    // Without the CA the certificate is not trusted, and nothing is sent.
    spool_with(
        &spool_dir,
        &[(vec!["ann@example.org"], message(6, "refused"))],
    );
    let report = deliver(&config(&spool_dir, &postfix, "tls = \"starttls\"", "")).await;
    assert!(
        report.outage.as_deref().is_some_and(|e| e.contains("TLS")),
        "{report:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn awkward_data_arrives_intact() {
    let (postfix, _dir, spool_dir) = setup(10_240_000);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("bare-lf", b"Subject: bare lf\nMessage-ID: <lf@x>\n\nline\nline\n".to_vec()),
        ("lone-dot", b"Subject: lone dot\r\nMessage-ID: <dot@x>\r\n\r\nbefore\r\n.\r\nafter\r\n".to_vec()),
        ("no-final-crlf", b"Subject: unterminated\r\nMessage-ID: <nocrlf@x>\r\n\r\nno newline at the end".to_vec()),
        ("eight-bit", "Subject: =?UTF-8?Q?Gr=C3=BC=C3=9Fe?=\r\nX-Raw: Grüße aus Köln\r\nMessage-ID: <8bit@x>\r\n\r\nÄÖÜ äöü ß €\r\n".as_bytes().to_vec()),
        ("nul", b"Subject: nul\r\nMessage-ID: <nul@x>\r\n\r\na\0b\r\n".to_vec()),
    ];
    let messages: Vec<_> = cases
        .iter()
        .map(|(name, bytes)| {
            (
                vec![match *name {
                    "bare-lf" => "lf@example.org",
                    "lone-dot" => "dot@example.org",
                    "no-final-crlf" => "end@example.org",
                    "eight-bit" => "utf8@example.org",
                    _ => "nul@example.org",
                }],
                bytes.clone(),
            )
        })
        .collect();
    spool_with(&spool_dir, &messages);
    let report = deliver(&config(&spool_dir, &postfix, "", "")).await;
    assert_eq!(
        (report.delivered, report.badmail, report.deferred),
        (5, 0, 0),
        "{report:?}"
    );
    let delivered = postfix.wait_for(5);
    let get = |rcpt: &str| {
        delivered
            .iter()
            .find(|d| d.recipient == rcpt)
            .unwrap()
            .message
            .clone()
    };
    assert_eq!(
        get("lf@example.org"),
        b"Subject: bare lf\nMessage-ID: <lf@x>\n\nline\nline\n"
    );
    assert_eq!(
        get("dot@example.org"),
        b"Subject: lone dot\nMessage-ID: <dot@x>\n\nbefore\n.\nafter\n"
    );
    assert_eq!(
        get("end@example.org"),
        b"Subject: unterminated\nMessage-ID: <nocrlf@x>\n\nno newline at the end\n"
    );
    assert_eq!(get("utf8@example.org"), unix_line_ends(&messages[3].1));
    let nul = get("nul@example.org");
    assert!(nul.starts_with(b"Subject: nul\n"), "{nul:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_message_deferred_past_the_give_up_age_goes_to_badmail() {
    let (postfix, _dir, spool_dir) = setup(10_240_000);
    spool_with(
        &spool_dir,
        &[(
            vec!["defer-forever@example.org"],
            message(7, "never accepted"),
        )],
    );
    let config = config(
        &spool_dir,
        &postfix,
        "",
        "retry = [\"1s\"]\ngive_up_after = \"2s\"",
    );
    let first = deliver(&config).await;
    assert_eq!((first.deferred, first.badmail), (1, 0), "{first:?}");
    std::thread::sleep(std::time::Duration::from_millis(2100));
    let second = deliver(&config).await;
    assert_eq!((second.deferred, second.badmail), (0, 1), "{second:?}");
    let spool = Spool::open(&spool_dir).unwrap();
    assert!(spool.list().unwrap().is_empty());
    let reason = support::badmail_reason(&spool);
    assert!(
        reason.contains("gave up after 2s")
            && reason.contains("450")
            && reason.contains("Attempts: 2"),
        "{reason}"
    );
}
