//! A stock file of N rows with a share of bad rows, deterministic for a
//! seed: every row is a pure function of (seed, index), so the file can be
//! written in one pass with constant memory and a test can know which lines
//! are bad without keeping the file's content.

use std::io::{self, Write};

use crate::file::HEADER;

/// The kinds of bad rows written, each refused for a different reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum BadKind {
    /// `unit_price_minor` below zero (refused by the server).
    NegativePrice,
    /// `unit_price_minor` that is not a number (refused by the importer).
    PriceNotANumber,
    NegativeQuantity,
    EmptySku,
    /// Three fields instead of five.
    Malformed,
    UnknownCurrency,
    /// The SKU of an earlier good row (the first one wins).
    DuplicateSku,
}

const KINDS: [BadKind; 7] = [
    BadKind::NegativePrice,
    BadKind::PriceNotANumber,
    BadKind::NegativeQuantity,
    BadKind::EmptySku,
    BadKind::Malformed,
    BadKind::UnknownCurrency,
    BadKind::DuplicateSku,
];

/// What was written.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    pub rows: u64,
    pub good: u64,
    pub bad: u64,
}

/// The file's shape.
#[derive(Debug, Clone, Copy)]
pub struct Spec {
    pub rows: u64,
    /// Bad rows per 10,000 (300 = 3 %).
    pub bad_per_10k: u64,
    pub seed: u64,
    /// With the description, category and tags columns, and names drawn
    /// from a product vocabulary (for search benchmarks).
    pub details: bool,
}

impl Spec {
    fn hash(&self, i: u64, salt: u64) -> u64 {
        splitmix64(self.seed ^ splitmix64(i.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ salt))
    }

    fn kind(&self, i: u64) -> Option<BadKind> {
        let h = self.hash(i, 1);
        if h % 10_000 >= self.bad_per_10k {
            return None;
        }
        let kind = KINDS[((h >> 32) % KINDS.len() as u64) as usize];
        if kind == BadKind::DuplicateSku && self.duplicate_of(i).is_none() {
            return Some(BadKind::NegativeQuantity);
        }
        Some(kind)
    }

    /// The good row an intended duplicate repeats: up to 20,000 rows back,
    /// so some repeat a row of the same chunk and most one of an earlier chunk.
    fn duplicate_of(&self, i: u64) -> Option<u64> {
        let back = 1 + self.hash(i, 2) % 20_000;
        let mut j = i.checked_sub(back)?;
        loop {
            if self.hash(j, 1) % 10_000 >= self.bad_per_10k {
                return Some(j);
            }
            j = j.checked_sub(1)?;
        }
    }
}

fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

const ADJECTIVES: [&str; 24] = [
    "vintage",
    "modern",
    "compact",
    "wireless",
    "classic",
    "rustic",
    "premium",
    "portable",
    "foldable",
    "handmade",
    "ergonomic",
    "minimalist",
    "heavy",
    "slim",
    "waterproof",
    "smart",
    "organic",
    "industrial",
    "nordic",
    "retro",
    "deluxe",
    "studio",
    "travel",
    "outdoor",
];
const MATERIALS: [&str; 16] = [
    "oak",
    "walnut",
    "brass",
    "steel",
    "ceramic",
    "glass",
    "linen",
    "wool",
    "cotton",
    "leather",
    "bamboo",
    "marble",
    "copper",
    "concrete",
    "velvet",
    "aluminium",
];
/// (noun, its category)
const NOUNS: [(&str, &str); 40] = [
    ("lamp", "Lighting"),
    ("pendant", "Lighting"),
    ("lantern", "Lighting"),
    ("sconce", "Lighting"),
    ("desk", "Furniture"),
    ("chair", "Furniture"),
    ("bookshelf", "Furniture"),
    ("stool", "Furniture"),
    ("sofa", "Furniture"),
    ("table", "Furniture"),
    ("mug", "Kitchen"),
    ("teapot", "Kitchen"),
    ("kettle", "Kitchen"),
    ("bowl", "Kitchen"),
    ("skillet", "Kitchen"),
    ("vase", "Decor"),
    ("mirror", "Decor"),
    ("clock", "Decor"),
    ("rug", "Decor"),
    ("cushion", "Decor"),
    ("headphones", "Audio"),
    ("speaker", "Audio"),
    ("turntable", "Audio"),
    ("earbuds", "Audio"),
    ("backpack", "Bags"),
    ("wallet", "Bags"),
    ("tote", "Bags"),
    ("duffel", "Bags"),
    ("jacket", "Clothing"),
    ("scarf", "Clothing"),
    ("socks", "Clothing"),
    ("sweater", "Clothing"),
    ("tent", "Outdoor"),
    ("hammock", "Outdoor"),
    ("thermos", "Outdoor"),
    ("lantern", "Outdoor"),
    ("notebook", "Stationery"),
    ("pen", "Stationery"),
    ("planner", "Stationery"),
    ("easel", "Stationery"),
];
const PHRASES: [&str; 12] = [
    "built to last",
    "easy to clean",
    "a gift they will keep",
    "made in small batches",
    "for everyday use",
    "with a lifetime warranty",
    "designed in Copenhagen",
    "ships flat",
    "fits any room",
    "quiet and efficient",
    "light enough to carry",
    "finished by hand",
];
const TAGS: [&str; 20] = [
    "bestseller",
    "new",
    "sale",
    "eco",
    "gift",
    "limited",
    "handmade",
    "vegan",
    "recycled",
    "premium",
    "compact",
    "family",
    "office",
    "kids",
    "pet-friendly",
    "travel",
    "outdoor",
    "classic",
    "trending",
    "clearance",
];

