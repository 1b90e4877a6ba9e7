//! The lake's root: a local directory by default, HDFS in production, one code path
//! through `object_store`. Later stages address tables by paths under this root.
//!
//! HDFS is addressed as `hdfs://host:port` (one NameNode) or `hdfs://nameservice` (NameNode
//! HA: the NameNodes come from Hadoop settings, `lake.hdfs_options` or `HADOOP_CONF_DIR`),
//! with Kerberos when the settings say `hadoop.security.authentication = kerberos`.

pub mod cache;
pub mod columns;
pub mod erased;
pub mod maintenance;
pub mod mart;
pub mod raw;

use deltalake::logstore::{LogStore, LogStoreFactory, ObjectStoreFactory, ObjectStoreRef, StorageConfig};
use hdfs_native_object_store::HdfsObjectStoreBuilder;
use object_store::ObjectStore;
use object_store::local::LocalFileSystem;
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, LazyLock, PoisonError, RwLock};
use url::Url;

/// Table properties every table this project creates gets. Tables here take a commit a
/// second, and delta-rs checkpoints every 100 commits by default: between checkpoints each
/// open replays up to 99 JSON commits, which made a fold several times slower within two
/// minutes of traffic. Every 10 keeps an open to one checkpoint and at most nine commits.
pub const TABLE_PROPERTIES: [(&str, Option<&str>); 1] = [("delta.checkpointInterval", Some("10"))];

/// `delta.checkpointInterval` above, for writers that checkpoint themselves
/// (`maintenance::checkpoint_due`).
pub const CHECKPOINT_INTERVAL: u64 = 10;

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
    #[error(
        "cannot open the HDFS nameservice '{nameservice}' ({url}): {source}. A port-less hdfs:// URL \
         names a NameNode HA nameservice; say where its NameNodes are in lake.hdfs_options (or the \
         hdfs-site.xml in HADOOP_CONF_DIR): \"dfs.ha.namenodes.{nameservice}\" = \"nn1,nn2\" and \
         \"dfs.namenode.rpc-address.{nameservice}.nn1\" = \"host:port\" for each"
    )]
    Nameservice {
        url: String,
        nameservice: String,
        #[source]
        source: object_store::Error,
    },
}

/// HDFS client settings of each HDFS store this process uses, by store URL
/// (`hdfs://nameservice` or `hdfs://host:port`). deltalake opens stores by URL alone,
/// through object store factories that are process-wide, so a lake's settings are kept
/// here for [`HdfsFactory`] to find; and stages that get only the lake URL
/// ([`LakeUrl::parse`]) find the settings the configuration gave (`Config::load`).
static HDFS_OPTIONS: LazyLock<RwLock<HashMap<String, BTreeMap<String, String>>>> = LazyLock::new(Default::default);

/// The HDFS client settings registered for the store of `url`, empty when none are.
fn registered_hdfs_options(url: &Url) -> BTreeMap<String, String> {
    HDFS_OPTIONS
        .read()
        .unwrap_or_else(PoisonError::into_inner)
        .get(&store_key(url))
        .cloned()
        .unwrap_or_default()
}

fn register_hdfs_options(url: &Url, options: &BTreeMap<String, String>) {
    let mut all = HDFS_OPTIONS.write().unwrap_or_else(PoisonError::into_inner);
    if all.get(&store_key(url)) != Some(options) {
        all.insert(store_key(url), options.clone());
    }
}

/// `scheme://host[:port]` of `url`: a store's identity, whatever the path.
fn store_key(url: &Url) -> String {
    match url.port() {
        Some(port) => format!("{}://{}:{port}", url.scheme(), url.host_str().unwrap_or_default()),
        None => format!("{}://{}", url.scheme(), url.host_str().unwrap_or_default()),
    }
}

/// An HDFS object store for `url` with `options` (Hadoop settings over what hdfs-native
/// reads from `HADOOP_CONF_DIR`), naming the nameservice settings when a port-less URL
/// finds no NameNodes.
fn hdfs_store(
    url: &Url,
    options: &BTreeMap<String, String>,
    runtime: Option<tokio::runtime::Handle>,
) -> Result<hdfs_native_object_store::HdfsObjectStore, LakeError> {
    let root = store_key(url);
    let mut builder = HdfsObjectStoreBuilder::new()
        .with_url(root.as_str())
        .with_config(options);
    if let Some(runtime) = runtime {
        builder = builder.with_io_runtime(runtime);
    }
    builder.build().map_err(|source| match url.port() {
        None => LakeError::Nameservice {
            url: root.clone(),
            nameservice: url.host_str().unwrap_or_default().to_string(),
            source,
        },
        Some(_) => LakeError::Store {
            url: root.clone(),
            source,
        },
    })
}

