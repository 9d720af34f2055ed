//! Catch-all routing on the messages in tests/fixtures/routing/: each envelope header, copies at
//! different hops, a forged header below the provider's hop, Bcc, a mailing list, an alias, two
//! local domains, uppercase and encoded addresses, malformed To lines, a loop.

use outpost::routing::{Decision, Pattern, Route, Routing, DEFAULT_ENVELOPE_HEADERS};

fn rules() -> Routing {
    let route = |m: &str, to: &[&str]| Route {
        text: m.into(),
        pattern: Pattern::parse(m).unwrap(),
        deliver_to: to.iter().map(|s| s.to_string()).collect(),
    };
    Routing {
        domains: vec!["example.org".into(), "example.com".into()],
        envelope_headers: DEFAULT_ENVELOPE_HEADERS
            .iter()
            .map(|h| h.to_string())
            .collect(),
        hop: 1,
        routes: vec![
            route("sales", &["sales-team@example.org", "boss@example.org"]),
            route("list-*@example.org", &["public-folder@example.org"]),
        ],
        fallback: "postmaster@example.org".into(),
        own_address: Some("catchall@provider.example".into()),
        max_passes: 2,
    }
}

fn decide(fixture: &str) -> Decision {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/routing")
        .join(fixture);
    rules().route(&std::fs::read(path).unwrap(), "catchall")
}

fn recipients(fixture: &str) -> Vec<String> {
    match decide(fixture) {
        Decision::Deliver { recipients, .. } => recipients,
        other => panic!("{fixture}: {other:?}"),
    }
}

#[test]
fn each_envelope_header() {
    assert_eq!(
        recipients("delivered-to.eml"),
        ["ann@example.org"],
        "Delivered-To wins over To"
    );
    assert_eq!(recipients("x-original-to.eml"), ["bob@example.org"]);
    assert_eq!(recipients("envelope-to.eml"), ["cat@example.org"]);
    assert_eq!(recipients("x-envelope-to.eml"), ["dan@example.org"]);
    assert_eq!(
        recipients("x-rcpt-to.eml"),
        ["eve@example.org", "frank@example.org"]
    );
    assert_eq!(recipients("resent.eml"), ["mia@example.org"]);
}

#[test]
fn only_the_providers_hop_is_trusted() {
    assert_eq!(
        recipients("forged-below-hop.eml"),
        ["ann@example.org"],
        "the Delivered-To the sender wrote is ignored"
    );
    assert_eq!(
        recipients("received-for.eml"),
        ["gina@example.org"],
        "only the topmost Received counts"
    );
}

#[test]
fn bcc_goes_to_the_fallback_with_the_reason() {
    match decide("bcc.eml") {
        Decision::Fallback {
            recipient, reason, ..
        } => {
            assert_eq!(recipient, "postmaster@example.org");
            assert!(reason.contains("Bcc"));
        }
        other => panic!("{other:?}"),
    }
    let trace = String::from_utf8(decide("bcc.eml").trace_headers("catchall")).unwrap();
    assert!(trace.contains("X-Outpost-Routing: fallback: no address in a local domain"));
    assert!(trace.contains("X-Outpost-Loop: catchall"));
}

#[test]
fn routes_map_lists_and_aliases() {
    assert_eq!(
        recipients("mailing-list.eml"),
        ["public-folder@example.org"]
    );
    assert_eq!(
        recipients("alias.eml"),
        ["sales-team@example.org", "boss@example.org"]
    );
    let explained = decide("alias.eml").explain();
    assert!(
        explained.contains("sales@example.org (from Delivered-To) via route \"sales\""),
        "{explained}"
    );
}

#[test]
fn two_domains_uppercase_encoded_and_malformed() {
    assert_eq!(
        recipients("two-domains.eml"),
        ["ann@example.org", "hal@example.com", "ivy@example.com"],
        "outside addresses ignored"
    );
    assert_eq!(
        recipients("uppercase-encoded.eml"),
        ["juergen@example.org", "kim.smith@example.org"]
    );
    // What can be recognised in a broken line is used; what cannot is left out.
    assert_eq!(
        recipients("malformed-to.eml"),
        ["ann@example.org", "leo@example.org"]
    );
}

#[test]
fn a_loop_is_recognised() {
    match decide("loop.eml") {
        Decision::Loop { reason } => assert!(reason.contains("3 times")),
        other => panic!("{other:?}"),
    }
    // The provider's Delivered-To with the catch-all's own address, again and again.
    assert!(matches!(
        decide("own-address-loop.eml"),
        Decision::Loop { .. }
    ));
}
