//! One fold: every mart in `mart_sql/` (in file order where one reads another, side by
//! side where not: `super::waves`) takes in the raw rows that landed since it last
//! folded and MERGEs what they change into its Delta table, together with the input
//! versions it has now folded in (`txn` actions, in the same commit).
//!
//! A mart comes in one of two kinds. One with a changed-keys query recomputes the keys
//! the new rows touch from the whole history: the result does not depend on how the
//! history was cut into runs, and a fold redone after a crash repeats the same work. One
//! with `-- combine:` lines computes rows from the new rows alone and MERGEs each into the
//! stored row of its key with those expressions (`least`, a sum): each raw row must then
//! count exactly once, which holds because the rows and the versions that say they are
//! folded commit together, and because compaction's rewritten files are not new rows
//! (`PinnedRaw::added_since`). Either kind starts over from every row when what it folded
//! last is gone from the lake (`super::inputs`). Each mart tracks its own versions, so a crash
//! between two marts' commits leaves the later one simply further behind.

use super::error::sql_error;
use super::files::{Kind, MartFile, for_datafusion};
use super::inputs::{Position, Sources, replace_table};
use super::merge::{Merge, conform, folded_versions, plain};
use super::tables::{MartTable, PinnedRaw};
use crate::catalog::Catalog;
use crate::lake::LakeUrl;
use arrow::array::{Array, RecordBatch};
use arrow::datatypes::SchemaRef;
use datafusion::catalog::{MemorySchemaProvider, SchemaProvider};
use datafusion::datasource::MemTable;
use datafusion::prelude::SessionContext;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;
use tracing::Instrument;

pub use super::error::FoldError;

/// What one mart did in one fold.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct MartReport {
    pub mart: String,
    /// Keys recomputed.
    pub changed: u64,
    /// Rows merged in for them.
    pub rows: u64,
    /// The mart table's version after the fold (None: nothing to fold yet).
    pub version: Option<u64>,
    /// Input (a raw table's SQL name, or `mart.<name>`) -> version folded in.
    pub folded: BTreeMap<String, u64>,
    pub elapsed_ms: u64,
    /// Of which: finding what landed since the last fold (`new_raw`, `prev_mart`),
    /// planning the views, the changed-keys query, computing the rows, and writing them
    /// (MERGE and commit).
    pub inputs_ms: u64,
    pub views_ms: u64,
    pub changed_ms: u64,
    pub query_ms: u64,
    pub write_ms: u64,
    /// Started over from every row: what landed since the last fold was no longer in the
    /// lake (vacuumed), or an input mart's earlier version was gone.
    pub rebuilt: bool,
}

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct FoldReport {
    pub marts: Vec<MartReport>,
    /// Customers whose portrait changed (published to `mart.changes`).
    #[serde(skip)]
    pub changed_customers: Vec<String>,
    pub portrait_version: Option<u64>,
}

/// The mart whose changed keys are announced on `mart.changes`.
pub const PORTRAIT: &str = "customer_portrait";

/// Raw tables pinned for one fold.
pub async fn open_raw(lake: &LakeUrl, catalog: &Catalog) -> Result<Vec<PinnedRaw>, FoldError> {
    let mut opening = Vec::new();
    for topic in catalog.raw_topics() {
        let event = topic.value_schema.as_deref().unwrap_or_default();
        let fields = match catalog.schemas.current(event) {
            Some(v) => crate::lake::columns::record_fields(&v.schema).map_err(|e| FoldError::Schema {
                topic: topic.name.clone(),
                reason: e.to_string(),
            })?,
            None => Default::default(),
        };
        let empty = crate::lake::raw::empty_table_schema(&fields);
        let consents = topic.value_schema.as_deref() == Some(crate::catalog::CONSENT_EVENT);
        opening.push(async move {
            let mut pinned = PinnedRaw::open(lake, &topic.name, empty).await?;
            pinned.purpose = topic.consent_purpose.clone();
            pinned.consents = consents;
            Ok::<_, super::tables::LakeReadError>(pinned)
        });
    }
    // Each open is a few small reads of its log: all at once, not one after another.
    Ok(futures::future::try_join_all(opening).await?)
}

fn schema(ctx: &SessionContext, name: &str) -> Arc<MemorySchemaProvider> {
    let provider = Arc::new(MemorySchemaProvider::new());
    if let Some(catalog) = ctx.catalog("datafusion") {
        let _ = catalog.register_schema(name, provider.clone());
    }
    provider
}

