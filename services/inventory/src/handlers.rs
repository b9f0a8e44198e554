//! The saga's consumers. Each runs inside the consumer runtime's
//! transaction, next to its inbox row (so a duplicate delivery changes
//! nothing), and appends its events on the same connection. Business
//! outcomes (a rejected reservation) are events, not errors; an `Err` is
//! only for what a retry may fix (the database) — see `orderflow_consumer`.
//!
//! A reservation row exists for every order we heard of, whatever the
//! outcome, and is inserted first (`ON CONFLICT DO NOTHING`): it is both the
//! idempotency key and the lock that orders a concurrent order.placed and
//! order.cancelled of the same order. Product rows are locked after it, in
//! `product_id` order, so concurrent orders never deadlock.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use diesel::{OptionalExtension as _, prelude::*};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use orderflow_consumer::{Consumer, Handler, HandlerResult, Traced};
use orderflow_db::CachedExt as _;
use orderflow_events::{
    CloudEvent,
    inventory::{
        InventoryRejected, InventoryReleased, InventoryReserved, ReservedLine, Shortage, StockLevel,
    },
    order::{OrderCancelled, OrderConfirmed, OrderPlaced},
    payment::PaymentFailed,
};
use uuid::Uuid;

use crate::{
    EVENT_SOURCE,
    schema::{products, reservation_lines, reservations},
};

/// `reservations.status`.
pub mod status {
    /// Stock is taken off `on_hand` and held in `reserved`.
    pub const RESERVED: &str = "RESERVED";
    /// Nothing was taken: some line was short.
    pub const REJECTED: &str = "REJECTED";
    /// The held units went back to `on_hand`.
    pub const RELEASED: &str = "RELEASED";
    /// The order was confirmed: the held units are sold.
    pub const COMMITTED: &str = "COMMITTED";
    /// Tombstone: the order was cancelled before its order.placed arrived.
    pub const CANCELLED: &str = "CANCELLED";
}

/// Registers every handler of this service on `consumer`.
#[must_use]
pub fn register(consumer: Consumer) -> Consumer {
    consumer
        .with(ReserveStock)
        .with(ReleaseOnPaymentFailed)
        .with(ReleaseOnOrderCancelled)
        .with(CommitReservation)
        .with(crate::snapshot::SnapshotForCatalog)
        .with(crate::snapshot::NextSnapshotPage)
}

/// order.placed: reserve every line or none.
#[derive(Debug, Clone, Copy, Default)]
pub struct ReserveStock;

impl Handler for ReserveStock {
    type Event = OrderPlaced;
    const NAME: &'static str = "reserve-stock";

    async fn handle(
        &self,
        conn: &mut AsyncPgConnection,
        event: CloudEvent<OrderPlaced>,
    ) -> HandlerResult {
        Ok(reserve(conn, &event.data).await?)
    }

    /// The batch with six statements (`reserve_all`): every product its
    /// orders name is locked once, in product_id order, so a hot product's
    /// orders are reserved under one lock and one commit, and two batches
    /// cannot deadlock.
    async fn handle_batch(
        &self,
        conn: &mut AsyncPgConnection,
        events: Vec<Traced<OrderPlaced>>,
    ) -> HandlerResult {
        Ok(reserve_all(conn, &events).await?)
    }
}

/// payment.failed: give the order's units back.
#[derive(Debug, Clone, Copy, Default)]
pub struct ReleaseOnPaymentFailed;

impl Handler for ReleaseOnPaymentFailed {
    type Event = PaymentFailed;
    const NAME: &'static str = "release-on-payment-failed";

    async fn handle(
        &self,
        conn: &mut AsyncPgConnection,
        event: CloudEvent<PaymentFailed>,
    ) -> HandlerResult {
        let reason = format!("payment failed: {}", event.data.reason);
        Ok(release(conn, event.data.order_id, &reason).await?)
    }

    async fn before_batch(
        &self,
        conn: &mut AsyncPgConnection,
        events: &[&CloudEvent<PaymentFailed>],
    ) -> HandlerResult {
        Ok(lock_orders(conn, events.iter().map(|e| e.data.order_id).collect()).await?)
    }
}

/// order.cancelled: give the order's units back, or leave a tombstone when
/// the cancel overtook order.placed.
#[derive(Debug, Clone, Copy, Default)]
pub struct ReleaseOnOrderCancelled;

