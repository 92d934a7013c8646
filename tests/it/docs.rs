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

/// ARCHITECTURE.md names, for each invariant, the tests that hold it: each
/// named test exists (a renamed or deleted test must update the document).
#[test]
fn every_test_the_architecture_names_exists() {
    let doc = read("ARCHITECTURE.md");
    let invariants = doc
        .split("## Invariants")
        .nth(1)
        .and_then(|rest| rest.split("## Cross-cutting concerns").next())
        .expect("an invariants section");
    let mut sources = String::new();
    for dir in ["tests/it", "actors/src", "src"] {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(dir);
        let mut stack = vec![root];
        while let Some(path) = stack.pop() {
            for entry in std::fs::read_dir(&path).unwrap().map(Result::unwrap) {
                let p = entry.path();
                if p.is_dir() {
                    stack.push(p);
                } else if p.extension().is_some_and(|e| e == "rs") {
                    sources.push_str(&std::fs::read_to_string(&p).unwrap());
                }
            }
        }
    }
    let mut named = 0;
    for quoted in invariants.split('`').skip(1).step_by(2) {
        let Some((_, test)) = quoted.rsplit_once("::") else {
            continue;
        };
        if test == "*" {
            continue;
        }
        named += 1;
        assert!(
            sources.contains(&format!("fn {test}(")),
            "ARCHITECTURE.md names `{quoted}`, which is no test"
        );
    }
    assert!(named >= 20, "the invariants name their tests ({named})");
}
