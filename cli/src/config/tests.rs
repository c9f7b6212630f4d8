use std::path::Path;

use super::*;

fn parse(text: &str) -> Result<Config, String> {
    Config::parse(text, Path::new("/x/config.toml")).map_err(|e| e.to_string())
}

/// The template with every `# key = value` line uncommented.
fn uncommented_template() -> String {
    TEMPLATE
        .lines()
        .map(|line| match line.strip_prefix("# ") {
            Some(rest) if is_key_line(rest) => rest,
            _ => line,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn is_key_line(line: &str) -> bool {
    line.split_once(" = ").is_some_and(|(key, _)| {
        !key.is_empty() && key.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
    })
}

/// Every key of a TOML table, as dotted paths.
fn keys(table: &toml::Table, prefix: &str, out: &mut Vec<String>) {
    for (key, value) in table {
        let path = format!("{prefix}{key}");
        match value {
            toml::Value::Table(inner) => keys(inner, &format!("{path}."), out),
            _ => out.push(path),
        }
    }
    out.sort();
}

#[test]
fn no_file_content_means_the_defaults() {
    assert_eq!(parse(""), Ok(Config::default()));
    assert_eq!(parse(TEMPLATE), Ok(Config::default()));
}

#[test]
fn the_template_shows_every_key_at_its_default() {
    let uncommented = parse(&uncommented_template()).expect("the uncommented template parses");
    let mut expected = Config {
        data_dir: Some("/path/to/p2psip".into()),
        ..Config::default()
    };
    expected.overlay.enrollment_ca = Some("enrollment-ca.pub".into());
    expected.overlay.node_certificate = Some("node.cert".into());
    expected.overlay.aor_certificates = vec!["alice.cert".into()];
    // Optional keys with no default value show an example.
    expected.media.address = Some([192, 0, 2, 10].into());
    expected.sip.require_auth = Some(true);
    assert_eq!(uncommented, expected);

    let (mut documented, mut known) = (Vec::new(), Vec::new());
    let template: toml::Table = toml::from_str(&uncommented_template()).expect("TOML");
    keys(&template, "", &mut documented);
    let serialized = toml::Table::try_from(&expected).expect("a config serializes");
    keys(&serialized, "", &mut known);
    assert_eq!(documented, known);
}

#[test]
fn printed_config_reads_back_the_same() {
    let mut config = parse(
        "data_dir = \"/d\"\n[overlay]\nname = \"lab\"\nlisten = [\"/ip4/0.0.0.0/tcp/4001\", \
         \"/ip6/::/udp/4001/quic-v1\"]\nreplicas = 5\nmdns = false\n[sip]\nlisten = \
         [\"udp:127.0.0.1:5070\", \"tls:[::1]:5061\"]\n[control]\nlisten = \"127.0.0.1:7000\"\n",
    )
    .expect("a valid config");
    let text = toml::to_string_pretty(&config).expect("prints");
    assert_eq!(parse(&text), Ok(config.clone()));
    config.data_dir = None;
    let json = serde_json::to_string(&config).expect("prints as JSON");
    assert_eq!(serde_json::from_str::<Config>(&json).ok(), Some(config));
}

#[test]
fn an_unknown_key_names_its_line_its_table_and_the_known_keys() {
    let text = "[overlay]\nname = \"p2psip\"\n\n[sip]\nlisen = [\"127.0.0.1:5060\"]\n";
    assert_eq!(
        parse(text),
        Err(
            "/x/config.toml line 5, column 1: unknown key `lisen` in [sip]; known keys: listen, \
             require_auth, realm, users"
                .into()
        )
    );
    let error = parse("overlay.mnds = false\n").expect_err("unknown");
    assert!(
        error.contains("line 1") && error.contains("unknown key `mnds` in [overlay]"),
        "{error}"
    );
    let error = parse("[sipp]\n").expect_err("unknown table");
    assert!(
        error.contains("line 1") && error.contains("unknown key `sipp` at the top level"),
        "{error}"
    );
    assert!(
        error.contains("known keys: data_dir, overlay, sip, relay, media, control"),
        "{error}"
    );
}

#[test]
fn a_wrong_type_names_its_line_and_key() {
    let error = parse("[overlay]\nreplicas = 3\nmdns = \"yes\"\n").expect_err("wrong type");
    assert_eq!(
        error,
        "/x/config.toml line 3, column 8: bad value for `mdns` in [overlay]: write a boolean, \
         not string \"yes\""
    );
    let error = parse("[control]\nlisten = 8080\n").expect_err("wrong type");
    assert!(
        error.contains("line 2") && error.contains("`listen` in [control]"),
        "{error}"
    );
}

#[test]
fn a_bad_multiaddr_names_its_line_and_key() {
    let text =
        "[overlay]\nlisten = [\n  \"/ip4/0.0.0.0/udp/0/quic-v1\",\n  \"/ip4/1.2.3/udp/9\",\n]\n";
    let error = parse(text).expect_err("bad multiaddr");
    assert!(
        error.starts_with("/x/config.toml line 4, column 3: bad value for `listen` in [overlay]:"),
        "{error}"
    );
    assert!(
        error.contains("`/ip4/1.2.3/udp/9` is not a multiaddr"),
        "{error}"
    );

    let error =
        parse("[overlay]\nbootstrap = [\"/ip4/192.0.2.1/tcp/4001\"]\n").expect_err("no peer");
    assert!(
        error.contains("line 2") && error.contains("`bootstrap` in [overlay]"),
        "{error}"
    );
    assert!(error.contains("/p2p/<peer id>"), "{error}");
}

#[test]
fn checked_values_name_their_line() {
    for (text, line, key) in [
        ("[overlay]\nname = \"a b\"\n", 2, "name"),
        ("[overlay]\n\nreplicas = 0\n", 3, "replicas"),
        ("[overlay]\nnode_id_work = 25\n", 2, "node_id_work"),
        ("[overlay]\nlisten = []\n", 2, "listen"),
        ("[sip]\nlisten = [\"sctp:127.0.0.1:5060\"]\n", 2, "listen"),
    ] {
        let error = parse(text).expect_err(text);
        assert!(
            error.contains(&format!("line {line},")) && error.contains(&format!("`{key}`")),
            "{error}"
        );
    }
}

#[test]
fn a_syntax_error_names_its_line() {
    let error = parse("[overlay]\nname = \n").expect_err("no value");
    assert!(
        error.starts_with("/x/config.toml line 2, column"),
        "{error}"
    );
    assert!(!error.contains('\n'), "{error}");
}

#[test]
fn paths_in_a_file_are_relative_to_its_folder() {
    let mut config =
        parse("data_dir = \"data\"\n[overlay]\nenrollment_ca = \"/ca.pub\"\n").expect("valid");
    config.resolve_paths(Path::new("/etc/p2psip"));
    assert_eq!(config.data_dir, Some("/etc/p2psip/data".into()));
    assert_eq!(config.overlay.enrollment_ca, Some("/ca.pub".into()));
}

#[test]
fn relay_caps_of_zero_name_their_line() {
    let error = parse("[relay]\nmode = \"on\"\nmax_circuits = 0\n").expect_err("zero");
    assert!(
        error.contains("line 3") && error.contains("max_circuits"),
        "{error}"
    );
    let error = parse("[relay]\nmode = \"sometimes\"\n").expect_err("mode");
    assert!(
        error.contains("line 2") && error.contains("auto") && error.contains("off"),
        "{error}"
    );
    let config = parse("[relay]\nmode = \"off\"\nreservations = 0\n").expect("valid");
    assert_eq!(config.relay.mode(), p2psip_overlay::network::Relay::Off);
    assert_eq!(config.relay.reservations, 0);
}

#[test]
fn media_keys_name_their_line() {
    let error = parse("[media]\nmax_sessions = 0\n").expect_err("zero");
    assert!(
        error.contains("line 2") && error.contains("max_sessions"),
        "{error}"
    );
    let error = parse("[media]\naddress = \"here\"\n").expect_err("not an address");
    assert!(
        error.contains("line 2") && error.contains("address"),
        "{error}"
    );
    let config = parse("[media]\nanchor = false\nidle_seconds = 30\n").expect("valid");
    let media = config.media.config();
    assert!(!media.enabled);
    assert_eq!(media.idle_timeout, std::time::Duration::from_secs(30));
}

#[test]
fn users_are_checked_where_they_are_written() {
    let sha = "a".repeat(64);
    let text = format!(
        "[sip]\nlisten = [\"192.0.2.1:5060\"]\n\n[sip.users.alice]\nha1_sha256 = \"{sha}\"\n"
    );
    let config = parse(&text).expect("a user with a hash");
    assert_eq!(
        config.sip.users["alice"].ha1_sha256.as_deref(),
        Some(sha.as_str())
    );
    let short = "[sip.users.alice]\nha1_sha256 = \"abc\"\n";
    let error = parse(short).unwrap_err();
    assert!(
        error.contains("line 1") && error.contains("ha1_sha256 must be 64 hex digits"),
        "{error}"
    );
    let empty = "\n[sip.users.bob]\n";
    let error = parse(empty).unwrap_err();
    assert!(
        error.contains("line 2") && error.contains("p2psip user add"),
        "{error}"
    );
    let unknown = "[sip.users.bob]\npasword = \"x\"\n";
    assert!(parse(unknown).unwrap_err().contains("pasword"));
}