impl Handler for ReleaseOnOrderCancelled {
    type Event = OrderCancelled;
    const NAME: &'static str = "release-on-order-cancelled";

    async fn handle(
        &self,
        conn: &mut AsyncPgConnection,
        event: CloudEvent<OrderCancelled>,
    ) -> HandlerResult {
        let reason = format!("order cancelled: {}", event.data.reason);
        Ok(release(conn, event.data.order_id, &reason).await?)
    }

    async fn before_batch(
        &self,
        conn: &mut AsyncPgConnection,
        events: &[&CloudEvent<OrderCancelled>],
    ) -> HandlerResult {
        Ok(lock_orders(conn, events.iter().map(|e| e.data.order_id).collect()).await?)
    }
}

/// order.confirmed: the held units are sold.
#[derive(Debug, Clone, Copy, Default)]
pub struct CommitReservation;

impl Handler for CommitReservation {
    type Event = OrderConfirmed;
    const NAME: &'static str = "commit-reservation";

    async fn handle(
        &self,
        conn: &mut AsyncPgConnection,
        event: CloudEvent<OrderConfirmed>,
    ) -> HandlerResult {
        Ok(commit(conn, event.data.order_id).await?)
    }

    async fn before_batch(
        &self,
        conn: &mut AsyncPgConnection,
        events: &[&CloudEvent<OrderConfirmed>],
    ) -> HandlerResult {
        Ok(lock_orders(conn, events.iter().map(|e| e.data.order_id).collect()).await?)
    }

    /// The batch's commits with two statements, whatever its size (the
    /// rows are locked by `before_batch`).
    async fn handle_batch(
        &self,
        conn: &mut AsyncPgConnection,
        events: Vec<Traced<OrderConfirmed>>,
    ) -> HandlerResult {
        Ok(commit_all(conn, &events).await?)
    }
}

/// [`commit`] for a batch: every held reservation of the batch becomes
/// COMMITTED with one UPDATE, and the products' `reserved` drop by the sum
/// of those reservations' lines with another. A reservation that is not
/// held is a replay, skipped as in [`commit`].
async fn commit_all(
    conn: &mut AsyncPgConnection,
    events: &[Traced<OrderConfirmed>],
) -> QueryResult<()> {
    use diesel::sql_types::{Array, Uuid as SqlUuid};
    let orders: Vec<Uuid> = events.iter().map(|t| t.event.data.order_id).collect();
    let committed: Vec<Uuid> = diesel::update(reservations::table)
        .filter(reservations::order_id.eq_any(&orders))
        .filter(reservations::status.eq(status::RESERVED))
        .set((
            reservations::status.eq(status::COMMITTED),
            reservations::updated_at.eq(diesel::dsl::now),
        ))
        .returning(reservations::order_id)
        .cached()
        .get_results(conn)
        .await?;
    diesel::sql_query(
        "UPDATE products p SET reserved = p.reserved - l.quantity, updated_at = now() \
         FROM (SELECT product_id, sum(quantity)::bigint AS quantity FROM reservation_lines \
               WHERE order_id = ANY($1) GROUP BY product_id) l \
         WHERE p.product_id = l.product_id",
    )
    .bind::<Array<SqlUuid>, _>(&committed)
    .cached()
    .execute(conn)
    .await?;
    for t in events {
        let outcome = if committed.contains(&t.event.data.order_id) {
            status::COMMITTED
        } else {
            "skipped"
        };
        t.span.in_scope(|| {
            if outcome == "skipped" {
                // The saga confirms only reserved orders; anything else is a replay.
                tracing::warn!(order.id = %t.event.data.order_id, "order.confirmed for a reservation that is not held: nothing to commit");
            }
            tracing::debug!(order.id = %t.event.data.order_id, outcome, "inventory.commit");
        });
    }
    Ok(())
}

/// Locks the products, in product_id order (`ids` sorted).
async fn lock_products(conn: &mut AsyncPgConnection, ids: Vec<Uuid>) -> QueryResult<()> {
    products::table
        .filter(products::product_id.eq_any(&ids))
        .order(products::product_id)
        .for_update()
        .select(products::product_id)
        .load::<Uuid>(conn)
        .await?;
    Ok(())
}

