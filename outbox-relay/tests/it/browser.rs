//! The ops dashboard (docs/DASHBOARD.md) in a real browser: Debian's headless
//! chromium driven through chromedriver (WebDriver, fantoccini), against a
//! relay process with its own database and vhost. It logs in through the
//! form, watches a paused source's pending count change when events are
//! written, replays an event, retries a dead letter with a click (and
//! consumes it from the work queue), discards another, and checks the audit
//! trail. Screenshots of every view, at 1280×800 and at phone size, go to
//! `target/test-artifacts/dashboard/`.
//!
//! `cargo xtask test` installs chromium and chromium-driver and sets
//! CHROMEDRIVER and CHROME; run alone with
//! `cargo test -p orderflow-outbox-relay --test it browser -- --nocapture`.

use std::{
    future::Future,
    panic::AssertUnwindSafe,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::Duration,
};

use fantoccini::{Client, ClientBuilder, Locator, elements::Element};
use futures_util::{FutureExt as _, StreamExt as _};
use hyper_util::client::legacy::connect::HttpConnector;
use orderflow_amqp::{
    Topology,
    lapin::{
        BasicProperties, Channel, Connection,
        options::{
            BasicConsumeOptions, BasicPublishOptions, ConfirmSelectOptions, QueueBindOptions,
            QueueDeclareOptions,
        },
        types::{AMQPValue, FieldTable},
    },
};
use serde_json::{Value, json};
use tokio::process::{Child, Command};
use uuid::Uuid;

use crate::helpers::{Consumer, Relay, World, insert};

const TOKEN: &str = "browser-test-admin-token-0123456789";
const OPERATOR: &str = "ada";
/// How long the page may take to show what the test waits for.
const DEADLINE: Duration = Duration::from_secs(30);
/// The consumer queues the test's dead letters live in: the order service's
/// handler of payment.completed, named as services/shared/consumer/src/
/// topology.rs names them. (A DLQ belongs to the source of its service, here
/// `order`, the relay's one source: its audit log records the actions.)
const HANDLER: &str = "confirm-on-payment-completed";
const WORK_QUEUE: &str = "order.confirm-on-payment-completed";
const DLQ: &str = "order.confirm-on-payment-completed.dlq";
const PRODUCER: &str = "payment";
const EVENT_TYPE: &str = "payment.completed";
const DESKTOP: (u32, u32) = (1280, 800);
const PHONE: (u32, u32) = (390, 844);

