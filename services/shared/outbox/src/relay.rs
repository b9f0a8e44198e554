//! The relay side of the outbox: claim, mark, fail, lease, measure, clean.
//!
//! # Ordering
//! Each aggregate hashes to one of 32 partitions (a generated column); each
//! partition is leased to one relay replica at a time ([`renew_leases`]). A
//! replica publishes, per batch, at most the *oldest pending* event of each
//! aggregate ([`claim_heads`]), and the next event of that aggregate only
//! after the broker confirmed the previous one and it was marked published.
//! So an aggregate's events reach the broker in `seq` (= commit) order even
//! when a publish fails, and a failing or parked event blocks nothing but its
//! own aggregate. Rows are never locked: the lease is what makes a partition
//! one replica's work, which `SKIP LOCKED` alone cannot do for ordering.
//!
//! # Pending state
//! `outbox` rows are written once. What is still to publish, and how its
//! attempts went, lives in the narrow `outbox_pending` table (filled by the
//! `outbox_enqueue` trigger in the writer's transaction); publishing an
//! event deletes its row there. See migration `outbox_pending` for why.

use std::{
    collections::{HashMap, HashSet},
    time::Duration,
};

use chrono::{DateTime, Utc};
use diesel::{
    OptionalExtension as _, QueryResult, QueryableByName,
    sql_types::{Array, BigInt, Bool, Double, Integer, SmallInt, Text, Timestamptz},
};
use diesel_async::{
    AsyncConnection as _, AsyncPgConnection, RunQueryDsl, SimpleAsyncConnection as _,
};
use uuid::Uuid;

/// Session settings of the relay's connections to a source database.
///
/// Every query of the publish path reads a few rows through an index, but
/// `outbox_pending` swings from empty to a large backlog between two runs of
/// autovacuum, and the planner's statistics lag behind it:
/// - No sequential or bitmap scans. Without column statistics (a new
///   database's first burst) the planner took the failing-events index to
///   cover a third of the table and looked for blocked aggregates with a
///   parallel scan of the whole table: 20 ms per claim, the largest single
///   cost of the relay in PostgreSQL (measured at 200k pending rows). With
///   the statistics of the empty table it chose a bitmap scan and a sort of
///   a whole partition over the first rows of the index (80-170 ms per claim
///   instead of 2 ms). The backlog count of [`stats`], which has no index to
///   use, still scans the table.
/// - Random page reads costed as what they are for this working set (the
///   heads of a queue, in shared buffers): about a sequential one. At the
///   default cost (4) the planner walked the `seq` primary key and filtered
///   on the partition (about 3,000 rows read per partition to find 64) over
///   the partition's own index (measured: 25 ms per claim instead of 2 ms).
/// - No parallel workers: starting one costs more than these queries.
/// - No JIT: every query here is small, and a JIT compilation costs 100 ms
///   or more (the disabled scans inflate plan costs past `jit_above_cost`).
/// - Commits do not wait for their WAL flush: a mark or a failure count lost
///   in a database crash only means events are published again (duplicates,
///   which consumers drop), and not waiting keeps the pipeline moving. The
///   one write that must survive a crash, a partition lease, commits
///   synchronously ([`renew_leases`]).
pub const SESSION_SETTINGS: &[(&str, &str)] = &[
    ("enable_seqscan", "off"),
    ("enable_bitmapscan", "off"),
    ("random_page_cost", "1.1"),
    ("max_parallel_workers_per_gather", "0"),
    ("jit", "off"),
    ("synchronous_commit", "off"),
];

/// One event ready to publish.
#[derive(Debug, Clone, QueryableByName)]
pub struct PendingEvent {
    #[diesel(sql_type = diesel::sql_types::Uuid)]
    pub id: Uuid,
    #[diesel(sql_type = diesel::sql_types::Uuid)]
    pub aggregate_id: Uuid,
    #[diesel(sql_type = Text)]
    pub event_type: String,
    /// The CloudEvents JSON body, as text: published as is.
    #[diesel(sql_type = Text)]
    pub payload: String,
    /// JSON object of trace headers.
    #[diesel(sql_type = Text)]
    pub headers: String,
    #[diesel(sql_type = Timestamptz)]
    pub created_at: DateTime<Utc>,
    #[diesel(sql_type = BigInt)]
    pub seq: i64,
}

