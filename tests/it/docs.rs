//! Documents that must not drift from their source.

use skald_protocol::{CloseCode, ErrorCode};

fn read(path: &str) -> String {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(root.join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// `docs/protocol.md` is the team's shared `PROTOCOL.md`, copied into the
/// repository for its readers. Where the shared copy is beside the
/// checkout (developers' machines and CI), they must be identical.
#[test]
fn protocol_copy_matches_the_shared_contract() {
    let copy = read("docs/protocol.md");
    let shared = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/PROTOCOL.md");
    if let Ok(shared) = std::fs::read_to_string(&shared) {
        assert!(
            copy == shared,
            "docs/protocol.md differs from ../shared/PROTOCOL.md: copy it again"
        );
    }
}

/// Whether or not the shared copy is here: every error code and close code
/// of the protocol crate is in the committed contract, and the contract's
/// tables name no code the crate lacks.
#[test]
fn the_protocol_types_are_the_committed_contract() {
    let contract = read("docs/protocol.md");
    for code in ErrorCode::ALL {
        assert!(
            contract.contains(&format!("| `{}` |", code.as_str())),
            "error code {} is not in docs/protocol.md",
            code.as_str()
        );
    }
    let table = contract
        .split("## Error codes")
        .nth(1)
        .and_then(|rest| rest.split("## Close codes").next())
        .expect("an error code table");
    for line in table.lines().filter(|l| l.starts_with("| `")) {
        let code = line.split('`').nth(1).unwrap();
        assert!(
            ErrorCode::ALL.iter().any(|c| c.as_str() == code),
            "docs/protocol.md lists {code}, which the protocol crate does not know"
        );
    }
    let close = contract
        .split("## Close codes")
        .nth(1)
        .expect("a close code section");
    for n in [1000, 1001, 1009, 1011, 4400, 4401, 4408, 4429] {
        assert!(close.contains(&n.to_string()), "close code {n}");
        assert!(
            CloseCode::from_u16(n).is_some(),
            "close code {n} in the crate"
        );
    }
}
