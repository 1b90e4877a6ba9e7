//! The customers whose events ingest drops: erased ones (`crate::lake::erased`) who have not given a
//! new consent since. Read from the lake every few seconds by one task per process and
//! shared with the ingest threads, which look a record's key up (no lake read per record).

use crate::lake::LakeUrl;
use crate::lake::erased as registry;
use arrow::array::{Array, AsArray};
use arrow::datatypes::{DataType, TimestampMicrosecondType};
use datafusion::functions_aggregate::expr_fn::max;
use datafusion::prelude::{SessionContext, col, lit};
use std::collections::HashSet;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How often the erased registry and the consents are read again.
const REFRESH: Duration = Duration::from_secs(2);

#[derive(Clone, Default)]
pub struct Blocked(Arc<RwLock<HashSet<String>>>);

impl Blocked {
    /// Whether a record with this key (a customer id) is to be dropped.
    pub fn contains(&self, key: &[u8]) -> bool {
        let set = self.0.read().unwrap_or_else(PoisonError::into_inner);
        !set.is_empty() && std::str::from_utf8(key).is_ok_and(|k| set.contains(k))
    }

    /// Reads the set now, then keeps it current until `shutdown`. `consents` is the raw
    /// consent table's lake path: a `given` newer than the erasure lifts the block.
    pub async fn start(lake: LakeUrl, consents: Option<String>, shutdown: CancellationToken) -> Self {
        let blocked = Self::default();
        blocked.refresh(&lake, consents.as_deref()).await;
        let kept = blocked.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(REFRESH) => kept.refresh(&lake, consents.as_deref()).await,
                }
            }
        });
        blocked
    }

    async fn refresh(&self, lake: &LakeUrl, consents: Option<&str>) {
        match read(lake, consents).await {
            Ok(set) => *self.0.write().unwrap_or_else(PoisonError::into_inner) = set,
            // The set read last stays: dropping less than it should is what a failed read
            // must not cause, nor must it stop ingest.
            Err(e) => tracing::warn!(error = %e, "cannot read the erased registry; keeping the last one"),
        }
    }
}

async fn read(lake: &LakeUrl, consents: Option<&str>) -> Result<HashSet<String>, String> {
    let (mut erased, _) = registry::load(lake).await.map_err(|e| e.to_string())?;
    if erased.is_empty() {
        return Ok(HashSet::new());
    }
    if let Some(path) = consents {
        for (customer, given_ms) in newest_given(lake, path, &erased).await? {
            if erased.get(&customer).is_some_and(|&at| given_ms > at) {
                erased.remove(&customer);
            }
        }
    }
    Ok(erased.into_keys().collect())
}

/// Per erased customer, their newest `given` consent (epoch ms).
async fn newest_given(lake: &LakeUrl, path: &str, erased: &registry::Erased) -> Result<Vec<(String, i64)>, String> {
    let table = crate::lake::cache::open_latest(lake, path)
        .await
        .map_err(|e| e.to_string())?;
    if table.version().is_none() {
        return Ok(Vec::new());
    }
    let ctx = SessionContext::new();
    table
        .update_datafusion_session(&ctx.state())
        .map_err(|e| e.to_string())?;
    let provider = table.table_provider().await.map_err(|e| e.to_string())?;
    let ids = erased.keys().map(|c| lit(c.as_str())).collect();
    let batches = ctx
        .read_table(provider)
        .and_then(|df| {
            df.filter(
                col("action")
                    .eq(lit("given"))
                    .and(col("customer_id").in_list(ids, false)),
            )
        })
        .and_then(|df| df.aggregate(vec![col("customer_id")], vec![max(col("event_time")).alias("at")]))
        .map_err(|e| e.to_string())?
        .collect()
        .await
        .map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    for b in &batches {
        let ids = arrow::compute::cast(b.column(0), &DataType::Utf8).map_err(|e| e.to_string())?;
        let ids = ids.as_string::<i32>();
        let at = arrow::compute::cast(
            b.column(1),
            &DataType::Timestamp(arrow::datatypes::TimeUnit::Microsecond, None),
        )
        .map_err(|e| e.to_string())?;
        let at = at.as_primitive::<TimestampMicrosecondType>();
        for i in (0..b.num_rows()).filter(|&i| ids.is_valid(i) && at.is_valid(i)) {
            out.push((ids.value(i).to_string(), at.value(i) / 1000));
        }
    }
    Ok(out)
}