/// Events sent and not yet confirmed: [`claim_heads`] skips them and their
/// aggregates.
#[derive(Debug, Default)]
pub struct InFlight {
    pub seqs: Vec<i64>,
    pub aggregates: HashSet<Uuid>,
}

/// The head event of each aggregate in `partitions` that may be published
/// now, oldest first, at most `limit`.
///
/// `window` rows per partition are read in `seq` order, leaving out those in
/// flight; an aggregate's head is its first row there. An aggregate yields
/// nothing while one of its events is in flight, or while an older event of
/// it failed (in backoff, or parked) until that one is published.
///
/// # Errors
/// Database errors.
pub async fn claim_heads(
    conn: &mut AsyncPgConnection,
    partitions: &[i16],
    window: i64,
    limit: usize,
    in_flight: InFlight,
) -> QueryResult<Vec<PendingEvent>> {
    // One statement, two kinds of rows: the window, and the first failing
    // (in backoff or parked) event of each aggregate that has one. The
    // window holds several times more rows than a batch (non-head rows), so
    // bodies are read afterwards, only for the heads.
    let rows: Vec<Candidate> = diesel::sql_query(
        "SELECT false AS blocker, o.id, o.aggregate_id, o.seq,
                (o.next_attempt_at IS NULL OR o.next_attempt_at <= now()) AS due
         FROM unnest($1::int2[]) AS p(part)
         CROSS JOIN LATERAL (
             SELECT id, aggregate_id, seq, next_attempt_at FROM outbox_pending
             WHERE partition = p.part AND parked_at IS NULL AND seq <> ALL($3)
             ORDER BY seq LIMIT $2
         ) o
         UNION ALL
         SELECT true, aggregate_id, aggregate_id, min(seq), false FROM outbox_pending
         WHERE (attempts > 0 OR parked_at IS NOT NULL) AND partition = ANY($1)
         GROUP BY aggregate_id",
    )
    .bind::<Array<SmallInt>, _>(partitions)
    .bind::<BigInt, _>(window)
    .bind::<Array<BigInt>, _>(&in_flight.seqs)
    .load(conn)
    .await?;
    let (blockers, window_rows): (Vec<Candidate>, Vec<Candidate>) =
        rows.into_iter().partition(|r| r.blocker);
    let blocked: HashMap<Uuid, i64> = blockers
        .into_iter()
        .map(|b| (b.aggregate_id, b.seq))
        .collect();
    let heads = select_heads(window_rows, &blocked, in_flight.aggregates, limit);
    if heads.is_empty() {
        return Ok(Vec::new());
    }
    // By `seq`: the heads are close together in that index and in the heap.
    let seqs: Vec<i64> = heads.iter().map(|c| c.seq).collect();
    let mut events: Vec<PendingEvent> = diesel::sql_query(
        "SELECT id, aggregate_id, event_type, payload::text AS payload, headers::text AS headers,
                created_at, seq
         FROM outbox WHERE seq = ANY($1)",
    )
    .bind::<Array<BigInt>, _>(seqs)
    .load(conn)
    .await?;
    if events.len() < heads.len() {
        forget_orphans(conn, &heads, &events).await?;
    }
    events.sort_by_key(|e| e.seq);
    Ok(events)
}

