//! A seeded, deterministic home-goods world: a catalogue with realistic categories and
//! price spreads, customers with hidden personas and traits, their orders, register
//! records, consents and VK profiles. The same seed gives the same world, byte for byte;
//! times are offsets from a fixed start, never the wall clock.
//!
//! Every customer carries `truth`: what the marts should infer about them from the data
//! the sources serve. The persona matrix test compares the portraits with it.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;

/// 2026-11-01T00:00:00Z: the world's day zero.
pub const START_MS: i64 = 1_793_491_200_000;
pub const DAY_MS: i64 = 86_400_000;
/// Customers' last visits fall in the two weeks from START_MS; the site shows lists after.
pub const SITE_OPENS_MS: i64 = START_MS + 14 * DAY_MS;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Persona {
    /// The worked customer: new owner of an expensive secondary-market house, renovating.
    RenovatingOwner,
    /// New owner of a flat in a new build in a mid-price district, renovating from bare walls.
    NewBuildOwner,
    /// Renter refreshing decor.
    RenterDecor,
    YoungFamily,
    /// Owners long settled in: nothing bought for months.
    SettledFamily,
    Gardener,
    /// Buys renovation materials in bulk for clients' flats.
    Contractor,
}

pub const PERSONAS: [Persona; 7] = [
    Persona::RenovatingOwner,
    Persona::NewBuildOwner,
    Persona::RenterDecor,
    Persona::YoungFamily,
    Persona::SettledFamily,
    Persona::Gardener,
    Persona::Contractor,
];

