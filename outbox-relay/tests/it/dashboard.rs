//! The dashboard's JSON API and the same actions on the command line
//! (docs/DASHBOARD.md): access control, replay, pause/resume and dead
//! letters, against a relay process, real PostgreSQL and RabbitMQ.

use std::time::Duration;

use futures_util::StreamExt as _;
use orderflow_amqp::lapin::{
    BasicProperties,
    options::{
        BasicConsumeOptions, BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions,
    },
    types::{AMQPValue, FieldTable},
};
use orderflow_testkit::wait_until;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::helpers::{Consumer, Relay, World, insert};

const TOKEN: &str = "api-test-admin-token-0123456789";
const BIN: &str = env!("CARGO_BIN_EXE_outbox-relay");

async fn relay(world: &World) -> Relay {
    world.relay(&[("RELAY_ADMIN_TOKEN", TOKEN)]).await
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// A call as a program makes it: bearer token and operator name.
async fn api(relay: &Relay, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    let url = format!("http://{}{path}", relay.http);
    let req = client()
        .request(method.parse().unwrap(), url)
        .bearer_auth(TOKEN)
        .header("x-operator", "api-test");
    let req = match body {
        Some(b) => req.json(&b),
        None => req,
    };
    let res = req.send().await.unwrap();
    let status = res.status().as_u16();
    let text = res.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// `outbox-relay <args>` against the world, as an operator runs it.
async fn cli(world: &World, args: &[&str]) -> Value {
    let out = tokio::process::Command::new(BIN)
        .args(args)
        .env("RELAY_SOURCES", format!("order={}", world.db.url()))
        .env("AMQP_URL", world.broker.url())
        .env("USER", "cli-test")
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "outbox-relay {args:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "outbox-relay {args:?} printed no JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn every_dashboard_route_needs_the_token_and_posts_need_csrf() {
    let world = World::new().await;
    let relay = relay(&world).await;
    let routes = [
        ("GET", "/"),
        ("GET", "/login"),
        ("GET", "/assets/app.js"),
        ("GET", "/assets/app.css"),
        ("GET", "/api/session"),
        ("GET", "/api/overview"),
        ("GET", "/api/events?source=order"),
        (
            "GET",
            "/api/events/order/00000000-0000-0000-0000-000000000001",
        ),
        ("POST", "/api/events/order/unpark"),
        ("POST", "/api/sources/order/pause"),
        ("POST", "/api/sources/order/resume"),
        ("GET", "/api/dlq"),
        ("GET", "/api/dlq/order.x.dlq"),
        ("POST", "/api/dlq/order.x.dlq/retry"),
        ("POST", "/api/dlq/order.x.dlq/discard"),
        ("GET", "/api/replays"),
        ("POST", "/api/replays"),
        ("GET", "/api/audit"),
        ("POST", "/logout"),
        ("GET", "/no/such/page"),
    ];
    let http = client();
    for (method, path) in routes {
        let url = format!("http://{}{path}", relay.http);
        let anonymous = http
            .request(method.parse().unwrap(), &url)
            .send()
            .await
            .unwrap();
        let wrong = http
            .request(method.parse().unwrap(), &url)
            .bearer_auth("not-the-token-0123456789")
            .send()
            .await
            .unwrap();
        assert_eq!(
            anonymous.status().as_u16(),
            401,
            "{method} {path} without a token"
        );
        assert_eq!(
            wrong.status().as_u16(),
            401,
            "{method} {path} with a wrong token"
        );
        let body = anonymous.text().await.unwrap();
        assert!(!body.contains(TOKEN), "{method} {path} shows the token");
    }
    // Probes and Prometheus stay open.
    assert_eq!(relay.get("/livez").await.0, 200);
    assert_eq!(relay.get("/metrics").await.0, 200);

    // A browser session: the login form sets a cookie; GETs work with it,
    // POSTs also need the CSRF token of GET /api/session.
    let login = http
        .post(format!("http://{}/login", relay.http))
        .form(&[("token", "wrong-token-0123456789"), ("operator", "eve")])
        .send()
        .await
        .unwrap();
    assert_eq!(login.status().as_u16(), 401);
    let login = http
        .post(format!("http://{}/login", relay.http))
        .form(&[("token", TOKEN), ("operator", "ada")])
        .send()
        .await
        .unwrap();
    assert_eq!(login.status().as_u16(), 303);
    let cookie = login.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    let session_cookie = cookie.split(';').next().unwrap().to_owned();
    let session: Value = http
        .get(format!("http://{}/api/session", relay.http))
        .header("cookie", &session_cookie)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(session["operator"], "ada");
    let csrf = session["csrf_token"].as_str().unwrap().to_owned();
    let pause = |csrf: Option<String>| {
        let mut req = http
            .post(format!("http://{}/api/sources/order/pause", relay.http))
            .header("cookie", &session_cookie)
            .json(&json!({ "reason": "csrf check" }));
        if let Some(c) = csrf {
            req = req.header("x-csrf-token", c);
        }
        req.send()
    };
    assert_eq!(
        pause(None).await.unwrap().status().as_u16(),
        403,
        "no CSRF token"
    );
    assert_eq!(
        pause(Some("forged".into()))
            .await
            .unwrap()
            .status()
            .as_u16(),
        403
    );
    assert_eq!(
        world
            .scalar("SELECT count(*) FROM outbox_relay_control WHERE paused_at IS NOT NULL")
            .await,
        0,
        "a refused POST changed nothing"
    );
    assert_eq!(pause(Some(csrf)).await.unwrap().status().as_u16(), 200);
    let page = http
        .get(format!("http://{}/", relay.http))
        .header("cookie", &session_cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(page.status().as_u16(), 200);
    relay.terminate().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn replay_pause_and_dead_letters_through_the_api_and_the_cli() {
    let world = World::new().await;
    let consumer = Consumer::start(&world.broker, &["order.placed"]).await;
    let relay = relay(&world).await;
    let sql = world.sql().await;
    let aggregate = Uuid::new_v4();
    insert(
        &sql,
        &[(aggregate, 0), (aggregate, 1), (aggregate, 2)],
        "order.placed",
    )
    .await;
    consumer.wait_for(3, Duration::from_secs(30)).await;
    let deliveries = |id: &str| {
        consumer
            .snapshot()
            .iter()
            .filter(|m| m.message_id == id)
            .count()
    };

    // Find them, then replay the aggregate: same message ids, delivered again.
    let (status, found) = api(
        &relay,
        "GET",
        &format!("/api/events?source=order&aggregate_id={aggregate}"),
        None,
    )
    .await;
    assert_eq!(status, 200, "{found}");
    let ids: Vec<String> = found["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids.len(), 3);
    let (status, bad) = api(
        &relay,
        "POST",
        "/api/replays",
        Some(json!({ "source": "order", "reason": "x" })),
    )
    .await;
    assert_eq!(status, 400, "a replay without a selector: {bad}");
    let (status, replay) = api(
        &relay,
        "POST",
        "/api/replays",
        Some(json!({ "source": "order", "aggregate_id": aggregate.to_string(), "reason": "consumer lost its state" })),
    )
    .await;
    assert_eq!(status, 200, "{replay}");
    assert_eq!(replay["count"], 3);
    assert_eq!(replay["by"], "api-test");
    wait_until(
        "the replayed events arrive again",
        Duration::from_secs(30),
        || async { ids.iter().all(|id| deliveries(id) == 2) },
    )
    .await;

    // The CLI replays one event by id, and the audit log has both replays.
    let out = cli(
        &world,
        &[
            "replay", "--source", "order", "--id", &ids[0], "--reason", "one more",
        ],
    )
    .await;
    assert_eq!(out["count"], 1);
    wait_until(
        "the CLI replay arrives",
        Duration::from_secs(30),
        || async { deliveries(&ids[0]) == 3 },
    )
    .await;
    let (_, replays) = api(&relay, "GET", "/api/replays", None).await;
    let by: Vec<&str> = replays["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["by"].as_str().unwrap())
        .collect();
    assert_eq!(by, ["cli-test", "api-test"], "{replays}");

    // Paused: a new event stays pending (the overview sees it) until resumed.
    let (status, paused) = api(
        &relay,
        "POST",
        "/api/sources/order/pause",
        Some(json!({ "reason": "maintenance" })),
    )
    .await;
    assert_eq!(
        (status, paused["paused"].as_bool()),
        (200, Some(true)),
        "{paused}"
    );
    wait_until(
        "the relay has applied the pause",
        Duration::from_secs(10),
        || async {
            let (_, o) = api(&relay, "GET", "/api/overview", None).await;
            o["sources"][0]["paused_here"] == true
        },
    )
    .await;
    let late = Uuid::new_v4();
    insert(&sql, &[(late, 0)], "order.placed").await;
    wait_until(
        "the overview shows the paused event as pending",
        Duration::from_secs(15),
        || async {
            let (_, o) = api(&relay, "GET", "/api/overview", None).await;
            o["sources"][0]["pending"].as_i64() == Some(1) && o["sources"][0]["paused"] == true
        },
    )
    .await;
    assert_eq!(
        world.scalar("SELECT count(*) FROM outbox_pending").await,
        1,
        "nothing is published while paused"
    );
    let resumed = cli(&world, &["resume", "--source", "order"]).await;
    assert_eq!(resumed["paused"], false);
    consumer.wait_for(4, Duration::from_secs(30)).await;

    // Dead letters: one parked message is retried to its work queue without
    // the parking headers; another is discarded with a reason.
    let conn = orderflow_amqp::connect(&world.broker.url(), "test-dlq")
        .await
        .unwrap();
    let channel = conn.create_channel().await.unwrap();
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    for q in ["order.test-handler", "order.test-handler.dlq"] {
        channel
            .queue_declare(
                q.into(),
                QueueDeclareOptions {
                    durable: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .unwrap();
    }
    let park = |id: &'static str| {
        let mut headers = FieldTable::default();
        headers.insert(
            "x-error".into(),
            AMQPValue::LongString("payload does not parse".into()),
        );
        headers.insert(
            "x-error-kind".into(),
            AMQPValue::LongString("malformed".into()),
        );
        headers.insert("x-attempt".into(), AMQPValue::LongLongInt(1));
        headers.insert(
            "x-original-routing-key".into(),
            AMQPValue::LongString("order.placed".into()),
        );
        let channel = channel.clone();
        async move {
            channel
                .basic_publish(
                    "".into(),
                    "order.test-handler.dlq".into(),
                    BasicPublishOptions::default(),
                    b"{not json",
                    BasicProperties::default()
                        .with_message_id(id.into())
                        .with_type("order.placed".into())
                        .with_headers(headers),
                )
                .await
                .unwrap()
                .await
                .unwrap();
        }
    };
    park("11111111-1111-1111-1111-111111111111").await;
    park("22222222-2222-2222-2222-222222222222").await;
    let (status, shown) = api(&relay, "GET", "/api/dlq/order.test-handler.dlq", None).await;
    assert_eq!(status, 200, "{shown}");
    let messages = shown["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 2, "{shown}");
    assert_eq!(messages[0]["error"], "payload does not parse");
    assert_eq!(messages[0]["error_kind"], "malformed");
    let (status, retried) = api(
        &relay,
        "POST",
        "/api/dlq/order.test-handler.dlq/retry",
        Some(json!({ "message_ids": ["11111111-1111-1111-1111-111111111111"] })),
    )
    .await;
    assert_eq!(
        (status, retried["retried"].as_i64()),
        (200, Some(1)),
        "{retried}"
    );
    let mut work = channel
        .basic_consume(
            "order.test-handler".into(),
            "t".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let back = tokio::time::timeout(Duration::from_secs(10), work.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(
        back.properties.message_id().as_ref().unwrap().as_str(),
        "11111111-1111-1111-1111-111111111111"
    );
    let headers = back.properties.headers().clone().unwrap_or_default();
    assert!(headers.inner().get("x-error").is_none() && headers.inner().get("x-attempt").is_none());
    assert!(headers.inner().get("x-original-routing-key").is_some());
    let out = cli(
        &world,
        &[
            "dlq",
            "discard",
            "order.test-handler.dlq",
            "--all",
            "--reason",
            "test data",
        ],
    )
    .await;
    assert_eq!(out["discarded"], 1);
    let (_, shown) = api(&relay, "GET", "/api/dlq/order.test-handler.dlq", None).await;
    assert_eq!(
        shown["messages"].as_array().map(Vec::len),
        Some(0),
        "{shown}"
    );
    let (_, audit) = api(&relay, "GET", "/api/audit", None).await;
    let actions: Vec<&str> = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    for action in ["replay", "pause", "resume", "dlq-retry", "dlq-discard"] {
        assert!(
            actions.contains(&action),
            "{action} is in the audit log: {actions:?}"
        );
    }
    let discard = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["action"] == "dlq-discard")
        .unwrap();
    assert_eq!(discard["detail"]["body"], "{not json");
    assert_eq!(discard["reason"], "test data");
    relay.terminate().await;
}
