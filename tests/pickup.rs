//! The pickup folder, end to end: files dropped in are delivered through a real Postfix.

mod support;

use std::path::Path;

use outpost::pickup::{ingest_pickup, take_in};
use spool::Spool;
use support::{outpost, Postfix};

fn write_config(dir: &Path, postfix: &Postfix) -> std::path::PathBuf {
    let text = format!(
        "spool_dir = {:?}\ndefault_domain = \"example.org\"\n{}\n\n[[account]]\nname = \"unused\"\nserver = \"127.0.0.1\"\n\
         tls = \"implicit\"\nuser = \"u\"\npassword = \"p\"\ndeliver_to = \"x@example.org\"\n",
        dir.join("spool"),
        postfix.local_section("")
    );
    let path = dir.join("outpost.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn deliver(config: &Path) -> String {
    let output = outpost(&["--config", config.to_str().unwrap(), "deliver"]);
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

#[test]
fn replay_files_header_files_and_strangers() {
    let postfix = Postfix::start(10_240_000);
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &postfix);
    let pickup = dir.path().join("spool/pickup");
    std::fs::create_dir_all(&pickup).unwrap();
    std::fs::write(
        pickup.join("replay.eml"),
        "X-Sender: <bounces@example.net>\r\nX-Receiver: <ann@example.org>\r\nFrom: a@example.net\r\nTo: someone-else@example.org\r\nSubject: replay\r\n\r\nbody\r\n",
    )
    .unwrap();
    std::fs::write(
        pickup.join("headers.eml"),
        "From: Bob <bob@example.net>\r\nTo: cat@example.org\r\nBcc: dan@example.org\r\nSubject: headers\r\n\r\nhello\r\n",
    )
    .unwrap();
    std::fs::write(pickup.join("photo.eml"), b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR").unwrap();
    std::fs::write(pickup.join("nobody.eml"), "Subject: to nobody\r\n\r\n?\r\n").unwrap();
    std::fs::write(
        pickup.join("half-written.tmp"),
        "From: x@example.net\r\nTo: ann@example.org\r\n",
    )
    .unwrap();

    let stdout = deliver(&config);
    assert!(
        stdout.contains("pickup: 2 file(s) ingested, 0 already in the spool, 2 to badmail"),
        "{stdout}"
    );
    let delivered = postfix.wait_for(3);
    let to = |rcpt: &str| {
        delivered
            .iter()
            .find(|d| d.recipient == rcpt)
            .unwrap_or_else(|| panic!("{rcpt} got nothing: {delivered:?}"))
    };
    assert_eq!(to("ann@example.org").return_path, "bounces@example.net");
    assert!(!String::from_utf8_lossy(&to("ann@example.org").message).contains("X-Receiver"));
    assert_eq!(to("cat@example.org").return_path, "bob@example.net");
    assert!(
        !String::from_utf8_lossy(&to("dan@example.org").message).contains("Bcc"),
        "Bcc stripped from the delivered copy"
    );
    assert!(
        delivered
            .iter()
            .all(|d| d.recipient != "someone-else@example.org"),
        "replay lines override the headers"
    );
    assert!(
        pickup.join("half-written.tmp").exists(),
        "a name without .eml is not touched"
    );
    let names: Vec<String> = std::fs::read_dir(pickup)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names, ["half-written.tmp"]);
    let badmail = dir.path().join("spool/badmail");
    assert!(std::fs::read_to_string(badmail.join("photo.reason"))
        .unwrap()
        .contains("not a message"));
    assert!(std::fs::read_to_string(badmail.join("nobody.reason"))
        .unwrap()
        .contains("no recipient"));
    assert_eq!(
        std::fs::read(badmail.join("photo.eml")).unwrap(),
        b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR",
        "kept as it was"
    );
}

#[test]
fn a_badmail_file_moved_to_pickup_is_delivered_with_its_original_envelope() {
    let postfix = Postfix::start(10_240_000);
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &postfix);
    {
        let spool = Spool::open(dir.path().join("spool")).unwrap();
        let bytes =
            b"From: list@example.net\r\nTo: team@example.org\r\nSubject: weekly\r\n\r\nnews\r\n";
        support::queue_message(
            &spool,
            "list-bounces@example.net",
            &["ann@example.org", "reject-joe@example.org"],
            bytes,
        );
    }
    deliver(&config);
    assert_eq!(postfix.wait_for(1).len(), 1);
    let badmail = dir.path().join("spool/badmail");
    let eml = std::fs::read_dir(&badmail)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "eml"))
        .unwrap();

    // The administrator fixes the address, then replays the message.
    postfix.set_access("");
    std::fs::rename(
        &eml,
        dir.path()
            .join("spool/pickup")
            .join(eml.file_name().unwrap()),
    )
    .unwrap();
    let stdout = deliver(&config);
    assert!(stdout.contains("1 file(s) ingested"), "{stdout}");
    let delivered = postfix.wait_for(2);
    let joe = delivered
        .iter()
        .find(|d| d.recipient == "reject-joe@example.org")
        .expect("replayed to joe");
    assert_eq!(
        joe.return_path, "list-bounces@example.net",
        "the original envelope sender"
    );
    assert_eq!(
        delivered
            .iter()
            .filter(|d| d.recipient == "ann@example.org")
            .count(),
        1,
        "ann is not sent it again"
    );
}

#[test]
fn a_crash_between_commit_and_removal_never_ingests_twice() {
    let dir = tempfile::tempdir().unwrap();
    let spool_dir = dir.path().join("spool");
    {
        let spool = Spool::open(&spool_dir).unwrap();
        std::fs::write(
            spool.pickup_dir().join("a.eml"),
            "To: ann@example.org\r\nSubject: once\r\n\r\nx\r\n",
        )
        .unwrap();
        // Durable, then the process dies before the file is removed.
        let ingested = take_in(&spool, None).unwrap();
        std::mem::forget(ingested);
    }
    let spool = Spool::open(&spool_dir).unwrap();
    assert_eq!(spool.list().unwrap().len(), 1);
    let report = ingest_pickup(&spool, None).unwrap();
    assert_eq!((report.ingested, report.already_ingested), (0, 1));
    assert_eq!(spool.list().unwrap().len(), 1, "still one message");
    assert_eq!(
        std::fs::read_dir(spool.pickup_dir()).unwrap().count(),
        0,
        "the file is gone now"
    );
    // A new file under the same name later is new mail.
    std::fs::write(
        spool.pickup_dir().join("a.eml"),
        "To: ann@example.org\r\nSubject: again\r\n\r\ny\r\n",
    )
    .unwrap();
    assert_eq!(ingest_pickup(&spool, None).unwrap().ingested, 1);
    assert_eq!(spool.list().unwrap().len(), 2);
}
