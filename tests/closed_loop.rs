//! The closed loop over simulated days: lists shown to the simulator's customers, their
//! reactions landed and folded, the ranker retrained. Online retraining must beat a frozen
//! first model and popularity on click-through after the first day.

mod common;

#[tokio::test(flavor = "multi_thread")]
async fn online_retraining_beats_a_frozen_model_and_popularity() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = hoffrec::config::Config::default();
    config.lake.url = dir.path().display().to_string();
    config.catalog.topics_dir = common::repo().join("topics");
    config.catalog.schemas_dir = common::repo().join("avro");
    config.mart.sql_dir = common::repo().join("mart_sql");
    let args = hoffrec::bench::closed_loop::LoopArgs {
        customers: 150,
        days: 6,
        seed: 1,
    };
    let report = hoffrec::bench::closed_loop::run(&config, &args).await.unwrap();
    let ctr = |arm: &str| report.after_day_one[arm];
    let curves = serde_json::to_string(&report.click_through).unwrap();
    assert!(ctr("online") > ctr("frozen"), "{curves}");
    assert!(ctr("online") > ctr("popularity"), "{curves}");
    for arm in hoffrec::bench::closed_loop::ARMS {
        assert_eq!(report.click_through[arm].len(), 6, "{curves}");
    }
}
