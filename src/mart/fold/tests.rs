//! The fold's version bookkeeping on a local lake in a temp directory: which raw versions
//! a mart has folded in, what counts as new rows since, and when a mart starts over.

use super::*;
use crate::mart::files;
use crate::mart::tables::Added;
use arrow::array::{Date32Array, Int64Array, StringArray, TimestampMicrosecondArray};
use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use deltalake::protocol::SaveMode;

const TOPIC: &str = "raw.t";

/// `totals` adds up what new rows say (a combining mart), `most` recomputes each changed
/// key from every row, `moved` counts the folds in which a customer's total changed
/// (`prev_mart`).
const MARTS: [(&str, &str); 3] = [
    (
        "010_totals.sql",
        "-- mart: totals\n-- key: customer_id\n-- combine: n = target.n + source.n\n\
         SELECT customer_id, sum(n) AS n FROM new_raw.t GROUP BY customer_id;\n",
    ),
    (
        "020_most.sql",
        "-- mart: most\n-- key: customer_id\n\
         SELECT DISTINCT customer_id FROM new_raw.t;\n\
         SELECT customer_id, max(n) AS most FROM raw.t WHERE customer_id IN (SELECT customer_id FROM changed) \
         GROUP BY customer_id;\n",
    ),
    (
        "030_moved.sql",
        "-- mart: moved\n-- key: customer_id\n-- combine: times = target.times + source.times\n\
         SELECT m.customer_id, CAST(1 AS BIGINT) AS times FROM mart.totals m \
         LEFT JOIN prev_mart.totals p ON m.customer_id = p.customer_id WHERE p.n IS NULL OR p.n <> m.n;\n",
    ),
];

struct Lab {
    _dir: tempfile::TempDir,
    lake: LakeUrl,
    files: Vec<MartFile>,
}

impl Lab {
    fn new() -> Self {
        Self::with_marts(&MARTS)
    }

    fn with_marts(marts: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let sql = dir.path().join("sql");
        std::fs::create_dir(&sql).unwrap();
        for (name, text) in marts {
            std::fs::write(sql.join(name), text).unwrap();
        }
        let lake = LakeUrl::parse(dir.path().join("lake").to_str().unwrap()).unwrap();
        let files = files::load(&sql).unwrap();
        Self { _dir: dir, lake, files }
    }

    fn schema() -> SchemaRef {
        let ts = DataType::Timestamp(TimeUnit::Microsecond, Some(crate::lake::columns::TIMESTAMP_TZ.into()));
        Arc::new(Schema::new(vec![
            Field::new("customer_id", DataType::Utf8, true),
            Field::new("n", DataType::Int64, true),
            Field::new("event_time", ts, true),
            Field::new(crate::lake::raw::PARTITION_COLUMN, DataType::Date32, true),
        ]))
    }

    /// One raw commit with these rows; its version.
    async fn land(&self, rows: &[(&str, i64)]) -> u64 {
        let ids = StringArray::from_iter_values(rows.iter().map(|(c, _)| *c));
        let ns = Int64Array::from_iter_values(rows.iter().map(|(_, n)| *n));
        // 2024-05-01: one partition, so compaction has files to merge.
        let times = TimestampMicrosecondArray::from(vec![1_714_521_600_000_000; rows.len()])
            .with_timezone(crate::lake::columns::TIMESTAMP_TZ);
        let dates = Date32Array::from(vec![19_844; rows.len()]);
        let batch = RecordBatch::try_new(
            Self::schema(),
            vec![Arc::new(ids), Arc::new(ns), Arc::new(times), Arc::new(dates)],
        )
        .unwrap();
        let table = crate::lake::open_table(&self.lake, &crate::lake::raw::path(TOPIC))
            .await
            .unwrap();
        let table = table
            .write(vec![batch])
            .with_save_mode(SaveMode::Append)
            .with_partition_columns([crate::lake::raw::PARTITION_COLUMN])
            .await
            .unwrap();
        table.version().unwrap()
    }

    async fn raw(&self) -> PinnedRaw {
        PinnedRaw::open(&self.lake, TOPIC, Self::schema()).await.unwrap()
    }

    async fn try_fold(&self) -> Result<FoldReport, FoldError> {
        let raw = vec![self.raw().await];
        fold_pinned(&self.lake, raw, &self.files, None, Instant::now()).await
    }

    async fn fold(&self) -> FoldReport {
        self.try_fold().await.unwrap()
    }