/// For a batch of releases or commits: the orders' reservations in
/// order_id order, then the products they hold in product_id order - the
/// order a single release or commit takes them in.
async fn lock_orders(conn: &mut AsyncPgConnection, mut orders: Vec<Uuid>) -> QueryResult<()> {
    orders.sort_unstable();
    orders.dedup();
    reservations::table
        .filter(reservations::order_id.eq_any(&orders))
        .order(reservations::order_id)
        .for_update()
        .select(reservations::order_id)
        .load::<Uuid>(conn)
        .await?;
    let held: BTreeSet<Uuid> = reservation_lines::table
        .filter(reservation_lines::order_id.eq_any(&orders))
        .select(reservation_lines::product_id)
        .load::<Uuid>(conn)
        .await?
        .into_iter()
        .collect();
    lock_products(conn, held.into_iter().collect()).await
}

/// Inserts the reservation row unless one exists; true when this call did.
async fn claim(
    conn: &mut AsyncPgConnection,
    order_id: Uuid,
    status: &str,
    reason: Option<&str>,
) -> QueryResult<bool> {
    let inserted = diesel::insert_into(reservations::table)
        .values((
            reservations::order_id.eq(order_id),
            reservations::status.eq(status),
            reservations::reason.eq(reason),
        ))
        .on_conflict(reservations::order_id)
        .do_nothing()
        .execute(conn)
        .await?;
    Ok(inserted == 1)
}

/// The order's lines per product (a product listed twice is summed), or
/// why they cannot be reserved at all.
fn wanted(order: &OrderPlaced) -> Result<BTreeMap<Uuid, i32>, String> {
    if order.lines.is_empty() {
        return Err("the order has no lines".to_owned());
    }
    let mut wanted = BTreeMap::<Uuid, i32>::new();
    for line in &order.lines {
        let total = wanted.entry(line.product_id).or_default();
        match total.checked_add(line.quantity) {
            Some(q) if line.quantity > 0 => *total = q,
            _ => {
                return Err(format!(
                    "invalid quantity {} for product {}",
                    line.quantity, line.product_id
                ));
            }
        }
    }
    Ok(wanted)
}

/// What reserving an order decides, given what is available.
enum Decision {
    /// Every line fits: take these units.
    Reserve(BTreeMap<Uuid, i32>),
    /// Nothing is taken, for this reason.
    Reject {
        shortages: Vec<Shortage>,
        reason: String,
    },
}

/// Reserve every line of `order` or none, against `available` (on_hand of
/// the locked products; a product missing from it is unknown), which a
/// reservation reduces so that the next order of a batch sees what is left.
fn decide(order: &OrderPlaced, available: &mut HashMap<Uuid, i64>) -> Decision {
    let wanted = match wanted(order) {
        Ok(wanted) => wanted,
        Err(invalid) => {
            // The order service never sends this; refusing it still ends
            // the order (CANCELLED) instead of leaving it PENDING.
            tracing::warn!(reason = %invalid, "order.placed with invalid lines");
            return Decision::Reject {
                shortages: Vec::new(),
                reason: format!("invalid order: {invalid}"),
            };
        }
    };
    let shortages: Vec<Shortage> = wanted
        .iter()
        .filter_map(|(&product_id, &requested)| {
            let available = available.get(&product_id).copied().unwrap_or(0);
            (available < i64::from(requested)).then_some(Shortage {
                product_id,
                requested,
                available,
            })
        })
        .collect();
    if shortages.is_empty() {
        for (product_id, quantity) in &wanted {
            if let Some(left) = available.get_mut(product_id) {
                *left -= i64::from(*quantity);
            }
        }
        return Decision::Reserve(wanted);
    }
    let reason = shortages
        .iter()
        .map(|s| {
            if available.contains_key(&s.product_id) {
                format!(
                    "insufficient stock for product {}: {} requested, {} available",
                    s.product_id, s.requested, s.available
                )
            } else {
                format!(
                    "unknown product {}: {} requested, 0 available",
                    s.product_id, s.requested
                )
            }
        })
        .collect::<Vec<_>>()
        .join("; ");
    Decision::Reject { shortages, reason }
}

/// on_hand of `ids`, locked in product_id order (`ids` sorted): concurrent
/// orders of the same product queue here.
async fn lock_available(
    conn: &mut AsyncPgConnection,
    ids: &[Uuid],
) -> QueryResult<HashMap<Uuid, i64>> {
    Ok(products::table
        .filter(products::product_id.eq_any(ids))
        .order(products::product_id)
        .for_update()
        .select((products::product_id, products::on_hand))
        .load::<(Uuid, i64)>(conn)
        .await?
        .into_iter()
        .collect())
}