/// What the marts should infer about a customer, in the portrait's own values.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Truth {
    pub housing_market: &'static str,
    pub new_homeowner: bool,
    pub wealth_tier: &'static str,
    pub undecided_shopper: bool,
    pub brand_loyal: bool,
    pub renovation_burst_flag: bool,
    pub renovation_scope: &'static str,
    pub lifecycle_stage: &'static str,
    /// The consent purposes the customer gave (the simulator posts them), comma-separated.
    pub consents: &'static str,
    pub bulk_buyer: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct Category {
    pub id: String,
    pub name: String,
    pub parent: Option<String>,
    /// Typical price, roubles.
    pub typical_rub: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Product {
    pub id: String,
    pub name: String,
    pub category_id: String,
    pub vendor: String,
    pub price_rub: f64,
    pub available: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct Customer {
    pub id: String,
    pub persona: Persona,
    pub region: String,
    pub city: String,
    pub district: String,
    /// VK account linked with consent, if any.
    pub vk_id: Option<u64>,
    pub sex: u8,
    pub birth: String,
    /// The brand a loyal customer looks for; they arrive typed-in, not from a search engine.
    pub favourite_vendor: Option<String>,
    /// Start of the customer's newest visit; their history is dated back from it.
    pub last_visit_ms: i64,
    pub truth: Truth,
}

#[derive(Debug, Clone, Serialize)]
pub struct OrderLine {
    pub product_id: String,
    pub count: u32,
    pub price_rub: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Order {
    pub id: u64,
    pub customer_id: String,
    pub status: &'static str,
    pub updated_ms: i64,
    pub lines: Vec<OrderLine>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RegisterRecord {
    pub id: u64,
    pub customer_id: String,
    pub cadastral_number: String,
    pub object_type: &'static str,
    pub area_sq_m: f64,
    pub right_registration_ms: i64,
    pub cadastral_value_rub: f64,
    pub year_built: u32,
    pub objects_on_plot: Vec<&'static str>,
}

#[derive(Debug, Clone, Serialize)]
pub struct World {
    pub seed: u64,
    pub categories: Vec<Category>,
    pub products: Vec<Product>,
    pub customers: Vec<Customer>,
    pub orders: Vec<Order>,
    pub register: Vec<RegisterRecord>,
}

/// (id, name, parent, typical price in roubles)
const TREE: &[(&str, &str, Option<&str>, f64)] = &[
    ("1", "Мебель", None, 0.0),
    ("11", "Диваны", Some("1"), 45_000.0),
    ("12", "Кухни", Some("1"), 180_000.0),
    ("13", "Шкафы", Some("1"), 35_000.0),
    ("2", "Ванная", None, 0.0),
    ("21", "Мебель для ванной", Some("2"), 25_000.0),
    ("3", "Текстиль", None, 0.0),
    ("31", "Шторы", Some("3"), 3_500.0),
    ("32", "Ковры", Some("3"), 9_000.0),
    ("4", "Обои", None, 2_500.0),
    ("5", "Освещение", None, 6_000.0),
    ("6", "Декор", None, 1_500.0),
    ("7", "Сад", None, 0.0),
    ("71", "Качели", Some("7"), 28_000.0),
    ("72", "Аксессуары для качелей", Some("7"), 2_500.0),
    ("73", "Растения и цветы", Some("7"), 900.0),
    ("8", "Ремонт", None, 0.0),
    ("81", "Звукоизоляция", Some("8"), 4_000.0),
    ("82", "Выравнивание стен", Some("8"), 1_200.0),
    ("83", "Краски", Some("8"), 1_800.0),
    ("84", "Плитка", Some("8"), 2_500.0),
];

pub const VENDORS: &[&str] = &["Hoff", "Askona", "IKEA Family", "Dreamline", "Lumion", "Garden Way"];
const PRODUCTS_PER_CATEGORY: usize = 12;

/// Leaf categories each persona wants (clicks and buys), most wanted first.
pub fn wants(p: Persona) -> &'static [&'static str] {
    match p {
        // Renovation and cosiness; a secondary home needs no soundproofing or levelling.
        Persona::RenovatingOwner => &["4", "32", "21", "31", "83", "84", "5"],
        Persona::NewBuildOwner => &["81", "82", "83", "84", "4", "21", "5"],
        Persona::RenterDecor => &["6", "31", "32", "5", "73"],
        Persona::YoungFamily => &["13", "11", "21", "31", "6"],
        Persona::SettledFamily => &["6", "73", "32", "5"],
        Persona::Gardener => &["71", "72", "73", "6"],
        Persona::Contractor => &["82", "81", "84", "83"],
    }
}

/// The department an undecided customer's long visit goes through.
pub fn undecided_department(p: Persona) -> &'static [&'static str] {
    match p {
        Persona::RenovatingOwner | Persona::Gardener => &["71", "72"],
        Persona::NewBuildOwner | Persona::Contractor => &["81", "82", "83", "84"],
        Persona::RenterDecor | Persona::SettledFamily => &["31", "32"],
        Persona::YoungFamily => &["11", "12", "13"],
    }
}

/// (region, city, district, price per m² of the new-build segment in roubles, tier)
pub const DISTRICTS: &[(&str, &str, &str, i64, &str)] = &[
    ("Москва", "Москва", "Хамовники", 1_200_000, "high"),
    ("Москва", "Москва", "Марьино", 250_000, "mid"),
    ("Московская область", "Красногорск", "Опалиха", 250_000, "mid"),
    ("Московская область", "Одинцово", "Жуковка", 1_200_000, "high"),
    ("Санкт-Петербург", "Санкт-Петербург", "Петроградский", 450_000, "high"),
    ("Московская область", "Ногинск", "Ногинск", 120_000, "low"),
];

fn year_of(ms: i64) -> u32 {
    use chrono::Datelike;
    chrono::DateTime::from_timestamp_millis(ms).map_or(2026, |t| t.year() as u32)
}

fn catalogue(rng: &mut StdRng) -> (Vec<Category>, Vec<Product>) {
    let categories: Vec<Category> = TREE
        .iter()
        .map(|(id, name, parent, typical)| Category {
            id: (*id).into(),
            name: (*name).into(),
            parent: parent.map(str::to_string),
            typical_rub: *typical,
        })
        .collect();
    let mut products = Vec::new();
    for (k, c) in categories.iter().filter(|c| c.typical_rub > 0.0).enumerate() {
        for i in 0..PRODUCTS_PER_CATEGORY {
            // Prices spread about 5x around the typical one: budget to premium.
            let factor = 0.4 + 1.6 * (i as f64 / 11.0).powf(1.5) + rng.random_range(0.0..0.2);
            products.push(Product {
                id: format!("{}{:03}", c.id, i),
                name: format!("{} {}", c.name, ["Лофт", "Сканди", "Классика", "Модерн"][i % 4]),
                category_id: c.id.clone(),
                // Every brand has two products in every category, at different prices.
                vendor: VENDORS[(i + k) % VENDORS.len()].into(),
                price_rub: (c.typical_rub * factor).round(),
                available: rng.random_bool(0.9),
            });
        }
    }
    (categories, products)
}

/// Who a customer is before their history is drawn.
struct Draft {
    persona: Persona,
    district: usize,
    consent: bool,
    undecided: bool,
    loyal: bool,
    burst: bool,
    /// Renters who re-paper their walls.
    wallpaper: bool,
    /// (object type, new build) of the home the register knows, if any.
    home: Option<(&'static str, bool)>,
}

fn draft(rng: &mut StdRng) -> Draft {
    let persona = PERSONAS[rng.random_range(0..PERSONAS.len())];
    let pick = |rng: &mut StdRng, of: &[usize]| of[rng.random_range(0..of.len())];
    let district = match persona {
        Persona::RenovatingOwner => pick(rng, &[0, 3]),
        Persona::NewBuildOwner => pick(rng, &[1, 2]),
        _ => rng.random_range(0..DISTRICTS.len()),
    };
    let home = match persona {
        Persona::RenovatingOwner => Some(("Жилой дом", false)),
        Persona::NewBuildOwner => Some(("Квартира", true)),
        Persona::Gardener => Some(("Жилой дом", rng.random_bool(0.3))),
        Persona::YoungFamily if rng.random_bool(0.5) => Some(("Квартира", rng.random_bool(0.5))),
        Persona::SettledFamily => Some((
            if rng.random_bool(0.5) {
                "Квартира"
            } else {
                "Жилой дом"
            },
            rng.random_bool(0.4),
        )),
        _ => None,
    };
    let undecided_share = match persona {
        Persona::RenovatingOwner | Persona::YoungFamily => 0.6,
        _ => 0.25,
    };
    Draft {
        persona,
        district,
        consent: rng.random_bool(0.45),
        undecided: rng.random_bool(undecided_share),
        loyal: rng.random_bool(if persona == Persona::Contractor { 0.6 } else { 0.3 }),
        burst: matches!(persona, Persona::RenovatingOwner | Persona::NewBuildOwner) && rng.random_bool(0.6),
        wallpaper: persona == Persona::RenterDecor && rng.random_bool(0.35),
        home,
    }
}

fn truth(d: &Draft) -> Truth {
    use Persona::*;
    let (lifecycle_stage, renovation_scope) = match d.persona {
        RenovatingOwner | NewBuildOwner | Contractor => ("renovating", "full"),
        YoungFamily => ("furnishing", "none"),
        RenterDecor => ("decorating", if d.wallpaper { "cosmetic" } else { "none" }),
        Gardener => ("decorating", "none"),
        SettledFamily => ("settled", "none"),
    };
    Truth {
        housing_market: match d.home {
            Some((_, true)) => "new_build",
            Some((_, false)) => "secondary",
            None => "unknown",
        },
        new_homeowner: matches!(d.persona, RenovatingOwner | NewBuildOwner),
        wealth_tier: DISTRICTS[d.district].4,
        undecided_shopper: d.undecided,
        brand_loyal: d.loyal,
        renovation_burst_flag: d.burst,
        renovation_scope,
        lifecycle_stage,
        consents: match (d.home.is_some(), d.consent) {
            (true, true) => "real_estate_profile,social_profile",
            (true, false) => "real_estate_profile",
            (false, true) => "social_profile",
            (false, false) => "",
        },
        bulk_buyer: d.persona == Contractor,
    }
}

/// (days before the last visit, leaf categories, lines, units per line) of each order.
fn order_plan(d: &Draft, rng: &mut StdRng) -> Vec<(i64, &'static [&'static str], u32, u32)> {
    use Persona::*;
    let mut plan = Vec::new();
    match d.persona {
        RenovatingOwner | NewBuildOwner => {
            let materials: &'static [&'static str] = if d.persona == NewBuildOwner {
                &["81", "82", "83", "84"]
            } else {
                &["83", "84"]
            };
            // Materials bought in the weeks after the move; a burst doubles up lately.
            for _ in 0..2 {
                plan.push((rng.random_range(20..70), materials, 1, 1));
            }
            if d.burst {
                for _ in 0..rng.random_range(2..=3) {
                    plan.push((rng.random_range(1..12), materials, 2, 2));
                }
            }
            plan.push((rng.random_range(20..60), &["4"][..], 1, 4));
            if d.persona == RenovatingOwner {
                // The worked example's swing, ordered at the end of the newest visit.
                plan.push((0, &["71"][..], 1, 1));
            }
        }
        Contractor => {
            // Steady bulk orders every two weeks: no burst.
            let first = rng.random_range(2..6);
            for k in 0..6 {
                plan.push((first + 15 * k, wants(Contractor), 2, 20));
            }
        }
        RenterDecor => {
            for _ in 0..rng.random_range(1..=3) {
                plan.push((rng.random_range(3..80), wants(RenterDecor), rng.random_range(1..=2), 1));
            }
            if d.wallpaper {
                plan.push((rng.random_range(3..60), &["4"][..], 1, 3));
            }
        }
        YoungFamily => {
            for _ in 0..rng.random_range(1..=3) {
                plan.push((
                    rng.random_range(3..80),
                    &["13", "11", "21"][..],
                    rng.random_range(1..=2),
                    1,
                ));
            }
        }
        SettledFamily => {
            for _ in 0..rng.random_range(1..=3) {
                plan.push((
                    rng.random_range(100..400),
                    wants(SettledFamily),
                    rng.random_range(1..=2),
                    1,
                ));
            }
        }
        Gardener => {
            for _ in 0..rng.random_range(1..=3) {
                plan.push((rng.random_range(3..80), wants(Gardener), rng.random_range(1..=2), 1));
            }
        }
    }
    plan
}

/// A product of one of `cats`, from the dear half of the category when `dear`.
fn pick<'a>(products: &'a [Product], dear: bool, rng: &mut StdRng, cats: &[&str]) -> &'a Product {
    let cat = cats[rng.random_range(0..cats.len())];
    let options: Vec<&Product> = products.iter().filter(|p| p.category_id == cat).collect();
    let from = if dear { options.len() / 2 } else { 0 };
    options[rng.random_range(from..options.len())]
}

