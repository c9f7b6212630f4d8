//! `p2psip init`: the data directory, its keys and its config file.

mod common;

use std::fs;
use std::path::Path;

use common::Sandbox;
use p2psip_overlay::identity::{NodeKey, UserKey};

/// The value after `label` in `init`'s text output.
fn field<'a>(stdout: &'a str, label: &str) -> &'a str {
    stdout
        .lines()
        .find_map(|line| line.strip_prefix(label))
        .map(str::trim)
        .unwrap_or_else(|| panic!("no {label} in {stdout:?}"))
}

#[cfg(unix)]
fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt as _;
    fs::metadata(path).expect("exists").permissions().mode() & 0o777
}

#[test]
fn init_creates_private_keys_and_prints_the_node_id_and_aor() {
    let sandbox = Sandbox::new();
    let data = sandbox.path("data/p2psip");
    let run = sandbox.run(&["init", "--data-dir", "data/p2psip"]);
    let stdout = run.ok();

    for file in ["node.key", "user.key", "config.toml"] {
        assert!(data.join(file).is_file(), "{file} missing");
    }
    #[cfg(unix)]
    {
        assert_eq!(mode(&data), 0o700);
        assert_eq!(mode(&data.join("node.key")), 0o600);
        assert_eq!(mode(&data.join("user.key")), 0o600);
    }
    // No temporary file is left behind.
    assert_eq!(fs::read_dir(&data).expect("listable").count(), 3);

    // What is printed is what the keys say.
    let node = NodeKey::load_or_create(&data).expect("node key");
    let user = UserKey::load_or_create(&data).expect("user key");
    assert_eq!(field(stdout, "Node-ID:"), node.node_id().to_string());
    assert_eq!(field(stdout, "AOR:"), user.self_certifying_aor());
    assert_eq!(field(stdout, "data dir:"), data.display().to_string());
}

#[test]
fn init_prints_json_and_force_keeps_the_keys() {
    let sandbox = Sandbox::new();
    let first = sandbox.run(&["init", "--data-dir", "d", "--json"]);
    let first: serde_json::Value = serde_json::from_str(first.ok()).expect("JSON");
    let node_id = first["node_id"].as_str().expect("node_id");
    assert!(node_id.parse::<libp2p::PeerId>().is_ok(), "{node_id}");
    assert!(
        first["aor"]
            .as_str()
            .is_some_and(|aor| aor.ends_with("@key.p2psip"))
    );

    fs::write(sandbox.path("d/config.toml"), "# edited\n").expect("writable");
    let again = sandbox.run(&["init", "--data-dir", "d", "--json", "--force"]);
    let again: serde_json::Value = serde_json::from_str(again.ok()).expect("JSON");
    assert_eq!(again, first, "--force keeps the keys");
    let config = fs::read_to_string(sandbox.path("d/config.toml")).expect("readable");
    assert!(
        config.contains("# name = \"p2psip\""),
        "a fresh config: {config}"
    );
}

#[test]
fn init_twice_refuses_and_changes_nothing() {
    let sandbox = Sandbox::new();
    sandbox.run(&["init", "--data-dir", "d"]).ok();
    let config = sandbox.path("d/config.toml");
    fs::write(&config, "# mine\n").expect("writable");
    let key = fs::read(sandbox.path("d/node.key")).expect("readable");

    let line = sandbox
        .run(&["init", "--data-dir", "d"])
        .fails(1)
        .to_owned();
    assert!(
        line.contains("already exists") && line.contains("--force"),
        "{line}"
    );
    assert!(line.contains(&config.display().to_string()), "{line}");
    assert_eq!(fs::read_to_string(&config).expect("readable"), "# mine\n");
    assert_eq!(fs::read(sandbox.path("d/node.key")).expect("readable"), key);
}

#[test]
fn init_takes_the_data_dir_from_the_environment() {
    let sandbox = Sandbox::new();
    let dir = sandbox.path("from-env");
    let dir = dir.to_str().expect("UTF-8");
    sandbox
        .run_with(&["init"], &[("P2PSIP_DATA_DIR", dir)])
        .ok();
    assert!(Path::new(dir).join("node.key").is_file());
}

#[cfg(target_os = "linux")]
#[test]
fn init_defaults_to_the_platform_data_and_config_dirs() {
    let sandbox = Sandbox::new();
    let stdout = sandbox.run(&["init"]).ok().to_owned();
    let data = sandbox.path(".local/share/p2psip");
    assert!(data.join("node.key").is_file());
    assert_eq!(field(&stdout, "data dir:"), data.display().to_string());
    // The config goes to the platform's config directory, where `p2psip config` reads it.
    let config = sandbox.path(".config/p2psip/config.toml");
    assert!(config.is_file());
    assert!(!data.join("config.toml").exists());
    assert_eq!(field(&stdout, "config:"), config.display().to_string());
    let shown = sandbox.run(&["config"]).ok().to_owned();
    assert!(shown.contains(&config.display().to_string()), "{shown}");
    // Running init again finds it there.
    let again = sandbox.run(&["init"]).fails(1).to_owned();
    assert!(again.contains("already exists"), "{again}");
}

#[test]
fn init_where_no_directory_can_be_made_fails_in_one_line() {
    let sandbox = Sandbox::new();
    fs::write(sandbox.path("a-file"), "").expect("writable");
    let line = sandbox
        .run(&["init", "--data-dir", "a-file/data"])
        .fails(1)
        .to_owned();
    assert!(line.contains("cannot create the data directory"), "{line}");
    assert!(line.contains("--data-dir"), "{line}");
}

#[test]
fn a_damaged_key_is_named_with_what_to_do() {
    let sandbox = Sandbox::new();
    fs::create_dir(sandbox.path("d")).expect("writable");
    fs::write(sandbox.path("d/node.key"), "not a key").expect("writable");
    // Private, as a key file should be: a readable one would add a warning to the log.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let private = fs::Permissions::from_mode(0o600);
        fs::set_permissions(sandbox.path("d/node.key"), private).expect("chmod");
    }
    let line = sandbox
        .run(&["init", "--data-dir", "d"])
        .fails(1)
        .to_owned();
    assert!(
        line.contains("node.key") && line.contains("delete it"),
        "{line}"
    );
    assert!(
        !sandbox.path("d/config.toml").exists(),
        "no config for a failed init"
    );
}
