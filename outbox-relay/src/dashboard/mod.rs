//! The ops dashboard: a page for the engineer on call and the JSON API
//! behind it (docs/DASHBOARD.md). Every route here needs the admin token;
//! the actions themselves live in [`crate::ops`], shared with the CLI.

pub mod auth;
mod pages;

use std::collections::HashMap;

use axum::{
    Json, Router,
    extract::{Path, Query, Request, State},
    http::{HeaderMap, HeaderValue, Method, StatusCode, header},
    middleware::{self, Next},
    response::{IntoResponse, Redirect, Response},
    routing::{get, post},
};
use serde::Deserialize;
use serde_json::{Value, json};

use self::auth::{Identity, Keys, SESSION_COOKIE};
use crate::{
    metrics::{Metrics, source_labels},
    ops::{
        Actor, Ops, OpsError,
        dlq::DlqSelection,
        events::{EventQuery, ReplayRequest},
    },
    rate::Rates,
    source::Health,
};

#[derive(Clone)]
pub struct Dashboard {
    /// `None`: no RELAY_ADMIN_TOKEN, the dashboard is off.
    pub keys: Option<Keys>,
    pub ops: Ops,
    pub health: Health,
    pub metrics: Metrics,
    pub rates: Rates,
}

/// Every dashboard route, behind the token check.
pub fn router(state: Dashboard) -> Router {
    let api = Router::new()
        .route("/", get(pages::index))
        .route("/assets/app.css", get(pages::css))
        .route("/assets/app.js", get(pages::js))
        .route("/logout", post(logout))
        .route("/api/session", get(session))
        .route("/api/overview", get(overview))
        .route("/api/events", get(search_events))
        .route("/api/events/{source}/{id}", get(event))
        .route("/api/events/{source}/unpark", post(unpark))
        .route("/api/sources/{name}/pause", post(pause))
        .route("/api/sources/{name}/resume", post(resume))
        .route("/api/dlq", get(dlq_queues))
        .route("/api/dlq/{queue}", get(dlq_messages))
        .route("/api/dlq/{queue}/retry", post(dlq_retry))
        .route("/api/dlq/{queue}/discard", post(dlq_discard))
        .route("/api/replays", get(replays).post(replay))
        .route("/api/audit", get(audit))
        .layer(middleware::from_fn_with_state(state.clone(), require_auth));
    Router::new()
        .route("/login", get(login_page).post(login))
        .merge(api)
        .layer(middleware::from_fn(security_headers))
        .with_state(state)
}

// ---------------------------------------------------------------------------
// Access

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// Who is calling, if anyone: a bearer token or a session cookie.
fn identify(keys: &Keys, headers: &HeaderMap) -> Option<Identity> {
    if let Some(token) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    {
        if !keys.token_matches(token.trim()) {
            return None;
        }
        let operator = headers
            .get("x-operator")
            .and_then(|v| v.to_str().ok())
            .and_then(auth::operator_name)
            .unwrap_or_else(|| "api".to_owned());
        return Some(Identity {
            operator,
            csrf: None,
        });
    }
    keys.verify(cookie(headers, SESSION_COOKIE)?, now())
}

fn unauthorized(req: &Request, message: &str, dashboard_on: bool) -> Response {
    if req.uri().path().starts_with("/api/") {
        return (StatusCode::UNAUTHORIZED, Json(json!({ "error": message }))).into_response();
    }
    pages::login(StatusCode::UNAUTHORIZED, Some(message), dashboard_on)
}

async fn require_auth(State(state): State<Dashboard>, mut req: Request, next: Next) -> Response {
    let Some(keys) = &state.keys else {
        return unauthorized(
            &req,
            "the dashboard is off: start the relay with RELAY_ADMIN_TOKEN set",
            false,
        );
    };
    let Some(identity) = identify(keys, req.headers()) else {
        return unauthorized(&req, "log in with the admin token", true);
    };
    let safe = matches!(*req.method(), Method::GET | Method::HEAD);
    if !safe && let Some(expected) = &identity.csrf {
        let presented = req
            .headers()
            .get("x-csrf-token")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        if !auth::csrf_matches(expected, presented) {
            return (
                StatusCode::FORBIDDEN,
                Json(json!({ "error": "missing or wrong X-CSRF-Token header (from GET /api/session)" })),
            )
                .into_response();
        }
    }
    req.extensions_mut().insert(identity);
    next.run(req).await
}