#[tracing::instrument(name = "inventory.reserve", skip_all, fields(order.id = %order.order_id, outcome))]
async fn reserve(conn: &mut AsyncPgConnection, order: &OrderPlaced) -> QueryResult<()> {
    if !claim(conn, order.order_id, status::RESERVED, None).await? {
        tracing::info!("reservation exists (handled or cancelled before): nothing to do");
        tracing::Span::current().record("outcome", "skipped");
        return Ok(());
    }
    let ids: Vec<Uuid> = order
        .lines
        .iter()
        .map(|l| l.product_id)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let mut available = lock_available(conn, &ids).await?;
    match decide(order, &mut available) {
        Decision::Reserve(wanted) => {
            take(conn, order, &wanted).await?;
            tracing::Span::current().record("outcome", status::RESERVED);
        }
        Decision::Reject { shortages, reason } => {
            diesel::update(reservations::table.find(order.order_id))
                .set((
                    reservations::status.eq(status::REJECTED),
                    reservations::reason.eq(&reason),
                    reservations::updated_at.eq(diesel::dsl::now),
                ))
                .cached()
                .execute(conn)
                .await?;
            append_rejected(conn, order, shortages, reason).await?;
            tracing::Span::current().record("outcome", status::REJECTED);
        }
    }
    Ok(())
}

async fn append_rejected(
    conn: &mut AsyncPgConnection,
    order: &OrderPlaced,
    shortages: Vec<Shortage>,
    reason: String,
) -> QueryResult<()> {
    orderflow_outbox::append(
        conn,
        EVENT_SOURCE,
        InventoryRejected {
            order_id: order.order_id,
            customer_id: order.customer_id,
            reason,
            shortages,
        },
    )
    .await
    .map(drop)
}

/// Each product's stock after a transaction's update: the events carry it.
type Levels = HashMap<Uuid, StockLevel>;

/// Rows of `UPDATE products ... RETURNING product_id, on_hand, version`.
#[derive(QueryableByName)]
struct LevelRow {
    #[diesel(sql_type = diesel::sql_types::Uuid)]
    product_id: Uuid,
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    on_hand: i64,
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    version: i64,
}

fn levels(rows: Vec<LevelRow>) -> Levels {
    rows.into_iter()
        .map(|r| {
            (
                r.product_id,
                StockLevel {
                    on_hand: r.on_hand,
                    version: r.version,
                },
            )
        })
        .collect()
}

/// Moves `q` units per product from on_hand to reserved (negative `q`:
/// back), bumping each product's version, in one statement.
async fn move_units(
    conn: &mut AsyncPgConnection,
    products: Vec<Uuid>,
    quantities: Vec<i64>,
) -> QueryResult<Levels> {
    use diesel::sql_types::{Array, BigInt, Uuid as SqlUuid};
    let rows: Vec<LevelRow> = diesel::sql_query(
        "UPDATE products p SET on_hand = p.on_hand - t.q, reserved = p.reserved + t.q, \
         version = p.version + 1, updated_at = now() \
         FROM unnest($1::uuid[], $2::bigint[]) AS t(id, q) \
         WHERE p.product_id = t.id RETURNING p.product_id, p.on_hand, p.version",
    )
    .bind::<Array<SqlUuid>, _>(products)
    .bind::<Array<BigInt>, _>(quantities)
    .cached()
    .load(conn)
    .await?;
    Ok(levels(rows))
}

fn reserved_event(
    order: &OrderPlaced,
    wanted: &BTreeMap<Uuid, i32>,
    levels: &Levels,
) -> InventoryReserved {
    InventoryReserved {
        order_id: order.order_id,
        customer_id: order.customer_id,
        customer_email: order.customer_email.clone(),
        currency: order.currency.clone(),
        total_minor: order.total_minor,
        payment_token: order.payment_token.clone(),
        lines: wanted
            .iter()
            .map(|(&product_id, &quantity)| ReservedLine {
                product_id,
                quantity,
                stock: levels.get(&product_id).copied(),
            })
            .collect(),
    }
}

