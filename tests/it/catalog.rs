//! `hoffrec topics validate`: the repository's catalog passes; a broken one fails naming
//! every problem at once.

use crate::common;

use hoffrec::catalog::{Catalog, CatalogError, Role};
use std::path::Path;
use std::process::Command;

fn hoffrec(args: &[&str], topics: &Path, schemas: &Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_hoffrec"))
        .args(args)
        .arg("--topics-dir")
        .arg(topics)
        .arg("--schemas-dir")
        .arg(schemas)
        .env_remove("HOFFREC__CATALOG__TOPICS_DIR")
        .output()
        .expect("hoffrec runs")
}

#[test]
fn repository_catalog_is_valid_and_complete() {
    let repo = common::repo();
    let catalog = Catalog::load(&repo.join("topics"), &repo.join("avro")).unwrap_or_else(|e| panic!("{e}"));
    for role in Role::PIPELINE {
        assert!(catalog.topic_for(role).is_some(), "a topic for {}", role.as_str());
    }
    let recs = catalog.topic_for(Role::Recommendations).unwrap();
    assert_eq!(recs.name, "recs.customer");
    assert_eq!(recs.kafka_configs()["cleanup.policy"], "compact");
    assert_eq!(
        catalog.topic_for(Role::ConnectorOffsets).unwrap().kafka_configs()["cleanup.policy"],
        "compact"
    );
    // Every source the business named feeds at least one raw topic.
    for source in [
        "raw.site.",
        "raw.store.order",
        "raw.store.catalogue",
        "raw.partner.",
        "raw.vk.",
        "raw.instagram.",
        "raw.register.",
        "raw.district.",
    ] {
        assert!(
            catalog.raw_topics().any(|t| t.name.starts_with(source)),
            "a raw topic for {source}"
        );
    }

    let out = hoffrec(&["topics", "validate"], &repo.join("topics"), &repo.join("avro"));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("catalog ok"));
}

