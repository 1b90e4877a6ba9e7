//! How a fold fails, and which failures the stage waits out (the lake was busy or away)
//! rather than stops on (a mistake in `mart_sql/` that needs a person).

use super::tables::LakeReadError;
use datafusion::error::DataFusionError;
use deltalake::errors::DeltaTableError;

#[derive(Debug, thiserror::Error)]
pub enum FoldError {
    #[error(transparent)]
    Lake(#[from] LakeReadError),
    #[error("{file}: {source}")]
    Sql {
        file: String,
        #[source]
        source: Box<DataFusionError>,
    },
    #[error("mart {mart}: the changed-keys query must return the column `{column}`")]
    MissingColumn { mart: String, column: String },
    #[error("mart {mart}: `-- combine: {column} = ...` cannot be used: {source}")]
    Combine {
        mart: String,
        column: String,
        #[source]
        source: Box<DataFusionError>,
    },
    #[error("mart {mart}: writing to the lake failed: {source}")]
    Write {
        mart: String,
        #[source]
        source: Box<DeltaTableError>,
    },
    #[error("schema of raw topic {topic} cannot be turned into a table schema: {reason}")]
    Schema { topic: String, reason: String },
    /// A mart's fold task ended without an answer (it panicked): a bug, not the lake.
    #[error("mart {mart}: its fold stopped without finishing: {reason}")]
    Stopped { mart: String, reason: String },
}

impl FoldError {
    /// Worth retrying on the next trigger (the lake was busy or unreachable), as opposed
    /// to a mistake in the SQL that needs a person.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Lake(LakeReadError::Delta { .. }) => true,
            // A query fails on storage too (a DataNode or NameNode restarting), not only on
            // a mistake in the SQL.
            Self::Sql { source, .. } => storage_trouble(source),
            Self::Write { source, .. } => !mistake_in_write(source),
            _ => false,
        }
    }
}

pub(super) fn sql_error(file: &str, source: DataFusionError) -> FoldError {
    FoldError::Sql {
        file: file.to_string(),
        source: Box::new(source),
    }
}

/// Whether a query failed reading the lake rather than on its own terms.
fn storage_trouble(e: &DataFusionError) -> bool {
    use DataFusionError as E;
    match e {
        E::ObjectStore(_) | E::IoError(_) => true,
        E::Context(_, inner) | E::Diagnostic(_, inner) => storage_trouble(inner),
        E::Shared(inner) => storage_trouble(inner),
        E::External(inner) => {
            inner.downcast_ref::<E>().is_some_and(storage_trouble)
                || inner.is::<object_store::Error>()
                || inner.is::<std::io::Error>()
                || inner.is::<DeltaTableError>()
        }
        // The Parquet reader reports object store trouble as its own error.
        E::ParquetError(p) => matches!(**p, datafusion::parquet::errors::ParquetError::External(_)),
        _ => false,
    }
}

/// Whether a write failed on what the SQL produced rather than on the lake. Only kinds
/// that say so count: delta-rs turns most DataFusion errors of a MERGE into text, so a
/// planning error and a DataNode that went away look alike there, and waiting is the
/// safe reading. The `combine` expressions are planned before the MERGE for that reason
/// (`FoldError::Combine`).
fn mistake_in_write(e: &DeltaTableError) -> bool {
    use datafusion::sql::sqlparser::{parser::ParserError, tokenizer::TokenizerError};
    match e {
        DeltaTableError::SchemaMismatch { .. } => true,
        DeltaTableError::GenericError { source } => source.is::<ParserError>() || source.is::<TokenizerError>(),
        DeltaTableError::Arrow { source } => matches!(
            source,
            arrow::error::ArrowError::CastError(_) | arrow::error::ArrowError::SchemaError(_)
        ),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(source: DeltaTableError) -> FoldError {
        FoldError::Write {
            mart: "m".into(),
            source: Box::new(source),
        }
    }

    #[test]
    fn a_lake_that_went_away_is_waited_out() {
        let io = || std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "namenode");
        let store = object_store::Error::Generic {
            store: "hdfs",
            source: Box::new(io()),
        };
        assert!(write(DeltaTableError::ObjectStore { source: store }).is_transient());
        assert!(write(DeltaTableError::Io { source: io() }).is_transient());
        assert!(write(DeltaTableError::VersionAlreadyExists(3)).is_transient());
        // What delta-rs made text of cannot be told apart from storage trouble.
        assert!(write(DeltaTableError::Generic("Error during planning: x".into())).is_transient());
        let read = sql_error("f.sql", DataFusionError::External(Box::new(io())));
        assert!(read.is_transient());
        let read = sql_error("f.sql", DataFusionError::IoError(io()).context("reading raw"));
        assert!(read.is_transient());
    }

    #[test]
    fn a_mistake_in_the_sql_stops_the_stage() {
        let plan = || DataFusionError::Plan("no column x".into());
        assert!(!sql_error("f.sql", plan()).is_transient());
        let combine = FoldError::Combine {
            mart: "m".into(),
            column: "n".into(),
            source: Box::new(plan()),
        };
        assert!(!combine.is_transient());
        let parse = DeltaTableError::GenericError {
            source: Box::new(datafusion::sql::sqlparser::parser::ParserError::ParserError("x".into())),
        };
        assert!(!write(parse).is_transient());
        let mismatch = DeltaTableError::SchemaMismatch {
            msg: "n: Int64 vs Utf8".into(),
        };
        assert!(!write(mismatch).is_transient());
        let cast = arrow::error::ArrowError::CastError("'a' to Int64".into());
        assert!(!write(DeltaTableError::Arrow { source: cast }).is_transient());
    }
}