/// [`reserve`] for a batch, with six statements whatever its size: claim
/// every reservation (one insert), lock and read every product (one
/// select), decide each order in delivery order against what is left,
/// then move the units of all reserved orders (one update), record their
/// lines (one insert) and mark the rejected ones (one update); the events
/// go to the outbox with the batch.
async fn reserve_all(
    conn: &mut AsyncPgConnection,
    events: &[Traced<OrderPlaced>],
) -> QueryResult<()> {
    use diesel::sql_types::{Array, Integer, Text, Uuid as SqlUuid};
    let claims: Vec<_> = events
        .iter()
        .map(|t| {
            (
                reservations::order_id.eq(t.event.data.order_id),
                reservations::status.eq(status::RESERVED),
            )
        })
        .collect();
    let claimed: std::collections::HashSet<Uuid> = diesel::insert_into(reservations::table)
        .values(&claims)
        .on_conflict(reservations::order_id)
        .do_nothing()
        .returning(reservations::order_id)
        .cached()
        .get_results::<Uuid>(conn)
        .await?
        .into_iter()
        .collect();
    let ids: Vec<Uuid> = events
        .iter()
        .flat_map(|t| t.event.data.lines.iter().map(|l| l.product_id))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let mut available = lock_available(conn, &ids).await?;
    let mut taken = BTreeMap::<Uuid, i64>::new();
    let (mut line_orders, mut line_products, mut line_quantities) = (vec![], vec![], vec![]);
    let (mut rejected_orders, mut rejected_reasons) = (vec![], vec![]);
    let mut outcomes = Vec::with_capacity(events.len());
    for t in events {
        let order = &t.event.data;
        if !claimed.contains(&order.order_id) {
            t.span.in_scope(|| {
                tracing::info!(order.id = %order.order_id, "reservation exists (handled or cancelled before): nothing to do");
            });
            outcomes.push(None);
            continue;
        }
        let decision = t.span.in_scope(|| decide(order, &mut available));
        if let Decision::Reserve(wanted) = &decision {
            for (&product_id, &quantity) in wanted {
                *taken.entry(product_id).or_default() += i64::from(quantity);
                line_orders.push(order.order_id);
                line_products.push(product_id);
                line_quantities.push(quantity);
            }
        }
        if let Decision::Reject { reason, .. } = &decision {
            rejected_orders.push(order.order_id);
            rejected_reasons.push(reason.clone());
        }
        outcomes.push(Some(decision));
    }
    let mut levels = Levels::new();
    if !taken.is_empty() {
        let (products_taken, quantities): (Vec<Uuid>, Vec<i64>) = taken.into_iter().unzip();
        levels = move_units(conn, products_taken, quantities).await?;
        diesel::sql_query(
            "INSERT INTO reservation_lines (order_id, product_id, quantity) \
             SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::int[])",
        )
        .bind::<Array<SqlUuid>, _>(line_orders)
        .bind::<Array<SqlUuid>, _>(line_products)
        .bind::<Array<Integer>, _>(line_quantities)
        .cached()
        .execute(conn)
        .await?;
    }
    if !rejected_orders.is_empty() {
        diesel::sql_query(
            "UPDATE reservations r SET status = 'REJECTED', reason = x.reason, updated_at = now() \
             FROM unnest($1::uuid[], $2::text[]) AS x(id, reason) WHERE r.order_id = x.id",
        )
        .bind::<Array<SqlUuid>, _>(rejected_orders)
        .bind::<Array<Text>, _>(rejected_reasons)
        .cached()
        .execute(conn)
        .await?;
    }
    for (t, decision) in events.iter().zip(outcomes) {
        let Some(decision) = decision else { continue };
        let order = &t.event.data;
        let outer = orderflow_db::replace_transaction_span(conn, Some(t.span.clone()));
        let appended = match decision {
            Decision::Reserve(wanted) => orderflow_outbox::append(
                conn,
                EVENT_SOURCE,
                reserved_event(order, &wanted, &levels),
            )
            .await
            .map(drop),
            Decision::Reject { shortages, reason } => {
                append_rejected(conn, order, shortages, reason).await
            }
        };
        orderflow_db::replace_transaction_span(conn, outer);
        appended?;
    }
    Ok(())
}

/// Moves the wanted units from on_hand to reserved (the rows are locked and
/// checked), records the lines and appends inventory.reserved.
async fn take(
    conn: &mut AsyncPgConnection,
    order: &OrderPlaced,
    wanted: &BTreeMap<Uuid, i32>,
) -> QueryResult<()> {
    let (ids, quantities) = wanted.iter().map(|(&p, &q)| (p, i64::from(q))).unzip();
    let levels = move_units(conn, ids, quantities).await?;
    let rows: Vec<_> = wanted
        .iter()
        .map(|(&product_id, &quantity)| {
            (
                reservation_lines::order_id.eq(order.order_id),
                reservation_lines::product_id.eq(product_id),
                reservation_lines::quantity.eq(quantity),
            )
        })
        .collect();
    diesel::insert_into(reservation_lines::table)
        .values(&rows)
        .cached()
        .execute(conn)
        .await?;
    orderflow_outbox::append(conn, EVENT_SOURCE, reserved_event(order, wanted, &levels)).await?;
    Ok(())
}