#[tokio::test(flavor = "multi_thread")]
async fn the_dashboard_works_in_a_real_browser() {
    let world = World::new().await;
    // RELAY_RABBITMQ_MANAGEMENT_URL defaults to the management API of the
    // AMQP_URL's host, user and vhost: the test's own vhost.
    let relay = world.relay(&[("RELAY_ADMIN_TOKEN", TOKEN)]).await;

    // Without a session every page, asset and API route answers 401; the
    // probes stay open.
    for path in ["/", "/assets/app.js", "/assets/app.css", "/api/overview"] {
        assert_eq!(relay.get(path).await.0, 401, "GET {path} without a token");
    }
    assert_eq!(relay.get("/metrics").await.0, 200, "GET /metrics");

    let driver = ChromeDriver::start().await;
    let page = Page::open(&driver, &relay).await;
    let outcome = AssertUnwindSafe(scenario(&world, &page))
        .catch_unwind()
        .await;
    if outcome.is_err() {
        // Best effort: the session itself may be what failed.
        let shot = AssertUnwindSafe(page.screenshot("failure"))
            .catch_unwind()
            .await;
        let url = page.client.current_url().await;
        eprintln!(
            "the browser test failed; the page at that moment: {:?} (url {:?})",
            shot.ok(),
            url.map(|u| u.to_string())
        );
    }
    page.close().await;
    driver.stop().await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

async fn scenario(world: &World, page: &Page) {
    // ------------------------------------------------------------ log in
    page.visit("/").await;
    page.until("the login form is shown", || async {
        let token = page.all("input[name=\"token\"]").await;
        let operator = page.all("input[name=\"operator\"]").await;
        ok_if(
            !token.is_empty() && !operator.is_empty(),
            "no token and operator inputs",
        )
    })
    .await;
    assert!(
        page.all(&sel("operator")).await.is_empty(),
        "the dashboard is not served before logging in"
    );
    page.screenshot("login").await;
    page.type_into("form input[name=\"token\"]", TOKEN).await;
    page.type_into("form input[name=\"operator\"]", OPERATOR)
        .await;
    page.click_css(
        "form:has(input[name=\"token\"]) :is(button:not([type]), button[type=\"submit\"], input[type=\"submit\"])",
    )
    .await;
    page.wait_text("operator", OPERATOR).await;

    // ---------------------------------------------- overview, pause, live
    page.wait_text("source-order-state", "running").await;
    page.wait_text("source-order-pending", "0").await;
    assert!(
        page.text(&sel("source-order-database"))
            .await
            .is_some_and(|db| db.starts_with("postgres://") && !db.contains(":***@")),
        "the source's database is shown without a password"
    );

    page.click("source-order-pause").await;
    page.answer_dialog(Some("browser test: hold the order outbox"))
        .await;
    page.wait_text("source-order-state", "paused").await;
    page.until("the card says who paused it and why", || async {
        let info = page
            .text(&sel("source-order-paused-info"))
            .await
            .unwrap_or_default();
        ok_if(
            info.contains(OPERATOR) && info.contains("hold the order outbox"),
            info,
        )
    })
    .await;
    // Every replica stops within a second: let the page refresh twice
    // (2 s apart) while paused before writing, so nothing slips through.
    for _ in 0..2 {
        let before = page.attr("overview-updated", "data-generated-at").await;
        page.until("the overview refreshes", || async {
            let now = page.attr("overview-updated", "data-generated-at").await;
            ok_if(now != before, format!("{now:?}"))
        })
        .await;
        page.wait_text("source-order-state", "paused").await;
    }

    let consumer = Consumer::start(&world.broker, &["test.#"]).await;
    let client = world.sql().await;
    let aggregates: Vec<Uuid> = (0..5).map(|_| Uuid::new_v4()).collect();
    let events: Vec<(Uuid, i32)> = aggregates.iter().map(|a| (*a, 0)).collect();
    insert(&client, &events, "test.happened").await;
    page.wait_text("source-order-pending", "5").await;
    page.until("the oldest pending age is shown", || async {
        let age = page
            .text(&sel("source-order-oldest"))
            .await
            .unwrap_or_default();
        ok_if(age.ends_with(" s") || age.contains("min"), age)
    })
    .await;
    page.screenshot("overview").await;
    assert_eq!(consumer.distinct(), 0, "nothing is published while paused");

    page.click("source-order-pause").await; // now "Resume…"
    page.answer_dialog(Some("browser test: done")).await;
    page.wait_text("source-order-state", "running").await;
    page.wait_text("source-order-pending", "0").await;
    page.wait_text("source-order-published", "5").await;
    consumer.wait_for(5, DEADLINE).await;
    page.until("the rate chart has data", || async {
        let points = page.attr("source-order-chart", "data-points").await;
        let bars = page
            .all(&format!(
                "{} rect.bar:not(.zero)",
                sel("source-order-chart")
            ))
            .await;
        ok_if(
            !bars.is_empty(),
            format!("{points:?} points, no bar above zero"),
        )
    })
    .await;

    // ---------------------------------------------------- events, replay
    let ids: Vec<String> = client
        .query("SELECT id::text FROM outbox ORDER BY seq", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(ids.len(), 5);
    page.click("nav-events").await;
    page.until("the source list is filled", || async {
        let v = page
            .js(
                "return document.getElementById('events-source').value",
                vec![],
            )
            .await;
        ok_if(v == json!("order"), v.to_string())
    })
    .await;
    page.click("events-search").await;
    page.until("the 5 events are listed", || async {
        let rows = page.all("#events-body tr[data-id]").await.len();
        ok_if(rows == 5, format!("{rows} rows"))
    })
    .await;
    let first = &ids[0];
    page.wait_text(&format!("event-{first}-status"), "published")
        .await;
    page.click(&format!("event-{first}")).await;
    page.until("the event's payload is shown", || async {
        let payload = page
            .text(&sel("event-detail-payload"))
            .await
            .unwrap_or_default();
        ok_if(
            payload.contains(&aggregates[0].to_string()) && payload.contains("\"agg\""),
            payload,
        )
    })
    .await;
    page.wait_text("event-detail-id", first).await;
    page.wait_text("event-detail-attempts", "0").await;
    let headers = page
        .text(&sel("event-detail-headers"))
        .await
        .unwrap_or_default();
    assert!(headers.contains("traceparent"), "headers shown: {headers}");
    let published = page
        .text(&sel("event-detail-published"))
        .await
        .unwrap_or_default();
    assert_eq!(published, "yes", "published state shown");
    page.screenshot("events").await;

    page.click("event-replay").await;
    page.answer_dialog(Some("browser test: replay one")).await;
    page.until("the replay is confirmed", || async {
        let notice = page.text(&sel("notice")).await.unwrap_or_default();
        ok_if(notice.contains("Replay"), notice)
    })
    .await;
    let replayed = first.clone();
    orderflow_testkit::wait_until(
        "the replayed event is delivered again with the same message id",
        DEADLINE,
        || {
            let copies = consumer
                .snapshot()
                .iter()
                .filter(|m| m.message_id == replayed)
                .count();
            std::future::ready(copies >= 2)
        },
    )
    .await;

    // ---------------------------------------------- dead letters, retry
    let (amqp, channel) = amqp_channel(&world.broker.url()).await;
    declare_consumer_queues(&channel).await;
    let retried = Uuid::new_v4().to_string();
    let discarded = Uuid::new_v4().to_string();
    let kept = Uuid::new_v4().to_string(); // left for the phone screenshots
    dead_letter(
        &channel,
        &retried,
        "payload does not parse: missing field `lines`",
    )
    .await;
    dead_letter(&channel, &discarded, "no such product 42").await;
    dead_letter(&channel, &kept, "payment for an unknown order").await;
    let work = WorkQueue::consume(&channel).await;

    page.click("nav-overview").await;
    page.until("the queue table shows the dead letters", || async {
        let dlq = page
            .text(&sel(&format!("queue-{WORK_QUEUE}-dlq-messages")))
            .await;
        let consumers = page
            .text(&sel(&format!("queue-{WORK_QUEUE}-consumers")))
            .await;
        ok_if(
            dlq.as_deref() == Some("3") && consumers.as_deref() == Some("1"),
            format!("dlq depth {dlq:?}, consumers {consumers:?}"),
        )
    })
    .await;
    page.screenshot("overview-queues").await;
    page.click(&format!("queue-{WORK_QUEUE}-dlq-messages"))
        .await;
    // The row is read in the same look as the buttons: a refresh clicked
    // here re-renders the list, and a read after the wait could fall
    // between two renders.
    page.until(
        "the dead letters are listed, the retried one with its type, reason and handler",
        || async {
            page.refresh_dlq_unless(&format!("dlq-retry-{discarded}"))
                .await;
            let retry = page.all(&sel(&format!("dlq-retry-{retried}"))).await;
            let discard = page.all(&sel(&format!("dlq-discard-{discarded}"))).await;
            let row = page
                .text(&sel(&format!("dlq-msg-{retried}")))
                .await
                .unwrap_or_default();
            let missing: Vec<&str> = [EVENT_TYPE, "missing field", "malformed", HANDLER]
                .into_iter()
                .filter(|shown| !row.contains(shown))
                .collect();
            ok_if(
                !retry.is_empty() && !discard.is_empty() && missing.is_empty(),
                format!(
                    "buttons listed: retry {}, discard {}; row {row:?} lacks {missing:?}",
                    !retry.is_empty(),
                    !discard.is_empty()
                ),
            )
        },
    )
    .await;
    page.screenshot("dlq").await;

    page.click(&format!("dlq-retry-{retried}")).await;
    page.until("the retry is confirmed", || async {
        let notice = page.text(&sel("notice")).await.unwrap_or_default();
        ok_if(notice.contains("sent back"), notice)
    })
    .await;
    let delivery = work.wait_for(&retried).await;
    assert_eq!(
        String::from_utf8_lossy(&delivery.body),
        String::from_utf8_lossy(&dead_letter_body(&retried)),
        "the retried message is the dead letter, body unchanged"
    );
    assert!(
        matches!(delivery.attempt, None | Some(0)),
        "the attempt count is reset: x-attempt = {:?}",
        delivery.attempt
    );
    page.until("the retried message leaves the list", || async {
        page.refresh_dlq_unless("").await;
        let still = page.all(&sel(&format!("dlq-msg-{retried}"))).await;
        ok_if(still.is_empty(), "still listed")
    })
    .await;

    page.click(&format!("dlq-discard-{discarded}")).await;
    page.answer_dialog(Some("browser test: junk")).await;
    page.until("the discarded message leaves the list", || async {
        page.refresh_dlq_unless("").await;
        let still = page.all(&sel(&format!("dlq-msg-{discarded}"))).await;
        ok_if(still.is_empty(), "still listed")
    })
    .await;
    assert!(
        !work.received(&discarded),
        "a discarded message is not sent to the work queue"
    );

    // ------------------------------------------------- replays, activity
    page.click("nav-activity").await;
    page.until("the audit log lists every action of the test", || async {
        page.click("activity-refresh").await;
        let mut missing = Vec::new();
        for action in ["pause", "resume", "replay", "dlq-retry", "dlq-discard"] {
            if page
                .all(&format!("#audit-body tr[data-action=\"{action}\"]"))
                .await
                .is_empty()
            {
                missing.push(action);
            }
        }
        let replays = page
            .all("#replays-body tr[data-action=\"replay\"]")
            .await
            .len();
        ok_if(
            missing.is_empty() && replays == 1,
            format!("missing {missing:?}, {replays} replays"),
        )
    })
    .await;
    let audit = page.text(&sel("audit-table")).await.unwrap_or_default();
    assert!(
        audit.contains(OPERATOR),
        "actions are recorded with the operator: {audit}"
    );
    assert!(
        audit.contains("browser test: junk"),
        "the discard reason is shown: {audit}"
    );
    page.screenshot("activity").await;

    // ------------------------------------------------------ phone size
    page.viewport(PHONE).await;
    for view in ["overview", "events", "dlq", "activity"] {
        page.click(&format!("nav-{view}")).await;
        page.until("the view is shown", || async {
            let hidden = page
                .js(
                    &format!("return document.getElementById('view-{view}').hidden"),
                    vec![],
                )
                .await;
            ok_if(hidden == json!(false), format!("hidden: {hidden}"))
        })
        .await;
        match view {
            "overview" => page.wait_text("source-order-pending", "0").await,
            "events" => {
                page.click("events-search").await;
                page.until("the events are listed", || async {
                    let rows = page.all("#events-body tr[data-id]").await.len();
                    ok_if(rows == 5, format!("{rows} rows"))
                })
                .await;
            }
            "dlq" => {
                page.until("the kept dead letter is listed", || async {
                    page.refresh_dlq_unless(&format!("dlq-msg-{kept}")).await;
                    let row = page.all(&sel(&format!("dlq-msg-{kept}"))).await;
                    ok_if(!row.is_empty(), "not listed")
                })
                .await;
            }
            _ => {}
        }
        let overflow = page
            .js(
                "return Math.max(0, document.documentElement.scrollWidth - window.innerWidth)",
                vec![],
            )
            .await;
        assert_eq!(
            overflow,
            json!(0),
            "the {view} view fits a phone's width (tables scroll inside their box)"
        );
        page.screenshot(&format!("{view}-phone")).await;
    }
    page.viewport(DESKTOP).await;

    amqp.close(200, "done".into()).await.unwrap();

    let errors = page.js("return window.dashboardErrors", vec![]).await;
    assert_eq!(errors, json!([]), "no script error on the page");
    assert!(page.shown_error().await.is_none());

    // ---------------------------------------------------------- log out
    page.click("logout").await;
    page.until("the login form is back", || async {
        let token = page.all("input[name=\"token\"]").await;
        ok_if(!token.is_empty(), "no login form")
    })
    .await;
    page.visit("/").await;
    assert!(
        !page.all("input[name=\"token\"]").await.is_empty(),
        "after logging out the dashboard asks for the token again"
    );
}

fn ok_if(holds: bool, seen: impl Into<String>) -> Result<(), String> {
    if holds { Ok(()) } else { Err(seen.into()) }
}

/// A CSS selector for `data-testid="<id>"`.
fn sel(testid: &str) -> String {
    format!(
        "[data-testid=\"{}\"]",
        testid.replace('\\', "\\\\").replace('"', "\\\"")
    )
}

// -------------------------------------------------------------- browser

/// chromedriver on a port of its own, killed at the end (and on drop).
struct ChromeDriver {
    child: Child,
    url: String,
}

impl ChromeDriver {
    async fn start() -> Self {
        let bin = std::env::var("CHROMEDRIVER").unwrap_or_else(|_| "/usr/bin/chromedriver".into());
        assert!(
            Path::new(&bin).exists(),
            "chromedriver not found at {bin}: `cargo xtask test` installs chromium and \
             chromium-driver (apt) and sets CHROMEDRIVER"
        );
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .unwrap()
            .port();
        let child = Command::new(&bin)
            .arg(format!("--port={port}"))
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {bin}: {e}"));
        let addr = format!("127.0.0.1:{port}");
        // It listens once it is ready (it speaks HTTP/1.1 only, keep-alive).
        orderflow_testkit::wait_until("chromedriver listens", DEADLINE, || async {
            tokio::net::TcpStream::connect(&addr).await.is_ok()
        })
        .await;
        Self {
            child,
            url: format!("http://{addr}"),
        }
    }

    async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}

/// One headless chromium session on the relay's dashboard.
struct Page {
    client: Client,
    base: String,
}

impl Page {
    async fn open(driver: &ChromeDriver, relay: &Relay) -> Self {
        let chrome = std::env::var("CHROME").unwrap_or_else(|_| "/usr/bin/chromium".into());
        let mut caps = serde_json::Map::new();
        caps.insert("browserName".into(), json!("chrome"));
        caps.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": chrome,
                "args": [
                    "--headless=new",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-dev-shm-usage",
                    "--hide-scrollbars",
                    "--force-device-scale-factor=1",
                    format!("--window-size={},{}", DESKTOP.0, DESKTOP.1),
                ],
            }),
        );
        let client = ClientBuilder::new(HttpConnector::new())
            .capabilities(caps)
            .connect(&driver.url)
            .await
            .unwrap_or_else(|e| panic!("cannot open a chromium session ({chrome}): {e}"));
        let page = Self {
            client,
            base: format!("http://{}", relay.http),
        };
        page.viewport(DESKTOP).await;
        page
    }

    async fn close(self) {
        if let Err(e) = self.client.close().await {
            eprintln!("warning: closing the browser session: {e}");
        }
    }

    async fn visit(&self, path: &str) {
        self.client
            .goto(&format!("{}{path}", self.base))
            .await
            .unwrap_or_else(|e| panic!("GET {path} in the browser: {e}"));
    }

    async fn js(&self, script: &str, args: Vec<Value>) -> Value {
        self.client
            .execute(script, args)
            .await
            .unwrap_or_else(|e| panic!("script {script}: {e}"))
    }

    async fn all(&self, css: &str) -> Vec<Element> {
        self.client
            .find_all(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("find {css}: {e}"))
    }

    /// The rendered text of the first element matching `css`, if there is one.
    async fn text(&self, css: &str) -> Option<String> {
        let element = self.all(css).await.into_iter().next()?;
        element.text().await.ok()
    }

    async fn attr(&self, testid: &str, name: &str) -> Option<String> {
        let element = self.all(&sel(testid)).await.into_iter().next()?;
        element.attr(name).await.ok().flatten()
    }

    /// The error banner's text while it is shown.
    async fn shown_error(&self) -> Option<String> {
        let shown = self
            .js(
                "const e = document.getElementById('error'); \
                 return e && !e.hidden ? e.textContent.trim() : null",
                vec![],
            )
            .await;
        shown.as_str().map(str::to_owned)
    }

    /// Polls `check` until it is `Ok`; fails at once when the page shows an
    /// error, and after [`DEADLINE`] with what was last seen.
    async fn until<T, F, Fut>(&self, what: &str, mut check: F) -> T
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, String>>,
    {
        orderflow_testkit::wait_for(what, DEADLINE, || {
            let next = check();
            async move {
                if let Some(error) = self.shown_error().await {
                    panic!("the page shows an error while waiting until {what}: {error}");
                }
                next.await
            }
        })
        .await
    }

    async fn wait_text(&self, testid: &str, expected: &str) {
        self.until(&format!("{testid} shows {expected:?}"), || async {
            let text = self.text(&sel(testid)).await;
            ok_if(text.as_deref() == Some(expected), format!("{text:?}"))
        })
        .await;
    }

    async fn click(&self, testid: &str) {
        self.click_css(&sel(testid)).await;
    }

    /// Waits until `css` is shown and enabled, scrolls it to the middle of
    /// the viewport (clear of the sticky header) and clicks it.
    async fn click_css(&self, css: &str) {
        self.until(&format!("{css} is clicked"), || async {
            let Some(element) = self.all(css).await.into_iter().next() else {
                return Err("absent".to_owned());
            };
            let shown = element.is_displayed().await.unwrap_or(false);
            let enabled = element.is_enabled().await.unwrap_or(false);
            if !(shown && enabled) {
                return Err(format!("displayed {shown}, enabled {enabled}"));
            }
            self.js(
                "document.querySelector(arguments[0])?.scrollIntoView({block: 'center'})",
                vec![json!(css)],
            )
            .await;
            match element.click().await {
                Ok(()) => Ok(()),
                // The view re-rendered between finding and clicking: find it again.
                Err(e) if e.is_stale_element_reference() => Err(e.to_string()),
                Err(e) => panic!("click {css}: {e}"),
            }
        })
        .await;
    }

    async fn type_into(&self, css: &str, text: &str) {
        let element = self
            .until(&format!("{css} is there"), || async {
                self.all(css)
                    .await
                    .into_iter()
                    .next()
                    .ok_or_else(|| "absent".to_owned())
            })
            .await;
        element
            .clear()
            .await
            .unwrap_or_else(|e| panic!("clear {css}: {e}"));
        element
            .send_keys(text)
            .await
            .unwrap_or_else(|e| panic!("type into {css}: {e}"));
    }

    /// Answers the reason dialog the page opened: types `reason`, confirms.
    async fn answer_dialog(&self, reason: Option<&str>) {
        self.until("the reason dialog opens", || async {
            let open = self.all("#reason-dialog[open]").await;
            ok_if(!open.is_empty(), "closed")
        })
        .await;
        if let Some(reason) = reason {
            self.type_into(&sel("reason-input"), reason).await;
        }
        self.click("reason-confirm").await;
        self.until("the reason dialog closes", || async {
            let open = self.all("#reason-dialog[open]").await;
            ok_if(open.is_empty(), "still open")
        })
        .await;
    }

    /// Clicks the dead-letter view's Refresh button unless `testid` is
    /// listed already (the list does not refresh by itself).
    async fn refresh_dlq_unless(&self, testid: &str) {
        if !testid.is_empty() && !self.all(&sel(testid)).await.is_empty() {
            return;
        }
        let button = self.all(&sel("dlq-refresh")).await;
        if let Some(button) = button.first()
            && button.is_enabled().await.unwrap_or(false)
        {
            let _ = button.click().await;
        }
    }

    /// Sizes the window so that the page's viewport is `width`×`height`.
    async fn viewport(&self, (width, height): (u32, u32)) {
        for _ in 0..3 {
            let inner = self
                .js("return [window.innerWidth, window.innerHeight]", vec![])
                .await;
            let (iw, ih) = (inner[0].as_u64().unwrap(), inner[1].as_u64().unwrap());
            if (iw, ih) == (u64::from(width), u64::from(height)) {
                return;
            }
            let (ow, oh) = self.client.get_window_size().await.unwrap();
            let w = u64::from(width) + ow.saturating_sub(iw);
            let h = u64::from(height) + oh.saturating_sub(ih);
            self.client
                .set_window_size(u32::try_from(w).unwrap(), u32::try_from(h).unwrap())
                .await
                .unwrap();
        }
        let inner = self
            .js("return [window.innerWidth, window.innerHeight]", vec![])
            .await;
        assert_eq!(
            inner,
            json!([width, height]),
            "the browser's viewport can be sized to {width}×{height}"
        );
    }

    /// Saves what the browser shows as `<name>.png` under the artifacts
    /// directory and prints the path.
    async fn screenshot(&self, name: &str) -> PathBuf {
        let dir = artifacts_dir();
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
        let path = dir.join(format!("{name}.png"));
        let png = self
            .client
            .screenshot()
            .await
            .unwrap_or_else(|e| panic!("screenshot {name}: {e}"));
        std::fs::write(&path, png).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        println!("screenshot: {}", path.display());
        path
    }
}

