//! The HTTP API of `persona serve` (axum): reads answered from the serving
//! index under one read lock, so each answer is as of one time, which it
//! states (`as_of`); events POSTed to the process's first worker, which
//! applies them.
//!
//! Errors are JSON, `{"error": {"code", "message"}}`, with a stable code:
//! `unknown_user` and `unknown_item` (404), `not_found` (404, no such
//! route), `bad_id` (400, an id that is not UTF-8 once percent-decoded),
//! `bad_k` (400), `invalid_json` and `invalid_events` (400, nothing
//! ingested), `body_too_large` (413), `bad_body` (the body could not be
//! read), `stopping` (503), `wait_timeout` (504).

use std::collections::btree_map::Entry;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, MethodRouter};
use axum::{middleware, Extension};
use axum::{Json, Router};
use persona_dataflows::Id;
use serde_json::{json, Value};
use tokio::sync::oneshot;

use super::index::SharedIndex;
use crate::config::IdKind;
use crate::config::Role;
use crate::config::{wall_clock_ms, PipelineConfig};
use crate::format::{Decoder, Outcome};
use crate::metrics::{self, Metrics};
use crate::privacy::stats::{self as private_stats, StatsError};
use crate::privacy::{add_forgotten, Pseudonyms};
use crate::rejected::Position;
use crate::serve::auth::{self, audit_line, Auth, Caller};

/// The largest `k` a request may ask for.
pub const MAX_K: usize = 10_000;
/// How long `POST /v1/events?wait=true` waits for its events to show.
const WAIT_LIMIT: Duration = Duration::from_secs(30);

/// Events of one POST, checked, for the process's first worker to apply.
pub struct Ingest {
    /// The request's number, counted from 1: the events' [`Position::Http`].
    pub request: u64,
    /// When the request arrived: its events are judged late against it.
    pub arrival: Arrival,
    /// Each event as one JSON line.
    pub lines: Vec<Vec<u8>>,
    /// Users to forget (`DELETE /v1/users/{id}`).
    pub forget: Vec<Id>,
    pub reply: oneshot::Sender<Ingested>,
}

