//! The mart tables' layout, shared by the fold (which writes them) and every reader: where
//! a mart lives, and the transaction ids that record how far it has folded each input.

/// Where a mart's table lives under the lake root: `mart/<name>`.
pub fn path(mart: &str) -> String {
    format!("mart/{mart}")
}

/// The Delta transaction id under which `mart` records the version of `input` (a raw
/// table's SQL name, or `mart.<name>` for an earlier mart) it has folded in.
pub fn folded_app_id(mart: &str, input: &str) -> String {
    format!("hoffrec-mart.{mart}.{input}")
}
