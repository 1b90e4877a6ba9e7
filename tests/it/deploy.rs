//! `docker/`: no Docker engine runs here, so these tests check what can drift without one:
//! every hoffrec service in the compose file runs a command the binary accepts, with an
//! environment its configuration accepts (unknown keys are rejected), scrapes only
//! services that exist, and the image carries the directories the binary loads at start.
//! The compose file is read with PyYAML (anchors and merge keys resolved) into JSON.

use clap::Parser;
use hoffrec::cli::Cli;
use hoffrec::config::{Config, Overrides};
use serde_json::Value;
use std::path::Path;
use std::process::Command;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn compose() -> Value {
    let script = "import json, sys, yaml; json.dump(yaml.safe_load(open(sys.argv[1])), sys.stdout)";
    let file = Path::new(ROOT).join("docker/compose.yaml");
    let out = Command::new("python3")
        .args(["-c", script])
        .arg(&file)
        .output()
        .expect("python3 runs (tests/setup.sh installs it with PyYAML)");
    assert!(
        out.status.success(),
        "compose.yaml does not parse: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("PyYAML printed JSON")
}

/// The services built from this repository's image, with their definitions.
fn hoffrec_services(compose: &Value) -> Vec<(String, Value)> {
    let services = compose["services"].as_object().expect("compose has services");
    services
        .iter()
        .filter(|(_, s)| s["image"] == "hoffrec:latest")
        .map(|(n, s)| (n.clone(), s.clone()))
        .collect()
}

fn environment(service: &Value) -> Vec<(String, String)> {
    match &service["environment"] {
        Value::Object(map) => map
            .iter()
            .map(|(k, v)| {
                (
                    k.clone(),
                    v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string()),
                )
            })
            .collect(),
        Value::Null => Vec::new(),
        other => panic!("environment should be a map, got {other}"),
    }
}

fn var<'a>(env: &'a [(String, String)], key: &str) -> Option<&'a str> {
    env.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

#[test]
fn every_stage_runs_a_command_the_binary_accepts_with_a_valid_configuration() {
    let compose = compose();
    let services = hoffrec_services(&compose);
    let names: Vec<&str> = services.iter().map(|(n, _)| n.as_str()).collect();
    for stage in [
        "topics",
        "collect",
        "connect",
        "ingest",
        "mart",
        "recommend",
        "train",
        "refresh",
        "serve",
        "dashboard",
    ] {
        assert!(
            names.contains(&stage),
            "compose has no `{stage}` service built from the image"
        );
    }
    let mut problems = Vec::new();
    for (name, service) in &services {
        let args: Vec<String> = service["command"]
            .as_array()
            .unwrap_or_else(|| panic!("{name}: command should be a list"))
            .iter()
            .map(|a| a.as_str().unwrap_or_default().to_string())
            .collect();
        if let Err(e) = Cli::try_parse_from(std::iter::once("hoffrec".to_string()).chain(args.iter().cloned())) {
            problems.push(format!("{name}: `hoffrec {}` is refused: {e}", args.join(" ")));
        }
        let env = environment(service);
        if let Err(e) = Config::load_with_env(None, &Overrides::default(), env.clone()) {
            problems.push(format!("{name}: its environment is refused: {e}"));
        }
        let listen = var(&env, "HOFFREC__HTTP__LISTEN");
        if listen.is_none_or(|l| l.starts_with("127.")) {
            problems.push(format!(
                "{name}: /metrics must listen beyond the container (HOFFREC__HTTP__LISTEN is {listen:?})"
            ));
        }
    }
    assert!(
        problems.is_empty(),
        "compose.yaml drifted from the binary:\n{}",
        problems.join("\n")
    );
}

#[test]
fn the_scaled_stages_are_replicated_and_the_dashboard_scrapes_real_services() {
    let compose = compose();
    let services = compose["services"].as_object().expect("services");
    for scaled in ["ingest", "recommend", "serve"] {
        let replicas = services[scaled]["deploy"]["replicas"].as_u64().unwrap_or(1);
        assert!(
            replicas >= 2,
            "{scaled} scales out (a consumer group, or replicas of the read path) and should start replicated"
        );
        assert!(
            services[scaled].get("ports").is_none() && services[scaled].get("container_name").is_none(),
            "{scaled}: a fixed host port or container name would stop --scale"
        );
    }
    let env = environment(&services["dashboard"]);
    let urls = var(&env, "HOFFREC__HTTP__SCRAPE_URLS").expect("the dashboard scrapes the stages");
    for url in urls.split(',') {
        let host = url
            .trim_start_matches("http://")
            .split([':', '/'])
            .next()
            .unwrap_or_default();
        assert!(
            services.contains_key(host),
            "the dashboard scrapes {url}, but there is no service {host}"
        );
    }
    for needed in ["kafka", "namenode", "datanode"] {
        assert!(services.contains_key(needed), "compose has no {needed}");
    }
    let lake = var(&env, "HOFFREC__LAKE__URL");
    assert!(
        lake.is_some_and(|l| l.starts_with("hdfs://namenode:")),
        "the stages' lake should be on the compose HDFS, got {lake:?}"
    );
}

#[test]
fn the_image_carries_what_the_binary_loads_and_builds_from_files_that_exist() {
    let dockerfile = std::fs::read_to_string(Path::new(ROOT).join("docker/Dockerfile")).expect("Dockerfile");
    let stages: Vec<&str> = dockerfile.split("\nFROM ").collect();
    assert!(stages.len() >= 2, "the Dockerfile should be multi-stage");
    let runtime = stages.last().copied().unwrap_or_default();
    let copies = |text: &str| -> Vec<(String, String)> {
        text.lines()
            .filter_map(|l| l.strip_prefix("COPY "))
            .filter(|l| !l.starts_with("--from"))
            .flat_map(|l| {
                let parts: Vec<&str> = l.split_whitespace().collect();
                match parts.split_last() {
                    Some((dest, sources)) => sources.iter().map(|s| (s.to_string(), dest.to_string())).collect(),
                    None => Vec::new(),
                }
            })
            .collect()
    };
    for (source, _) in copies(&dockerfile) {
        assert!(
            Path::new(ROOT).join(&source).exists(),
            "the Dockerfile copies {source}, which is not in the repository"
        );
    }
    let workdir = runtime
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("WORKDIR "))
        .expect("the runtime stage sets a WORKDIR, where the relative default paths resolve");
    assert!(!workdir.is_empty());
    let carried: Vec<String> = copies(runtime)
        .into_iter()
        .map(|(_, dest)| dest.trim_start_matches("./").trim_end_matches('/').to_string())
        .collect();
    let defaults = Config::default();
    for dir in [
        &defaults.catalog.topics_dir,
        &defaults.catalog.schemas_dir,
        &defaults.mart.sql_dir,
    ] {
        let dir = dir.to_string_lossy().to_string();
        assert!(
            carried.contains(&dir),
            "the binary loads {dir}/ by default, but the image does not carry it"
        );
    }
}
