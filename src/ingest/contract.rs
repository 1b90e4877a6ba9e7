//! What ingest knows about one raw topic's contract: the event it carries and the fields
//! every record must have.

use apache_avro::Schema;

#[derive(Clone)]
pub struct TopicContract {
    pub event: String,
    /// Top-level fields the current schema declares non-null without a default.
    pub required: Vec<String>,
}

impl TopicContract {
    pub fn new(event: &str, current: &Schema) -> Self {
        let required = match current {
            Schema::Record(r) => r
                .fields
                .iter()
                .filter(|f| f.default.is_none() && !matches!(&f.schema, Schema::Union(u) if u.is_nullable()))
                .map(|f| f.name.clone())
                .collect(),
            _ => Vec::new(),
        };
        Self {
            event: event.to_string(),
            required,
        }
    }
}
