//! Consent governs use, not only collection: a raw table whose topic names a
//! `consent_purpose` reaches the mart SQL (`raw.<name>` and `new_raw.<name>`) holding only
//! the rows of customers whose newest consent event for that purpose is `given`, and of
//! those only the rows collected since that consent was given: since the first `given`
//! after their newest withdrawal (a `given` repeated to link another account does not
//! start it again). Events are ordered by time, then id. A withdrawal therefore takes the
//! customer's rows out of every mart at their next fold (the consent event itself makes
//! them a changed customer), and consenting again brings back only data collected after
//! it. The gate sits here, under the SQL, so no mart can forget it.

use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use datafusion::catalog::TableProvider;
use datafusion::common::JoinType;
use datafusion::datasource::MemTable;
use datafusion::error::Result;
use datafusion::functions_aggregate::expr_fn::min;
use datafusion::functions_aggregate::sum::sum_udaf;
use datafusion::logical_expr::expr::WindowFunction;
use datafusion::logical_expr::{Expr, ExprFunctionExt, when};
use datafusion::prelude::{DataFrame, SessionContext, col, lit};
use std::collections::HashMap;
use std::sync::Arc;

/// Each purpose's standing consents as (`consent_customer_id`, `consent_since`), read
/// once per fold from `consents` (every consent event; none: nobody has consented).
pub async fn standing(
    ctx: &SessionContext,
    consents: Option<&Arc<dyn TableProvider>>,
    purposes: &[String],
) -> Result<HashMap<String, Arc<dyn TableProvider>>> {
    let schema = Arc::new(Schema::new(vec![
        Field::new("consent_customer_id", DataType::Utf8, true),
        Field::new(
            "consent_since",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            true,
        ),
    ]));
    let mut out = HashMap::new();
    for purpose in purposes {
        let purpose = purpose.as_str();
        if out.contains_key(purpose) {
            continue;
        }
        let (schema, batches) = match consents {
            Some(consents) => {
                let df = standing_for(ctx, consents, purpose)?;
                (Arc::new(df.schema().as_arrow().clone()), df.collect().await?)
            }
            None => (schema.clone(), Vec::new()),
        };
        let table: Arc<dyn TableProvider> = Arc::new(MemTable::try_new(schema, vec![batches])?);
        out.insert(purpose.to_string(), table);
    }
    Ok(out)
}

fn standing_for(ctx: &SessionContext, consents: &Arc<dyn TableProvider>, purpose: &str) -> Result<DataFrame> {
    // Withdrawals up to each event, and in all: the events of the standing consent are the
    // `given` ones after the last withdrawal, so they have seen every withdrawal there is.
    let withdrawal = when(col("action").eq(lit("withdrawn")), lit(1i64)).otherwise(lit(0i64))?;
    let withdrawals = |e: Expr| Expr::from(WindowFunction::new(sum_udaf(), vec![e]));
    let so_far = withdrawals(withdrawal.clone())
        .partition_by(vec![col("customer_id")])
        .order_by(vec![
            col("event_time").sort(true, false),
            col("event_id").sort(true, false),
        ])
        .build()?
        .alias("withdrawn_so_far");
    let in_all = withdrawals(withdrawal)
        .partition_by(vec![col("customer_id")])
        .build()?
        .alias("withdrawn_in_all");
    ctx.read_table(consents.clone())?
        .filter(col("purpose").eq(lit(purpose)))?
        .window(vec![so_far])?
        .window(vec![in_all])?
        .filter(
            col("action")
                .eq(lit("given"))
                .and(col("withdrawn_so_far").eq(col("withdrawn_in_all"))),
        )?
        .aggregate(
            vec![col("customer_id")],
            vec![min(col("event_time")).alias("consent_since")],
        )?
        .select(vec![
            col("customer_id").alias("consent_customer_id"),
            col("consent_since"),
        ])
}

/// `rows` as the marts may use them: those of customers in `standing` (the purpose's
/// standing consents, from `standing`) collected since their consent; `rows` itself when
/// no purpose governs them.
pub fn gate(
    ctx: &SessionContext,
    rows: Arc<dyn TableProvider>,
    standing: Option<&Arc<dyn TableProvider>>,
) -> Result<Arc<dyn TableProvider>> {
    let Some(standing) = standing else {
        return Ok(rows);
    };
    let gated = ctx.read_table(rows)?.join_on(
        ctx.read_table(standing.clone())?,
        JoinType::LeftSemi,
        [
            col("customer_id").eq(col("consent_customer_id")),
            col("event_time").gt_eq(col("consent_since")),
        ],
    )?;
    Ok(gated.into_view())
}

/// The erased registry (`crate::lake::erased`) as a table the gate below joins
/// (`erased_customer_id`, `erased_at`); None when nobody is erased.
pub fn erased_table(erased: &crate::lake::erased::Erased) -> Result<Option<Arc<dyn TableProvider>>> {
    if erased.is_empty() {
        return Ok(None);
    }
    let schema = Arc::new(Schema::new(vec![
        Field::new("erased_customer_id", DataType::Utf8, false),
        Field::new(
            "erased_at",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            false,
        ),
    ]));
    let batch = arrow::array::RecordBatch::try_new(
        schema.clone(),
        vec![
            Arc::new(arrow::array::StringArray::from_iter_values(erased.keys())),
            Arc::new(
                arrow::array::TimestampMicrosecondArray::from_iter_values(erased.values().map(|ms| ms * 1000))
                    .with_timezone("UTC"),
            ),
        ],
    )?;
    Ok(Some(Arc::new(MemTable::try_new(schema, vec![vec![batch]])?)))
}

