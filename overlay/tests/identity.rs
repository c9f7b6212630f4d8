//! Key files (created once with mode 0600, reused on restart) and self-certifying AORs.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use libp2p::identity::Keypair;
use p2psip_overlay::error::Error;
use p2psip_overlay::id::ResourceId;
use p2psip_overlay::identity::{
    NodeKey, UserKey, is_self_certified_by, is_self_certifying, self_certifying_aor,
};

#[test]
fn the_node_key_is_created_once_and_reused() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let first = NodeKey::load_or_create(&data_dir).unwrap();
    let again = NodeKey::load_or_create(&data_dir).unwrap();
    assert_eq!(first.node_id(), again.node_id());
    assert_eq!(first.node_id(), first.public().to_peer_id());
    let path = data_dir.join(NodeKey::FILE);
    let stored = Keypair::from_protobuf_encoding(&std::fs::read(&path).unwrap()).unwrap();
    assert_eq!(stored.public(), first.public());
    // No temporary file is left behind.
    let names: Vec<_> = std::fs::read_dir(&data_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, vec![std::ffi::OsString::from(NodeKey::FILE)]);
}

#[cfg(unix)]
#[test]
fn key_files_are_private() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("fresh");
    NodeKey::load_or_create(&data_dir).unwrap();
    UserKey::load_or_create(&data_dir).unwrap();
    for name in [NodeKey::FILE, UserKey::FILE] {
        let mode = std::fs::metadata(data_dir.join(name))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{name}");
    }
    let mode = std::fs::metadata(&data_dir).unwrap().permissions().mode();
    assert_eq!(mode & 0o077, 0, "the directory is private too");
}

#[test]
fn the_user_key_is_another_file_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let node = NodeKey::load_or_create(dir.path()).unwrap();
    let user = UserKey::load_or_create(dir.path()).unwrap();
    assert_ne!(node.public(), user.public());
    let again = UserKey::load_or_create(dir.path()).unwrap();
    assert_eq!(user.public(), again.public());
    assert!(dir.path().join(UserKey::FILE).exists());
}

#[test]
fn a_damaged_key_file_is_a_key_error() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(NodeKey::FILE), b"not a key").unwrap();
    let error = NodeKey::load_or_create(dir.path()).unwrap_err();
    assert!(matches!(error, Error::Key { .. }), "{error}");
    assert!(error.to_string().contains("node.key"), "{error}");
}

#[test]
fn a_self_certifying_aor_is_stable_and_per_key() {
    let key = Keypair::ed25519_from_bytes([7; 32]).unwrap();
    let aor = self_certifying_aor(&key.public());
    // Part of the protocol: the same key gives the same AOR in every version.
    assert_eq!(aor, "sip:tilf3cfnguflrnclq3yanx5swz4lksrs@key.p2psip");
    assert_eq!(UserKey::from(key.clone()).self_certifying_aor(), aor);
    assert!(is_self_certifying(&aor));
    assert!(is_self_certified_by(&aor, &key.public()));

    let other = Keypair::ed25519_from_bytes([8; 32]).unwrap();
    let other_aor = self_certifying_aor(&other.public());
    assert_ne!(other_aor, aor);
    assert!(!is_self_certified_by(&aor, &other.public()));
    assert_ne!(
        ResourceId::for_aor(&aor).unwrap(),
        ResourceId::for_aor(&other_aor).unwrap()
    );
}

#[test]
fn ordinary_aors_are_not_self_certifying() {
    for aor in [
        "sip:bob@example.org",
        "sip:bob@key.p2psip",
        "sip:abcdefghijklmnopqrstuvwxyz234567@key.p2psip:5070",
        "sip:abcdefghijklmnopqrstuvwxyz23456@key.p2psip",
        "sip:abcdefghijklmnopqrstuvwxyz234561@key.p2psip",
        "not an aor",
    ] {
        assert!(!is_self_certifying(aor), "{aor}");
    }
    assert!(is_self_certifying(
        "sips:abcdefghijklmnopqrstuvwxyz234567@KEY.P2PSIP;transport=tls"
    ));
}
