//! Hostile-input testing: proptest cases run one by one inside an async
//! test (each case is a real gRPC call), shrunk on failure and replayable
//! with `HOSTILE_SEED=<n>`; the judgement of a rejected call; a snapshot of
//! tables to show that a refused call wrote nothing; and the strategies
//! every service's requests are built from.

use std::{collections::BTreeMap, fmt::Debug};

use diesel_async::{AsyncPgConnection, RunQueryDsl as _};
use proptest::{
    prelude::*,
    sample::select,
    strategy::ValueTree,
    test_runner::{Config, RngAlgorithm, TestRng, TestRunner},
};
use tonic::Code;
use tonic_types::StatusExt as _;
use uuid::Uuid;

/// Cases per RPC: enough to hit every kind of value a few times, few enough
/// that the file runs in seconds.
pub const CASES: u32 = 128;

/// At most this many extra calls to shrink a failing case.
pub const MAX_SHRINK_CALLS: u32 = 200;

/// The seed of this run: `HOSTILE_SEED` to replay one, random otherwise.
pub fn seed() -> u64 {
    let seed = std::env::var("HOSTILE_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            use std::hash::{BuildHasher as _, Hasher as _};
            std::collections::hash_map::RandomState::new()
                .build_hasher()
                .finish()
        });
    eprintln!("hostile: HOSTILE_SEED={seed}");
    seed
}

/// A runner whose cases depend only on the seed and the RPC's name.
pub fn runner(seed: u64, rpc: &str) -> TestRunner {
    let mut bytes = [0u8; 32];
    bytes[..8].copy_from_slice(&seed.to_le_bytes());
    for (i, b) in rpc.bytes().enumerate() {
        bytes[8 + i % 24] ^= b;
    }
    TestRunner::new_with_rng(
        Config::default(),
        TestRng::from_seed(RngAlgorithm::ChaCha, &bytes),
    )
}

/// Runs [`CASES`] values of `strategy` through `check`, which sends one call
/// and returns how it ended (`Ok("OK")`, `Ok("NOT_FOUND")`...) or what is
/// wrong. A failure is shrunk (proptest's simplify/complicate, each step one
/// more call) and reported with the seed. Returns how the calls ended.
pub async fn hostile<S, F>(rpc: &str, seed: u64, strategy: S, check: F) -> BTreeMap<String, u32>
where
    S: Strategy,
    S::Value: Debug,
    F: AsyncFnMut(S::Value) -> Result<String, String>,
{
    hostile_with(rpc, seed, Vec::new(), strategy, check).await
}

/// [`hostile`] after `fixed`: cases that must be in every run (an outcome
/// the strategy reaches too rarely to count on), checked first, as given.
pub async fn hostile_with<S, F>(
    rpc: &str,
    seed: u64,
    fixed: Vec<S::Value>,
    strategy: S,
    mut check: F,
) -> BTreeMap<String, u32>
where
    S: Strategy,
    S::Value: Debug,
    F: AsyncFnMut(S::Value) -> Result<String, String>,
{
    let mut runner = runner(seed, rpc);
    let mut tally = BTreeMap::new();
    for value in fixed {
        let shown = show(&value);
        match check(value).await {
            Ok(outcome) => *tally.entry(outcome).or_insert(0) += 1,
            Err(failure) => panic!("{rpc}: a fixed case failed: {failure}\nrequest: {shown}"),
        }
    }
    for case in 0..CASES {
        let mut tree = strategy.new_tree(&mut runner).expect("a value");
        let value = tree.current();
        let shown = show(&value);
        match check(value).await {
            Ok(outcome) => *tally.entry(outcome).or_insert(0) += 1,
            Err(failure) => {
                let (shrunk, why) = shrink(&mut tree, &mut check).await;
                panic!(
                    "{rpc}: case {case} failed (replay with HOSTILE_SEED={seed}): {failure}\n\
                     request: {shown}\n\
                     shrunk to: {}\n  which fails with: {}",
                    shrunk.as_deref().unwrap_or("(not shrunk)"),
                    why.as_deref().unwrap_or("-"),
                );
            }
        }
    }
    eprintln!("{rpc}: {CASES} cases: {tally:?}");
    tally
}

