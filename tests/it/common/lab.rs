//! A private corner of the real services for one ingest test: its own topics (unique
//! names, created on the real broker), its own lake directory (on the real HDFS), and
//! `hoffrec ingest` run as child processes that can be killed like real ones.

use super::{hdfs_url, kafka_bootstrap, repo, require_service, unique};
use apache_avro::types::Value;
use hoffrec::catalog::Catalog;
use hoffrec::codec::SchemaSet;
use hoffrec::lake::LakeUrl;
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub struct Lab {
    pub dir: tempfile::TempDir,
    pub brokers: String,
    pub lake: String,
    pub topics_dir: PathBuf,
    pub schemas_dir: PathBuf,
    pub raw: String,
    pub dlq: String,
    pub commits: String,
}

impl Lab {
    /// Topics for one raw product-view topic with `partitions` partitions plus the
    /// pipeline topics, created on the real broker; a fresh lake under HDFS.
    pub async fn new(partitions: i32) -> Self {
        let brokers = kafka_bootstrap();
        require_service("Kafka", &brokers);
        require_service("HDFS", &hdfs_url());
        let id = unique("it");
        let dir = tempfile::tempdir().unwrap();
        let topics_dir = dir.path().join("topics");
        let schemas_dir = dir.path().join("avro");
        std::fs::create_dir_all(&topics_dir).unwrap();
        super::copy_dir(&repo().join("avro"), &schemas_dir);
        let rename = |file: &str, name: &str, partitions: Option<i32>| {
            let text = std::fs::read_to_string(repo().join("topics").join(file)).unwrap();
            let mut out = String::new();
            for line in text.lines() {
                if line.starts_with("name = ") {
                    out.push_str(&format!("name = \"{name}\"\n"));
                } else if let (true, Some(p)) = (line.starts_with("partitions = "), partitions) {
                    out.push_str(&format!("partitions = {p}\n"));
                } else {
                    out.push_str(line);
                    out.push('\n');
                }
            }
            std::fs::write(topics_dir.join(format!("{name}.toml")), out).unwrap();
        };
        let raw = format!("raw.{id}.product_view");
        let dlq = format!("{id}.dlq");
        let commits = format!("{id}.commits");
        rename("raw.site.product_view.toml", &raw, Some(partitions));
        rename("dlq.raw.toml", &dlq, None);
        rename("lake.commits.toml", &commits, None);
        rename("mart.changes.toml", &format!("{id}.mart"), None);
        rename("recs.customer.toml", &format!("{id}.recs"), None);
        rename("recs.product.toml", &format!("{id}.recs_product"), None);
        rename("connect.offsets.toml", &format!("{id}.offsets"), None);
        rename("privacy.erasure.toml", &format!("{id}.erasure"), None);
        rename("privacy.audit.toml", &format!("{id}.audit"), None);
        let lake = format!("{}/hoffrec-it/{id}", hdfs_url().trim_end_matches('/'));
        let lab = Self {
            dir,
            brokers,
            lake,
            topics_dir,
            schemas_dir,
            raw,
            dlq,
            commits,
        };
        lab.apply_catalog().await;
        lab
    }

    /// Creates on the broker every topic of this lab's catalog that is not there yet.
    pub async fn apply_catalog(&self) {
        let catalog = Catalog::load(&self.topics_dir, &self.schemas_dir).unwrap();
        let kafka = hoffrec::config::KafkaConfig {
            brokers: self.brokers.clone(),
            ..Default::default()
        };
        hoffrec::catalog::apply::apply(&catalog, &kafka).await.unwrap();
    }

    /// Adds a copy of a repository topic file as `raw.<lab id>.<event>`; returns its name.
    /// Call `apply_catalog` afterwards to create it.
    #[allow(dead_code)]
    pub fn add_topic(&self, file: &str, event: &str) -> String {
        let id = self.raw.split('.').nth(1).unwrap();
        let name = format!("raw.{id}.{event}");
        let text = std::fs::read_to_string(repo().join("topics").join(file)).unwrap();
        // Only the topic's own name, not a mapping's `name = ...` further down.
        let mut renamed = String::new();
        let mut done = false;
        for l in text.lines() {
            if !done && l.starts_with("name = ") {
                renamed.push_str(&format!("name = \"{name}\"\n"));
                done = true;
            } else {
                renamed.push_str(&format!("{l}\n"));
            }
        }
        std::fs::write(self.topics_dir.join(format!("{name}.toml")), renamed).unwrap();
        name
    }

