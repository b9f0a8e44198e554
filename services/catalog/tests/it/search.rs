//! What a customer finds: ranking, query syntax, typo tolerance, filters,
//! sorting, paging, facets and bad queries.

use chrono::Utc;
use orderflow_catalog::handlers::Apply;
use orderflow_events::inventory::ProductUpserted;
use orderflow_proto::catalog::v1::{self as pb, SortOrder};
use tonic::Code;
use uuid::Uuid;

use crate::helpers::{TestApp, at, upserted};

/// (name, description, category, tags, price, on_hand)
type Spec<'a> = (&'a str, Option<&'a str>, &'a str, &'a [&'a str], i64, i64);

const PRODUCTS: &[Spec<'static>] = &[
    (
        "Studio Headphones",
        Some("Closed-back, wired, for mixing"),
        "Audio",
        &["wired"],
        9900,
        3,
    ),
    (
        "Travel Pillow",
        Some("Packs small; pairs well with headphones on a flight"),
        "Travel",
        &[],
        1900,
        10,
    ),
    (
        "Wireless Earbuds",
        Some("Noise cancelling, bluetooth"),
        "Audio",
        &["wireless"],
        5900,
        0,
    ),
    (
        "Noise Cancelling Headphones",
        Some("Over-ear, wireless"),
        "Audio",
        &["wireless"],
        19900,
        7,
    ),
    ("Red Wool Socks", None, "Clothing", &["wool"], 900, 20),
    ("Blue Cotton Socks", None, "Clothing", &["cotton"], 700, 20),
];

async fn stocked() -> TestApp {
    let app = TestApp::serve().await;
    for (name, description, category, tags, price, on_hand) in PRODUCTS {
        let mut e = upserted(Uuid::now_v7(), name, 1, *on_hand);
        e.description = description.map(str::to_owned);
        e.category = Some((*category).to_owned());
        e.tags = tags.iter().map(|t| (*t).to_owned()).collect();
        e.unit_price_minor = *price;
        app.apply(&Apply::<ProductUpserted>::new(), at(e, Utc::now()))
            .await;
    }
    app
}

fn req(query: &str) -> pb::SearchProductsRequest {
    pb::SearchProductsRequest {
        query: query.to_owned(),
        ..Default::default()
    }
}

#[tokio::test]
async fn a_name_match_ranks_above_a_description_match() {
    let app = stocked().await;
    let names = app.names("headphones ").await;
    assert_eq!(names.len(), 3, "{names:?}");
    assert_eq!(names.last().map(String::as_str), Some("Travel Pillow"));
    let page = app.search(req("mixing ")).await.unwrap();
    assert!(
        page.hits[0].snippet.contains("<mark>mixing</mark>"),
        "{}",
        page.hits[0].snippet
    );
}

#[tokio::test]
async fn phrases_exclusions_or_and_the_word_being_typed() {
    let app = stocked().await;
    assert_eq!(
        app.names("\"noise cancelling\" headphones ").await,
        ["Noise Cancelling Headphones"]
    );
    assert_eq!(
        app.names("headphones -wireless -pillow ").await,
        ["Studio Headphones"]
    );
    let mut socks = app.names("red OR blue socks ").await;
    socks.sort();
    assert_eq!(socks, ["Blue Cotton Socks", "Red Wool Socks"]);
    assert_eq!(app.names("earb").await, ["Wireless Earbuds"]);
    // A finished word is not a prefix: "earb " matches no word as typed
    // (only a similar one).
    assert!(app.search(req("earb ")).await.unwrap().fuzzy);
    assert!(!app.search(req("earb")).await.unwrap().fuzzy);
}

#[tokio::test]
async fn typos_find_similar_words_when_the_words_as_typed_find_nothing() {
    let app = stocked().await;
    let page = app.search(req("headphnes ")).await.unwrap();
    assert!(page.fuzzy);
    assert_eq!(page.corrected_query, "headphones");
    let names: Vec<String> = page
        .hits
        .into_iter()
        .map(|h| h.product.unwrap().name)
        .collect();
    assert!(names.contains(&"Studio Headphones".to_owned()), "{names:?}");
    assert!(!names.contains(&"Red Wool Socks".to_owned()), "{names:?}");
    let exact = app.search(req("headphones ")).await.unwrap();
    assert!(!exact.fuzzy);
    assert!(app.names("zzzzqqq ").await.is_empty());
}

