//! Outbox events and the source switches: search, detail, unpark, replay,
//! pause, resume, and the audit log that records each action.

use chrono::{DateTime, Utc};
use diesel::sql_types::{Array, BigInt, Integer, Nullable, Text, Timestamptz};
use serde::Deserialize;
use serde_json::{Value, json};
use uuid::Uuid;

use super::{Actor, Ops, OpsError, OpsResult, json_value};

/// The columns an event is shown with (without payload and headers), from
/// `outbox o` joined with its pending state `p` (none once published).
const EVENT_COLUMNS: &str = "o.id, o.seq, o.aggregate_type, o.aggregate_id, o.event_type, \
     o.created_at, p.seq IS NULL AS published, coalesce(p.attempts, 0) AS attempts, \
     p.last_error, p.parked_at, p.next_attempt_at";
/// An event with its pending state.
const EVENT_FROM: &str = "outbox o LEFT JOIN outbox_pending p ON p.seq = o.seq";

/// Filters of the event browser; all optional but the source.
#[derive(Debug, Default, Clone, Deserialize)]
pub struct EventQuery {
    pub source: Option<String>,
    pub id: Option<String>,
    pub aggregate_id: Option<String>,
    #[serde(rename = "type")]
    pub event_type: Option<String>,
    pub from: Option<String>,
    pub to: Option<String>,
    /// `pending`, `published`, `parked` or empty.
    pub status: Option<String>,
    pub limit: Option<String>,
    pub before_seq: Option<String>,
}

fn non_empty(v: Option<&String>) -> Option<&str> {
    v.map(|s| s.trim()).filter(|s| !s.is_empty())
}

fn uuid_field(field: &str, v: Option<&String>) -> OpsResult<Option<Uuid>> {
    non_empty(v)
        .map(|s| {
            Uuid::parse_str(s)
                .map_err(|_| OpsError::BadRequest(format!("{field} is not a UUID: {s:?}")))
        })
        .transpose()
}

fn time_field(field: &str, v: Option<&String>) -> OpsResult<Option<DateTime<Utc>>> {
    non_empty(v)
        .map(|s| {
            DateTime::parse_from_rfc3339(s)
                .map(|t| t.with_timezone(&Utc))
                .map_err(|_| {
                    OpsError::BadRequest(format!(
                        "{field} is not an RFC 3339 time (e.g. 2026-11-23T16:00:00Z): {s:?}"
                    ))
                })
        })
        .transpose()
}

fn int_field(
    field: &str,
    v: Option<&String>,
    range: std::ops::RangeInclusive<i64>,
) -> OpsResult<Option<i64>> {
    non_empty(v)
        .map(|s| match s.parse::<i64>() {
            Ok(n) if range.contains(&n) => Ok(n),
            _ => Err(OpsError::BadRequest(format!(
                "{field} must be an integer in {}..={}: {s:?}",
                range.start(),
                range.end()
            ))),
        })
        .transpose()
}