    /// Adds every raw topic of the repository's catalog, under its own name, so the marts'
    /// SQL finds all the tables it reads.
    #[allow(dead_code)]
    pub async fn add_raw_topics(&self) {
        for entry in std::fs::read_dir(repo().join("topics")).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            if name.starts_with("raw.") {
                std::fs::copy(&path, self.topics_dir.join(&name)).unwrap();
            }
        }
        self.apply_catalog().await;
    }

    /// Adds every raw topic of the repository's catalog under this lab's own names (the
    /// site's product views are the lab's `raw` topic), creates them, and writes a copy of
    /// `mart_sql/` whose `raw.<table>` names are the lab's; returns that SQL directory, for
    /// `HOFFREC__MART__SQL_DIR`. Runs of the whole pipeline then share nothing with other
    /// tests or earlier runs on the broker.
    #[allow(dead_code)]
    pub async fn add_unique_raw_topics(&self) -> PathBuf {
        let sql = |topic: &str| hoffrec::mart::session::sql_name(topic);
        let mut names = Vec::new();
        for entry in std::fs::read_dir(repo().join("topics")).unwrap() {
            let file = entry.unwrap().file_name().to_string_lossy().into_owned();
            let Some(topic) = file.strip_prefix("raw.").and_then(|f| f.strip_suffix(".toml")) else {
                continue;
            };
            let ours = if topic == "site.product_view" {
                self.raw.clone()
            } else {
                self.add_topic(&file, topic)
            };
            names.push((sql(&format!("raw.{topic}")), sql(&ours)));
        }
        self.apply_catalog().await;
        let dir = self.dir.path().join("mart_sql");
        std::fs::create_dir_all(&dir).unwrap();
        for entry in std::fs::read_dir(repo().join("mart_sql")).unwrap() {
            let path = entry.unwrap().path();
            let mut text = std::fs::read_to_string(&path).unwrap();
            for (theirs, ours) in &names {
                text = rename_table(&text, &format!("raw.{theirs}"), &format!("raw.{ours}"));
            }
            std::fs::write(dir.join(path.file_name().unwrap()), text).unwrap();
        }
        dir
    }

    /// Runs a `hoffrec` command to completion with extra environment; (success, stdout, stderr).
    #[allow(dead_code)]
    pub fn command_with_env(&self, args: &[&str], env: &[(&str, &str)]) -> (bool, String, String) {
        let mut cmd = self.command(args);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let out = cmd.output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// Every record of `topic` from the beginning to its current end: (value, headers).
    #[allow(dead_code)]
    pub fn read_topic(&self, topic: &str) -> Vec<(Vec<u8>, std::collections::HashMap<String, String>)> {
        use rdkafka::Message;
        use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &self.brokers)
            .set("group.id", super::unique("read"))
            .create()
            .unwrap();
        let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(10)).unwrap();
        let mut tpl = TopicPartitionList::new();
        let mut ends = Vec::new();
        for p in 0..metadata.topics()[0].partitions().len() as i32 {
            let (low, high) = consumer.fetch_watermarks(topic, p, Duration::from_secs(10)).unwrap();
            ends.push((p, low, high));
            tpl.add_partition_offset(topic, p, Offset::Beginning).unwrap();
        }
        consumer.assign(&tpl).unwrap();
        // Read committed (librdkafka's default): records of aborted transactions and the
        // markers are never delivered, so the end is the position, not a record count.
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        let mut out = Vec::new();
        while std::time::Instant::now() < deadline {
            if let Some(m) = consumer.poll(Duration::from_millis(200)) {
                let m = m.unwrap();
                let headers = hoffrec::kafka::header_texts(&m).into_iter().collect();
                out.push((m.payload().unwrap_or_default().to_vec(), headers));
                continue;
            }
            let position = consumer.position().unwrap();
            let done = ends.iter().all(|&(p, low, high)| {
                high == low
                    || matches!(
                        position.find_partition(topic, p).map(|e| e.offset()),
                        Some(Offset::Offset(o)) if o >= high
                    )
            });
            if done {
                break;
            }
        }
        out
    }

    /// Starts `hoffrec collect` on a free port and waits until it listens.
    pub async fn collect(&self) -> (Worker, String) {
        let addr = super::free_addr();
        let worker = self.hoffrec(&["collect", "--listen", &addr], &[]);
        super::poll_until("the collector to listen", Duration::from_secs(60), || async {
            std::net::TcpStream::connect(&addr).ok().map(|_| ())
        })
        .await;
        (worker, addr)
    }

    /// Starts `hoffrec ingest` in its own process.
    pub fn ingest(&self, group: &str, env: &[(&str, &str)]) -> Worker {
        let mut env = env.to_vec();
        if !env.iter().any(|(k, _)| *k == "HOFFREC__INGEST__FLUSH_INTERVAL_MS") {
            env.insert(0, ("HOFFREC__INGEST__FLUSH_INTERVAL_MS", "1000"));
        }
        self.hoffrec(&["ingest", "--group", group], &env)
    }

    /// `hoffrec` pointed at this lab's broker, lake and catalog.
    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_hoffrec"));
        cmd.current_dir(self.dir.path())
            .env("HOFFREC__MART__SQL_DIR", repo().join("mart_sql"))
            .args(["--brokers", &self.brokers, "--lake", &self.lake])
            .arg("--topics-dir")
            .arg(&self.topics_dir)
            .arg("--schemas-dir")
            .arg(&self.schemas_dir)
            .args(args);
        cmd
    }

    /// Runs a `hoffrec` command to completion against this lab; returns (success, stdout, stderr).
    pub fn run(&self, args: &[&str]) -> (bool, String, String) {
        let out = self.command(args).output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// Starts any `hoffrec` subcommand against this lab's broker, lake and catalog.
    pub fn hoffrec(&self, args: &[&str], env: &[(&str, &str)]) -> Worker {
        let n = std::fs::read_dir(self.dir.path()).map(|d| d.count()).unwrap_or(0);
        let log_path = self.dir.path().join(format!("{}-{n}.log", args[0]));
        let log = std::fs::File::create(&log_path).unwrap();
        let mut cmd = self.command(args);
        cmd.env("HOFFREC__LOG__FILTER", "hoffrec=info,warn")
            .stdout(Stdio::null())
            .stderr(log);
        for (k, v) in env {
            cmd.env(k, v);
        }
        Worker {
            child: Some(cmd.spawn().unwrap()),
            log: log_path,
        }
    }

    /// The name of this lab's topic that plays `role`.
    #[allow(dead_code)]
    pub fn topic_of(&self, role: hoffrec::catalog::Role) -> String {
        let catalog = Catalog::load(&self.topics_dir, &self.schemas_dir).unwrap();
        catalog.topic_for(role).unwrap().name.clone()
    }

    pub fn schemas(&self) -> SchemaSet {
        SchemaSet::load_strict(&self.schemas_dir).unwrap()
    }

    pub fn producer(&self) -> FutureProducer {
        ClientConfig::new()
            .set("bootstrap.servers", &self.brokers)
            .set("enable.idempotence", "true")
            .set("linger.ms", "5")
            .create()
            .unwrap()
    }

    /// Sends raw bytes to the raw topic, keyed like the site does (by customer).
    pub async fn send(&self, producer: &FutureProducer, key: &str, payload: &[u8]) {
        producer
            .send(
                FutureRecord::to(&self.raw).key(key).payload(payload),
                Duration::from_secs(30),
            )
            .await
            .unwrap_or_else(|(e, _)| panic!("produce: {e}"));
    }

    /// Sends many records concurrently, waiting for all of them.
    pub async fn send_all(&self, producer: &FutureProducer, records: &[(String, Vec<u8>)]) {
        let sends = records.iter().map(|(key, payload)| {
            producer.send(
                FutureRecord::to(&self.raw).key(key).payload(payload),
                Duration::from_secs(30),
            )
        });
        for r in futures::future::join_all(sends).await {
            r.unwrap_or_else(|(e, _)| panic!("produce: {e}"));
        }
    }

    pub fn lake_url(&self) -> LakeUrl {
        LakeUrl::parse(&self.lake).unwrap()
    }

    /// Rows and distinct event ids in the raw table; None before its first commit.
    pub async fn lake_counts(&self) -> Option<(u64, u64)> {
        let rows = self
            .query("SELECT count(*) AS n, count(DISTINCT event_id) AS d FROM t")
            .await?;
        let batch = rows.first()?;
        let n = batch
            .column(0)
            .as_any()
            .downcast_ref::<arrow::array::Int64Array>()?
            .value(0);
        let d = batch
            .column(1)
            .as_any()
            .downcast_ref::<arrow::array::Int64Array>()?
            .value(0);
        Some((n as u64, d as u64))
    }

    /// Runs SQL over the raw table registered as `t`.
    pub async fn query(&self, sql: &str) -> Option<Vec<arrow::record_batch::RecordBatch>> {
        self.query_topic(&self.raw, sql).await
    }

    /// Runs SQL over the raw table of any topic, registered as `t`.
    pub async fn query_topic(&self, topic: &str, sql: &str) -> Option<Vec<arrow::record_batch::RecordBatch>> {
        let url = self.lake_url().table_url(&hoffrec::lake::raw::path(topic)).ok()?;
        let table = deltalake::open_table(url).await.ok()?;
        let ctx = datafusion::prelude::SessionContext::new();
        table.update_datafusion_session(&ctx.state()).ok()?;
        let provider = table.table_provider().await.ok()?;
        ctx.register_table("t", provider).ok()?;
        ctx.sql(sql).await.ok()?.collect().await.ok()
    }

    pub async fn open_table(&self) -> Option<deltalake::DeltaTable> {
        let url = self.lake_url().table_url(&hoffrec::lake::raw::path(&self.raw)).ok()?;
        deltalake::open_table(url).await.ok()
    }

    /// Offsets stored in the lake for every partition of the raw topic.
    pub async fn stored_offsets(&self, group: &str, partitions: i32) -> Vec<Option<i64>> {
        let mut table = hoffrec::ingest::RawTable::open(&self.lake_url(), &self.raw, group, 1 << 20)
            .await
            .unwrap();
        let ps: Vec<i32> = (0..partitions).collect();
        let stored = table.stored_offsets(&ps).await.unwrap();
        ps.iter().map(|p| stored[p]).collect()
    }

    /// End offsets (high watermarks) of every partition of `topic`.
    pub fn end_offsets(&self, topic: &str, partitions: i32) -> Vec<i64> {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &self.brokers)
            .create()
            .unwrap();
        (0..partitions)
            .map(|p| consumer.fetch_watermarks(topic, p, Duration::from_secs(10)).unwrap().1)
            .collect()
    }
}

