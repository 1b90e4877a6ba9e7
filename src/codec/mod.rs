//! Avro contracts on the wire: single-object encoding (`C3 01`, 8-byte CRC-64-AVRO
//! fingerprint of the Parsing Canonical Form, little-endian, then the body).
//!
//! Readers find the writer schema by fingerprint among every schema version kept in
//! `avro/` (current files and `avro/history/`), then resolve it to the reader's schema,
//! so producers can move to a newer version without a registry and without stopping readers.

mod canonical;
pub mod json;

pub use canonical::{fingerprint, parsing_canonical_form};

use apache_avro::Schema;
use apache_avro::reader::datum::GenericDatumReader;
use apache_avro::types::Value;
use apache_avro::writer::datum::GenericDatumWriter;
use std::collections::{BTreeMap, HashMap};
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The two marker bytes that open every single-object encoded record.
pub const MAGIC: [u8; 2] = [0xC3, 0x01];
const HEADER_LEN: usize = 10;

#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("record of {len} bytes is shorter than the 10-byte single-object header")]
    TruncatedHeader { len: usize },
    #[error("wrong magic bytes {found:02X?}: not Avro single-object encoding (expected [C3, 01])")]
    WrongMagic { found: [u8; 2] },
    #[error("unknown writer schema fingerprint {fingerprint:#018x}: no schema version in the catalog has it")]
    UnknownFingerprint { fingerprint: u64 },
    #[error("body ends early for schema {schema}: {message}")]
    TruncatedBody { schema: String, message: String },
    #[error("body is not valid for schema {schema}: {message}")]
    Malformed { schema: String, message: String },
    #[error("{extra} bytes left after the {schema} body")]
    TrailingBytes { schema: String, extra: usize },
    #[error("writer schema {writer} cannot be read as {reader}: {message}")]
    Incompatible {
        writer: String,
        reader: String,
        message: String,
    },
    #[error("no schema named {name} in the catalog")]
    UnknownSchema { name: String },
    #[error("value does not match schema {schema}: {message}")]
    InvalidValue { schema: String, message: String },
}

impl CodecError {
    /// A short stable class for dead-letter headers and metrics labels.
    pub fn class(&self) -> &'static str {
        match self {
            Self::TruncatedHeader { .. } => "truncated_header",
            Self::WrongMagic { .. } => "wrong_magic",
            Self::UnknownFingerprint { .. } => "unknown_fingerprint",
            Self::TruncatedBody { .. } => "truncated_body",
            Self::Malformed { .. } => "malformed_body",
            Self::TrailingBytes { .. } => "trailing_bytes",
            Self::Incompatible { .. } => "incompatible_schema",
            Self::UnknownSchema { .. } => "unknown_schema",
            Self::InvalidValue { .. } => "invalid_value",
        }
    }
}

/// One version of one event schema.
#[derive(Debug)]
pub struct SchemaVersion {
    /// `page_view` for `avro/page_view.avsc`, `product_view.v1` for `avro/history/product_view.v1.avsc`.
    pub id: String,
    /// The event name the version belongs to (`product_view` for both of the above).
    pub event: String,
    pub path: PathBuf,
    pub schema: Schema,
    /// The schema file's JSON as written (logical types included), for other Avro readers.
    pub json: String,
    pub canonical_form: String,
    pub fingerprint: u64,
}

/// A schema file that could not be loaded, for reporting all at once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchemaProblem {
    pub path: PathBuf,
    pub message: String,
}

/// Every schema version in an `avro/` directory, indexed by event name and by fingerprint.
#[derive(Debug, Default)]
pub struct SchemaSet {
    current: BTreeMap<String, Arc<SchemaVersion>>,
    by_fingerprint: HashMap<u64, Arc<SchemaVersion>>,
}

