//! Conformance tests driven by data produced outside Rust.
//!
//! - `tests/data/canonical-vectors.json`, `canonical-invalid.json`, `standard-vectors.json` and
//!   `didit-reencoded.json` are written by `scripts/gen-test-vectors.py` from CPython's `json`,
//!   `hmac` and `base64` modules (re-run it to regenerate; it is deterministic).
//! - `tests/data/didit-webhook-fixtures.json` is a byte-exact copy of Didit's own signed
//!   fixtures (`shared/reference/didit-webhook-fixtures.json`), kept inside the crate so the
//!   tests do not depend on where the repository is checked out.
//!
//! Each area has one `check_*` helper that returns the list of its failures, so a run reports
//! every broken vector at once instead of stopping at the first.

use std::collections::BTreeMap;
use std::path::PathBuf;

use idstream_core::canonical::canonical_json;
use idstream_core::signature::{didit, standard, Scheme, Secret, VerifyError};
use serde::Deserialize;

const VECTOR_SECRET: &str = "vector-secret";
const TOLERANCE: u64 = 300;

fn data_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests").join("data").join(name)
}

fn load<T: serde::de::DeserializeOwned>(name: &str) -> T {
    let path = data_path(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("parsing {}: {e}", path.display()))
}

fn report(area: &str, checked: usize, failures: Vec<String>) {
    assert!(checked > 0, "{area}: no cases loaded");
    assert!(failures.is_empty(), "{area}: {} of {checked} cases failed:\n{}", failures.len(), failures.join("\n"));
}

// ------------------------------------------------------------------------------------------
// Canonical JSON
// ------------------------------------------------------------------------------------------

#[derive(Deserialize)]
struct CanonicalVector {
    name: String,
    input: String,
    canonical: String,
    v2_hex: String,
    raw_hex: String,
}

fn check_canonical(v: &CanonicalVector) -> Vec<String> {
    let mut fails = Vec::new();
    let secret = Secret::new(VECTOR_SECRET);
    match canonical_json(v.input.as_bytes()) {
        Ok(got) if got == v.canonical.as_bytes() => {}
        Ok(got) => fails.push(format!(
            "{}: canonical mismatch\n  input:    {:?}\n  expected: {:?}\n  got:      {:?}",
            v.name,
            v.input,
            v.canonical,
            String::from_utf8_lossy(&got)
        )),
        Err(e) => fails.push(format!("{}: rejected ({e}); input {:?}", v.name, v.input)),
    }
    // A canonical form is its own canonical form.
    match canonical_json(v.canonical.as_bytes()) {
        Ok(got) if got == v.canonical.as_bytes() => {}
        other => fails.push(format!("{}: canonical form is not a fixed point: {other:?}", v.name)),
    }
    match didit::sign_v2(&secret, v.input.as_bytes()) {
        Ok(sig) if sig == v.v2_hex => {}
        other => fails.push(format!("{}: sign_v2 = {other:?}, expected {}", v.name, v.v2_hex)),
    }
    let raw = didit::sign_raw(&secret, v.input.as_bytes());
    if raw != v.raw_hex {
        fails.push(format!("{}: sign_raw = {raw}, expected {}", v.name, v.raw_hex));
    }
    fails
}

fn check_invalid(input: &[u8]) -> Vec<String> {
    let mut fails = Vec::new();
    if let Ok(out) = canonical_json(input) {
        fails.push(format!(
            "accepted invalid input {:?} as {:?}",
            String::from_utf8_lossy(input),
            String::from_utf8_lossy(&out)
        ));
    }
    if let Ok(sig) = didit::sign_v2(&Secret::new(VECTOR_SECRET), input) {
        fails.push(format!("sign_v2 signed invalid input {:?}: {sig}", String::from_utf8_lossy(input)));
    }
    fails
}

