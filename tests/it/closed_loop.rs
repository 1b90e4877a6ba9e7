//! The closed loop over simulated days: lists shown to the simulator's customers, their
//! reactions landed and folded, the ranker retrained. After the first day, both learned
//! models must beat popularity clearly, and online retraining must not fall behind the
//! frozen first model. At this size (150 customers, 6 days) the two learned arms are
//! within noise of each other: in five runs of this and the previous round's code, online
//! led in two and trailed in three, by up to 0.01 on average, so "online strictly ahead"
//! would be a coin flip; `hoffrec bench loop` (300 customers, 10 days) is the measurement.

use crate::common;

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
        seeds: 1,
    };
    let report = hoffrec::bench::closed_loop::run(&config, &args).await.unwrap();
    let ctr = |arm: &str| report.after_day_one[arm];
    let curves = serde_json::to_string(&report.click_through).unwrap();
    assert!(
        ctr("online") >= ctr("frozen") - 0.02,
        "online fell behind the frozen model: {curves}"
    );
    assert!(ctr("online") > ctr("popularity") + 0.04, "{curves}");
    assert!(ctr("frozen") > ctr("popularity") + 0.04, "{curves}");
    for arm in hoffrec::bench::closed_loop::ARMS {
        assert_eq!(report.click_through[arm].len(), 6, "{curves}");
    }
}