/// What the first worker made of the events of one POST.
#[derive(Debug, Default)]
pub struct Ingested {
    pub accepted: usize,
    /// `(index, reason code)` of each event not applied (late, in the future).
    pub dropped: Vec<(usize, &'static str)>,
    /// The latest tick (ms) of an accepted event: they are all visible once
    /// the index is as of it.
    pub visible_at: Option<u64>,
}

/// The wall-clock times (ms) at which the POSTs not yet applied arrived.
/// The first worker closes no tick that such a POST may still hold
/// (`arrival − lateness_ms`), so whether an event is late depends on when
/// it reached the server, not on how long it then waited for the dataflow.
#[derive(Default)]
pub struct Arrivals(Mutex<BTreeMap<u64, usize>>);

impl Arrivals {
    /// The earliest arrival of a POST not yet applied.
    pub fn earliest(&self) -> Option<u64> {
        self.lock().keys().next().copied()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, usize>> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// One POST's arrival, registered in [`Arrivals`] until it is dropped:
/// once its events are applied, or its request is given up.
pub struct Arrival {
    arrivals: Arc<Arrivals>,
    pub at_ms: u64,
}

impl Arrival {
    /// Registers a POST arriving now.
    pub fn now(arrivals: &Arc<Arrivals>) -> Arrival {
        // The clock is read under the lock: a worker that saw no POST
        // waiting had read the clock before this one does.
        let mut waiting = arrivals.lock();
        let at_ms = wall_clock_ms();
        *waiting.entry(at_ms).or_default() += 1;
        drop(waiting);
        Arrival {
            arrivals: arrivals.clone(),
            at_ms,
        }
    }
}

impl Drop for Arrival {
    fn drop(&mut self) {
        let mut arrivals = self.arrivals.lock();
        if let Entry::Occupied(mut entry) = arrivals.entry(self.at_ms) {
            *entry.get_mut() -= 1;
            if *entry.get() == 0 {
                entry.remove();
            }
        }
    }
}

/// What the handlers share.
pub struct App {
    pub index: Arc<SharedIndex>,
    pub config: PipelineConfig,
    pub metrics: Arc<Metrics>,
    /// To the first worker, bounded: a POST waits here while it is behind.
    pub ingest: tokio::sync::mpsc::Sender<Ingest>,
    /// Checks POSTed events with the `[input]` mapping, as JSON.
    pub decoder: Mutex<Decoder>,
    /// The ids of request paths are pseudonymised as events' are: clients
    /// ask with the ids they know.
    pub pseudonyms: Pseudonyms,
    /// `[serve.auth]`: tokens and roles; `None` leaves every endpoint open.
    pub auth: Option<Arc<Auth>>,
    pub requests: AtomicU64,
    /// POSTs arrived and not yet applied.
    pub arrivals: Arc<Arrivals>,
    /// Set by SIGTERM/SIGINT: a request waiting for its events to show
    /// answers `stopping` at once, not at the end of its wait.
    pub stop: Arc<AtomicBool>,
}

/// The routes.
pub fn router(app: Arc<App>) -> Router {
    let max_body = app.config.serve.max_body_bytes;
    // Under [serve.auth] each /v1 route needs its role (`None`: any valid
    // token); probes and /metrics stay open for orchestrators and scrapers.
    let guarded = |route: MethodRouter<Arc<App>>, role: Option<Role>| match &app.auth {
        Some(auth) => route.route_layer(middleware::from_fn_with_state(
            (auth.clone(), role),
            auth::require,
        )),
        None => route,
    };
    Router::new()
        .route(
            "/v1/users/{id}",
            guarded(delete(forget_user), Some(Role::Admin)),
        )
        .route(
            "/v1/users/{id}/profile",
            guarded(get(profile), Some(Role::ReadProfiles)),
        )
        .route(
            "/v1/users/{id}/alerts",
            guarded(get(alerts), Some(Role::ReadProfiles)),
        )
        .route(
            "/v1/users/{id}/similar",
            guarded(get(similar_users), Some(Role::ReadProfiles)),
        )
        .route(
            "/v1/users/{id}/embedding",
            guarded(get(embedding), Some(Role::ReadProfiles)),
        )
        .route(
            "/v1/items/{id}/feedback",
            guarded(get(item_feedback), Some(Role::ReadProfiles)),
        )
        .route(
            "/v1/users/{id}/recommendations",
            guarded(get(recommendations), Some(Role::ReadRecommendations)),
        )
        .route(
            "/v1/items/{id}/similar",
            guarded(get(similar), Some(Role::ReadRecommendations)),
        )
        .route("/v1/events", guarded(post(events), Some(Role::Ingest)))
        .route("/v1/stats", guarded(post(stats), Some(Role::Admin)))
        .route("/v1/status", guarded(get(status), None))
        .route("/readyz", get(readyz))
        .fallback(|| async { error(StatusCode::NOT_FOUND, "not_found", "no such route".into()) })
        // A known route asked with another method: JSON as every other
        // error (axum still sets `Allow`).
        .method_not_allowed_fallback(|method: Method| async move {
            let message = format!("{method} is not allowed on this route");
            error(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                message,
            )
        })
        .layer(DefaultBodyLimit::max(max_body))
        .with_state(app.clone())
        .merge(metrics::router(app.metrics.clone()))
        .layer(middleware::from_fn_with_state(
            app.metrics.clone(),
            metrics::count_responses,
        ))
}

/// A JSON error with a stable code.
struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({"error": {"code": self.code, "message": self.message}});
        (self.status, Json(body)).into_response()
    }
}

fn error(status: StatusCode, code: &'static str, message: String) -> Response {
    ApiError {
        status,
        code,
        message,
    }
    .into_response()
}

/// A route's `{id}`, as [`Path`] gives it, but a malformed one is answered
/// like every other error, in JSON (axum's own answer is plain text).
struct RouteId(String);

impl<S: Send + Sync> FromRequestParts<S> for RouteId {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<RouteId, ApiError> {
        match Path::<String>::from_request_parts(parts, state).await {
            Ok(Path(id)) => Ok(RouteId(id)),
            Err(rejection) => Err(ApiError {
                status: rejection.status(),
                code: "bad_id",
                message: rejection.body_text(),
            }),
        }
    }
}

/// The query's parameters. A parameter given twice (`k=1&k=2`) is 400
/// `bad_query`: which one was meant is not for the server to guess.
struct Params(HashMap<String, String>);

impl<S: Send + Sync> FromRequestParts<S> for Params {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Params, ApiError> {
        let bad_query = |message: String| ApiError {
            status: StatusCode::BAD_REQUEST,
            code: "bad_query",
            message,
        };
        let Query(pairs) = Query::<Vec<(String, String)>>::from_request_parts(parts, state)
            .await
            .map_err(|rejection| bad_query(rejection.body_text()))?;
        let mut params = HashMap::with_capacity(pairs.len());
        for (name, value) in pairs {
            if params.contains_key(&name) {
                return Err(bad_query(format!("the parameter {name:?} is given twice")));
            }
            params.insert(name, value);
        }
        Ok(Params(params))
    }
}

/// `k` from the query: 1 to [`MAX_K`], or `default` when absent.
fn k_of(params: &HashMap<String, String>, default: usize) -> Result<usize, ApiError> {
    let Some(text) = params.get("k") else {
        return Ok(default);
    };
    match text.parse::<usize>() {
        Ok(k) if (1..=MAX_K).contains(&k) => Ok(k),
        _ => Err(ApiError {
            status: StatusCode::BAD_REQUEST,
            code: "bad_k",
            message: format!("k must be an integer from 1 to {MAX_K}, not {text:?}"),
        }),
    }
}

impl App {
    /// The integer id of an id of `kind` as the source writes it, and the
    /// id the answers show (its pseudonym under `[privacy]`).
    fn id(&self, kind: IdKind, text: &str) -> (Id, String) {
        self.pseudonyms
            .id(kind, text, self.config.cleaning.numeric_ids)
    }