#[test]
fn canonical_vectors() {
    let vectors: Vec<CanonicalVector> = load("canonical-vectors.json");
    assert!(vectors.len() >= 300, "only {} canonical vectors", vectors.len());
    let failures = vectors.iter().flat_map(check_canonical).collect();
    report("canonical vectors", vectors.len(), failures);
}

#[test]
fn canonical_invalid_inputs() {
    let mut inputs: Vec<Vec<u8>> =
        load::<Vec<String>>("canonical-invalid.json").into_iter().map(String::into_bytes).collect();
    // Bodies that are not UTF-8 at all (not representable in the JSON data file).
    inputs.extend([
        b"\"\xff\"".to_vec(),
        b"{\"a\":\"\xc3\"}".to_vec(),
        b"\"\xed\xa0\x80\"".to_vec(), // UTF-8-encoded surrogate U+D800
        b"\"\xc0\xaf\"".to_vec(),     // overlong '/'
        b"\xef\xbb\xbf{}".to_vec(),   // UTF-8 byte-order mark
        // Python would drop the lone surrogate here (the repeated key overwrites it) and sign
        // the rest; we refuse any lone surrogate escape, wherever it is.
        br#"{"k":"\udc00","k":"x"}"#.to_vec(),
    ]);
    let failures = inputs.iter().flat_map(|i| check_invalid(i)).collect();
    report("invalid inputs", inputs.len(), failures);
}

// ------------------------------------------------------------------------------------------
// Didit's own fixtures, each scheme on its own
// ------------------------------------------------------------------------------------------

#[derive(Deserialize)]
struct DiditFixtures {
    secret: String,
    timestamp: i64,
    session_id: String,
    cases: BTreeMap<String, DiditCase>,
}

#[derive(Deserialize)]
struct DiditCase {
    body: String,
    signatures: DiditSignatures,
}

#[derive(Deserialize)]
struct DiditSignatures {
    raw: String,
    v2: String,
    simple: String,
}

#[derive(Clone, Copy, Debug)]
enum Only {
    V2,
    Raw,
    Simple,
}

impl Only {
    const ALL: [Only; 3] = [Only::V2, Only::Raw, Only::Simple];

    fn scheme(self) -> Scheme {
        match self {
            Only::V2 => Scheme::DiditV2,
            Only::Raw => Scheme::DiditRaw,
            Only::Simple => Scheme::DiditSimple,
        }
    }

    fn header_name(self) -> &'static str {
        match self {
            Only::V2 => "X-Signature-V2",
            Only::Raw => "X-Signature",
            Only::Simple => "X-Signature-Simple",
        }
    }

    /// Headers carrying only this scheme's signature from `sigs`.
    fn headers(self, sigs: &DiditSignatures) -> didit::Headers<'_> {
        let mut h = didit::Headers::default();
        match self {
            Only::V2 => h.signature_v2 = Some(&sigs.v2),
            Only::Raw => h.signature_raw = Some(&sigs.raw),
            Only::Simple => h.signature_simple = Some(&sigs.simple),
        }
        h
    }
}

type DiditResult = Result<didit::Verified, VerifyError>;

fn expect_scheme(fails: &mut Vec<String>, what: &str, got: DiditResult, want: Scheme) {
    match got {
        Ok(v) if v.scheme == want => {}
        Ok(v) => fails.push(format!("{what}: verified by {:?}, expected {want:?}", v.scheme)),
        Err(e) => fails.push(format!("{what}: refused ({e}), expected Ok({want:?})")),
    }
}

fn expect_err(fails: &mut Vec<String>, what: &str, got: DiditResult, ok: impl Fn(&VerifyError) -> bool) {
    match got {
        Err(e) if ok(&e) => {}
        Err(e) => fails.push(format!("{what}: wrong error {e:?}")),
        Ok(v) => fails.push(format!("{what}: unexpectedly verified by {:?}", v.scheme)),
    }
}

/// The body with one byte of its `vendor_data` value changed.
fn tamper_vendor_data(body: &str) -> Option<String> {
    let marker = "\"vendor_data\":\"";
    let at = body.find(marker)? + marker.len();
    let mut bytes = body.as_bytes().to_vec();
    bytes[at] = if bytes[at] == b'x' { b'y' } else { b'x' };
    String::from_utf8(bytes).ok()
}