/// Headers that keep the pages out of frames, sniffing and referrers.
async fn security_headers(req: Request, next: Next) -> Response {
    let mut res = next.run(req).await;
    let h = res.headers_mut();
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    h.insert("x-frame-options", HeaderValue::from_static("DENY"));
    h.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    h.entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    h.entry(header::CONTENT_SECURITY_POLICY).or_insert(HeaderValue::from_static(
        "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
    ));
    res
}

async fn login_page(State(state): State<Dashboard>) -> Response {
    let on = state.keys.is_some();
    pages::login(
        StatusCode::UNAUTHORIZED,
        (!on).then_some("the dashboard is off: start the relay with RELAY_ADMIN_TOKEN set"),
        on,
    )
}

#[derive(Deserialize)]
struct LoginForm {
    token: String,
    operator: String,
}

async fn login(
    State(state): State<Dashboard>,
    headers: HeaderMap,
    axum::Form(form): axum::Form<LoginForm>,
) -> Response {
    let Some(keys) = &state.keys else {
        return pages::login(
            StatusCode::UNAUTHORIZED,
            Some("the dashboard is off: start the relay with RELAY_ADMIN_TOKEN set"),
            false,
        );
    };
    let Some(operator) = auth::operator_name(&form.operator) else {
        return pages::login(
            StatusCode::BAD_REQUEST,
            Some("your name: 1 to 64 letters, digits, spaces or . @ _ -"),
            true,
        );
    };
    if !keys.token_matches(form.token.trim()) {
        tracing::warn!(operator = %operator, "dashboard login with a wrong token");
        return pages::login(StatusCode::UNAUTHORIZED, Some("wrong token"), true);
    }
    tracing::info!(operator = %operator, "dashboard login");
    let secure = headers
        .get("x-forwarded-proto")
        .is_some_and(|v| v.as_bytes() == b"https");
    let cookie = format!(
        "{SESSION_COOKIE}={}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{}",
        keys.issue(&operator, now()),
        auth::SESSION_TTL_SECONDS,
        if secure { "; Secure" } else { "" }
    );
    let mut res = Redirect::to("/").into_response();
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        res.headers_mut().insert(header::SET_COOKIE, v);
    }
    res
}

async fn logout() -> Response {
    let mut res = Json(json!({ "logged_out": true })).into_response();
    res.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static(
            "orderflow_session=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0",
        ),
    );
    res
}

// ---------------------------------------------------------------------------
// API

impl IntoResponse for OpsError {
    fn into_response(self) -> Response {
        let status = match &self {
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::Upstream(_) => StatusCode::BAD_GATEWAY,
        };
        (status, Json(json!({ "error": self.to_string() }))).into_response()
    }
}

type ApiResult = Result<Json<Value>, OpsError>;

fn actor(identity: &Identity) -> Actor {
    Actor {
        operator: identity.operator.clone(),
    }
}

/// A JSON body, with a 400 that says what is wrong instead of axum's text.
struct Body<T>(T);

impl<S, T> axum::extract::FromRequest<S> for Body<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = OpsError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(v)) => Ok(Self(v)),
            Err(e) => Err(OpsError::BadRequest(format!(
                "request body: {}",
                e.body_text()
            ))),
        }
    }
}

async fn session(axum::Extension(id): axum::Extension<Identity>) -> Json<Value> {
    Json(json!({ "operator": id.operator, "csrf_token": id.csrf }))
}

async fn overview(State(state): State<Dashboard>) -> ApiResult {
    let health = state
        .health
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    let mut sources = Vec::new();
    for src in state.ops.sources.iter() {
        let h = health.get(&src.name).cloned().unwrap_or_default();
        let control = state
            .ops
            .control(&src.name)
            .await
            .unwrap_or_else(|e| json!({ "error": e.to_string() }));
        let labels = source_labels(&src.name);
        let failures: u64 = ["nack", "unroutable", "broker", "database", "infrastructure"]
            .iter()
            .map(|reason| {
                let mut l = labels.clone();
                l.push(("reason".to_owned(), (*reason).to_owned()));
                state.metrics.failures.get_or_create(&l).get()
            })
            .sum();
        let rate: Vec<Value> = state
            .rates
            .series(&src.name)
            .into_iter()
            .map(|(t, per_second)| json!({ "t": t.to_rfc3339(), "per_second": per_second }))
            .collect();
        sources.push(json!({
            "name": src.name,
            "database": src.database,
            "paused": control["paused"].as_bool().unwrap_or(false),
            // Whether this replica has applied the switch yet (within a second).
            "paused_here": h.paused,
            "paused_by": control["paused_by"],
            "paused_at": control["paused_at"],
            "pause_reason": control["pause_reason"],
            "pending": h.pending,
            "oldest_pending_seconds": h.lag_seconds,
            "parked": h.parked,
            "failing": h.failing,
            "readable": h.last_seen.is_some() && h.last_error.is_none(),
            "error": h.last_error,
            "published_total": state.metrics.published.get_or_create(&labels).get(),
            "failures_total": failures,
            "rate": rate,
        }));
    }
    let (queues, queues_error) = match state.ops.dlq.queues().await {
        Ok(q) => (q, None),
        Err(e) => (Vec::new(), Some(e.to_string())),
    };
    Ok(Json(json!({
        "generated_at": chrono::Utc::now().to_rfc3339(),
        "sources": sources,
        "queues": queues,
        "queues_error": queues_error,
    })))
}

