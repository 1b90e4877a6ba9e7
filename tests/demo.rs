//! `hoffrec demo`, the README's main-job command: every stage in one process on the
//! embedded broker and a local lake, run to its summary with work done by every stage.

mod common;

#[test]
fn the_demo_runs_every_stage_to_a_summary() {
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
}
