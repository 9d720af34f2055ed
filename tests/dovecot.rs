//! Against a real Dovecot: every login mechanism, POP3S and STLS, a thousand messages across five
//! accounts, and mail kept on the server.

mod support;

use std::path::Path;

use outpost::config::Config;
use spool::Spool;
use support::{dovecot_account, fetch_once, message, spooled_ids, Dovecot};

#[tokio::test]
async fn every_login_mechanism_over_pop3s_and_stls() {
    let mechanisms = [
        "user",
        "apop",
        "plain",
        "login",
        "cram-md5",
        "xoauth2",
        "oauthbearer",
        "auto",
    ];
    let users: Vec<(String, String)> = mechanisms
        .iter()
        .map(|m| (m.replace('-', ""), format!("pw-{m}")))
        .collect();
    let user_refs: Vec<(&str, &str)> = users
        .iter()
        .map(|(u, p)| (u.as_str(), p.as_str()))
        .collect();
    let dovecot = Dovecot::start(&user_refs);
    let dir = tempfile::tempdir().unwrap();
    let mut accounts = Vec::new();
    for (mechanism, (user, password)) in mechanisms.iter().zip(&users) {
        dovecot.deliver(user, &message(&format!("{user}-1"), "one"));
        dovecot.deliver(user, &message(&format!("{user}-2"), "two"));
        accounts.push(dovecot_account(
            &dovecot,
            user,
            user,
            password,
            &format!("auth = {mechanism:?}"),
        ));
    }
    let spool_dir = dir.path().join("spool");
    let report = fetch_once(&support::config_text(&spool_dir, &accounts)).await;
    for account in &report.accounts {
        assert!(
            account.error.is_none(),
            "{}: {:?}",
            account.account,
            account.error
        );
    }
    assert_eq!(report.fetched(), 2 * mechanisms.len() as u64);

    // STLS on the plain port.
    dovecot.deliver("user", &message("stls-1", "three"));
    let stls = format!(
        "name = \"stls\"\nserver = \"localhost\"\nport = {}\ntls = \"starttls\"\nca_file = {:?}\nuser = \"user\"\n\
         password = \"pw-user\"\ndeliver_to = \"user@example.org\"\n",
        dovecot.pop3_port,
        dovecot.ca_file()
    );
    let report = fetch_once(&support::config_text(&spool_dir, &[stls])).await;
    assert!(!report.failed(), "{report:?}");
    assert_eq!(report.fetched(), 1);
    for (user, _) in &users {
        assert_eq!(dovecot.count(user), 0, "{user}'s mailbox is empty");
    }
}

#[tokio::test]
async fn plain_pop3_needs_explicit_consent_for_clear_passwords() {
    let dovecot = Dovecot::start(&[("clear", "pw")]);
    dovecot.deliver("clear", &message("c1", "x"));
    let dir = tempfile::tempdir().unwrap();
    let account = |extra: &str| {
        format!(
            "name = \"clear\"\nserver = \"127.0.0.1\"\nport = {}\ntls = \"none\"\nuser = \"clear\"\npassword = \"pw\"\n\
             deliver_to = \"clear@example.org\"\n{extra}\n",
            dovecot.pop3_port
        )
    };
    // auto on a clear link picks a challenge-response mechanism (Dovecot offers CRAM-MD5 and APOP).
    let report = fetch_once(&support::config_text(
        &dir.path().join("spool"),
        &[account("")],
    ))
    .await;
    assert!(!report.failed(), "{report:?}");
    // An explicit clear-text mechanism is refused by the configuration check...
    let errors = Config::parse(
        &support::config_text(dir.path(), &[account("auth = \"user\"")]),
        Path::new("/"),
    )
    .unwrap_err();
    assert!(
        errors[0].to_string().contains("sends the secret in clear"),
        "{errors:?}"
    );
    // ...unless the account says so.
    dovecot.deliver("clear", &message("c2", "x"));
    let text = support::config_text(
        &dir.path().join("spool"),
        &[account("auth = \"user\"\nallow_insecure_auth = true")],
    );
    assert!(!fetch_once(&text).await.failed());
    assert_eq!(dovecot.count("clear"), 0);
}

