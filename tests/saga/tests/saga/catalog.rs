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

/// What searches answer, without the time each entry was last applied.
async fn answers(sys: &System, queries: &[&str]) -> Vec<Value> {
    let mut out = Vec::new();
    for q in queries {
        let mut found = sys
            .call(
                "catalog",
                "SearchProducts",
                json!({"query": q, "page_size": 100}),
            )
            .await;
        if let Some(hits) = found["hits"].as_array_mut() {
            for h in hits {
                h["product"].as_object_mut().map(|p| p.remove("updatedAt"));
            }
        }
        out.push(found);
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rebuild_after_the_catalog_was_emptied_gives_the_same_results() {
    let sys = System::start_with_catalog().await;
    let names = [
        "Oak desk lamp",
        "Brass floor lamp",
        "Linen lamp shade",
        "Oak bookshelf",
    ];
    let mut ids = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let id = Uuid::new_v4();
        sys.call(
            "inventory",
            "UpsertProduct",
            json!({"product_id": id.to_string(), "sku": format!("RB-{i}"), "name": name,
                   "unit_price": {"amount_minor": 1000 + i, "currency": "EUR"}, "on_hand": 10,
                   "category": if i == 3 { "Furniture" } else { "Lighting" }}),
        )
        .await;
        ids.push(id);
    }
    let order = sys.create_order(&[(ids[0], 3)], "tok_visa").await;
    sys.wait_until_settled(order).await;
    wait_for(
        "the catalog has every product and the order",
        SETTLE,
        || async {
            match available(&sys, ids[0]).await {
                7 if sys
                    .call(
                        "catalog",
                        "SearchProducts",
                        json!({"query": "oak OR lamp "}),
                    )
                    .await["hits"]
                    .as_array()
                    .map_or(0, Vec::len)
                    == 4 =>
                {
                    Ok(())
                }
                n => Err(format!("available {n}")),
            }
        },
    )
    .await;
    let queries = [
        "lamp ",
        "oak",
        "\"floor lamp\"",
        "lamp -brass ",
        "lmap ",
        "",
    ];
    let before = answers(&sys, &queries).await;

    sys.sql("catalog")
        .batch_execute("TRUNCATE catalog_products")
        .await
        .unwrap();
    assert!(
        hit_ids(
            &sys.call("catalog", "SearchProducts", json!({"query": "lamp "}))
                .await
        )
        .is_empty()
    );

    let started = sys.call("catalog", "RebuildCatalog", json!({})).await;
    let id = started["rebuild"]["rebuildId"].as_str().unwrap().to_owned();
    wait_for("the rebuild serves", SETTLE, || async {
        let now = sys
            .call("catalog", "GetCatalogRebuild", json!({"rebuild_id": id}))
            .await;
        if now["rebuild"]["state"] == "REBUILD_STATE_SERVING" {
            Ok(now)
        } else {
            Err(now.to_string())
        }
    })
    .await;
    assert_eq!(answers(&sys, &queries).await, before);
}
