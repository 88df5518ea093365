//! Data-driven tests of the pure rules core: the default ruleset rule by rule, precedence,
//! thresholds, evaluation errors, and every load-time validation error with its position.

use idstream_core::event::{Checks, FaceMatchCheck, IdentityEvent, LivenessCheck, Provider, Status};
use idstream_core::signature::Scheme;
use idstream_rules::{Context, Enrichment, ErrorKind, Outcome, Ruleset};
use serde_json::{json, Value};

/// An honest, fully verified user: every check passes and the provider approved.
fn honest() -> Value {
    json!({
        "document": {"type": "Passport", "number": "C01X00T47", "expiry": "2031-01-01", "issuing_country": "DEU",
                     "first_name": "Anna", "last_name": "Schmidt", "date_of_birth": "1990-04-02", "age": 35, "expired": false},
        "liveness": {"score": 96.5, "method": "passive"},
        "face_match": {"score": 91.0},
        "aml": {"hits": 0},
        "ip": {"country": "DE", "vpn": false, "proxy": false, "tor": false, "hosting": false, "risk_score": 12.0},
        "phone": {"number": "+4915112345678", "disposable": false, "virtual": false},
        "email": {"address": "anna@example.de", "disposable": false, "breached": false},
        "provider": {"status": "approved", "raw_status": "Approved", "signature_covers_decision": true}
    })
}

