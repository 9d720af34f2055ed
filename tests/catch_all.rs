//! A catch-all mailbox end to end: one provider mailbox for the whole domain (Dovecot), ten local
//! users (Postfix). Each user gets exactly the right messages, once; the Bcc ones go to the
//! fallback with the reason; copies dropped twice are delivered once; a loop goes to badmail.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use outpost::config::Config;
use spool::Spool;
use support::{fetch_once, Dovecot, Postfix};

fn copy(delivered_to: Option<&str>, to: &str, subject: &str, id: &str, extra: &str) -> Vec<u8> {
    let mut text = String::new();
    if let Some(rcpt) = delivered_to {
        text.push_str(&format!("Delivered-To: {rcpt}\r\n"));
    }
    text.push_str(&format!(
        "{extra}Received: from mx.provider.example by pop.provider.example\r\nFrom: sender@else.example\r\nTo: {to}\r\nSubject: {subject}\r\nMessage-ID: <{id}@else.example>\r\n\r\nbody of {subject}\r\n"
    ));
    text.into_bytes()
}

#[tokio::test(flavor = "multi_thread")]
async fn one_provider_mailbox_for_ten_local_users() {
    let dovecot = Dovecot::start(&[("catchall", "pw")]);
    let postfix = Postfix::start(10_240_000);
    let mut expected: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let user = |i: usize| format!("u{}@example.org", i % 10);
    let mut copies = 0;
    for i in 0..120 {
        let subject = format!("single {i}");
        dovecot.deliver(
            "catchall",
            &copy(Some(&user(i)), &user(i), &subject, &format!("s{i}"), ""),
        );
        expected.entry(user(i)).or_default().insert(subject);
        copies += 1;
    }
    for i in 0..30 {
        let (a, b) = (user(i), user(i + 3));
        let subject = format!("pair {i}");
        for rcpt in [&a, &b] {
            dovecot.deliver(
                "catchall",
                &copy(
                    Some(rcpt),
                    &format!("{a}, {b}"),
                    &subject,
                    &format!("p{i}"),
                    "",
                ),
            );
            expected
                .entry(rcpt.clone())
                .or_default()
                .insert(subject.clone());
            copies += 1;
        }
    }
    for i in 0..10 {
        let subject = format!("dropped twice {i}");
        for _ in 0..2 {
            dovecot.deliver(
                "catchall",
                &copy(Some(&user(i)), &user(i), &subject, &format!("d{i}"), ""),
            );
            copies += 1;
        }
        expected.entry(user(i)).or_default().insert(subject);
    }
    for i in 0..10 {
        let subject = format!("bcc {i}");
        dovecot.deliver(
            "catchall",
            &copy(None, "friends@else.example", &subject, &format!("b{i}"), ""),
        );
        expected
            .entry("postmaster@example.org".into())
            .or_default()
            .insert(subject);
        copies += 1;
    }
    let looping =
        "X-Outpost-Loop: catchall\r\nX-Outpost-Loop: catchall\r\nX-Outpost-Loop: catchall\r\n";
    dovecot.deliver(
        "catchall",
        &copy(Some(&user(0)), &user(0), "loop", "loop", looping),
    );
    copies += 1;
    assert_eq!(copies, 211);

    let dir = tempfile::tempdir().unwrap();
    let spool_dir = dir.path().join("spool");
    let text = format!(
        "spool_dir = {spool_dir:?}\npostmaster = \"postmaster@example.org\"\n{}\n[[account]]\n{}mode = \"catch-all\"\ndomains = [\"example.org\"]\nown_address = \"catchall@provider.example\"\n",
        postfix.local_section(""),
        support::dovecot_account(&dovecot, "catchall", "catchall", "pw", "").replace("deliver_to = \"catchall@example.org\"\n", "")
    );
    let report = fetch_once(&text).await;
    let account = &report.accounts[0];
    assert!(account.error.is_none(), "{account:?}");
    assert_eq!(
        (
            account.fetched,
            account.duplicates,
            account.fallback,
            account.loops
        ),
        (211, 10, 10, 1),
        "{account:?}"
    );
    assert_eq!(dovecot.count("catchall"), 0);

    let config = Config::parse(&text, Path::new("/")).unwrap();
    let spool = Spool::open(&spool_dir).unwrap();
    let delivery = outpost::deliver::deliver_due(&config, &spool)
        .await
        .unwrap();
    assert_eq!(
        (delivery.badmail, delivery.deferred),
        (0, 0),
        "{delivery:?}"
    );
    let total: usize = expected.values().map(BTreeSet::len).sum();
    let delivered = postfix.wait_for(total);
    std::thread::sleep(std::time::Duration::from_millis(500));
    let delivered = if postfix.delivered().len() > delivered.len() {
        postfix.delivered()
    } else {
        delivered
    };
    let mut got: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for d in &delivered {
        let text = String::from_utf8_lossy(&d.message);
        let subject = text
            .lines()
            .find_map(|l| l.strip_prefix("Subject: "))
            .unwrap()
            .to_string();
        if d.recipient == "postmaster@example.org" {
            assert!(
                text.contains("X-Outpost-Routing: fallback: no address in a local domain"),
                "{text}"
            );
        }
        got.entry(d.recipient.clone()).or_default().push(subject);
    }
    for (rcpt, subjects) in &expected {
        let mut received = got.remove(rcpt).unwrap_or_default();
        received.sort();
        let wanted: Vec<String> = subjects.iter().cloned().collect();
        assert_eq!(
            received, wanted,
            "{rcpt} got the wrong messages, or some twice"
        );
    }
    assert!(got.is_empty(), "mail for unexpected recipients: {got:?}");
    let reason = support::badmail_reason(&spool);
    assert!(reason.contains("mail loop"), "{reason}");
}