    /// Runs `answer`, timing it under `endpoint`.
    fn timed(&self, endpoint: &'static str, started: Instant, response: Response) -> Response {
        self.metrics.record_request(endpoint, started.elapsed());
        response
    }
}

/// `as_of` in a message: the tick, or that none is complete yet.
fn shown(as_of: Option<u64>) -> String {
    as_of.map_or("no complete tick yet".to_owned(), |t| t.to_string())
}

/// Adds `as_of` to an answer object.
fn with_as_of(mut answer: Value, as_of: Option<u64>) -> Value {
    answer["as_of"] = json!(as_of);
    answer
}

/// `answer` with `as_of`, or 404 `code`: "`missing` as of `as_of`".
fn found_or_404(
    answer: Option<Value>,
    as_of: Option<u64>,
    code: &'static str,
    missing: impl FnOnce() -> String,
) -> Response {
    match answer {
        Some(answer) => Json(with_as_of(answer, as_of)).into_response(),
        None => error(
            StatusCode::NOT_FOUND,
            code,
            format!("{} as of {}", missing(), shown(as_of)),
        ),
    }
}

async fn profile(
    State(app): State<Arc<App>>,
    RouteId(user): RouteId,
    caller: Option<Extension<Caller>>,
) -> Response {
    let started = Instant::now();
    let (id, _) = app.id(IdKind::User, &user);
    let response = {
        let index = app.index.read();
        let mut profile = index.profile(id);
        if let (Some(Extension(caller)), Some(fields)) = (
            &caller,
            profile.as_mut().and_then(|profile| profile.as_object_mut()),
        ) {
            for field in caller.hidden.iter() {
                fields.remove(field);
            }
        }
        found_or_404(profile, index.as_of(), "unknown_user", || {
            format!("user {user:?} has no profile")
        })
    };
    app.timed("profile", started, response)
}

/// `GET /v1/users/{id}/alerts`: the user's standing alerts (none for a
/// user without any, or unknown); 404 `risk_not_configured` without `[risk]`.
async fn alerts(State(app): State<Arc<App>>, RouteId(user): RouteId) -> Response {
    let started = Instant::now();
    let (id, shown_user) = app.id(IdKind::User, &user);
    let response = match app.config.risk {
        Some(_) => {
            let index = app.index.read();
            let answer = index.alerts(id, &shown_user);
            Json(with_as_of(answer, index.as_of())).into_response()
        }
        None => error(
            StatusCode::NOT_FOUND,
            "risk_not_configured",
            "alerts need a [risk] table in the config".into(),
        ),
    };
    app.timed("alerts", started, response)
}

/// `GET /v1/items/{id}/feedback`: the item's impressions, clicks on
/// recommendations and dismissals, as `item_feedback.jsonl` shows them; 404
/// `unknown_item` for an item without any.
async fn item_feedback(State(app): State<Arc<App>>, RouteId(item): RouteId) -> Response {
    let started = Instant::now();
    let (id, _) = app.id(IdKind::Item, &item);
    let response = {
        let index = app.index.read();
        found_or_404(
            index.item_feedback(id),
            index.as_of(),
            "unknown_item",
            || format!("item {item:?} has no feedback"),
        )
    };
    app.timed("item_feedback", started, response)
}

async fn recommendations(
    State(app): State<Arc<App>>,
    RouteId(user): RouteId,
    Params(params): Params,
) -> Response {
    let started = Instant::now();
    let top_k = app.config.recommend.top_k;
    let response = match k_of(&params, top_k) {
        Err(error) => error.into_response(),
        Ok(k) => {
            let app = app.clone();
            off_runtime(move || {
                let (id, shown) = app.id(IdKind::User, &user);
                let index = app.index.read();
                let answer = index.recommendations(id, &shown, k, &app.config.recommend);
                Json(with_as_of(answer, index.as_of())).into_response()
            })
            .await
        }
    };
    app.timed("recommendations", started, response)
}

async fn similar(
    State(app): State<Arc<App>>,
    RouteId(item): RouteId,
    Params(params): Params,
) -> Response {
    let started = Instant::now();
    let neighbors = app.config.recommend.neighbors;
    let response = match k_of(&params, neighbors) {
        Err(error) => error.into_response(),
        Ok(k) => {
            let app = app.clone();
            off_runtime(move || {
                let (id, _) = app.id(IdKind::Item, &item);
                let index = app.index.read();
                let answer = index.similar_items(id, k, &app.config.recommend);
                found_or_404(answer, index.as_of(), "unknown_item", || {
                    format!("item {item:?} is in no history")
                })
            })
            .await
        }
    };
    app.timed("similar", started, response)
}

/// Similar users a request gets without `k`.
const SIMILAR_USERS: usize = 10;

/// `GET /v1/users/{id}/similar?k=10`: the users of the user's k-means
/// cluster nearest to them (docs/models.md); 404 `segments_not_configured` without
/// `[segments.kmeans]`.
async fn similar_users(
    State(app): State<Arc<App>>,
    RouteId(user): RouteId,
    Params(params): Params,
) -> Response {
    let started = Instant::now();
    let kmeans = app.config.segments.kmeans.clone();
    let response = match (kmeans, k_of(&params, SIMILAR_USERS)) {
        (None, _) => error(
            StatusCode::NOT_FOUND,
            "segments_not_configured",
            "the config has no [segments.kmeans]".into(),
        ),
        (_, Err(error)) => error.into_response(),
        (Some(kmeans), Ok(k)) => {
            let app = app.clone();
            off_runtime(move || {
                let (id, _) = app.id(IdKind::User, &user);
                let index = app.index.read();
                let answer = index.similar_users(id, k, &kmeans);
                found_or_404(answer, index.as_of(), "unknown_user", || {
                    format!("user {user:?} has no profile with a cluster")
                })
            })
            .await
        }
    };
    app.timed("similar_users", started, response)
}

/// `GET /v1/users/{id}/embedding`: the user's factor vector in the online
/// factorisation (docs/models.md); 404 `embeddings_not_configured` without
/// `[recommend.mf] embeddings`, 403 `forbidden` for a token that hides the
/// profile's `factors`.
async fn embedding(
    State(app): State<Arc<App>>,
    RouteId(user): RouteId,
    caller: Option<Extension<Caller>>,
) -> Response {
    let started = Instant::now();
    let hidden =
        caller.is_some_and(|Extension(caller)| caller.hidden.iter().any(|f| f == "factors"));
    let response = if !app.config.recommend.mf.embeddings {
        error(
            StatusCode::NOT_FOUND,
            "embeddings_not_configured",
            "the config has no [recommend.mf] embeddings = true".into(),
        )
    } else if hidden {
        error(
            StatusCode::FORBIDDEN,
            "forbidden",
            "the token hides the profile field \"factors\"".into(),
        )
    } else {
        let (id, _) = app.id(IdKind::User, &user);
        let index = app.index.read();
        found_or_404(index.embedding(id), index.as_of(), "unknown_user", || {
            format!("user {user:?} has no profile with factors")
        })
    };
    app.timed("embedding", started, response)
}

async fn events(
    State(app): State<Arc<App>>,
    Params(params): Params,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let started = Instant::now();
    let response = ingest(&app, &params, body).await;
    app.timed("events", started, response)
}

/// `DELETE /v1/users/{id}`: adds the user to the `[privacy] forgotten` file
/// (durably, first), then has the dataflow forget them; answers once every
/// answer shows the outputs without them.
async fn forget_user(
    State(app): State<Arc<App>>,
    RouteId(user): RouteId,
    caller: Option<Extension<Caller>>,
) -> Response {
    let started = Instant::now();
    let response = forget(&app, &user, caller.map(|Extension(c)| c)).await;
    app.timed("forget", started, response)
}

async fn forget(app: &Arc<App>, user: &str, caller: Option<Caller>) -> Response {
    let Some(file) = app.config.privacy.forgotten.clone() else {
        return error(
            StatusCode::CONFLICT,
            "forgetting_disabled",
            "forgetting a user needs [privacy] forgotten = FILE in the config, \
             where forgotten users are kept across restarts"
                .into(),
        );
    };
    // No record can have such an id (ingestion rejects it as `invalid_id`),
    // so nothing is written for it.
    if let Some(c) = crate::ids::control_character(user) {
        let private = app.pseudonyms.applies_to(IdKind::User);
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_id",
            crate::ids::control_character_message("the user id", user, c, private),
        );
    }
    // Nor an id of whitespace alone (ingestion rejects it as `missing_user`).
    if user.trim().is_empty() {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_id",
            "the user id is empty once trimmed; no record can have it".into(),
        );
    }
    let arrival = Arrival::now(&app.arrivals);
    let (id, shown) = app.id(IdKind::User, user);
    let kept = tokio::task::spawn_blocking(move || add_forgotten(&file, &[id])).await;
    match kept {
        Ok(Ok(_)) => {}
        Ok(Err(error)) => {
            tracing::error!("cannot keep a forgotten user: {error:#}");
            return internal_error();
        }
        Err(_) => return internal_error(),
    }
    let request = app.requests.fetch_add(1, Ordering::Relaxed) + 1;
    match &app.auth {
        Some(auth) => auth.audit(caller.as_ref(), "forget_user", request),
        None => eprintln!("{}", audit_line(None, "forget_user", request)),
    }
    let ingested = match to_dataflow(app, request, arrival, Vec::new(), vec![id]).await {
        Ok(ingested) => ingested,
        Err(response) => return *response,
    };
    let visible_at = ingested.visible_at.unwrap_or(0);
    match visible(app, visible_at).await {
        Ok(Some(as_of)) => {
            tracing::info!(request, "a user was forgotten");
            Json(json!({"user": shown, "forgotten": true, "as_of": as_of})).into_response()
        }
        Err(response) => *response,
        Ok(None) => error(
            StatusCode::GATEWAY_TIMEOUT,
            "wait_timeout",
            format!(
                "the user is forgotten, but answers show it only from {visible_at}, \
                 when the wall clock passes that tick"
            ),
        ),
    }
}

