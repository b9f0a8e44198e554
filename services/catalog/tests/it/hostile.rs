//! Hostile input: proptest-generated SearchProducts, ListCategories and
//! GetCatalogProduct requests over a real channel to the in-process server.
//! Whatever a client sends, the answer is OK or a client's-mistake code
//! with details (never INTERNAL), a page holds at most its size, and no
//! call writes anything: the API only reads.
//!
//! `HOSTILE_SEED=<n>` replays a failure's cases.

use chrono::Utc;
use diesel_async::{AsyncConnection as _, AsyncPgConnection};
use orderflow_catalog::handlers::Apply;
use orderflow_events::inventory::ProductUpserted;
use orderflow_proto::catalog::v1 as pb;
use orderflow_testkit::{
    ensure_or,
    hostile::{Snapshot, hostile, judge, page_size, seed, text, uuid_text},
};
use proptest::{prelude::*, sample::select};
use uuid::Uuid;

use crate::helpers::{TestApp, at, upserted};

const TABLES: [&str; 4] = ["catalog_products", "catalog_generations", "outbox", "inbox"];

/// Queries: real words, the query language's operators in any mix, junk.
fn query() -> BoxedStrategy<String> {
    let word = prop_oneof![
        4 => select(vec!["lamp", "oak", "headph", "socks", "the", "OR", "-", "\"", "-oak", "\"oak lamp\"", "lmap"]).prop_map(str::to_owned),
        2 => "[a-z]{1,12}",
        2 => "[-\"()|&!:*'<>\\\\ ]{1,6}",
        1 => text(),
    ];
    prop_oneof![
        4 => proptest::collection::vec(word, 0..8).prop_map(|w| w.join(" ")),
        1 => (490usize..=510).prop_map(|n| "w ".repeat(n / 2)),
        1 => Just("x".repeat(10_000)),
        2 => text(),
    ]
    .boxed()
}

fn money_bound() -> BoxedStrategy<Option<i64>> {
    prop_oneof![
        3 => Just(None),
        1 => Just(Some(i64::MIN)),
        1 => Just(Some(i64::MAX)),
        2 => (-10i64..100_000).prop_map(Some),
    ]
    .boxed()
}

fn search_request(tokens: Vec<String>) -> BoxedStrategy<pb::SearchProductsRequest> {
    (
        query(),
        prop_oneof![3 => Just(String::new()), 1 => Just("Audio".to_owned()), 1 => text()],
        (money_bound(), money_bound()),
        prop_oneof![2 => Just(String::new()), 2 => Just("EUR".to_owned()), 1 => text()],
        any::<bool>(),
        prop_oneof![4 => 0i32..5, 1 => any::<i32>()],
        page_size(),
        prop_oneof![3 => Just(String::new()), 2 => select(tokens), 1 => text(), 1 => Just("s1.0000000000000000.20".to_owned())],
    )
        .prop_map(
            |(query, category, (min, max), currency, in_stock_only, sort, page_size, page_token)| {
                pb::SearchProductsRequest {
                    query,
                    category,
                    min_price_minor: min,
                    max_price_minor: max,
                    currency,
                    in_stock_only,
                    sort,
                    page_size,
                    page_token,
                }
            },
        )
        .boxed()
}

async fn stocked() -> (TestApp, Vec<Uuid>) {
    let app = TestApp::serve().await;
    let mut ids = Vec::new();
    for (i, name) in ["Oak desk lamp", "Studio headphones", "Wool socks"]
        .iter()
        .enumerate()
    {
        let id = Uuid::now_v7();
        let mut e: ProductUpserted = upserted(id, name, 1, i64::try_from(i).unwrap());
        e.category = Some("Audio".into());
        app.apply(&Apply::<ProductUpserted>::new(), at(e, Utc::now()))
            .await;
        ids.push(id);
    }
    (app, ids)
}

#[tokio::test]
async fn hostile_search_products() {
    let (app, _) = stocked().await;
    let seed = seed();
    let mut conn = AsyncPgConnection::establish(app.db.url()).await.unwrap();
    let first = app
        .search(pb::SearchProductsRequest {
            page_size: 1,
            ..Default::default()
        })
        .await
        .unwrap();
    let tally = hostile(
        "SearchProducts",
        seed,
        search_request(vec![first.next_page_token]),
        async |req: pb::SearchProductsRequest| {
            let before = Snapshot::take(&mut conn, &TABLES).await;
            let result = app.search(req.clone()).await;
            ensure_or!(
                Snapshot::take(&mut conn, &TABLES).await == before,
                "a read wrote"
            );
            match result {
                Ok(page) => {
                    let limit = match req.page_size {
                        0 => 20,
                        n => usize::try_from(n).unwrap_or(0).min(100),
                    };
                    ensure_or!(
                        page.hits.len() <= limit,
                        "{} hits for a page of {limit}",
                        page.hits.len()
                    );
                    Ok("OK".to_owned())
                }
                Err(status) => judge(&status),
            }
        },
    )
    .await;
    for outcome in ["OK", "INVALID_ARGUMENT"] {
        assert!(tally.contains_key(outcome), "no {outcome}: {tally:?}");
    }
}

#[tokio::test]
async fn hostile_categories_and_get() {
    let (app, ids) = stocked().await;
    let seed = seed();
    let mut conn = AsyncPgConnection::establish(app.db.url()).await.unwrap();
    let client = app.client.clone();
    let tally = hostile(
        "ListCategories",
        seed,
        (query(), any::<bool>()),
        async |(query, in_stock_only): (String, bool)| {
            let before = Snapshot::take(&mut conn, &TABLES).await;
            let result = client
                .clone()
                .list_categories(pb::ListCategoriesRequest {
                    query,
                    in_stock_only,
                })
                .await;
            ensure_or!(
                Snapshot::take(&mut conn, &TABLES).await == before,
                "a read wrote"
            );
            result.map_or_else(|s| judge(&s), |_| Ok("OK".to_owned()))
        },
    )
    .await;
    assert!(tally.contains_key("OK"), "{tally:?}");
    let known: Vec<String> = ids.iter().map(Uuid::to_string).collect();
    let tally = hostile(
        "GetCatalogProduct",
        seed,
        prop_oneof![1 => select(known), 3 => uuid_text()],
        async |product_id: String| {
            app.get_raw(&product_id)
                .await
                .map_or_else(|s| judge(&s), |_| Ok("OK".to_owned()))
        },
    )
    .await;
    for outcome in ["OK", "NotFound"] {
        assert!(tally.contains_key(outcome), "no {outcome}: {tally:?}");
    }
}
