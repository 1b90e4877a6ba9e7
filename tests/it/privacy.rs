//! Consent governs use, not only collection: through the simulator's APIs, the real
//! connectors, the collector, ingest, the marts and the recommender on the real broker and
//! HDFS, a customer's withdrawal takes the social and register attributes out of their
//! portrait and the reasons they gave out of their next list; consenting again brings the
//! social ones back from the next VK pass, not from the profile read before.

use crate::common;
use crate::common::lab::Lab;
use crate::simulate::{connect_once, land_world, landed};
use serde_json::{Value as Json, json};
use std::time::Duration;

async fn portrait(lab: &Lab, customer: &str) -> Json {
    let marts = hoffrec::recommend::data::Marts::open(&lab.lake_url()).await.unwrap();
    let rows: Vec<Json> = marts
        .rows(&format!(
            "SELECT * FROM mart.customer_portrait WHERE customer_id = '{customer}'"
        ))
        .await
        .unwrap();
    rows.into_iter().next().expect("a portrait row")
}

/// The customer's lists on the recommendation topic, oldest first, as JSON.
fn lists(lab: &Lab, customer: &str) -> Vec<Json> {
    let recs = lab.topic_of(hoffrec::catalog::Role::Recommendations);
    let schemas = lab.schemas();
    lab.read_topic(&recs)
        .into_iter()
        .map(|(payload, _)| Json::try_from(schemas.decode(&payload, "recommendation").unwrap()).unwrap())
        .filter(|l| l["customer_id"] == customer)
        .collect()
}

fn reasons(list: &Json) -> Vec<String> {
    list["items"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|i| i["reasons"].as_array().unwrap().iter())
        .map(|r| r.as_str().unwrap().to_string())
        .collect()
}

/// Posts consent decisions to the collector, as the site's account page does.
async fn post_consents(collector: &str, events: &[Json]) {
    let answer = reqwest::Client::new()
        .post(format!("http://{collector}/v1/events"))
        .header("content-type", "application/json")
        .body(json!({ "events": events }).to_string())
        .send()
        .await
        .unwrap();
    let status = answer.status();
    let body: Json = serde_json::from_str(&answer.text().await.unwrap()).unwrap();
    assert!(
        status.is_success() && body["rejected"].as_array().is_some_and(|r| r.is_empty()),
        "{status} {body}"
    );
}

fn consent(customer: &str, purpose: &str, action: &str, networks: &[String]) -> Json {
    json!({"type": "consent", "event_id": common::unique("consent"), "event_time": chrono::Utc::now().timestamp_millis(),
        "customer_id": customer, "purpose": purpose, "action": action, "networks": networks, "channel": "site"})
}

async fn consents_landed(lab: &Lab, topic: &str, n: i64) {
    common::poll_until(&format!("{n} consents landed"), Duration::from_secs(120), || async {
        landed(lab, topic).await.filter(|got| *got >= n)
    })
    .await;
}