fn check_didit_case(fx: &DiditFixtures, name: &str, case: &DiditCase) -> Vec<String> {
    let mut fails = Vec::new();
    let right = Secret::new(fx.secret.as_str());
    let wrong = Secret::new(format!("{}-old", fx.secret));
    let only_right = [right.clone()];
    let only_wrong = [wrong.clone()];
    let ts = fx.timestamp;
    let body = case.body.as_bytes();
    let sigs = &case.signatures;

    // Our signers reproduce Didit's signatures.
    match didit::sign_v2(&right, body) {
        Ok(s) if s == sigs.v2 => {}
        other => fails.push(format!("{name}: sign_v2 = {other:?}, expected {}", sigs.v2)),
    }
    if didit::sign_raw(&right, body) != sigs.raw {
        fails.push(format!("{name}: sign_raw differs from the fixture"));
    }
    let parsed: serde_json::Value = serde_json::from_str(&case.body).expect("fixture body is JSON");
    let simple = didit::sign_simple(
        &right,
        ts,
        &fx.session_id,
        parsed["status"].as_str().unwrap_or_default(),
        parsed["webhook_type"].as_str().unwrap_or_default(),
    );
    if simple != sigs.simple {
        fails.push(format!("{name}: sign_simple differs from the fixture"));
    }

    let ts_header = ts.to_string();
    for only in Only::ALL {
        let what = |s: &str| format!("{name} [{} only] {s}", only.header_name());
        let h = only.headers(sigs);
        let verify = |h: &didit::Headers<'_>, body: &[u8], secrets: &[Secret], now: i64| {
            didit::verify(h, body, secrets, now, TOLERANCE)
        };

        expect_scheme(&mut fails, &what("right secret"), verify(&h, body, &only_right, ts), only.scheme());
        let mut with_ts = h.clone();
        with_ts.timestamp = Some(&ts_header);
        expect_scheme(&mut fails, &what("with X-Timestamp"), verify(&with_ts, body, &only_right, ts), only.scheme());
        match verify(&h, body, &only_right, ts) {
            Ok(v) if v.timestamp != ts || v.body != parsed => {
                fails.push(what("verified body or timestamp differs from the fixture"));
            }
            Ok(v) if v.scheme.covers_body() == matches!(only, Only::Simple) => {
                fails.push(what("covers_body() is wrong"));
            }
            _ => {}
        }

        let header = only.header_name();
        expect_err(&mut fails, &what("wrong secret"), verify(&h, body, &only_wrong, ts), |e| {
            *e == VerifyError::InvalidSignature(header)
        });
        expect_err(&mut fails, &what("no secrets"), verify(&h, body, &[], ts), |e| {
            matches!(e, VerifyError::InvalidSignature(_))
        });
        expect_scheme(
            &mut fails,
            &what("rotation [wrong, right]"),
            verify(&h, body, &[wrong.clone(), right.clone()], ts),
            only.scheme(),
        );
        expect_scheme(
            &mut fails,
            &what("rotation [right, wrong]"),
            verify(&h, body, &[right.clone(), wrong.clone()], ts),
            only.scheme(),
        );

        for now in [ts + 301, ts - 301, ts + 100_000] {
            expect_err(
                &mut fails,
                &what(&format!("now = {now}")),
                verify(&h, body, &only_right, now),
                |e| matches!(e, VerifyError::StaleTimestamp { timestamp, .. } if *timestamp == ts),
            );
        }
        for now in [ts + 300, ts - 300] {
            expect_scheme(
                &mut fails,
                &what(&format!("now = {now}")),
                verify(&h, body, &only_right, now),
                only.scheme(),
            );
        }

        for bad_ts in [(ts + 1).to_string(), (ts - 1).to_string(), "abc".to_string(), String::new()] {
            let mut mismatched = h.clone();
            mismatched.timestamp = Some(&bad_ts);
            expect_err(
                &mut fails,
                &what(&format!("X-Timestamp {bad_ts:?}")),
                verify(&mismatched, body, &only_right, ts),
                |e| matches!(e, VerifyError::TimestampMismatch { body, .. } if *body == ts),
            );
        }

        match tamper_vendor_data(&case.body) {
            None => fails.push(format!("{name}: fixture has no vendor_data string to tamper with")),
            Some(tampered) => {
                let got = verify(&h, tampered.as_bytes(), &only_right, ts);
                match only {
                    // Simple covers only timestamp, session id, status and type.
                    Only::Simple => match got {
                        Ok(v) if v.scheme == Scheme::DiditSimple && !v.scheme.covers_body() => {
                            if v.body["vendor_data"] == parsed["vendor_data"] {
                                fails.push(what("tampered vendor_data not reflected in the body"));
                            }
                        }
                        other => fails.push(what(&format!("tampered body: {other:?}, expected Ok(DiditSimple)"))),
                    },
                    _ => expect_err(&mut fails, &what("tampered body"), got, |e| {
                        *e == VerifyError::InvalidSignature(header)
                    }),
                }
            }
        }
    }

    // All three headers: V2 wins; a tampered body falls through to Simple.
    let all = didit::Headers {
        signature_v2: Some(&sigs.v2),
        signature_raw: Some(&sigs.raw),
        signature_simple: Some(&sigs.simple),
        timestamp: Some(&ts_header),
    };
    expect_scheme(
        &mut fails,
        &format!("{name} [all headers]"),
        didit::verify(&all, body, &only_right, ts, TOLERANCE),
        Scheme::DiditV2,
    );
    if let Some(tampered) = tamper_vendor_data(&case.body) {
        expect_scheme(
            &mut fails,
            &format!("{name} [all headers] tampered body"),
            didit::verify(&all, tampered.as_bytes(), &only_right, ts, TOLERANCE),
            Scheme::DiditSimple,
        );
    }
    expect_err(
        &mut fails,
        &format!("{name} [no signature headers]"),
        didit::verify(&didit::Headers::default(), body, &[right], ts, TOLERANCE),
        |e| matches!(e, VerifyError::MissingSignature(_)),
    );
    fails
}

