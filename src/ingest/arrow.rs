//! Avro values straight into Arrow column builders: no JSON or row-struct hop.
//!
//! Every column is nullable in the lake. Raw tables keep what producers wrote (schema on
//! read), and producers on different schema versions land side by side in one table, so a
//! field one version lacks is simply null for its rows.

use apache_avro::Schema;
use apache_avro::schema::{NamesRef, ResolvedSchema};
use apache_avro::types::Value;
use arrow::array::{
    ArrayBuilder, ArrayRef, BinaryBuilder, BooleanBuilder, Date32Builder, Decimal128Builder, Float32Builder,
    Float64Builder, Int32Builder, Int64Builder, ListArray, MapArray, StringBuilder, StructArray,
    TimestampMicrosecondBuilder,
};
use arrow::buffer::{NullBuffer, OffsetBuffer, ScalarBuffer};
use arrow::datatypes::{DataType, Field, FieldRef, Fields, Schema as ArrowSchema, TimeUnit};
use std::collections::HashMap;
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum ConvertError {
    #[error("field {path}: Avro type {avro} has no lake column type ({reason})")]
    Unsupported { path: String, avro: String, reason: String },
    #[error("field {path}: value {value} does not fit column type {column}")]
    Mismatch {
        path: String,
        value: String,
        column: String,
    },
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

/// One growing column. Lists, maps and structs keep their own offsets and validity so
/// nested Avro lands as nested Parquet.
pub enum Column {
    Bool(BooleanBuilder),
    Int(Int32Builder),
    Long(Int64Builder),
    Float(Float32Builder),
    Double(Float64Builder),
    Str(StringBuilder),
    Bytes(BinaryBuilder),
    Date(Date32Builder),
    Timestamp(TimestampMicrosecondBuilder),
    Decimal(Decimal128Builder, DataType),
    List {
        item_field: FieldRef,
        offsets: Vec<i32>,
        valid: Vec<bool>,
        item: Box<Column>,
    },
    Map {
        entries_field: FieldRef,
        offsets: Vec<i32>,
        valid: Vec<bool>,
        keys: StringBuilder,
        values: Box<Column>,
    },
    Struct(StructColumn),
}

pub struct StructColumn {
    fields: Fields,
    children: Vec<Column>,
    index: HashMap<String, usize>,
    valid: Vec<bool>,
}

impl Column {
    pub fn new(data_type: &DataType) -> Self {
        match data_type {
            DataType::Boolean => Self::Bool(BooleanBuilder::new()),
            DataType::Int32 => Self::Int(Int32Builder::new()),
            DataType::Int64 => Self::Long(Int64Builder::new()),
            DataType::Float32 => Self::Float(Float32Builder::new()),
            DataType::Float64 => Self::Double(Float64Builder::new()),
            DataType::Binary => Self::Bytes(BinaryBuilder::new()),
            DataType::Date32 => Self::Date(Date32Builder::new()),
            DataType::Timestamp(_, tz) => {
                Self::Timestamp(TimestampMicrosecondBuilder::new().with_timezone_opt(tz.clone()))
            }
            DataType::Decimal128(..) => Self::Decimal(Decimal128Builder::new(), data_type.clone()),
            DataType::List(f) => Self::List {
                item_field: f.clone(),
                offsets: vec![0],
                valid: Vec::new(),
                item: Box::new(Column::new(f.data_type())),
            },
            DataType::Map(f, _) => {
                let value_type = match f.data_type() {
                    DataType::Struct(entries) if entries.len() == 2 => entries[1].data_type().clone(),
                    _ => DataType::Utf8,
                };
                Self::Map {
                    entries_field: f.clone(),
                    offsets: vec![0],
                    valid: Vec::new(),
                    keys: StringBuilder::new(),
                    values: Box::new(Column::new(&value_type)),
                }
            }
            DataType::Struct(fields) => Self::Struct(StructColumn::new(fields.clone())),
            // Utf8 and anything record_fields never produces.
            _ => Self::Str(StringBuilder::new()),
        }
    }

    pub fn append_null(&mut self) {
        match self {
            Self::Bool(b) => b.append_null(),
            Self::Int(b) => b.append_null(),
            Self::Long(b) => b.append_null(),
            Self::Float(b) => b.append_null(),
            Self::Double(b) => b.append_null(),
            Self::Str(b) => b.append_null(),
            Self::Bytes(b) => b.append_null(),
            Self::Date(b) => b.append_null(),
            Self::Timestamp(b) => b.append_null(),
            Self::Decimal(b, _) => b.append_null(),
            Self::List { offsets, valid, .. } | Self::Map { offsets, valid, .. } => {
                offsets.push(*offsets.last().unwrap_or(&0));
                valid.push(false);
            }
            Self::Struct(s) => s.append_null(),
        }
    }

    pub fn append(&mut self, value: &Value, path: &str) -> Result<(), ConvertError> {
        let mismatch = |column: &str| ConvertError::Mismatch {
            path: path.to_string(),
            value: format!("{value:?}").chars().take(60).collect(),
            column: column.to_string(),
        };
        match (self, value) {
            (this, Value::Union(_, inner)) => return this.append(inner, path),
            (this, Value::Null) => this.append_null(),
            (Self::Bool(b), Value::Boolean(v)) => b.append_value(*v),
            (Self::Int(b), Value::Int(v) | Value::TimeMillis(v)) => b.append_value(*v),
            (Self::Long(b), Value::Long(v) | Value::TimeMicros(v)) => b.append_value(*v),
            (Self::Long(b), Value::Int(v)) => b.append_value(i64::from(*v)),
            (Self::Float(b), Value::Float(v)) => b.append_value(*v),
            (Self::Double(b), Value::Double(v)) => b.append_value(*v),
            (Self::Double(b), Value::Float(v)) => b.append_value(f64::from(*v)),
            (Self::Double(b), Value::Long(v)) => b.append_value(*v as f64),
            (Self::Double(b), Value::Int(v)) => b.append_value(f64::from(*v)),
            (Self::Str(b), Value::String(v) | Value::Enum(_, v)) => b.append_value(v),
            (Self::Str(b), Value::Uuid(v)) => b.append_value(v.to_string()),
            (Self::Bytes(b), Value::Bytes(v) | Value::Fixed(_, v)) => b.append_value(v),
            (Self::Date(b), Value::Date(v)) => b.append_value(*v),
            (Self::Timestamp(b), Value::TimestampMillis(v) | Value::LocalTimestampMillis(v)) => {
                b.append_value(v.saturating_mul(1000))
            }
            (Self::Timestamp(b), Value::TimestampMicros(v) | Value::LocalTimestampMicros(v)) => b.append_value(*v),
            (Self::Decimal(b, _), Value::Decimal(d)) => {
                let bytes: Vec<u8> = d.try_into().map_err(|_| mismatch("decimal128"))?;
                if bytes.len() > 16 {
                    return Err(mismatch("decimal128"));
                }
                // Avro decimals are big-endian two's complement of any length.
                let fill = if bytes.first().is_some_and(|b| b & 0x80 != 0) {
                    0xFF
                } else {
                    0
                };
                let mut buf = [fill; 16];
                buf[16 - bytes.len()..].copy_from_slice(&bytes);
                b.append_value(i128::from_be_bytes(buf));
            }
            (
                Self::List {
                    offsets, valid, item, ..
                },
                Value::Array(items),
            ) => {
                for v in items {
                    item.append(v, path)?;
                }
                let last = *offsets.last().unwrap_or(&0);
                offsets.push(last + items.len() as i32);
                valid.push(true);
            }
            (
                Self::Map {
                    offsets,
                    valid,
                    keys,
                    values,
                    ..
                },
                Value::Map(entries),
            ) => {
                // Sorted keys make files reproducible across runs.
                let mut sorted: Vec<_> = entries.iter().collect();
                sorted.sort_by(|a, b| a.0.cmp(b.0));
                for (k, v) in sorted {
                    keys.append_value(k);
                    values.append(v, path)?;
                }
                let last = *offsets.last().unwrap_or(&0);
                offsets.push(last + entries.len() as i32);
                valid.push(true);
            }
            (Self::Struct(s), Value::Record(fields)) => s.append(fields, path)?,
            (Self::Bool(_), _) => return Err(mismatch("boolean")),
            (Self::Int(_), _) => return Err(mismatch("int32")),
            (Self::Long(_), _) => return Err(mismatch("int64")),
            (Self::Float(_), _) => return Err(mismatch("float32")),
            (Self::Double(_), _) => return Err(mismatch("float64")),
            (Self::Str(_), _) => return Err(mismatch("utf8")),
            (Self::Bytes(_), _) => return Err(mismatch("binary")),
            (Self::Date(_), _) => return Err(mismatch("date32")),
            (Self::Timestamp(_), _) => return Err(mismatch("timestamp")),
            (Self::Decimal(..), _) => return Err(mismatch("decimal128")),
            (Self::List { .. }, _) => return Err(mismatch("list")),
            (Self::Map { .. }, _) => return Err(mismatch("map")),
            (Self::Struct(_), _) => return Err(mismatch("struct")),
        }
        Ok(())
    }

    pub fn finish(&mut self) -> Result<ArrayRef, ConvertError> {
        Ok(match self {
            Self::Bool(b) => Arc::new(b.finish()),
            Self::Int(b) => Arc::new(b.finish()),
            Self::Long(b) => Arc::new(b.finish()),
            Self::Float(b) => Arc::new(b.finish()),
            Self::Double(b) => Arc::new(b.finish()),
            Self::Str(b) => Arc::new(b.finish()),
            Self::Bytes(b) => Arc::new(b.finish()),
            Self::Date(b) => Arc::new(b.finish()),
            Self::Timestamp(b) => Arc::new(b.finish()),
            Self::Decimal(b, dt) => Arc::new(b.finish().with_data_type(dt.clone())),
            Self::List {
                item_field,
                offsets,
                valid,
                item,
            } => {
                let offsets = OffsetBuffer::new(ScalarBuffer::from(std::mem::replace(offsets, vec![0])));
                let nulls = NullBuffer::from(std::mem::take(valid));
                Arc::new(ListArray::try_new(
                    item_field.clone(),
                    offsets,
                    item.finish()?,
                    Some(nulls),
                )?)
            }
            Self::Map {
                entries_field,
                offsets,
                valid,
                keys,
                values,
            } => {
                let DataType::Struct(entry_fields) = entries_field.data_type() else {
                    return Err(arrow::error::ArrowError::SchemaError("map entries must be a struct".into()).into());
                };
                let entries = StructArray::try_new(
                    entry_fields.clone(),
                    vec![Arc::new(keys.finish()) as ArrayRef, values.finish()?],
                    None,
                )?;
                let offsets = OffsetBuffer::new(ScalarBuffer::from(std::mem::replace(offsets, vec![0])));
                let nulls = NullBuffer::from(std::mem::take(valid));
                Arc::new(MapArray::try_new(
                    entries_field.clone(),
                    offsets,
                    entries,
                    Some(nulls),
                    false,
                )?)
            }
            Self::Struct(s) => Arc::new(s.finish()?),
        })
    }

    pub fn len(&self) -> usize {
        match self {
            Self::Bool(b) => b.len(),
            Self::Int(b) => b.len(),
            Self::Long(b) => b.len(),
            Self::Float(b) => b.len(),
            Self::Double(b) => b.len(),
            Self::Str(b) => b.len(),
            Self::Bytes(b) => b.len(),
            Self::Date(b) => b.len(),
            Self::Timestamp(b) => b.len(),
            Self::Decimal(b, _) => b.len(),
            Self::List { valid, .. } | Self::Map { valid, .. } => valid.len(),
            Self::Struct(s) => s.valid.len(),
        }
    }
}

impl StructColumn {
    pub fn new(fields: Fields) -> Self {
        let children = fields.iter().map(|f| Column::new(f.data_type())).collect();
        let index = fields.iter().enumerate().map(|(i, f)| (f.name().clone(), i)).collect();
        Self {
            fields,
            children,
            index,
            valid: Vec::new(),
        }
    }

    pub fn fields(&self) -> &Fields {
        &self.fields
    }

    pub fn rows(&self) -> usize {
        self.valid.len()
    }

    /// Appends a record by field name; fields the record lacks become null.
    pub fn append(&mut self, record: &[(String, Value)], path: &str) -> Result<(), ConvertError> {
        let before = self.valid.len();
        let mut seen = vec![false; self.children.len()];
        for (pos, (name, value)) in record.iter().enumerate() {
            // Records of one writer version come in field order: try the position first.
            let found = match self.fields.get(pos) {
                Some(f) if f.name() == name => Some(pos),
                _ => self.index.get(name).copied(),
            };
            if let Some(i) = found {
                let child = if path.is_empty() {
                    name.clone()
                } else {
                    format!("{path}.{name}")
                };
                self.children[i].append(value, &child)?;
                seen[i] = true;
            }
        }
        for (i, seen) in seen.into_iter().enumerate() {
            if !seen {
                self.children[i].append_null();
            }
        }
        self.valid.push(true);
        debug_assert!(self.children.iter().all(|c| c.len() == before + 1));
        Ok(())
    }

    fn append_null(&mut self) {
        for c in &mut self.children {
            c.append_null();
        }
        self.valid.push(false);
    }

    pub fn finish(&mut self) -> Result<StructArray, ConvertError> {
        let arrays = self
            .children
            .iter_mut()
            .map(Column::finish)
            .collect::<Result<Vec<_>, _>>()?;
        let nulls = NullBuffer::from(std::mem::take(&mut self.valid));
        let nulls = (nulls.null_count() > 0).then_some(nulls);
        Ok(StructArray::try_new(self.fields.clone(), arrays, nulls)?)
    }

    /// The finished rows as a record batch of `schema` (the struct's own fields).
    pub fn finish_batch(&mut self) -> Result<arrow::record_batch::RecordBatch, ConvertError> {
        let rows = self.valid.len();
        let array = self.finish()?;
        let schema = Arc::new(ArrowSchema::new(self.fields.clone()));
        let (_, columns, _) = array.into_parts();
        let options = arrow::record_batch::RecordBatchOptions::new().with_row_count(Some(rows));
        Ok(arrow::record_batch::RecordBatch::try_new_with_options(
            schema, columns, &options,
        )?)
    }
}
