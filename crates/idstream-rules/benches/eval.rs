//! Evaluations per second of the default ruleset (issue 3 aims for >= 300,000/s per core).
//!
//! `honest` is the common case: every rule is evaluated, only the approve rule fires.
//! `risky` fires six rules, so it also measures building their explanations.
//!
//! Baseline, measured in the same run: the same 25 conditions as plain `cel` programs, run the
//! way a straightforward CEL rules engine would — the context converted to CEL values and bound
//! as variables once per decision, then every program executed (no explanations, no precedence).

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use idstream_rules::{Context, Ruleset};
use serde_json::json;
use std::hint::black_box;

fn honest() -> Context {
    serde_json::from_value(json!({
        "document": {"type": "Passport", "number": "C01X00T47", "expiry": "2031-01-01", "issuing_country": "DEU",
                     "nationality": "DEU", "first_name": "Anna", "last_name": "Schmidt", "date_of_birth": "1990-04-02",
                     "age": 35, "expired": false},
        "liveness": {"score": 96.5, "method": "passive"},
        "face_match": {"score": 91.0},
        "aml": {"hits": 0},
        "ip": {"country": "DE", "vpn": false, "proxy": false, "tor": false, "hosting": false, "risk_score": 12.0},
        "phone": {"number": "+4915112345678", "disposable": false, "virtual": false},
        "email": {"address": "anna@example.de", "disposable": false, "breached": true},
        "provider": {"status": "approved", "raw_status": "Approved", "signature_covers_decision": true},
        "subject": {"account_age_days": 412, "country": "DE", "expected_first_name": "Anna",
                    "expected_last_name": "Schmidt", "expected_date_of_birth": "1990-04-02"},
        "history": {"previous_sessions": 1, "previous_declines": 0, "previous_approvals": 1},
        "lists": {"high_risk_countries": ["KP", "PRK", "IR", "IRN", "MM", "MMR"]}
    }))
    .expect("valid context")
}

fn bench(c: &mut Criterion) {
    let rs = Ruleset::default_ruleset();
    let honest = honest();
    let mut risky = honest.clone();
    risky.ip.vpn = Some(true);
    risky.ip.risk_score = Some(88.0);
    risky.aml.hits = Some(2);
    risky.velocity.document_subjects = 3;
    risky.phone.is_virtual = Some(true);
    assert_eq!(rs.evaluate(&honest).fired.len(), 2, "honest fires approve_clean and email_breached");

    let mut g = c.benchmark_group("default_ruleset");
    g.throughput(Throughput::Elements(1));
    g.bench_function("honest", |b| b.iter(|| rs.evaluate(black_box(&honest))));
    g.bench_function("risky", |b| b.iter(|| rs.evaluate(black_box(&risky))));
    g.finish();

    let env = {
        let mut env = cel::Env::stdlib();
        env.add_extension(cel::extensions::strings).expect("registers");
        std::sync::Arc::new(env)
    };
    let programs: Vec<cel::Program> = rs.rules().map(|r| env.compile(&r.when).expect("valid CEL")).collect();
    let plain = |ctx: &Context| {
        let json = serde_json::to_value(ctx).expect("serialises");
        let mut cc = cel::Context::with_env(env.clone());
        for (k, v) in json.as_object().expect("object") {
            cc.add_variable_from_value(k.as_str(), cel::to_value(v).expect("converts"));
        }
        programs.iter().filter(|p| matches!(p.execute(&cc), Ok(cel::Value::Bool(true)))).count()
    };
    assert_eq!(plain(&honest), 2, "the baseline runs the same conditions");
    let mut g = c.benchmark_group("baseline_plain_cel");
    g.throughput(Throughput::Elements(1));
    g.bench_function("honest", |b| b.iter(|| plain(black_box(&honest))));
    g.bench_function("risky", |b| b.iter(|| plain(black_box(&risky))));
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
