//! The marts: a fixture history with known answers gives the expected portrait; folding it
//! in one run, in twenty increments, or after a killed run gives identical marts; Spark SQL
//! runs the same files over the same tables on HDFS and agrees.

use crate::common;

use crate::common::history::{self, WORKED};
use hoffrec::catalog::Catalog;
use hoffrec::lake::LakeUrl;
use hoffrec::mart::files::MartFile;
use serde_json::Value as Json;

fn catalog() -> Catalog {
    Catalog::load(&common::repo().join("topics"), &common::repo().join("avro")).unwrap()
}

fn files() -> Vec<MartFile> {
    hoffrec::mart::files::load(&common::repo().join("mart_sql")).unwrap()
}

fn local_lake(dir: &tempfile::TempDir) -> LakeUrl {
    LakeUrl::parse(dir.path().to_str().unwrap()).unwrap()
}

async fn fold(lake: &LakeUrl) -> hoffrec::mart::fold::FoldReport {
    hoffrec::mart::fold::fold(lake, &catalog(), &files()).await.unwrap()
}

/// Every mart's rows as sorted JSON lines, for comparing whole marts.
async fn dump(lake: &LakeUrl) -> Vec<(String, Vec<String>)> {
    let marts: Vec<String> = files().into_iter().filter(|f| f.is_mart()).map(|f| f.name).collect();
    let (ctx, _) = hoffrec::mart::session::lake_session(lake, &catalog(), &marts)
        .await
        .unwrap();
    let mut out = Vec::new();
    for m in marts {
        let batches = ctx
            .sql(&format!("SELECT * FROM mart.{m}"))
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        let mut rows = json_rows(&batches);
        rows.sort();
        out.push((m, rows));
    }
    out
}

fn json_rows(batches: &[arrow::record_batch::RecordBatch]) -> Vec<String> {
    let mut buf = Vec::new();
    {
        let mut w = arrow::json::LineDelimitedWriter::new(&mut buf);
        for b in batches {
            w.write(b).unwrap();
        }
        w.finish().unwrap();
    }
    String::from_utf8(buf).unwrap().lines().map(str::to_string).collect()
}