/// Pending rows whose event is gone: retention deleted it while an operator
/// replayed it. Left alone they would block their aggregate for ever.
async fn forget_orphans(
    conn: &mut AsyncPgConnection,
    heads: &[Candidate],
    found: &[PendingEvent],
) -> QueryResult<()> {
    let found: HashSet<Uuid> = found.iter().map(|e| e.id).collect();
    let missing: Vec<i64> = heads
        .iter()
        .filter(|c| !found.contains(&c.id))
        .map(|c| c.seq)
        .collect();
    let n = diesel::sql_query(
        "DELETE FROM outbox_pending p WHERE seq = ANY($1)
           AND NOT EXISTS (SELECT 1 FROM outbox o WHERE o.id = p.id)",
    )
    .bind::<Array<BigInt>, _>(missing)
    .execute(conn)
    .await?;
    if n > 0 {
        tracing::warn!(
            count = n,
            "dropped pending entries whose event was deleted by retention"
        );
    }
    Ok(())
}

/// A window row: enough to decide whether it is its aggregate's head. Or,
/// with `blocker`, the first failing event of an aggregate.
#[derive(Debug, Clone, QueryableByName)]
struct Candidate {
    #[diesel(sql_type = Bool)]
    blocker: bool,
    #[diesel(sql_type = diesel::sql_types::Uuid)]
    id: Uuid,
    #[diesel(sql_type = diesel::sql_types::Uuid)]
    aggregate_id: Uuid,
    #[diesel(sql_type = BigInt)]
    seq: i64,
    #[diesel(sql_type = Bool)]
    due: bool,
}

/// The first row of each aggregate, unless an older failing event blocks it
/// or it is waiting for its retry time.
fn select_heads(
    rows: Vec<Candidate>,
    blocked: &HashMap<Uuid, i64>,
    in_flight: HashSet<Uuid>,
    limit: usize,
) -> Vec<Candidate> {
    // Every aggregate seen so far, starting with those in flight.
    let mut seen = in_flight;
    let mut heads: Vec<Candidate> = rows
        .into_iter()
        .filter(|row| {
            seen.insert(row.aggregate_id)
                && blocked
                    .get(&row.aggregate_id)
                    .is_none_or(|&first| row.seq <= first)
                && row.due
        })
        .collect();
    heads.sort_by_key(|e| e.seq);
    heads.truncate(limit);
    heads
}

/// Marks confirmed events (by `seq`) published, unless `owner` lost their
/// partition meanwhile (then the new owner publishes them again: a
/// duplicate, which consumers drop, rather than a mark on someone else's
/// work).
///
/// The mark commits without waiting for its WAL flush (see
/// [`SESSION_SETTINGS`]).
///
/// # Errors
/// Database errors.
pub async fn mark_published(
    conn: &mut AsyncPgConnection,
    seqs: &[i64],
    owner: &str,
) -> QueryResult<usize> {
    diesel::sql_query(
        // The owned partitions as an array, computed once: as `IN (SELECT
        // ..)` the generic plan probed the index once per lease row (32x).
        "DELETE FROM outbox_pending
         WHERE seq = ANY($1)
           AND partition = ANY(ARRAY(SELECT partition FROM outbox_lease WHERE owner = $2))",
    )
    .bind::<Array<BigInt>, _>(seqs)
    .bind::<Text, _>(owner)
    .execute(conn)
    .await
}

/// How failed publishes are retried.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Attempts before an event is parked.
    pub max_attempts: i32,
    pub base: Duration,
    pub max: Duration,
}

/// Records failed publishes: attempts + 1, the error, the next attempt after
/// an exponential backoff, and parks events that reached `max_attempts`.
///
/// # Errors
/// Database errors.
pub async fn record_failures(
    conn: &mut AsyncPgConnection,
    failures: &[(Uuid, String)],
    policy: RetryPolicy,
) -> QueryResult<usize> {
    let (ids, errors): (Vec<Uuid>, Vec<String>) = failures.iter().cloned().unzip();
    diesel::sql_query(
        "UPDATE outbox_pending o SET
             attempts = o.attempts + 1,
             last_error = f.err,
             next_attempt_at = now() + least($3 * power(2, o.attempts), $4) * interval '1 second',
             parked_at = CASE WHEN o.attempts + 1 >= $5 THEN now() END
         FROM unnest($1::uuid[], $2::text[]) AS f(id, err)
         WHERE o.id = f.id",
    )
    .bind::<Array<diesel::sql_types::Uuid>, _>(ids)
    .bind::<Array<Text>, _>(errors)
    .bind::<Double, _>(policy.base.as_secs_f64())
    .bind::<Double, _>(policy.max.as_secs_f64())
    .bind::<Integer, _>(policy.max_attempts)
    .execute(conn)
    .await
}