pub async fn shrink<T, F>(tree: &mut T, check: &mut F) -> (Option<String>, Option<String>)
where
    T: ValueTree,
    T::Value: Debug,
    F: AsyncFnMut(T::Value) -> Result<String, String>,
{
    let mut smallest = (None, None);
    if !tree.simplify() {
        return smallest;
    }
    for _ in 0..MAX_SHRINK_CALLS {
        let value = tree.current();
        let shown = show(&value);
        match check(value).await {
            Ok(_) => {
                if !tree.complicate() {
                    break;
                }
            }
            Err(why) => {
                smallest = (Some(shown), Some(why));
                if !tree.simplify() {
                    break;
                }
            }
        }
    }
    smallest
}

/// Debug output, cut short: some values hold strings of megabytes.
pub fn show(value: &impl Debug) -> String {
    let mut s = format!("{value:?}");
    if s.len() > 3000 {
        let mut cut = 3000;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push_str("...");
    }
    s
}

/// A rejection is fine if it is a client's-mistake code; INVALID_ARGUMENT
/// must say which fields (google.rpc.BadRequest).
pub fn judge(status: &tonic::Status) -> Result<String, String> {
    match status.code() {
        Code::InvalidArgument => {
            let bad = status.get_details_bad_request().ok_or_else(|| {
                format!(
                    "INVALID_ARGUMENT without a BadRequest detail: {}",
                    status.message()
                )
            })?;
            if bad.field_violations.is_empty() {
                return Err(format!(
                    "BadRequest without field violations: {}",
                    status.message()
                ));
            }
            Ok("INVALID_ARGUMENT".to_owned())
        }
        code @ (Code::NotFound
        | Code::AlreadyExists
        | Code::FailedPrecondition
        | Code::OutOfRange) => Ok(format!("{code:?}")),
        code => Err(format!(
            "{code:?} for a client's request: {}",
            status.message()
        )),
    }
}

/// `return Err(format!(...))` unless the condition holds: for checks.
#[macro_export]
macro_rules! ensure_or {
    ($cond:expr, $($msg:tt)+) => {
        if !$cond {
            return Err(format!($($msg)+));
        }
    };
}

/// Per table: its name, rows and a hash of their content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot(Vec<(String, i64, String)>);

impl Snapshot {
    /// Row counts and an md5 of every row of `tables`.
    pub async fn take(conn: &mut AsyncPgConnection, tables: &[&str]) -> Self {
        let mut counted = Vec::new();
        for table in tables {
            let row: CountHash = diesel::sql_query(format!(
                "SELECT count(*) AS n, coalesce(md5(string_agg(t::text, '|' ORDER BY t::text)), '') AS h \
                 FROM {table} t"
            ))
            .get_result(conn)
            .await
            .expect("snapshot");
            counted.push(((*table).to_owned(), row.n, row.h));
        }
        Self(counted)
    }

    /// `table`'s rows and content hash, if it was taken.
    pub fn table(&self, table: &str) -> Option<(i64, &str)> {
        self.0
            .iter()
            .find(|(name, _, _)| name == table)
            .map(|(_, rows, hash)| (*rows, hash.as_str()))
    }

    /// Whether every table but those in `except` is unchanged in `other`.
    pub fn same_except(&self, other: &Self, except: &[&str]) -> bool {
        self.0.len() == other.0.len()
            && self
                .0
                .iter()
                .zip(&other.0)
                .all(|(a, b)| except.contains(&a.0.as_str()) || a == b)
    }