/// `POST /v1/stats`: a differentially private release of the index's
/// statistics (`crate::privacy::stats`), charged to the `[privacy.stats]`
/// ledger.
async fn stats(
    State(app): State<Arc<App>>,
    caller: Option<Extension<Caller>>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let started = Instant::now();
    let caller = caller.map(|Extension(c)| c);
    let response = release(&app, caller, body).await;
    app.timed("stats", started, response)
}

async fn release(
    app: &Arc<App>,
    caller: Option<Caller>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let Some(config) = app.config.privacy.stats.clone() else {
        return error(
            StatusCode::CONFLICT,
            "stats_disabled",
            "private statistics need a [privacy.stats] table with a ledger and a budget".into(),
        );
    };
    let request: private_stats::Request = match body
        .map_err(|e| e.body_text())
        .and_then(|body| serde_json::from_slice(&body).map_err(|e| e.to_string()))
    {
        Ok(request) => request,
        Err(message) => {
            return error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                format!("the body must be {{\"epsilon\", \"delta\", \"statistics\"}}: {message}"),
            )
        }
    };
    let number = app.requests.fetch_add(1, Ordering::Relaxed) + 1;
    match &app.auth {
        Some(auth) => auth.audit(caller.as_ref(), "release_stats", number),
        None => eprintln!("{}", audit_line(None, "release_stats", number)),
    }
    let releasing = app.clone();
    let released = tokio::task::spawn_blocking(move || {
        let index = releasing.index.read();
        let contributions = index.contributions(&config.attribute);
        let as_of = index.as_of();
        drop(index);
        let name = caller.as_ref().map_or("anonymous", |c| &c.name);
        private_stats::release(&config, &request, &contributions, name, as_of)
    })
    .await;
    match released {
        Ok(Ok(release)) => Json(release).into_response(),
        Ok(Err(StatsError::Invalid(message))) => {
            error(StatusCode::BAD_REQUEST, "invalid_request", message)
        }
        Ok(Err(over @ StatsError::OverBudget { .. })) => error(
            StatusCode::CONFLICT,
            "privacy_budget_exceeded",
            over.to_string(),
        ),
        Ok(Err(failed)) => {
            tracing::error!("cannot release statistics: {failed}");
            internal_error()
        }
        Err(_) => internal_error(),
    }
}