#[derive(QueryableByName)]
struct Partition {
    #[diesel(sql_type = SmallInt)]
    partition: i16,
}

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

/// Heartbeat of `owner`: renews its leases, then gives up or takes
/// partitions so that every live replica holds about the same number.
/// Returns the partitions `owner` holds for the next `ttl`.
///
/// # Errors
/// Database errors; the caller must then stop publishing once its leases
/// run out.
pub async fn renew_leases(
    conn: &mut AsyncPgConnection,
    owner: &str,
    ttl: Duration,
) -> QueryResult<Vec<i16>> {
    let ttl_s = ttl.as_secs_f64();
    conn.transaction(async |conn| {
        // A lease lost in a crash while its holder goes on publishing would
        // let a second replica take the partition: wait for the flush.
        conn.batch_execute("SET LOCAL synchronous_commit = on")
            .await?;
        diesel::sql_query(
            "INSERT INTO outbox_relay_member (owner, heartbeat_at) VALUES ($1, now())
             ON CONFLICT (owner) DO UPDATE SET heartbeat_at = now()",
        )
        .bind::<Text, _>(owner)
        .execute(conn)
        .await?;
        diesel::sql_query(
            "DELETE FROM outbox_relay_member WHERE heartbeat_at < now() - $1 * interval '1 second'",
        )
        .bind::<Double, _>(ttl_s)
        .execute(conn)
        .await?;
        let members = diesel::sql_query("SELECT count(*) AS n FROM outbox_relay_member")
            .get_result::<Count>(conn)
            .await?
            .n
            .max(1);
        let total = diesel::sql_query("SELECT count(*) AS n FROM outbox_lease")
            .get_result::<Count>(conn)
            .await?
            .n;
        let fair_share = usize::try_from((total + members - 1) / members).unwrap_or(usize::MAX);

        let mut held: Vec<i16> = diesel::sql_query(
            "UPDATE outbox_lease SET expires_at = now() + $2 * interval '1 second'
             WHERE owner = $1 RETURNING partition",
        )
        .bind::<Text, _>(owner)
        .bind::<Double, _>(ttl_s)
        .load::<Partition>(conn)
        .await?
        .into_iter()
        .map(|p| p.partition)
        .collect();
        held.sort_unstable();

        if held.len() > fair_share {
            let extra = held.split_off(fair_share);
            diesel::sql_query(
                "UPDATE outbox_lease SET owner = NULL, expires_at = '-infinity'
                 WHERE owner = $1 AND partition = ANY($2)",
            )
            .bind::<Text, _>(owner)
            .bind::<Array<SmallInt>, _>(extra)
            .execute(conn)
            .await?;
        } else if held.len() < fair_share {
            let wanted = i64::try_from(fair_share - held.len()).unwrap_or(0);
            let taken = diesel::sql_query(
                "UPDATE outbox_lease SET owner = $1, epoch = epoch + 1,
                        expires_at = now() + $2 * interval '1 second'
                 WHERE partition IN (
                     SELECT partition FROM outbox_lease
                     WHERE owner IS NULL OR expires_at < now()
                     ORDER BY partition LIMIT $3 FOR UPDATE SKIP LOCKED)
                 RETURNING partition",
            )
            .bind::<Text, _>(owner)
            .bind::<Double, _>(ttl_s)
            .bind::<BigInt, _>(wanted)
            .load::<Partition>(conn)
            .await?;
            held.extend(taken.into_iter().map(|p| p.partition));
            held.sort_unstable();
        }
        Ok(held)
    })
    .await
}