impl Ops {
    /// Events of one source matching every given filter, newest first.
    ///
    /// # Errors
    /// A malformed filter names its field; database errors.
    pub async fn search_events(&self, q: &EventQuery) -> OpsResult<Value> {
        let name = non_empty(q.source.as_ref())
            .ok_or_else(|| OpsError::BadRequest("source is required".to_owned()))?;
        let source = self.source(name)?;
        let id = uuid_field("id", q.id.as_ref())?;
        let aggregate_id = uuid_field("aggregate_id", q.aggregate_id.as_ref())?;
        let event_type = non_empty(q.event_type.as_ref()).map(str::to_owned);
        let from = time_field("from", q.from.as_ref())?;
        let to = time_field("to", q.to.as_ref())?;
        let status = match non_empty(q.status.as_ref()) {
            None | Some("all") => None,
            Some(s @ ("pending" | "published" | "parked")) => Some(s.to_owned()),
            Some(s) => {
                return Err(OpsError::BadRequest(format!(
                    "status must be pending, published or parked: {s:?}"
                )));
            }
        };
        let limit = int_field("limit", q.limit.as_ref(), 1..=200)?.unwrap_or(50);
        let before = int_field("before_seq", q.before_seq.as_ref(), 1..=i64::MAX)?;
        let sql = format!(
            "SELECT coalesce(json_agg(e ORDER BY e.seq DESC), '[]')::text AS json FROM (
                 SELECT {EVENT_COLUMNS} FROM {EVENT_FROM}
                 WHERE ($1::uuid IS NULL OR o.id = $1)
                   AND ($2::uuid IS NULL OR o.aggregate_id = $2)
                   AND ($3::text IS NULL OR o.event_type = $3)
                   AND ($4::timestamptz IS NULL OR o.created_at >= $4)
                   AND ($5::timestamptz IS NULL OR o.created_at < $5)
                   AND ($6::text IS NULL
                        OR ($6 = 'pending' AND p.seq IS NOT NULL AND p.parked_at IS NULL)
                        OR ($6 = 'published' AND p.seq IS NULL)
                        OR ($6 = 'parked' AND p.parked_at IS NOT NULL))
                   AND ($7::bigint IS NULL OR o.seq < $7)
                 ORDER BY o.seq DESC LIMIT $8) e"
        );
        let mut conn = source.pool.get().await?;
        let events = json_value(
            &mut conn,
            diesel::sql_query(sql)
                .bind::<Nullable<diesel::sql_types::Uuid>, _>(id)
                .bind::<Nullable<diesel::sql_types::Uuid>, _>(aggregate_id)
                .bind::<Nullable<Text>, _>(event_type)
                .bind::<Nullable<Timestamptz>, _>(from)
                .bind::<Nullable<Timestamptz>, _>(to)
                .bind::<Nullable<Text>, _>(status)
                .bind::<Nullable<BigInt>, _>(before)
                .bind::<BigInt, _>(limit),
        )
        .await?;
        let mut events = match events {
            Value::Array(a) => a,
            _ => Vec::new(),
        };
        for e in &mut events {
            e["source"] = json!(name);
        }
        let next = (events.len() as i64 == limit)
            .then(|| events.last().and_then(|e| e["seq"].as_i64()))
            .flatten();
        Ok(json!({ "events": events, "next_before_seq": next }))
    }

    /// One event with its payload and headers.
    ///
    /// # Errors
    /// [`OpsError::NotFound`]; database errors.
    pub async fn event(&self, source: &str, id: &str) -> OpsResult<Value> {
        let src = self.source(source)?;
        let id = Uuid::parse_str(id)
            .map_err(|_| OpsError::BadRequest(format!("id is not a UUID: {id:?}")))?;
        let mut conn = src.pool.get().await?;
        let found = json_value(
            &mut conn,
            diesel::sql_query(format!(
                "SELECT coalesce((SELECT row_to_json(e)::text FROM (
                     SELECT {EVENT_COLUMNS}, o.payload, o.headers FROM {EVENT_FROM} WHERE o.id = $1) e),
                     'null') AS json"
            ))
            .bind::<diesel::sql_types::Uuid, _>(id),
        )
        .await?;
        match found {
            Value::Null => Err(OpsError::NotFound(format!(
                "no event {id} in source {source}"
            ))),
            mut e => {
                e["source"] = json!(source);
                Ok(e)
            }
        }
    }

    /// Puts parked events (the listed ones, or all) back in line. One
    /// statement: the change and its audit entry commit together.
    ///
    /// # Errors
    /// [`OpsError::Conflict`] when none was parked; database errors.
    pub async fn unpark(&self, actor: &Actor, source: &str, ids: &[Uuid]) -> OpsResult<Value> {
        let src = self.source(source)?;
        let target = if ids.is_empty() {
            "every parked event".to_owned()
        } else {
            format!("{} listed event(s)", ids.len())
        };
        let mut conn = src.pool.get().await?;
        let result = json_value(
            &mut conn,
            diesel::sql_query(
                "WITH u AS (
                     UPDATE outbox_pending SET parked_at = NULL, attempts = 0, next_attempt_at = NULL
                     WHERE parked_at IS NOT NULL AND ($1::uuid[] IS NULL OR id = ANY($1))
                     RETURNING id),
                 s AS (SELECT count(*)::int AS n, coalesce(jsonb_agg(id), '[]') AS ids FROM u),
                 a AS (INSERT INTO outbox_audit (by, action, target, count, detail)
                       SELECT $2, 'unpark', $3, n, jsonb_build_object('ids', ids) FROM s WHERE n > 0
                       RETURNING id)
                 SELECT json_build_object('unparked', s.n, 'audit', (SELECT id FROM a))::text AS json FROM s",
            )
            .bind::<Nullable<Array<diesel::sql_types::Uuid>>, _>((!ids.is_empty()).then(|| ids.to_vec()))
            .bind::<Text, _>(actor.operator.clone())
            .bind::<Text, _>(target),
        )
        .await?;
        if result["unparked"].as_i64().unwrap_or(0) == 0 {
            return Err(OpsError::Conflict("no parked event matched".to_owned()));
        }
        Ok(json!({ "unparked": result["unparked"] }))
    }

    /// Stops (`pause = true`) or restarts publishing of a source on every
    /// replica (they read the switch every second). Resuming also NOTIFYs,
    /// so idle replicas look for work at once.
    ///
    /// # Errors
    /// A pause without reason; database errors.
    pub async fn set_paused(
        &self,
        actor: &Actor,
        source: &str,
        pause: bool,
        reason: Option<&str>,
    ) -> OpsResult<Value> {
        let src = self.source(source)?;
        let reason = if pause {
            Some(super::required_text("reason", reason, 500)?)
        } else {
            reason
                .map(str::trim)
                .filter(|r| !r.is_empty())
                .map(str::to_owned)
        };
        let mut conn = src.pool.get().await?;
        json_value(
            &mut conn,
            diesel::sql_query(
                "WITH c AS (
                     UPDATE outbox_relay_control SET
                         paused_at = CASE WHEN $1 THEN coalesce(paused_at, now()) END,
                         paused_by = CASE WHEN $1 THEN $2 END,
                         pause_reason = CASE WHEN $1 THEN $3 END
                     RETURNING paused_at, paused_by, pause_reason),
                 a AS (INSERT INTO outbox_audit (by, action, target, reason)
                       VALUES ($2, CASE WHEN $1 THEN 'pause' ELSE 'resume' END, 'source', $3)
                       RETURNING id),
                 n AS (SELECT pg_notify('outbox_pending', '') WHERE NOT $1)
                 SELECT json_build_object('paused', c.paused_at IS NOT NULL, 'audit', (SELECT id FROM a),
                     'woken', (SELECT count(*) FROM n))::text AS json FROM c",
            )
            .bind::<diesel::sql_types::Bool, _>(pause)
            .bind::<Text, _>(actor.operator.clone())
            .bind::<Nullable<Text>, _>(reason),
        )
        .await?;
        self.control(source).await
    }

    /// The pause switch of a source.
    ///
    /// # Errors
    /// Database errors.
    pub async fn control(&self, source: &str) -> OpsResult<Value> {
        let src = self.source(source)?;
        let mut conn = src.pool.get().await?;
        json_value(
            &mut conn,
            diesel::sql_query(
                "SELECT json_build_object('paused', paused_at IS NOT NULL, 'paused_at', paused_at,
                     'paused_by', paused_by, 'pause_reason', pause_reason)::text AS json
                 FROM outbox_relay_control",
            ),
        )
        .await
    }

    /// Re-publishes already published events: they go back in line and the
    /// relay publishes them again, in order per aggregate, with their own
    /// ids as message ids (consumers deduplicate). Recorded in the audit log.
    ///
    /// # Errors
    /// A selector that is missing, ambiguous or malformed; [`OpsError::Conflict`]
    /// when it matches no published event; database errors.
    pub async fn replay(&self, actor: &Actor, req: &ReplayRequest) -> OpsResult<Value> {
        let name = req
            .source
            .as_deref()
            .ok_or_else(|| OpsError::BadRequest("source is required".to_owned()))?;
        let src = self.source(name)?;
        let reason = super::required_text("reason", req.reason.as_deref(), 500)?;
        let selector = req.selector()?;
        let (ids, aggregate, from, to) = selector.binds();
        let mut conn = src.pool.get().await?;
        // One statement: the events go back in line and the replay is
        // recorded, or neither. Large replays keep the first 1,000 ids.
        let entry = json_value(
            &mut conn,
            diesel::sql_query(
                "WITH r AS (
                     INSERT INTO outbox_pending (seq, id, aggregate_id, partition, created_at)
                     SELECT o.seq, o.id, o.aggregate_id, o.partition, o.created_at FROM outbox o
                     WHERE NOT EXISTS (SELECT 1 FROM outbox_pending p WHERE p.seq = o.seq)
                       AND ($1::uuid[] IS NULL OR o.id = ANY($1))
                       AND ($2::uuid IS NULL OR o.aggregate_id = $2)
                       AND ($3::timestamptz IS NULL OR o.created_at >= $3)
                       AND ($4::timestamptz IS NULL OR o.created_at < $4)
                     ON CONFLICT (seq) DO NOTHING
                     RETURNING id),
                 s AS (SELECT count(*)::int AS n,
                              coalesce((SELECT jsonb_agg(id) FROM (SELECT id FROM r LIMIT 1000) x), '[]') AS ids
                       FROM r),
                 a AS (INSERT INTO outbox_audit (by, action, target, reason, count, detail)
                       SELECT $5, 'replay', $6, $7, n,
                              jsonb_build_object('selector', $6, 'ids', ids, 'ids_truncated', n > 1000)
                       FROM s WHERE n > 0
                       RETURNING id, at, by, action, target, reason, count, detail)
                 SELECT coalesce((SELECT row_to_json(a)::text FROM a), 'null') AS json",
            )
            .bind::<Nullable<Array<diesel::sql_types::Uuid>>, _>(ids)
            .bind::<Nullable<diesel::sql_types::Uuid>, _>(aggregate)
            .bind::<Nullable<Timestamptz>, _>(from)
            .bind::<Nullable<Timestamptz>, _>(to)
            .bind::<Text, _>(actor.operator.clone())
            .bind::<Text, _>(selector.describe())
            .bind::<Text, _>(reason),
        )
        .await?;
        if entry.is_null() {
            return Err(OpsError::Conflict(
                "no published event matched: nothing to replay".to_owned(),
            ));
        }
        Ok(with_source(entry, name))
    }

    /// Audit entries of every source, newest first; only `action` if given.
    ///
    /// # Errors
    /// Database errors.
    pub async fn audit(&self, action: Option<&str>, limit: i64) -> OpsResult<Value> {
        let mut all = Vec::new();
        for src in self.sources.iter() {
            let mut conn = src.pool.get().await?;
            let rows = json_value(
                &mut conn,
                diesel::sql_query(
                    "SELECT coalesce(json_agg(a ORDER BY a.id DESC), '[]')::text AS json FROM (
                         SELECT id, at, by, action, target, reason, count, detail FROM outbox_audit
                         WHERE ($1::text IS NULL OR action = $1) ORDER BY id DESC LIMIT $2) a",
                )
                .bind::<Nullable<Text>, _>(action.map(str::to_owned))
                .bind::<BigInt, _>(limit),
            )
            .await?;
            if let Value::Array(rows) = rows {
                all.extend(rows.into_iter().map(|r| with_source(r, &src.name)));
            }
        }
        all.sort_by(|a, b| b["at"].as_str().cmp(&a["at"].as_str()));
        all.truncate(usize::try_from(limit).unwrap_or(100));
        Ok(json!({ "entries": all }))
    }
}