/// A body re-encoded with whitespace: the raw signature breaks, V2 (and Simple) still hold.
fn check_didit_reencoded(fx: &DiditFixtures, what: &str, case: &DiditCase, reencoded: &str) -> Vec<String> {
    let mut fails = Vec::new();
    let secrets = [Secret::new(fx.secret.as_str())];
    let body = reencoded.as_bytes();
    let ts = fx.timestamp;
    if body == case.body.as_bytes() {
        fails.push(format!("{what}: re-encoded body is identical to the original"));
    }
    let run = |only: Only| didit::verify(&only.headers(&case.signatures), body, &secrets, ts, TOLERANCE);
    expect_err(&mut fails, &format!("{what} [X-Signature only]"), run(Only::Raw), |e| {
        *e == VerifyError::InvalidSignature("X-Signature")
    });
    expect_scheme(&mut fails, &format!("{what} [X-Signature-V2 only]"), run(Only::V2), Scheme::DiditV2);
    expect_scheme(&mut fails, &format!("{what} [X-Signature-Simple only]"), run(Only::Simple), Scheme::DiditSimple);
    let raw_and_simple = didit::Headers {
        signature_raw: Some(&case.signatures.raw),
        signature_simple: Some(&case.signatures.simple),
        ..Default::default()
    };
    expect_scheme(
        &mut fails,
        &format!("{what} [raw + simple]"),
        didit::verify(&raw_and_simple, body, &secrets, ts, TOLERANCE),
        Scheme::DiditSimple,
    );
    fails
}