fn pick<T: Copy>(list: &[T], h: u64) -> T {
    list[(h % list.len() as u64) as usize]
}

/// "Vintage oak lamp": adjective, material, noun.
fn catalog_name(spec: &Spec, i: u64) -> String {
    let h = spec.hash(i, 5);
    let adjective = pick(&ADJECTIVES, h);
    let mut name = String::with_capacity(32);
    name.push_str(&adjective[..1].to_uppercase());
    name.push_str(&adjective[1..]);
    name.push(' ');
    name.push_str(pick(&MATERIALS, h >> 8));
    name.push(' ');
    name.push_str(pick(&NOUNS, h >> 16).0);
    name
}

/// Description, category and tags (`|`-separated) of row `i`.
fn details(spec: &Spec, i: u64) -> (String, &'static str, String) {
    let h = spec.hash(i, 5);
    let (noun, category) = pick(&NOUNS, h >> 16);
    let g = spec.hash(i, 6);
    let description = format!(
        "\"A {} {noun} in {}, {}; {}.\"",
        pick(&ADJECTIVES, g),
        pick(&MATERIALS, g >> 8),
        pick(&PHRASES, g >> 16),
        pick(&PHRASES, g >> 24),
    );
    let tags: Vec<&str> = (0..1 + g % 3)
        .map(|k| pick(&TAGS, g >> (32 + 8 * k)))
        .collect();
    (description, category, tags.join("|"))
}

/// The line a row index is written on (the header is line 1).
pub fn line_of(index: u64) -> u64 {
    index + 2
}

