//! The recommender: the worked customer's list follows the business rules; lists reach
//! `recs.customer` for customers announced on `mart.changes`, each naming its model
//! version, and a newly promoted model is swapped in while the stage serves.

use crate::common;

use crate::common::history::{self, WORKED};
use hoffrec::catalog::Catalog;
use hoffrec::lake::LakeUrl;
use hoffrec::recommend::{Recommender, model::Model, rank, rules::Rules};
use std::time::Duration;

fn catalog() -> Catalog {
    Catalog::load(&common::repo().join("topics"), &common::repo().join("avro")).unwrap()
}

/// The worked customer's history plus the whole simulated catalogue and a crowd, folded.
pub(crate) async fn folded_lake(lake: &LakeUrl) {
    let mut events = history::catalogue_and_crowd(3);
    events.extend(history::events());
    history::land(lake, &events, 1, |_| async {}).await;
    let files = hoffrec::mart::files::load(&common::repo().join("mart_sql")).unwrap();
    hoffrec::mart::fold::fold(lake, &catalog(), &files).await.unwrap();
}

fn recommender(lake: &LakeUrl) -> Recommender {
    Recommender::new(lake.clone(), catalog(), Rules::load(None).unwrap(), 10)
}

#[tokio::test(flavor = "multi_thread")]
async fn the_worked_customer_gets_dear_renovation_and_cosiness_goods_and_plants_later() {
    let dir = tempfile::tempdir().unwrap();
    let lake = LakeUrl::parse(dir.path().to_str().unwrap()).unwrap();
    folded_lake(&lake).await;
    let r = recommender(&lake);
    let e = r.rank(&[WORKED.to_string()], &Model::prior()).await.unwrap().remove(0);
    let text = rank::render(&e);
    assert_eq!(e.lifecycle_stage, "renovating", "{text}");
    assert_eq!(e.target_tier, 3, "{text}");
    assert_eq!(e.list.len(), 10, "{text}");
    // A secondary-market home: no soundproofing, no wall levelling.
    assert!(
        e.list.iter().all(|s| s.category_id != "81" && s.category_id != "82"),
        "{text}"
    );
    assert!(
        e.rules_applied.contains_key("secondary_home_no_new_build_materials"),
        "{text}"
    );
    // The swing is bought: no second swing; its accessories come as complements.
    assert!(e.list.iter().all(|s| s.category_id != "71"), "{text}");
    // Renovation and cosiness: materials a resale needs (paints, tiles), wallpaper (full
    // renovation), and textiles, bathroom furniture, lighting.
    let of = |departments: &[&str]| {
        e.list
            .iter()
            .filter(|s| departments.contains(&s.top_category.as_str()))
            .count()
    };
    let n = of(&["Ремонт", "Обои", "Текстиль", "Ванная", "Освещение"]);
    assert!(n >= 7, "{n} of 10 renovation/cosiness goods\n{text}");
    let cosy = of(&["Текстиль", "Ванная", "Освещение"]);
    assert!(cosy >= 3, "{cosy} of 10 cosiness goods\n{text}");
    assert!(e.list.iter().any(|s| s.category_id == "4"), "no wallpaper\n{text}");
    // The upper price tier of each category.
    let dear = e.list.iter().filter(|s| s.price_tier == 3).count();
    assert!(dear >= 6, "{dear} of 10 in tier 3\n{text}");
    assert!(
        e.list.iter().any(|s| s.reasons.iter().any(|r| r == "new_homeowner")),
        "{text}"
    );
    // Plants and flowers wait for later in the lifecycle.
    assert!(e.list.iter().all(|s| s.category_id != "73"), "{text}");
    let marts = hoffrec::recommend::data::Marts::open(&lake).await.unwrap();
    let catalogue = marts.catalogue().await.unwrap();
    let mut later = marts.customers(&[WORKED.to_string()]).await.unwrap().remove(0);
    later.portrait.lifecycle_stage = "decorating".into();
    let e = rank::rank(&later, &catalogue, &r.rules, &Model::prior(), 10);
    assert!(e.list.iter().any(|s| s.category_id == "73"), "{}", rank::render(&e));
}