#[test]
fn broken_catalog_lists_every_problem() {
    let repo = common::repo();
    let dir = tempfile::tempdir().unwrap();
    let (topics, schemas) = (dir.path().join("topics"), dir.path().join("avro"));
    common::copy_dir(&repo.join("topics"), &topics);
    common::copy_dir(&repo.join("avro"), &schemas);

    let edit = |file: &str, from: &str, to: &str| {
        let path = topics.join(file);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains(from), "{file} contains {from}");
        std::fs::write(&path, text.replace(from, to)).unwrap();
    };
    // 1. A schema that does not exist.
    edit(
        "raw.site.search.toml",
        "value_schema = \"search\"",
        "value_schema = \"site_search\"",
    );
    // 2. A duplicate topic under another file name.
    std::fs::copy(
        topics.join("raw.site.page_view.toml"),
        topics.join("page_views_again.toml"),
    )
    .unwrap();
    // 3. A key field the schema does not have, 4. a key field that is not a string.
    edit(
        "raw.store.order.toml",
        "key = [\"customer_id\"]",
        "key = [\"client_id\"]",
    );
    edit(
        "raw.site.cart_add.toml",
        "key = [\"customer_id\"]",
        "key = [\"quantity\"]",
    );
    // 5. A schema that does not parse.
    std::fs::write(
        schemas.join("search_v2.avsc"),
        "{\"type\": \"record\", \"name\": \"S\"}",
    )
    .unwrap();
    // 6. An unknown key in a topic file.
    edit(
        "raw.site.rec_click.toml",
        "partitions = 6",
        "partitions = 6\nreplicas = 3",
    );

    // 7. A commit interval a transaction cannot hold.
    edit(
        "raw.partner.stroydom.order.toml",
        "interval_ms = 300000",
        "interval_ms = 300000\ncommit_interval_ms = 600000",
    );
    // 8. A per-customer source with no consent purpose to read customers by, 9. a
    // purpose that is no plain name.
    edit("raw.vk.profile.toml", "consent_purpose = \"social_profile\"\n", "");
    edit(
        "raw.register.real_estate.toml",
        "consent_purpose = \"real_estate_profile\"",
        "consent_purpose = \"real estate'\"",
    );

    let err = Catalog::load(&topics, &schemas).unwrap_err();
    let CatalogError::Invalid(problems) = &err else {
        panic!("expected the list of problems, got: {err}");
    };
    let text = err.to_string();
    let expect = [
        ("raw.site.search.toml", "value_schema 'site_search' does not exist"),
        (
            "raw.site.page_view.toml",
            "duplicate topic name 'raw.site.page_view' (also declared in",
        ),
        ("raw.store.order.toml", "key field 'client_id' does not exist"),
        ("raw.site.cart_add.toml", "key field 'quantity' is not a string"),
        ("search_v2.avsc", "not a valid Avro schema"),
        ("raw.site.rec_click.toml", "unknown field `replicas`"),
        (
            "raw.partner.stroydom.order.toml",
            "commit_interval_ms (600000) must be at most half of transaction_timeout_ms (900000)",
        ),
        (
            "raw.vk.profile.toml",
            "a per_customer source reads customers by their consent: set consent_purpose",
        ),
        (
            "raw.register.real_estate.toml",
            "consent_purpose 'real estate'' must be lowercase letters, digits and '_'",
        ),
    ];
    for (file, message) in expect {
        assert!(
            problems
                .iter()
                .any(|p| p.file.ends_with(file) && p.message.contains(message)),
            "expected '{message}' for {file} in:\n{text}"
        );
    }
    assert!(
        text.contains("page_views_again.toml"),
        "the duplicate names both files:\n{text}"
    );
    assert_eq!(problems.len(), expect.len(), "exactly these problems:\n{text}");

    let out = hoffrec(&["topics", "validate"], &topics, &schemas);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(&format!("{} problem(s)", expect.len())), "{stderr}");
    for (file, message) in expect {
        assert!(
            stderr.contains(file) && stderr.contains(message),
            "CLI names {file}: {message}\n{stderr}"
        );
    }
}

#[test]
fn pipeline_roles_must_be_played_once() {
    let repo = common::repo();
    let dir = tempfile::tempdir().unwrap();
    let topics = dir.path().join("topics");
    common::copy_dir(&repo.join("topics"), &topics);
    std::fs::remove_file(topics.join("lake.commits.toml")).unwrap();
    let text = std::fs::read_to_string(topics.join("mart.changes.toml")).unwrap();
    std::fs::write(
        topics.join("mart.changes2.toml"),
        text.replace("name = \"mart.changes\"", "name = \"mart.changes.v2\""),
    )
    .unwrap();
    let err = Catalog::load(&topics, &repo.join("avro")).unwrap_err().to_string();
    assert!(err.contains("no topic has role lake_commits"), "{err}");
    assert!(
        err.contains("role mart_changes is declared by several topics: mart.changes, mart.changes.v2"),
        "{err}"
    );
}

#[test]
fn history_that_the_current_schema_cannot_read_is_a_problem() {
    let repo = common::repo();
    let dir = tempfile::tempdir().unwrap();
    let schemas = dir.path().join("avro");
    common::copy_dir(&repo.join("avro"), &schemas);
    // An old version whose `dwell_ms` was a string cannot be read as today's long.
    let path = schemas.join("history/product_view.v1.avsc");
    let text = std::fs::read_to_string(&path).unwrap();
    let broken = text.replacen(
        "\"name\": \"dwell_ms\",\n      \"type\": \"long\"",
        "\"name\": \"dwell_ms\",\n      \"type\": \"string\"",
        1,
    );
    assert_ne!(text, broken);
    std::fs::write(&path, broken).unwrap();
    let err = Catalog::load(&repo.join("topics"), &schemas).unwrap_err().to_string();
    assert!(
        err.contains("product_view.v1.avsc: records written with it cannot be read"),
        "{err}"
    );
}