pub fn generate(seed: u64, customers: usize) -> World {
    let mut rng = StdRng::seed_from_u64(seed);
    let (categories, products) = catalogue(&mut rng);
    let mut people = Vec::with_capacity(customers);
    let mut orders = Vec::new();
    let mut register = Vec::new();
    for n in 0..customers {
        let d = draft(&mut rng);
        let (region, city, district, price_per_m2, _) = DISTRICTS[d.district];
        let id = format!("c-{n:06}");
        let last_visit_ms = START_MS + rng.random_range(0..14) * DAY_MS + rng.random_range(8 * 60..21 * 60) * 60_000;
        let favourite_vendor = d.loyal.then(|| VENDORS[rng.random_range(0..VENDORS.len())].to_string());
        // Owners of dear homes buy from the dear end of a category.
        let dear = DISTRICTS[d.district].4 == "high" && d.home.is_some();
        // A contractor restocks the same two products every time.
        let kit: Vec<&Product> = if d.persona == Persona::Contractor {
            (0..2)
                .map(|_| pick(&products, dear, &mut rng, wants(Persona::Contractor)))
                .collect()
        } else {
            Vec::new()
        };
        for (days_ago, cats, lines, units) in order_plan(&d, &mut rng) {
            let lines = (0..lines as usize)
                .map(|k| {
                    let p = kit
                        .get(k)
                        .copied()
                        .unwrap_or_else(|| pick(&products, dear, &mut rng, cats));
                    OrderLine {
                        product_id: p.id.clone(),
                        count: units,
                        price_rub: p.price_rub,
                    }
                })
                .collect();
            let at = if days_ago == 0 {
                // After the newest visit (the undecided one lasts about an hour).
                last_visit_ms + 70 * 60_000
            } else {
                last_visit_ms - days_ago * DAY_MS - rng.random_range(0..DAY_MS / 2)
            };
            orders.push(Order {
                id: 500_000 + orders.len() as u64,
                customer_id: id.clone(),
                status: ["PAID", "DELIVERED"][rng.random_range(0..2)],
                updated_ms: at,
                lines,
            });
        }
        // Some change their minds: a cancelled order counts for nothing.
        if rng.random_bool(0.15) {
            let p = &products[rng.random_range(0..products.len())];
            orders.push(Order {
                id: 500_000 + orders.len() as u64,
                customer_id: id.clone(),
                status: "CANCELLED",
                updated_ms: last_visit_ms - rng.random_range(1..30) * DAY_MS,
                lines: vec![OrderLine {
                    product_id: p.id.clone(),
                    count: 1,
                    price_rub: p.price_rub,
                }],
            });
        }
        if let Some((object_type, new_build)) = d.home {
            let house = object_type == "Жилой дом";
            let registered = last_visit_ms
                - if matches!(d.persona, Persona::RenovatingOwner | Persona::NewBuildOwner) {
                    rng.random_range(25..120)
                } else {
                    rng.random_range(400..4000)
                } * DAY_MS;
            let year = year_of(registered);
            let area = if house {
                rng.random_range(120.0..400.0)
            } else {
                rng.random_range(35.0..90.0)
            };
            let mut plot = Vec::new();
            if house {
                plot.push("Жилой дом");
                if rng.random_bool(0.7) {
                    plot.push("Баня");
                }
                if rng.random_bool(0.4) {
                    plot.push("Бассейн");
                }
                plot.push("Гараж");
            }
            register.push(RegisterRecord {
                id: 900_000 + register.len() as u64,
                customer_id: id.clone(),
                cadastral_number: format!(
                    "50:20:{:07}:{}",
                    rng.random_range(0..9_999_999),
                    rng.random_range(1..999)
                ),
                object_type,
                area_sq_m: area,
                right_registration_ms: registered,
                // The cadastral value lags the market: 60-90 % of it.
                cadastral_value_rub: (price_per_m2 as f64 * area * rng.random_range(0.6..0.9)).round(),
                // A new build is registered within a year of completion; a resale years later.
                year_built: if new_build {
                    year - rng.random_range(0..=1)
                } else {
                    year - rng.random_range(5..45)
                },
                objects_on_plot: plot,
            });
        }
        people.push(Customer {
            id,
            persona: d.persona,
            region: region.into(),
            city: city.into(),
            district: district.into(),
            vk_id: d.consent.then(|| 10_000 + n as u64),
            sex: rng.random_range(1..=2),
            birth: format!(
                "{}.{}.{}",
                rng.random_range(1..=28),
                rng.random_range(1..=12),
                rng.random_range(1960..2004)
            ),
            favourite_vendor,
            last_visit_ms,
            truth: truth(&d),
        });
    }
    orders.sort_by_key(|o| o.updated_ms);
    World {
        seed,
        categories,
        products,
        customers: people,
        orders,
        register,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_world() {
        let a = serde_json::to_string(&generate(7, 200)).unwrap();
        let b = serde_json::to_string(&generate(7, 200)).unwrap();
        assert_eq!(a, b);
        assert_ne!(a, serde_json::to_string(&generate(8, 200)).unwrap());
    }

    #[test]
    fn owners_of_dear_homes_buy_dear_goods() {
        let w = generate(1, 400);
        let owners: Vec<&Customer> = w
            .customers
            .iter()
            .filter(|c| c.persona == Persona::RenovatingOwner)
            .collect();
        assert!(!owners.is_empty());
        let owner_orders = w.orders.iter().filter(|o| owners.iter().any(|c| c.id == o.customer_id));
        for line in owner_orders.filter(|o| o.status != "CANCELLED").flat_map(|o| &o.lines) {
            let p = w.products.iter().find(|p| p.id == line.product_id).unwrap();
            let cat = w.categories.iter().find(|c| c.id == p.category_id).unwrap();
            assert!(p.price_rub >= cat.typical_rub * 0.6, "{} at {}", p.name, p.price_rub);
        }
    }

    #[test]
    fn every_persona_and_both_markets_appear() {
        let w = generate(1, 300);
        for p in PERSONAS {
            assert!(w.customers.iter().any(|c| c.persona == p), "{p:?}");
        }
        for market in ["new_build", "secondary", "unknown"] {
            assert!(w.customers.iter().any(|c| c.truth.housing_market == market), "{market}");
        }
        // A register record says what the truth says: built within a year of the
        // registration for new builds, years before for resales.
        for r in &w.register {
            let c = w.customers.iter().find(|c| c.id == r.customer_id).unwrap();
            let gap = year_of(r.right_registration_ms) - r.year_built;
            assert_eq!(gap <= 1, c.truth.housing_market == "new_build", "{r:?}");
        }
    }
}
