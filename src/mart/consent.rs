//! Consent governs use, not only collection: a raw table whose topic names a
//! `consent_purpose` reaches the mart SQL (`raw.<name>` and `new_raw.<name>`) holding only
//! the rows of customers whose newest consent event for that purpose is `given`, and of
//! those only the rows collected since that consent. A withdrawal therefore takes the
//! customer's rows out of every mart at their next fold (the consent event itself makes
//! them a changed customer), and consenting again brings back only data collected after
//! it. The gate sits here, under the SQL, so no mart can forget it.

use datafusion::catalog::TableProvider;
use datafusion::common::JoinType;
use datafusion::error::Result;
use datafusion::functions_window::expr_fn::row_number;
use datafusion::logical_expr::ExprFunctionExt;
use datafusion::prelude::{SessionContext, col, lit};
use std::sync::Arc;

/// `rows` as the marts may use them under `purpose`, given the consent table `consents`
/// (every consent event); `rows` itself when no purpose governs it. Without a consent
/// table nobody has consented, so nothing passes.
pub fn gate(
    ctx: &SessionContext,
    rows: Arc<dyn TableProvider>,
    purpose: Option<&str>,
    consents: Option<&Arc<dyn TableProvider>>,
) -> Result<Arc<dyn TableProvider>> {
    let Some(purpose) = purpose else {
        return Ok(rows);
    };
    let rows = ctx.read_table(rows)?;
    let Some(consents) = consents else {
        return Ok(rows.filter(lit(false))?.into_view());
    };
    let newest = row_number()
        .partition_by(vec![col("customer_id")])
        .order_by(vec![
            col("event_time").sort(false, false),
            col("event_id").sort(false, false),
        ])
        .build()?
        .alias("newest");
    let given = ctx
        .read_table(consents.clone())?
        .filter(col("purpose").eq(lit(purpose)))?
        .window(vec![newest])?
        .filter(col("newest").eq(lit(1u64)).and(col("action").eq(lit("given"))))?
        .select(vec![
            col("customer_id").alias("consent_customer_id"),
            col("event_time").alias("consent_since"),
        ])?;
    let gated = rows.join_on(
        given,
        JoinType::LeftSemi,
        [
            col("customer_id").eq(col("consent_customer_id")),
            col("event_time").gt_eq(col("consent_since")),
        ],
    )?;
    Ok(gated.into_view())
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{RecordBatch, StringArray, TimestampMillisecondArray};
    use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
    use datafusion::datasource::MemTable;

    fn table(columns: &[&str], rows: &[(&[&str], i64)]) -> Arc<dyn TableProvider> {
        let ts = DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()));
        let mut fields: Vec<Field> = columns.iter().map(|c| Field::new(*c, DataType::Utf8, false)).collect();
        fields.push(Field::new("event_time", ts, false));
        let schema = Arc::new(Schema::new(fields));
        let mut arrays: Vec<arrow::array::ArrayRef> = (0..columns.len())
            .map(|i| Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.0[i]))) as _)
            .collect();
        arrays.push(Arc::new(
            TimestampMillisecondArray::from_iter_values(rows.iter().map(|r| r.1)).with_timezone("UTC"),
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
            ],
        );
        let profiles = table(
            &["event_id", "customer_id"],
            &[
                (&["p-a", "a"], 150),
                (&["p-b-old", "b"], 150),
                (&["p-b-new", "b"], 350),
                (&["p-c", "c"], 150),
            ],
        );
        let gated = gate(&ctx, profiles.clone(), Some("social_profile"), Some(&consents)).unwrap();
        assert_eq!(ids(&ctx, gated).await, ["p-b-new"]);
        // No purpose: untouched; no consent table: nothing.
        assert_eq!(
            ids(&ctx, gate(&ctx, profiles.clone(), None, None).unwrap()).await.len(),
            4
        );
        assert!(
            ids(&ctx, gate(&ctx, profiles, Some("social_profile"), None).unwrap())
                .await
                .is_empty()
        );
    }
}
