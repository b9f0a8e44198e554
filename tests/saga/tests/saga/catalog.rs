//! The catalog end to end: inventory's events reach it through the outbox,
//! the relay, RabbitMQ and its inbox, and what a customer finds follows
//! what inventory holds.

use serde_json::{Value, json};
use uuid::Uuid;

use crate::harness::{SETTLE, System, wait_for};

/// Searches until `check` accepts the response.
async fn search_until(
    sys: &System,
    what: &str,
    body: Value,
    check: impl Fn(&Value) -> bool,
) -> Value {
    wait_for(what, SETTLE, || async {
        let found = sys.call("catalog", "SearchProducts", body.clone()).await;
        if check(&found) {
            Ok(found)
        } else {
            Err(found.to_string())
        }
    })
    .await
}

fn hit_ids(found: &Value) -> Vec<String> {
    found["hits"]
        .as_array()
        .map(|hits| {
            hits.iter()
                .map(|h| {
                    h["product"]["productId"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned()
                })
                .collect()
        })
        .unwrap_or_default()
}

async fn available(sys: &System, id: Uuid) -> i64 {
    let p = sys
        .call(
            "catalog",
            "GetCatalogProduct",
            json!({"product_id": id.to_string()}),
        )
        .await;
    p["product"]["available"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_product_upserted_in_inventory_is_searchable_and_its_stock_follows_the_saga() {
    let sys = System::start_with_catalog().await;
    let id = Uuid::new_v4();
    sys.call(
        "inventory",
        "UpsertProduct",
        json!({"product_id": id.to_string(), "sku": "HP-STUDIO", "name": "Studio Headphones",
               "unit_price": {"amount_minor": 9900, "currency": "EUR"}, "on_hand": 5,
               "description": "Closed-back headphones for mixing", "category": "Audio",
               "tags": {"values": ["wired"]}}),
    )
    .await;
    let found = search_until(
        &sys,
        "the new product is found",
        json!({"query": "headphones"}),
        |f| hit_ids(f) == [id.to_string()],
    )
    .await;
    let hit = &found["hits"][0];
    assert_eq!(hit["product"]["category"], "Audio");
    assert!(
        hit["snippet"]
            .as_str()
            .unwrap_or_default()
            .contains("<mark>"),
        "{hit}"
    );
    assert_eq!(available(&sys, id).await, 5);

    // A typo, and the word being typed.
    let typo = sys
        .call("catalog", "SearchProducts", json!({"query": "headphnes "}))
        .await;
    assert_eq!(
        (hit_ids(&typo), &typo["fuzzy"]),
        (vec![id.to_string()], &json!(true))
    );
    let typing = sys
        .call(
            "catalog",
            "SearchProducts",
            json!({"query": "studio headph"}),
        )
        .await;
    assert_eq!(hit_ids(&typing), [id.to_string()]);

    // An order takes 2 units, an adjustment adds 10: the catalog follows.
    let order = sys.create_order(&[(id, 2)], "tok_visa").await;
    let settled = sys.wait_until_settled(order).await;
    assert_eq!(settled["status"], "ORDER_STATUS_CONFIRMED");
    wait_for("the reservation shows in the catalog", SETTLE, || async {
        match available(&sys, id).await {
            3 => Ok(()),
            n => Err(format!("available {n}")),
        }
    })
    .await;
    sys.call(
        "inventory",
        "AdjustStock",
        json!({"product_id": id.to_string(), "delta": 10, "reason": "delivery"}),
    )
    .await;
    search_until(
        &sys,
        "the adjustment shows in the catalog",
        json!({"query": "studio", "in_stock_only": true}),
        |f| f["hits"][0]["product"]["available"] == "13",
    )
    .await;

    // Facets: the category with its count.
    let categories = sys
        .call("catalog", "ListCategories", json!({"query": "headphones"}))
        .await;
    assert_eq!(
        categories["categories"],
        json!([{"category": "Audio", "productCount": "1"}])
    );
}