/// Runs every file once; a mart after the marts it reads.
pub async fn fold(lake: &LakeUrl, catalog: &Catalog, files: &[MartFile]) -> Result<FoldReport, FoldError> {
    fold_announcing(lake, catalog, files, None).await
}

/// A portrait commit and the customers whose portrait it changed.
#[derive(Debug, Clone, PartialEq)]
pub struct PortraitChanged {
    /// The portrait's Delta version after the commit.
    pub version: Option<u64>,
    pub customers: Vec<String>,
}

/// As `fold`, and sends the changed customers on `portrait_changed` as soon as the portrait
/// is committed: the marts after it describe products, not customers, so the recommender
/// need not wait for them.
pub async fn fold_announcing(
    lake: &LakeUrl,
    catalog: &Catalog,
    files: &[MartFile],
    portrait_changed: Option<tokio::sync::mpsc::UnboundedSender<PortraitChanged>>,
) -> Result<FoldReport, FoldError> {
    let opening = Instant::now();
    let raw = open_raw(lake, catalog).await?;
    fold_pinned(lake, raw, files, portrait_changed, opening).await
}

/// The fold over raw tables already pinned; `opening` is when opening the lake began.
/// Each mart starts as soon as the marts it waits for (`waves::waits_for`) are folded, in
/// a session of its own over the same raw tables and marts: a fresh list waits for the
/// longest chain up to the portrait, not for every mart before it.
async fn fold_pinned(
    lake: &LakeUrl,
    raw: Vec<PinnedRaw>,
    files: &[MartFile],
    portrait_changed: Option<tokio::sync::mpsc::UnboundedSender<PortraitChanged>>,
    opening: Instant,
) -> Result<FoldReport, FoldError> {
    let base = super::session::session();
    let raw_schema = Arc::new(MemorySchemaProvider::new());
    let marts = Arc::new(MemorySchemaProvider::new());
    let mut consents = None;
    for t in raw.iter().filter(|t| t.consents) {
        consents = Some(t.full(&base).await?);
    }
    // Read once per fold: every gated table of every mart joins the same standing consents.
    let (erased, _) = crate::lake::erased::load(lake)
        .await
        .map_err(|source| super::tables::LakeReadError::Delta {
            table: crate::lake::erased::PATH.into(),
            source: Box::new(source),
        })?;
    let erased = super::consent::erased_table(&erased).map_err(|source| sql_error("erased", source))?;
    let purposes: Vec<String> = raw.iter().filter_map(|t| t.purpose.clone()).collect();
    let standing = super::consent::standing(&base, consents.as_ref(), &purposes)
        .await
        .map_err(|source| sql_error("consent", source))?;
    for t in &raw {
        let governed = t.purpose.as_ref().and_then(|p| standing.get(p));
        let provider = super::consent::gate(&base, t.full(&base).await?, governed)
            .map_err(|source| sql_error(&t.sql_name, source))?;
        raw_schema
            .register_table(t.sql_name.clone(), provider)
            .map_err(|source| sql_error("raw", source))?;
    }
    // Earlier marts are readable by later files even when they fold nothing this time.
    let opened = futures::future::try_join_all(
        files
            .iter()
            .filter(|f| f.is_mart())
            .map(|f| MartTable::open(lake, &f.name)),
    )
    .await?;
    let mut tables = std::collections::HashMap::new();
    for mart in opened {
        if let Some(p) = mart.provider(&base).await? {
            marts
                .register_table(mart.name.clone(), p)
                .map_err(|s| sql_error(&mart.name, s))?;
        }
        tables.insert(mart.name.clone(), mart);
    }
    tracing::info!(ms = opening.elapsed().as_millis() as u64, "lake tables opened");
    let reads = super::waves::reads(files).into_iter().map(|r| r.new_raw).collect();
    let job = Arc::new(Job {
        lake: lake.clone(),
        raw,
        reads,
        files: files.to_vec(),
        base,
        raw_schema,
        standing,
        erased,
        marts,
        tables: std::sync::Mutex::new(tables),
    });
    let mut waits = super::waves::waits_for(files);
    // The marts after the portrait describe products: they wait for it rather than take
    // the cores from the chain a fresh list waits for.
    if let Some(p) = files.iter().position(|f| f.name == PORTRAIT) {
        for w in waits.iter_mut().skip(p + 1) {
            w.push(p);
        }
    }
    // Views are planned inside each mart's session: nothing to run for them.
    let mut finished: Vec<bool> = files.iter().map(|f| !f.is_mart()).collect();
    let mut started = finished.clone();
    let mut reports: Vec<Option<MartReport>> = vec![None; files.len()];
    let mut report = FoldReport::default();
    let mut failure = None;
    let mut running = tokio::task::JoinSet::new();
    let mut names = std::collections::HashMap::new();
    // Marts whose commit in this fold is due a checkpoint, as they hold it.
    let mut due = Vec::new();
    loop {
        // After a failure the marts already running finish; no new one starts.
        if failure.is_none() {
            for i in 0..files.len() {
                if !started[i] && waits[i].iter().all(|&w| finished[w]) {
                    started[i] = true;
                    let job = job.clone();
                    let task =
                        running.spawn(async move { (i, job.fold(i).await) }.instrument(tracing::Span::current()));
                    names.insert(task.id(), files[i].name.clone());
                }
            }
        }
        let Some(joined) = running.join_next().await else {
            break;
        };
        let (i, mut folded) = match joined {
            Ok((i, Ok(folded))) => (i, folded),
            Ok((_, Err(e))) => {
                failure.get_or_insert(e);
                continue;
            }
            Err(e) => {
                failure.get_or_insert(FoldError::Stopped {
                    mart: names.get(&e.id()).cloned().unwrap_or_default(),
                    reason: e.to_string(),
                });
                continue;
            }
        };
        finished[i] = true;
        if let Some(table) = folded.checkpoint_due.take() {
            due.push((folded.report.mart.clone(), table));
        }
        if files[i].name == PORTRAIT {
            if let Some(tx) = &portrait_changed {
                // The receiver only goes away when its own fold is abandoned.
                let _ = tx.send(PortraitChanged {
                    version: folded.report.version,
                    customers: folded.customers.clone(),
                });
            }
            report.changed_customers = folded.customers;
            report.portrait_version = folded.report.version;
        }
        reports[i] = Some(folded.report);
    }
    // After every commit, the portrait's announced: also when a mart failed, for those
    // that did commit.
    checkpoint(&due).await;
    if let Some(e) = failure {
        return Err(e);
    }
    report.marts = reports.into_iter().flatten().collect();
    Ok(report)
}

