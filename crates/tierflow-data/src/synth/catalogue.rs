//! What there is to buy: categories with log-normal price levels, products with charm prices
//! and a long-tailed popularity, all drawn from the seed alone (not from the user count).

use super::sample::{self, Purpose, SimRng};

pub(crate) const CATEGORY_COUNT: usize = 16;

/// Name, median unit price in euros, and relative traffic.
const CATEGORIES: [(&str, f64, f64); CATEGORY_COUNT] = [
    ("groceries", 4.0, 0.8),
    ("stationery", 7.0, 0.5),
    ("deals", 12.0, 0.7),
    ("books", 14.0, 1.0),
    ("beauty", 18.0, 1.0),
    ("pet_supplies", 20.0, 0.6),
    ("toys", 25.0, 0.8),
    ("home_decor", 35.0, 0.9),
    ("fashion", 40.0, 1.5),
    ("sports", 45.0, 0.8),
    ("kitchen", 55.0, 0.8),
    ("garden", 60.0, 0.5),
    ("shoes", 75.0, 1.0),
    ("jewelry", 120.0, 0.4),
    ("electronics", 160.0, 1.3),
    ("furniture", 280.0, 0.5),
];

/// The discount category bargain hunters flock to.
pub(crate) const DEALS: usize = 2;

/// A product in the catalogue: `(category, product)` positions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ProductRef {
    pub(crate) category: u16,
    pub(crate) product: u32,
}

#[derive(Debug)]
pub(crate) struct Product {
    pub(crate) id: String,
    pub(crate) price_cents: i64,
}

#[derive(Debug)]
pub(crate) struct Category {
    pub(crate) name: &'static str,
    pub(crate) median_eur: f64,
    pub(crate) traffic: f64,
    /// Most popular first.
    products: Vec<Product>,
    popularity_cdf: Vec<f64>,
}

#[derive(Debug)]
pub(crate) struct Catalogue {
    categories: Vec<Category>,
}

impl Catalogue {
    pub(crate) fn new(seed: u64) -> Self {
        let mut rng = sample::rng_for(seed, Purpose::Catalogue, 0);
        let categories = CATEGORIES
            .iter()
            .enumerate()
            .map(|(c, &(name, median, traffic))| {
                let median_eur = sample::lognormal(&mut rng, median, 0.15);
                let count = 40 + (sample::unit(&mut rng) * 81.0) as usize;
                let products = (0..count)
                    .map(|p| Product {
                        id: format!("p{c:02}{p:04}"),
                        price_cents: charm_cents(sample::lognormal(&mut rng, median_eur, 0.5)),
                    })
                    .collect();
                let mut running = 0.0;
                let mut popularity_cdf: Vec<f64> = (0..count)
                    .map(|rank| {
                        running += 1.0 / (rank as f64 + 1.0).powf(1.05);
                        running
                    })
                    .collect();
                for c in &mut popularity_cdf {
                    *c /= running;
                }
                Category {
                    name,
                    median_eur,
                    traffic,
                    products,
                    popularity_cdf,
                }
            })
            .collect();
        Self { categories }
    }

    pub(crate) fn categories(&self) -> &[Category] {
        &self.categories
    }

    pub(crate) fn category(&self, category: u16) -> &Category {
        &self.categories[usize::from(category)]
    }

    pub(crate) fn product(&self, product: ProductRef) -> &Product {
        &self.category(product.category).products[product.product as usize]
    }

    /// A product of `category` by popularity. `picks` > 1 takes the cheapest of that many
    /// draws (bargain hunting), < -1 the dearest (premium taste).
    pub(crate) fn pick_product(&self, category: u16, picks: i8, rng: &mut SimRng) -> ProductRef {
        let cat = self.category(category);
        let draw =
            |rng: &mut SimRng| sample::index_in(&cat.popularity_cdf, sample::unit(rng)) as u32;
        let price = |p: u32| cat.products[p as usize].price_cents;
        let mut best = draw(rng);
        for _ in 1..picks.unsigned_abs() {
            let other = draw(rng);
            if (picks > 0 && price(other) < price(best))
                || (picks < 0 && price(other) > price(best))
            {
                best = other;
            }
        }
        ProductRef {
            category,
            product: best,
        }
    }
}

/// Shop prices: 0.49 / 2.99 below 10 €, 24.99 below 100 €, 149.99 / 154.99 above.
fn charm_cents(eur: f64) -> i64 {
    let eur = eur.clamp(0.5, 1_500.0);
    if eur < 10.0 {
        ((eur * 2.0).round().max(1.0) * 50.0) as i64 - 1
    } else if eur < 100.0 {
        (eur.round() * 100.0) as i64 - 1
    } else {
        ((eur / 5.0).round() * 500.0) as i64 - 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charm_prices() {
        for (eur, cents) in [
            (0.1, 49),
            (3.2, 299),
            (3.3, 349),
            (24.6, 2499),
            (151.0, 14999),
            (153.0, 15499),
            (1e9, 149_999),
        ] {
            assert_eq!(charm_cents(eur), cents, "{eur}");
        }
    }

    #[test]
    fn prices_range_from_a_few_euros_to_a_few_hundred() {
        let catalogue = Catalogue::new(42);
        assert_eq!(catalogue.categories()[DEALS].name, "deals");
        let mut all: Vec<i64> = catalogue
            .categories()
            .iter()
            .flat_map(|c| c.products.iter().map(|p| p.price_cents))
            .collect();
        all.sort_unstable();
        let quantile = |q: f64| all[((all.len() - 1) as f64 * q) as usize];
        assert!(quantile(0.05) < 800, "{}", quantile(0.05));
        assert!((1_500..6_000).contains(&quantile(0.5)), "{}", quantile(0.5));
        assert!(quantile(0.95) > 20_000, "{}", quantile(0.95));
        assert!(all.iter().all(|&p| p > 0));
    }

    #[test]
    fn cheapest_of_several_is_cheaper() {
        let catalogue = Catalogue::new(1);
        let mut rng = sample::rng_for(1, Purpose::User, 0);
        let mean = |picks: i8, rng: &mut SimRng| {
            (0..4_000)
                .map(|_| {
                    catalogue
                        .product(catalogue.pick_product(8, picks, rng))
                        .price_cents as f64
                })
                .sum::<f64>()
                / 4_000.0
        };
        let (cheap, plain, dear) = (mean(3, &mut rng), mean(1, &mut rng), mean(-2, &mut rng));
        assert!(
            cheap < 0.85 * plain && plain < 0.9 * dear,
            "{cheap} {plain} {dear}"
        );
    }
}
