use orderflow_proto::inventory::v1 as pb;
use tonic::Code;
use tonic_types::StatusExt as _;
use uuid::Uuid;

use crate::helpers::{TestApp, product_request};

pub fn violations(status: &tonic::Status) -> Vec<String> {
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    status
        .get_details_bad_request()
        .expect("BadRequest detail")
        .field_violations
        .into_iter()
        .map(|f| f.field)
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn upsert_creates_then_replaces_and_writes_product_upserted() {
    let app = TestApp::spawn().await;
    let id = Uuid::new_v4();

    let (created, was_created) = app.upsert(product_request(id, "SKU-1", 10)).await.unwrap();
    assert!(was_created);
    assert_eq!(created.product_id, id.to_string());
    assert_eq!(created.sku, "SKU-1");
    assert_eq!((created.on_hand, created.reserved), (10, 0));
    assert_eq!(created.unit_price.as_ref().unwrap().amount_minor, 1250);
    assert_eq!(app.get(id).await, created);

    let mut change = product_request(id, "SKU-1b", 7);
    change.name = "Widget, blue".into();
    change.unit_price = Some(pb::Money {
        amount_minor: 990,
        currency: "USD".into(),
    });
    let (replaced, was_created) = app.upsert(change).await.unwrap();
    assert!(!was_created);
    assert_eq!(replaced.sku, "SKU-1b");
    assert_eq!(replaced.name, "Widget, blue");
    assert_eq!(replaced.on_hand, 7);
    assert_eq!(
        replaced.unit_price,
        Some(pb::Money {
            amount_minor: 990,
            currency: "USD".into()
        })
    );

    let events = app.events().await;
    assert_eq!(events.len(), 2);
    for (event_type, body) in &events {
        assert_eq!(event_type, "inventory.product_upserted");
        assert_eq!(body["source"], "orderflow/inventory");
        assert_eq!(body["subject"], id.to_string());
    }
    assert_eq!(events[1].1["data"]["sku"], "SKU-1b");
    assert_eq!(events[1].1["data"]["on_hand"], 7);
    assert_eq!(events[1].1["data"]["currency"], "USD");
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_repeated_upsert_changes_nothing_and_writes_no_event() {
    let app = TestApp::spawn().await;
    let id = Uuid::new_v4();
    let (first, _) = app.upsert(product_request(id, "SKU-1", 10)).await.unwrap();
    let (second, created) = app.upsert(product_request(id, "SKU-1", 10)).await.unwrap();
    assert!(!created);
    assert_eq!(second, first, "same product, same updated_at");
    assert_eq!(app.count("products").await, 1);
    assert_eq!(app.count("outbox").await, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_first_upserts_of_one_product_create_it_once() {
    let app = TestApp::spawn().await;
    let id = Uuid::new_v4();
    let calls = (0..20).map(|_| app.upsert(product_request(id, "SKU-1", 10)));
    let results = futures::future::join_all(calls).await;
    let created = results
        .into_iter()
        .map(|r| r.unwrap().1)
        .filter(|&created| created)
        .count();
    assert_eq!(created, 1);
    assert_eq!(app.count("products").await, 1);
    assert_eq!(app.count("outbox").await, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sku_of_another_product_is_already_exists_and_writes_nothing() {
    let app = TestApp::spawn().await;
    let owner = Uuid::new_v4();
    app.upsert(product_request(owner, "SKU-1", 10))
        .await
        .unwrap();
    let other = Uuid::new_v4();
    app.upsert(product_request(other, "SKU-2", 5))
        .await
        .unwrap();

    // A new product with a taken SKU, and an existing one renamed to it.
    for id in [Uuid::new_v4(), other] {
        let err = app
            .upsert(product_request(id, "SKU-1", 1))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::AlreadyExists, "{err:?}");
        assert!(
            err.message().contains(&owner.to_string()),
            "{}",
            err.message()
        );
        let info = err
            .get_details_resource_info()
            .expect("ResourceInfo detail");
        assert_eq!(info.resource_name, "SKU-1");
    }
    assert_eq!(app.count("products").await, 2);
    assert_eq!(app.get(other).await.sku, "SKU-2");
    assert_eq!(app.count("outbox").await, 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_invalid_upsert_lists_every_bad_field_and_writes_nothing() {
    let app = TestApp::spawn().await;
    let err = app
        .upsert(pb::UpsertProductRequest {
            product_id: "not-a-uuid".into(),
            sku: String::new(),
            name: "x".repeat(201),
            unit_price: Some(pb::Money {
                amount_minor: -5,
                currency: "euro".into(),
            }),
            on_hand: -1,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(
        violations(&err),
        [
            "product_id",
            "sku",
            "name",
            "unit_price.amount_minor",
            "unit_price.currency",
            "on_hand"
        ]
    );

    let mut req = product_request(Uuid::nil(), &"s".repeat(65), 0);
    req.name = String::new();
    req.unit_price = None;
    let err = app.upsert(req).await.unwrap_err();
    assert_eq!(
        violations(&err),
        ["product_id", "sku", "name", "unit_price"]
    );

    let mut req = product_request(Uuid::new_v4(), "SKU 1", 0);
    req.name = "tab\there".into();
    let err = app.upsert(req).await.unwrap_err();
    assert_eq!(violations(&err), ["sku", "name"]);

    assert_eq!(app.count("products").await, 0);
    assert_eq!(app.count("outbox").await, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_currency_code_not_in_use_is_invalid() {
    let app = TestApp::spawn().await;
    let err = app
        .upsert(pb::UpsertProductRequest {
            product_id: Uuid::new_v4().to_string(),
            sku: "SKU-EUO".into(),
            name: "Typo".into(),
            unit_price: Some(pb::Money {
                amount_minor: 100,
                currency: "EUO".into(),
            }),
            on_hand: 1,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(violations(&err), ["unit_price.currency"]);
    assert_eq!(app.count("products").await, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn get_of_an_unknown_or_malformed_id() {
    let app = TestApp::spawn().await;
    let missing = Uuid::new_v4();
    let err = app
        .client
        .clone()
        .get_product(pb::GetProductRequest {
            product_id: missing.to_string(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    let info = err
        .get_details_resource_info()
        .expect("ResourceInfo detail");
    assert_eq!(info.resource_name, missing.to_string());

    let err = app
        .client
        .clone()
        .get_product(pb::GetProductRequest {
            product_id: "42".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(violations(&err), ["product_id"]);
}
