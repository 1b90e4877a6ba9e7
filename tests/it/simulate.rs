//! The simulator: the same seed gives the same world, and the real connectors run against
//! it on the real broker (all its orders arrive; VK profiles only for the customers whose
//! consents it posted to the collector).

use crate::common;

use crate::common::lab::{Lab, Worker};
use serde_json::Value as Json;
use std::time::Duration;

fn dump(lab: &Lab, seed: &str, name: &str) -> String {
    let path = lab.dir.path().join(name);
    let (ok, _, err) = lab.run(&[
        "simulate",
        "--seed",
        seed,
        "--customers",
        "100",
        "--dump",
        path.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    std::fs::read_to_string(path).unwrap()
}

/// `hoffrec simulate` serving the world's APIs, after posting its consents and `sessions`
/// visits per customer to the collector at `collector`; returned once it listens, with the
/// base URL of its APIs.
pub(crate) async fn simulator(
    lab: &Lab,
    seed: u64,
    customers: usize,
    sessions: usize,
    collector: &str,
) -> (Worker, String) {
    let addr = common::free_addr();
    let worker = lab.hoffrec(
        &[
            "simulate",
            "--seed",
            &seed.to_string(),
            "--customers",
            &customers.to_string(),
            "--listen",
            &addr,
            "--collector",
            &format!("http://{collector}"),
            "--sessions",
            &sessions.to_string(),
        ],
        &[],
    );
    // It listens once everything is posted.
    common::poll_until("the simulator to listen", Duration::from_secs(120), || async {
        std::net::TcpStream::connect(&addr).ok().map(|_| ())
    })
    .await;
    (worker, format!("http://{addr}"))
}

/// One `hoffrec connect --once` pass of these sources over the simulator's APIs.
pub(crate) fn connect_once(lab: &Lab, base: &str, sources: &[&str]) -> (bool, String, String) {
    let env = [
        ("HOFFREC_ORDERS_API", base),
        ("HOFFREC_ORDERS_TOKEN", "sim"),
        ("HOFFREC_VK_API", base),
        ("HOFFREC_VK_TOKEN", "sim"),
        ("HOFFREC_REGISTER_API", base),
        ("HOFFREC_REGISTER_TOKEN", "sim"),
    ];
    let mut args = vec!["connect", "--once"];
    for source in sources {
        args.extend(["--source", source]);
    }
    lab.command_with_env(&args, &env)
}

#[tokio::test(flavor = "multi_thread")]
async fn the_same_seed_gives_the_same_world_and_the_connectors_read_it() {
    let _services = common::needs!(Kafka, Hdfs);
    let lab = Lab::new(1).await;
    let a = dump(&lab, "42", "a.json");
    assert_eq!(a, dump(&lab, "42", "b.json"), "seed 42 twice");
    assert_ne!(a, dump(&lab, "43", "c.json"));
    let world: Json = serde_json::from_str(&a).unwrap();
    let orders = world["orders"].as_array().unwrap().len();
    let consenting = world["customers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| !c["vk_id"].is_null())
        .count();
    assert!(
        orders > 100 && consenting > 20,
        "{orders} orders, {consenting} consenting"
    );

    let order_topic = lab.add_topic("raw.store.order.toml", "order");
    let register_topic = lab.add_topic("raw.register.real_estate.toml", "register");
    let catalogue_topic = lab.add_topic("raw.store.catalogue.toml", "catalogue");
    let vk_topic = lab.add_topic("raw.vk.profile.toml", "vk_profile");
    lab.add_topic("raw.site.consent.toml", "consent");
    for (file, event) in [
        ("raw.site.session_start.toml", "session_start"),
        ("raw.site.page_view.toml", "page_view"),
        ("raw.site.search.toml", "search"),
        ("raw.site.cart_add.toml", "cart_add"),
    ] {
        lab.add_topic(file, event);
    }
    lab.apply_catalog().await;
    let (mut collector, collector_addr) = lab.collect().await;
    let (mut simulator, base) = simulator(&lab, 42, 100, 1, &collector_addr).await;
    // Every customer's session reached the site topics through the collector (the
    // simulator stops with an error on any refusal); the lab's product views are one of them.
    let viewed: i64 = lab.end_offsets(&lab.raw, 1).iter().sum();
    assert!(viewed >= 200, "{viewed} product views for 100 customers");
    let (ok, out, err) = connect_once(&lab, &base, &[&order_topic, &vk_topic, &register_topic]);
    assert!(ok, "{err}");
    let passes: Vec<Json> = serde_json::from_str::<Json>(&out).unwrap()["passes"]
        .as_array()
        .unwrap()
        .clone();
    let of = |topic: &str| passes.iter().find(|p| p["source"] == topic).unwrap().clone();
    assert_eq!(of(&order_topic)["records"], orders as u64, "{passes:?}");
    assert_eq!(of(&order_topic)["dead_letters"], 0, "{passes:?}");
    assert_eq!(of(&vk_topic)["customers"], consenting as u64, "{passes:?}");
    assert_eq!(of(&vk_topic)["records"], consenting as u64, "{passes:?}");
    let register = world["register"].as_array().unwrap().len() as u64;
    assert_eq!(of(&register_topic)["records"], register, "{passes:?}");
    assert_eq!(of(&register_topic)["dead_letters"], 0, "{passes:?}");

    // The simulated YML feed imports through the catalogue's mapping without a reject.
    let feed = reqwest::get(format!("{base}/feed.yml"))
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let path = lab.dir.path().join("feed.yml");
    std::fs::write(&path, &feed).unwrap();
    let (ok, out, err) = lab.run(&["import", "--source", &catalogue_topic, path.to_str().unwrap()]);
    assert!(ok, "{err}");
    let summary: Json = serde_json::from_str(&out).unwrap();
    let products = world["products"].as_array().unwrap().len() as u64;
    assert_eq!(
        (summary["records"].as_u64(), summary["dead_letters"].as_u64()),
        (Some(products), Some(0))
    );
    assert!(simulator.stop());
    assert!(collector.stop());
}

#[tokio::test(flavor = "multi_thread")]
async fn the_simulated_site_shows_lists_and_customers_react_by_persona() {
    use apache_avro::types::Value;
    use hoffrec::simulate::world::{self, Persona};
    let _services = common::needs!(Kafka, Hdfs);
    let lab = Lab::new(1).await;
    let impressions = lab.add_topic("raw.site.rec_impression.toml", "rec_impression");
    let clicks = lab.add_topic("raw.site.rec_click.toml", "rec_click");
    lab.add_topic("raw.site.cart_add.toml", "cart_add");
    // A click opens the product's card: the site logs a view.
    lab.add_topic("raw.site.product_view.toml", "product_view");
    lab.add_topic("raw.site.consent.toml", "consent");
    lab.apply_catalog().await;
    let (mut collector, addr) = lab.collect().await;
    let collector_url = format!("http://{addr}");
    let mut site = lab.hoffrec(
        &[
            "simulate",
            "--seed",
            "5",
            "--customers",
            "50",
            "--collector",
            &collector_url,
            "--react",
        ],
        &[],
    );
    // Twenty lists of garden goods for a gardener and twenty of renovation materials.
    let w = world::generate(5, 50);
    let gardener = w.customers.iter().find(|c| c.persona == Persona::Gardener).unwrap();
    let of = |category: &str| -> Vec<String> {
        w.products
            .iter()
            .filter(|p| p.category_id == category)
            .take(10)
            .map(|p| p.id.clone())
            .collect()
    };
    let recs = lab.topic_of(hoffrec::catalog::Role::Recommendations);
    let schemas = lab.schemas();
    let producer = lab.producer();
    for n in 0..40 {
        let (list_id, products) = if n % 2 == 0 {
            (format!("garden-{n}"), of("71"))
        } else {
            (format!("renovation-{n}"), of("81"))
        };
        let items = products
            .iter()
            .enumerate()
            .map(|(rank, p)| {
                Value::Record(vec![
                    ("product_id".into(), Value::String(p.clone())),
                    ("rank".into(), Value::Int(rank as i32)),
                    ("score".into(), Value::Double(1.0)),
                    ("reasons".into(), Value::Array(vec![])),
                ])
            })
            .collect();
        let record = Value::Record(vec![
            ("customer_id".into(), Value::String(gardener.id.clone())),
            ("list_id".into(), Value::String(list_id)),
            ("generated_at".into(), Value::TimestampMillis(0)),
            ("valid_until".into(), Value::TimestampMillis(0)),
            ("model_version".into(), Value::String("test".into())),
            ("items".into(), Value::Array(items)),
        ]);
        let payload = schemas.encode("recommendation", record).unwrap();
        producer
            .send(
                rdkafka::producer::FutureRecord::to(&recs)
                    .key(gardener.id.as_str())
                    .payload(&payload),
                Duration::from_secs(30),
            )
            .await
            .unwrap();
    }
    let shown = common::poll_until("400 impressions", Duration::from_secs(120), || {
        let n = lab.read_topic(&impressions).len();
        async move { (n >= 400).then_some(n) }
    })
    .await;
    assert_eq!(shown, 400, "one impression per shown product, no more");
    let list_of = |payload: &[u8]| match common::lab::field(&schemas.decode(payload, "rec_click").unwrap(), "list_id") {
        Value::String(s) => s.clone(),
        other => panic!("{other:?}"),
    };
    let clicked: Vec<String> = lab.read_topic(&clicks).iter().map(|(p, _)| list_of(p)).collect();
    let garden = clicked.iter().filter(|l| l.starts_with("garden")).count();
    let renovation = clicked.len() - garden;
    assert!(
        garden > 3 * renovation.max(1),
        "gardener clicked {garden} garden vs {renovation} renovation"
    );
    assert!(site.stop(), "{}", common::lab::tail(&site.log));
    assert!(collector.stop());
}

/// Rows of a lab raw table (`None` before its first commit).
pub(crate) async fn landed(lab: &Lab, topic: &str) -> Option<i64> {
    let batches = lab.query_topic(topic, "SELECT count(*) AS n FROM t").await?;
    let b = batches.first()?;
    Some(
        b.column(0)
            .as_any()
            .downcast_ref::<arrow::array::Int64Array>()?
            .value(0),
    )
}

/// Rows each of the lab's raw tables holds once ingest has landed everything the
/// simulator's world sent (through `connect_once` of orders, VK and the register,
/// `import_files`, and the collector).
pub(crate) fn expected_rows(lab: &Lab, w: &hoffrec::simulate::world::World, sessions: usize) -> Vec<(String, i64)> {
    let topic = |suffix: &str| format!("raw.{}.{suffix}", lab.raw.split('.').nth(1).unwrap());
    let site = hoffrec::simulate::sessions::generate(w, sessions);
    let of_type = |t: &str| site.iter().filter(|e| e["type"] == t).count() as i64;
    let consenting = w.customers.iter().filter(|c| c.vk_id.is_some()).count() as i64;
    let districts = w
        .customers
        .iter()
        .map(|c| &c.district)
        .collect::<std::collections::BTreeSet<_>>()
        .len() as i64;
    vec![
        (topic("store.order"), w.orders.len() as i64),
        (topic("register.real_estate"), w.register.len() as i64),
        (topic("vk.profile"), consenting),
        // Social consents, and the register's for every customer it has a record of.
        (topic("site.consent"), consenting + w.register.len() as i64),
        (topic("store.catalogue"), w.products.len() as i64),
        (topic("district.price_index"), 2 * districts),
        (topic("site.session_start"), of_type("site_session_start")),
        (topic("site.search"), of_type("search")),
        (topic("site.page_view"), of_type("page_view")),
        (topic("site.cart_add"), of_type("cart_add")),
        (lab.raw.clone(), of_type("product_view")),
    ]
}

/// `hoffrec import` of the simulator's catalogue feed and district prices into the lab's
/// own topics (`Lab::add_unique_raw_topics`).
pub(crate) async fn import_files(lab: &Lab, base: &str) {
    let topic = |suffix: &str| format!("raw.{}.{suffix}", lab.raw.split('.').nth(1).unwrap());
    for (file, source) in [("feed.yml", "store.catalogue"), ("prices.csv", "district.price_index")] {
        let body = reqwest::get(format!("{base}/{file}"))
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        let path = lab.dir.path().join(file);
        std::fs::write(&path, &body).unwrap();
        let (ok, _, err) = lab.run(&["import", "--source", &topic(source), path.to_str().unwrap()]);
        assert!(ok, "{err}");
    }
}

/// The whole chain on the real broker and HDFS, as a deployment runs it: the simulator
/// serves the sources' APIs and posts the site's events to the collector; `connect`,
/// `import`, `ingest`, `mart run` and `recommend` do the rest. For every customer the
/// portrait must match the simulator's hidden truth, and the published lists must obey the
/// rules (a secondary-market owner never gets soundproofing or wall levelling).
#[tokio::test(flavor = "multi_thread")]
async fn the_persona_matrix_holds_through_the_connectors() {
    use hoffrec::simulate::world::{self, Persona};
    const SEED: u64 = 11;
    const CUSTOMERS: usize = 140;
    const SESSIONS: usize = 3;
    let _services = common::needs!(Kafka, Hdfs);
    let lab = Lab::new(1).await;
    let sql_dir = lab.add_unique_raw_topics().await;
    let topic = |suffix: &str| format!("raw.{}.{suffix}", lab.raw.split('.').nth(1).unwrap());
    let w = world::generate(SEED, CUSTOMERS);

    let (mut collector, collector_addr) = lab.collect().await;
    let (mut simulator, base) = simulator(&lab, SEED, CUSTOMERS, SESSIONS, &collector_addr).await;
    let (ok, _, err) = connect_once(
        &lab,
        &base,
        &[
            &topic("store.order"),
            &topic("vk.profile"),
            &topic("register.real_estate"),
        ],
    );
    assert!(ok, "{err}");
    import_files(&lab, &base).await;
    assert!(simulator.stop());
    assert!(collector.stop());

    // Ingest lands everything the sources sent.
    let expected = expected_rows(&lab, &w, SESSIONS);
    let mut ingest = lab.ingest(&common::unique("personas"), &[]);
    for (t, n) in &expected {
        let got = common::poll_until(&format!("{n} rows in {t}"), Duration::from_secs(180), || async {
            landed(&lab, t).await.filter(|got| got >= n)
        })
        .await;
        assert_eq!(got, *n, "{t}");
    }
    assert!(ingest.stop(), "{}", common::lab::tail(&ingest.log));

    let sql = sql_dir.to_str().unwrap();
    let (ok, _, err) = lab.command_with_env(&["mart", "run", "--once"], &[("HOFFREC__MART__SQL_DIR", sql)]);
    assert!(ok, "{err}");
    let marts = hoffrec::recommend::data::Marts::open(&lab.lake_url()).await.unwrap();
    let portraits: Vec<Json> = marts.rows("SELECT * FROM mart.customer_portrait").await.unwrap();
    assert_eq!(portraits.len(), CUSTOMERS, "every customer has a portrait");

    // Attribute by attribute: inferred against true, over every customer.
    let truth: std::collections::HashMap<&str, Json> = w
        .customers
        .iter()
        .map(|c| (c.id.as_str(), serde_json::to_value(&c.truth).unwrap()))
        .collect();
    let attributes = [
        "housing_market",
        "new_homeowner",
        "wealth_tier",
        "undecided_shopper",
        "brand_loyal",
        "renovation_burst_flag",
        "renovation_scope",
        "lifecycle_stage",
        "consents",
        "bulk_buyer",
    ];
    let mut report = String::new();
    let mut failures = Vec::new();
    for a in attributes {
        let mut confusion: std::collections::BTreeMap<(String, String), usize> = Default::default();
        let mut right = 0;
        for p in &portraits {
            let id = p["customer_id"].as_str().unwrap();
            let want = truth[id][a].to_string().trim_matches('"').to_string();
            let got = p[a].to_string().trim_matches('"').to_string();
            right += usize::from(want == got);
            if want != got && failures.len() < 20 {
                failures.push(format!(
                    "{id} {a}: true {want}, inferred {got} because {}",
                    p[format!("{a}_because")]
                ));
            }
            *confusion.entry((want, got)).or_default() += 1;
        }
        let share = right as f64 / portraits.len() as f64;
        report.push_str(&format!(
            "{a}: {right}/{} right ({:.1} %)\n",
            portraits.len(),
            share * 100.0
        ));
        for ((want, got), n) in &confusion {
            report.push_str(&format!("    true {want:<10} inferred {got:<10} {n}\n"));
        }
        assert!(share >= 0.95, "{a}: {share:.3}\n{report}\n{}", failures.join("\n"));
    }
    eprintln!("persona matrix (seed {SEED}, {CUSTOMERS} customers):\n{report}");
    for persona in world::PERSONAS {
        assert!(w.customers.iter().any(|c| c.persona == persona), "no {persona:?} drawn");
    }

    // The lists the site gets obey the rules.
    let announced = lab.read_topic(&lab.topic_of(hoffrec::catalog::Role::MartChanges));
    assert!(announced.len() >= CUSTOMERS, "{} changes announced", announced.len());
    let mut recommend = lab.hoffrec(&["recommend"], &[("HOFFREC__RECOMMEND__BATCH_MS", "200")]);
    let recs = lab.topic_of(hoffrec::catalog::Role::Recommendations);
    let schemas = lab.schemas();
    let lists = common::poll_until("a list for every customer", Duration::from_secs(240), || {
        let mut latest = std::collections::HashMap::new();
        for (payload, _) in lab.read_topic(&recs) {
            let list =
                hoffrec::simulate::react::ShownList::from_avro(&schemas.decode(&payload, "recommendation").unwrap())
                    .unwrap();
            latest.insert(list.customer_id.clone(), list.products);
        }
        async move { (latest.len() >= CUSTOMERS).then_some(latest) }
    })
    .await;
    assert!(recommend.stop(), "{}", common::lab::tail(&recommend.log));
    let category = |product: &str| w.products.iter().find(|p| p.id == product).unwrap().category_id.clone();
    let mut new_build_materials = 0;
    for c in &w.customers {
        let cats: Vec<String> = lists[&c.id].iter().map(|p| category(p)).collect();
        let materials = cats.iter().filter(|k| *k == "81" || *k == "82").count();
        if c.truth.housing_market == "secondary" {
            assert_eq!(materials, 0, "{} ({:?}) got {cats:?}", c.id, c.persona);
        }
        if c.truth.housing_market == "new_build" && c.persona == Persona::NewBuildOwner {
            new_build_materials += materials;
        }
        // The other rules act on what the portrait says.
        let p = portraits.iter().find(|p| p["customer_id"] == c.id.as_str()).unwrap();
        if p["renovation_scope"] == "none" {
            assert!(!cats.iter().any(|k| k == "4"), "{} got wallpaper: {cats:?}", c.id);
        }
        if p["bulk_buyer"] == true {
            assert!(
                !cats.iter().any(|k| k == "6" || k == "73"),
                "{} got decor: {cats:?}",
                c.id
            );
        }
    }
    // The rule is the market's, not the department's: new-build owners do get them.
    assert!(
        new_build_materials > 0,
        "no new-build owner was offered soundproofing or levelling"
    );
}

/// A world landed the way production lands it: the simulator behind the sources' APIs, the
/// collector taking its site events, one pass of the order, VK and register connectors,
/// the file drops imported, and ingest running until every raw table holds what the
/// world sent. The workers keep running for the test to use and stop.
pub(crate) struct Landed {
    pub collector: Worker,
    pub collector_addr: String,
    pub simulator: Worker,
    /// The simulator's API base URL.
    pub base: String,
    pub ingest: Worker,
}

pub(crate) async fn land_world(lab: &Lab, seed: u64, w: &hoffrec::simulate::world::World, group: &str) -> Landed {
    let topic = |suffix: &str| format!("raw.{}.{suffix}", lab.raw.split('.').nth(1).unwrap());
    let (collector, collector_addr) = lab.collect().await;
    let (simulator, base) = simulator(lab, seed, w.customers.len(), 1, &collector_addr).await;
    let sources = [topic("store.order"), topic("vk.profile"), topic("register.real_estate")];
    let (ok, _, err) = connect_once(lab, &base, &sources.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(ok, "{err}");
    import_files(lab, &base).await;
    let ingest = lab.ingest(&common::unique(group), &[]);
    for (t, n) in expected_rows(lab, w, 1) {
        common::poll_until(&format!("{n} rows in {t}"), Duration::from_secs(180), || async {
            landed(lab, &t).await.filter(|got| *got >= n)
        })
        .await;
    }
    Landed {
        collector,
        collector_addr,
        simulator,
        base,
        ingest,
    }
}