/// Gives every lease of `owner` back at once (graceful shutdown), so other
/// replicas take over without waiting for expiry.
///
/// # Errors
/// Database errors.
pub async fn release_leases(conn: &mut AsyncPgConnection, owner: &str) -> QueryResult<()> {
    diesel::sql_query(
        "UPDATE outbox_lease SET owner = NULL, expires_at = '-infinity' WHERE owner = $1",
    )
    .bind::<Text, _>(owner)
    .execute(conn)
    .await?;
    diesel::sql_query("DELETE FROM outbox_relay_member WHERE owner = $1")
        .bind::<Text, _>(owner)
        .execute(conn)
        .await?;
    Ok(())
}

/// The advisory lock writers hold (shared) from their outbox insert to
/// their commit; see migration `conditional_notify`.
const WRITERS_LOCK: i64 = 0x6f75_7462_6f78; // "outbox"

/// Declares `owner` waiting for NOTIFY, if no writer that could have
/// skipped its notification is still uncommitted. Returns `false` when a
/// writer holds the lock: work is on its way, poll instead. After `true`,
/// look for work once more before sleeping.
///
/// The lock is only tried, never waited for: a relay queued for it would
/// stall its own publishing and queue every new writer behind it (measured:
/// a 50 ms `lock_timeout` here was the largest part of the commit-to-consumer
/// p99 at 1,000 events/s).
///
/// # Errors
/// Database errors.
pub async fn start_waiting(conn: &mut AsyncPgConnection, owner: &str) -> QueryResult<bool> {
    // One statement: the transaction-level lock is held until it commits.
    let updated = diesel::sql_query(
        "UPDATE outbox_relay_member SET waiting = true
         WHERE owner = $1 AND pg_try_advisory_xact_lock($2)",
    )
    .bind::<Text, _>(owner)
    .bind::<BigInt, _>(WRITERS_LOCK)
    .execute(conn)
    .await?;
    Ok(updated == 1)
}

/// `owner` is busy again: writers need not notify on its account.
///
/// # Errors
/// Database errors.
pub async fn stop_waiting(conn: &mut AsyncPgConnection, owner: &str) -> QueryResult<()> {
    diesel::sql_query("UPDATE outbox_relay_member SET waiting = false WHERE owner = $1 AND waiting")
        .bind::<Text, _>(owner)
        .execute(conn)
        .await
        .map(drop)
}

/// Whether an operator paused this source (`outbox_relay_control`): then
/// no replica publishes it.
///
/// # Errors
/// Database errors.
pub async fn paused(conn: &mut AsyncPgConnection) -> QueryResult<bool> {
    #[derive(QueryableByName)]
    struct Paused {
        #[diesel(sql_type = Bool)]
        paused: bool,
    }
    let row: Option<Paused> =
        diesel::sql_query("SELECT paused_at IS NOT NULL AS paused FROM outbox_relay_control")
            .get_result(conn)
            .await
            .optional()?;
    Ok(row.is_some_and(|r| r.paused))
}

/// The backlog of one outbox, for metrics and health.
#[derive(Debug, Clone, Copy, Default, QueryableByName)]
pub struct Stats {
    /// Pending and not parked.
    #[diesel(sql_type = BigInt)]
    pub pending: i64,
    /// Age of the oldest pending, not parked, event; 0 when none.
    #[diesel(sql_type = Double)]
    pub oldest_pending_age_seconds: f64,
    #[diesel(sql_type = BigInt)]
    pub parked: i64,
    /// Pending, not parked, and failed at least once (in backoff).
    #[diesel(sql_type = BigInt)]
    pub failing: i64,
}

/// # Errors
/// Database errors.
pub async fn stats(conn: &mut AsyncPgConnection) -> QueryResult<Stats> {
    diesel::sql_query(
        "SELECT count(*) FILTER (WHERE parked_at IS NULL) AS pending,
                COALESCE(extract(epoch FROM now() - min(created_at) FILTER (WHERE parked_at IS NULL)), 0)::float8
                    AS oldest_pending_age_seconds,
                count(*) FILTER (WHERE parked_at IS NOT NULL) AS parked,
                count(*) FILTER (WHERE parked_at IS NULL AND attempts > 0) AS failing
         FROM outbox_pending",
    )
    .get_result(conn)
    .await
}

