//! Which marts a fold may run side by side. The files' order is the order of their
//! dependencies, but most marts read only raw rows and a few earlier marts: the session
//! mart and the customer-product mart, for one, both read only the clickstream, and a
//! fresh list waits for the longest chain of marts up to the portrait, not for their sum.
//!
//! A mart waits for every earlier mart it reads (as `mart.<name>` or `prev_mart.<name>`,
//! directly or through views) and for every earlier mart that reads it, so each still sees
//! exactly what it would in file order.

use super::files::{Kind, MartFile};
use std::collections::BTreeSet;

/// What a file reads, directly or through the views it names.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Reads {
    /// Marts, as `mart.<name>` or `prev_mart.<name>`.
    pub marts: BTreeSet<String>,
    /// Raw tables whose new rows it reads, as `new_raw.<name>`: a fold finds what landed
    /// since the mart's last fold only in these, and a mart none of them moved for (nor an
    /// earlier mart it reads) has nothing to fold.
    pub new_raw: BTreeSet<String>,
}

/// What each file reads, in file order.
pub fn reads(files: &[MartFile]) -> Vec<Reads> {
    let mut reads: Vec<Reads> = Vec::with_capacity(files.len());
    for (i, file) in files.iter().enumerate() {
        let text = match &file.kind {
            Kind::View { query } => query.clone(),
            Kind::Mart { changed, rows, .. } => format!("{}\n{rows}", changed.as_deref().unwrap_or_default()),
        };
        let (mut read, words) = references(&text);
        // A view's reads count wherever the view is named.
        for (j, earlier) in files[..i].iter().enumerate() {
            if matches!(earlier.kind, Kind::View { .. }) && words.contains(&earlier.name) {
                read.marts.extend(reads[j].marts.iter().cloned());
                read.new_raw.extend(reads[j].new_raw.iter().cloned());
            }
        }
        reads.push(read);
    }
    reads
}

/// For each file, the indices of the earlier marts it must wait for (empty for views,
/// which are planned inside each mart's session).
pub fn waits_for(files: &[MartFile]) -> Vec<Vec<usize>> {
    let reads = reads(files);
    (0..files.len())
        .map(|j| {
            if !files[j].is_mart() {
                return Vec::new();
            }
            (0..j)
                .filter(|&i| files[i].is_mart())
                .filter(|&i| reads[j].marts.contains(&files[i].name) || reads[i].marts.contains(&files[j].name))
                .collect()
        })
        .collect()
}

/// What a query names (`mart.x`, `prev_mart.x`, `new_raw.x`), and every bare word in it.
fn references(sql: &str) -> (Reads, BTreeSet<String>) {
    let (mut reads, mut words) = (Reads::default(), BTreeSet::new());
    for token in sql.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '.')) {
        let lower = token.to_ascii_lowercase();
        match lower.split_once('.') {
            Some(("mart" | "prev_mart", name)) if !name.is_empty() => {
                reads.marts.insert(name.to_string());
            }
            Some(("new_raw", name)) if !name.is_empty() => {
                reads.new_raw.insert(name.to_string());
            }
            Some(_) => {}
            None if !lower.is_empty() => {
                words.insert(lower);
            }
            None => {}
        }
    }
    (reads, words)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn files() -> Vec<MartFile> {
        crate::mart::files::load(Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/mart_sql"))).unwrap()
    }

    fn index(files: &[MartFile], name: &str) -> usize {
        files.iter().position(|f| f.name == name).unwrap()
    }

    #[test]
    fn the_clickstream_marts_run_side_by_side_and_the_portrait_waits_for_both() {
        let files = files();
        let waits = waits_for(&files);
        let (session, product, category, portrait) = (
            index(&files, "session"),
            index(&files, "customer_product"),
            index(&files, "customer_category"),
            index(&files, "customer_portrait"),
        );
        assert!(!waits[product].contains(&session), "{:?}", waits[product]);
        // customer_category reads visits through the customer_event view.
        assert!(waits[category].contains(&session), "{:?}", waits[category]);
        assert!(waits[category].contains(&product), "{:?}", waits[category]);
        assert!(waits[portrait].contains(&category), "{:?}", waits[portrait]);
        // Views wait for nothing: they are planned inside the marts' sessions.
        assert!(waits[index(&files, "customer_event")].is_empty());
    }

    #[test]
    fn a_mart_that_reads_a_later_one_is_waited_for() {
        let text = |sql: &str| Kind::Mart {
            key: vec!["k".into()],
            replace: None,
            changed: None,
            rows: sql.into(),
            combine: vec![("c".into(), "source.c".into())],
            inputs: vec![],
        };
        let file = |name: &str, kind| MartFile {
            path: format!("{name}.sql").into(),
            name: name.into(),
            kind,
        };
        let files = vec![
            file("a", text("SELECT k FROM new_raw.x JOIN mart.c USING (k)")),
            file(
                "v",
                Kind::View {
                    query: "SELECT k FROM mart.a".into(),
                },
            ),
            file("b", text("SELECT k FROM v")),
            file("c", text("SELECT k FROM new_raw.y")),
            file("d", text("SELECT k FROM prev_mart.c")),
        ];
        assert_eq!(waits_for(&files), vec![vec![], vec![], vec![0], vec![0], vec![3]]);
    }

    #[test]
    fn a_mart_reads_the_new_rows_its_views_read() {
        let files = files();
        let reads = reads(&files);
        let set = |names: &[&str]| names.iter().map(|n| n.to_string()).collect::<BTreeSet<_>>();
        // Orders only: the clickstream moving leaves it where it is.
        assert_eq!(reads[index(&files, "order_state")].new_raw, set(&["store_order"]));
        // Through changed_customer, every table a customer's event lands in.
        let category = &reads[index(&files, "customer_category")].new_raw;
        assert!(category.contains("site_product_view") && category.contains("store_catalogue"));
        assert!(category.contains("vk_profile"), "{category:?}");
    }
}
