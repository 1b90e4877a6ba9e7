//! Layered configuration: defaults < file < HOFFREC__ env < flags; unknown keys and bad
//! values all reported at once; secrets masked.

use hoffrec::config::{Config, ConfigError, Overrides};
use std::process::Command;

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

fn problems(result: Result<Config, ConfigError>) -> Vec<String> {
    match result {
        Err(ConfigError::Invalid(p)) => p,
        other => panic!("expected an invalid configuration, got {other:?}"),
    }
}

#[test]
fn layers_override_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("hoffrec.toml");
    std::fs::write(&file, "[kafka]\nbrokers = \"file:1\"\nclient_id = \"from-file\"\nrequest_timeout_ms = 1000\n[lake]\nurl = \"/tmp/file-lake\"\n").unwrap();

    let only_file = Config::load_with_env(Some(&file), &Overrides::default(), env(&[])).unwrap();
    assert_eq!(only_file.kafka.brokers, "file:1");
    assert_eq!(only_file.kafka.request_timeout_ms, 1000);
    assert_eq!(only_file.log.format, "text", "untouched keys keep their defaults");

    let with_env = env(&[
        ("HOFFREC__KAFKA__BROKERS", "env:1"),
        ("HOFFREC__KAFKA__REQUEST_TIMEOUT_MS", "2500"),
        ("HOFFREC__LAKE__URL", "hdfs://127.0.0.1:9000/lake"),
        ("UNRELATED", "ignored"),
    ]);
    let config = Config::load_with_env(Some(&file), &Overrides::default(), with_env.clone()).unwrap();
    assert_eq!(config.kafka.brokers, "env:1");
    assert_eq!(
        config.kafka.request_timeout_ms, 2500,
        "env strings become numbers where numbers are expected"
    );
    assert_eq!(config.kafka.client_id, "from-file");
    assert_eq!(config.lake.url, "hdfs://127.0.0.1:9000/lake");

    let flags = Overrides {
        brokers: Some("flag:1".into()),
        ..Default::default()
    };
    let config = Config::load_with_env(Some(&file), &flags, with_env).unwrap();
    assert_eq!(config.kafka.brokers, "flag:1");
    assert_eq!(config.lake.url, "hdfs://127.0.0.1:9000/lake");
}

#[test]
fn every_problem_is_reported_at_once_with_its_layer() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.toml");
    std::fs::write(
        &file,
        "[kafka]\nbrokerz = \"x\"\nrequest_timeout_ms = \"soon\"\nreplication_factor = 0\n[nope]\na = 1\n[log]\nformat = \"xml\"\n",
    )
    .unwrap();
    let found = problems(Config::load_with_env(
        Some(&file),
        &Overrides::default(),
        env(&[("HOFFREC__LAKE__URLL", "/x"), ("HOFFREC__KAFKA__CLIENT_ID", "ok")]),
    ));
    let text = found.join("\n");
    for expected in [
        "unknown key 'kafka.brokerz' (from TOML file",
        "kafka.request_timeout_ms must be a non-negative integer, found \"soon\"",
        "unknown key 'nope' (from TOML file",
        "unknown key 'lake.urll' (from HOFFREC__ environment variables)",
        "kafka.replication_factor must be -1 (broker default) or at least 1, found 0",
        "log.format 'xml' is not one of text, json",
    ] {
        assert!(text.contains(expected), "expected '{expected}' in:\n{text}");
    }
    assert_eq!(found.len(), 6, "{text}");

    // Once the shape is right, the value checks also report together.
    std::fs::write(&file, "[kafka]\nreplication_factor = 0\nsecurity_protocol = \"carrier-pigeon\"\n[log]\nformat = \"xml\"\n[lake]\nurl = \"s3://bucket/lake\"\n").unwrap();
    let text = problems(Config::load_with_env(Some(&file), &Overrides::default(), env(&[]))).join("\n");
    for expected in [
        "kafka.replication_factor",
        "kafka.security_protocol 'carrier-pigeon'",
        "log.format 'xml'",
        "lake.url: 's3://bucket/lake'",
    ] {
        assert!(text.contains(expected), "expected '{expected}' in:\n{text}");
    }
}

