//! A seeded, deterministic home-goods world: a catalogue with realistic categories and
//! price spreads, customers with hidden personas, their orders, register records, consents
//! and VK profiles. The same seed gives the same world, byte for byte; times are offsets
//! from a fixed start, never the wall clock.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;

/// 2026-11-01T00:00:00Z: the world's day zero.
pub const START_MS: i64 = 1_793_491_200_000;
pub const DAY_MS: i64 = 86_400_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Persona {
    /// New owner of an expensive secondary-market house, renovating.
    RenovatingOwner,
    /// Renter refreshing decor.
    RenterDecor,
    YoungFamily,
    Gardener,
}

const PERSONAS: [Persona; 4] = [
    Persona::RenovatingOwner,
    Persona::RenterDecor,
    Persona::YoungFamily,
    Persona::Gardener,
];

#[derive(Debug, Clone, Serialize)]
pub struct Category {
    pub id: String,
    pub name: String,
    pub parent: Option<String>,
    /// Typical price, roubles, and the spread factor between cheapest and dearest.
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
];

const VENDORS: &[&str] = &["Hoff", "Askona", "IKEA Family", "Dreamline", "Lumion", "Garden Way"];

/// Leaf categories each persona favours, most wanted first.
pub fn wants(p: Persona) -> &'static [&'static str] {
    match p {
        Persona::RenovatingOwner => &["81", "82", "4", "11", "12", "5", "32"],
        Persona::RenterDecor => &["6", "31", "32", "5", "73"],
        Persona::YoungFamily => &["13", "11", "21", "31", "6"],
        Persona::Gardener => &["71", "72", "73", "6"],
    }
}

const DISTRICTS: &[(&str, &str, &str)] = &[
    ("Москва", "Москва", "Хамовники"),
    ("Москва", "Москва", "Марьино"),
    ("Московская область", "Красногорск", "Опалиха"),
    ("Московская область", "Одинцово", "Жуковка"),
    ("Санкт-Петербург", "Санкт-Петербург", "Петроградский"),
];

pub fn generate(seed: u64, customers: usize) -> World {
    let mut rng = StdRng::seed_from_u64(seed);
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
    for c in categories.iter().filter(|c| c.typical_rub > 0.0) {
        for i in 0..12 {
            // Prices spread about 5x around the typical one: budget to premium.
            let factor = 0.4 + 1.6 * (i as f64 / 11.0).powf(1.5) + rng.random_range(0.0..0.2);
            products.push(Product {
                id: format!("{}{:03}", c.id, i),
                name: format!("{} {}", c.name, ["Лофт", "Сканди", "Классика", "Модерн"][i % 4]),
                category_id: c.id.clone(),
                vendor: VENDORS[rng.random_range(0..VENDORS.len())].into(),
                price_rub: (c.typical_rub * factor).round(),
                available: rng.random_bool(0.9),
            });
        }
    }
    let mut people = Vec::with_capacity(customers);
    let mut orders = Vec::new();
    let mut register = Vec::new();
    for n in 0..customers {
        let persona = PERSONAS[rng.random_range(0..PERSONAS.len())];
        let (region, city, district) = if persona == Persona::RenovatingOwner {
            DISTRICTS[[0, 3][rng.random_range(0..2)]]
        } else {
            DISTRICTS[rng.random_range(0..DISTRICTS.len())]
        };
        let id = format!("c-{n:06}");
        let consent = rng.random_bool(0.4);
        people.push(Customer {
            id: id.clone(),
            persona,
            region: region.into(),
            city: city.into(),
            district: district.into(),
            vk_id: consent.then(|| 10_000 + n as u64),
            sex: rng.random_range(1..=2),
            birth: format!(
                "{}.{}.{}",
                rng.random_range(1..=28),
                rng.random_range(1..=12),
                rng.random_range(1960..2004)
            ),
        });
        let favourites = wants(persona);
        for k in 0..rng.random_range(1..=4) {
            let lines = (0..rng.random_range(1..=3))
                .map(|_| {
                    let cat = favourites[rng.random_range(0..favourites.len().min(3 + k))];
                    let options: Vec<&Product> = products.iter().filter(|p| p.category_id == cat).collect();
                    // Owners in wealthy districts buy from the dear end of a category.
                    let at = if persona == Persona::RenovatingOwner {
                        rng.random_range(options.len() / 2..options.len())
                    } else {
                        rng.random_range(0..options.len())
                    };
                    OrderLine {
                        product_id: options[at].id.clone(),
                        count: rng.random_range(1..=3),
                        price_rub: options[at].price_rub,
                    }
                })
                .collect();
            orders.push(Order {
                id: 500_000 + orders.len() as u64,
                customer_id: id.clone(),
                status: ["PAID", "DELIVERED", "DELIVERED", "CANCELLED"][rng.random_range(0..4)],
                updated_ms: START_MS - rng.random_range(0..90) * DAY_MS - rng.random_range(0..DAY_MS),
                lines,
            });
        }
        let owns = match persona {
            Persona::RenovatingOwner | Persona::Gardener => true,
            Persona::YoungFamily => rng.random_bool(0.5),
            Persona::RenterDecor => false,
        };
        if owns {
            let house = persona != Persona::YoungFamily;
            register.push(RegisterRecord {
                id: 900_000 + register.len() as u64,
                customer_id: id.clone(),
                cadastral_number: format!(
                    "50:20:{:07}:{}",
                    rng.random_range(0..9_999_999),
                    rng.random_range(1..999)
                ),
                object_type: if house { "Жилой дом" } else { "Квартира" },
                area_sq_m: if house {
                    rng.random_range(120.0..400.0)
                } else {
                    rng.random_range(35.0..90.0)
                },
                right_registration_ms: START_MS
                    - if persona == Persona::RenovatingOwner {
                        rng.random_range(20..120)
                    } else {
                        rng.random_range(400..4000)
                    } * DAY_MS,
                cadastral_value_rub: rng.random_range(4_000_000.0..60_000_000.0_f64).round(),
                year_built: if persona == Persona::RenovatingOwner {
                    rng.random_range(1995..2015)
                } else {
                    rng.random_range(1970..2024)
                },
                objects_on_plot: if house {
                    vec!["Жилой дом", "Баня", "Гараж"]
                } else {
                    Vec::new()
                },
            });
        }
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
    fn renovating_owners_buy_dear_renovation_goods() {
        let w = generate(1, 400);
        let owners: Vec<&Customer> = w
            .customers
            .iter()
            .filter(|c| c.persona == Persona::RenovatingOwner)
            .collect();
        assert!(!owners.is_empty());
        let owner_orders = w.orders.iter().filter(|o| owners.iter().any(|c| c.id == o.customer_id));
        for line in owner_orders.flat_map(|o| &o.lines) {
            let p = w.products.iter().find(|p| p.id == line.product_id).unwrap();
            let cat = w.categories.iter().find(|c| c.id == p.category_id).unwrap();
            assert!(p.price_rub >= cat.typical_rub * 0.6, "{} at {}", p.name, p.price_rub);
        }
    }
}