    /// Rows of `table` (one of those taken).
    ///
    /// # Panics
    /// When `table` was not taken.
    pub fn rows(&self, table: &str) -> i64 {
        self.0
            .iter()
            .find(|(name, _, _)| name == table)
            .map(|(_, rows, _)| *rows)
            .unwrap_or_else(|| panic!("{table} is not in the snapshot"))
    }
}

#[derive(diesel::QueryableByName)]
struct CountHash {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    n: i64,
    #[diesel(sql_type = diesel::sql_types::Text)]
    h: String,
}

pub fn uuid() -> impl Strategy<Value = Uuid> {
    any::<u128>().prop_map(|n| Uuid::from_u128(n | 1))
}

/// Text a client should not send, and some it may, up to 80 KB.
pub fn text() -> BoxedStrategy<String> {
    prop_oneof![
        9 => short_text(),
        1 => (0usize..4, 200usize..20_000).prop_map(|(c, n)| ["x", "é", "😀", "\u{0}"][c].repeat(n)),
    ]
    .boxed()
}

/// The same without the huge strings: for fields repeated in every line or
/// row, so that a message stays under the server's size limit (that limit
/// has its own test).
pub fn short_text() -> BoxedStrategy<String> {
    prop_oneof![
        2 => Just(String::new()),
        4 => any::<String>(),
        2 => "[a-zA-Z0-9 _.@+-]{1,40}",
        2 => "[\\x00-\\x1f\\x7f]{1,4}",
        2 => "[a-z]{0,8}\\x00[a-z]{0,8}",
        1 => "\\s{1,8}",
        2 => "[\\u{0300}-\\u{036f}\\u{200b}-\\u{200f}\\u{202e}\\u{fe0f}\\u{1f600}-\\u{1f64f}\\u{fffd}]{1,40}",
    ]
    .boxed()
}

/// Ids: mostly UUIDs, some spelled another way, nil, cut short or junk.
pub fn uuid_text() -> BoxedStrategy<String> {
    prop_oneof![
        6 => uuid().prop_map(|u| u.to_string()),
        1 => Just(Uuid::nil().to_string()),
        1 => Just(Uuid::max().to_string()),
        1 => uuid().prop_map(|u| u.simple().to_string()),
        1 => uuid().prop_map(|u| u.braced().to_string()),
        1 => uuid().prop_map(|u| u.urn().to_string()),
        1 => uuid().prop_map(|u| u.to_string().to_uppercase()),
        1 => (uuid(), 0usize..36).prop_map(|(u, n)| u.to_string()[..n].to_owned()),
        1 => (uuid(), short_text()).prop_map(|(u, s)| format!("{u}{s}")),
        1 => (uuid(), short_text()).prop_map(|(u, s)| format!("{s}{u}")),
        2 => short_text(),
    ]
    .boxed()
}

pub fn page_size() -> BoxedStrategy<i32> {
    prop_oneof![
        2 => Just(0),
        3 => 1i32..=600,
        1 => any::<i32>(),
        1 => select(vec![-1, 1, 499, 500, 501, i32::MIN, i32::MAX]),
    ]
    .boxed()
}

pub fn hex(plain: &str) -> String {
    plain.bytes().map(|b| format!("{b:02x}")).collect()
}

pub fn amount() -> BoxedStrategy<i64> {
    prop_oneof![
        4 => 0i64..100_000,
        1 => any::<i64>(),
        1 => Just(i64::MAX),
        1 => Just(i64::MIN),
        1 => Just(-1i64),
        1 => Just(0i64),
    ]
    .boxed()
}

pub fn currency() -> BoxedStrategy<String> {
    prop_oneof![
        6 => Just("EUR".to_owned()),
        2 => select(vec!["USD", "JPY", "XXX", "eur", "EU", "EURO", "€", "", "E\u{0}R", "ÉUR"])
            .prop_map(str::to_owned),
        1 => short_text(),
    ]
    .boxed()
}