#[test]
fn missing_config_file_is_an_error() {
    let err =
        Config::load_with_env(Some("/no/such/hoffrec.toml".as_ref()), &Overrides::default(), env(&[])).unwrap_err();
    assert!(err.to_string().contains("/no/such/hoffrec.toml does not exist"));
}

#[test]
fn config_show_masks_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_hoffrec"))
        .args(["config", "show", "--brokers", "10.0.0.1:9092"])
        .current_dir(dir.path())
        .env("HOFFREC__KAFKA__SASL_PASSWORD", "hunter2")
        .env("HOFFREC__KAFKA__SASL_USERNAME", "hoff")
        .env("HOFFREC__KAFKA__SECURITY_PROTOCOL", "sasl_ssl")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(!stdout.contains("hunter2"), "{stdout}");
    assert!(stdout.contains("sasl_password = \"********\""), "{stdout}");
    assert!(stdout.contains("brokers = \"10.0.0.1:9092\""), "{stdout}");
    assert!(stdout.contains("sasl_username = \"hoff\""), "{stdout}");

    let config = Config::load_with_env(
        None,
        &Overrides::default(),
        env(&[("HOFFREC__KAFKA__SASL_PASSWORD", "hunter2")]),
    )
    .unwrap();
    assert_eq!(config.kafka.sasl_password.expose(), "hunter2");
    assert!(!format!("{config:?}").contains("hunter2"));
}

#[test]
fn unknown_flag_values_fail_before_anything_runs() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_hoffrec"))
        .args(["config", "show"])
        .current_dir(dir.path())
        .env("HOFFREC__KAFKA__BROKERS", "")
        .env("HOFFREC__INGEST_TYPO__X", "1")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("unknown key 'ingest_typo'"), "{stderr}");
}

#[test]
fn ingest_settings_come_from_every_layer_and_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("hoffrec.toml");
    std::fs::write(
        &file,
        "[ingest]\nmax_batch_rows = 5000\n[ingest.maintenance]\ninterval_ms = 0\n",
    )
    .unwrap();
    let flags = Overrides {
        group: Some("landing-b".into()),
        http: Some("127.0.0.1:9464".into()),
        ..Default::default()
    };
    let config = Config::load_with_env(
        Some(&file),
        &flags,
        env(&[
            ("HOFFREC__INGEST__TOPICS", "raw.site.page_view, raw.store.order"),
            ("HOFFREC__INGEST__FLUSH_INTERVAL_MS", "250"),
        ]),
    )
    .unwrap();
    assert_eq!(config.ingest.max_batch_rows, 5000);
    assert_eq!(config.ingest.maintenance.interval_ms, 0);
    assert_eq!(config.ingest.topics, ["raw.site.page_view", "raw.store.order"]);
    assert_eq!(config.ingest.flush_interval_ms, 250);
    assert_eq!(config.ingest.group, "landing-b");
    assert_eq!(config.http.listen, "127.0.0.1:9464");

    let found = problems(Config::load_with_env(
        None,
        &Overrides {
            http: Some("nowhere".into()),
            ..Default::default()
        },
        env(&[
            ("HOFFREC__INGEST__MAX_BATCH_BYTES", "0"),
            ("HOFFREC__INGEST__FLUSH_INTERVAL_MS", "soon"),
            ("HOFFREC__INGEST__BATCH_SIZE", "3"),
        ]),
    ));
    let text = found.join("\n");
    for expected in [
        "http.listen",
        "ingest.max_batch_bytes",
        "ingest.flush_interval_ms",
        "ingest.batch_size",
    ] {
        assert!(text.contains(expected), "{expected} not reported in:\n{text}");
    }
}

#[test]
fn fractions_come_from_files_and_the_environment() {
    let c = Config::load_with_env(
        None,
        &Overrides::default(),
        env(&[("HOFFREC__RECOMMEND__TRAIN_VALIDATION_SHARE", "0.3")]),
    )
    .unwrap();
    assert_eq!(c.recommend.train_validation_share, 0.3);
    let found = problems(Config::load_with_env(
        None,
        &Overrides::default(),
        env(&[("HOFFREC__RECOMMEND__TRAIN_VALIDATION_SHARE", "a third")]),
    ));
    assert!(
        found
            .iter()
            .any(|p| p.contains("train_validation_share must be a number")),
        "{found:?}"
    );
}