/// The status of the order's reservation, locked; `None` when there is none.
async fn lock_reservation(
    conn: &mut AsyncPgConnection,
    order_id: Uuid,
) -> QueryResult<Option<String>> {
    reservations::table
        .find(order_id)
        .for_update()
        .select(reservations::status)
        .first(conn)
        .await
        .optional()
}

/// The reservation's lines in product_id order (the lock order).
async fn lines_of(conn: &mut AsyncPgConnection, order_id: Uuid) -> QueryResult<Vec<ReservedLine>> {
    let rows: Vec<(Uuid, i32)> = reservation_lines::table
        .filter(reservation_lines::order_id.eq(order_id))
        .order(reservation_lines::product_id)
        .select((reservation_lines::product_id, reservation_lines::quantity))
        .load(conn)
        .await?;
    Ok(rows
        .into_iter()
        .map(|(product_id, quantity)| ReservedLine {
            product_id,
            quantity,
            stock: None,
        })
        .collect())
}

#[tracing::instrument(name = "inventory.release", skip(conn), fields(outcome))]
async fn release(conn: &mut AsyncPgConnection, order_id: Uuid, reason: &str) -> QueryResult<()> {
    if claim(conn, order_id, status::CANCELLED, Some(reason)).await? {
        tracing::info!("no reservation yet: tombstone left for a late order.placed");
        tracing::Span::current().record("outcome", status::CANCELLED);
        return Ok(());
    }
    let current = lock_reservation(conn, order_id).await?;
    if current.as_deref() != Some(status::RESERVED) {
        tracing::info!(status = ?current, "nothing held: nothing to release");
        tracing::Span::current().record("outcome", "skipped");
        return Ok(());
    }
    let mut lines = lines_of(conn, order_id).await?;
    // In product_id order (the lock order), before the one update.
    lock_products(conn, lines.iter().map(|l| l.product_id).collect()).await?;
    let levels = move_units(
        conn,
        lines.iter().map(|l| l.product_id).collect(),
        lines.iter().map(|l| -i64::from(l.quantity)).collect(),
    )
    .await?;
    for line in &mut lines {
        line.stock = levels.get(&line.product_id).copied();
    }
    diesel::update(reservations::table.find(order_id))
        .set((
            reservations::status.eq(status::RELEASED),
            reservations::reason.eq(reason),
            reservations::updated_at.eq(diesel::dsl::now),
        ))
        .cached()
        .execute(conn)
        .await?;
    orderflow_outbox::append(
        conn,
        EVENT_SOURCE,
        InventoryReleased {
            order_id,
            reason: reason.to_owned(),
            lines,
        },
    )
    .await?;
    tracing::Span::current().record("outcome", status::RELEASED);
    Ok(())
}

#[tracing::instrument(name = "inventory.commit", skip(conn), fields(outcome))]
async fn commit(conn: &mut AsyncPgConnection, order_id: Uuid) -> QueryResult<()> {
    let current = lock_reservation(conn, order_id).await?;
    if current.as_deref() != Some(status::RESERVED) {
        // The saga confirms only reserved orders; anything else is a replay.
        tracing::warn!(status = ?current, "order.confirmed for a reservation that is not held: nothing to commit");
        tracing::Span::current().record("outcome", "skipped");
        return Ok(());
    }
    for line in lines_of(conn, order_id).await? {
        diesel::update(products::table.find(line.product_id))
            .set((
                products::reserved.eq(products::reserved - i64::from(line.quantity)),
                products::updated_at.eq(diesel::dsl::now),
            ))
            .cached()
            .execute(conn)
            .await?;
    }
    diesel::update(reservations::table.find(order_id))
        .set((
            reservations::status.eq(status::COMMITTED),
            reservations::updated_at.eq(diesel::dsl::now),
        ))
        .cached()
        .execute(conn)
        .await?;
    tracing::Span::current().record("outcome", status::COMMITTED);
    Ok(())
}