fn with_source(mut v: Value, source: &str) -> Value {
    v["source"] = json!(source);
    v
}

/// Records an operator action in the same transaction as the action.
pub(crate) async fn audit(
    conn: &mut diesel_async::AsyncPgConnection,
    by: &str,
    action: &str,
    target: &str,
    reason: Option<&str>,
    count: usize,
    detail: Value,
) -> OpsResult<Value> {
    json_value(
        conn,
        diesel::sql_query(
            "WITH a AS (INSERT INTO outbox_audit (by, action, target, reason, count, detail)
                        VALUES ($1, $2, $3, $4, $5, $6::jsonb)
                        RETURNING id, at, by, action, target, reason, count, detail)
             SELECT row_to_json(a)::text AS json FROM a",
        )
        .bind::<Text, _>(by.to_owned())
        .bind::<Text, _>(action.to_owned())
        .bind::<Text, _>(target.to_owned())
        .bind::<Nullable<Text>, _>(reason.map(str::to_owned))
        .bind::<Integer, _>(i32::try_from(count).unwrap_or(i32::MAX))
        .bind::<Text, _>(detail.to_string()),
    )
    .await
}

/// `POST /api/replays` and `outbox-relay replay`.
#[derive(Debug, Default, Clone, Deserialize)]
pub struct ReplayRequest {
    pub source: Option<String>,
    pub reason: Option<String>,
    #[serde(default)]
    pub ids: Vec<String>,
    pub aggregate_id: Option<String>,
    pub from: Option<String>,
    pub to: Option<String>,
}