/// Leaves out rows of customers erased after the row's time. A fold reads the rows that
/// landed since it last ran from their files by name, and the files an erasure's DELETE
/// replaced stay on storage until the vacuum: without this, a fold that was behind would
/// bring the erased rows back. Rows from after the erasure (a new consent lifted the
/// block at ingest) pass.
pub fn unerased(
    ctx: &SessionContext,
    rows: Arc<dyn TableProvider>,
    erased: Option<&Arc<dyn TableProvider>>,
) -> Result<Arc<dyn TableProvider>> {
    let schema = rows.schema();
    let Some(erased) = erased
        .filter(|_| schema.field_with_name("customer_id").is_ok() && schema.field_with_name("event_time").is_ok())
    else {
        return Ok(rows);
    };
    let kept = ctx.read_table(rows)?.join_on(
        ctx.read_table(erased.clone())?,
        JoinType::LeftAnti,
        [
            col("customer_id").eq(col("erased_customer_id")),
            col("event_time").lt_eq(col("erased_at")),
        ],
    )?;
    Ok(kept.into_view())
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{RecordBatch, StringArray, TimestampMicrosecondArray};

    fn table(columns: &[&str], rows: &[(&[&str], i64)]) -> Arc<dyn TableProvider> {
        // As the lake stores event times: microseconds, UTC.
        let ts = DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
        let mut fields: Vec<Field> = columns.iter().map(|c| Field::new(*c, DataType::Utf8, false)).collect();
        fields.push(Field::new("event_time", ts, false));
        let schema = Arc::new(Schema::new(fields));
        let mut arrays: Vec<arrow::array::ArrayRef> = (0..columns.len())
            .map(|i| Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.0[i]))) as _)
            .collect();
        arrays.push(Arc::new(
            TimestampMicrosecondArray::from_iter_values(rows.iter().map(|r| r.1)).with_timezone("UTC"),
        ));
        let batch = RecordBatch::try_new(schema.clone(), arrays).expect("batch");
        Arc::new(MemTable::try_new(schema, vec![vec![batch]]).expect("table"))
    }

    async fn ids(ctx: &SessionContext, provider: Arc<dyn TableProvider>) -> Vec<String> {
        let batches = ctx.read_table(provider).unwrap().collect().await.unwrap();
        let mut out: Vec<String> = batches
            .iter()
            .flat_map(|b| {
                let a = b
                    .column_by_name("event_id")
                    .unwrap()
                    .as_any()
                    .downcast_ref::<StringArray>()
                    .unwrap();
                a.iter().map(|v| v.unwrap_or_default().to_string()).collect::<Vec<_>>()
            })
            .collect();
        out.sort();
        out
    }

    #[tokio::test]
    async fn only_rows_collected_under_a_standing_consent_pass() {
        let ctx = SessionContext::new();
        let consents = table(
            &["event_id", "customer_id", "purpose", "action"],
            &[
                // a: given, then withdrawn: nothing of theirs is used.
                (&["k1", "a", "social_profile", "given"], 100),
                (&["k2", "a", "social_profile", "withdrawn"], 200),
                // b: withdrawn, given again at 300: only what came after.
                (&["k3", "b", "social_profile", "given"], 100),
                (&["k4", "b", "social_profile", "withdrawn"], 200),
                (&["k5", "b", "social_profile", "given"], 300),
                // c: given for another purpose only.
                (&["k6", "c", "real_estate_profile", "given"], 100),
                // d: given, then given again to link another account: still since 100.
                (&["k7", "d", "social_profile", "given"], 100),
                (&["k8", "d", "social_profile", "given"], 300),
                // e: withdrawn and given in the same millisecond: the id orders them.
                (&["k9", "e", "social_profile", "given"], 100),
                (&["ka", "e", "social_profile", "withdrawn"], 200),
                (&["kb", "e", "social_profile", "given"], 200),
            ],
        );
        let profiles = table(
            &["event_id", "customer_id"],
            &[
                (&["p-a", "a"], 150),
                (&["p-b-old", "b"], 150),
                (&["p-b-new", "b"], 350),
                (&["p-c", "c"], 150),
                (&["p-d", "d"], 150),
                (&["p-e-old", "e"], 150),
                (&["p-e-new", "e"], 200),
            ],
        );
        let standing = standing(
            &ctx,
            Some(&consents),
            &["social_profile".into(), "social_profile".into()],
        )
        .await
        .unwrap();
        let gated = gate(&ctx, profiles.clone(), standing.get("social_profile")).unwrap();
        assert_eq!(ids(&ctx, gated).await, ["p-b-new", "p-d", "p-e-new"]);
        // No purpose: untouched; no consent table: nothing.
        assert_eq!(ids(&ctx, gate(&ctx, profiles.clone(), None).unwrap()).await.len(), 7);
        let nobody = super::standing(&ctx, None, &["social_profile".into()]).await.unwrap();
        assert!(
            ids(&ctx, gate(&ctx, profiles, nobody.get("social_profile")).unwrap())
                .await
                .is_empty()
        );
    }
}
