//! The ordered SQL files in `mart_sql/`. Each file is a view or a mart:
//!
//! ```sql
//! -- view: order_line          (one SELECT, registered under that name)
//!
//! -- mart: customer_portrait   (a Delta table under <lake>/mart/)
//! -- key: customer_id          (unique per row; the MERGE condition)
//! -- replace: customer_id      (optional: rows of a changed key the query no longer
//! --                            produces are deleted)
//! SELECT ... ;                 (1: the keys to recompute, from new_raw.* rows)
//! SELECT ... ;                 (2: their rows, may use the table `changed`)
//!
//! -- mart: session             (a mart kept up by adding what new rows say)
//! -- key: customer_id, session_id
//! -- combine: dwell_ms = target.dwell_ms + source.dwell_ms
//! SELECT ... ;                 (one statement: rows from new_raw.* alone; a row whose key
//!                               is in the mart is combined with it column by column,
//!                               columns without a `combine:` take the new value)
//! ```
//!
//! `prev_mart.<name>` in a mart's SQL is that earlier mart as this one last saw it, so a
//! mart can work out what changed in another since its previous fold.
//!
//! Statements end with `;` at the end of a line. The SQL is Spark SQL's dialect restricted
//! to what DataFusion also accepts (mart_sql/README.md); the one rewrite is `explode(` to
//! DataFusion's `unnest(`.

use std::path::{Path, PathBuf};

#[derive(Debug, Clone, PartialEq)]
pub enum Kind {
    View {
        query: String,
    },
    Mart {
        key: Vec<String>,
        replace: Option<String>,
        /// The keys to recompute; `None` for a combining mart.
        changed: Option<String>,
        rows: String,
        /// Column -> how a stored value and a new one combine (`target.c`, `source.c`).
        combine: Vec<(String, String)>,
        /// Marts read as `prev_mart.<name>`.
        inputs: Vec<String>,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct MartFile {
    pub path: PathBuf,
    pub name: String,
    pub kind: Kind,
}

impl MartFile {
    pub fn is_mart(&self) -> bool {
        matches!(self.kind, Kind::Mart { .. })
    }
}

#[derive(Debug, thiserror::Error)]
#[error("{}", problems.join("\n"))]
pub struct FilesError {
    pub problems: Vec<String>,
}

/// Loads every `*.sql` in `dir`, in file-name order; reports every problem at once.
pub fn load(dir: &Path) -> Result<Vec<MartFile>, FilesError> {
    let mut paths: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(entries) => entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "sql"))
            .collect(),
        Err(e) => {
            return Err(FilesError {
                problems: vec![format!("{}: {e}", dir.display())],
            });
        }
    };
    paths.sort();
    let mut files = Vec::new();
    let mut problems = Vec::new();
    for path in paths {
        match std::fs::read_to_string(&path)
            .map_err(|e| e.to_string())
            .and_then(|text| parse(&path, &text))
        {
            Ok(f) => {
                if files.iter().any(|g: &MartFile| g.name == f.name) {
                    problems.push(format!("{}: `{}` is defined twice", path.display(), f.name));
                }
                files.push(f);
            }
            Err(e) => problems.push(format!("{}: {e}", path.display())),
        }
    }
    if files.is_empty() && problems.is_empty() {
        problems.push(format!("{}: no .sql files", dir.display()));
    }
    if problems.is_empty() {
        Ok(files)
    } else {
        Err(FilesError { problems })
    }
}

fn header<'a>(text: &'a str, name: &'a str) -> Option<&'a str> {
    headers(text, name).next()
}

fn headers<'a>(text: &'a str, name: &'a str) -> impl Iterator<Item = &'a str> {
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("--"))
        .filter_map(move |l| l.trim().strip_prefix(name))
        .filter_map(|l| l.strip_prefix(':'))
        .map(str::trim)
}