async fn search_events(State(state): State<Dashboard>, Query(q): Query<EventQuery>) -> ApiResult {
    state.ops.search_events(&q).await.map(Json)
}

async fn event(
    State(state): State<Dashboard>,
    Path((source, id)): Path<(String, String)>,
) -> ApiResult {
    state.ops.event(&source, &id).await.map(Json)
}

#[derive(Deserialize, Default)]
struct IdsBody {
    #[serde(default)]
    ids: Vec<String>,
}

async fn unpark(
    State(state): State<Dashboard>,
    axum::Extension(id): axum::Extension<Identity>,
    Path(source): Path<String>,
    Body(body): Body<IdsBody>,
) -> ApiResult {
    let ids = body
        .ids
        .iter()
        .map(|s| {
            uuid::Uuid::parse_str(s.trim())
                .map_err(|_| OpsError::BadRequest(format!("ids: not a UUID: {s:?}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    state.ops.unpark(&actor(&id), &source, &ids).await.map(Json)
}

#[derive(Deserialize, Default)]
struct ReasonBody {
    reason: Option<String>,
}

async fn pause(
    State(state): State<Dashboard>,
    axum::Extension(id): axum::Extension<Identity>,
    Path(name): Path<String>,
    Body(body): Body<ReasonBody>,
) -> ApiResult {
    state
        .ops
        .set_paused(&actor(&id), &name, true, body.reason.as_deref())
        .await
        .map(Json)
}

async fn resume(
    State(state): State<Dashboard>,
    axum::Extension(id): axum::Extension<Identity>,
    Path(name): Path<String>,
    Body(body): Body<ReasonBody>,
) -> ApiResult {
    state
        .ops
        .set_paused(&actor(&id), &name, false, body.reason.as_deref())
        .await
        .map(Json)
}

async fn dlq_queues(State(state): State<Dashboard>) -> ApiResult {
    state.ops.dlq.dead_letter_queues().await.map(Json)
}

async fn dlq_messages(
    State(state): State<Dashboard>,
    Path(queue): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult {
    let limit = match q.get("limit").map(|s| s.trim()).filter(|s| !s.is_empty()) {
        None => 50,
        Some(s) => s
            .parse::<u32>()
            .ok()
            .filter(|n| (1..=200).contains(n))
            .ok_or_else(|| OpsError::BadRequest(format!("limit must be in 1..=200: {s:?}")))?,
    };
    state.ops.peek_dead_letters(&queue, limit).await.map(Json)
}

async fn dlq_retry(
    State(state): State<Dashboard>,
    axum::Extension(id): axum::Extension<Identity>,
    Path(queue): Path<String>,
    Body(sel): Body<DlqSelection>,
) -> ApiResult {
    state
        .ops
        .retry_dead_letters(&actor(&id), &queue, &sel)
        .await
        .map(Json)
}

async fn dlq_discard(
    State(state): State<Dashboard>,
    axum::Extension(id): axum::Extension<Identity>,
    Path(queue): Path<String>,
    Body(sel): Body<DlqSelection>,
) -> ApiResult {
    state
        .ops
        .discard_dead_letters(&actor(&id), &queue, &sel)
        .await
        .map(Json)
}

async fn replay(
    State(state): State<Dashboard>,
    axum::Extension(id): axum::Extension<Identity>,
    Body(req): Body<ReplayRequest>,
) -> ApiResult {
    state.ops.replay(&actor(&id), &req).await.map(Json)
}

async fn replays(State(state): State<Dashboard>) -> ApiResult {
    state.ops.audit(Some("replay"), 100).await.map(Json)
}

async fn audit(State(state): State<Dashboard>) -> ApiResult {
    state.ops.audit(None, 200).await.map(Json)
}
