//! `p2psip config`: the effective configuration, and the errors of a bad config file.

mod common;

use std::fs;

use common::Sandbox;

#[test]
fn config_prints_the_defaults_without_a_file() {
    let sandbox = Sandbox::new();
    let stdout = sandbox.run(&["config", "--data-dir", "d"]).ok().to_owned();
    let printed: toml::Table = toml::from_str(&stdout).expect("TOML");
    let data = sandbox.path("d");
    assert_eq!(printed["data_dir"].as_str(), data.to_str());
    let overlay = printed["overlay"].as_table().expect("[overlay]");
    assert_eq!(overlay["name"].as_str(), Some("p2psip"));
    assert_eq!(
        overlay["listen"].as_array().and_then(|a| a[0].as_str()),
        Some("/ip4/0.0.0.0/udp/0/quic-v1")
    );
    assert_eq!(overlay["mdns"].as_bool(), Some(true));
    assert_eq!(overlay["replicas"].as_integer(), Some(3));
    assert_eq!(printed["sip"]["listen"][0].as_str(), Some("127.0.0.1:5060"));
    assert_eq!(printed["control"]["listen"].as_str(), Some("127.0.0.1:0"));
    assert!(stdout.starts_with("# The defaults"), "{stdout}");
    assert!(!data.exists(), "config creates nothing");
}

#[test]
fn config_prints_json() {
    let sandbox = Sandbox::new();
    let run = sandbox.run(&["config", "--data-dir", "d", "--json"]);
    let printed: serde_json::Value = serde_json::from_str(run.ok()).expect("JSON");
    assert_eq!(printed["overlay"]["bootstrap"], serde_json::json!([]));
    assert_eq!(
        printed["sip"]["listen"],
        serde_json::json!(["127.0.0.1:5060"])
    );
}

#[test]
fn config_after_init_is_the_defaults_and_reads_its_own_output() {
    let sandbox = Sandbox::new();
    let defaults = sandbox.run(&["config", "--data-dir", "d"]).ok().to_owned();
    sandbox.run(&["init", "--data-dir", "d"]).ok();
    let after_init = sandbox.run(&["config", "--data-dir", "d"]).ok().to_owned();
    let body = |text: &str| text.lines().skip(1).collect::<Vec<_>>().join("\n");
    assert_eq!(body(&after_init), body(&defaults));

    // The printed configuration is itself a valid config file.
    fs::write(sandbox.path("printed.toml"), &after_init).expect("writable");
    let again = sandbox
        .run(&["config", "--config", "printed.toml"])
        .ok()
        .to_owned();
    assert_eq!(body(&again), body(&after_init));
}

#[test]
fn the_file_overrides_defaults_and_the_flag_overrides_the_file() {
    let sandbox = Sandbox::new();
    fs::write(
        sandbox.path("custom.toml"),
        "data_dir = \"elsewhere\"\n[overlay]\nname = \"lab\"\nmdns = false\n",
    )
    .expect("writable");
    let run = sandbox.run(&["config", "--config", "custom.toml", "--json"]);
    let printed: serde_json::Value = serde_json::from_str(run.ok()).expect("JSON");
    assert_eq!(printed["overlay"]["name"], "lab");
    assert_eq!(printed["overlay"]["mdns"], false);
    assert_eq!(printed["overlay"]["replicas"], 3);
    let elsewhere = sandbox.path("elsewhere");
    assert_eq!(printed["data_dir"].as_str(), elsewhere.to_str());

    let run = sandbox.run_with(
        &["config", "--json"],
        &[
            ("P2PSIP_CONFIG", "custom.toml"),
            ("P2PSIP_DATA_DIR", "/flag"),
        ],
    );
    let printed: serde_json::Value = serde_json::from_str(run.ok()).expect("JSON");
    assert_eq!(printed["data_dir"], "/flag");
}