/// The names after `prev_mart.` in the SQL, in order of first use.
fn prev_marts(sql: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for (i, _) in sql.match_indices("prev_mart.") {
        let name: String = sql[i + "prev_mart.".len()..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        if !name.is_empty() && !out.contains(&name) {
            out.push(name);
        }
    }
    out
}

/// Statements, split at a `;` that ends a line, with comment-only lines dropped.
fn statements(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        if line.trim_start().starts_with("--") {
            continue;
        }
        let code = line.trim_end();
        if let Some(body) = code.strip_suffix(';') {
            current.push_str(body);
            out.push(std::mem::take(&mut current));
        } else {
            current.push_str(code);
            current.push('\n');
        }
    }
    if !current.trim().is_empty() {
        out.push(current);
    }
    out.into_iter()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

fn parse(path: &Path, text: &str) -> Result<MartFile, String> {
    let list = |s: &str| -> Vec<String> {
        s.split(',')
            .map(|c| c.trim().to_string())
            .filter(|c| !c.is_empty())
            .collect()
    };
    let stmts = statements(text);
    let valid = |n: &str| {
        !n.is_empty()
            && n.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
    };
    let (name, kind) = match (header(text, "view"), header(text, "mart")) {
        (Some(name), None) => {
            let [query] = stmts.as_slice() else {
                return Err(format!("a view has one statement, found {}", stmts.len()));
            };
            (name, Kind::View { query: query.clone() })
        }
        (None, Some(name)) => {
            let key = header(text, "key").map(list).unwrap_or_default();
            if key.is_empty() {
                return Err("a mart needs `-- key: col[, col]`".into());
            }
            let replace = header(text, "replace").map(str::to_string);
            if let Some(r) = &replace
                && !key.contains(r)
            {
                return Err(format!("`replace: {r}` must be one of the key columns"));
            }
            let mut combine = Vec::new();
            for line in headers(text, "combine") {
                let Some((column, expr)) = line.split_once('=') else {
                    return Err(format!("`combine: {line}` should read `combine: column = expression`"));
                };
                let column = column.trim().to_string();
                if key.contains(&column) {
                    return Err(format!("`combine: {column}`: key columns are not combined"));
                }
                combine.push((column, expr.trim().to_string()));
            }
            let (changed, rows) = match (combine.is_empty(), stmts.as_slice()) {
                (true, [changed, rows]) => (Some(changed.clone()), rows.clone()),
                (false, [rows]) => (None, rows.clone()),
                (true, _) => {
                    return Err(format!(
                        "a mart has two statements (changed keys; rows), found {}",
                        stmts.len()
                    ));
                }
                (false, _) => {
                    return Err(format!(
                        "a mart with `combine:` has one statement (its new rows), found {}",
                        stmts.len()
                    ));
                }
            };
            if replace.is_some() && changed.is_none() {
                return Err("`replace:` needs the changed-keys statement; a combining mart has none".into());
            }
            let inputs = prev_marts(&rows);
            (
                name,
                Kind::Mart {
                    key,
                    replace,
                    changed,
                    rows,
                    combine,
                    inputs,
                },
            )
        }
        _ => return Err("starts with exactly one of `-- view: name` or `-- mart: name`".into()),
    };
    if !valid(name) {
        return Err(format!("`{name}`: names are lower-case letters, digits and `_`"));
    }
    Ok(MartFile {
        path: path.to_path_buf(),
        name: name.to_string(),
        kind,
    })
}

/// The SQL as DataFusion should run it.
pub fn for_datafusion(sql: &str) -> String {
    sql.replace("explode(", "unnest(")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mart_file_has_a_key_and_two_statements() {
        let text =
            "-- mart: m\n-- key: a, b\n-- why it exists\nSELECT a, b\nFROM x;\n-- rows\nSELECT a, b, 1 AS c FROM x;\n";
        let f = parse(Path::new("010_m.sql"), text).unwrap();
        assert_eq!(f.name, "m");
        let Kind::Mart { key, changed, rows, .. } = f.kind else {
            panic!()
        };
        assert_eq!(key, ["a", "b"]);
        assert_eq!(changed.as_deref(), Some("SELECT a, b\nFROM x"));
        assert_eq!(rows, "SELECT a, b, 1 AS c FROM x");
    }

    #[test]
    fn problems_are_named() {
        let e = parse(Path::new("x.sql"), "-- mart: m\nSELECT 1;").unwrap_err();
        assert!(e.contains("key"), "{e}");
        let e = parse(Path::new("x.sql"), "-- mart: m\n-- key: a\nSELECT 1;").unwrap_err();
        assert!(e.contains("two statements"), "{e}");
        let e = parse(Path::new("x.sql"), "SELECT 1;").unwrap_err();
        assert!(e.contains("exactly one"), "{e}");
        let e = parse(
            Path::new("x.sql"),
            "-- mart: m\n-- key: a\n-- replace: b\nSELECT 1;\nSELECT 2;",
        )
        .unwrap_err();
        assert!(e.contains("replace"), "{e}");
    }

    #[test]
    fn a_combining_mart_has_one_statement_and_names_its_inputs() {
        let text = "-- mart: m\n-- key: a\n-- combine: n = target.n + source.n\nSELECT a, count(*) AS n FROM new_raw.x JOIN prev_mart.y ON true JOIN prev_mart.y ON true;\n";
        let f = parse(Path::new("m.sql"), text).unwrap();
        let Kind::Mart {
            changed,
            combine,
            inputs,
            ..
        } = f.kind
        else {
            panic!()
        };
        assert!(changed.is_none());
        assert_eq!(combine, [("n".to_string(), "target.n + source.n".to_string())]);
        assert_eq!(inputs, ["y"]);
        let e = parse(
            Path::new("m.sql"),
            "-- mart: m\n-- key: a\n-- combine: a = 1\nSELECT 1;",
        )
        .unwrap_err();
        assert!(e.contains("key columns"), "{e}");
        let e = parse(
            Path::new("m.sql"),
            "-- mart: m\n-- key: a\n-- combine: n = 1\nSELECT 1;\nSELECT 2;",
        )
        .unwrap_err();
        assert!(e.contains("one statement"), "{e}");
    }

    #[test]
    fn the_repository_files_load() {
        let files = load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("mart_sql")).unwrap();
        for m in ["customer_portrait", "product_features", "interactions"] {
            assert!(files.iter().any(|f| f.name == m && f.is_mart()), "{m} missing");
        }
    }
}
