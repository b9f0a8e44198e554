//! ImportStock end to end in process: the importer library streams a
//! generated file (with every kind of bad row) to a real server on a real
//! database; resuming through a proxy that cuts the connection mid-stream.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use diesel::{QueryableByName, sql_types};
use diesel_async::RunQueryDsl as _;
use indicatif::ProgressBar;
use orderflow_importer::{
    file::RowReader,
    generate::{self, BadKind},
    import,
};
use orderflow_proto::inventory::v1 as pb;
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::{TcpListener, TcpStream},
};
use tonic::Code;
use tonic_types::StatusExt as _;
use uuid::Uuid;

use crate::helpers::{TestApp, product_request};

/// A generated file, and what importing it must leave behind.
struct StockFile {
    _dir: tempfile::TempDir,
    path: std::path::PathBuf,
    bad: BTreeMap<u64, BadKind>,
    /// sku -> (name, currency, price, quantity) of every good row.
    good: HashMap<String, (String, String, i64, i64)>,
}

fn stock_file(rows: u64, seed: u64) -> StockFile {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("stock.csv");
    let mut bad = BTreeMap::new();
    let spec = generate::Spec {
        rows,
        bad_per_10k: 300,
        seed,
        details: false,
    };
    generate::generate(std::fs::File::create(&path).unwrap(), spec, |line, kind| {
        bad.insert(line, kind);
    })
    .unwrap();
    let mut good = HashMap::new();
    let mut reader = RowReader::open(&path).unwrap();
    while let Some(row) = reader.next_row().unwrap() {
        if !bad.contains_key(&(row.row_number as u64)) {
            let price = row.unit_price.unwrap();
            good.insert(
                row.sku,
                (row.name, price.currency, price.amount_minor, row.quantity),
            );
        }
    }
    StockFile {
        _dir: dir,
        path,
        bad,
        good,
    }
}

#[derive(QueryableByName, Debug, PartialEq, Eq, Clone)]
struct ProductRow {
    #[diesel(sql_type = sql_types::Uuid)]
    product_id: Uuid,
    #[diesel(sql_type = sql_types::Text)]
    sku: String,
    #[diesel(sql_type = sql_types::Text)]
    name: String,
    #[diesel(sql_type = sql_types::Text)]
    currency: String,
    #[diesel(sql_type = sql_types::BigInt)]
    unit_price_minor: i64,
    #[diesel(sql_type = sql_types::BigInt)]
    on_hand: i64,
    #[diesel(sql_type = sql_types::Timestamptz)]
    updated_at: chrono::DateTime<chrono::Utc>,
}

async fn products(app: &TestApp) -> Vec<ProductRow> {
    diesel::sql_query(
        "SELECT product_id, sku, name, currency, unit_price_minor, on_hand, updated_at \
         FROM products ORDER BY sku",
    )
    .load(&mut app.sql().await)
    .await
    .unwrap()
}

/// The table holds exactly the file's good rows.
async fn assert_exactly_the_good_rows(app: &TestApp, file: &StockFile) {
    let rows = products(app).await;
    assert_eq!(rows.len(), file.good.len(), "one product per good row");
    let ids: BTreeSet<_> = rows.iter().map(|p| p.product_id).collect();
    assert_eq!(ids.len(), rows.len(), "one id per product");
    for p in rows {
        let expected = file
            .good
            .get(&p.sku)
            .unwrap_or_else(|| panic!("{} is not a good row of the file", p.sku));
        assert_eq!(
            (&p.name, &p.currency, p.unit_price_minor, p.on_hand),
            (&expected.0, &expected.1, expected.2, expected.3),
            "{}",
            p.sku
        );
    }
}

async fn error_lines(app: &TestApp, import_id: Uuid) -> BTreeSet<u64> {
    let mut lines = BTreeSet::new();
    import::all_errors(
        &app.url(),
        Some(orderflow_testkit::ADMIN_TOKEN),
        import_id,
        |e| {
            assert!(!e.reason.is_empty(), "{e:?}");
            assert!(lines.insert(e.row_number as u64), "reported twice: {e:?}");
            Ok(())
        },
    )
    .await
    .unwrap();
    lines
}