#[tokio::test]
async fn filters_sorts_and_pages() {
    let app = stocked().await;
    let mut r = req("");
    r.category = "Audio".into();
    r.in_stock_only = true;
    r.sort = SortOrder::PriceDescending.into();
    let page = app.search(r).await.unwrap();
    let names: Vec<String> = page
        .hits
        .into_iter()
        .map(|h| h.product.unwrap().name)
        .collect();
    assert_eq!(names, ["Noise Cancelling Headphones", "Studio Headphones"]);

    let mut r = req("");
    r.currency = "EUR".into();
    r.min_price_minor = Some(800);
    r.max_price_minor = Some(2000);
    r.sort = SortOrder::PriceAscending.into();
    let names: Vec<String> = app
        .search(r)
        .await
        .unwrap()
        .hits
        .into_iter()
        .map(|h| h.product.unwrap().name)
        .collect();
    assert_eq!(names, ["Red Wool Socks", "Travel Pillow"]);

    // Every product, two per page, by name: three pages, no repeats.
    let mut seen = Vec::new();
    let mut r = req("");
    r.page_size = 2;
    loop {
        let page = app.search(r.clone()).await.unwrap();
        seen.extend(page.hits.into_iter().map(|h| h.product.unwrap().name));
        if page.next_page_token.is_empty() {
            break;
        }
        r.page_token = page.next_page_token;
    }
    let mut sorted = seen.clone();
    sorted.sort();
    assert_eq!((seen.len(), &seen), (6, &sorted));
    // A token with another query is refused.
    let mut first = req("");
    first.page_size = 2;
    let token = app.search(first).await.unwrap().next_page_token;
    let mut other = req("socks");
    other.page_token = token;
    assert_eq!(
        app.search(other).await.unwrap_err().code(),
        Code::InvalidArgument
    );
}

#[tokio::test]
async fn categories_are_counted_for_a_query() {
    let app = stocked().await;
    let counts = |q: &str, in_stock_only| {
        let client = app.client.clone();
        let q = q.to_owned();
        async move {
            client
                .clone()
                .list_categories(pb::ListCategoriesRequest {
                    query: q,
                    in_stock_only,
                })
                .await
                .unwrap()
                .into_inner()
                .categories
                .into_iter()
                .map(|c| (c.category, c.product_count))
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(
        counts("headphones ", false).await,
        [("Audio".to_owned(), 2), ("Travel".to_owned(), 1)]
    );
    assert_eq!(
        counts("", true).await,
        [
            ("Audio".to_owned(), 2),
            ("Clothing".to_owned(), 2),
            ("Travel".to_owned(), 1)
        ]
    );
}

#[tokio::test]
async fn bad_queries_are_invalid_or_empty_never_internal() {
    let app = stocked().await;
    for bad in [
        "x".repeat(10_000),
        "- OR \"\"".to_owned(),
        "&&& !!! |||".to_owned(),
    ] {
        let err = app.search(req(&bad)).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{bad:.40}: {err:?}");
    }
    // Whatever else one types is searched, never an internal error.
    for odd in [
        "'",
        "a'b",
        "\\",
        "x:*",
        "(",
        "<->",
        "the",
        "a",
        "\"",
        "--x",
        "ünïcödé ëarbüds",
        "😀 socks",
        "\u{0}",
        "OR",
        "-",
        "null",
        "%",
        "_",
        "1e9",
        "*",
    ] {
        match app.search(req(odd)).await {
            Ok(_) => {}
            Err(e) => assert_eq!(e.code(), Code::InvalidArgument, "{odd:?}: {e:?}"),
        }
    }
    assert_eq!(
        app.names("").await.len(),
        6,
        "an empty query lists everything"
    );
}