/// Which events a replay takes: exactly one kind.
#[derive(Debug, Clone)]
pub enum Selector {
    Ids(Vec<Uuid>),
    Aggregate(Uuid),
    Range(DateTime<Utc>, DateTime<Utc>),
}

impl ReplayRequest {
    fn selector(&self) -> OpsResult<Selector> {
        let ids: Vec<&String> = self.ids.iter().filter(|s| !s.trim().is_empty()).collect();
        let aggregate = uuid_field("aggregate_id", self.aggregate_id.as_ref())?;
        let from = time_field("from", self.from.as_ref())?;
        let to = time_field("to", self.to.as_ref())?;
        let given = usize::from(!ids.is_empty())
            + usize::from(aggregate.is_some())
            + usize::from(from.is_some() || to.is_some());
        if given != 1 {
            return Err(OpsError::BadRequest(
                "give exactly one selector: ids, aggregate_id, or from and to".to_owned(),
            ));
        }
        if !ids.is_empty() {
            if ids.len() > 10_000 {
                return Err(OpsError::BadRequest("ids: at most 10,000".to_owned()));
            }
            let parsed = ids
                .iter()
                .map(|s| {
                    Uuid::parse_str(s.trim())
                        .map_err(|_| OpsError::BadRequest(format!("ids: not a UUID: {s:?}")))
                })
                .collect::<OpsResult<Vec<_>>>()?;
            return Ok(Selector::Ids(parsed));
        }
        if let Some(a) = aggregate {
            return Ok(Selector::Aggregate(a));
        }
        match (from, to) {
            (Some(f), Some(t)) if f < t => Ok(Selector::Range(f, t)),
            (Some(_), Some(_)) => Err(OpsError::BadRequest("from must be before to".to_owned())),
            _ => Err(OpsError::BadRequest(
                "a time range needs both from and to".to_owned(),
            )),
        }
    }
}

type SelectorBinds = (
    Option<Vec<Uuid>>,
    Option<Uuid>,
    Option<DateTime<Utc>>,
    Option<DateTime<Utc>>,
);

impl Selector {
    fn binds(&self) -> SelectorBinds {
        match self {
            Self::Ids(ids) => (Some(ids.clone()), None, None, None),
            Self::Aggregate(a) => (None, Some(*a), None, None),
            Self::Range(f, t) => (None, None, Some(*f), Some(*t)),
        }
    }

    fn describe(&self) -> String {
        match self {
            Self::Ids(ids) if ids.len() == 1 => format!("event {}", ids[0]),
            Self::Ids(ids) => format!("{} listed events", ids.len()),
            Self::Aggregate(a) => format!("aggregate {a}"),
            Self::Range(f, t) => format!("created {} .. {}", f.to_rfc3339(), t.to_rfc3339()),
        }
    }
}
