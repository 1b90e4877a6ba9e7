//! Avro single-object encode and decode of a site event (the hot path of the collector
//! and of ingest), including reading an older schema version through resolution.

use apache_avro::types::Value;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use hoffrec::codec::{SchemaSet, encode_with};
use std::hint::black_box;
use std::path::Path;

fn product_view(i: i64) -> Value {
    Value::Record(vec![
        (
            "event_id".into(),
            Value::String(format!("8f0c6a1e-0000-4000-8000-{i:012}")),
        ),
        ("event_time".into(), Value::TimestampMillis(1_790_000_000_000 + i)),
        ("customer_id".into(), Value::String(format!("c{}", i % 5000))),
        ("session_id".into(), Value::String(format!("s{}", i / 20))),
        ("product_id".into(), Value::String(format!("p{}", i % 3000))),
        ("dwell_ms".into(), Value::Long(15_000 + i % 90_000)),
        (
            "price_kopecks".into(),
            Value::Union(1, Box::new(Value::Long(1_299_000))),
        ),
    ])
}

fn bench(c: &mut Criterion) {
    let set = SchemaSet::load_strict(&Path::new(env!("CARGO_MANIFEST_DIR")).join("avro")).expect("schemas");
    let v1 = set
        .versions()
        .find(|v| v.id == "product_view.v1")
        .expect("product_view.v1")
        .clone();
    let current = set.current("product_view").expect("product_view").clone();
    let old_bytes = encode_with(&v1, product_view(1)).expect("encode v1");
    let mut new_value = product_view(1);
    if let Value::Record(fields) = &mut new_value {
        fields.push(("list_id".into(), Value::Union(1, Box::new(Value::String("l1".into())))));
        fields.push(("position".into(), Value::Union(1, Box::new(Value::Int(3)))));
    }
    let new_bytes = set.encode("product_view", new_value.clone()).expect("encode");

    let mut group = c.benchmark_group("codec");
    group.throughput(Throughput::Elements(1));
    group.bench_function("encode product_view", |b| {
        b.iter(|| {
            set.encode("product_view", black_box(new_value.clone()))
                .expect("encode")
        })
    });
    group.bench_function("decode product_view (same version)", |b| {
        b.iter(|| set.decode_as(black_box(&new_bytes), &current).expect("decode"))
    });
    group.bench_function("decode product_view v1 -> current (resolution)", |b| {
        b.iter(|| set.decode_as(black_box(&old_bytes), &current).expect("decode"))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