#[tokio::test]
async fn an_untrusted_certificate_is_refused() {
    let dovecot = Dovecot::start(&[("tls", "pw")]);
    dovecot.deliver("tls", &message("t1", "x"));
    let dir = tempfile::tempdir().unwrap();
    let account = dovecot_account(&dovecot, "tls", "tls", "pw", "")
        .replace(&format!("ca_file = {:?}\n", dovecot.ca_file()), "");
    let report = fetch_once(&support::config_text(&dir.path().join("spool"), &[account])).await;
    let error = report.accounts[0]
        .error
        .as_ref()
        .expect("TLS must fail")
        .to_string();
    assert!(error.starts_with("TLS"), "{error}");
    assert_eq!(dovecot.count("tls"), 1);
}

#[test]
fn a_thousand_messages_across_five_accounts() {
    let names = ["a1", "a2", "a3", "a4", "a5"];
    let users: Vec<(&str, &str)> = names.iter().map(|n| (*n, "pw")).collect();
    let dovecot = Dovecot::start(&users);
    for name in names {
        for i in 0..200 {
            dovecot.deliver(
                name,
                &message(
                    &format!("{name}-{i}"),
                    &"text of a message\r\n".repeat(i % 40 + 1),
                ),
            );
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let spool_dir = dir.path().join("spool");
    let accounts: Vec<String> = names
        .iter()
        .map(|n| dovecot_account(&dovecot, n, n, "pw", ""))
        .collect();
    let config = dir.path().join("outpost.toml");
    std::fs::write(&config, support::config_text(&spool_dir, &accounts)).unwrap();

    let output = support::outpost(&["--config", config.to_str().unwrap(), "fetch"]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("total: 1000 message(s)"), "{stdout}");
    let ids = spooled_ids(&spool_dir);
    assert_eq!(ids.len(), 1000);
    assert!(ids.values().all(|&n| n == 1));
    for name in names {
        assert_eq!(dovecot.count(name), 0);
    }
    // The spool's index agrees with its files.
    let spool = Spool::open(&spool_dir).unwrap();
    assert_eq!(spool.list().unwrap().len(), 1000);
    assert_eq!(
        spool.recovery(),
        spool::Recovery::default(),
        "a clean run leaves nothing to recover"
    );
}

#[tokio::test]
async fn kept_mail_is_fetched_once_and_deleted_after_its_time() {
    let dovecot = Dovecot::start(&[("keeper", "pw")]);
    for i in 0..3 {
        dovecot.deliver("keeper", &message(&format!("k{i}"), "kept"));
    }
    let dir = tempfile::tempdir().unwrap();
    let spool_dir = dir.path().join("spool");
    let keep = support::config_text(
        &spool_dir,
        &[dovecot_account(
            &dovecot,
            "keeper",
            "keeper",
            "pw",
            "keep = true",
        )],
    );
    let first = fetch_once(&keep).await;
    assert_eq!((first.fetched(), first.accounts[0].deleted), (3, 0));
    assert_eq!(dovecot.count("keeper"), 3);
    let second = fetch_once(&keep).await;
    assert_eq!(second.fetched(), 0, "kept messages are not fetched again");
    assert_eq!(dovecot.count("keeper"), 3);

    let expiring = support::config_text(
        &spool_dir,
        &[dovecot_account(
            &dovecot,
            "keeper",
            "keeper",
            "pw",
            "keep = true\ndelete_after = \"1s\"",
        )],
    );
    std::thread::sleep(std::time::Duration::from_millis(2100));
    let third = fetch_once(&expiring).await;
    assert_eq!((third.fetched(), third.accounts[0].deleted), (0, 3));
    assert_eq!(dovecot.count("keeper"), 0);
    assert_eq!(spooled_ids(&spool_dir).len(), 3);
}

#[tokio::test]
async fn a_refused_oauth_token_ends_in_an_authentication_error_not_a_hang() {
    let dovecot = Dovecot::start(&[("oauth", "good-token")]);
    dovecot.deliver("oauth", &message("o1", "x"));
    let dir = tempfile::tempdir().unwrap();
    for mechanism in ["xoauth2", "oauthbearer"] {
        let account = dovecot_account(
            &dovecot,
            "oauth",
            "oauth",
            "expired-token",
            &format!("auth = {mechanism:?}\ntimeout = \"10s\""),
        );
        let report = fetch_once(&support::config_text(&dir.path().join("spool"), &[account])).await;
        let error = report.accounts[0].error.as_ref().expect("refused");
        assert!(error.is_auth_failure(), "{mechanism}: {error}");
        println!("{mechanism}: {error} after {:?}", report.elapsed);
    }
    assert_eq!(dovecot.count("oauth"), 1);
}