/// Writes the checkpoints the marts' commits are due: they commit with delta-rs's own
/// hook off (`merge::folded_versions`) so that it is not in the chain a fresh list waits
/// for. A failed one is only logged: the next one due, or the maintenance pass, writes it.
async fn checkpoint(due: &[(String, deltalake::DeltaTable)]) {
    for (mart, table) in due {
        let version = table.version();
        match crate::lake::maintenance::checkpoint_table(table).await {
            Ok(()) => tracing::debug!(mart, ?version, "mart checkpointed"),
            Err(e) => tracing::warn!(mart, ?version, error = %e, "mart checkpoint failed"),
        }
    }
}

/// What every mart of one fold reads: the raw tables pinned once, and the marts as the
/// fold has left them so far (`marts`, re-pointed as each mart commits).
struct Job {
    lake: LakeUrl,
    raw: Vec<PinnedRaw>,
    /// Per file, the raw tables whose new rows it reads (`waves::Reads::new_raw`).
    reads: Vec<std::collections::BTreeSet<String>>,
    files: Vec<MartFile>,
    /// The session the others are made from: they share its object stores.
    base: SessionContext,
    raw_schema: Arc<MemorySchemaProvider>,
    /// Each purpose's standing consents, for the gates of the `new_raw` tables.
    standing: std::collections::HashMap<String, Arc<dyn datafusion::catalog::TableProvider>>,
    /// Erased customers, for the `new_raw` tables (`consent::unerased`).
    erased: Option<Arc<dyn datafusion::catalog::TableProvider>>,
    marts: Arc<MemorySchemaProvider>,
    /// Each mart as opened at the start; its own fold takes it (this process is the marts'
    /// only writer, so nothing moved it since).
    tables: std::sync::Mutex<std::collections::HashMap<String, MartTable>>,
}