impl SchemaSet {
    /// Loads `dir/*.avsc` (current versions) and `dir/history/*.avsc` (older versions).
    /// Files that do not parse are returned as problems; the rest load.
    pub fn load(dir: &Path) -> (Self, Vec<SchemaProblem>) {
        let mut set = SchemaSet::default();
        let mut problems = Vec::new();
        for (sub, is_current) in [(dir.to_path_buf(), true), (dir.join("history"), false)] {
            let mut paths: Vec<PathBuf> = match std::fs::read_dir(&sub) {
                Ok(entries) => entries
                    .filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|p| p.extension().is_some_and(|e| e == "avsc"))
                    .collect(),
                Err(e) if !is_current && e.kind() == ErrorKind::NotFound => continue,
                Err(e) => {
                    problems.push(SchemaProblem {
                        path: sub.clone(),
                        message: format!("cannot list schemas: {e}"),
                    });
                    continue;
                }
            };
            paths.sort();
            for path in paths {
                match load_version(&path) {
                    Ok(version) => set.insert(version, is_current),
                    Err(message) => problems.push(SchemaProblem { path, message }),
                }
            }
        }
        (set, problems)
    }

    /// Loads the directory and fails if any schema file is bad, naming each.
    pub fn load_strict(dir: &Path) -> Result<Self, Vec<SchemaProblem>> {
        match Self::load(dir) {
            (set, problems) if problems.is_empty() => Ok(set),
            (_, problems) => Err(problems),
        }
    }

    fn insert(&mut self, version: SchemaVersion, is_current: bool) {
        let version = Arc::new(version);
        self.by_fingerprint.insert(version.fingerprint, version.clone());
        if is_current {
            self.current.insert(version.event.clone(), version);
        }
    }

    /// The current (newest) version of an event schema.
    pub fn current(&self, event: &str) -> Option<&Arc<SchemaVersion>> {
        self.current.get(event)
    }

    pub fn by_fingerprint(&self, fingerprint: u64) -> Option<&Arc<SchemaVersion>> {
        self.by_fingerprint.get(&fingerprint)
    }

    /// Current versions, by event name.
    pub fn events(&self) -> impl Iterator<Item = &Arc<SchemaVersion>> {
        self.current.values()
    }

    /// Every version, current and historical.
    pub fn versions(&self) -> impl Iterator<Item = &Arc<SchemaVersion>> {
        self.by_fingerprint.values()
    }

    /// Encodes a value with the current version of `event`.
    pub fn encode(&self, event: &str, value: Value) -> Result<Vec<u8>, CodecError> {
        let version = self.current(event).ok_or_else(|| CodecError::UnknownSchema {
            name: event.to_string(),
        })?;
        encode_with(version, value)
    }

    /// Decodes a single-object record and resolves it to the current version of `reader_event`.
    pub fn decode(&self, bytes: &[u8], reader_event: &str) -> Result<Value, CodecError> {
        let reader = self.current(reader_event).ok_or_else(|| CodecError::UnknownSchema {
            name: reader_event.to_string(),
        })?;
        self.decode_as(bytes, reader).map(|(value, _)| value)
    }

    /// Decodes a record with whatever schema wrote it and resolves it to `reader`; also
    /// returns the writer version so callers can see which producers lag behind.
    pub fn decode_as(&self, bytes: &[u8], reader: &SchemaVersion) -> Result<(Value, Arc<SchemaVersion>), CodecError> {
        let fingerprint = read_header(bytes)?;
        let writer = self
            .by_fingerprint(fingerprint)
            .ok_or(CodecError::UnknownFingerprint { fingerprint })?;
        let reader_schema = (writer.fingerprint != reader.fingerprint).then_some(&reader.schema);
        let datum_reader = GenericDatumReader::builder(&writer.schema)
            .maybe_reader_schema(reader_schema)
            .build()
            .map_err(|e| CodecError::Incompatible {
                writer: writer.id.clone(),
                reader: reader.id.clone(),
                message: e.to_string(),
            })?;
        let mut body = &bytes[HEADER_LEN..];
        let value = datum_reader
            .read_value(&mut body)
            .map_err(|e| body_error(e, writer, reader))?;
        if !body.is_empty() {
            return Err(CodecError::TrailingBytes {
                schema: writer.id.clone(),
                extra: body.len(),
            });
        }
        Ok((value, writer.clone()))
    }
}

/// A reusable decoder for records written with one schema version and read as written
/// (no resolution). Building a datum reader resolves the schema's names, which costs more
/// than decoding a small record, so hot loops keep one per writer fingerprint.
pub struct WriterDecoder {
    version: Arc<SchemaVersion>,
    reader: GenericDatumReader<'static>,
}