/// Writes the file; calls `on_bad(line, kind)` for every bad row.
///
/// # Errors
/// I/O errors of `out`.
pub fn generate<W: Write>(
    out: W,
    spec: Spec,
    mut on_bad: impl FnMut(u64, BadKind),
) -> io::Result<Summary> {
    let mut out = io::BufWriter::with_capacity(1 << 20, out);
    if spec.details {
        writeln!(out, "{},description,category,tags", HEADER.join(","))?;
    } else {
        writeln!(out, "{}", HEADER.join(","))?;
    }
    let mut summary = Summary::default();
    for i in 0..spec.rows {
        let h = spec.hash(i, 3);
        let price = 100 + h % 99_900;
        let quantity = (h >> 20) % 1_000;
        let currency = ["EUR", "EUR", "EUR", "USD", "GBP", "JPY"][((h >> 40) % 6) as usize];
        let kind = spec.kind(i);
        let sku = match kind {
            Some(BadKind::EmptySku) => String::new(),
            Some(BadKind::DuplicateSku) => format!("SKU-{:08}", spec.duplicate_of(i).unwrap_or(i)),
            _ => format!("SKU-{i:08}"),
        };
        // Some names need quoting, as real catalogues do.
        let name = if spec.details {
            catalog_name(&spec, i)
        } else {
            match (h >> 50) % 4 {
                0 => format!("\"Mug {i}, large\""),
                1 => format!("\"Poster \"\"Wave\"\" {i}\""),
                _ => format!("Product {i}"),
            }
        };
        match kind {
            None => write!(out, "{sku},{name},{price},{currency},{quantity}")?,
            Some(BadKind::NegativePrice) => {
                write!(out, "{sku},{name},-{price},{currency},{quantity}")?
            }
            Some(BadKind::PriceNotANumber) => {
                write!(out, "{sku},{name},{price}.5x,{currency},{quantity}")?
            }
            Some(BadKind::NegativeQuantity) => {
                write!(out, "{sku},{name},{price},{currency},-{}", quantity + 1)?
            }
            Some(BadKind::EmptySku) | Some(BadKind::DuplicateSku) => {
                write!(out, "{sku},{name},{price},{currency},{quantity}")?;
            }
            Some(BadKind::Malformed) => write!(out, "{sku},{name},{price}")?,
            Some(BadKind::UnknownCurrency) => write!(out, "{sku},{name},{price},EURO,{quantity}")?,
        }
        if spec.details && kind != Some(BadKind::Malformed) {
            let (description, category, tags) = details(&spec, i);
            write!(out, ",{description},{category},{tags}")?;
        }
        writeln!(out)?;
        summary.rows += 1;
        match kind {
            None => summary.good += 1,
            Some(kind) => {
                summary.bad += 1;
                on_bad(line_of(i), kind);
            }
        }
    }
    out.flush()?;
    Ok(summary)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::collections::{BTreeMap, HashSet};

    use super::*;
    use crate::file::RowReader;

    #[test]
    fn files_with_details_read_back_with_every_column() {
        let spec = Spec {
            rows: 200,
            bad_per_10k: 0,
            seed: 3,
            details: true,
        };
        let mut a = Vec::new();
        generate(&mut a, spec, |_, _| {}).unwrap();
        let mut f = tempfile::NamedTempFile::new().unwrap();
        std::io::Write::write_all(&mut f, &a).unwrap();
        let mut reader = RowReader::open(f.path()).unwrap();
        let mut categories = HashSet::new();
        while let Some(row) = reader.next_row().unwrap() {
            assert!(row.client_error.is_empty(), "{row:?}");
            assert_eq!(row.name.split(' ').count(), 3, "{}", row.name);
            assert!(row.description.unwrap().starts_with("A "));
            assert!(!row.tags.unwrap().values.is_empty());
            categories.insert(row.category.unwrap());
        }
        assert!(categories.len() > 5, "{categories:?}");
    }

    #[test]
    fn files_are_deterministic_with_every_kind_of_bad_row() {
        let spec = Spec {
            rows: 30_000,
            bad_per_10k: 300,
            seed: 7,
            details: false,
        };
        let mut a = Vec::new();
        let mut bad = BTreeMap::new();
        let summary = generate(&mut a, spec, |line, kind| {
            bad.insert(line, kind);
        })
        .unwrap();
        let mut b = Vec::new();
        generate(&mut b, spec, |_, _| {}).unwrap();
        assert_eq!(a, b);
        assert_eq!(summary.rows, 30_000);
        assert_eq!(summary.bad, bad.len() as u64);
        // About 3 %, and every kind is there.
        assert!((700..1100).contains(&summary.bad), "{summary:?}");
        let kinds: HashSet<_> = bad.values().collect();
        assert_eq!(kinds.len(), KINDS.len());

        // Read back: good rows parse cleanly with unique SKUs.
        let mut f = tempfile::NamedTempFile::new().unwrap();
        std::io::Write::write_all(&mut f, &a).unwrap();
        let mut reader = RowReader::open(f.path()).unwrap();
        let mut skus = HashSet::new();
        let mut rows = 0;
        while let Some(row) = reader.next_row().unwrap() {
            rows += 1;
            let kind = bad.get(&(row.row_number as u64));
            match kind {
                None => {
                    assert!(row.client_error.is_empty(), "{row:?}");
                    assert!(skus.insert(row.sku.clone()), "{row:?}");
                    assert!(row.quantity >= 0);
                }
                Some(BadKind::Malformed | BadKind::PriceNotANumber) => {
                    assert!(!row.client_error.is_empty(), "{row:?}");
                }
                Some(_) => assert!(row.client_error.is_empty(), "{row:?}"),
            }
        }
        assert_eq!(rows, 30_000);
    }
}