fn didit_fixtures() -> DiditFixtures {
    let fx: DiditFixtures = load("didit-webhook-fixtures.json");
    assert_eq!(fx.cases.len(), 8, "expected Didit's 8 fixture cases");
    fx
}

/// SHA-256 of Didit's published fixture file (`shared/reference/didit-webhook-fixtures.json`
/// as published), of which `tests/data/didit-webhook-fixtures.json` is a byte-exact copy.
const DIDIT_FIXTURES_SHA256: &str = "26d5ee9369d6ce36df01682093ddbef9a4bdc66d2d12ad1da51fef6b2c5b7d60";

#[test]
fn didit_fixture_copy_is_the_published_file() {
    use sha2::Digest as _;
    let copy = std::fs::read(data_path("didit-webhook-fixtures.json")).expect("fixture copy");
    assert_eq!(
        hex::encode(sha2::Sha256::digest(&copy)),
        DIDIT_FIXTURES_SHA256,
        "tests/data/didit-webhook-fixtures.json is not Didit's published fixture file"
    );
}

#[test]
fn didit_fixtures_each_scheme() {
    let fx = didit_fixtures();
    let failures = fx.cases.iter().flat_map(|(name, case)| check_didit_case(&fx, name, case)).collect();
    report("didit fixtures", fx.cases.len(), failures);
}

#[test]
fn didit_fixtures_reencoded() {
    let fx = didit_fixtures();
    let from_python: BTreeMap<String, String> = load("didit-reencoded.json");
    assert_eq!(from_python.len(), fx.cases.len());
    let mut failures = Vec::new();
    let mut checked = 0;
    for (name, case) in &fx.cases {
        match from_python.get(name) {
            Some(pretty) => {
                failures.extend(check_didit_reencoded(&fx, &format!("{name} (python indent)"), case, pretty))
            }
            None => failures.push(format!("{name}: missing from didit-reencoded.json")),
        }
        let value: serde_json::Value = serde_json::from_str(&case.body).expect("fixture body is JSON");
        let pretty = serde_json::to_string_pretty(&value).expect("serialisable");
        failures.extend(check_didit_reencoded(&fx, &format!("{name} (serde pretty)"), case, &pretty));
        checked += 1;
    }
    report("didit re-encoded", checked, failures);
}

// ------------------------------------------------------------------------------------------
// Standard Webhooks
// ------------------------------------------------------------------------------------------

#[derive(Deserialize)]
struct StandardVector {
    name: String,
    secret: String,
    id: String,
    timestamp: i64,
    body: String,
    signature: String,
}

type StandardResult = Result<standard::Verified, VerifyError>;

fn std_headers<'a>(id: &'a str, timestamp: &'a str, signature: Option<&'a str>) -> standard::Headers<'a> {
    standard::Headers { id: Some(id), timestamp: Some(timestamp), signature }
}

