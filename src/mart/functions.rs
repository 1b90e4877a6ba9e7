//! Spark SQL functions the mart SQL uses that DataFusion lacks, under Spark's names, so the
//! same files run on both engines.

use arrow::array::{ArrayRef, AsArray};
use arrow::datatypes::{DataType, TimeUnit, TimestampMillisecondType};
use datafusion::common::{Result, exec_err};
use datafusion::logical_expr::{ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility};
use datafusion::prelude::SessionContext;
use std::sync::Arc;

pub fn register(ctx: &SessionContext) {
    ctx.register_udf(ScalarUDF::from(UnixMillis::new()));
    // Spark's `element_at(array, i)` is 1-based like DataFusion's `array_element`; in
    // DataFusion the name belongs to maps, which the marts do not index.
    let element_at = datafusion::functions_nested::extract::array_element_udf()
        .as_ref()
        .clone()
        .with_aliases(["element_at"]);
    ctx.register_udf(element_at);
}

/// `unix_millis(timestamp)`: milliseconds since the epoch, as a BIGINT.
#[derive(Debug, PartialEq, Eq, Hash)]
struct UnixMillis {
    signature: Signature,
}

impl UnixMillis {
    fn new() -> Self {
        Self {
            signature: Signature::any(1, Volatility::Immutable),
        }
    }
}

impl ScalarUDFImpl for UnixMillis {
    fn name(&self) -> &str {
        "unix_millis"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, args: &[DataType]) -> Result<DataType> {
        match args {
            [DataType::Timestamp(..) | DataType::Date32 | DataType::Date64 | DataType::Null] => Ok(DataType::Int64),
            other => exec_err!("unix_millis takes a timestamp, got {other:?}"),
        }
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let [arg] = args.args.as_slice() else {
            return exec_err!("unix_millis takes one argument");
        };
        let array = arg.to_array(args.number_rows)?;
        // The stored instant is UTC whatever the zone label, so dropping the label is exact.
        let millis = arrow::compute::cast(&array, &DataType::Timestamp(TimeUnit::Millisecond, None))?;
        let out: ArrayRef = Arc::new(
            millis
                .as_primitive::<TimestampMillisecondType>()
                .reinterpret_cast::<arrow::datatypes::Int64Type>(),
        );
        Ok(ColumnarValue::Array(out))
    }
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn unix_millis_matches_spark() {
        let ctx = datafusion::prelude::SessionContext::new();
        super::register(&ctx);
        let batches = ctx
            .sql("SELECT unix_millis(TIMESTAMP '2026-01-01T00:00:00Z') AS a, unix_millis(CAST(DATE '2026-01-02' AS TIMESTAMP)) AS b")
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        let row = arrow::util::pretty::pretty_format_batches(&batches)
            .unwrap()
            .to_string();
        // Spark 4.1: unix_millis(TIMESTAMP '2026-01-01 00:00:00') = 1767225600000 (UTC session).
        assert!(row.contains("1767225600000"), "{row}");
        assert!(row.contains("1767312000000"), "{row}");
    }
}
