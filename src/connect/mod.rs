//! Sources into raw topics. So far: the HTTP event collector the site posts to, with the
//! JSON-to-Avro conversion it uses.

pub mod collector;
pub mod json;
