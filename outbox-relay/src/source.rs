//! One source database: its publish loop, its NOTIFY listener, its stats and
//! its retention. Every task survives database and broker restarts: errors
//! are logged, retried with capped backoff, and nothing is marked published
//! that the broker did not confirm.

use std::{
    collections::VecDeque,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use futures_util::StreamExt as _;
use orderflow_db::Pool;
use orderflow_outbox::relay::{self, PendingEvent};
use tokio::sync::{Notify, watch};
use tracing::Instrument as _;
use uuid::Uuid;

use crate::{
    config::{RelayConfig, SourceConfig},
    metrics::{Metrics, source_labels},
    publisher::{InFlight, Outcome, Publisher},
    rate::Rates,
};

/// What `/healthz` needs to know about a source.
#[derive(Debug, Clone, Default)]
pub struct SourceHealth {
    pub lag_seconds: f64,
    pub pending: i64,
    pub parked: i64,
    /// Pending events in backoff after a failed publish.
    pub failing: i64,
    /// This replica has seen the pause switch on and publishes nothing.
    pub paused: bool,
    /// When the stats query last succeeded: a source we cannot read is stuck.
    pub last_seen: Option<Instant>,
    pub last_error: Option<String>,
}

pub type Health = Arc<Mutex<std::collections::BTreeMap<String, SourceHealth>>>;

/// Idle polls, LINGER_POLL apart, before the relay asks for a NOTIFY.
const LINGER_POLLS: u32 = 4;
const LINGER_POLL: Duration = Duration::from_millis(5);

enum Waiting {
    /// Registered, and nothing to do: sleep until NOTIFY or the poll interval.
    Registered,
    /// Registered, but the last look found work: registration cleared.
    FoundWork,
    /// Writers held the lock: events are coming, keep polling.
    WritersBusy,
}

/// Rows read per partition per claim, besides those in flight: enough to
/// find many aggregates' heads.
const WINDOW_PER_PARTITION: i64 = 64;
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// How often the pause switch is read.
const CONTROL_CHECK: Duration = Duration::from_secs(1);

pub struct Source {
    pub config: SourceConfig,
    pub relay: Arc<RelayConfig>,
    pub pool: Pool,
    pub metrics: Metrics,
    pub health: Health,
    /// This replica's identity in `outbox_lease`.
    pub owner: String,
    /// Published events over the last minutes, for the dashboard's chart.
    pub rates: Rates,
    /// Pending entries this replica deleted since it last vacuumed them.
    pub published_since_vacuum: AtomicU64,
}

impl Source {
    /// Runs every task of this source until `shutdown` flips to true.
    pub async fn run(self: Arc<Self>, shutdown: watch::Receiver<bool>) {
        let wake = Arc::new(Notify::new());
        let listener = tokio::spawn(self.clone().listen(wake.clone(), shutdown.clone()));
        let stats = tokio::spawn(self.clone().watch_stats(shutdown.clone()));
        let retention = tokio::spawn(self.clone().clean(shutdown.clone()));
        self.publish_loop(wake, shutdown).await;
        listener.abort();
        stats.abort();
        retention.abort();
    }

    async fn publish_loop(&self, wake: Arc<Notify>, mut shutdown: watch::Receiver<bool>) {
        let name = &self.config.name;
        let mut publisher = Publisher::new(&self.relay.amqp_url, name, self.relay.publish_timeout);
        let heartbeat_every = self.relay.lease_ttl / 3;
        let mut owned: Vec<i16> = Vec::new();
        // Leases are trusted until this instant: renewal time + ttl - margin.
        let mut owned_until = Instant::now();
        let mut next_heartbeat = Instant::now();
        let mut backoff = Duration::from_millis(100);
        // Batches whose confirms are outstanding while the next is claimed
        // and sent, oldest first.
        let mut in_flight: VecDeque<InFlight> = VecDeque::new();
        let mut idle_polls = 0u32;
        // An operator's pause (in the database, for every replica), read
        // once a second.
        let mut paused = false;
        let mut next_control_check = Instant::now();

        while !*shutdown.borrow() {
            if Instant::now() >= next_control_check {
                match self.paused().await {
                    Ok(now_paused) => {
                        if now_paused != paused {
                            tracing::info!(source = %name, paused = now_paused, "publishing {}", if now_paused { "paused by an operator" } else { "resumed" });
                        }
                        paused = now_paused;
                        self.health
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner)
                            .entry(name.clone())
                            .or_default()
                            .paused = paused;
                    }
                    Err(e) => {
                        tracing::warn!(source = %name, error = %format!("{e:#}"), "cannot read the pause switch")
                    }
                }
                next_control_check = Instant::now() + CONTROL_CHECK;
            }
            if Instant::now() >= next_heartbeat {
                let started = Instant::now();
                match self.renew().await {
                    Ok(held) => {
                        if held != owned {
                            tracing::info!(source = %name, partitions = ?held, "partition leases changed");
                        }
                        owned = held;
                        owned_until = started + self.relay.lease_ttl - heartbeat_every;
                        next_heartbeat = started + heartbeat_every;
                    }
                    Err(e) => {
                        tracing::warn!(source = %name, error = %e, "cannot renew partition leases");
                        next_heartbeat = Instant::now() + backoff;
                    }
                }
                self.metrics
                    .owned_partitions
                    .get_or_create(&source_labels(name))
                    .set(owned.len() as i64);
            }
            // A replica that could not renew in time stops: another may own them now.
            let active: &[i16] = if !paused && Instant::now() < owned_until {
                &owned
            } else {
                &[]
            };

            let worked = if active.is_empty() && in_flight.is_empty() {
                Ok((0, 0))
            } else {
                self.cycle(&mut publisher, active, &mut in_flight).await
            };
            match worked {
                Ok((claimed, settled)) if claimed + settled > 0 => {
                    backoff = Duration::from_millis(100);
                    idle_polls = 0;
                    // A full batch: more is waiting, claim again at once. A
                    // partial one: events are trickling in; let the next
                    // ones gather for a moment, so that one claim and one
                    // publish carry several (cheaper for PostgreSQL, the
                    // broker and the relay alike).
                    if claimed < self.relay.batch_size && !self.relay.batch_linger.is_zero() {
                        tokio::select! {
                            () = tokio::time::sleep(self.relay.batch_linger) => {}
                            _ = shutdown.changed() => {}
                        }
                    }
                    continue;
                }
                Ok(_) => backoff = Duration::from_millis(100),
                Err(e) => {
                    tracing::warn!(source = %name, error = %format!("{e:#}"), "publish cycle failed; retrying");
                    self.metrics.failure(name, "infrastructure", 1);
                    tokio::select! {
                        () = tokio::time::sleep(backoff) => {}
                        _ = shutdown.changed() => {}
                    }
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    continue;
                }
            }
            // Idle. Under a steady load the next event is milliseconds
            // away: poll a few times before asking writers for a NOTIFY,
            // which would cost them their group commit.
            let until_heartbeat = next_heartbeat
                .min(next_control_check)
                .saturating_duration_since(Instant::now());
            let mut pause = if active.is_empty() {
                // Paused or without partitions: nothing to poll for.
                until_heartbeat
            } else {
                LINGER_POLL.min(until_heartbeat)
            };
            let mut registered = false;
            if idle_polls >= LINGER_POLLS && !active.is_empty() {
                match self
                    .start_waiting(&mut publisher, active, &mut in_flight)
                    .await
                {
                    Ok(Waiting::FoundWork) => continue,
                    Ok(Waiting::Registered) => {
                        registered = true;
                        pause = self.relay.poll_interval.min(until_heartbeat);
                    }
                    Ok(Waiting::WritersBusy) => {}
                    Err(e) => {
                        tracing::warn!(source = %name, error = %format!("{e:#}"), "cannot register for NOTIFY; polling")
                    }
                }
            }
            idle_polls += 1;
            // The oldest batch's answers (or its deadline) end the pause too:
            // settling it is work.
            let timeout = self.relay.publish_timeout;
            let answered = async {
                match in_flight.front_mut() {
                    Some(oldest) => {
                        let deadline = oldest.deadline(timeout);
                        let _ = tokio::time::timeout_at(deadline, oldest.answered()).await;
                    }
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = wake.notified() => {}
                () = tokio::time::sleep(pause) => {}
                () = answered => {}
                _ = shutdown.changed() => {}
            }
            if registered && let Err(e) = self.stop_waiting().await {
                tracing::warn!(source = %name, error = %format!("{e:#}"), "cannot clear the NOTIFY registration");
            }
        }

        // Graceful: settle the last batches, then hand the partitions over.
        while let Some(batch) = in_flight.pop_front() {
            if let Err(e) = self.settle(&mut publisher, batch).await {
                tracing::warn!(source = %name, error = %format!("{e:#}"), "last batch not settled; it will be published again");
            }
        }
        publisher.reset().await;
        match self.pool.get().await {
            Ok(mut conn) => {
                if let Err(e) = relay::release_leases(&mut conn, &self.owner).await {
                    tracing::warn!(source = %name, error = %e, "cannot release leases; they expire instead");
                }
            }
            Err(e) => {
                tracing::warn!(source = %name, error = %e, "cannot release leases; they expire instead")
            }
        }
        tracing::info!(source = %name, "stopped");
    }

    /// Registers for NOTIFY (see `relay::start_waiting`), then looks for
    /// work once more. Waking up clears the registration again.
    async fn start_waiting(
        &self,
        publisher: &mut Publisher,
        partitions: &[i16],
        in_flight: &mut VecDeque<InFlight>,
    ) -> anyhow::Result<Waiting> {
        let mut conn = self.pool.get().await?;
        if !relay::start_waiting(&mut conn, &self.owner).await? {
            return Ok(Waiting::WritersBusy);
        }
        drop(conn);
        let (claimed, settled) = self.cycle(publisher, partitions, in_flight).await?;
        if claimed + settled > 0 {
            self.stop_waiting().await?;
            return Ok(Waiting::FoundWork);
        }
        Ok(Waiting::Registered)
    }

    async fn stop_waiting(&self) -> anyhow::Result<()> {
        let mut conn = self.pool.get().await?;
        Ok(relay::stop_waiting(&mut conn, &self.owner).await?)
    }

    async fn paused(&self) -> anyhow::Result<bool> {
        let mut conn = self.pool.get().await?;
        Ok(relay::paused(&mut conn).await?)
    }

    async fn renew(&self) -> anyhow::Result<Vec<i16>> {
        let mut conn = self.pool.get().await?;
        Ok(relay::renew_leases(&mut conn, &self.owner, self.relay.lease_ttl).await?)
    }

    /// One round of the pipeline: claim the next heads (skipping aggregates
    /// still awaiting a confirm) and send them, then settle (mark, or record
    /// failures) the oldest batches the broker has answered or whose
    /// confirms are overdue (they count as unconfirmed). It waits for
    /// the broker only while more than `pipeline_depth` full batches of
    /// events are unanswered, so under a light load a new event is sent at
    /// once instead of after the confirms of the events before it. Returns
    /// how many events it sent and how many it settled; (0, 0) means there
    /// was nothing to do.
    async fn cycle(
        &self,
        publisher: &mut Publisher,
        partitions: &[i16],
        in_flight: &mut VecDeque<InFlight>,
    ) -> anyhow::Result<(usize, usize)> {
        let events = if partitions.is_empty() {
            Vec::new()
        } else {
            let flying = relay::InFlight {
                seqs: in_flight.iter().flat_map(InFlight::seqs).collect(),
                aggregates: in_flight.iter().flat_map(InFlight::aggregates).collect(),
            };
            let mut conn = self.pool.get().await?;
            relay::claim_heads(
                &mut conn,
                partitions,
                WINDOW_PER_PARTITION,
                self.relay.batch_size,
                flying,
            )
            .await?
        };
        let claimed = events.len();
        if !events.is_empty() {
            match publisher.send(events).await {
                // Tracked before older batches settle, so an error there
                // leaves it to be settled on the next round.
                Ok(batch) => in_flight.push_back(batch),
                Err(e) => {
                    while let Some(prev) = in_flight.pop_front() {
                        let _ = self.settle(publisher, prev).await;
                    }
                    return Err(e);
                }
            }
        }
        let capacity = self.relay.pipeline_depth * self.relay.batch_size;
        let mut unanswered: usize = in_flight.iter().map(InFlight::events).sum();
        let mut settled = 0;
        let now = tokio::time::Instant::now();
        while in_flight.front_mut().is_some_and(|oldest| {
            unanswered > capacity
                || oldest.is_answered()
                || oldest.deadline(self.relay.publish_timeout) <= now
        }) {
            let Some(oldest) = in_flight.pop_front() else {
                break;
            };
            unanswered -= oldest.events();
            settled += self.settle(publisher, oldest).await?;
        }
        Ok((claimed, settled))
    }

    /// Awaits a batch's confirms and records the outcome of each event.
    async fn settle(&self, publisher: &mut Publisher, batch: InFlight) -> anyhow::Result<usize> {
        let span = batch.span();
        let (events, outcomes, elapsed) = publisher.settle(batch).await;
        // Marking belongs to the batch's trace (its transactions too).
        self.record(events, outcomes, elapsed)
            .instrument(span)
            .await
    }

    async fn record(
        &self,
        events: Vec<PendingEvent>,
        outcomes: Vec<Outcome>,
        elapsed: Duration,
    ) -> anyhow::Result<usize> {
        let name = &self.config.name;
        self.metrics
            .batch_seconds
            .get_or_create(&source_labels(name))
            .observe(elapsed.as_secs_f64());
        let (confirmed, rejected, unconfirmed) = split(&events, outcomes);
        let mut conn = self.pool.get().await?;
        if !confirmed.is_empty() {
            relay::mark_published(&mut conn, &confirmed, &self.owner).await?;
            self.published_since_vacuum
                .fetch_add(confirmed.len() as u64, Ordering::Relaxed);
            self.rates.record(name, confirmed.len() as u64);
            self.metrics
                .published
                .get_or_create(&source_labels(name))
                .inc_by(confirmed.len() as u64);
        }
        if !rejected.is_empty() {
            for (id, reason, error) in &rejected {
                tracing::warn!(source = %name, event.id = %id, reason, error, "broker rejected an event");
                self.metrics.failure(name, reason, 1);
            }
            let failures: Vec<(Uuid, String)> =
                rejected.into_iter().map(|(id, _, e)| (id, e)).collect();
            relay::record_failures(&mut conn, &failures, self.relay.retry).await?;
        }
        if unconfirmed > 0 {
            self.metrics.failure(name, "broker", unconfirmed as u64);
            anyhow::bail!("{unconfirmed} event(s) unconfirmed: the broker connection was lost");
        }
        Ok(events.len())
    }

    /// LISTEN on a connection of its own; every notification wakes the
    /// publish loop. `Notify` keeps one permit, so a wake-up that arrives
    /// while a batch is running is not lost.
    async fn listen(self: Arc<Self>, wake: Arc<Notify>, shutdown: watch::Receiver<bool>) {
        let mut backoff = Duration::from_millis(200);
        while !*shutdown.borrow() {
            if let Err(e) = self.listen_once(&wake).await {
                tracing::warn!(source = %self.config.name, error = %e, "LISTEN connection lost; reconnecting");
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    /// Returns only with the error that ended the connection.
    async fn listen_once(&self, wake: &Notify) -> anyhow::Result<()> {
        let mut config: tokio_postgres::Config = self.config.database_url.parse()?;
        config.application_name(format!("outbox-relay/{}/listen", self.config.name));
        let (client, mut connection) = config.connect(tokio_postgres::NoTls).await?;
        let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
        // Drives the connection; completes only when it fails or closes.
        let forward = async {
            while let Some(message) = messages.next().await {
                match message {
                    Ok(tokio_postgres::AsyncMessage::Notification(_)) => wake.notify_one(),
                    Ok(_) => {}
                    Err(e) => return anyhow::Error::from(e),
                }
            }
            anyhow::anyhow!("connection closed")
        };
        let subscribe = async {
            client.batch_execute("LISTEN outbox_pending").await?;
            // Rows may have been committed while we were not listening.
            wake.notify_one();
            anyhow::Ok(())
        };
        tokio::pin!(forward);
        tokio::select! {
            e = &mut forward => return Err(e),
            r = subscribe => r?,
        }
        Err(forward.await)
    }

    /// Backlog metrics and health, every two seconds; and a vacuum of the
    /// pending table after every `vacuum_every` published events. Every
    /// claim walks the index entries of deleted rows at the head of each
    /// partition until a vacuum removes them, and autovacuum looks only once
    /// a minute: at 10,000 events/s the window read grew from 1 to 5 ms per
    /// claim within one drain (measured).
    async fn watch_stats(self: Arc<Self>, shutdown: watch::Receiver<bool>) {
        let name = self.config.name.clone();
        let labels = source_labels(&name);
        while !*shutdown.borrow() {
            let every = self.relay.vacuum_every;
            if every > 0 && self.published_since_vacuum.load(Ordering::Relaxed) >= every {
                self.published_since_vacuum.store(0, Ordering::Relaxed);
                let vacuumed = async {
                    let mut conn = self.pool.get().await?;
                    anyhow::Ok(relay::vacuum_pending(&mut conn).await?)
                }
                .await;
                if let Err(e) = vacuumed {
                    tracing::warn!(source = %name, error = %format!("{e:#}"), "cannot vacuum outbox_pending; autovacuum will");
                }
            }
            let result = async {
                let mut conn = self.pool.get().await?;
                anyhow::Ok(relay::stats(&mut conn).await?)
            }
            .await;
            {
                let mut health = self
                    .health
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                let entry = health.entry(name.clone()).or_default();
                match result {
                    Ok(stats) => {
                        self.metrics
                            .pending
                            .get_or_create(&labels)
                            .set(stats.pending);
                        self.metrics.parked.get_or_create(&labels).set(stats.parked);
                        self.metrics
                            .oldest_pending_age
                            .get_or_create(&labels)
                            .set(stats.oldest_pending_age_seconds);
                        entry.lag_seconds = stats.oldest_pending_age_seconds;
                        entry.pending = stats.pending;
                        entry.parked = stats.parked;
                        entry.failing = stats.failing;
                        entry.last_seen = Some(Instant::now());
                        entry.last_error = None;
                    }
                    Err(e) => entry.last_error = Some(format!("{e:#}")),
                }
            }
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
    }

    /// Deletes published rows older than the retention, in small batches.
    async fn clean(self: Arc<Self>, shutdown: watch::Receiver<bool>) {
        const BATCH: i64 = 1_000;
        while !*shutdown.borrow() {
            let result = async {
                let mut total = 0;
                let mut after = 0;
                loop {
                    let mut conn = self.pool.get().await?;
                    let step =
                        relay::delete_published(&mut conn, self.relay.retention, after, BATCH)
                            .await?;
                    total += step.deleted;
                    after = step.last_seq;
                    if step.done || *shutdown.borrow() {
                        return anyhow::Ok(total);
                    }
                }
            }
            .await;
            match result {
                Ok(0) => {}
                Ok(n) => {
                    tracing::info!(source = %self.config.name, deleted = n, "deleted published events past retention")
                }
                Err(e) => {
                    tracing::warn!(source = %self.config.name, error = %format!("{e:#}"), "retention cleanup failed")
                }
            }
            tokio::time::sleep(Duration::from_secs(60)).await;
        }
    }
}

type Rejected = Vec<(Uuid, &'static str, String)>;

/// Confirmed events (by `seq`), rejected ones (by id, with the reason), and
/// how many the broker never answered for.
fn split(events: &[PendingEvent], outcomes: Vec<Outcome>) -> (Vec<i64>, Rejected, usize) {
    let mut confirmed = Vec::new();
    let mut rejected = Vec::new();
    let mut unconfirmed = 0;
    for (event, outcome) in events.iter().zip(outcomes) {
        match outcome {
            Outcome::Confirmed => confirmed.push(event.seq),
            Outcome::Rejected { reason, error } => rejected.push((event.id, reason, error)),
            Outcome::Unconfirmed => unconfirmed += 1,
        }
    }
    (confirmed, rejected, unconfirmed)
}