/// deltalake's HDFS store factory (`deltalake::hdfs`) with the lake's HDFS settings: the
/// settings registered for the store, under any storage options the caller gave.
#[derive(Debug, Default)]
struct HdfsFactory;

impl HdfsFactory {
    /// Replaces `deltalake::hdfs::register_handlers` for the `hdfs` scheme (once per process).
    fn register() {
        static ONCE: std::sync::Once = std::sync::Once::new();
        ONCE.call_once(|| {
            let factory = Arc::new(HdfsFactory);
            if let Ok(scheme) = Url::parse("hdfs://") {
                deltalake::logstore::object_store_factories().insert(scheme.clone(), factory.clone());
                deltalake::logstore::logstore_factories().insert(scheme, factory);
            }
        });
    }

    fn options(url: &Url, storage_options: &HashMap<String, String>) -> BTreeMap<String, String> {
        let mut options = registered_hdfs_options(url);
        options.extend(storage_options.iter().map(|(k, v)| (k.clone(), v.clone())));
        options
    }
}

impl ObjectStoreFactory for HdfsFactory {
    fn parse_url_opts(
        &self,
        url: &Url,
        config: &StorageConfig,
    ) -> deltalake::DeltaResult<(ObjectStoreRef, deltalake::Path)> {
        let options = Self::options(url, &config.raw);
        let store = hdfs_store(url, &options, config.runtime.as_ref().map(|r| r.get_handle())).map_err(|e| {
            object_store::Error::Generic {
                store: "HDFS",
                source: Box::new(e),
            }
        })?;
        Ok((Arc::new(store), deltalake::Path::parse(url.path())?))
    }
}

impl LogStoreFactory for HdfsFactory {
    fn with_options(
        &self,
        prefixed_store: ObjectStoreRef,
        root_store: ObjectStoreRef,
        location: &Url,
        options: &StorageConfig,
    ) -> deltalake::DeltaResult<Arc<dyn LogStore>> {
        Ok(deltalake::logstore::default_logstore(
            prefixed_store,
            root_store,
            location,
            options,
        ))
    }
}

/// A parsed lake root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LakeUrl {
    /// Where the store lives: `file:///`, `hdfs://host:port` or `hdfs://nameservice`.
    /// DataFusion finds object stores by exactly this `scheme://host[:port]`, so every table
    /// URL reuses it verbatim.
    pub store_url: Url,
    /// The root directory inside the store, without leading or trailing '/'.
    pub root: String,
    /// HDFS client settings (Hadoop keys such as `dfs.ha.namenodes.<nameservice>` or
    /// `hadoop.security.authentication`) over what hdfs-native reads from
    /// `HADOOP_CONF_DIR`; empty for a local lake.
    pub hdfs_options: BTreeMap<String, String>,
}

impl LakeUrl {
    /// The lake at `url` with `hdfs_options` (the `[lake]` configuration), which become the
    /// settings of that store for this whole process (see [`LakeUrl::with_hdfs_options`]).
    pub fn with_settings(url: &str, hdfs_options: &BTreeMap<String, String>) -> Result<Self, LakeError> {
        Ok(Self::parse(url)?.with_hdfs_options(hdfs_options.clone()))
    }

    /// This lake with `options` as its HDFS client settings. They are registered for the
    /// store, so deltalake's URL-based opens and later [`LakeUrl::parse`] calls of the same
    /// store in this process use them too. No effect on a local lake.
    pub fn with_hdfs_options(mut self, options: BTreeMap<String, String>) -> Self {
        if self.store_url.scheme() == "hdfs" {
            register_hdfs_options(&self.store_url, &options);
            self.hdfs_options = options;
        }
        self
    }