impl Job {
    /// Folds file `i` in a session of its own: `new_raw`, `prev_mart`, the views and the
    /// `changed` table are the mart's own, `raw` and `mart` are shared.
    async fn fold(&self, i: usize) -> Result<Folded, FoldError> {
        let ctx = SessionContext::new_with_config_rt(self.base.copied_config(), self.base.runtime_env());
        super::functions::register(&ctx);
        if let Some(catalog) = ctx.catalog("datafusion") {
            let _ = catalog.register_schema("raw", self.raw_schema.clone());
            let _ = catalog.register_schema("mart", self.marts.clone());
        }
        let new_raw = schema(&ctx, "new_raw");
        let prev = schema(&ctx, "prev_mart");
        let sources = Sources {
            lake: &self.lake,
            raw: &self.raw,
            new_raw: &new_raw,
            prev: &prev,
            standing: &self.standing,
            erased: self.erased.as_ref(),
        };
        let views: Vec<&MartFile> = self.files[..i]
            .iter()
            .filter(|f| matches!(f.kind, Kind::View { .. }))
            .collect();
        let file = &self.files[i];
        let opened = self
            .tables
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(&file.name);
        let mart = match opened {
            Some(mart) => mart,
            None => MartTable::open(&self.lake, &file.name).await?,
        };
        fold_mart(&ctx, &sources, &views, &self.reads[i], &self.marts, file, mart).await
    }
}

/// What folding one mart did, and for the portrait the customers whose rows it changed.
#[derive(Default)]
struct Folded {
    report: MartReport,
    customers: Vec<String>,
    /// The mart as of its commit in this fold, when that commit is due a checkpoint.
    checkpoint_due: Option<deltalake::DeltaTable>,
}

/// Folds one mart and points `mart.<name>` at what it wrote, for the files after it.
async fn fold_mart(
    ctx: &SessionContext,
    sources: &Sources<'_>,
    views: &[&MartFile],
    reads: &std::collections::BTreeSet<String>,
    marts: &MemorySchemaProvider,
    file: &MartFile,
    mut mart: MartTable,
) -> Result<Folded, FoldError> {
    let span = tracing::info_span!("mart", mart = %file.name);
    let (mart, done) = async {
        let done = fold_one(ctx, sources, views, reads, &mut mart, file).await?;
        Ok::<_, FoldError>((mart, done))
    }
    .instrument(span)
    .await?;
    if let Some(p) = mart.provider(ctx).await? {
        replace_table(marts, &file.name, p).map_err(|s| sql_error(&file.path.display().to_string(), s))?;
    }
    Ok(done)
}

async fn fold_one(
    ctx: &SessionContext,
    sources: &Sources<'_>,
    views: &[&MartFile],
    reads: &std::collections::BTreeSet<String>,
    mart: &mut MartTable,
    file: &MartFile,
) -> Result<Folded, FoldError> {
    let started = Instant::now();
    let Kind::Mart {
        key,
        replace,
        changed,
        rows,
        combine,
        inputs,
    } = &file.kind
    else {
        return Ok(Folded::default());
    };
    let file_name = file.path.display().to_string();
    let Position {
        folded,
        behind,
        rebuild,
    } = super::inputs::position(ctx, sources, mart, inputs, reads, &file_name).await?;
    let mut report = MartReport {
        mart: file.name.clone(),
        version: mart.version(),
        folded,
        rebuilt: rebuild,
        ..Default::default()
    };
    if !behind {
        return Ok(Folded {
            report,
            customers: vec![],
            checkpoint_due: None,
        });
    }
    report.inputs_ms = started.elapsed().as_millis() as u64;
    let views_started = Instant::now();
    let unplanned = plan_views(ctx, views).await?;
    report.views_ms = views_started.elapsed().as_millis() as u64;
    let changed_started = Instant::now();
    let err = |source: datafusion::error::DataFusionError| match unplanned.is_empty() {
        true => sql_error(&file_name, source),
        false => sql_error(
            &file_name,
            source.context(format!("views that could not be planned: {}", unplanned.join("; "))),
        ),
    };
    let keys = match changed {
        Some(changed) => {
            let keys = changed_keys(ctx, changed).await.map_err(err)?;
            report.changed = row_count(&keys);
            keys
        }
        None => Vec::new(),
    };
    report.changed_ms = changed_started.elapsed().as_millis() as u64;
    let query_started = Instant::now();
    let (out_schema, batches) = new_rows(ctx, rows).await.map_err(err)?;
    report.rows = row_count(&batches);
    // A combining mart's keys are the ones its rows carry.
    let keys = if changed.is_some() {
        keys
    } else {
        report.changed = report.rows;
        batches.clone()
    };
    let scope = match replace {
        Some(column) => Some((column.clone(), column_values(&keys, column, &file.name)?)),
        None => None,
    };
    let customers = if file.name == PORTRAIT {
        column_values(&keys, "customer_id", &file.name)?
    } else {
        vec![]
    };
    let props = folded_versions(&file.name, &report.folded);
    let merge = Merge {
        key,
        combine,
        scope,
        rebuild,
    };
    report.query_ms = query_started.elapsed().as_millis() as u64;
    let write_started = Instant::now();
    super::merge::write(mart, out_schema, batches, merge, props).await?;
    report.write_ms = write_started.elapsed().as_millis() as u64;
    report.version = mart.version();
    mart.remember_folded(&report.folded);
    report.elapsed_ms = started.elapsed().as_millis() as u64;
    tracing::info!(
        changed = report.changed,
        rows = report.rows,
        version = ?report.version,
        ms = report.elapsed_ms,
        inputs_ms = report.inputs_ms,
        views_ms = report.views_ms,
        changed_ms = report.changed_ms,
        query_ms = report.query_ms,
        write_ms = report.write_ms,
        "mart folded"
    );
    let checkpoint_due = report
        .version
        .filter(|&v| crate::lake::maintenance::checkpoint_due(v))
        .map(|_| mart.table.clone());
    Ok(Folded {
        report,
        customers,
        checkpoint_due,
    })
}

