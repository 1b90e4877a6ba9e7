//! `hoffrec mart status`: per mart, the raw versions folded in and how far behind it is.

use super::Marts;
use super::error::FoldError;
use super::fold::open_raw;
use super::tables::MartTable;

#[derive(Debug, Clone, serde::Serialize)]
pub struct RawLag {
    pub table: String,
    /// None: this raw table has never been folded into the mart.
    pub folded: Option<u64>,
    /// None: the topic has not landed anything yet.
    pub current: Option<u64>,
    /// Raw commits not folded in yet.
    pub lag_versions: u64,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct MartStatus {
    pub mart: String,
    /// None: the mart has never been written.
    pub version: Option<u64>,
    pub lag_versions: u64,
    pub raw: Vec<RawLag>,
}

pub async fn status(marts: &Marts) -> Result<Vec<MartStatus>, FoldError> {
    let raw = open_raw(&marts.lake, &marts.catalog).await?;
    let mut out = Vec::new();
    for f in marts.files.iter().filter(|f| f.is_mart()) {
        let mart = MartTable::open(&marts.lake, &f.name).await?;
        let mut lags = Vec::new();
        for t in &raw {
            let folded = mart.folded(&t.sql_name).await?;
            let current = t.version();
            lags.push(RawLag {
                table: format!("raw.{}", t.sql_name),
                folded,
                current,
                lag_versions: lag(folded, current),
            });
        }
        out.push(MartStatus {
            mart: f.name.clone(),
            version: mart.version(),
            lag_versions: lags.iter().map(|l| l.lag_versions).sum(),
            raw: lags,
        });
    }
    Ok(out)
}

/// Raw commits not folded in: a table whose version 0 was never folded is behind by
/// every commit, including that first one.
fn lag(folded: Option<u64>, current: Option<u64>) -> u64 {
    match (folded, current) {
        (_, None) => 0,
        (None, Some(c)) => c + 1,
        (Some(f), Some(c)) => c.saturating_sub(f),
    }
}

/// A table for people: one line per mart, then its raw tables that are behind.
pub fn render(statuses: &[MartStatus]) -> String {
    let mut out = format!("{:<22} {:>8} {:>12}\n", "mart", "version", "lag_commits");
    for s in statuses {
        let version = s.version.map_or("-".to_string(), |v| v.to_string());
        out.push_str(&format!("{:<22} {:>8} {:>12}\n", s.mart, version, s.lag_versions));
        for r in s.raw.iter().filter(|r| r.lag_versions > 0) {
            let folded = r.folded.map_or("-".to_string(), |v| v.to_string());
            let current = r.current.map_or("-".to_string(), |v| v.to_string());
            out.push_str(&format!("  {:<32} folded {folded:>6} of {current:>6}\n", r.table));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn lag_counts_commits_not_folded_in() {
        assert_eq!(super::lag(None, None), 0);
        assert_eq!(super::lag(None, Some(0)), 1);
        assert_eq!(super::lag(None, Some(4)), 5);
        assert_eq!(super::lag(Some(4), Some(4)), 0);
        assert_eq!(super::lag(Some(2), Some(4)), 2);
        // A table recreated behind what the mart folded is not negative lag.
        assert_eq!(super::lag(Some(7), Some(4)), 0);
    }
}
