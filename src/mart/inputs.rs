//! What one mart reads in a fold, and how far behind its inputs it is.
//!
//! A mart records, per input, the version it has folded in (`MartTable::folded`): per raw
//! table its Delta version, per earlier mart it reads as `prev_mart.<name>` that mart's
//! version. A fold gives it the raw rows added after those versions as `new_raw.<name>`
//! and each earlier mart as it saw it then. When any of that is no longer in the lake
//! (log cleanup, vacuum), the mart starts over: every raw row, and empty earlier marts.

use super::error::{FoldError, sql_error};
use super::tables::{Added, MartTable, PinnedRaw};
use crate::lake::LakeUrl;
use datafusion::catalog::{MemorySchemaProvider, SchemaProvider, TableProvider};
use datafusion::prelude::SessionContext;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

/// What a mart's SQL reads besides the marts themselves.
pub(super) struct Sources<'a> {
    pub lake: &'a LakeUrl,
    pub raw: &'a [PinnedRaw],
    pub new_raw: &'a MemorySchemaProvider,
    pub prev: &'a MemorySchemaProvider,
    /// Each purpose's standing consents (`mart::consent::standing`).
    pub standing: &'a std::collections::HashMap<String, Arc<dyn TableProvider>>,
    /// Erased customers (`mart::consent::erased_table`), None when there are none.
    pub erased: Option<&'a Arc<dyn TableProvider>>,
}

/// Where a mart stands against its inputs.
#[derive(Debug, Default, PartialEq)]
pub(super) struct Position {
    /// Input (a raw table's SQL name, or `mart.<name>`) -> the version this fold takes the
    /// mart to; committed with its rows.
    pub folded: BTreeMap<String, u64>,
    /// An input moved since the mart last folded, or the mart has never been written.
    pub behind: bool,
    /// What the mart folded in last is no longer in the lake: it starts over.
    pub rebuild: bool,
}

/// Registers what the mart reads (`new_raw.*`, `prev_mart.*`) and says where it stands.
/// Only the raw tables in `reads` (`waves::Reads::new_raw`) are looked into; the others
/// read as empty and moving them leaves the mart where it is.
pub(super) async fn position(
    ctx: &SessionContext,
    sources: &Sources<'_>,
    mart: &MartTable,
    inputs: &[String],
    reads: &BTreeSet<String>,
    file_name: &str,
) -> Result<Position, FoldError> {
    let added = raw_added(ctx, sources.raw, mart, reads).await?;
    let mut position = Position {
        behind: mart.version().is_none(),
        rebuild: added.is_none(),
        ..Default::default()
    };
    register_prev_marts(ctx, sources, mart, inputs, &mut position, file_name).await?;
    register_new_raw(ctx, sources, mart, added, reads, &mut position, file_name).await?;
    Ok(position)
}

/// What landed in each raw table the mart reads since it folded it, in `raw` order (None
/// for a table it does not read); `None` when a commit or file that says so is no longer
/// in the lake, so the mart must start over.
async fn raw_added(
    ctx: &SessionContext,
    raw: &[PinnedRaw],
    mart: &MartTable,
    reads: &BTreeSet<String>,
) -> Result<Option<Vec<Option<Arc<dyn TableProvider>>>>, FoldError> {
    let mut added = Vec::with_capacity(raw.len());
    for t in raw {
        if !reads.contains(&t.sql_name) {
            added.push(None);
            continue;
        }
        // A topic that landed nothing has no rows to look for (nor a version to read).
        let since = match t.version() {
            Some(_) => mart.folded(&t.sql_name).await?,
            None => None,
        };
        match t.added_since(ctx, since).await? {
            Added::Rows(rows) => added.push(Some(rows)),
            Added::Gone(why) => {
                tracing::warn!(mart = %mart.name, why, "raw rows since the last fold are gone; rebuilding the mart");
                return Ok(None);
            }
        }
    }
    Ok(Some(added))
}

/// Registers each earlier mart this one reads as `prev_mart.<name>` as this mart last saw
/// it. A version no longer in the log (vacuumed) means starting over, with all of them
/// empty.
async fn register_prev_marts(
    ctx: &SessionContext,
    sources: &Sources<'_>,
    mart: &MartTable,
    inputs: &[String],
    position: &mut Position,
    file_name: &str,
) -> Result<(), FoldError> {
    let err = |s| sql_error(file_name, s);
    for input in inputs {
        let seen_as = format!("mart.{input}");
        let seen = mart.folded(&seen_as).await?;
        let now = MartTable::open(sources.lake, input).await?;
        let current = now.version();
        position.behind |= seen != current;
        let provider = match seen {
            Some(v) if !position.rebuild => match now.provider_at(ctx, v).await {
                Ok(p) => Some(p),
                Err(e) => {
                    tracing::warn!(input, version = v, error = %e, "earlier version gone; rebuilding the mart");
                    position.rebuild = true;
                    None
                }
            },
            _ => None,
        };
        let provider = match provider {
            Some(p) => p,
            None => now.empty_provider(ctx).await?,
        };
        replace_table(sources.prev, input, provider).map_err(err)?;
        if let Some(v) = current {
            position.folded.insert(seen_as, v);
        }
    }
    // Inputs registered before a later one turned out gone still show their old version.
    if position.rebuild {
        for input in inputs {
            let now = MartTable::open(sources.lake, input).await?;
            replace_table(sources.prev, input, now.empty_provider(ctx).await?).map_err(err)?;
        }
    }
    Ok(())
}

/// Registers each raw table as `new_raw.<name>`: the rows `added` since the mart folded
/// it, or every row when it starts over; empty for a table the mart does not read.
async fn register_new_raw(
    ctx: &SessionContext,
    sources: &Sources<'_>,
    mart: &MartTable,
    added: Option<Vec<Option<Arc<dyn TableProvider>>>>,
    reads: &BTreeSet<String>,
    position: &mut Position,
    file_name: &str,
) -> Result<(), FoldError> {
    let mut added = added.into_iter().flatten();
    for t in sources.raw {
        let current = t.version();
        let added = added.next().flatten();
        if !reads.contains(&t.sql_name) {
            replace_table(sources.new_raw, &t.sql_name, t.empty_provider()?).map_err(|s| sql_error(file_name, s))?;
            if let Some(v) = current {
                position.folded.insert(t.sql_name.clone(), v);
            }
            continue;
        }
        if current.is_some() {
            let since = match position.rebuild {
                true => None,
                false => mart.folded(&t.sql_name).await?,
            };
            position.behind |= since != current;
        }
        let rows = match (position.rebuild, added) {
            (false, Some(rows)) => rows,
            _ => t.full(ctx).await?,
        };
        let governed = t.purpose.as_ref().and_then(|p| sources.standing.get(p));
        let rows = super::consent::gate(ctx, rows, governed)
            .and_then(|rows| super::consent::unerased(ctx, rows, sources.erased))
            .map_err(|s| sql_error(file_name, s))?;
        replace_table(sources.new_raw, &t.sql_name, rows).map_err(|s| sql_error(file_name, s))?;
        if let Some(v) = current {
            position.folded.insert(t.sql_name.clone(), v);
        }
    }
    Ok(())
}

pub(super) fn replace_table(
    schema: &MemorySchemaProvider,
    name: &str,
    provider: Arc<dyn TableProvider>,
) -> datafusion::error::Result<()> {
    schema.deregister_table(name)?;
    schema.register_table(name.to_string(), provider)?;
    Ok(())
}
