//! `idstream rules check|test|default` through the real binary: exit codes and messages a
//! compliance user acts on.

use std::process::Command;

fn idstream(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_idstream")).args(args).output().expect("run idstream");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

fn rules_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../idstream-rules")
}

#[test]
fn default_ruleset_checks_and_its_cases_pass() {
    let file = rules_dir().join("default-ruleset.yaml");
    let (ok, text) = idstream(&["rules", "check", file.to_str().unwrap()]);
    assert!(ok, "{text}");
    assert!(text.contains("version:"), "{text}");
    let cases = rules_dir().join("default-cases.yaml");
    let (ok, text) = idstream(&["rules", "test", file.to_str().unwrap(), cases.to_str().unwrap()]);
    assert!(ok, "{text}");
    assert!(text.contains(" 0 failed"), "{text}");
    let (ok, text) = idstream(&["rules", "default"]);
    assert!(ok && text.contains("rules:"), "{text}");
}

#[test]
fn broken_ruleset_fails_with_file_rule_and_position() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("broken.yaml");
    std::fs::write(
        &file,
        "version_label: t\nthresholds: {review_score: 10, decline_score: 20}\nrules:\n  - id: bad\n    when: nosuch.field > 1\n    outcome: decline\n    reason: x.y\n    message: m\n",
    )
    .unwrap();
    let (ok, text) = idstream(&["rules", "check", file.to_str().unwrap()]);
    assert!(!ok, "a broken ruleset must fail: {text}");
    assert!(text.contains("broken.yaml") && text.contains("bad") && text.contains(":5:"), "{text}");

    // A cases file whose expectation is wrong: `rules test` exits non-zero and says which.
    let cases = dir.path().join("cases.yaml");
    std::fs::write(
        &cases,
        "cases:\n  - name: empty context is approved\n    context: {}\n    expect: {outcome: approve}\n",
    )
    .unwrap();
    let default = rules_dir().join("default-ruleset.yaml");
    let (ok, text) = idstream(&["rules", "test", default.to_str().unwrap(), cases.to_str().unwrap()]);
    assert!(!ok, "{text}");
    assert!(text.contains("FAIL empty context is approved"), "{text}");
}
