//! The integration tests, one module per area, in one test binary: each binary links the
//! whole dependency set, and one link instead of nineteen is most of a warm CI run's build.
//!
//! `cargo test --test it` runs them all; `cargo test --test it codec::` runs one module,
//! `cargo test --test it ingest::kill_9` one test. Tests that need the real Kafka broker
//! or HDFS skip themselves (with a line on stderr) unless `KAFKA_BOOTSTRAP` and `HDFS_URL`
//! are set, as `tests/run.sh` does after starting the services (see `common::services`).

mod common;

mod catalog;
mod closed_loop;
mod codec;
mod collector;
mod config;
mod connect;
mod consumers;
mod dashboard;
mod dead_letters;
mod demo;
mod deploy;
mod evaluate;
mod forget;
mod fuzz;
mod hdfs;
mod import;
mod ingest;
mod kafka_broker;
mod lake_rows;
mod mart;
mod privacy;
mod recommend;
mod restarts;
mod serve;
mod simulate;
mod social;