/// (events, products listed in them) of type inventory.stock_imported.
async fn import_events(app: &TestApp) -> (usize, Vec<String>) {
    let events: Vec<_> = app
        .events()
        .await
        .into_iter()
        .filter(|(t, _)| t == "inventory.stock_imported")
        .collect();
    let skus = events
        .iter()
        .flat_map(|(_, body)| body["data"]["products"].as_array().unwrap().clone())
        // [product_id, sku, name, currency, unit_price_minor, on_hand, created]
        .map(|p| p[1].as_str().unwrap().to_owned())
        .collect();
    (events.len(), skus)
}

fn options(app: &TestApp, file: &StockFile) -> import::Options {
    let mut opts = import::Options::new(app.url(), &file.path);
    opts.token = Some(orderflow_testkit::ADMIN_TOKEN.to_owned());
    opts.backoff = Duration::from_millis(50);
    opts
}

#[tokio::test(flavor = "multi_thread")]
async fn an_import_keeps_exactly_the_good_rows_reports_every_bad_line_and_a_rerun_changes_nothing()
{
    let app = TestApp::spawn().await;
    let file = stock_file(20_000, 11);
    let bad = file.bad.len() as i64;
    let good = file.good.len() as i64;
    assert_eq!(good + bad, 20_000);
    for kind in [
        BadKind::NegativePrice,
        BadKind::PriceNotANumber,
        BadKind::NegativeQuantity,
        BadKind::EmptySku,
        BadKind::Malformed,
        BadKind::UnknownCurrency,
        BadKind::DuplicateSku,
    ] {
        assert!(file.bad.values().any(|k| *k == kind), "no {kind:?} row");
    }

    let first = import::run(&options(&app, &file), &ProgressBar::hidden())
        .await
        .unwrap();
    let i = &first.import;
    assert_eq!(
        (i.rows, i.inserted, i.updated, i.unchanged, i.rejected),
        (20_000, good, 0, 0, bad)
    );
    assert!(i.finished);
    assert_eq!(i.last_row_number, 20_001, "the last line of the file");
    assert_eq!(first.attempts, 1);
    assert_eq!(
        first.first_errors.len(),
        100,
        "the response lists the first 100"
    );
    assert_exactly_the_good_rows(&app, &file).await;
    let id = Uuid::parse_str(&i.import_id).unwrap();
    let reported = error_lines(&app, id).await;
    assert_eq!(reported, file.bad.keys().copied().collect::<BTreeSet<_>>());
    // Reasons name the problem.
    let mut reasons = HashMap::new();
    import::all_errors(&app.url(), Some(orderflow_testkit::ADMIN_TOKEN), id, |e| {
        reasons.insert(e.row_number as u64, e.reason);
        Ok(())
    })
    .await
    .unwrap();
    for (line, kind) in &file.bad {
        let reason = &reasons[line];
        let expected = match kind {
            BadKind::NegativePrice => "unit_price.amount_minor: must not be negative",
            BadKind::PriceNotANumber => "unit_price_minor: not a whole number",
            BadKind::NegativeQuantity => "quantity: must not be negative",
            BadKind::EmptySku => "sku: is required",
            BadKind::Malformed => "3 fields, expected 5",
            BadKind::UnknownCurrency => "unit_price.currency",
            BadKind::DuplicateSku => "was already given on row",
        };
        assert!(
            reason.contains(expected),
            "line {line} ({kind:?}): {reason}"
        );
    }
    // The chunks' events list every new product once.
    let (events, mut skus) = import_events(&app).await;
    assert!(events >= 4, "20,000 rows are at least 4 chunks: {events}");
    skus.sort();
    let mut expected: Vec<_> = file.good.keys().cloned().collect();
    expected.sort();
    assert_eq!(skus, expected);

    // The same file again: nothing inserted, updated or published.
    let before = products(&app).await;
    let outbox = app.count("outbox").await;
    let again = import::run(&options(&app, &file), &ProgressBar::hidden())
        .await
        .unwrap();
    let i = &again.import;
    assert_ne!(i.import_id, first.import.import_id);
    assert_eq!(
        (i.rows, i.inserted, i.updated, i.unchanged, i.rejected),
        (20_000, 0, 0, good, bad)
    );
    assert_eq!(products(&app).await, before, "no row rewritten");
    assert_eq!(app.count("outbox").await, outbox, "no event");
    let id = Uuid::parse_str(&i.import_id).unwrap();
    assert_eq!(
        error_lines(&app, id).await,
        file.bad.keys().copied().collect()
    );
}