fn check_standard(v: &StandardVector) -> Vec<String> {
    let mut fails = Vec::new();
    let name = &v.name;
    let key = match standard::decode_secret(&Secret::new(v.secret.as_str())) {
        Ok(k) => k,
        Err(e) => return vec![format!("{name}: secret {e}")],
    };
    if !(24..=64).contains(&key.len()) {
        fails.push(format!("{name}: key has {} bytes", key.len()));
    }
    let wrong_key: Vec<u8> = key.iter().map(|b| b ^ 0x5a).collect();
    let keys = [key.clone()];
    let wrong_keys = [wrong_key.clone()];
    let body = v.body.as_bytes();
    let ts = v.timestamp;
    let ts_str = ts.to_string();

    let sig = standard::sign(&key, &v.id, ts, body);
    if sig != v.signature {
        fails.push(format!("{name}: sign = {sig}, expected {}", v.signature));
    }
    let wrong_sig = standard::sign(&wrong_key, &v.id, ts, body);

    let verify = |h: &standard::Headers<'_>, body: &[u8], keys: &[Vec<u8>], now: i64| -> StandardResult {
        standard::verify(h, body, keys, now, TOLERANCE)
    };
    let mut ok = |what: &str, got: StandardResult| match got {
        Ok(verified) if verified.webhook_id == v.id && verified.timestamp == ts => {}
        Ok(verified) => {
            fails.push(format!("{name} {what}: verified as id {:?} ts {}", verified.webhook_id, verified.timestamp))
        }
        Err(e) => fails.push(format!("{name} {what}: refused ({e})")),
    };
    let right = std_headers(&v.id, &ts_str, Some(&v.signature));
    ok("right signature", verify(&right, body, &keys, ts));
    ok("rotation keys [wrong, right]", verify(&right, body, &[wrong_key.clone(), key.clone()], ts));
    ok("now = ts + 300", verify(&right, body, &keys, ts + 300));
    ok("now = ts - 300", verify(&right, body, &keys, ts - 300));
    let several_sigs = format!("v1a,{} {wrong_sig} v2,abc v1,not-base64!! {} v1,AAAA", &v.signature[3..], v.signature);
    let several = std_headers(&v.id, &ts_str, Some(&several_sigs));
    ok("several signatures, one right", verify(&several, body, &keys, ts));

    let mut err = |what: &str, got: StandardResult, want: &dyn Fn(&VerifyError) -> bool| match got {
        Err(e) if want(&e) => {}
        Err(e) => fails.push(format!("{name} {what}: wrong error {e:?}")),
        Ok(_) => fails.push(format!("{name} {what}: unexpectedly verified")),
    };
    let invalid = |e: &VerifyError| *e == VerifyError::InvalidSignature("webhook-signature");
    let none_right_sigs = format!("{wrong_sig} v1a,{} v1,{}", &v.signature[3..], &wrong_sig[3..]);
    let none_right = std_headers(&v.id, &ts_str, Some(&none_right_sigs));
    err("no signature right", verify(&none_right, body, &keys, ts), &invalid);
    err("wrong key only", verify(&right, body, &wrong_keys, ts), &invalid);
    err("no keys", verify(&right, body, &[], ts), &invalid);
    let mut tampered = body.to_vec();
    tampered.push(b' ');
    err("tampered body", verify(&right, &tampered, &keys, ts), &invalid);
    let other_ts = (ts + 1).to_string();
    let shifted = standard::Headers { timestamp: Some(&other_ts), ..right.clone() };
    err("timestamp header changed", verify(&shifted, body, &keys, ts + 1), &invalid);
    let other_id = format!("{}x", v.id);
    let renamed = standard::Headers { id: Some(&other_id), ..right.clone() };
    err("id header changed", verify(&renamed, body, &keys, ts), &invalid);

    for now in [ts + 301, ts - 301] {
        err(
            &format!("now = {now}"),
            verify(&right, body, &keys, now),
            &|e| matches!(e, VerifyError::StaleTimestamp { timestamp, skew_secs: 301, .. } if *timestamp == ts),
        );
    }

    let missing_sig = standard::Headers { signature: None, ..right.clone() };
    err("missing webhook-signature", verify(&missing_sig, body, &keys, ts), &|e| {
        *e == VerifyError::MissingSignature("webhook-signature")
    });
    let missing_id = standard::Headers { id: None, ..right.clone() };
    err("missing webhook-id", verify(&missing_id, body, &keys, ts), &|e| {
        *e == VerifyError::MissingHeader("webhook-id")
    });
    let missing_ts = standard::Headers { timestamp: None, ..right.clone() };
    err("missing webhook-timestamp", verify(&missing_ts, body, &keys, ts), &|e| {
        *e == VerifyError::MissingHeader("webhook-timestamp")
    });
    fails
}

#[test]
fn standard_vectors() {
    let vectors: Vec<StandardVector> = load("standard-vectors.json");
    assert!(vectors.len() >= 20, "only {} standard vectors", vectors.len());
    assert!(vectors.iter().any(|v| v.name == "published"));
    let failures = vectors.iter().flat_map(check_standard).collect();
    report("standard webhooks", vectors.len(), failures);
}
