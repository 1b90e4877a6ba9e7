//! `hoffrec evaluate` on a simulator export: the production pipeline (marts, candidates,
//! rules, ranker) ranks better than popularity, recent popularity and item-kNN on NDCG@10;
//! EASE and ALS are reported beside them with fit and ranking times and per segment.
//! On the committed slice of a real log (Instacart, tests/real_logs) the ranker learns
//! from next-purchase labels and ranks at least as well as the strongest baselines.

use crate::common;

#[test]
fn evaluate_on_a_simulator_export_beats_its_baselines() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("interactions.csv");
    let hoffrec = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_hoffrec"))
            .current_dir(common::repo())
            .args(args)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
    };
    let log_arg = log.to_str().unwrap();
    hoffrec(&[
        "simulate",
        "--seed",
        "3",
        "--customers",
        "400",
        "--export-interactions",
        log_arg,
    ]);
    let out = hoffrec(&[
        "evaluate",
        "--interactions",
        log_arg,
        "--split-at",
        "2026-10-15",
        "--exclude-seen",
    ]);
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(report["customers_evaluated"].as_u64().unwrap() > 50, "{report}");
    let ndcg = |arm: &str| report[arm]["NDCG@10"].as_f64().unwrap();
    for baseline in ["popularity", "recent_popularity", "item_knn"] {
        assert!(ndcg("hoffrec") > ndcg(baseline), "hoffrec vs {baseline}: {report}");
    }
    let segments = report["segments"].as_object().unwrap();
    let evaluated = report["customers_evaluated"].as_u64().unwrap();
    let count = |s: &str| segments.get(s).and_then(|n| n.as_u64()).unwrap_or(0);
    assert_eq!(count("new") + count("returning"), evaluated, "{report}");
    assert_eq!(
        count("history 1-4") + count("history 5-19") + count("history 20+"),
        evaluated,
        "{report}"
    );
    for arm in ["hoffrec", "popularity", "recent_popularity", "item_knn", "ease", "als"] {
        for metric in ["HR@10", "NDCG@10", "Recall@20", "coverage"] {
            let v = report[arm][metric].as_f64().unwrap();
            assert!((0.0..=1.0).contains(&v), "{arm} {metric} = {v}");
        }
        assert!(
            report[arm]["fit_ms"].is_u64() && report[arm]["rank_ms"].is_u64(),
            "{arm}: {report}"
        );
        for (segment, _) in segments {
            let v = report[arm]["ndcg_by_segment"][segment].as_f64().unwrap();
            assert!((0.0..=1.0).contains(&v), "{arm} {segment} = {v}");
        }
    }
    // The learned collaborative models find what customers buy next far better than
    // what everyone buys.
    for arm in ["ease", "als"] {
        assert!(ndcg(arm) > ndcg("popularity"), "{arm} vs popularity: {report}");
    }
}

/// `hoffrec evaluate` on a committed sample of a real purchase log, split at `split_at`.
fn evaluate_real_log(file: &str, split_at: &str) -> serde_json::Value {
    let log = common::repo().join("tests/real_logs").join(file);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_hoffrec"))
        .current_dir(common::repo())
        .args(["evaluate", "--interactions"])
        .arg(&log)
        .args(["--split-at", split_at])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(&stdout).unwrap()
}

/// The log has no impressions: the ranker learns which products each customer buys next
/// from a time split inside the training window, not from the hand-set prior; it leads
/// the simple baselines clearly and does not fall behind EASE, the strongest on baskets,
/// which it uses as a feature beside repeat purchase and recency.
fn learns_next_purchases(report: &serde_json::Value, beaten: &[&str]) {
    assert_eq!(report["ranker_labels"], "next_purchase", "{report}");
    assert_ne!(
        report["model_version"],
        hoffrec::recommend::model::Model::prior().version.as_str(),
        "{report}"
    );
    let ndcg = |arm: &str| report[arm]["NDCG@10"].as_f64().unwrap();
    for baseline in beaten {
        assert!(
            ndcg("hoffrec") > 1.2 * ndcg(baseline),
            "hoffrec vs {baseline}: {report}"
        );
    }
    assert!(ndcg("hoffrec") >= 0.97 * ndcg("ease"), "hoffrec vs ease: {report}");
    // Products the customer never bought are ordered by the novel head, fitted on them
    // alone and judged on customers it never saw.
    let head_auc = report["novel_head"]["auc"].as_f64().unwrap_or(0.0);
    assert!(head_auc > 0.6, "novel head: {report}");
}

#[test]
fn evaluate_on_a_real_grocery_log_learns_next_purchases() {
    let report = evaluate_real_log("instacart_200.csv.gz", "2017-06-29T12:00:00Z");
    // Every customer's last basket is held out.
    assert_eq!(report["customers_evaluated"].as_u64(), Some(200), "{report}");
    learns_next_purchases(&report, &["popularity", "recent_popularity", "item_knn", "als"]);
}

/// A second real log, a year of a retailer's baskets (84.51° Complete Journey 2.0), judged
/// on the last 14 days.
#[test]
fn evaluate_on_a_real_retail_year_learns_next_purchases() {
    let report = evaluate_real_log("completejourney_250.csv.gz", "2017-12-18T00:00:00Z");
    assert_eq!(report["customers_evaluated"].as_u64(), Some(170), "{report}");
    learns_next_purchases(&report, &["popularity", "recent_popularity", "item_knn", "als"]);
}