#[test]
fn an_unknown_key_names_the_file_line_and_key() {
    let sandbox = Sandbox::new();
    sandbox.run(&["init", "--data-dir", "d"]).ok();
    let file = sandbox.path("d/config.toml");
    fs::write(
        &file,
        "# mine\n[overlay]\nmdns = false\n[sip]\nlisen = [\"127.0.0.1:5060\"]\n",
    )
    .expect("writable");
    let line = sandbox
        .run(&["config", "--data-dir", "d"])
        .fails(1)
        .to_owned();
    assert_eq!(
        line,
        format!(
            "{} line 5, column 1: unknown key `lisen` in [sip]; known keys: listen, \
             require_auth, realm, users",
            file.display()
        )
    );
}

#[test]
fn a_bad_value_names_the_line_and_key() {
    let sandbox = Sandbox::new();
    let cases = [
        ("[overlay]\n\nmdns = 1\n", "line 3", "`mdns` in [overlay]"),
        (
            "[overlay]\nlisten = [\"/ip4/127.0.0.1/udp/0/quic-v1\",\n  \"/ip4/300.0.0.1/tcp/1\"]\n",
            "line 3",
            "`listen` in [overlay]",
        ),
        (
            "[overlay]\nbootstrap = [\"/ip4/192.0.2.1/tcp/4001\"]\n",
            "line 2",
            "/p2p/<peer id>",
        ),
        (
            "[sip]\nlisten = \"127.0.0.1:5060\"\n",
            "line 2",
            "`listen` in [sip]",
        ),
        (
            "[control]\nlisten = \"localhost\"\n",
            "line 2",
            "`listen` in [control]",
        ),
        ("[overlay\n", "line 1", "config.toml"),
    ];
    for (text, at, about) in cases {
        fs::write(sandbox.path("config.toml"), text).expect("writable");
        let line = sandbox
            .run(&["config", "--config", "config.toml"])
            .fails(1)
            .to_owned();
        assert!(
            line.contains(at) && line.contains(about),
            "{text:?}: {line}"
        );
    }
}

#[test]
fn a_missing_config_file_is_an_error_when_named() {
    let sandbox = Sandbox::new();
    let line = sandbox
        .run(&["config", "--config", "nope.toml"])
        .fails(1)
        .to_owned();
    assert!(
        line.contains("nope.toml") && line.contains("does not exist"),
        "{line}"
    );
}

#[test]
fn command_line_mistakes_fail_in_one_line_with_code_2() {
    let sandbox = Sandbox::new();
    let line = sandbox.run(&["config", "--jsn"]).fails(2).to_owned();
    assert!(
        line.contains("--jsn") && line.contains("p2psip config --help"),
        "{line}"
    );
    let line = sandbox.run(&["confg"]).fails(2).to_owned();
    assert!(line.contains("confg"), "{line}");
    let line = sandbox.run(&[]).fails(2).to_owned();
    assert!(line.contains("init, config"), "{line}");
}

#[test]
fn a_bad_rust_log_fails_in_one_line() {
    let sandbox = Sandbox::new();
    let line = sandbox
        .run_with(
            &["config", "--data-dir", "d"],
            &[("RUST_LOG", "p2psip=loud")],
        )
        .fails(1)
        .to_owned();
    assert!(line.contains("RUST_LOG"), "{line}");
    // -q overrides RUST_LOG, so the same command works with it.
    let run = sandbox.run_with(
        &["-q", "config", "--data-dir", "d"],
        &[("RUST_LOG", "p2psip=loud")],
    );
    run.ok();
}

#[test]
fn help_and_version_succeed() {
    let sandbox = Sandbox::new();
    assert!(sandbox.run(&["--help"]).ok().contains("init"));
    assert!(
        sandbox
            .run(&["config", "--help"])
            .ok()
            .contains("--data-dir")
    );
    assert!(sandbox.run(&["--version"]).ok().starts_with("p2psip "));
}
