//! `outpost demo`, the README's first command: it must show the whole job and leave the mail where
//! it says.

mod support;

#[test]
fn the_demo_fetches_spools_and_delivers_with_nothing_installed() {
    let dir = tempfile::tempdir().unwrap();
    let output = support::outpost(&["demo", "--dir", dir.path().to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    for part in [
        "== a connect window",
        "left on the server, too large",
        "== spoolctl list",
        "6 message(s)",
        "delivered: 6 message(s) (8 recipient deliveries)",
        "== spoolctl status",
        "== spoolctl windows",
    ] {
        assert!(stdout.contains(part), "{part:?} missing in:\n{stdout}");
    }
    assert!(
        stdout.contains("6 message(s) delivered as 8 file(s); 1 left at the provider"),
        "{stdout}"
    );
    let delivered = dir.path().join("delivered");
    let order = std::fs::read_dir(delivered.join("office@example.org"))
        .unwrap()
        .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
        .find(|m| m.contains("Subject: Order 4711"))
        .expect("the order reached the office");
    assert!(
        order.starts_with(
            "Return-Path: <ann@customer.example>\r\nDelivered-To: office@example.org\r\n"
        ),
        "{order}"
    );
    assert!(order.ends_with("Please send 20 more units.\r\n"));
    assert_eq!(
        std::fs::read_dir(delivered.join("boss@example.org"))
            .unwrap()
            .count(),
        2,
        "sales mail goes to the boss too"
    );
}
