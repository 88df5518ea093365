//! What checking a Didit webhook's signature costs per body (issue 12: at 5,000 webhooks/s the
//! signature check was ~11% of the server's CPU, two thirds of it canonical JSON for
//! `X-Signature-V2`).
//!
//! Bodies: Didit's own signing fixtures (`tests/data/didit-webhook-fixtures.json`), as sent
//! (compact) and pretty-printed (what a body re-encoded on its way looks like). Baseline, measured
//! in the same run: `serde_json::from_slice` into a `Value`, which every webhook pays anyway.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use idstream_core::canonical::canonical_json;
use idstream_core::signature::{didit, Secret};
use std::hint::black_box;

struct Case {
    body: Vec<u8>,
    raw: String,
    v2: String,
    simple: String,
}

fn cases() -> (Secret, i64, Vec<Case>) {
    let text = include_str!("../tests/data/didit-webhook-fixtures.json");
    let f: serde_json::Value = serde_json::from_str(text).expect("fixture JSON");
    let secret = Secret::new(f["secret"].as_str().expect("secret"));
    let ts = f["timestamp"].as_i64().expect("timestamp");
    let cases = f["cases"]
        .as_object()
        .expect("cases")
        .values()
        .map(|c| Case {
            body: c["body"].as_str().expect("body").as_bytes().to_vec(),
            raw: c["signatures"]["raw"].as_str().expect("raw").to_owned(),
            v2: c["signatures"]["v2"].as_str().expect("v2").to_owned(),
            simple: c["signatures"]["simple"].as_str().expect("simple").to_owned(),
        })
        .collect();
    (secret, ts, cases)
}

fn bench(c: &mut Criterion) {
    let (secret, ts, cases) = cases();
    let secrets = [secret];
    let pretty: Vec<Vec<u8>> = cases
        .iter()
        .map(|k| {
            let v: serde_json::Value = serde_json::from_slice(&k.body).expect("body JSON");
            serde_json::to_vec_pretty(&v).expect("pretty")
        })
        .collect();
    let bytes = |bodies: &mut dyn Iterator<Item = usize>| bodies.sum::<usize>() as u64;

    let mut g = c.benchmark_group("didit_signature");
    g.throughput(Throughput::Bytes(bytes(&mut cases.iter().map(|k| k.body.len()))));
    g.bench_function("baseline: serde_json::Value parse (8 fixture bodies)", |b| {
        b.iter(|| {
            for k in &cases {
                black_box(serde_json::from_slice::<serde_json::Value>(black_box(&k.body)).expect("JSON"));
            }
        })
    });
    g.bench_function("canonical_json (8 fixture bodies)", |b| {
        b.iter(|| {
            for k in &cases {
                black_box(canonical_json(black_box(&k.body)).expect("canonical"));
            }
        })
    });
    g.bench_function("verify, all three headers (8 fixture bodies)", |b| {
        b.iter(|| {
            for k in &cases {
                let h = didit::Headers {
                    signature_v2: Some(&k.v2),
                    signature_raw: Some(&k.raw),
                    signature_simple: Some(&k.simple),
                    timestamp: None,
                };
                black_box(didit::verify(&h, black_box(&k.body), &secrets, ts, 300).expect("verified"));
            }
        })
    });
    g.throughput(Throughput::Bytes(bytes(&mut pretty.iter().map(Vec::len))));
    g.bench_function("canonical_json (8 fixture bodies, pretty-printed)", |b| {
        b.iter(|| {
            for p in &pretty {
                black_box(canonical_json(black_box(p)).expect("canonical"));
            }
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
