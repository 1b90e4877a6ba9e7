//! hoffrec: everything a home-goods store knows about a customer, turned into product
//! recommendations, online. Data flows through the stages in this order:
//!
//! ```text
//! sources --connect--> raw.* topics (Avro) --ingest--> lake/raw/<topic> (Delta)
//!   --mart (SQL in mart_sql/)--> lake/mart/<table> --recommend--> recs.customer topic
//!   --serve--> GET /v1/recommendations/{customer} for the site's pages
//!   ^                                                                  |
//!   +---- impressions and clicks from the site, via the collector <----+
//! ```
//!
//! The contracts every stage shares come first: the configuration, the Avro codec, the
//! topic catalog, the Kafka client settings and the lake location.

pub mod config;

pub mod catalog;
/// Contracts: Avro single-object encoding, and the topics that carry it.
pub mod codec;

/// Where records move: the Kafka cluster, then the lake.
pub mod kafka;
pub mod lake;

/// Stage: sources -> raw topics (so far the site's event collector).
pub mod connect;

/// Stage: raw topics -> micro-batches -> Delta tables under `<lake>/raw/`, exactly once.
pub mod ingest;

/// Stage: raw lake tables -> SQL in `mart_sql/` -> mart tables under `<lake>/mart/`,
/// incrementally; customers whose portrait changed -> `mart.changes`.
pub mod mart;

/// Stage: changed portraits -> candidates, rules, ranker -> `recs.customer`.
pub mod recommend;

/// Stage: `recs.customer` -> in-memory lists (snapshot + topic) -> the site's HTTP read
/// path, without products the newest catalogue cannot sell.
pub mod serve;

/// Erasure of customers everywhere the stages keep them (`hoffrec forget`), with the
/// registry ingest and the fold consult so that erased data does not come back.
pub mod forget;

/// Metrics and health endpoints every long-running stage serves.
pub mod telemetry;

/// Pipeline health, customers and models in a browser, beside `/metrics`.
pub mod dashboard;

/// Every stage in one process on embedded defaults (`hoffrec demo`).
pub mod demo;

/// A seeded world behind the sources' APIs, for the demo, the tests and the benchmarks.
pub mod simulate;

/// Benchmarks run against real services (`hoffrec bench ...`).
pub mod bench;

pub mod cli;