    /// Accepts a local path (relative paths are made absolute), `file:///abs/path`,
    /// `hdfs://host:port/path` or `hdfs://nameservice/path`. An HDFS lake gets the settings
    /// registered for its store in this process (by [`LakeUrl::with_settings`]), if any.
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
                    hdfs_options: BTreeMap::new(),
                })
            }
            "hdfs" => {
                if url.host_str().is_none_or(str::is_empty) {
                    return Err(bad("an hdfs URL needs the NameNode host:port or a nameservice, e.g. \
                         hdfs://127.0.0.1:9000/lake or hdfs://nameservice/lake"));
                }
                let host = url.host_str().unwrap_or_default();
                if url.port().is_none() && host.trim_matches(['[', ']']).parse::<std::net::IpAddr>().is_ok() {
                    return Err(bad("an hdfs URL with an IP address needs the NameNode port, e.g. \
                         hdfs://127.0.0.1:9000/lake (a port-less host is a nameservice)"));
                }
                if !url.username().is_empty() || url.password().is_some() {
                    return Err(bad(
                        "an hdfs URL carries no user; HDFS takes it from Kerberos or the OS user",
                    ));
                }
                // Without a port the host is a nameservice, resolved through the Hadoop
                // settings when the store is opened (hdfs-native does the same).
                let store_url = Url::parse(&store_key(&url)).map_err(|e| bad(&e.to_string()))?;
                let hdfs_options = registered_hdfs_options(&store_url);
                Ok(Self {
                    store_url,
                    root,
                    hdfs_options,
                })
            }
            other => Err(bad(&format!(
                "scheme '{other}' is not supported; use a path, file:// or hdfs://"
            ))),
        }
    }

    /// The object store that holds the lake, rooted at the store URL (not at the lake root),
    /// so paths handed to it are the same as in table URLs.
    pub fn store(&self) -> Result<Arc<dyn ObjectStore>, LakeError> {
        match self.store_url.scheme() {
            "hdfs" => Ok(Arc::new(hdfs_store(&self.store_url, &self.hdfs_options, None)?)),
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

    /// URL of a Delta table under the lake root; also makes sure `deltalake` opens
    /// `hdfs://` URLs, with this lake's HDFS settings.
    pub fn table_url(&self, relative: &str) -> Result<Url, deltalake::errors::DeltaTableError> {
        HdfsFactory::register();
        if self.store_url.scheme() == "hdfs" {
            // A lake given settings after another of the same store: its tables use its own.
            register_hdfs_options(&self.store_url, &self.hdfs_options);
        }
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
        for bad in [
            "",
            "s3://bucket/x",
            "hdfs://127.0.0.1/lake",
            "hdfs://[::1]/lake",
            "hdfs://me@nn:9000/lake",
            "file://remote/x",
        ] {
            assert!(LakeUrl::parse(bad).is_err(), "{bad} should be rejected");
        }
    }

    #[test]
    fn port_less_hdfs_url_is_a_nameservice() {
        let lake = LakeUrl::parse("hdfs://unit-ns-parse/hoffrec/lake").unwrap();
        assert_eq!(lake.store_url.as_str(), "hdfs://unit-ns-parse");
        assert_eq!(lake.url("raw/t"), "hdfs://unit-ns-parse/hoffrec/lake/raw/t");
        let table = lake.table_url("raw/t").unwrap();
        assert!(
            table.as_str().starts_with("hdfs://unit-ns-parse/hoffrec/lake/raw/t"),
            "{table}"
        );
    }

    /// The settings of a `[lake]` reach both ways the lake's store is opened: `store()`, and
    /// deltalake's factory, which sees only a table URL and the caller's storage options.
    #[test]
    fn hdfs_options_reach_every_client_of_the_store() {
        let options: BTreeMap<String, String> = [
            ("dfs.ha.namenodes.unit-ns-options", "nn1,nn2"),
            ("dfs.namenode.rpc-address.unit-ns-options.nn1", "127.0.0.1:1"),
            ("dfs.namenode.rpc-address.unit-ns-options.nn2", "127.0.0.1:2"),
            ("hadoop.security.authentication", "kerberos"),
        ]
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .into();
        let lake = LakeUrl::with_settings("hdfs://unit-ns-options/lake", &options).unwrap();
        assert_eq!(lake.hdfs_options, options);
        // A stage that has only the URL gets the same settings.
        assert_eq!(
            LakeUrl::parse("hdfs://unit-ns-options/other").unwrap().hdfs_options,
            options
        );
        let table = lake.table_url("raw/t").unwrap();
        let explicit = HashMap::from([("hadoop.security.authentication".to_string(), "simple".to_string())]);
        let merged = HdfsFactory::options(&table, &explicit);
        assert_eq!(merged["dfs.ha.namenodes.unit-ns-options"], "nn1,nn2");
        assert_eq!(
            merged["hadoop.security.authentication"], "simple",
            "storage options win"
        );
        // Opening connects to nothing yet: the NameNodes are found in the settings.
        lake.store().unwrap();
    }

    #[test]
    fn nameservice_without_namenodes_says_what_to_set() {
        // hdfs-native also reads HADOOP_CONF_DIR; this nameservice is in no such file.
        let lake = LakeUrl::parse("hdfs://unit-ns-missing/lake").unwrap();
        let err = lake.store().unwrap_err().to_string();
        assert!(err.contains("'unit-ns-missing'"), "{err}");
        assert!(err.contains("dfs.ha.namenodes.unit-ns-missing"), "{err}");
    }
}