/// Forwards connections to `target`; the first one is cut once the client
/// has sent `cut_after` bytes. Returns the proxy's URL and whether the cut
/// happened.
async fn cutting_proxy(
    target: std::net::SocketAddr,
    cut_after: usize,
) -> (String, Arc<AtomicBool>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let cut = Arc::new(AtomicBool::new(false));
    let cut_flag = Arc::clone(&cut);
    tokio::spawn(async move {
        let mut first = true;
        while let Ok((mut client, _)) = listener.accept().await {
            let Ok(mut server) = TcpStream::connect(target).await else {
                continue;
            };
            if !first {
                tokio::spawn(async move {
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                });
                continue;
            }
            first = false;
            let cut_flag = Arc::clone(&cut_flag);
            tokio::spawn(async move {
                let (mut client_read, mut client_write) = client.into_split();
                let (mut server_read, mut server_write) = server.into_split();
                let back = tokio::spawn(async move {
                    let _ = tokio::io::copy(&mut server_read, &mut client_write).await;
                });
                let mut sent = 0;
                let mut buf = vec![0u8; 16 * 1024];
                while let Ok(n) = client_read.read(&mut buf).await {
                    if n == 0 || server_write.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                    sent += n;
                    if sent >= cut_after {
                        cut_flag.store(true, Ordering::SeqCst);
                        break;
                    }
                }
                // Both directions close: the client sees a dropped connection.
                back.abort();
            });
        }
    });
    (format!("http://{addr}"), cut)
}

#[tokio::test(flavor = "multi_thread")]
async fn an_import_cut_mid_stream_resumes_and_ends_as_an_uncut_one() {
    let app = TestApp::spawn().await;
    let file = stock_file(20_000, 12);
    let good = file.good.len() as i64;
    let bad = file.bad.len() as i64;
    // The file is about 700 KB: cut after about a third of it.
    let server: std::net::SocketAddr = app.url().trim_start_matches("http://").parse().unwrap();
    let (url, cut) = cutting_proxy(server, 250_000).await;
    let mut opts = options(&app, &file);
    opts.addr = url;

    let report = import::run(&opts, &ProgressBar::hidden()).await.unwrap();
    assert!(
        AtomicBool::load(&cut, Ordering::SeqCst),
        "the proxy cut the first connection"
    );
    assert!(report.attempts >= 2, "{report:?}");
    let i = &report.import;
    assert_eq!(
        (i.rows, i.inserted, i.updated, i.unchanged, i.rejected),
        (20_000, good, 0, 0, bad),
        "counts as if nothing had happened"
    );
    assert_exactly_the_good_rows(&app, &file).await;
    assert_eq!(
        error_lines(&app, opts.import_id).await,
        file.bad.keys().copied().collect()
    );
    let (_, mut skus) = import_events(&app).await;
    skus.sort();
    let mut expected: Vec<_> = file.good.keys().cloned().collect();
    expected.sort();
    assert_eq!(skus, expected, "every product in exactly one event");
}

fn row(n: i64, sku: &str, price: i64, quantity: i64) -> pb::StockRow {
    pb::StockRow {
        row_number: n,
        sku: sku.to_owned(),
        name: format!("Item {sku}"),
        unit_price: Some(pb::Money {
            amount_minor: price,
            currency: "EUR".to_owned(),
        }),
        quantity,
        client_error: String::new(),
        ..Default::default()
    }
}

fn message(id: &str, rows: Vec<pb::StockRow>) -> pb::ImportStockRequest {
    pb::ImportStockRequest {
        import_id: id.to_owned(),
        rows,
        ..Default::default()
    }
}

/// One stream of `rows` under a new import id and `source`.
async fn import_source(
    app: &TestApp,
    source: &str,
    rows: Vec<pb::StockRow>,
) -> pb::ImportStockResponse {
    let msg = pb::ImportStockRequest {
        import_id: Uuid::new_v4().to_string(),
        source: source.to_owned(),
        rows,
    };
    import_messages(app, vec![msg]).await.unwrap()
}

fn counts(res: &pb::ImportStockResponse) -> (i64, i64, i64, i64, i64) {
    let i = res.import.as_ref().unwrap();
    (i.rows, i.inserted, i.updated, i.unchanged, i.rejected)
}

async fn import_messages(
    app: &TestApp,
    msgs: Vec<pb::ImportStockRequest>,
) -> Result<pb::ImportStockResponse, tonic::Status> {
    app.client
        .clone()
        .import_stock(tokio_stream::iter(msgs))
        .await
        .map(tonic::Response::into_inner)
}

