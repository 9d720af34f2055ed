//! Notices that reach a person. The SBS connector's errors sat in an event log nobody read, so a
//! user who changed a password silently stopped receiving mail. outpost mails the configured
//! postmaster, through its own spool and deliverer, when an account's login is refused in two
//! windows in a row, when a message is left on the server for its size, and when badmail grows;
//! at most one notice per cause per day.

use std::time::Duration;

use spool::{Envelope, Origin, Spool, SpoolError};

use crate::config::Config;
use crate::fetch::WindowReport;

/// The quiet time after a notice, per cause.
const QUIET: Duration = Duration::from_secs(24 * 3600);
/// Windows in a row with a refused login before the postmaster hears of it (one could be a
/// provider's hiccup).
const AUTH_WINDOWS: u32 = 2;

/// One notice: its cause (the key for the once-a-day rule), subject and text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    pub cause: String,
    pub subject: String,
    pub text: String,
}

/// What a finished window gives the postmaster reason to hear about.
pub fn after_window(spool: &Spool, report: &WindowReport) -> Result<Vec<Notice>, SpoolError> {
    let mut notices = Vec::new();
    for account in &report.accounts {
        let record = spool.account_record(&account.account)?;
        if record.auth_failures >= AUTH_WINDOWS {
            let error = account
                .error
                .as_ref()
                .map(|e| e.to_string())
                .unwrap_or_default();
            notices.push(Notice {
                cause: format!("auth:{}", account.account),
                subject: format!("outpost: the mailbox {} refuses its password", account.account),
                text: format!(
                    "The provider refused the login of account {:?} in the last {} windows, so its mail is not being \
                     collected.\n\nLast error: {error}\n\nHas the password been changed? Update the account's secret in \
                     outpost's configuration (password, password_file or password_command).\n",
                    account.account, record.auth_failures
                ),
            });
        }
        if account.new_oversized > 0 {
            let list: Vec<String> = account
                .oversized
                .iter()
                .map(|(uidl, size)| format!("  {uidl}: {size} bytes"))
                .collect();
            notices.push(Notice {
                cause: format!("oversized:{}", account.account),
                subject: format!("outpost: mail too large was left at the provider for {}", account.account),
                text: format!(
                    "These messages of account {:?} are larger than outpost may fetch (max_message_size, or the local \
                     server's limit) and stay on the provider's server:\n\n{}\n\nRead them with webmail, or raise the limit.\n",
                    account.account,
                    list.join("\n")
                ),
            });
        }
    }
    Ok(notices)
}

/// A notice when badmail holds more files than when it was last looked at.
pub fn badmail_grew(spool: &Spool) -> Result<Option<Notice>, SpoolError> {
    let dir = spool.badmail_dir();
    let count = std::fs::read_dir(&dir)
        .map(|d| {
            d.filter_map(|e| e.ok())
                .filter(|e| e.path().extension().is_some_and(|x| x == "eml"))
                .count() as u64
        })
        .unwrap_or(0);
    let before = spool.note("badmail-count")?.unwrap_or(0);
    spool.set_note("badmail-count", count)?;
    Ok((count > before).then(|| Notice {
        cause: "badmail".into(),
        subject: format!("outpost: {} message(s) in badmail", count),
        text: format!(
            "The local mail server refused messages for good, and outpost put them in {} ({count} now, {before} before). \
             Each ID.eml has an ID.reason beside it; `spoolctl list --state badmail` lists them, and `spoolctl requeue ID` \
             delivers one again once the cause is fixed.\n",
            dir.display()
        ),
    }))
}

/// Queues each notice for the postmaster, unless its cause had one within the last day. Returns
/// how many were queued. Without a postmaster address, notices are only logged.
pub fn send(config: &Config, spool: &Spool, notices: Vec<Notice>) -> Result<usize, SpoolError> {
    let now = spool::now();
    let mut sent = 0;
    for notice in notices {
        let key = format!("notice:{}", notice.cause);
        if spool
            .note(&key)?
            .is_some_and(|last| now < last + QUIET.as_secs())
        {
            continue;
        }
        tracing::warn!(cause = %notice.cause, "{}", notice.subject);
        let Some(postmaster) = &config.postmaster else {
            // Logged only; still once a day.
            spool.set_note(&key, now)?;
            continue;
        };
        let date = chrono::Local::now().to_rfc2822();
        let message = format!(
            "From: outpost <{postmaster}>\r\nTo: {postmaster}\r\nSubject: {}\r\nDate: {date}\r\nAuto-Submitted: auto-generated\r\n\
             Content-Type: text/plain; charset=utf-8\r\n\r\n{}",
            notice.subject,
            notice.text.replace('\n', "\r\n")
        );
        let origin = Origin {
            account: "outpost".into(),
            uidl: None,
            arrived: now,
        };
        // The null sender: a notice must never bounce back into a loop.
        let envelope = Envelope {
            sender: String::new(),
            recipients: vec![postmaster.clone()],
        };
        let mut writer = spool.writer(origin, move |_| envelope)?;
        writer.write(message.as_bytes())?;
        let spooled = writer.finish()?;
        spool.commit(&[spooled])?;
        spool.set_note(&key, now)?;
        sent += 1;
    }
    Ok(sent)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fetch::AccountReport;

    fn config(postmaster: Option<&str>) -> Config {
        let text = format!(
            "spool_dir = \"/unused\"\n{}\n[[account]]\nname = \"a\"\nserver = \"s\"\ntls = \"implicit\"\nuser = \"u\"\npassword = \"p\"\ndeliver_to = \"x@example.org\"\n",
            postmaster.map(|p| format!("postmaster = {p:?}")).unwrap_or_default()
        );
        Config::parse(&text, std::path::Path::new("/")).unwrap()
    }

    #[test]
    fn mail_left_on_the_server_is_told_once_a_day() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path()).unwrap();
        let report = WindowReport {
            accounts: vec![AccountReport {
                account: "a".into(),
                new_oversized: 1,
                oversized: vec![("U1".into(), 30_000_000)],
                ..Default::default()
            }],
            ..Default::default()
        };
        let notices = after_window(&spool, &report).unwrap();
        assert_eq!(notices.len(), 1);
        assert!(notices[0].text.contains("U1: 30000000 bytes"));
        let config = config(Some("admin@example.org"));
        assert_eq!(send(&config, &spool, notices.clone()).unwrap(), 1);
        assert_eq!(
            send(&config, &spool, notices).unwrap(),
            0,
            "not again the same day"
        );
        let queued = spool.list().unwrap();
        assert_eq!(queued.len(), 1);
        assert_eq!(queued[0].1.envelope.sender, "", "from the null sender");
        assert_eq!(queued[0].1.envelope.recipients, ["admin@example.org"]);
    }

    #[test]
    fn badmail_growth_is_noticed_and_only_growth() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path()).unwrap();
        assert!(badmail_grew(&spool).unwrap().is_none());
        std::fs::write(spool.badmail_dir().join("X.eml"), "x").unwrap();
        let notice = badmail_grew(&spool).unwrap().expect("a notice");
        assert!(notice.subject.contains("1 message(s) in badmail"));
        assert!(
            badmail_grew(&spool).unwrap().is_none(),
            "no growth, no notice"
        );
    }

    #[test]
    fn without_a_postmaster_notices_are_only_logged() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path()).unwrap();
        let notice = Notice {
            cause: "c".into(),
            subject: "s".into(),
            text: "t".into(),
        };
        assert_eq!(send(&config(None), &spool, vec![notice]).unwrap(), 0);
        assert!(spool.list().unwrap().is_empty());
    }
}