/// `target/test-artifacts/dashboard` of the workspace (or of CARGO_TARGET_DIR).
fn artifacts_dir() -> PathBuf {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the crate is inside the workspace")
        .to_path_buf();
    let target = match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if !dir.is_empty() => workspace.join(dir),
        _ => workspace.join("target"),
    };
    target.join("test-artifacts").join("dashboard")
}

// ------------------------------------------------------------ RabbitMQ

/// A connection to the test's vhost and a channel in confirm mode.
async fn amqp_channel(url: &str) -> (Connection, Channel) {
    let conn = orderflow_amqp::connect(url, "browser-test").await.unwrap();
    let channel = conn.create_channel().await.unwrap();
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    (conn, channel)
}

/// The work queue and its DLQ as the consumer runtime declares them
/// (services/shared/consumer/src/topology.rs): quorum queues, the work queue
/// dead-lettering into the DLQ, bound to the producer's exchange.
async fn declare_consumer_queues(channel: &Channel) {
    Topology::declare_exchange(channel, PRODUCER).await.unwrap();
    let quorum = || {
        let mut args = FieldTable::default();
        args.insert(
            "x-queue-type".into(),
            AMQPValue::LongString("quorum".into()),
        );
        args
    };
    let durable = QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    };
    channel
        .queue_declare(DLQ.into(), durable, quorum())
        .await
        .unwrap();
    let mut work = quorum();
    work.insert(
        "x-dead-letter-exchange".into(),
        AMQPValue::LongString("".into()),
    );
    work.insert(
        "x-dead-letter-routing-key".into(),
        AMQPValue::LongString(DLQ.into()),
    );
    work.insert(
        "x-dead-letter-strategy".into(),
        AMQPValue::LongString("at-least-once".into()),
    );
    work.insert(
        "x-overflow".into(),
        AMQPValue::LongString("reject-publish".into()),
    );
    work.insert("x-delivery-limit".into(), AMQPValue::LongLongInt(50));
    channel
        .queue_declare(WORK_QUEUE.into(), durable, work)
        .await
        .unwrap();
    channel
        .queue_bind(
            WORK_QUEUE.into(),
            Topology::exchange(PRODUCER).as_str().into(),
            EVENT_TYPE.into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
}