fn fold(lab: &Lab, sql: &str) {
    let (ok, _, err) = lab.command_with_env(&["mart", "run", "--once"], &[("HOFFREC__MART__SQL_DIR", sql)]);
    assert!(ok, "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_withdrawal_takes_social_and_register_data_out_of_portrait_and_list() {
    use hoffrec::simulate::world;
    const SEED: u64 = 11;
    const CUSTOMERS: usize = 40;
    let _services = common::needs!(Kafka, Hdfs);
    let lab = Lab::new(1).await;
    let sql_dir = lab.add_unique_raw_topics().await;
    let sql = sql_dir.to_str().unwrap();
    let topic = |suffix: &str| format!("raw.{}.{suffix}", lab.raw.split('.').nth(1).unwrap());
    let w = world::generate(SEED, CUSTOMERS);
    // New owners with a linked VK account: both kinds of data say something about them.
    let owners: Vec<&world::Customer> = w
        .customers
        .iter()
        .filter(|c| c.vk_id.is_some() && c.truth.new_homeowner && c.truth.housing_market != "unknown")
        .collect();
    assert!(!owners.is_empty(), "seed {SEED} draws new owners with a VK account");
    let crate::simulate::Landed {
        mut collector,
        collector_addr,
        mut simulator,
        base,
        mut ingest,
    } = land_world(&lab, SEED, &w, "privacy").await;
    let consents = w.customers.iter().filter(|c| c.vk_id.is_some()).count() as i64 + w.register.len() as i64;
    let consent_topic = topic("site.consent");
    fold(&lab, sql);
    let mut recommend = lab.hoffrec(&["recommend"], &[("HOFFREC__RECOMMEND__BATCH_MS", "200")]);
    // The one whose first list cites her new home.
    let deadline = std::time::Instant::now() + Duration::from_secs(240);
    let (who, first) = loop {
        let firsts: Vec<Option<Json>> = owners.iter().map(|c| lists(&lab, &c.id).pop()).collect();
        if firsts.iter().all(Option::is_some) {
            let cited = owners
                .iter()
                .zip(firsts.into_iter().flatten())
                .find(|(_, l)| reasons(l).iter().any(|r| r == "new_homeowner"));
            break cited
                .map(|(c, l)| (*c, l))
                .expect("a new owner's list cites new_homeowner");
        }
        if std::time::Instant::now() > deadline {
            let marts = hoffrec::recommend::data::Marts::open(&lab.lake_url()).await.unwrap();
            let ids: Vec<Json> = marts
                .rows("SELECT customer_id FROM mart.customer_portrait")
                .await
                .unwrap();
            panic!(
                "no list yet for {:?}; portraits of {ids:?} in {}; recommend log:\n{}",
                owners
                    .iter()
                    .zip(&firsts)
                    .filter(|(_, l)| l.is_none())
                    .map(|(c, _)| &c.id)
                    .collect::<Vec<_>>(),
                lab.lake_url().url(""),
                common::lab::tail(&recommend.log)
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let vk = vec![format!("vk:{}", who.vk_id.unwrap())];
    let before = portrait(&lab, &who.id).await;
    assert_ne!(before["sex"], "unknown", "{before:#}");
    assert!(before["social_interests"].is_string(), "{before:#}");
    assert_eq!(before["housing_market"], who.truth.housing_market, "{before:#}");
    assert_eq!(before["new_homeowner"], true, "{before:#}");
    assert_eq!(before["consents"], "real_estate_profile,social_profile", "{before:#}");

    // She withdraws both consents on the site.
    post_consents(
        &collector_addr,
        &[
            consent(&who.id, "social_profile", "withdrawn", &vk),
            consent(&who.id, "real_estate_profile", "withdrawn", &[]),
        ],
    )
    .await;
    consents_landed(&lab, &consent_topic, consents + 2).await;
    fold(&lab, sql);
    let after = portrait(&lab, &who.id).await;
    for (column, want) in [
        ("sex", json!("unknown")),
        ("age_band", json!("unknown")),
        ("social_interests", Json::Null),
        ("housing_market", json!("unknown")),
        ("new_homeowner", json!(false)),
        ("has_sauna", json!(false)),
        ("object_type", Json::Null),
        ("cadastral_value_kopecks", Json::Null),
        ("consents", json!("")),
    ] {
        assert_eq!(after[column], want, "{column} after the withdrawal: {after:#}");
    }
    assert_eq!(after["housing_market_because"], "no register record", "{after:#}");
    // Everything else about her stays: her orders and visits are not under these purposes.
    assert_eq!(after["orders"], before["orders"], "{after:#}");
    let republished = common::poll_until("her list republished", Duration::from_secs(120), || async {
        lists(&lab, &who.id).pop().filter(|l| l["list_id"] != first["list_id"])
    })
    .await;
    let why = reasons(&republished);
    assert!(!why.iter().any(|r| r == "new_homeowner"), "{republished:#}");

    // She consents to her VK profile again: the next VK pass reads it anew, and only that
    // brings her social attributes back. The register record was read before: it stays out.
    post_consents(&collector_addr, &[consent(&who.id, "social_profile", "given", &vk)]).await;
    consents_landed(&lab, &consent_topic, consents + 3).await;
    // The profile read before the withdrawal is still in the lake: it does not come back.
    fold(&lab, sql);
    let consented = portrait(&lab, &who.id).await;
    assert_eq!(consented["consents"], "social_profile", "{consented:#}");
    assert_eq!(consented["sex"], "unknown", "{consented:#}");
    assert_eq!(consented["social_interests"], Json::Null, "{consented:#}");
    let profiles = landed(&lab, &topic("vk.profile")).await.unwrap();
    let (ok, _, err) = connect_once(&lab, &base, &[&topic("vk.profile")]);
    assert!(ok, "{err}");
    common::poll_until("the new VK pass landed", Duration::from_secs(120), || async {
        landed(&lab, &topic("vk.profile")).await.filter(|n| *n > profiles)
    })
    .await;
    fold(&lab, sql);
    let again = portrait(&lab, &who.id).await;
    assert_eq!(again["sex"], before["sex"], "{again:#}");
    assert_eq!(again["age_band"], before["age_band"], "{again:#}");
    assert_eq!(again["social_interests"], before["social_interests"], "{again:#}");
    assert_eq!(again["consents"], "social_profile", "{again:#}");
    assert_eq!(again["housing_market"], "unknown", "{again:#}");

    assert!(recommend.stop(), "{}", common::lab::tail(&recommend.log));
    assert!(ingest.stop(), "{}", common::lab::tail(&ingest.log));
    assert!(simulator.stop());
    assert!(collector.stop());
}
