//! `rules check` and `rules test` as library functions.

use idstream_rules::{check, run_cases, ErrorKind, Outcome, Ruleset, DEFAULT_RULESET};

#[test]
fn shipped_cases_pass_against_the_default_ruleset() {
    let rs = Ruleset::default_ruleset();
    let report = run_cases(&rs, "default-cases.yaml", include_str!("../default-cases.yaml")).unwrap();
    assert!(report.passed(), "{report}");
    assert_eq!(report.cases.len(), 6);
    assert!(report.to_string().ends_with(&format!("6 passed, 0 failed (ruleset {})", &rs.version()[..12])));
}

#[test]
fn failing_cases_show_a_diff() {
    let rs = Ruleset::default_ruleset();
    let cases = r#"
cases:
  - name: passes
    context: {provider: {status: approved, signature_covers_decision: true}}
    expect: {outcome: approve}
  - name: wrong outcome
    context: {provider: {status: approved, signature_covers_decision: true}, aml: {hits: 3}}
    expect: {outcome: approve, reasons: [kyc.approved]}
"#;
    let report = run_cases(&rs, "c.yaml", cases).unwrap();
    assert!(!report.passed());
    assert_eq!(report.failures(), 1);
    assert_eq!(report.cases[1].decision.outcome, Outcome::Review);
    let shown = report.to_string();
    for want in [
        "PASS passes",
        "FAIL wrong outcome (c.yaml:6:5)",
        "  outcome: expected approve, got review",
        "  - reasons expected but not given: kyc.approved",
        "  + reasons given but not expected: aml.hits",
        "  |   fired aml_hits [review] aml.hits: Possible sanctions / PEP / adverse-media match. (aml.hits=3)",
        "1 passed, 1 failed",
    ] {
        assert!(shown.contains(want), "missing `{want}` in:\n{shown}");
    }
}

#[test]
fn malformed_cases_are_located() {
    let rs = Ruleset::default_ruleset();
    let table = [
        (
            "cases:\n  - name: a\n    context: {liveness: {scor: 1}}\n    expect: {outcome: approve}\n",
            ErrorKind::UnknownField,
            "c.yaml:3:26: case `a`: unknown field `scor` in `liveness` (did you mean `score`?)",
        ),
        (
            "cases:\n  - name: a\n    context: {livenes: {}}\n    expect: {outcome: approve}\n",
            ErrorKind::UnknownField,
            "c.yaml:3:15: case `a`: unknown field `livenes` in the context (did you mean `liveness`?)",
        ),
        (
            "cases:\n  - name: a\n    context: {liveness: {score: high}}\n    expect: {outcome: approve}\n",
            ErrorKind::InvalidValue,
            "c.yaml:3:14: case `a`: invalid context: invalid type: string \"high\", expected f64",
        ),
        (
            "cases:\n  - name: a\n    expect: {outcome: maybe}\n",
            ErrorKind::InvalidValue,
            "c.yaml:3:23: case `a`: `outcome` must be decline, review or approve, not `maybe`",
        ),
        ("cases:\n  - name: a\n", ErrorKind::MissingField, "c.yaml:2:5: case `a`: case `a` is missing `expect`"),
    ];
    for (text, kind, want) in table {
        let errors = run_cases(&rs, "c.yaml", text).unwrap_err();
        let e = errors.iter().find(|e| e.kind == kind).unwrap_or_else(|| panic!("no {kind:?} in {errors:#?}"));
        assert!(e.to_string().starts_with(want), "`{e}` should start with `{want}`");
    }
}

#[test]
fn check_summarises_a_valid_ruleset_and_lists_errors_of_a_broken_one() {
    let s = check("default-ruleset.yaml", DEFAULT_RULESET).unwrap();
    assert_eq!((s.rules, s.decline_rules, s.review_rules, s.approve_rules, s.score_rules), (25, 8, 10, 1, 6));
    assert_eq!(s.version, Ruleset::default_ruleset().version());
    let shown = s.to_string();
    assert!(shown.starts_with("default-ruleset.yaml: ok\n  version: "), "{shown}");
    assert!(shown.contains("lists:   high_risk_countries"), "{shown}");

    let errors =
        check("bad.yaml", "version_label: x\nthresholds: {review_score: 1, decline_score: 2}\nrules: 3\n").unwrap_err();
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0].to_string(), "bad.yaml:3:8: `rules` must be a list");
}
