//! Marts: SQL over the lake. So far the shared DataFusion session with every raw table
//! registered, which `hoffrec sql` uses for ad-hoc queries; the incremental marts in
//! `mart_sql/` build on it.

pub mod session;