/// The body of dead letter `id` (the same for the same id).
fn dead_letter_body(id: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "specversion": "1.0",
        "id": id,
        "source": "orderflow/payment",
        "type": EVENT_TYPE,
        "datacontenttype": "application/json",
        "data": {"order_id": id, "amount_minor": 2500},
    }))
    .unwrap()
}

/// Parks a message in the DLQ with the headers the consumer runtime sets
/// (services/shared/consumer/src/retry.rs, `dead_letter_properties`).
async fn dead_letter(channel: &Channel, id: &str, error: &str) {
    let text = |s: &str| AMQPValue::LongString(s.into());
    let mut headers = FieldTable::default();
    headers.insert("x-error".into(), text(error));
    headers.insert("x-error-kind".into(), text("malformed"));
    headers.insert("x-attempt".into(), AMQPValue::LongLongInt(1));
    headers.insert("x-handler".into(), text(HANDLER));
    headers.insert(
        "x-original-exchange".into(),
        text(&Topology::exchange(PRODUCER)),
    );
    headers.insert("x-original-routing-key".into(), text(EVENT_TYPE));
    headers.insert(
        "x-failed-at".into(),
        text(&chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)),
    );
    let properties = BasicProperties::default()
        .with_message_id(id.into())
        .with_type(EVENT_TYPE.into())
        .with_content_type("application/cloudevents+json".into())
        .with_delivery_mode(2)
        .with_headers(headers);
    let confirm = channel
        .basic_publish(
            "".into(),
            DLQ.into(),
            BasicPublishOptions {
                mandatory: true,
                immediate: false,
            },
            &dead_letter_body(id),
            properties,
        )
        .await
        .unwrap()
        .await
        .unwrap();
    assert!(
        confirm.is_ack(),
        "the broker took the dead letter: {confirm:?}"
    );
}

