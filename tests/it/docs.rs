//! Documents that must not drift from their source.

/// `docs/protocol.md` is the team's shared `PROTOCOL.md`, copied into the
/// repository for its readers. When the shared copy is beside the checkout
/// (developers' machines and CI), they must be identical.
#[test]
fn protocol_copy_matches_the_shared_contract() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let shared = root.join("../shared/PROTOCOL.md");
    let Ok(shared) = std::fs::read_to_string(&shared) else {
        eprintln!("SKIPPED protocol_copy_matches_the_shared_contract: no ../shared/PROTOCOL.md beside this checkout");
        return;
    };
    let copy = std::fs::read_to_string(root.join("docs/protocol.md")).unwrap();
    assert!(
        copy == shared,
        "docs/protocol.md differs from ../shared/PROTOCOL.md: copy it again"
    );
}