/// `base` with `patch` merged in (objects recursively, anything else replaced).
fn merge(base: &mut Value, patch: &Value) {
    match (base, patch) {
        (Value::Object(b), Value::Object(p)) => {
            for (k, v) in p {
                merge(b.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
        (b, p) => *b = p.clone(),
    }
}

fn ctx(patch: Value) -> Context {
    let mut v = honest();
    merge(&mut v, &patch);
    serde_json::from_value(v).expect("test context is well-formed")
}

/// The one assertion helper: outcome, fired rule ids (in order) and score.
#[track_caller]
fn check(rs: &Ruleset, name: &str, c: &Context, outcome: Outcome, fired: &[&str], score: f64) {
    let d = rs.evaluate(c);
    let got: Vec<&str> = d.fired.iter().map(|f| f.rule_id.as_str()).collect();
    assert_eq!((d.outcome, got.as_slice(), d.score), (outcome, fired, score), "case `{name}`:\n{d}");
    assert!(d.errors.is_empty(), "case `{name}` has errors:\n{d}");
    assert_eq!(d.ruleset_version, rs.version());
}

use Outcome::{Approve, Decline, Review};

#[test]
fn default_rules_fire_and_stay_quiet() {
    let rs = Ruleset::default_ruleset();
    let ok = "approve_clean";
    #[rustfmt::skip]
    let table: Vec<(&str, Value, Outcome, Vec<&str>, f64)> = vec![
        ("honest user", json!({}), Approve, vec![ok], 0.0),
        ("blocklisted document", json!({"blocklist": {"document": true}}), Decline, vec!["blocklist_document", ok], 0.0),
        ("blocklisted face", json!({"blocklist": {"face": true}}), Decline, vec!["blocklist_face", ok], 0.0),
        ("blocklisted phone", json!({"blocklist": {"phone": true}}), Decline, vec!["blocklist_phone", ok], 0.0),
        ("blocklisted email", json!({"blocklist": {"email": true}}), Decline, vec!["blocklist_email", ok], 0.0),
        ("provider declined", json!({"provider": {"status": "declined"}}), Decline, vec!["provider_declined"], 0.0),
        ("expired document", json!({"document": {"expired": true}}), Decline, vec!["document_expired", ok], 0.0),
        ("expiry unknown", json!({"document": {"expired": null, "expiry": null}}), Approve, vec![ok], 0.0),
        ("17 years old", json!({"document": {"age": 17}}), Decline, vec!["underage", ok], 0.0),
        ("18 years old", json!({"document": {"age": 18}}), Approve, vec![ok], 0.0),
        ("liveness 49.9", json!({"liveness": {"score": 49.9}}), Decline, vec!["liveness_low", ok], 0.0),
        ("liveness 50", json!({"liveness": {"score": 50.0}}), Approve, vec![ok], 0.0),
        ("face match 69", json!({"face_match": {"score": 69.0}}), Review, vec!["face_match_low", ok], 0.0),
        ("face match 70", json!({"face_match": {"score": 70.0}}), Approve, vec![ok], 0.0),
        ("one AML hit", json!({"aml": {"hits": 1}}), Review, vec!["aml_hits", ok], 0.0),
        ("provider in review", json!({"provider": {"status": "in_review"}}), Review, vec!["provider_in_review"], 0.0),
        ("vpn", json!({"ip": {"vpn": true}}), Review, vec!["ip_anonymised", ok], 0.0),
        ("tor", json!({"ip": {"tor": true}}), Review, vec!["ip_anonymised", ok], 0.0),
        ("proxy", json!({"ip": {"proxy": true}}), Review, vec!["ip_anonymised", ok], 0.0),
        ("hosting", json!({"ip": {"hosting": true}}), Review, vec!["ip_anonymised", ok], 0.0),
        ("high-risk IP country", json!({"ip": {"country": "IR"}}), Review, vec!["high_risk_country", ok], 0.0),
        ("high-risk document", json!({"document": {"issuing_country": "PRK"}}), Review, vec!["high_risk_country", ok], 0.0),
        ("configured list overrides default", json!({"lists": {"high_risk_countries": ["DE"]}}), Review, vec!["high_risk_country", ok], 0.0),
        ("document reused", json!({"velocity": {"document_subjects": 1}}), Review, vec!["fraud_ring_document", ok], 0.0),
        ("phone reused", json!({"velocity": {"phone_subjects": 3}}), Review, vec!["fraud_ring_phone", ok], 0.0),
        ("email/face reuse alone", json!({"velocity": {"email_subjects": 2, "face_subjects": 1}}), Approve, vec![ok], 0.0),
        ("first name differs", json!({"subject": {"expected_first_name": "Berta"}}), Review, vec!["name_mismatch", ok], 0.0),
        ("last name differs", json!({"subject": {"expected_last_name": "Meyer"}}), Review, vec!["name_mismatch", ok], 0.0),
        ("name matches ignoring case", json!({"subject": {"expected_first_name": "ANNA", "expected_last_name": "schmidt"}}), Approve, vec![ok], 0.0),
        ("date of birth differs", json!({"subject": {"expected_date_of_birth": "1990-04-03"}}), Review, vec!["dob_mismatch", ok], 0.0),
        ("date of birth matches", json!({"subject": {"expected_date_of_birth": "1990-04-02"}}), Approve, vec![ok], 0.0),
        ("simple signature only", json!({"provider": {"signature_covers_decision": false}}), Review, vec!["signature_partial"], 0.0),
        ("risky IP alone scores under review", json!({"ip": {"risk_score": 80.0}}), Approve, vec!["ip_risky", ok], 40.0),
        ("disposable phone", json!({"phone": {"disposable": true}}), Approve, vec!["phone_disposable", ok], 30.0),
        ("disposable + virtual phone reach review", json!({"phone": {"disposable": true, "virtual": true}}), Review, vec!["phone_disposable", "phone_virtual", ok], 50.0),
        ("disposable + breached email", json!({"email": {"disposable": true, "breached": true}}), Approve, vec!["email_disposable", "email_breached", ok], 40.0),
        ("declined before", json!({"history": {"previous_declines": 1}}), Approve, vec!["previous_declines", ok], 40.0),
        ("every soft signal declines",
            json!({"ip": {"risk_score": 90.0}, "phone": {"disposable": true, "virtual": true}, "email": {"disposable": true, "breached": true}}),
            Decline, vec!["ip_risky", "phone_disposable", "phone_virtual", "email_disposable", "email_breached", ok], 130.0),
        ("provider still in progress", json!({"provider": {"status": "in_progress"}}), Review, vec![], 0.0),
        ("no checks at all but approved", Value::Null, Approve, vec![ok], 0.0),
    ];
    for (name, patch, outcome, fired, score) in table {
        let c = if patch.is_null() {
            serde_json::from_value(json!({"provider": {"status": "approved", "signature_covers_decision": true}}))
                .unwrap()
        } else {
            ctx(patch)
        };
        check(&rs, name, &c, outcome, &fired, score);
    }
}

#[test]
fn reasons_and_explanations() {
    let rs = Ruleset::default_ruleset();
    let table: Vec<(Value, Outcome, Vec<&str>)> = vec![
        (json!({}), Approve, vec!["kyc.approved"]),
        (json!({"blocklist": {"email": true}, "aml": {"hits": 2}}), Decline, vec!["blocklist.email"]),
        (json!({"provider": {"signature_covers_decision": false}}), Review, vec!["provider.signature_partial"]),
        (json!({"provider": {"status": "in_progress"}}), Review, vec!["rules.no_approval"]),
        (
            json!({"phone": {"disposable": true, "virtual": true}}),
            Review,
            vec!["phone.disposable", "phone.virtual", "score.review"],
        ),
    ];
    for (patch, outcome, reasons) in table {
        let d = rs.evaluate(&ctx(patch.clone()));
        assert_eq!(
            (d.outcome, d.reasons.iter().map(String::as_str).collect::<Vec<_>>()),
            (outcome, reasons),
            "{patch}"
        );
    }
    // Values read: every field the condition references, absent ones as null.
    let d = rs.evaluate(&ctx(json!({"ip": {"country": "IR"}, "document": {"issuing_country": null}})));
    let f = d.fired.iter().find(|f| f.rule_id == "high_risk_country").unwrap();
    assert_eq!(f.values["ip.country"], json!("IR"));
    assert_eq!(f.values["document.issuing_country"], Value::Null);
    assert_eq!(f.values["lists.high_risk_countries"], json!(["KP", "PRK", "IR", "IRN", "MM", "MMR"]));
    assert_eq!(f.reason, "country.high_risk");
    assert_eq!(f.outcome, Some(Review));
}

fn event(scheme: Scheme, status: Status) -> IdentityEvent {
    IdentityEvent {
        id: "evt".into(),
        offset: 1,
        tenant: "acme".into(),
        source: "didit".into(),
        provider: Provider::Didit,
        kind: "verification.status_updated".into(),
        provider_kind: "status.updated".into(),
        provider_event_id: None,
        session_id: Some("s1".into()),
        subject: Some("user-1".into()),
        status: Some(status),
        provider_status: Some(format!("{status:?}")),
        occurred_at: "2025-06-15T12:00:00Z".into(),
        received_at: "2025-06-15T12:00:00Z".into(),
        signature: scheme,
        unauthenticated_decision: !scheme.covers_body(),
        dedupe_key: "k".into(),
        checks: Checks {
            liveness: vec![LivenessCheck { score: Some(97.0), ..Default::default() }],
            face_matches: vec![FaceMatchCheck { score: Some(93.0), ..Default::default() }],
            ..Default::default()
        },
    }
}

#[test]
fn simple_signature_never_auto_approves() {
    let rs = Ruleset::default_ruleset();
    const NOW: i64 = 1_749_988_800;
    let approved = Context::from_event(&event(Scheme::DiditV2, Status::Approved), NOW, &Enrichment::default());
    assert_eq!(rs.evaluate(&approved).outcome, Approve);
    let simple = Context::from_event(&event(Scheme::DiditSimple, Status::Approved), NOW, &Enrichment::default());
    let d = rs.evaluate(&simple);
    assert_eq!(d.outcome, Review, "{d}");
    assert!(d.reasons.contains(&"provider.signature_partial".to_owned()));

    // Whatever else the context says, a decision not covered by the signature is never approve.
    let patches = [json!({}), json!({"ip": {"risk_score": 80.0}}), json!({"history": {"previous_approvals": 5}})];
    for p in patches {
        let mut c = ctx(p);
        c.provider.signature_covers_decision = false;
        assert_ne!(rs.evaluate(&c).outcome, Approve);
    }
}

/// A small ruleset for precedence, threshold and error behaviour.
const MINI: &str = r#"
version_label: mini
thresholds: {review_score: 10, decline_score: 20}
rules:
  - {id: d, when: "subject.d == true", outcome: decline, reason: t.d, message: d}
  - {id: r, when: "subject.r == true", outcome: review, reason: t.r, message: r}
  - {id: a, when: "subject.a == true", outcome: approve, reason: t.a, message: a}
  - {id: s, when: "has(subject.s)", score: 5, reason: t.s, message: s}
  - {id: s2, when: "has(subject.s2)", score: 5, reason: t.s2, message: s2}
  - {id: s3, when: "has(subject.s3)", score: 10, reason: t.s3, message: s3}
  - {id: boom, when: "has(subject.boom) && liveness.score < 50.0", outcome: decline, reason: t.boom, message: boom}
  - {id: notbool, when: "has(subject.notbool) ? subject.notbool : false", outcome: review, reason: t.nb, message: nb}
"#;

fn subj(v: Value) -> Context {
    serde_json::from_value(json!({ "subject": v })).unwrap()
}

#[test]
fn precedence_and_thresholds() {
    let rs = Ruleset::parse("mini.yaml", MINI).unwrap();
    #[rustfmt::skip]
    let table: Vec<(&str, Value, Outcome, Vec<&str>, f64)> = vec![
        ("decline beats review and approve", json!({"d": true, "r": true, "a": true}), Decline, vec!["d", "r", "a"], 0.0),
        ("review beats approve", json!({"r": true, "a": true}), Review, vec!["r", "a"], 0.0),
        ("approve alone", json!({"a": true}), Approve, vec!["a"], 0.0),
        ("nothing fired: review", json!({}), Review, vec![], 0.0),
        ("score under review threshold", json!({"a": true, "s": 1}), Approve, vec!["a", "s"], 5.0),
        ("score at review threshold", json!({"a": true, "s": 1, "s2": 1}), Review, vec!["a", "s", "s2"], 10.0),
        ("score at decline threshold", json!({"a": true, "s": 1, "s2": 1, "s3": 1}), Decline, vec!["a", "s", "s2", "s3"], 20.0),
        ("score review does not soften a decline", json!({"d": true, "s3": 1}), Decline, vec!["d", "s3"], 10.0),
    ];
    for (name, s, outcome, fired, score) in table {
        check(&rs, name, &subj(s), outcome, &fired, score);
    }
}

#[test]
fn evaluation_errors_fall_back_to_review() {
    let rs = Ruleset::parse("mini.yaml", MINI).unwrap();
    // An absent score compared with a number: reported, not a panic, and no approval.
    let d = rs.evaluate(&subj(json!({"a": true, "boom": 1})));
    assert_eq!(d.outcome, Review, "{d}");
    assert_eq!(d.errors.len(), 1);
    assert_eq!(d.errors[0].rule_id, "boom");
    assert!(d.errors[0].message.contains("absent: liveness.score"), "{}", d.errors[0].message);
    assert_eq!(d.reasons, ["rules.error"]);
    // An error never softens a decline found by another rule.
    let d = rs.evaluate(&subj(json!({"d": true, "boom": 1})));
    assert_eq!((d.outcome, d.errors.len()), (Decline, 1));
    // A condition that is not a bool at run time.
    let d = rs.evaluate(&subj(json!({"a": true, "notbool": "yes"})));
    assert_eq!(d.outcome, Review);
    assert_eq!(d.errors[0].rule_id, "notbool");
    assert!(d.errors[0].message.contains("not a bool"), "{}", d.errors[0].message);
}

#[test]
fn default_ruleset_parses_with_a_stable_version() {
    let a = Ruleset::default_ruleset();
    let b = Ruleset::parse("elsewhere.yaml", idstream_rules::DEFAULT_RULESET).unwrap();
    assert_eq!(a.version(), b.version());
    assert_eq!(a.version().len(), 64);
    assert!(a.version().chars().all(|c| c.is_ascii_hexdigit()));
    // Comments and layout are not content; wording is.
    let reformatted = idstream_rules::DEFAULT_RULESET
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .collect::<Vec<_>>()
        .join("\n");
    assert_eq!(Ruleset::parse("x", &reformatted).unwrap().version(), a.version());
    let reworded = idstream_rules::DEFAULT_RULESET.replace("Liveness score below 50.", "Liveness too low.");
    assert_ne!(Ruleset::parse("x", &reworded).unwrap().version(), a.version());
    assert_eq!(a.rules().count(), 25);
    assert_eq!(
        a.reads_of("high_risk_country").unwrap(),
        ["document.issuing_country", "ip.country", "lists.high_risk_countries"]
    );
}

/// A document with the standard header, `rules:` starting on line 4.
fn doc(rules: &str) -> String {
    format!("version_label: t\nthresholds: {{review_score: 50, decline_score: 100}}\nrules:\n{rules}")
}

/// One rule whose `when` is on line 5, its value starting at column 11.
fn rule(when: &str) -> String {
    doc(&format!("  - id: r1\n    when: {when}\n    outcome: review\n    reason: a.b\n    message: m\n"))
}

#[test]
fn every_validation_error_is_located() {
    #[rustfmt::skip]
    let table: Vec<(&str, String, ErrorKind, &str, &str)> = vec![
        ("unknown top-level field", doc("  []\nrule: 1\n").replace("  []\n", "  - {id: a, when: 'true', outcome: review, reason: a.b, message: m}\n"),
            ErrorKind::UnknownField, "f.yaml:5:1: ", "unknown field `rule` in the ruleset (did you mean `rules`?)"),
        ("unknown rule field", doc("  - id: r1\n    when: 'true'\n    outcom: review\n    reason: a.b\n    message: m\n"),
            ErrorKind::UnknownField, "f.yaml:6:5: rule `r1`: ", "unknown field `outcom` in rule `r1` (did you mean `outcome`?)"),
        ("duplicate rule id", doc("  - {id: r1, when: 'true', outcome: review, reason: a.b, message: m}\n  - {id: r1, when: 'true', outcome: review, reason: a.b, message: m}\n"),
            ErrorKind::DuplicateRuleId, "f.yaml:5:6: rule `r1`: ", "duplicate rule id `r1` (first defined at 4:6)"),
        ("invalid CEL", rule("liveness.score <"),
            ErrorKind::CelSyntax, "f.yaml:5:27: rule `r1`: in `when` at 1:17: ", "invalid CEL: Syntax error"),
        ("unknown variable", rule("livenes.score > 1"),
            ErrorKind::UnknownVariable, "f.yaml:5:11: rule `r1`: in `when` at 1:1: ", "unknown variable `livenes`"),
        ("unknown field of a group", rule("document.agee > 1"),
            ErrorKind::UnknownVariable, "f.yaml:5:19: rule `r1`: in `when` at 1:9: ", "unknown field `document.agee`"),
        ("undeclared list", rule("'x' in lists.sanctioned"),
            ErrorKind::Syntax, "f.yaml:5:", "invalid YAML"),
        ("undeclared list, quoted", rule("\"'x' in lists.sanctioned\""),
            ErrorKind::UnknownVariable, "f.yaml:5:24: rule `r1`: in `when` at 1:13: ", "unknown list `lists.sanctioned`"),
        ("bool compared with a number", rule("ip.vpn == 1"),
            ErrorKind::TypeMismatch, "f.yaml:5:18: rule `r1`: in `when` at 1:8: ", "compares `ip.vpn` (bool) with `1` (int)"),
        ("string ordered against a number", rule("document.number > 5"),
            ErrorKind::TypeMismatch, "f.yaml:5:27: rule `r1`: in `when` at 1:17: ", "orders `document.number` (string) with `5` (int)"),
        ("number compared with a string", rule("document.age == '18'"),
            ErrorKind::TypeMismatch, "f.yaml:5:24: rule `r1`: in `when` at 1:14: ", "compares `document.age` (int) with `'18'` (string)"),
        ("condition is not a bool", rule("document.age"),
            ErrorKind::TypeMismatch, "f.yaml:5:19: rule `r1`: in `when` at 1:9: ", "the condition must be a bool, but `document.age` is an int"),
        ("negating a number", rule("\"!document.age\""),
            ErrorKind::TypeMismatch, "f.yaml:5:21: rule `r1`: in `when` at 1:10: ", "`!` needs a bool, but `document.age` is an int"),
        ("field of a scalar", rule("document.age.years > 1"),
            ErrorKind::TypeMismatch, "f.yaml:5:23: rule `r1`: in `when` at 1:13: ", "`document.age` is an int; it has no field `years`"),
        ("number in a string list", rule("document.age in lists.high_risk_countries"),
            ErrorKind::TypeMismatch, "f.yaml:5:24: rule `r1`: in `when` at 1:14: ", "`document.age` is an int, but the list holds strings"),
        ("missing reason", doc("  - id: r1\n    when: 'true'\n    outcome: review\n    message: m\n"),
            ErrorKind::MissingReason, "f.yaml:4:5: rule `r1`: ", "the rule has no `reason` code"),
        ("malformed reason", doc("  - id: r1\n    when: 'true'\n    outcome: review\n    reason: Bad Reason\n    message: m\n"),
            ErrorKind::MissingReason, "f.yaml:7:13: rule `r1`: ", "`reason` must look like `code.like.this`"),
        ("reserved reason", doc("  - id: r1\n    when: 'true'\n    outcome: review\n    reason: rules.error\n    message: m\n"),
            ErrorKind::MissingReason, "f.yaml:7:13: rule `r1`: ", "`rules.error` is reserved for the engine"),
        ("neither outcome nor score", doc("  - id: r1\n    when: 'true'\n    reason: a.b\n    message: m\n"),
            ErrorKind::NoEffect, "f.yaml:4:5: rule `r1`: ", "neither `outcome` nor `score`"),
        ("invalid outcome", doc("  - id: r1\n    when: 'true'\n    outcome: block\n    reason: a.b\n    message: m\n"),
            ErrorKind::InvalidValue, "f.yaml:6:14: rule `r1`: ", "`outcome` must be decline, review or approve, not `block`"),
        ("score not a number", doc("  - id: r1\n    when: 'true'\n    score: high\n    reason: a.b\n    message: m\n"),
            ErrorKind::InvalidValue, "f.yaml:6:12: rule `r1`: ", "`score` must be a number"),
        ("missing when", doc("  - id: r1\n    outcome: review\n    reason: a.b\n    message: m\n"),
            ErrorKind::MissingField, "f.yaml:4:5: rule `r1`: ", "rule `r1` is missing `when`"),
        ("missing id", doc("  - when: 'true'\n    outcome: review\n    reason: a.b\n    message: m\n"),
            ErrorKind::MissingField, "f.yaml:4:5: ", "rule #1 is missing `id`"),
        ("thresholds out of order", "version_label: t\nthresholds: {review_score: 100, decline_score: 50}\nrules: []\n".to_owned(),
            ErrorKind::ThresholdOrder, "f.yaml:2:14: ", "`thresholds.review_score` (100) must be below `decline_score` (50)"),
        ("missing thresholds", "version_label: t\nrules: []\n".to_owned(),
            ErrorKind::MissingField, "f.yaml:1:1: ", "the ruleset is missing `thresholds`"),
        ("invalid YAML", "version_label: t\nrules: [\n".to_owned(),
            ErrorKind::Syntax, "f.yaml:3:1: ", "invalid YAML"),
        ("duplicate key", "version_label: t\nversion_label: u\n".to_owned(),
            ErrorKind::Syntax, "f.yaml:2:1: ", "duplicate key `version_label`"),
    ];
    for (name, text, kind, prefix, message) in table {
        let errors = Ruleset::parse("f.yaml", &text).expect_err(name);
        let e = errors.iter().find(|e| e.kind == kind).unwrap_or_else(|| panic!("{name}: no {kind:?} in {errors:#?}"));
        let shown = e.to_string();
        assert!(shown.starts_with(prefix), "{name}: `{shown}` should start with `{prefix}`");
        assert!(shown.contains(message), "{name}: `{shown}` should contain `{message}`");
    }
}

#[test]
fn all_errors_are_reported_at_once() {
    let text = doc(concat!(
        "  - id: a\n    when: livenes.score > 1\n    outcome: review\n    reason: a.b\n    message: m\n",
        "  - id: a\n    when: ip.vpn == 1 && foo\n    outcom: review\n    message: m\n",
    ));
    let errors = Ruleset::parse("f.yaml", &text).unwrap_err();
    let kinds: Vec<ErrorKind> = errors.iter().map(|e| e.kind).collect();
    for k in [
        ErrorKind::UnknownVariable,
        ErrorKind::DuplicateRuleId,
        ErrorKind::UnknownField,
        ErrorKind::MissingReason,
        ErrorKind::NoEffect,
        ErrorKind::TypeMismatch,
    ] {
        assert!(kinds.contains(&k), "{k:?} missing from {errors:#?}");
    }
    assert_eq!(errors.iter().filter(|e| e.kind == ErrorKind::UnknownVariable).count(), 2, "{errors:#?}");
    // Sorted by position, so the report reads top to bottom.
    assert!(errors.windows(2).all(|w| w[0].pos <= w[1].pos));
    let listed = idstream_rules::ErrorList(&errors).to_string();
    assert!(listed.ends_with(&format!("{} errors", errors.len())), "{listed}");
}