/// Checks every event of the body with the `[input]` mapping; ingests them
/// all, or none if one is malformed.
async fn ingest(
    app: &Arc<App>,
    params: &HashMap<String, String>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    // Registered before the body is checked: no tick it may hold closes.
    let arrival = Arrival::now(&app.arrivals);
    let checking = app.clone();
    let checked = tokio::task::spawn_blocking(move || checked_events(&checking, body)).await;
    let (request, lines) = match checked {
        Ok(Ok(checked)) => checked,
        Ok(Err(response)) => return *response,
        Err(_) => return internal_error(),
    };
    let ingested = match to_dataflow(app, request, arrival, lines, Vec::new()).await {
        Ok(ingested) => ingested,
        Err(response) => return *response,
    };
    let wait = params.get("wait").is_some_and(|w| w == "true" || w == "1");
    let mut as_of = *app.index.as_of.borrow();
    if let (true, Some(visible_at)) = (wait, ingested.visible_at) {
        match visible(app, visible_at).await {
            Ok(Some(shown)) => as_of = Some(shown),
            Err(response) => return *response,
            Ok(None) => {
                return error(
                    StatusCode::GATEWAY_TIMEOUT,
                    "wait_timeout",
                    format!(
                        "the events were ingested but are not visible after {WAIT_LIMIT:?}: \
                         they become visible at {visible_at}, when the wall clock passes that tick"
                    ),
                )
            }
        }
    }
    let dropped: Vec<Value> = ingested
        .dropped
        .iter()
        .map(|(index, reason)| json!({"index": index, "reason": reason}))
        .collect();
    let status = if wait {
        StatusCode::OK
    } else {
        StatusCode::ACCEPTED
    };
    let body = json!({
        "accepted": ingested.accepted,
        "dropped": dropped,
        "visible_at": ingested.visible_at,
        "as_of": as_of,
    });
    (status, Json(body)).into_response()
}

