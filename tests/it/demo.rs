//! `hoffrec demo`, the README's main-job command: every stage in one process on the
//! embedded broker and a local lake, run to its summary with work done by every stage.

use crate::common;

#[tokio::test(flavor = "multi_thread")]
async fn the_demo_runs_every_stage_to_a_summary() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_hoffrec"))
        .current_dir(common::repo())
        .args(["demo", "--duration", "50", "--customers", "80", "--lake-dir"])
        .arg(dir.path().join("lake"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let line = stdout
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .expect("the JSON summary");
    let s: serde_json::Value = serde_json::from_str(line).unwrap();
    let n = |v: &serde_json::Value| v.as_u64().unwrap_or(0);
    // Sources: the API pollers, the file drops and the collector all landed events.
    for t in [
        "raw.store_order",
        "raw.vk_profile",
        "raw.register_real_estate",
        "raw.store_catalogue",
        "raw.district_price_index",
        "raw.site_session_start",
        "raw.site_product_view",
        "raw.site_rec_impression",
    ] {
        assert!(n(&s["events_by_table"][t]) > 0, "{t} is empty: {s}");
    }
    assert!(n(&s["lake_files"]) > 0, "{s}");
    for m in ["customer_portrait", "product_features", "interactions"] {
        assert!(n(&s["mart_rows"][m]) > 0, "mart {m} is empty: {s}");
    }
    assert!(n(&s["lists_published"]) > 0, "{s}");
    assert!(n(&s["impressions"]) > 0 && n(&s["clicks"]) > 0, "{s}");
    assert!(stderr.contains("Recommendations:"), "no readable summary: {stderr}");
    secondary_market_owners_get_no_new_build_materials(&dir.path().join("lake")).await;
}

/// In the demo's own lake, as the connectors landed it: every new owner of a home built
/// years before the right was registered is on the secondary market, and their lists hold
/// no soundproofing and no wall levelling.
async fn secondary_market_owners_get_no_new_build_materials(lake: &std::path::Path) {
    use hoffrec::recommend::{Recommender, model::Model, rules::Rules, store};
    let lake = hoffrec::lake::LakeUrl::parse(lake.to_str().unwrap()).unwrap();
    let catalog =
        hoffrec::catalog::Catalog::load(&common::repo().join("topics"), &common::repo().join("avro")).unwrap();
    let (ctx, _) = hoffrec::mart::session::lake_session(&lake, &catalog, &["customer_portrait".to_string()])
        .await
        .unwrap();
    let batches = ctx
        .sql(
            "SELECT p.customer_id, p.housing_market FROM mart.customer_portrait p \
             JOIN raw.register_real_estate r ON r.customer_id = p.customer_id \
             WHERE p.new_homeowner AND extract(YEAR FROM r.right_registration_date) - r.build_year >= 3",
        )
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    let mut owners = Vec::new();
    for b in &batches {
        let ids = arrow::compute::cast(b.column(0), &arrow::datatypes::DataType::Utf8).unwrap();
        let ids = arrow::array::AsArray::as_string::<i32>(&ids);
        let markets = arrow::compute::cast(b.column(1), &arrow::datatypes::DataType::Utf8).unwrap();
        let markets = arrow::array::AsArray::as_string::<i32>(&markets);
        for i in 0..b.num_rows() {
            assert_eq!(markets.value(i), "secondary", "{}", ids.value(i));
            owners.push(ids.value(i).to_string());
        }
    }
    assert!(!owners.is_empty(), "the demo has new owners of resold homes");
    let r = Recommender::new(lake.clone(), catalog, Rules::load(None).unwrap(), 10);
    let model = store::current(&lake).await.unwrap().unwrap_or_else(Model::prior);
    for e in r.rank(&owners, &model).await.unwrap() {
        let text = hoffrec::recommend::rank::render(&e);
        assert!(
            e.list.iter().all(|s| s.category_id != "81" && s.category_id != "82"),
            "{text}"
        );
        assert!(text.contains("build_year_vs_registration"), "{text}");
    }
}
