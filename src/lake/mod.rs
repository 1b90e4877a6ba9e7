//! The lake's root: a local directory by default, HDFS in production, one code path
//! through `object_store`. Later stages address tables by paths under this root.

pub mod columns;
pub mod maintenance;
pub mod mart;
pub mod raw;

use hdfs_native_object_store::HdfsObjectStoreBuilder;
use object_store::ObjectStore;
use object_store::local::LocalFileSystem;
use std::path::PathBuf;
use std::sync::Arc;
use url::Url;

/// Table properties every table this project creates gets. Tables here take a commit a
/// second, and delta-rs checkpoints every 100 commits by default: between checkpoints each
/// open replays up to 99 JSON commits, which made a fold several times slower within two
/// minutes of traffic. Every 10 keeps an open to one checkpoint and at most nine commits.
pub const TABLE_PROPERTIES: [(&str, Option<&str>); 1] = [("delta.checkpointInterval", Some("10"))];

#[derive(Debug, thiserror::Error)]
pub enum LakeError {
    #[error("'{url}' is not a lake location: {reason}")]
    BadUrl { url: String, reason: String },
    #[error("cannot open the object store for {url}: {source}")]
    Store {
        url: String,
        #[source]
        source: object_store::Error,
    },
}

/// A parsed lake root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LakeUrl {
    /// Where the store lives: `file:///` or `hdfs://host:port`. DataFusion finds object
    /// stores by exactly this `scheme://host:port`, so every table URL reuses it verbatim.
    pub store_url: Url,
    /// The root directory inside the store, without leading or trailing '/'.
    pub root: String,
}

impl LakeUrl {
    /// Accepts a local path (relative paths are made absolute), `file:///abs/path`
    /// or `hdfs://host:port/path`.
    pub fn parse(input: &str) -> Result<Self, LakeError> {
        let bad = |reason: &str| LakeError::BadUrl {
            url: input.to_string(),
            reason: reason.to_string(),
        };
        if input.trim().is_empty() {
            return Err(bad("it is empty"));
        }
        if !input.contains("://") {
            let abs = std::path::absolute(PathBuf::from(input)).map_err(|e| bad(&e.to_string()))?;
            let url = Url::from_directory_path(&abs).map_err(|_| bad("not an absolute local path"))?;
            return Self::parse(url.as_str());
        }
        let url = Url::parse(input).map_err(|e| bad(&e.to_string()))?;
        let root = url.path().trim_matches('/').to_string();
        match url.scheme() {
            "file" => {
                if url.host_str().is_some_and(|h| !h.is_empty() && h != "localhost") {
                    return Err(bad("file URLs name a local path: file:///abs/path"));
                }
                Ok(Self {
                    store_url: Url::parse("file:///").map_err(|e| bad(&e.to_string()))?,
                    root,
                })
            }
            "hdfs" => {
                let host = url
                    .host_str()
                    .filter(|h| !h.is_empty())
                    .ok_or_else(|| bad("an hdfs URL needs the NameNode host"))?;
                let port = url
                    .port()
                    .ok_or_else(|| bad("an hdfs URL needs the NameNode port, e.g. hdfs://127.0.0.1:9000/lake"))?;
                let store_url = Url::parse(&format!("hdfs://{host}:{port}")).map_err(|e| bad(&e.to_string()))?;
                Ok(Self { store_url, root })
            }
            other => Err(bad(&format!(
                "scheme '{other}' is not supported; use a path, file:// or hdfs://"
            ))),
        }
    }

    /// The object store that holds the lake, rooted at the store URL (not at the lake root),
    /// so paths handed to it are the same as in table URLs.
    pub fn store(&self) -> Result<Arc<dyn ObjectStore>, LakeError> {
        let err = |source| LakeError::Store {
            url: self.store_url.to_string(),
            source,
        };
        match self.store_url.scheme() {
            "hdfs" => {
                let store = HdfsObjectStoreBuilder::new()
                    .with_url(self.store_url.as_str().trim_end_matches('/'))
                    .build()
                    .map_err(err)?;
                Ok(Arc::new(store))
            }
            _ => Ok(Arc::new(LocalFileSystem::new())),
        }
    }

    /// Path inside the store of `relative` under the lake root.
    pub fn path(&self, relative: &str) -> object_store::path::Path {
        let relative = relative.trim_matches('/');
        match (self.root.is_empty(), relative.is_empty()) {
            (true, _) => object_store::path::Path::from(relative),
            (false, true) => object_store::path::Path::from(self.root.as_str()),
            (false, false) => object_store::path::Path::from(format!("{}/{relative}", self.root)),
        }
    }

    /// URL of a Delta table under the lake root; also makes sure `deltalake` can open
    /// `hdfs://` URLs (its HDFS handlers are registered once per process).
    pub fn table_url(&self, relative: &str) -> Result<Url, deltalake::errors::DeltaTableError> {
        static HDFS: std::sync::Once = std::sync::Once::new();
        HDFS.call_once(|| deltalake::hdfs::register_handlers(None));
        deltalake::ensure_table_uri(self.url(relative))
    }

    /// Full URL of `relative` under the lake root, as DataFusion and Delta want it.
    pub fn url(&self, relative: &str) -> String {
        let base = self.store_url.as_str();
        let sep = if base.ends_with('/') { "" } else { "/" };
        format!("{base}{sep}{}", self.path(relative))
    }
}

/// The Delta table at `relative` under the lake, loaded if it exists: `version()` is
/// `None` until the first write creates it.
pub async fn open_table(
    lake: &LakeUrl,
    relative: &str,
) -> Result<deltalake::DeltaTable, deltalake::errors::DeltaTableError> {
    let mut table = deltalake::DeltaTableBuilder::from_url(lake.table_url(relative)?)?.build()?;
    // Checking first keeps the kernel from logging an error for a table not made yet.
    if table.verify_deltatable_existence().await? {
        table.load().await?;
    }
    Ok(table)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hdfs_url_keeps_authority_and_root() {
        let lake = LakeUrl::parse("hdfs://127.0.0.1:9000/hoffrec/lake").unwrap();
        assert_eq!(lake.store_url.as_str(), "hdfs://127.0.0.1:9000");
        assert_eq!(lake.url("raw/t"), "hdfs://127.0.0.1:9000/hoffrec/lake/raw/t");
    }

    #[test]
    fn relative_path_becomes_absolute_file_url() {
        let lake = LakeUrl::parse("lake").unwrap();
        assert_eq!(lake.store_url.as_str(), "file:///");
        assert!(lake.url("raw").starts_with("file:///") && lake.url("raw").ends_with("/lake/raw"));
    }

    #[test]
    fn rejects_what_is_not_a_lake() {
        for bad in ["", "s3://bucket/x", "hdfs://127.0.0.1/lake", "file://remote/x"] {
            assert!(LakeUrl::parse(bad).is_err(), "{bad} should be rejected");
        }
    }
}