fn stopping() -> Box<Response> {
    Box::new(error(
        StatusCode::SERVICE_UNAVAILABLE,
        "stopping",
        "the server is stopping".into(),
    ))
}

/// Hands events to apply and users to forget to the first worker; what it
/// made of them, or the answer to give if the server is stopping.
async fn to_dataflow(
    app: &App,
    request: u64,
    arrival: Arrival,
    lines: Vec<Vec<u8>>,
    forget: Vec<Id>,
) -> Result<Ingested, Box<Response>> {
    let (reply, answer) = oneshot::channel();
    let batch = Ingest {
        request,
        arrival,
        lines,
        forget,
        reply,
    };
    app.ingest.send(batch).await.map_err(|_| stopping())?;
    answer.await.map_err(|_| stopping())
}

/// Waits until the index is as of `visible_at`: the `as_of` it then shows,
/// `None` if that takes longer than [`WAIT_LIMIT`].
async fn visible(app: &App, visible_at: u64) -> Result<Option<u64>, Box<Response>> {
    let mut watch = app.index.as_of.subscribe();
    let stopped = async {
        while !app.stop.load(Ordering::Acquire) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    let shown = tokio::time::timeout(WAIT_LIMIT, async {
        tokio::select! {
            shown = watch.wait_for(|as_of| as_of.is_some_and(|t| t >= visible_at)) => {
                shown.map(|as_of| *as_of).ok()
            }
            () = stopped => None,
        }
    })
    .await;
    match shown {
        Ok(Some(as_of)) => Ok(Some(as_of.unwrap_or(visible_at))),
        Ok(None) => Err(stopping()),
        Err(_) => Ok(None),
    }
}

/// The request's number and each event of the body as one JSON line, or
/// the error answer: a body that is not JSON events, or events the
/// `[input]` mapping cannot map (then none is ingested).
fn checked_events(
    app: &App,
    body: Result<Bytes, BytesRejection>,
) -> Result<(u64, Vec<Vec<u8>>), Box<Response>> {
    let body = match body {
        Ok(body) => body,
        Err(rejection) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            return Err(refuse(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                format!(
                    "the body is larger than [serve] max_body_bytes = {}",
                    app.config.serve.max_body_bytes
                ),
            ))
        }
        Err(rejection) => {
            return Err(refuse(
                rejection.status(),
                "bad_body",
                rejection.body_text(),
            ))
        }
    };
    let events: Vec<Value> = match serde_json::from_slice(&body) {
        Ok(Value::Array(events)) => events,
        Ok(event @ Value::Object(_)) => vec![event],
        Ok(_) => {
            return Err(refuse(
                StatusCode::BAD_REQUEST,
                "invalid_json",
                "the body must be a JSON object (one event) or an array of them".into(),
            ))
        }
        Err(error_) => {
            return Err(refuse(
                StatusCode::BAD_REQUEST,
                "invalid_json",
                format!("the body is not JSON: {error_}"),
            ))
        }
    };
    let request = app.requests.fetch_add(1, Ordering::Relaxed) + 1;
    match check_events(app, request, &events) {
        Ok(lines) => Ok((request, lines)),
        Err(rejected) => {
            let body = json!({"error": {
                "code": "invalid_events",
                "message": format!("{} of {} events cannot be mapped; none was ingested", rejected.len(), events.len()),
                "rejected": rejected,
            }});
            Err(Box::new(
                (StatusCode::BAD_REQUEST, Json(body)).into_response(),
            ))
        }
    }
}