impl WriterDecoder {
    pub fn new(version: Arc<SchemaVersion>) -> Result<Self, CodecError> {
        // The reader borrows its schema for as long as it lives; one leaked copy per
        // writer version (callers cache decoders by fingerprint) keeps that simple.
        let schema: &'static Schema = Box::leak(Box::new(version.schema.clone()));
        let reader = GenericDatumReader::builder(schema)
            .build()
            .map_err(|e| CodecError::Malformed {
                schema: version.id.clone(),
                message: e.to_string(),
            })?;
        Ok(Self { version, reader })
    }

    /// Decodes a single-object record whose header names this decoder's version.
    pub fn decode(&self, bytes: &[u8]) -> Result<Value, CodecError> {
        let mut body = bytes
            .get(HEADER_LEN..)
            .ok_or(CodecError::TruncatedHeader { len: bytes.len() })?;
        let value = self
            .reader
            .read_value(&mut body)
            .map_err(|e| body_error(e, &self.version, &self.version))?;
        if !body.is_empty() {
            return Err(CodecError::TrailingBytes {
                schema: self.version.id.clone(),
                extra: body.len(),
            });
        }
        Ok(value)
    }
}

/// Encodes `value` with one schema version: header, then the Avro binary body.
pub fn encode_with(version: &SchemaVersion, value: Value) -> Result<Vec<u8>, CodecError> {
    let invalid = |message: String| CodecError::InvalidValue {
        schema: version.id.clone(),
        message,
    };
    let value = value.resolve(&version.schema).map_err(|e| invalid(e.to_string()))?;
    let writer = GenericDatumWriter::builder(&version.schema)
        .build()
        .map_err(|e| invalid(e.to_string()))?;
    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&version.fingerprint.to_le_bytes());
    writer
        .write_value(&mut out, value)
        .map_err(|e| invalid(e.to_string()))?;
    Ok(out)
}

/// The writer fingerprint of a single-object record.
pub fn read_header(bytes: &[u8]) -> Result<u64, CodecError> {
    if bytes.len() < HEADER_LEN {
        return Err(CodecError::TruncatedHeader { len: bytes.len() });
    }
    if bytes[..2] != MAGIC {
        return Err(CodecError::WrongMagic {
            found: [bytes[0], bytes[1]],
        });
    }
    let mut fp = [0u8; 8];
    fp.copy_from_slice(&bytes[2..HEADER_LEN]);
    Ok(u64::from_le_bytes(fp))
}

fn body_error(e: apache_avro::Error, writer: &SchemaVersion, reader: &SchemaVersion) -> CodecError {
    let message = e.to_string();
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&e);
    while let Some(err) = source {
        if let Some(io) = err.downcast_ref::<std::io::Error>()
            && io.kind() == ErrorKind::UnexpectedEof
        {
            return CodecError::TruncatedBody {
                schema: writer.id.clone(),
                message,
            };
        }
        source = err.source();
    }
    if writer.fingerprint != reader.fingerprint && is_resolution_error(e.details()) {
        return CodecError::Incompatible {
            writer: writer.id.clone(),
            reader: reader.id.clone(),
            message,
        };
    }
    CodecError::Malformed {
        schema: writer.id.clone(),
        message,
    }
}

fn is_resolution_error(details: &apache_avro::error::Details) -> bool {
    use apache_avro::error::Details as D;
    matches!(
        details,
        D::GetField(_) | D::GetEnumDefault { .. } | D::FindUnionVariant { .. }
    )
}

fn load_version(path: &Path) -> Result<SchemaVersion, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read: {e}"))?;
    let json: serde_json::Value = serde_json::from_str(&text).map_err(|e| format!("not JSON: {e}"))?;
    let schema = Schema::parse(&json).map_err(|e| format!("not a valid Avro schema: {e}"))?;
    let canonical_form = parsing_canonical_form(&json)?;
    let id = path
        .file_stem()
        .and_then(|s| s.to_str())
        .ok_or("file name is not UTF-8")?
        .to_string();
    let event = id.split('.').next().unwrap_or(&id).to_string();
    Ok(SchemaVersion {
        fingerprint: fingerprint(&canonical_form),
        id,
        event,
        path: path.to_path_buf(),
        schema,
        json: text,
        canonical_form,
    })
}