/// Announces a changed portrait on `mart.changes`, as the mart stage does.
pub(crate) async fn announce(
    producer: &rdkafka::producer::FutureProducer,
    schemas: &hoffrec::codec::SchemaSet,
    changes: &str,
    customer: &str,
) {
    use apache_avro::types::Value;
    let payload = schemas
        .encode(
            "mart_change",
            Value::Record(vec![
                ("customer_id".into(), Value::String(customer.into())),
                ("mart".into(), Value::String("customer_portrait".into())),
                ("mart_version".into(), Value::Long(1)),
                ("changed_at".into(), Value::TimestampMillis(0)),
            ]),
        )
        .unwrap();
    let record = rdkafka::producer::FutureRecord::to(changes)
        .key(customer)
        .payload(&payload);
    producer.send(record, Duration::from_secs(30)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn lists_reach_recs_customer_and_a_promoted_model_is_swapped_in() {
    let _services = common::needs!(Kafka, Hdfs);
    let lab = common::lab::Lab::new(1).await;
    lab.add_raw_topics().await;
    folded_lake(&lab.lake_url()).await;
    let topics = Catalog::load(&lab.topics_dir, &lab.schemas_dir).unwrap();
    let name = |role| topics.topic_for(role).unwrap().name.clone();
    let (changes, recs) = (
        name(hoffrec::catalog::Role::MartChanges),
        name(hoffrec::catalog::Role::Recommendations),
    );
    let schemas = lab.schemas();
    let producer = lab.producer();
    let announce = |customer: &'static str| announce(&producer, &schemas, &changes, customer);
    let mut stage = lab.hoffrec(
        &["recommend"],
        &[
            ("HOFFREC__RECOMMEND__BATCH_MS", "200"),
            ("HOFFREC__RECOMMEND__MODEL_CHECK_MS", "100"),
        ],
    );
    announce(WORKED).await;
    announce("c-renter").await;
    let lists = |min: usize| {
        let records = lab.read_topic(&recs);
        let decoded: Vec<_> = records
            .iter()
            .map(|(payload, _)| schemas.decode(payload, "recommendation").unwrap())
            .collect();
        async move { (decoded.len() >= min).then_some(decoded) }
    };
    let first = common::poll_until("two lists", Duration::from_secs(120), || lists(2)).await;
    let version = |v: &apache_avro::types::Value| match common::lab::field(v, "model_version") {
        apache_avro::types::Value::String(s) => s.clone(),
        other => panic!("{other:?}"),
    };
    assert!(
        first
            .iter()
            .all(|v| version(v) == hoffrec::recommend::model::Model::prior().version)
    );
    let items = match common::lab::field(&first[0], "items") {
        apache_avro::types::Value::Array(a) => a.len(),
        other => panic!("{other:?}"),
    };
    assert_eq!(items, 10);

    // Promote a model while the stage serves; the next list names it.
    let mut newer = Model::prior();
    newer.version = "m-test-2".into();
    newer.weights[5] = 0.0;
    hoffrec::recommend::store::promote(&lab.lake_url(), &newer)
        .await
        .unwrap();
    announce(WORKED).await;
    let all = common::poll_until("a list from the new model", Duration::from_secs(120), || async {
        let got = lists(3).await?;
        got.iter().any(|v| version(v) == "m-test-2").then_some(got)
    })
    .await;
    assert_eq!(all.len(), 3, "every announced change got exactly one list");
    assert!(stage.stop(), "{}", common::lab::tail(&stage.log));
}

#[tokio::test(flavor = "multi_thread")]
async fn only_shown_products_reach_the_training_set() {
    let dir = tempfile::tempdir().unwrap();
    let lake = LakeUrl::parse(dir.path().to_str().unwrap()).unwrap();
    folded_lake(&lake).await;
    let rows = hoffrec::recommend::train::training_set(&recommender(&lake), 365)
        .await
        .unwrap();
    // The worked customer looked at swings, rugs, wallpaper and was shown two products:
    // the clicked one is the positive, the ignored one the negative, and nothing else.
    let got: Vec<(&str, &str, i32)> = rows
        .iter()
        .map(|r| (r.customer_id.as_str(), r.product_id.as_str(), r.label))
        .collect();
    assert_eq!(got, [(WORKED, "72001", 1), (WORKED, "81001", 0)]);
}

/// Impressions for the crowd: five products each, clicked when the crowd member had
/// viewed a product of the same category (the kind of evidence the ranker should learn).
fn crowd_exposures() -> Vec<(String, String, serde_json::Value)> {
    use rand::{Rng, SeedableRng};
    let crowd = history::catalogue_and_crowd(3);
    let w = hoffrec::simulate::world::generate(3, 80);
    let category = |id: &str| w.products.iter().find(|p| p.id == id).unwrap().category_id.clone();
    let mut viewed: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for (_, event, e) in &crowd {
        if event == "product_view" {
            let c = e["customer_id"].as_str().unwrap().to_string();
            viewed
                .entry(c)
                .or_default()
                .push(category(e["product_id"].as_str().unwrap()));
        }
    }
    let mut rng = rand::rngs::StdRng::seed_from_u64(9);
    let mut out = Vec::new();
    for (n, (customer, cats)) in viewed.iter().enumerate() {
        for k in 0..6 {
            let p = &w.products[rng.random_range(0..w.products.len())];
            let at = history::NOW + (n as i64) * 60_000 + k;
            let list = format!("crowd-l-{n}");
            out.push((
                "raw.site.rec_impression".into(),
                "rec_impression".into(),
                serde_json::json!({"event_id": format!("ci-{n}-{k}"), "event_time": at, "customer_id": customer,
                    "session_id": null, "list_id": list, "placement": "home", "product_id": p.id,
                    "position": k as i32, "model_version": "prior-v1"}),
            ));
            if cats.contains(&p.category_id) {
                out.push((
                    "raw.site.rec_click".into(),
                    "rec_click".into(),
                    serde_json::json!({"event_id": format!("cc-{n}-{k}"), "event_time": at + 1_000,
                        "customer_id": customer, "session_id": null, "list_id": list, "product_id": p.id,
                        "position": k as i32, "model_version": "prior-v1"}),
                ));
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn training_stores_every_model_and_promotes_only_one_not_worse() {
    let dir = tempfile::tempdir().unwrap();
    let lake = LakeUrl::parse(dir.path().to_str().unwrap()).unwrap();
    let mut events = history::catalogue_and_crowd(3);
    events.extend(history::events());
    events.extend(crowd_exposures());
    history::land(&lake, &events, 1, |_| async {}).await;
    let files = hoffrec::mart::files::load(&common::repo().join("mart_sql")).unwrap();
    hoffrec::mart::fold::fold(&lake, &catalog(), &files).await.unwrap();
    let r = recommender(&lake);
    let report = hoffrec::recommend::train::train_once(&r, 365, 0.3).await.unwrap();
    assert!(report.rows > 300 && report.positives > 10, "{report:?}");
    let auc = report.candidate.auc.unwrap();
    assert!(auc > 0.6, "the model learned nothing: {report:?}");
    let stored = hoffrec::recommend::store::history(&lake).await.unwrap();
    assert_eq!(
        stored.last().map(|m| m.version.as_str()),
        Some(report.candidate.version.as_str())
    );
    let current = hoffrec::recommend::store::current(&lake).await.unwrap();
    assert_eq!(
        current.map(|m| m.version) == Some(report.candidate.version.clone()),
        report.promoted,
        "{report:?}"
    );
    assert_eq!(report.promoted, auc >= report.current_auc.unwrap_or(0.0), "{report:?}");
}