/// Runs CPU-bound work (ranking a user's or an item's list) on tokio's
/// blocking threads: the runtime's two threads then never hold a profile
/// lookup behind a long ranking, and the OS shares the cores between them.
async fn off_runtime(work: impl FnOnce() -> Response + Send + 'static) -> Response {
    tokio::task::spawn_blocking(work)
        .await
        .unwrap_or_else(|_| internal_error())
}

/// An error answer, boxed to pass through a `Result`.
fn refuse(status: StatusCode, code: &'static str, message: String) -> Box<Response> {
    Box::new(error(status, code, message))
}

/// The answer when a handler's work panicked.
fn internal_error() -> Response {
    error(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal",
        "the request failed inside the server".into(),
    )
}

/// Each event as one JSON line, or the rejection of each event the
/// `[input]` mapping cannot map.
fn check_events(app: &App, request: u64, events: &[Value]) -> Result<Vec<Vec<u8>>, Vec<Value>> {
    let decoder = app.decoder.lock().unwrap_or_else(|p| p.into_inner());
    let mut lines = Vec::with_capacity(events.len());
    let mut rejected = Vec::new();
    let mut outcomes: Vec<Outcome> = Vec::new();
    for (index, event) in events.iter().enumerate() {
        let line = serde_json::to_vec(event).expect("a JSON value serializes");
        outcomes.clear();
        decoder.decode(&line, &Position::Http { request, index }, &mut outcomes);
        for outcome in &outcomes {
            if let Err((_, rejection)) = outcome {
                rejected.push(json!({
                    "index": index,
                    "reason": rejection.reason.code(),
                    "detail": rejection.detail,
                }));
            }
        }
        lines.push(line);
    }
    if rejected.is_empty() {
        Ok(lines)
    } else {
        Err(rejected)
    }
}

async fn status(State(app): State<Arc<App>>) -> Response {
    let started = Instant::now();
    let totals = app.metrics.totals();
    let (users, items, as_of) = {
        let index = app.index.read();
        (index.users(), index.items(), index.as_of())
    };
    // Lag: how far event time answers are as of is behind the wall clock.
    let lag_ms = as_of.map(|t| crate::config::wall_clock_ms().saturating_sub(t));
    let body = json!({
        "as_of": as_of,
        "ready": app.metrics.is_ready(),
        "records_read": totals.records_read,
        "accepted": totals.decoded.saturating_sub(totals.duplicates),
        "duplicates": totals.duplicates,
        "late": totals.late,
        "rejected": totals.rejected.iter().map(|(r, n)| (r.code(), *n)).collect::<HashMap<_, _>>(),
        "users": users,
        "items": items,
        "lag_ms": lag_ms,
    });
    app.timed("status", started, Json(body).into_response())
}

async fn readyz(State(app): State<Arc<App>>) -> Response {
    let started = Instant::now();
    let response = if app.metrics.is_ready() {
        Json(json!({"ready": true})).into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"ready": false})),
        )
            .into_response()
    };
    app.timed("readyz", started, response)
}