fn violations(status: &tonic::Status) -> Vec<String> {
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    status
        .get_details_bad_request()
        .expect("BadRequest detail")
        .field_violations
        .into_iter()
        .map(|v| v.field)
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_malformed_stream_is_invalid_argument_and_a_finished_import_takes_no_rows() {
    let app = TestApp::spawn().await;
    let id = Uuid::new_v4().to_string();

    let err = import_messages(&app, vec![]).await.unwrap_err();
    assert_eq!(violations(&err), ["import_id"]);
    let err = import_messages(&app, vec![message("", vec![row(1, "A", 1, 1)])])
        .await
        .unwrap_err();
    assert_eq!(violations(&err), ["import_id"]);
    let too_many = (1..=1001).map(|n| row(n, &format!("S{n}"), 1, 1)).collect();
    let err = import_messages(&app, vec![message(&id, too_many)])
        .await
        .unwrap_err();
    assert_eq!(violations(&err), ["rows"]);
    assert!(
        err.message().contains("at most 1000 rows"),
        "{}",
        err.message()
    );
    let err = import_messages(
        &app,
        vec![
            message(&id, vec![row(1, "A", 1, 1), row(3, "B", 1, 1)]),
            message("", vec![row(3, "C", 1, 1)]),
        ],
    )
    .await
    .unwrap_err();
    assert_eq!(violations(&err), ["rows[0].row_number"]);
    let err = import_messages(
        &app,
        vec![
            message(&id, vec![row(10, "A", 1, 1)]),
            message(&Uuid::new_v4().to_string(), vec![]),
        ],
    )
    .await
    .unwrap_err();
    assert_eq!(violations(&err), ["import_id"]);
    assert_eq!(
        app.count("products").await,
        0,
        "the chunk in progress is dropped"
    );

    // A clean run of the same import, then more rows: refused, nothing changes.
    let done = import_messages(&app, vec![message(&id, vec![row(1, "A", 100, 5)])])
        .await
        .unwrap();
    let import = done.import.unwrap();
    assert!(import.finished);
    assert_eq!((import.rows, import.inserted), (1, 1));
    let err = import_messages(&app, vec![message(&id, vec![row(2, "B", 1, 1)])])
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    // Repeating rows it has is fine: they are skipped.
    let again = import_messages(&app, vec![message(&id, vec![row(1, "A", 100, 5)])])
        .await
        .unwrap();
    assert_eq!(again.import.unwrap().rows, 1);
    assert_eq!(app.count("products").await, 1);

    let err = app
        .client
        .clone()
        .get_stock_import(pb::GetStockImportRequest {
            import_id: Uuid::new_v4().to_string(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    let err = app
        .client
        .clone()
        .list_stock_import_errors(pb::ListStockImportErrorsRequest {
            import_id: id.clone(),
            page_size: -1,
            page_token: "zz".to_owned(),
        })
        .await
        .unwrap_err();
    assert_eq!(violations(&err), ["page_size", "page_token"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_import_updates_known_skus_keeps_their_ids_and_refuses_a_sku_its_file_gave_before() {
    let app = TestApp::spawn().await;
    // A product created by an operator, with an id of its own.
    let own_id = Uuid::new_v4();
    app.upsert(product_request(own_id, "MUG-1", 10))
        .await
        .unwrap();
    let outbox = app.count("outbox").await;

    let id = Uuid::new_v4().to_string();
    let res = import_messages(
        &app,
        vec![
            pb::ImportStockRequest {
                source: "file-1".to_owned(),
                ..message(&id, vec![row(2, "MUG-1", 1300, 7), row(3, "NEW-1", 500, 0)])
            },
            message("", vec![row(4, "NEW-1", 600, 1)]),
        ],
    )
    .await
    .unwrap();
    assert_eq!(counts(&res), (3, 1, 1, 0, 1));
    let errors: Vec<_> = res
        .errors
        .iter()
        .map(|e| (e.row_number, e.sku.as_str(), e.reason.as_str()))
        .collect();
    assert_eq!(
        errors,
        [(4, "NEW-1", "sku: NEW-1 was already given on row 3")]
    );

    let mug = app.get(own_id).await;
    assert_eq!(
        (mug.on_hand, mug.unit_price.unwrap().amount_minor),
        (7, 1300)
    );
    let new = products(&app)
        .await
        .into_iter()
        .find(|p| p.sku == "NEW-1")
        .unwrap();
    assert_eq!(
        (new.on_hand, new.unit_price_minor),
        (0, 500),
        "the first row wins"
    );

    // One event for the chunk, listing both changes.
    assert_eq!(app.count("outbox").await, outbox + 1);
    let events = app.events().await;
    let (kind, body) = events.last().unwrap();
    assert_eq!(kind, "inventory.stock_imported");
    assert_eq!(body["data"]["import_id"], id);
    assert_eq!(body["data"]["first_row"], 2);
    assert_eq!(body["data"]["last_row"], 4);
    assert_eq!(body["data"]["columns"][1], "sku");
    let mut listed: Vec<_> = body["data"]["products"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p[1].as_str().unwrap().to_owned(), p[6].as_bool().unwrap()))
        .collect();
    listed.sort();
    assert_eq!(
        listed,
        [("MUG-1".to_owned(), false), ("NEW-1".to_owned(), true)]
    );
    let got = app
        .client
        .clone()
        .get_stock_import(pb::GetStockImportRequest { import_id: id })
        .await
        .unwrap()
        .into_inner()
        .import
        .unwrap();
    assert_eq!(
        (got.last_row_number, got.rejected, got.finished),
        (4, 1, true)
    );

    // Another import of the same source that reaches NEW-1 again further
    // down (as a resumed or repeated run of file-1 would): refused.
    let res = import_source(&app, "file-1", vec![row(9, "NEW-1", 700, 2)]).await;
    assert_eq!(counts(&res), (1, 0, 0, 0, 1));
    assert_eq!(
        res.errors[0].reason,
        "sku: NEW-1 was already given on row 3"
    );

    // A new file whose identical row takes NEW-1 over (no event, no new
    // updated_at), then repeats it lower down: the repeat is refused.
    let before = products(&app).await;
    let outbox = app.count("outbox").await;
    let res = import_source(
        &app,
        "file-2",
        vec![row(1, "NEW-1", 500, 0), row(2, "OTHER", 1, 1)],
    )
    .await;
    assert_eq!(counts(&res), (2, 1, 0, 1, 0));
    let after = products(&app).await;
    let unchanged = |rows: &[ProductRow]| rows.iter().find(|p| p.sku == "NEW-1").cloned();
    assert_eq!(unchanged(&after), unchanged(&before));
    assert_eq!(app.count("outbox").await, outbox + 1, "OTHER only");
    let res = import_source(&app, "file-2", vec![row(5, "NEW-1", 900, 9)]).await;
    assert_eq!(counts(&res), (1, 0, 0, 0, 1));
    assert_eq!(
        res.errors[0].reason,
        "sku: NEW-1 was already given on row 1"
    );
    // Without a source, repeats are only found within the import.
    let res = import_source(&app, "", vec![row(5, "NEW-1", 900, 9)]).await;
    assert_eq!(counts(&res), (1, 0, 1, 0, 0));
}

/// Two chunks of one stream in flight at once. The later one waits for
/// the earlier one's commit; when that wait closes a cycle with a third
/// transaction (it holds a product the earlier chunk needs and waits for
/// one the later chunk holds), PostgreSQL sees it (the wait is an advisory
/// lock) and breaks it. A SKU both chunks give is upserted by the later one
/// only after the earlier one ended. The import ends as if its chunks had
/// run one by one.
#[tokio::test(flavor = "multi_thread")]
async fn overlapping_chunks_that_deadlock_with_another_writer_end_as_if_run_in_order() {
    let app = TestApp::spawn().await;
    for sku in ["M-LOCKED", "B-HELD"] {
        app.upsert(product_request(Uuid::new_v4(), sku, 10))
            .await
            .unwrap();
    }
    // Chunk 1 (rows 1-5000): A-*, M-LOCKED (row 2500), Z-SHARED (row 5000).
    // Chunk 2 (rows 5001-10000): Z-SHARED again (row 5001), B-*, B-HELD
    // (row 7000).
    let chunk_rows = orderflow_inventory::import::CHUNK_ROWS as i64;
    let rows: Vec<pb::StockRow> = (1..=2 * chunk_rows)
        .map(|n| match n {
            _ if n == chunk_rows / 2 => row(n, "M-LOCKED", 4200, 42),
            _ if n == chunk_rows => row(n, "Z-SHARED", 100, 1),
            _ if n == chunk_rows + 1 => row(n, "Z-SHARED", 999, 9),
            _ if n == chunk_rows + 2000 => row(n, "B-HELD", 4300, 43),
            _ if n < chunk_rows => row(n, &format!("A-{n:06}"), 100, 1),
            _ => row(n, &format!("B-{n:06}"), 100, 1),
        })
        .collect();
    let id = Uuid::new_v4().to_string();
    let msgs: Vec<_> = rows
        .chunks(1000)
        .enumerate()
        .map(|(i, rows)| message(if i == 0 { &id } else { "" }, rows.to_vec()))
        .collect();

    // The other writer: chunk 1 stops at M-LOCKED until it lets go.
    let mut other = app.sql().await;
    diesel::sql_query("BEGIN")
        .execute(&mut other)
        .await
        .unwrap();
    diesel::sql_query("SELECT 1 FROM products WHERE sku = 'M-LOCKED' FOR UPDATE")
        .execute(&mut other)
        .await
        .unwrap();
    let deadlocks_before = deadlocks(&app).await;
    let import = {
        let client = app.client.clone();
        tokio::spawn(async move {
            client
                .clone()
                .import_stock(tokio_stream::iter(msgs))
                .await
                .map(tonic::Response::into_inner)
        })
    };
    // Chunk 2 has upserted B-HELD and waits for chunk 1's commit.
    let waiting = "pg_locks WHERE locktype = 'advisory' AND objsubid = 2 AND NOT granted \
         AND database = (SELECT oid FROM pg_database WHERE datname = current_database())";
    orderflow_testkit::wait_until(
        "chunk 2 waits for chunk 1",
        Duration::from_secs(30),
        || async { app.count(waiting).await > 0 },
    )
    .await;
    // The cycle: other -> chunk 2 (B-HELD) -> chunk 1 (commit order) ->
    // other (M-LOCKED). PostgreSQL aborts one of the three.
    let closed = diesel::sql_query("UPDATE products SET on_hand = on_hand WHERE sku = 'B-HELD'")
        .execute(&mut other)
        .await;
    let end = if closed.is_ok() { "COMMIT" } else { "ROLLBACK" };
    diesel::sql_query(end).execute(&mut other).await.unwrap();

    let res = tokio::time::timeout(Duration::from_secs(60), import)
        .await
        .expect("no undetected deadlock")
        .unwrap()
        .unwrap();
    assert_eq!(
        counts(&res),
        (2 * chunk_rows, 2 * chunk_rows - 3, 2, 0, 1),
        "{res:?}"
    );
    let errors: Vec<_> = res
        .errors
        .iter()
        .map(|e| (e.row_number, e.sku.as_str(), e.reason.as_str()))
        .collect();
    assert_eq!(
        errors,
        [(
            chunk_rows + 1,
            "Z-SHARED",
            format!("sku: Z-SHARED was already given on row {chunk_rows}").as_str()
        )]
    );
    let all = products(&app).await;
    assert_eq!(all.len() as i64, 2 * chunk_rows - 1);
    let data = |sku: &str| {
        let p = all.iter().find(|p| p.sku == sku).unwrap();
        (p.unit_price_minor, p.on_hand)
    };
    assert_eq!(data("Z-SHARED"), (100, 1), "the first row wins");
    assert_eq!(data("M-LOCKED"), (4200, 42));
    assert_eq!(data("B-HELD"), (4300, 43));
    let (_, mut skus) = import_events(&app).await;
    skus.sort();
    let mut expected: Vec<_> = all.iter().map(|p| p.sku.clone()).collect();
    expected.sort();
    assert_eq!(skus, expected, "every product in exactly one event");
    // PostgreSQL saw the cycle (its statistics may lag a moment).
    orderflow_testkit::wait_until(
        "PostgreSQL counts the deadlock (else the test tests nothing)",
        Duration::from_secs(10),
        || async { deadlocks(&app).await != deadlocks_before },
    )
    .await;
}

async fn deadlocks(app: &TestApp) -> i64 {
    #[derive(QueryableByName)]
    struct Count {
        #[diesel(sql_type = sql_types::BigInt)]
        n: i64,
    }
    let mut conn = app.sql().await;
    diesel::sql_query("SELECT pg_stat_clear_snapshot()")
        .execute(&mut conn)
        .await
        .unwrap();
    diesel::sql_query(
        "SELECT deadlocks AS n FROM pg_stat_database WHERE datname = current_database()",
    )
    .get_result::<Count>(&mut conn)
    .await
    .unwrap()
    .n
}