/// A `hoffrec ingest` child process; killed when dropped.
pub struct Worker {
    child: Option<Child>,
    pub log: PathBuf,
}

impl Worker {
    /// Like a machine dying: no flush, no goodbye to the group.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// A clean stop (SIGTERM): flushes, commits and leaves the group. Returns stdout-less status.
    pub fn stop(&mut self) -> bool {
        let Some(mut c) = self.child.take() else { return false };
        let _ = Command::new("kill").args(["-TERM", &c.id().to_string()]).status();
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(Some(status)) = c.try_wait() {
                return status.success();
            }
            if std::time::Instant::now() > deadline {
                let _ = c.kill();
                let _ = c.wait();
                panic!(
                    "ingest did not stop within 60 s after SIGTERM; log: {}",
                    tail(&self.log)
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.as_mut().and_then(|c| c.try_wait().ok().flatten())
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// The last lines of a log, for assertion messages.
/// A top-level field of a decoded record.
#[allow(dead_code)]
pub fn field<'a>(value: &'a Value, name: &str) -> &'a Value {
    let Value::Record(fields) = value else {
        panic!("not a record: {value:?}")
    };
    &fields
        .iter()
        .find(|(n, _)| n == name)
        .unwrap_or_else(|| panic!("no field {name}"))
        .1
}

pub fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

/// A product view as the site sends it.
pub fn product_view(event_id: &str, customer: u64, price_kopecks: Option<i64>) -> Value {
    let now = chrono::Utc::now().timestamp_millis();
    Value::Record(vec![
        ("event_id".into(), Value::String(event_id.into())),
        ("event_time".into(), Value::TimestampMillis(now)),
        ("customer_id".into(), Value::String(format!("c{customer}"))),
        ("session_id".into(), Value::String(format!("s{customer}"))),
        ("product_id".into(), Value::String(format!("p{}", customer % 97))),
        ("dwell_ms".into(), Value::Long(1_500)),
        (
            "price_kopecks".into(),
            match price_kopecks {
                Some(p) => Value::Union(1, Box::new(Value::Long(p))),
                None => Value::Union(0, Box::new(Value::Null)),
            },
        ),
        ("list_id".into(), Value::Union(0, Box::new(Value::Null))),
        ("position".into(), Value::Union(0, Box::new(Value::Null))),
    ])
}

/// `text` with every whole `from` (not followed by more of a name) turned into `to`.
fn rename_table(text: &str, from: &str, to: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find(from) {
        let after = &rest[at + from.len()..];
        let whole = !after.starts_with(|c: char| c.is_alphanumeric() || c == '_');
        out.push_str(&rest[..at]);
        out.push_str(if whole { to } else { from });
        rest = after;
    }
    out.push_str(rest);
    out
}