async fn rows(lake: &LakeUrl, sql: &str) -> Vec<Json> {
    let marts: Vec<String> = files().into_iter().filter(|f| f.is_mart()).map(|f| f.name).collect();
    let (ctx, _) = hoffrec::mart::session::lake_session(lake, &catalog(), &marts)
        .await
        .unwrap();
    let batches = ctx.sql(sql).await.unwrap().collect().await.unwrap();
    json_rows(&batches)
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_worked_example_gets_the_expected_portrait() {
    let dir = tempfile::tempdir().unwrap();
    let lake = local_lake(&dir);
    history::land(&lake, &history::events(), 1, |_| async {}).await;
    let report = fold(&lake).await;
    assert!(report.changed_customers.contains(&WORKED.to_string()), "{report:?}");

    let p = &rows(
        &lake,
        &format!("SELECT * FROM mart.customer_portrait WHERE customer_id = '{WORKED}'"),
    )
    .await[0];
    let expect = |col: &str, want: Json| assert_eq!(p[col], want, "{col} in {p:#}");
    expect("sex", "female".into());
    expect("age_band", "35-44".into());
    // One 50-minute visit over 8 distinct swings, accessories and more: undecided.
    expect("sessions", 1.into());
    expect("undecided_sessions", 1.into());
    expect("undecided_shopper", true.into());
    expect("search_share", 1.0.into());
    expect("direct_share", 0.0.into());
    expect("brand_loyal", false.into());
    // 100k before the window over ~3 periods of history, 100k in the last 14 days.
    let burst = p["renovation_burst"].as_f64().unwrap();
    assert!(burst >= 2.0, "burst {burst}");
    expect("renovation_burst_flag", true.into());
    expect("renovation_scope", "full".into());
    expect("spend_tier", "high".into());
    expect("district", "Жуковка".into());
    expect("wealth_tier", "high".into());
    expect("housing_market", "secondary".into());
    // Each inference names its rule and the raw rows it read.
    let because = |col: &str| p[format!("{col}_because")].as_str().unwrap_or_default().to_string();
    let market = because("housing_market");
    assert!(
        market.starts_with("build_year_vs_registration: egrn-")
            && market.contains("built 2009")
            && market.contains("17 years later"),
        "{market}"
    );
    assert!(
        because("undecided_shopper").contains("session s-worked-1 went through 5 products of Сад in 50 min"),
        "{p:#}"
    );
    assert!(
        because("wealth_tier").contains("Жуковка (home) 650000 RUB/m2 in dpi-"),
        "{p:#}"
    );
    assert!(
        because("renovation_burst_flag").contains("100000 RUB of Ремонт in the last 14 days against 100000 RUB before"),
        "{p:#}"
    );
    expect("bulk_buyer", false.into());
    expect("days_since_registration", 42.into());
    expect("new_homeowner", true.into());
    expect("has_sauna", true.into());
    expect("has_pool", true.into());
    expect("consents", "real_estate_profile,social_profile".into());
    expect("lifecycle_stage", "renovating".into());

    // The renter's store order was cancelled; only the partner order counts.
    let r = &rows(
        &lake,
        "SELECT * FROM mart.customer_portrait WHERE customer_id = 'c-renter'",
    )
    .await[0];
    assert_eq!(
        (r["orders"].as_i64(), r["spend_kopecks"].as_i64()),
        (Some(1), Some(300_000)),
        "{r:#}"
    );
    assert_eq!(r["direct_share"], 1.0, "{r:#}");
    assert_eq!(r["consents"], "", "{r:#}");

    // Shown and clicked is 1, shown and ignored is 0, never shown has no row.
    let labels = rows(
        &lake,
        "SELECT product_id, label FROM mart.interactions ORDER BY product_id",
    )
    .await;
    assert_eq!(labels.len(), 2, "{labels:?}");
    assert_eq!(
        (labels[0]["product_id"].as_str(), labels[0]["label"].as_i64()),
        (Some("72001"), Some(1))
    );
    assert_eq!(
        (labels[1]["product_id"].as_str(), labels[1]["label"].as_i64()),
        (Some("81001"), Some(0))
    );

    // Products: tiers within the category, co-viewed neighbours.
    let swings = rows(
        &lake,
        "SELECT product_id, price_tier FROM mart.product_features WHERE category_id = '71' ORDER BY product_id",
    )
    .await;
    let tiers: Vec<i64> = swings.iter().map(|r| r["price_tier"].as_i64().unwrap()).collect();
    assert_eq!(tiers, [1, 2, 3]);
    let n = rows(
        &lake,
        "SELECT neighbour_id, co_viewers FROM mart.product_neighbour WHERE product_id = '32001' ORDER BY neighbour_id",
    )
    .await;
    assert!(
        n.iter().any(|r| r["neighbour_id"] == "71001" && r["co_viewers"] == 2),
        "{n:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn one_fold_and_twenty_increments_give_identical_marts() {
    let events = history::events();
    let once_dir = tempfile::tempdir().unwrap();
    let once = local_lake(&once_dir);
    history::land(&once, &events, 1, |_| async {}).await;
    fold(&once).await;

    // Twice along the way, every raw table and every mart is compacted as the running stages
    // do it: compaction's files must not look like new rows to the combining marts.
    let steps_dir = tempfile::tempdir().unwrap();
    let steps = local_lake(&steps_dir);
    let compacted = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    history::land(&steps, &events, 20, |slice| {
        let (lake, compacted) = (steps.clone(), compacted.clone());
        async move {
            fold(&lake).await;
            if slice == 7 || slice == 14 {
                let removed = compact_everything(&lake).await;
                compacted.fetch_add(removed, std::sync::atomic::Ordering::Relaxed);
            }
        }
    })
    .await;
    assert!(
        compacted.load(std::sync::atomic::Ordering::Relaxed) > 0,
        "nothing was compacted"
    );
    let (a, b) = (dump(&once).await, dump(&steps).await);
    for ((name, x), (_, y)) in a.iter().zip(&b) {
        assert!(!x.is_empty(), "{name} is empty");
        assert_eq!(x, y, "{name} differs");
    }
    // Nothing new: a further fold changes nothing.
    let again = fold(&steps).await;
    assert!(again.marts.iter().all(|m| m.changed == 0), "{again:?}");
}

/// Ingest compacts raw tables on its own schedule, also while the marts are behind (every
/// 10 minutes, and all the while `mart run` is down). The rows of compacted files must
/// still reach every mart; once vacuum has deleted them, the mart starts over from every
/// row rather than miss them.
#[tokio::test(flavor = "multi_thread")]
async fn raw_compaction_and_vacuum_between_folds_lose_no_rows_on_hdfs() {
    let _services = common::needs!(Hdfs);
    let events = history::events();
    let once_dir = tempfile::tempdir().unwrap();
    let once = local_lake(&once_dir);
    history::land(&once, &events, 1, |_| async {}).await;
    fold(&once).await;

    let lake = hdfs_lake();
    let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    history::land(&lake, &events, 12, |slice| {
        let (lake, log) = (lake.clone(), log.clone());
        async move {
            let entry = match slice {
                // Slices 1-3 land unfolded, then compaction merges their files with
                // folded ones: out of the live set, still on storage.
                1 | 2 | 5 | 6 | 7 => "landed".to_string(),
                3 => format!("compacted {} (kept)", compact_raw(&lake, 168).await.0),
                // Vacuum at once: files of slices 5-8, not folded yet, are gone.
                8 => format!("vacuumed {}", compact_raw(&lake, 0).await.1),
                _ => {
                    let r = fold(&lake).await;
                    format!("fold rebuilt {}", r.marts.iter().filter(|m| m.rebuilt).count())
                }
            };
            log.lock().unwrap().push(entry);
        }
    })
    .await;
    let log = log.lock().unwrap().clone();
    assert!(!log[3].starts_with("compacted 0"), "nothing compacted: {log:?}");
    assert_eq!(
        log[4], "fold rebuilt 0",
        "files compacted but kept need no rebuild: {log:?}"
    );
    assert!(!log[8].ends_with(" 0"), "nothing vacuumed: {log:?}");
    assert!(
        !log[9].ends_with(" 0"),
        "vacuumed rows since the last fold must rebuild: {log:?}"
    );
    let (a, b) = (dump(&once).await, dump(&lake).await);
    for ((name, x), (_, y)) in a.iter().zip(&b) {
        assert!(!x.is_empty(), "{name} is empty");
        assert_eq!(x, y, "{name} differs ({log:?})");
    }
}

/// Ingest's maintenance pass (compact, checkpoint, vacuum files unreferenced for longer
/// than `retention_hours`) over every raw table: files compacted and files vacuumed.
async fn compact_raw(lake: &LakeUrl, retention_hours: u64) -> (u64, usize) {
    let mut config = hoffrec::config::MartConfig::default();
    config.maintenance.min_commits = 0;
    config.maintenance.vacuum_retention_hours = retention_hours;
    let (mut removed, mut vacuumed) = (0, 0);
    for topic in catalog().raw_topics() {
        let table = hoffrec::lake::raw::path(&topic.name);
        match hoffrec::lake::maintenance::run(lake, &table, &config.maintenance, config.target_file_bytes, None).await {
            Ok(r) => {
                removed += r.files_removed;
                vacuumed += r.files_vacuumed;
            }
            Err(deltalake::errors::DeltaTableError::NotATable(_)) => {}
            Err(e) => panic!("{table}: {e}"),
        }
    }
    (removed, vacuumed)
}

/// One maintenance pass (compact, checkpoint, vacuum) over every raw table and mart, as
/// ingest and `mart run` schedule them; returns how many files compaction replaced.
async fn compact_everything(lake: &LakeUrl) -> u64 {
    let mut config = hoffrec::config::MartConfig::default();
    config.maintenance.min_commits = 0;
    let mut removed = compact_raw(lake, config.maintenance.vacuum_retention_hours).await.0;
    for mart in files().into_iter().filter(|f| f.is_mart()) {
        match hoffrec::mart::maintain(lake, &mart.name, &config, None).await {
            Ok(r) => removed += r.files_removed,
            Err(deltalake::errors::DeltaTableError::NotATable(_)) => {}
            Err(e) => panic!("{}: {e}", mart.name),
        }
    }
    removed
}

fn hdfs_lake() -> LakeUrl {
    common::require_service("HDFS", &common::hdfs_url());
    let url = format!(
        "{}/hoffrec-it/{}",
        common::hdfs_url().trim_end_matches('/'),
        common::unique("mart")
    );
    LakeUrl::parse(&url).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn spark_sql_runs_the_same_files_and_agrees_on_hdfs() {
    let _services = common::needs!(Hdfs);
    let lake = hdfs_lake();
    history::land(&lake, &history::events(), 1, |_| async {}).await;
    fold(&lake).await;
    let mut args = vec![
        common::repo().join("tests/spark/marts.py").display().to_string(),
        lake.url(""),
        common::repo().join("mart_sql").display().to_string(),
    ];
    let catalog = catalog();
    for topic in catalog.raw_topics() {
        let url = lake.table_url(&hoffrec::lake::raw::path(&topic.name)).unwrap();
        let name = hoffrec::mart::session::sql_name(&topic.name);
        args.push(format!("{name}={url}"));
        if let Some(purpose) = &topic.consent_purpose {
            args.push(format!("--purpose={name}:{purpose}"));
        }
    }
    let consents = catalog.consent_topic().expect("a consent topic");
    args.push(format!(
        "--consents={}",
        hoffrec::mart::session::sql_name(&consents.name)
    ));
    let out = std::process::Command::new("python3")
        .args(&args)
        .output()
        .expect("python3 runs (tests/setup.sh installs pyspark and delta-spark)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "spark failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = stdout
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .expect("a JSON line from spark");
    let report: Json = serde_json::from_str(line).unwrap();
    let marts: Vec<String> = files().into_iter().filter(|f| f.is_mart()).map(|f| f.name).collect();
    for m in &marts {
        let r = &report[m.as_str()];
        assert!(r["spark"].as_u64().unwrap_or(0) > 0, "{m}: {r}");
        assert_eq!(r["spark"], r["hoffrec"], "{m}: {r}");
        assert_eq!(
            (r["only_spark"].as_u64(), r["only_hoffrec"].as_u64()),
            (Some(0), Some(0)),
            "{m}: {r}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_fold_reruns_to_identical_marts_and_announces_changes() {
    let _services = common::needs!(Kafka, Hdfs);
    let lab = common::lab::Lab::new(1).await;
    lab.add_raw_topics().await;
    let events = history::events();
    history::land(&lab.lake_url(), &events, 1, |_| async {}).await;
    let reference_dir = tempfile::tempdir().unwrap();
    let reference = local_lake(&reference_dir);
    history::land(&reference, &events, 1, |_| async {}).await;
    fold(&reference).await;

    // Killed once the first mart has committed and the rest are under way.
    let mut first = lab.hoffrec(&["mart", "run", "--once"], &[]);
    common::poll_until("the first mart commits", std::time::Duration::from_secs(120), || {
        let log = common::lab::tail(&first.log);
        async move { log.contains("mart folded").then_some(()) }
    })
    .await;
    first.kill9();
    let (behind, status, _) = lab.run(&["mart", "status", "--json"]);
    assert!(behind, "{status}");
    let statuses: Json = serde_json::from_str(&status).unwrap();
    assert!(
        statuses
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["lag_versions"].as_u64() > Some(0)),
        "{status}"
    );

    let (ok, out, err) = lab.run(&["mart", "run", "--once"]);
    assert!(ok, "{out}\n{err}");
    assert_eq!(dump(&lab.lake_url()).await, dump(&reference).await);

    let (_, status, _) = lab.run(&["mart", "status", "--json"]);
    let statuses: Json = serde_json::from_str(&status).unwrap();
    for m in statuses.as_array().unwrap() {
        assert_eq!(m["lag_versions"], 0, "{m}");
    }

    // Every customer whose portrait changed is announced, keyed by customer id.
    let catalog = Catalog::load(&lab.topics_dir, &lab.schemas_dir).unwrap();
    let changes = catalog
        .topic_for(hoffrec::catalog::Role::MartChanges)
        .unwrap()
        .name
        .clone();
    let schemas = lab.schemas();
    let announced: Vec<String> = lab
        .read_topic(&changes)
        .iter()
        .map(|(payload, _)| {
            let v = schemas.decode(payload, "mart_change").unwrap();
            match common::lab::field(&v, "customer_id") {
                apache_avro::types::Value::String(s) => s.clone(),
                other => panic!("{other:?}"),
            }
        })
        .collect();
    for c in [WORKED, "c-renter"] {
        assert!(announced.iter().any(|a| a == c), "{c} not in {announced:?}");
    }
}

/// Stopped right after the portrait's commit and before its announcement (as a kill -9
/// there would), the stage announces those customers when it starts again, though the
/// fold itself has nothing left to do.
#[tokio::test(flavor = "multi_thread")]
async fn changes_committed_but_not_announced_are_announced_at_restart() {
    let _services = common::needs!(Kafka, Hdfs);
    let lab = common::lab::Lab::new(1).await;
    lab.add_raw_topics().await;
    history::land(&lab.lake_url(), &history::events(), 1, |_| async {}).await;
    let changes = lab.topic_of(hoffrec::catalog::Role::MartChanges);
    let (ok, _, err) = lab.command_with_env(
        &["mart", "run", "--once"],
        &[("HOFFREC_TEST_ABORT_BEFORE_ANNOUNCE", "1")],
    );
    assert!(!ok, "the process was to stop before announcing: {err}");
    assert!(lab.read_topic(&changes).is_empty(), "nothing announced yet");
    let portrait_version = rows(
        &lab.lake_url(),
        &format!("SELECT count(*) AS n FROM mart.customer_portrait WHERE customer_id = '{WORKED}'"),
    )
    .await;
    assert_eq!(portrait_version[0]["n"], 1, "the portrait was committed");

    let (ok, out, err) = lab.run(&["mart", "run", "--once"]);
    assert!(ok, "{out}\n{err}");
    let schemas = lab.schemas();
    let announced: Vec<(String, i64)> = lab
        .read_topic(&changes)
        .iter()
        .map(|(payload, _)| {
            let v = schemas.decode(payload, "mart_change").unwrap();
            match (
                common::lab::field(&v, "customer_id"),
                common::lab::field(&v, "mart_version"),
            ) {
                (apache_avro::types::Value::String(c), apache_avro::types::Value::Long(n)) => (c.clone(), *n),
                other => panic!("{other:?}"),
            }
        })
        .collect();
    for c in [WORKED, "c-renter"] {
        assert!(announced.iter().any(|(a, _)| a == c), "{c} not in {announced:?}");
    }
    assert!(err.contains("not announced"), "the restart says what it does: {err}");

    // Once announced, a further start announces nothing again.
    let before = announced.len();
    let (ok, _, err) = lab.run(&["mart", "run", "--once"]);
    assert!(ok, "{err}");
    assert_eq!(lab.read_topic(&changes).len(), before);
}

/// A change of more customers than the producer's queue holds (librdkafka's default is
/// 100,000 messages; a catalogue import marks every customer) waits for deliveries
/// instead of failing, and every customer is announced.
#[tokio::test(flavor = "multi_thread")]
async fn announcing_200k_changed_customers_applies_backpressure() {
    let _services = common::needs!(Kafka, Hdfs);
    let lab = common::lab::Lab::new(1).await;
    let changes = lab.topic_of(hoffrec::catalog::Role::MartChanges);
    let kafka = hoffrec::config::KafkaConfig {
        brokers: common::kafka_bootstrap(),
        ..Default::default()
    };
    let announcer =
        hoffrec::mart::announce::Announcer::new(&kafka, &changes, std::sync::Arc::new(lab.schemas())).unwrap();
    let customers: Vec<String> = (0..200_000).map(|i| format!("c-{i:06}")).collect();
    announcer.announce(Some(7), &customers).await.unwrap();
    assert_eq!(lab.read_topic(&changes).len(), 200_000);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_running_stage_folds_when_a_lake_commit_is_announced() {
    use rdkafka::producer::FutureRecord;
    let _services = common::needs!(Kafka, Hdfs);
    let lab = common::lab::Lab::new(1).await;
    lab.add_raw_topics().await;
    // Only lake commits trigger folds here (the interval is an hour); one fold at start.
    let mut stage = lab.hoffrec(
        &["mart", "run"],
        &[
            ("HOFFREC__MART__INTERVAL_MS", "3600000"),
            ("HOFFREC__MART__DEBOUNCE_MS", "200"),
        ],
    );
    common::poll_until("the start-up fold", std::time::Duration::from_secs(120), || {
        let log = common::lab::tail(&stage.log);
        async move { log.contains("mart folded").then_some(()) }
    })
    .await;
    history::land(&lab.lake_url(), &history::events(), 1, |_| async {}).await;
    let producer = lab.producer();
    producer
        .send(
            FutureRecord::to(&lab.commits)
                .key("raw/raw.site.page_view")
                .payload(&b"any"[..]),
            std::time::Duration::from_secs(30),
        )
        .await
        .unwrap();
    let catalog = Catalog::load(&lab.topics_dir, &lab.schemas_dir).unwrap();
    let changes = catalog
        .topic_for(hoffrec::catalog::Role::MartChanges)
        .unwrap()
        .name
        .clone();
    common::poll_until(
        "the worked customer on mart.changes",
        std::time::Duration::from_secs(120),
        || {
            let n = lab.read_topic(&changes).len();
            async move { (n >= 2).then_some(()) }
        },
    )
    .await;
    assert!(stage.stop(), "{}", common::lab::tail(&stage.log));
    let p = rows(
        &lab.lake_url(),
        &format!("SELECT lifecycle_stage FROM mart.customer_portrait WHERE customer_id = '{WORKED}'"),
    )
    .await;
    assert_eq!(p[0]["lifecycle_stage"], "renovating");
}