    /// `customer_id -> value` of one bigint column of a mart.
    async fn read(&self, mart: &str, column: &str) -> BTreeMap<String, i64> {
        let (ctx, _, _) = crate::mart::session::mart_session(&self.lake, &[mart.to_string()])
            .await
            .unwrap();
        let sql = format!("SELECT customer_id, {column} FROM mart.{mart} ORDER BY customer_id");
        let batches = ctx.sql(&sql).await.unwrap().collect().await.unwrap();
        let mut out = BTreeMap::new();
        for b in &batches {
            let ids = arrow::compute::cast(b.column(0), &DataType::Utf8).unwrap();
            let ids = arrow::array::AsArray::as_string::<i32>(&ids);
            let values = arrow::array::AsArray::as_primitive::<arrow::datatypes::Int64Type>(b.column(1));
            for i in 0..b.num_rows() {
                out.insert(ids.value(i).to_string(), values.value(i));
            }
        }
        out
    }

    async fn folded(&self, mart: &str, input: &str) -> Option<u64> {
        MartTable::open(&self.lake, mart)
            .await
            .unwrap()
            .folded(input)
            .await
            .unwrap()
    }

    /// The raw table's live data files, as local paths.
    async fn raw_files(&self) -> Vec<std::path::PathBuf> {
        let table = crate::lake::open_table(&self.lake, &crate::lake::raw::path(TOPIC))
            .await
            .unwrap();
        table
            .get_file_uris()
            .unwrap()
            .map(|u| match url::Url::parse(&u) {
                Ok(url) => url.to_file_path().unwrap(),
                Err(_) => std::path::PathBuf::from(u),
            })
            .collect()
    }

    /// Delta optimize of the raw table: one file for the partition, `dataChange` false.
    async fn compact(&self) -> u64 {
        let table = crate::lake::open_table(&self.lake, &crate::lake::raw::path(TOPIC))
            .await
            .unwrap();
        let (table, metrics) = table.optimize().await.unwrap();
        assert!(metrics.num_files_removed > 1, "{metrics:?}");
        table.version().unwrap()
    }
}

fn mart<'a>(report: &'a FoldReport, name: &str) -> &'a MartReport {
    report.marts.iter().find(|m| m.mart == name).unwrap()
}

fn map(pairs: &[(&str, i64)]) -> BTreeMap<String, i64> {
    pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
}

