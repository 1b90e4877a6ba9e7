//! The hot paths of the pipeline, one stage each: Avro bytes decoded into Arrow, cleaned,
//! checked and deduplicated (ingest), a batch encoded as zstd Parquet (the lake write), candidate features built for
//! a customer, and the ranker scoring them.

use apache_avro::types::Value;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use hoffrec::codec::{SchemaSet, encode_with};
use hoffrec::ingest::batch::{Checks, TopicBatch};
use hoffrec::ingest::decode::WriterPlan;
use hoffrec::recommend::data::{CatalogueView, Customer, Department, Neighbour, Portrait, Product, Touched};
use hoffrec::recommend::{model::Model, rank, rules::Rules};
use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;

const ROWS: usize = 10_000;

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
        ("list_id".into(), Value::Union(0, Box::new(Value::Null))),
        ("position".into(), Value::Union(0, Box::new(Value::Null))),
    ])
}

fn batch(set: &SchemaSet, payloads: &[Vec<u8>]) -> Vec<arrow::record_batch::RecordBatch> {
    let version = set.current("product_view").expect("product_view").clone();
    let plan = Arc::new(WriterPlan::new(&version).expect("plan"));
    let rules = hoffrec::ingest::checks::Rules::new(&hoffrec::config::IngestConfig::default());
    let required = hoffrec::ingest::TopicContract::new(&version.event, &version.schema).required;
    let mut seen = hoffrec::ingest::checks::Horizon::new(usize::MAX);
    let mut checks = Checks {
        rules: &rules,
        required: &required,
        now_ms: 1_790_000_000_000,
        seen: &mut seen,
    };
    let mut b = TopicBatch::new("raw.bench.product_view");
    for (i, p) in payloads.iter().enumerate() {
        if b.take((0, i as i64, Some(1_790_000_000_000)), None, p, Vec::new(), Ok(&plan)) {
            b.seal(false, &mut checks);
        }
    }
    b.seal(true, &mut checks);
    assert!(b.letters.is_empty(), "every bench record lands");
    b.finish(None).expect("finish")
}

fn lake_path(c: &mut Criterion) {
    let set = SchemaSet::load_strict(&Path::new(env!("CARGO_MANIFEST_DIR")).join("avro")).expect("schemas");
    let version = set.current("product_view").expect("product_view").clone();
    let payloads: Vec<Vec<u8>> = (0..ROWS as i64)
        .map(|i| encode_with(&version, product_view(i)).expect("encode"))
        .collect();
    let mut g = c.benchmark_group("lake");
    g.throughput(Throughput::Elements(ROWS as u64));
    g.bench_function("avro_to_arrow_10k", |b| b.iter(|| black_box(batch(&set, &payloads))));
    let batches = batch(&set, &payloads);
    g.bench_function("parquet_zstd_encode_10k", |b| {
        b.iter(|| {
            let props = parquet::file::properties::WriterProperties::builder()
                .set_compression(parquet::basic::Compression::ZSTD(Default::default()))
                .build();
            let mut out = Vec::new();
            let mut w =
                parquet::arrow::ArrowWriter::try_new(&mut out, batches[0].schema(), Some(props)).expect("writer");
            for rb in &batches {
                w.write(rb).expect("write");
            }
            w.close().expect("close");
            black_box(out.len())
        })
    });
    g.finish();
}

/// A catalogue of 19 categories x 12 products, and a customer with a history in it.
fn world() -> (CatalogueView, Customer) {
    let w = hoffrec::simulate::world::generate(1, 10);
    let products: Vec<Product> = w
        .products
        .iter()
        .enumerate()
        .map(|(i, p)| Product {
            product_id: p.id.clone(),
            name: p.name.clone(),
            category_id: p.category_id.clone(),
            top_category: p.category_id.chars().take(1).collect(),
            price_kopecks: (p.price_rub * 100.0) as i64,
            available: true,
            price_tier: (i % 3) as i64 + 1,
            viewers: (i * 7 % 50) as i64,
            conversion: 0.05,
            trend: 1.0,
            ..Default::default()
        })
        .collect();
    let mut cat = CatalogueView {
        by_id: products
            .iter()
            .enumerate()
            .map(|(i, p)| (p.product_id.clone(), i))
            .collect(),
        ..Default::default()
    };
    for (i, p) in products.iter().enumerate() {
        let near = (1..=20).map(|k| Neighbour {
            product_id: p.product_id.clone(),
            neighbour_id: products[(i + k * 7) % products.len()].product_id.clone(),
            co_viewers: (20 - k) as i64,
            co_buyers: (k % 3) as i64,
        });
        cat.neighbours.insert(p.product_id.clone(), near.collect());
    }
    cat.products = products;
    let customer = Customer {
        portrait: Portrait {
            customer_id: "c1".into(),
            lifecycle_stage: "renovating".into(),
            housing_market: "secondary".into(),
            renovation_scope: "full".into(),
            wealth_tier: "high".into(),
            new_homeowner: true,
            ..Default::default()
        },
        touched: (0..30)
            .map(|i| Touched {
                customer_id: "c1".into(),
                product_id: cat.products[i * 5].product_id.clone(),
                views: 2,
                purchased_qty: f64::from(i.is_multiple_of(4)),
                last_viewed_ms: Some(i as i64),
                ..Default::default()
            })
            .collect(),
        departments: ["1", "3", "4", "7", "8"]
            .iter()
            .map(|d| Department {
                customer_id: "c1".into(),
                top_category: d.to_string(),
                orders: 1,
                views_recent: 5,
                ..Default::default()
            })
            .collect(),
        // Ten earlier lists, every third product reacted to.
        shown: (0..100)
            .map(|i| hoffrec::recommend::data::Exposure {
                product_id: cat.products[(i * 3) % cat.products.len()].product_id.clone(),
                list_id: format!("l{}", i / 10),
                shown_ms: (i / 10) as i64,
                position: (i % 10) as i64,
                label: i64::from(i % 3 == 0),
                propensity: None,
            })
            .collect(),
    };
    (cat, customer)
}

fn ranking(c: &mut Criterion) {
    let (cat, customer) = world();
    let rules = Rules::load(None).expect("rules");
    let model = Model::prior();
    let ids: Vec<(&str, i64)> = cat.products.iter().map(|p| (p.product_id.as_str(), 10)).collect();
    let mut g = c.benchmark_group("recommend");
    g.bench_function("features_for_whole_catalogue", |b| {
        b.iter(|| black_box(rank::features_of(&customer, &cat, &rules, &ids)))
    });
    let xs: Vec<[f64; hoffrec::recommend::model::FEATURES.len()]> = rank::features_of(&customer, &cat, &rules, &ids)
        .into_iter()
        .flatten()
        .collect();
    g.throughput(Throughput::Elements(xs.len() as u64));
    g.bench_function("score_whole_catalogue", |b| {
        b.iter(|| black_box(xs.iter().map(|x| model.score(x)).sum::<f64>()))
    });
    g.throughput(Throughput::Elements(1));
    g.bench_function("rank_one_customer_top10", |b| {
        b.iter(|| black_box(rank::rank(&customer, &cat, &rules, &model, 10)))
    });
    g.finish();
}

criterion_group!(benches, lake_path, ranking);
criterion_main!(benches);
