//! What a crash can leave in a spool, and what opening it again makes of it.

use std::fs;

use spool::{Envelope, Origin, Spool, SpoolError, State, UidlSet};

fn origin(uidl: &str) -> Origin {
    Origin {
        account: "isp".into(),
        uidl: Some(uidl.into()),
        arrived: 1_700_000_000,
    }
}

fn envelope(_: &[u8]) -> Envelope {
    Envelope {
        sender: "a@example.net".into(),
        recipients: vec!["b@example.org".into()],
    }
}

const MESSAGE: &[u8] = b"Subject: hi\r\n\r\nbody\r\n";

#[test]
fn a_committed_message_is_indexed_and_its_uidl_seen() {
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::open(dir.path()).unwrap();
    let mut writer = spool.writer(origin("u1"), envelope).unwrap();
    writer.write(&MESSAGE[..5]).unwrap();
    writer.write(&MESSAGE[5..]).unwrap();
    let spooled = writer.finish().unwrap();
    assert!(
        spool.list().unwrap().is_empty(),
        "not visible before commit"
    );
    spool.commit(std::slice::from_ref(&spooled)).unwrap();

    let entries = spool.list().unwrap();
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].1.state, State::Queued);
    assert_eq!(entries[0].1.size, MESSAGE.len() as u64);
    assert_eq!(entries[0].1.envelope.recipients, ["b@example.org"]);
    assert!(spool
        .uidls(UidlSet::Seen, "isp")
        .unwrap()
        .contains_key("u1"));
    let (header, mut file) = spool.open_message(spooled.id()).unwrap();
    assert_eq!(header.origin, origin("u1"));
    let mut body = Vec::new();
    std::io::Read::read_to_end(&mut file, &mut body).unwrap();
    assert_eq!(body, MESSAGE);
}

#[test]
fn a_second_owner_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let _first = Spool::open(dir.path()).unwrap();
    assert!(matches!(
        Spool::open(dir.path()),
        Err(SpoolError::Locked(_))
    ));
}

#[test]
fn an_abandoned_writer_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::open(dir.path()).unwrap();
    let mut writer = spool.writer(origin("u1"), envelope).unwrap();
    writer.write(b"Subject: half").unwrap();
    drop(writer);
    assert_eq!(fs::read_dir(dir.path().join("tmp")).unwrap().count(), 0);
    assert_eq!(fs::read_dir(dir.path().join("queue")).unwrap().count(), 0);
}

#[test]
fn open_repairs_what_a_crash_left() {
    let dir = tempfile::tempdir().unwrap();
    let (kept, unindexed, gone);
    {
        let spool = Spool::open(dir.path()).unwrap();
        // Committed, then marked in delivery when the process died.
        let a = spool.writer(origin("a"), envelope).unwrap();
        let mut a = a;
        a.write(MESSAGE).unwrap();
        let a = a.finish().unwrap();
        // Committed, then its file removed by a delivery that died before the index was updated.
        let mut b = spool.writer(origin("b"), envelope).unwrap();
        b.write(MESSAGE).unwrap();
        let b = b.finish().unwrap();
        spool.commit(&[a.clone(), b.clone()]).unwrap();
        spool.set_state(a.id(), State::Delivering).unwrap();
        fs::remove_file(spool.message_path(b.id())).unwrap();
        // Renamed into queue/ but never committed.
        let mut c = spool.writer(origin("c"), envelope).unwrap();
        c.write(MESSAGE).unwrap();
        let c = c.finish().unwrap();
        (kept, gone, unindexed) = (a.id(), b.id(), c.id());
    }
    // Half-written, and a stranger in queue/.
    fs::write(
        dir.path().join("tmp/0000000000000001.tmp"),
        b"X-Outpost-Spool: 1\nId: 1\n",
    )
    .unwrap();
    fs::write(
        dir.path().join("queue/00000000000000FF.msg"),
        b"not a spool file",
    )
    .unwrap();

    let spool = Spool::open(dir.path()).unwrap();
    let found = spool.recovery();
    assert_eq!(
        (
            found.removed_partial,
            found.indexed,
            found.dropped,
            found.requeued,
            found.damaged
        ),
        (1, 1, 1, 1, 1),
        "{found:?}"
    );
    let ids: Vec<_> = spool
        .list()
        .unwrap()
        .into_iter()
        .map(|(id, e)| (id, e.state))
        .collect();
    assert_eq!(ids, [(kept, State::Queued), (unindexed, State::Queued)]);
    assert!(ids.iter().all(|(id, _)| *id != gone));
    assert!(
        spool.uidls(UidlSet::Seen, "isp").unwrap().contains_key("c"),
        "the recovered file's UIDL counts as seen"
    );
    assert!(dir
        .path()
        .join("queue/damaged/00000000000000FF.msg")
        .exists());
}