async fn count(raw: &PinnedRaw, since: Option<u64>) -> Option<usize> {
    let ctx = crate::mart::session::session();
    match raw.added_since(&ctx, since).await.unwrap() {
        Added::Rows(rows) => Some(ctx.read_table(rows).unwrap().count().await.unwrap()),
        Added::Gone(_) => None,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn added_since_is_what_later_commits_landed() {
    let lab = Lab::new();
    assert_eq!(lab.land(&[("a", 1), ("b", 2)]).await, 0);
    assert_eq!(lab.land(&[("a", 3)]).await, 1);
    assert_eq!(lab.land(&[("c", 4), ("c", 5), ("d", 6)]).await, 2);
    let raw = lab.raw().await;
    assert_eq!(raw.version(), Some(2));
    assert_eq!(count(&raw, None).await, Some(6), "never folded: every row");
    assert_eq!(count(&raw, Some(0)).await, Some(4));
    assert_eq!(count(&raw, Some(1)).await, Some(3));
    assert_eq!(count(&raw, Some(2)).await, Some(0), "folded up to the pinned version");
    assert_eq!(count(&raw, Some(9)).await, Some(0));
    // Pinned: what lands after the fold started is the next fold's.
    lab.land(&[("e", 7)]).await;
    assert_eq!(count(&raw, Some(1)).await, Some(3));
}

#[tokio::test(flavor = "multi_thread")]
async fn compaction_is_no_new_rows_and_vacuum_means_starting_over() {
    let lab = Lab::new();
    lab.land(&[("a", 1), ("b", 2)]).await;
    lab.land(&[("a", 3)]).await;
    let compacted_away = lab.raw_files().await;
    assert_eq!(lab.compact().await, 2);
    let raw = lab.raw().await;
    assert_eq!(count(&raw, Some(1)).await, Some(0), "a compaction adds no rows");
    // Commit 1's file is no longer live but still on storage: its row is still new.
    assert_eq!(count(&raw, Some(0)).await, Some(1));
    for f in compacted_away {
        std::fs::remove_file(f).unwrap();
    }
    assert_eq!(
        count(&raw, Some(0)).await,
        None,
        "vacuumed: what landed can no longer be told"
    );
    assert_eq!(count(&raw, None).await, Some(3), "every row is still there");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_fold_records_the_versions_it_folded_in_with_the_rows() {
    let lab = Lab::new();
    let first = lab.fold().await;
    assert!(first.marts.iter().all(|m| m.version.is_some()), "{first:?}");
    assert!(mart(&first, "totals").folded.is_empty(), "nothing landed yet");
    assert_eq!(lab.folded("totals", "t").await, None);

    lab.land(&[("a", 1), ("b", 2)]).await;
    let report = lab.fold().await;
    let totals = mart(&report, "totals");
    assert_eq!(totals.folded, BTreeMap::from([("t".to_string(), 0)]));
    assert_eq!((totals.rows, totals.rebuilt), (2, false));
    assert_eq!(lab.folded("totals", "t").await, Some(0));
    // Under the app id other readers of the lake look for.
    let table = crate::lake::open_table(&lab.lake, &crate::lake::mart::path("totals"))
        .await
        .unwrap();
    let txn = table
        .snapshot()
        .unwrap()
        .transaction_version(table.log_store().as_ref(), "hoffrec-mart.totals.t")
        .await
        .unwrap();
    assert_eq!(txn, Some(0));
    let moved = mart(&report, "moved");
    let totals_version = totals.version.unwrap();
    assert_eq!(
        moved.folded,
        BTreeMap::from([("mart.totals".to_string(), totals_version), ("t".to_string(), 0)])
    );
    assert_eq!(lab.folded("moved", "mart.totals").await, Some(totals_version));

    lab.land(&[("a", 5)]).await;
    let report = lab.fold().await;
    let totals = mart(&report, "totals");
    assert_eq!(totals.folded["t"], 1);
    assert_eq!((totals.changed, totals.rows, totals.rebuilt), (1, 1, false));
    assert_eq!(
        lab.read("totals", "n").await,
        map(&[("a", 6), ("b", 2)]),
        "each row counted once"
    );
    assert_eq!(lab.read("most", "most").await, map(&[("a", 5), ("b", 2)]));
    assert_eq!(lab.read("moved", "times").await, map(&[("a", 2), ("b", 1)]));
    assert_eq!(mart(&report, "most").changed, 1, "only the key the new row touched");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_mart_that_is_not_behind_commits_nothing() {
    let lab = Lab::new();
    lab.land(&[("a", 1)]).await;
    let before = lab.fold().await;
    let again = lab.fold().await;
    for (b, a) in before.marts.iter().zip(&again.marts) {
        assert_eq!(a.version, b.version, "{} committed without anything new", a.mart);
        assert_eq!(a.folded, b.folded);
        assert_eq!((a.changed, a.rows), (0, 0));
    }
    assert_eq!(lab.read("moved", "times").await, map(&[("a", 1)]));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_fold_after_compaction_counts_each_row_once() {
    let lab = Lab::new();
    lab.land(&[("a", 1), ("b", 2)]).await;
    lab.fold().await;
    lab.land(&[("a", 3)]).await;
    lab.compact().await;
    let report = lab.fold().await;
    let totals = mart(&report, "totals");
    assert_eq!((totals.folded["t"], totals.rebuilt), (2, false));
    assert_eq!(lab.read("totals", "n").await, map(&[("a", 4), ("b", 2)]));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_mart_whose_new_rows_were_vacuumed_starts_over() {
    let lab = Lab::new();
    lab.land(&[("a", 1), ("b", 2)]).await;
    lab.fold().await;
    lab.land(&[("a", 3)]).await;
    let compacted_away = lab.raw_files().await;
    lab.compact().await;
    for f in compacted_away {
        std::fs::remove_file(f).unwrap();
    }
    let report = lab.fold().await;
    let totals = mart(&report, "totals");
    assert_eq!((totals.folded["t"], totals.rebuilt), (2, true));
    assert_eq!(
        lab.read("totals", "n").await,
        map(&[("a", 4), ("b", 2)]),
        "rebuilt, not added twice"
    );
    assert_eq!(lab.read("most", "most").await, map(&[("a", 3), ("b", 2)]));
    // Every mart that reads the vacuumed commit's rows starts over; `moved` reads only
    // the totals and counts the change the rebuild made to a's (1 -> 4).
    assert!(mart(&report, "most").rebuilt, "{report:?}");
    assert!(!mart(&report, "moved").rebuilt, "{report:?}");
    assert_eq!(lab.read("moved", "times").await, map(&[("a", 2), ("b", 1)]));
    // Back to incremental folds.
    lab.land(&[("b", 1)]).await;
    let report = lab.fold().await;
    assert!(!mart(&report, "totals").rebuilt);
    assert_eq!(lab.read("totals", "n").await, map(&[("a", 4), ("b", 3)]));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bad_combine_expression_stops_the_stage() {
    for (bad, why) in [
        ("target.n +* source.n", "does not parse"),
        ("target.missing + source.n", "names no column"),
        ("no_such_function(target.n, source.n)", "names no function"),
    ] {
        let lab = Lab::with_marts(&MARTS[..1]);
        lab.land(&[("a", 1)]).await;
        lab.fold().await;
        lab.land(&[("a", 2)]).await;
        let text = MARTS[0].1.replace("target.n + source.n", bad);
        let broken = Lab::with_marts(&[(MARTS[0].0, text.as_str())]);
        let files = broken.files.clone();
        let lab = Lab { files, ..lab };
        let e = lab.try_fold().await.unwrap_err();
        assert!(
            matches!(e, FoldError::Combine { ref column, .. } if column == "n"),
            "{why}: {e}"
        );
        assert!(!e.is_transient(), "{why}: {e}");
        // Nothing was committed: a corrected expression folds the same rows.
        assert_eq!(lab.folded("totals", "t").await, Some(0), "{why}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_repository_combine_expressions_pass_the_check() {
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let catalog = Catalog::load(&repo.join("topics"), &repo.join("avro")).unwrap();
    let files = files::load(&repo.join("mart_sql")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let lake = LakeUrl::parse(dir.path().to_str().unwrap()).unwrap();
    // An empty lake: every mart is created with the columns its query produces.
    fold(&lake, &catalog, &files).await.unwrap();
    let mut checked = 0;
    for f in &files {
        let Kind::Mart { combine, .. } = &f.kind else { continue };
        if combine.is_empty() {
            continue;
        }
        let table = MartTable::open(&lake, &f.name).await.unwrap();
        let schema = table.table.snapshot().unwrap().snapshot().arrow_schema();
        let combine: Vec<_> = combine.iter().collect();
        super::super::merge::check_combine(&f.name, &schema, &schema, &combine)
            .await
            .unwrap();
        checked += combine.len();
    }
    assert!(checked > 10, "{checked} combine lines checked");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_column_the_topic_gained_reads_as_null_in_tables_written_before() {
    let lab = Lab::new();
    lab.land(&[("a", 1)]).await;
    lab.land(&[("b", 2)]).await;
    // The topic's schema now has `weight`; no landed row carries it.
    let mut fields: Vec<Field> = Lab::schema().fields().iter().map(|f| f.as_ref().clone()).collect();
    fields.push(Field::new("weight", DataType::Float64, true));
    let raw = PinnedRaw::open(&lab.lake, TOPIC, Arc::new(Schema::new(fields)))
        .await
        .unwrap();
    let ctx = crate::mart::session::session();
    let nulls = |provider| async {
        let df = ctx.read_table(provider).unwrap();
        let df = df.filter(datafusion::prelude::col("weight").is_null()).unwrap();
        df.count().await.unwrap()
    };
    assert_eq!(nulls(raw.full(&ctx).await.unwrap()).await, 2);
    let Added::Rows(added) = raw.added_since(&ctx, Some(0)).await.unwrap() else {
        panic!("commit 1 is still in the lake")
    };
    assert_eq!(nulls(added).await, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_fold_writes_the_checkpoint_its_commits_are_due() {
    // Mart commits skip delta-rs's own hook; the fold writes the checkpoint instead.
    let lab = Lab::new();
    let mut version = None;
    for n in 0..crate::lake::CHECKPOINT_INTERVAL as i64 {
        lab.land(&[("a", n)]).await;
        version = lab
            .fold()
            .await
            .marts
            .iter()
            .find(|m| m.mart == "moved")
            .and_then(|m| m.version);
    }
    let due = crate::lake::CHECKPOINT_INTERVAL - 1;
    assert_eq!(version, Some(due));
    let log = lab
        ._dir
        .path()
        .join("lake")
        .join(crate::lake::mart::path("moved"))
        .join("_delta_log");
    let checkpoint = log.join(format!("{due:020}.checkpoint.parquet"));
    assert!(
        checkpoint.exists(),
        "no checkpoint at version {due} in {}",
        log.display()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_erasure_between_folds_stays_erased() {
    let lab = Lab::new();
    lab.land(&[("a", 1), ("b", 2)]).await;
    lab.fold().await;
    lab.land(&[("a", 3), ("b", 1)]).await;
    // Erased before a fold took those rows in: the DELETE rewrites the raw files without
    // a's rows, but the fold reads what landed since it last ran from the files by name.
    let a = vec!["a".to_string()];
    crate::lake::erased::record(&lab.lake, &a, "r-1", chrono::Utc::now().timestamp_millis())
        .await
        .unwrap();
    let mut paths = vec![crate::lake::raw::path(TOPIC)];
    paths.extend(["totals", "most", "moved"].map(crate::lake::mart::path));
    for path in &paths {
        crate::forget::tables::delete(&lab.lake, path, &a).await.unwrap();
    }
    let report = lab.fold().await;
    assert!(!mart(&report, "totals").rebuilt, "{report:?}");
    // a's rows stay out; b's rows that the DELETE copied into new files are not new.
    assert_eq!(lab.read("totals", "n").await, map(&[("b", 3)]));
    assert_eq!(lab.read("most", "most").await, map(&[("b", 2)]));
    assert!(!lab.read("moved", "times").await.contains_key("a"));
}