fn row_count(batches: &[RecordBatch]) -> u64 {
    batches.iter().map(|b| b.num_rows() as u64).sum()
}

/// Runs the changed-keys query and registers its result as the table `changed` for the
/// rows query.
async fn changed_keys(ctx: &SessionContext, query: &str) -> datafusion::error::Result<Vec<RecordBatch>> {
    let keys = ctx.sql(&for_datafusion(query)).await?.distinct()?;
    let planned: SchemaRef = Arc::new(keys.schema().as_arrow().clone());
    let keys = keys.collect().await?;
    // Batches may differ from the plan in nullability; they decide when there are any.
    let keys_schema = keys.first().map_or(planned, |b| b.schema());
    let changed_table = MemTable::try_new(keys_schema, vec![keys.clone()])?;
    ctx.deregister_table("changed")?;
    ctx.register_table("changed", Arc::new(changed_table))?;
    Ok(keys)
}

/// Runs the rows query; its rows in the schema the mart is written with.
async fn new_rows(ctx: &SessionContext, query: &str) -> datafusion::error::Result<(SchemaRef, Vec<RecordBatch>)> {
    let rows = ctx.sql(&for_datafusion(query)).await?;
    let schema = plain(rows.schema().as_arrow());
    let batches = rows
        .collect()
        .await?
        .into_iter()
        .filter(|b| b.num_rows() > 0)
        .map(|b| conform(&b, &schema))
        .collect::<Result<_, _>>()?;
    Ok((schema, batches))
}

/// (Re)plans the views in order. DataFusion binds a view to the tables it reads when it is
/// planned, so views are planned again once `new_raw` and the marts point where this mart
/// needs them. A view over a mart that does not exist yet cannot be planned; that is only
/// an error for a query that uses it, so the reasons are returned for such a failure.
async fn plan_views(ctx: &SessionContext, views: &[&MartFile]) -> Result<Vec<String>, FoldError> {
    let mut unplanned = Vec::new();
    for view in views {
        let Kind::View { query } = &view.kind else { continue };
        let err = |s| sql_error(&view.path.display().to_string(), s);
        ctx.deregister_table(view.name.as_str()).map_err(err)?;
        match ctx.sql(&for_datafusion(query)).await {
            Ok(df) => {
                ctx.register_table(view.name.as_str(), df.into_view()).map_err(err)?;
            }
            Err(e) => unplanned.push(format!("view {} ({}): {e}", view.name, view.path.display())),
        }
    }
    Ok(unplanned)
}

fn column_values(batches: &[RecordBatch], column: &str, mart: &str) -> Result<Vec<String>, FoldError> {
    let mut out = Vec::new();
    for b in batches {
        let Some(c) = b.column_by_name(column) else {
            return Err(FoldError::MissingColumn {
                mart: mart.to_string(),
                column: column.to_string(),
            });
        };
        let c = arrow::compute::cast(c, &arrow::datatypes::DataType::Utf8).map_err(|e| sql_error(mart, e.into()))?;
        let strings = arrow::array::AsArray::as_string::<i32>(&c);
        out.extend(
            (0..strings.len())
                .filter(|&i| strings.is_valid(i))
                .map(|i| strings.value(i).to_string()),
        );
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