/// What the work queue's consumer received.
#[derive(Debug, Clone)]
struct WorkDelivery {
    message_id: String,
    body: Vec<u8>,
    attempt: Option<i64>,
}

/// Consumes the work queue, as the handler would, and records every delivery.
struct WorkQueue {
    received: Arc<Mutex<Vec<WorkDelivery>>>,
}

impl WorkQueue {
    async fn consume(channel: &Channel) -> Self {
        let mut deliveries = channel
            .basic_consume(
                WORK_QUEUE.into(),
                "browser-test".into(),
                BasicConsumeOptions {
                    no_ack: true,
                    ..BasicConsumeOptions::default()
                },
                FieldTable::default(),
            )
            .await
            .unwrap();
        let received = Arc::new(Mutex::new(Vec::new()));
        let sink = received.clone();
        tokio::spawn(async move {
            while let Some(Ok(d)) = deliveries.next().await {
                let attempt = d
                    .properties
                    .headers()
                    .as_ref()
                    .and_then(|h| h.inner().get("x-attempt").cloned())
                    .map(|v| match v {
                        AMQPValue::LongLongInt(n) => n,
                        AMQPValue::LongInt(n) => n.into(),
                        AMQPValue::ShortInt(n) => n.into(),
                        AMQPValue::ShortShortInt(n) => n.into(),
                        AMQPValue::LongUInt(n) => n.into(),
                        AMQPValue::ShortUInt(n) => n.into(),
                        AMQPValue::ShortShortUInt(n) => n.into(),
                        other => panic!("x-attempt is not an integer: {other:?}"),
                    });
                sink.lock().unwrap().push(WorkDelivery {
                    message_id: d
                        .properties
                        .message_id()
                        .as_ref()
                        .map(ToString::to_string)
                        .unwrap_or_default(),
                    body: d.data,
                    attempt,
                });
            }
        });
        Self { received }
    }

    fn received(&self, id: &str) -> bool {
        self.received
            .lock()
            .unwrap()
            .iter()
            .any(|d| d.message_id == id)
    }

    async fn wait_for(&self, id: &str) -> WorkDelivery {
        orderflow_testkit::wait_for(
            &format!("message {id} is consumed from {WORK_QUEUE}"),
            DEADLINE,
            || {
                let found = self
                    .received
                    .lock()
                    .unwrap()
                    .iter()
                    .find(|d| d.message_id == id)
                    .cloned();
                std::future::ready(found.ok_or_else(|| "not yet".to_owned()))
            },
        )
        .await
    }
}