/// Vacuums `outbox_pending`, unless another session is vacuuming it. A role
/// that does not own the table gets a warning from PostgreSQL and nothing
/// done: autovacuum is then the only cleaner.
///
/// # Errors
/// Database errors.
pub async fn vacuum_pending(conn: &mut AsyncPgConnection) -> QueryResult<()> {
    conn.batch_execute("VACUUM (SKIP_LOCKED) outbox_pending")
        .await
}

/// One step of retention; see [`delete_published`].
#[derive(Debug, Clone, Copy, QueryableByName)]
pub struct Cleaned {
    /// Events deleted by this step.
    #[diesel(sql_type = BigInt)]
    pub deleted: i64,
    /// The highest `seq` this step looked at: where the next step starts.
    #[diesel(sql_type = BigInt)]
    pub last_seq: i64,
    /// No more to delete: the step reached events younger than the
    /// retention, or the end of the table.
    #[diesel(sql_type = Bool)]
    pub done: bool,
}

/// Deletes published events created more than `retention` ago among the
/// next `batch` events after `after`, in `seq` order. Call it again from
/// `last_seq` until `done`; small steps keep every transaction short.
/// Pending (and parked) events are kept whatever their age.
///
/// # Errors
/// Database errors.
pub async fn delete_published(
    conn: &mut AsyncPgConnection,
    retention: Duration,
    after: i64,
    batch: i64,
) -> QueryResult<Cleaned> {
    diesel::sql_query(
        "WITH scanned AS (
             SELECT id, seq, created_at < now() - $2 * interval '1 second' AS old
             FROM outbox WHERE seq > $1 ORDER BY seq LIMIT $3),
         gone AS (
             DELETE FROM outbox o USING scanned s
             WHERE o.id = s.id AND s.old
               AND NOT EXISTS (SELECT 1 FROM outbox_pending p WHERE p.seq = s.seq)
             RETURNING 1)
         SELECT (SELECT count(*) FROM gone) AS deleted,
                coalesce((SELECT max(seq) FROM scanned), $1) AS last_seq,
                (SELECT count(*) FROM scanned) < $3 OR EXISTS (SELECT 1 FROM scanned WHERE NOT old)
                    AS done",
    )
    .bind::<BigInt, _>(after)
    .bind::<Double, _>(retention.as_secs_f64())
    .bind::<BigInt, _>(batch)
    .get_result(conn)
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(aggregate: u128, seq: i64, due: bool) -> Candidate {
        Candidate {
            blocker: false,
            id: Uuid::new_v4(),
            aggregate_id: Uuid::from_u128(aggregate),
            seq,
            due,
        }
    }

    #[test]
    fn one_head_per_aggregate_and_failing_aggregates_wait() {
        let rows = vec![
            event(1, 1, true),
            event(2, 2, true),
            event(1, 3, true),  // not a head
            event(3, 4, false), // head, in backoff: aggregate 3 waits
            event(3, 5, true),
            event(4, 7, true), // blocked by a parked event of aggregate 4 (seq 6)
            event(5, 8, true),
        ];
        let blocked = HashMap::from([(Uuid::from_u128(3), 4), (Uuid::from_u128(4), 6)]);
        let none = HashSet::new();
        let heads: Vec<i64> = select_heads(rows.clone(), &blocked, none.clone(), 10)
            .iter()
            .map(|e| e.seq)
            .collect();
        assert_eq!(heads, [1, 2, 8]);
        assert_eq!(select_heads(rows.clone(), &blocked, none, 2).len(), 2);
        // An aggregate whose event is still awaiting its confirm yields nothing.
        let flying = HashSet::from([Uuid::from_u128(2)]);
        let heads: Vec<i64> = select_heads(rows, &blocked, flying, 10)
            .iter()
            .map(|e| e.seq)
            .collect();
        assert_eq!(heads, [1, 8]);
    }
}