#[test]
fn a_lost_or_damaged_index_is_rebuilt_from_the_files() {
    let dir = tempfile::tempdir().unwrap();
    {
        let spool = Spool::open(dir.path()).unwrap();
        let mut batch = Vec::new();
        for uidl in ["x", "y", "z"] {
            let mut w = spool.writer(origin(uidl), envelope).unwrap();
            w.write(MESSAGE).unwrap();
            batch.push(w.finish().unwrap());
        }
        spool.commit(&batch).unwrap();
    }
    // Lost: the whole index directory is gone.
    fs::remove_dir_all(dir.path().join("db")).unwrap();
    {
        let spool = Spool::open(dir.path()).unwrap();
        assert_eq!(spool.recovery().indexed, 3);
        assert_eq!(spool.uidls(UidlSet::Seen, "isp").unwrap().len(), 3);
    }
    // Damaged: sled's files overwritten with garbage.
    for entry in fs::read_dir(dir.path().join("db")).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            fs::write(&path, vec![0xA5u8; 4096]).unwrap();
        }
    }
    let spool = Spool::open(dir.path()).unwrap();
    assert!(spool.recovery().rebuilt, "{:?}", spool.recovery());
    assert_eq!(spool.list().unwrap().len(), 3);
    assert_eq!(spool.uidls(UidlSet::Seen, "isp").unwrap().len(), 3);
}

#[test]
fn control_characters_cannot_enter_the_header_block() {
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::open(dir.path()).unwrap();
    assert!(spool.writer(origin("bad\nId: 0"), envelope).is_err());
    let mut w = spool
        .writer(origin("ok"), |_| Envelope {
            sender: "a@b\r\nRecipient: evil@x".into(),
            recipients: vec![],
        })
        .unwrap();
    assert!(w.write(MESSAGE).is_err() || w.finish().is_err());
}

#[test]
fn mail_in_the_spool_is_private() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("spool");
    let spool = Spool::open(&root).unwrap();
    let mut w = spool.writer(origin("p"), envelope).unwrap();
    w.write(MESSAGE).unwrap();
    let spooled = w.finish().unwrap();
    spool.commit(std::slice::from_ref(&spooled)).unwrap();
    let mode = |p: &std::path::Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&spool.message_path(spooled.id())), 0o600);
    assert_eq!(mode(&root.join("queue")), 0o700);
    assert_eq!(mode(&root.join("badmail")), 0o700);
    assert_eq!(mode(&root), 0o711);
    let reason = spool::BadmailReason {
        reply: "550".into(),
        attempts: 1,
    };
    let eml = spool
        .to_badmail(spooled.id(), &["b@example.org".into()], &reason, true)
        .unwrap();
    assert_eq!(mode(&eml), 0o600);
    assert_eq!(mode(&eml.with_extension("reason")), 0o600);
}

#[test]
fn the_index_knows_whether_a_message_is_8bit_and_a_rebuilt_one_says_it_does_not_know() {
    let dir = tempfile::tempdir().unwrap();
    {
        let spool = Spool::open(dir.path()).unwrap();
        let mut batch = Vec::new();
        for body in [
            &b"Subject: ascii\r\n\r\nx\r\n"[..],
            "Subject: 8bit\r\n\r\n\u{e9}\r\n".as_bytes(),
        ] {
            let mut w = spool
                .writer(origin(&format!("{}", body.len())), envelope)
                .unwrap();
            w.write(body).unwrap();
            batch.push(w.finish().unwrap());
        }
        spool.commit(&batch).unwrap();
        let flags: Vec<_> = spool
            .list()
            .unwrap()
            .into_iter()
            .map(|(_, e)| e.eight_bit)
            .collect();
        assert_eq!(flags, [Some(false), Some(true)]);
    }
    fs::remove_dir_all(dir.path().join("db")).unwrap();
    let spool = Spool::open(dir.path()).unwrap();
    assert!(spool
        .list()
        .unwrap()
        .iter()
        .all(|(_, e)| e.eight_bit.is_none()));
}
