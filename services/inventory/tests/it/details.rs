//! A product's searchable details (description, category, tags) and its
//! version, which every event about the product carries (dataversion 2).

use orderflow_events::order::OrderCancelled;
use orderflow_inventory::handlers::{ReleaseOnOrderCancelled, ReserveStock};
use orderflow_proto::inventory::v1 as pb;
use orderflow_testkit::as_admin;
use uuid::Uuid;

use crate::helpers::{TestApp, handle_on, placed, product_request};

fn tags(values: &[&str]) -> Option<pb::Tags> {
    Some(pb::Tags {
        values: values.iter().map(|t| (*t).to_owned()).collect(),
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn details_are_set_kept_when_not_given_and_cleared_when_empty() {
    let app = TestApp::spawn().await;
    let id = Uuid::new_v4();
    let mut req = product_request(id, "HP-1", 5);
    req.name = "Studio Headphones".into();
    req.description = Some("Closed-back, for mixing".into());
    req.category = Some("Audio".into());
    req.tags = tags(&["wired", "studio"]);
    let (p, created) = app.upsert(req).await.unwrap();
    assert!(created);
    assert_eq!(
        (p.description.as_str(), p.category.as_str(), p.version),
        ("Closed-back, for mixing", "Audio", 1)
    );
    assert_eq!(p.tags, ["wired", "studio"]);

    // An old client (no details) changes the price: the details stay.
    let mut old = product_request(id, "HP-1", 5);
    old.name = "Studio Headphones".into();
    old.unit_price = Some(pb::Money {
        amount_minor: 9900,
        currency: "EUR".into(),
    });
    let (p, _) = app.upsert(old.clone()).await.unwrap();
    assert_eq!((p.category.as_str(), p.version), ("Audio", 2));
    assert_eq!(p.tags, ["wired", "studio"]);
    // The same call again changes nothing: no event, same version.
    let events = app.count("outbox").await;
    assert_eq!(app.upsert(old.clone()).await.unwrap().0.version, 2);
    assert_eq!(app.count("outbox").await, events);

    // Given empty: cleared.
    let mut clear = old;
    clear.description = Some(String::new());
    clear.tags = tags(&[]);
    let (p, _) = app.upsert(clear).await.unwrap();
    assert_eq!((p.description.as_str(), p.category.as_str()), ("", "Audio"));
    assert!(p.tags.is_empty());

    let (event_type, body) = app.events().await.pop().unwrap();
    assert_eq!(event_type, "inventory.product_upserted");
    assert_eq!(body["dataversion"], 2);
    assert_eq!(body["data"]["category"], "Audio");
    assert_eq!(body["data"]["description"], serde_json::Value::Null);
    assert_eq!(body["data"]["version"], 3);
    assert_eq!(app.get(id).await.version, 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn adjustments_reservations_and_releases_bump_the_version_their_events_carry() {
    let app = TestApp::spawn().await;
    let id = app.product(10).await;
    app.client
        .clone()
        .adjust_stock(as_admin(pb::AdjustStockRequest {
            product_id: id.to_string(),
            delta: 5,
            reason: "delivery".into(),
        }))
        .await
        .unwrap();
    let (_, adjusted) = app.events().await.pop().unwrap();
    assert_eq!(
        (&adjusted["dataversion"], &adjusted["data"]["version"]),
        (&2.into(), &2.into())
    );

    let order = placed(&[(id, 4)]);
    handle_on(&app, &ReserveStock, order.clone()).await;
    let (event_type, reserved) = app.events().await.pop().unwrap();
    assert_eq!(event_type, "inventory.reserved");
    assert_eq!(reserved["dataversion"], 2);
    assert_eq!(
        reserved["data"]["lines"][0]["stock"],
        serde_json::json!({"on_hand": 11, "version": 3})
    );

    handle_on(
        &app,
        &ReleaseOnOrderCancelled,
        OrderCancelled {
            order_id: order.order_id,
            customer_id: order.customer_id,
            customer_email: order.customer_email.clone(),
            reason: "changed my mind".into(),
        },
    )
    .await;
    let (event_type, released) = app.events().await.pop().unwrap();
    assert_eq!(event_type, "inventory.released");
    assert_eq!(
        released["data"]["lines"][0]["stock"],
        serde_json::json!({"on_hand": 15, "version": 4})
    );
    assert_eq!(app.get(id).await.version, 4);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_import_sets_the_details_it_has_columns_for_and_keeps_the_others() {
    let app = TestApp::spawn().await;
    let row = |n: i64, sku: &str| pb::StockRow {
        row_number: n,
        sku: sku.to_owned(),
        name: format!("Item {sku}"),
        unit_price: Some(pb::Money {
            amount_minor: 100,
            currency: "EUR".to_owned(),
        }),
        quantity: 3,
        ..Default::default()
    };
    let import = async |rows: Vec<pb::StockRow>| {
        app.client
            .clone()
            .import_stock(as_admin(futures::stream::iter([pb::ImportStockRequest {
                import_id: Uuid::new_v4().to_string(),
                rows,
                source: String::new(),
            }])))
            .await
            .unwrap()
            .into_inner()
    };
    let mut a = row(1, "A");
    a.description = Some("A blue mug".into());
    a.category = Some("Kitchen".into());
    a.tags = tags(&["mug"]);
    let mut bad = row(2, "B");
    bad.tags = tags(&[&"t".repeat(51)]);
    let done = import(vec![a, bad]).await;
    assert_eq!(done.import.unwrap().rejected, 1);
    assert!(done.errors[0].reason.contains("tags:"), "{:?}", done.errors);

    // A file without the detail columns changes the stock and keeps them.
    let mut again = row(1, "A");
    again.quantity = 7;
    import(vec![again]).await;
    let (event_type, body) = app.events().await.pop().unwrap();
    assert_eq!(event_type, "inventory.stock_imported");
    assert_eq!(body["dataversion"], 2);
    let product = &body["data"]["products"][0];
    assert_eq!(
        product,
        &serde_json::json!([
            product[0],
            "A",
            "Item A",
            "EUR",
            100,
            7,
            false,
            "A blue mug",
            "Kitchen",
            ["mug"],
            2
        ])
    );
    let id: Uuid = product[0].as_str().unwrap().parse().unwrap();
    let stored = app.get(id).await;
    assert_eq!((stored.category.as_str(), stored.on_hand), ("Kitchen", 7));
}
