//! The lake's column types for Avro schemas.
//!
//! Every column is nullable in the lake. Raw tables keep what producers wrote (schema on
//! read), and producers on different schema versions land side by side in one table, so a
//! field one version lacks is simply null for its rows.

use apache_avro::Schema;
use apache_avro::schema::{NamesRef, ResolvedSchema};
use arrow::datatypes::{DataType, Field, Fields, TimeUnit};
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum ConvertError {
    #[error("field {path}: Avro type {avro} has no lake column type ({reason})")]
    Unsupported { path: String, avro: String, reason: String },
    #[error("cannot build the Arrow batch: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
}

pub const TIMESTAMP_TZ: &str = "UTC";

fn timestamp_type() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some(TIMESTAMP_TZ.into()))
}

/// The Arrow fields of a top-level Avro record schema.
pub fn record_fields(schema: &Schema) -> Result<Fields, ConvertError> {
    let resolved = ResolvedSchema::try_from(schema).map_err(|e| ConvertError::Unsupported {
        path: String::new(),
        avro: "schema".into(),
        reason: e.to_string(),
    })?;
    let names = resolved.get_names();
    match data_type(schema, names, "")? {
        DataType::Struct(fields) => Ok(fields),
        other => Err(ConvertError::Unsupported {
            path: String::new(),
            avro: format!("{other}"),
            reason: "a raw event must be a record".into(),
        }),
    }
}

fn data_type(schema: &Schema, names: &NamesRef, path: &str) -> Result<DataType, ConvertError> {
    let unsupported = |reason: &str| ConvertError::Unsupported {
        path: path.to_string(),
        avro: format!("{schema:?}").chars().take(80).collect(),
        reason: reason.to_string(),
    };
    Ok(match schema {
        Schema::Boolean => DataType::Boolean,
        Schema::Int | Schema::TimeMillis => DataType::Int32,
        Schema::Long | Schema::TimeMicros => DataType::Int64,
        Schema::Float => DataType::Float32,
        Schema::Double => DataType::Float64,
        Schema::Bytes | Schema::Fixed(_) | Schema::Duration(_) => DataType::Binary,
        Schema::String | Schema::Uuid(_) | Schema::Enum(_) => DataType::Utf8,
        Schema::Date => DataType::Date32,
        Schema::TimestampMillis
        | Schema::TimestampMicros
        | Schema::LocalTimestampMillis
        | Schema::LocalTimestampMicros => timestamp_type(),
        Schema::Decimal(d) if d.precision <= 38 => DataType::Decimal128(d.precision as u8, d.scale as i8),
        Schema::Array(a) => DataType::List(Arc::new(Field::new(
            "element",
            data_type(&a.items, names, &format!("{path}[]"))?,
            true,
        ))),
        Schema::Map(m) => {
            let entries = Fields::from(vec![
                Field::new("key", DataType::Utf8, false),
                Field::new("value", data_type(&m.types, names, &format!("{path}{{}}"))?, true),
            ]);
            DataType::Map(
                Arc::new(Field::new("key_value", DataType::Struct(entries), false)),
                false,
            )
        }
        Schema::Record(r) => {
            let mut fields = Vec::with_capacity(r.fields.len());
            for f in &r.fields {
                let child = if path.is_empty() {
                    f.name.clone()
                } else {
                    format!("{path}.{}", f.name)
                };
                fields.push(Field::new(&f.name, data_type(&f.schema, names, &child)?, true));
            }
            DataType::Struct(Fields::from(fields))
        }
        Schema::Union(u) => {
            let non_null: Vec<&Schema> = u.variants().iter().filter(|s| **s != Schema::Null).collect();
            match non_null.as_slice() {
                [one] => data_type(one, names, path)?,
                _ => return Err(unsupported("only unions of null and one other type map to a column")),
            }
        }
        Schema::Ref { name } => match names.get(name) {
            Some(target) => data_type(target, names, path)?,
            None => return Err(unsupported("reference to an undefined named type")),
        },
        _ => return Err(unsupported("no lossless column type")),
    })
}
