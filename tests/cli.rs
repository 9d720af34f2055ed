//! The command line as an administrator meets it.

mod support;

use support::outpost;

#[test]
fn the_sample_configuration_is_valid() {
    let sample = support::repo_root().join("config/outpost.toml");
    let output = outpost(&["--config", sample.to_str().unwrap(), "check-config"]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("ok, 3 account(s)"), "{stdout}");
}

#[test]
fn check_config_lists_every_error_and_exits_78() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("bad.toml");
    std::fs::write(
        &config,
        "spool_dir = \"/tmp/x\"\nspool_size = 3\n[[account]]\nname = \"a\"\nserver = \"s\"\ntls = \"sometimes\"\nuser = \"u\"\npassword = \"p\"\ndeliver_to = \"x\"\n",
    )
    .unwrap();
    let output = outpost(&["--config", config.to_str().unwrap(), "check-config"]);
    assert_eq!(output.status.code(), Some(78));
    let stderr = String::from_utf8_lossy(&output.stderr);
    for want in [
        "3 error(s)",
        "line 2: spool_size: unknown key",
        "line 6: account[1].tls: \"sometimes\" is not one of",
        "line 9: account[1].deliver_to",
    ] {
        assert!(stderr.contains(want), "{want:?} missing in:\n{stderr}");
    }
    assert!(!stderr.contains("\"p\""), "the password must not be echoed");
}

#[test]
fn a_missing_configuration_is_a_clear_error() {
    let output = outpost(&["--config", "/nonexistent/outpost.toml", "fetch"]);
    assert_eq!(output.status.code(), Some(78));
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("cannot read /nonexistent/outpost.toml")
    );
}

#[test]
fn json_log_lines_on_request() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("outpost.toml");
    std::fs::write(&config, "spool_dir = \"/tmp/x\"\n[[account]]\nname = \"a\"\nserver = \"s\"\ntls = \"implicit\"\nuser = \"u\"\npassword = \"p\"\ndeliver_to = \"x@example.org\"\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o644)).unwrap();
    let output = outpost(&[
        "--log-format",
        "json",
        "--config",
        config.to_str().unwrap(),
        "check-config",
    ]);
    assert!(output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    let line: serde_json::Value =
        serde_json::from_str(stderr.lines().next().expect("a warning")).expect("a JSON line");
    assert_eq!(line["level"], "WARN");
    assert!(line["fields"]["message"]
        .as_str()
        .unwrap()
        .contains("readable by every user"));
}

#[test]
fn route_dry_runs_the_catch_all_rules() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("outpost.toml");
    std::fs::write(
        &config,
        "spool_dir = \"/tmp/x\"\n[[account]]\nname = \"domain\"\nserver = \"s\"\ntls = \"implicit\"\nuser = \"u\"\npassword = \"p\"\nmode = \"catch-all\"\ndomains = [\"example.org\"]\nfallback = \"admin@example.org\"\n\n[[account.route]]\nmatch = \"list-*@example.org\"\ndeliver_to = \"folder@example.org\"\n",
    )
    .unwrap();
    let fixtures = support::repo_root().join("tests/fixtures/routing");
    let run = |fixture: &str| {
        let output = outpost(&[
            "--config",
            config.to_str().unwrap(),
            "route",
            fixtures.join(fixture).to_str().unwrap(),
        ]);
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    assert!(
        run("delivered-to.eml").contains("ann@example.org (from Delivered-To) -> ann@example.org")
    );
    assert!(
        run("mailing-list.eml").contains("via route \"list-*@example.org\" -> folder@example.org")
    );
    assert!(run("bcc.eml").starts_with("fallback -> admin@example.org:"));
}
