//! Sources into raw topics: the HTTP event collector the site posts to, pollers for the
//! HTTP JSON APIs declared in `topics/` (`[source.http]`), and the importer for file drops
//! (`[source.file]`); pollers and importer map items with the topic's `[source.mapping]`.

pub mod collector;
pub mod consent;
pub mod dry_run;
pub mod error;
pub mod fetch;
pub mod files;
pub mod import;
mod listing;
pub mod mapping;
pub mod offsets;
pub mod pager;
pub mod pass;
pub mod poller;
pub mod produce;
pub mod producers;
pub mod social;
pub mod source;
