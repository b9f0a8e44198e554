//! Building CreateOrder requests. Kept free of I/O so the shape of the load
//! (pool sizes, bounds, distinct products per order) is unit-tested.

use orderflow_proto::order::v1::{CreateOrderRequest, Money, OrderLine};
use uuid::Uuid;

/// Customers the load is spread over: enough that no single customer's rows
/// become a hotspot, few enough that ListOrders by customer has data.
pub const CUSTOMER_POOL: usize = 1000;
/// Products lines are drawn from; also the upper bound for `--lines`, since
/// the service rejects an order naming the same product twice.
pub const PRODUCT_POOL: usize = 100;
pub const MIN_QUANTITY: i32 = 1;
pub const MAX_QUANTITY: i32 = 3;
/// Unit price range in minor units, half-open like the spec's 1000..5000.
pub const MIN_PRICE_MINOR: i64 = 1000;
pub const MAX_PRICE_MINOR: i64 = 5000;
pub const CURRENCY: &str = "EUR";

/// SplitMix64: a few lines of fast, good-enough randomness for load shapes.
/// Used instead of the `rand` crate so the workspace lock file stays as it is;
/// seeded from a v4 UUID (OS randomness), so every worker gets its own stream.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn from_entropy() -> Self {
        Self(Uuid::new_v4().as_u64_pair().0)
    }

    #[cfg(test)]
    pub fn seeded(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0). The modulo bias is below 2^-50 for the
    /// small `n` used here, far under anything a benchmark could notice.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    /// A random (version 4) UUID from this stream.
    pub fn uuid_v4(&mut self) -> Uuid {
        let mut bytes = [0u8; 16];
        bytes[..8].copy_from_slice(&self.next_u64().to_le_bytes());
        bytes[8..].copy_from_slice(&self.next_u64().to_le_bytes());
        uuid::Builder::from_random_bytes(bytes).into_uuid()
    }
}

/// The fixed sets of customers and products a run draws from, shared by all
/// workers so that orders from different workers hit the same rows.
#[derive(Debug)]
pub struct Pools {
    pub customers: Vec<String>,
    pub products: Vec<String>,
}

impl Pools {
    pub fn generate(rng: &mut Rng) -> Self {
        Self {
            customers: (0..CUSTOMER_POOL)
                .map(|_| rng.uuid_v4().to_string())
                .collect(),
            products: (0..PRODUCT_POOL)
                .map(|_| rng.uuid_v4().to_string())
                .collect(),
        }
    }
}

/// A request with a fresh request_id, a pool customer (email `c<index>@example.com`)
/// and `lines` lines on distinct products (the service rejects repeats).
/// `lines` is clamped to 1..=PRODUCT_POOL; the CLI validates it beforehand.
pub fn build_request(rng: &mut Rng, pools: &Pools, lines: usize) -> CreateOrderRequest {
    let customer = index(rng, pools.customers.len());
    let lines = lines.clamp(1, pools.products.len());
    // Partial Fisher-Yates over product indices: `lines` distinct picks.
    let mut products: Vec<usize> = (0..pools.products.len()).collect();
    for i in 0..lines {
        let j = i + index(rng, products.len() - i);
        products.swap(i, j);
    }
    let price_span = (MAX_PRICE_MINOR - MIN_PRICE_MINOR) as u64;
    let quantity_span = (MAX_QUANTITY - MIN_QUANTITY + 1) as u64;
    CreateOrderRequest {
        request_id: rng.uuid_v4().to_string(),
        customer_id: pools.customers[customer].clone(),
        customer_email: format!("c{customer}@example.com"),
        lines: products[..lines]
            .iter()
            .map(|&p| OrderLine {
                product_id: pools.products[p].clone(),
                quantity: MIN_QUANTITY + rng.below(quantity_span) as i32,
                unit_price: Some(Money {
                    amount_minor: MIN_PRICE_MINOR + rng.below(price_span) as i64,
                    currency: CURRENCY.to_owned(),
                }),
            })
            .collect(),
        ..Default::default()
    }
}

fn index(rng: &mut Rng, len: usize) -> usize {
    rng.below(len as u64) as usize
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn requests_are_valid_and_within_bounds() {
        let mut rng = Rng::seeded(7);
        let pools = Pools::generate(&mut rng);
        let mut request_ids = HashSet::new();
        for lines in [1, 2, 5, PRODUCT_POOL] {
            for _ in 0..200 {
                let req = build_request(&mut rng, &pools, lines);
                let id = Uuid::parse_str(&req.request_id).expect("request_id is a UUID");
                assert_eq!(id.get_version_num(), 4);
                assert!(request_ids.insert(id), "request_id repeated");
                assert!(Uuid::parse_str(&req.customer_id).is_ok());
                let c = pools
                    .customers
                    .iter()
                    .position(|c| *c == req.customer_id)
                    .expect("pool customer");
                assert_eq!(req.customer_email, format!("c{c}@example.com"));
                assert_eq!(req.lines.len(), lines);
                let mut seen = HashSet::new();
                for line in &req.lines {
                    assert!(pools.products.contains(&line.product_id));
                    assert!(
                        seen.insert(line.product_id.clone()),
                        "product repeated within an order"
                    );
                    assert!((MIN_QUANTITY..=MAX_QUANTITY).contains(&line.quantity));
                    let price = line.unit_price.as_ref().expect("unit_price set");
                    assert!((MIN_PRICE_MINOR..MAX_PRICE_MINOR).contains(&price.amount_minor));
                    assert_eq!(price.currency, CURRENCY);
                }
            }
        }
    }

    #[test]
    fn pools_have_distinct_uuids() {
        let pools = Pools::generate(&mut Rng::from_entropy());
        assert_eq!(
            pools.customers.iter().collect::<HashSet<_>>().len(),
            CUSTOMER_POOL
        );
        assert_eq!(
            pools.products.iter().collect::<HashSet<_>>().len(),
            PRODUCT_POOL
        );
    }

    #[test]
    fn draws_cover_the_ranges() {
        let mut rng = Rng::seeded(1);
        let quantities: HashSet<u64> = (0..1000).map(|_| rng.below(3)).collect();
        assert_eq!(quantities, HashSet::from([0, 1, 2]));
    }
}
