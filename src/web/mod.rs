//! The operator dashboard in the browser (axum): one tile per slot, totals and yield, a scan
//! box, retest and stop buttons, today's yield chart and failure Pareto, live by server-sent
//! events. Two sources:
//! - **live** ([`Dashboard::live`], `flashline run … --serve ADDR`): a running [`Supervisor`];
//! - **records** ([`Dashboard::records`], `flashline serve`): a read-only view of a database,
//!   polled.
//!
//! | file | what lives there |
//! |---|---|
//! | `mod.rs` | [`Dashboard`] (bind, start, stop), routes and handlers |
//! | [`auth`] | the token, loopback rules, the request guard and security headers |
//! | [`model`] | the view model (tiles, totals, refused scans, recent attempts) and event folding |
//! | [`records`] | today's figures and charts from the records; the read-only view |
//! | [`assets`] | the embedded page, script and style (`assets/`) |
//! | [`serve`] | the HTTP server loop: connection caps (overall, per peer), header and idle timeouts |
//!
//! Routes: `GET /` (page), `GET /assets/NAME`, `GET /login?token=T`, `GET /api/snapshot`,
//! `GET /api/events` (SSE: `snapshot` then `station` events), `GET /api/today`,
//! `GET /api/charts.svg`; writes (JSON bodies): `POST /api/scan {"line"}`,
//! `POST /api/retest {"slot"}`, `POST /api/stop`.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use futures::{Stream, StreamExt};
use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, watch};
use tokio::task::JoinHandle;
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;
use tokio_stream::wrappers::BroadcastStream;

use crate::db::Db;
use crate::station::scan::is_quit;
use crate::station::{StationEvent, Submit, Supervisor};

pub mod assets;
pub mod auth;
pub mod model;
pub mod records;
pub mod serve;

use auth::{Access, Authorized};
use model::Model;

/// Where to listen and with which token.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct WebOptions {
    /// Listen address; loopback by default. Anything else requires a token.
    pub bind: SocketAddr,
    /// The station token. `None` on a non-loopback address: one is generated.
    pub token: Option<String>,
    /// Connection caps and timeouts (see [`serve`]).
    pub limits: serve::Limits,
}

impl WebOptions {
    pub fn new(bind: SocketAddr, token: Option<String>) -> WebOptions {
        WebOptions { bind, token, limits: serve::Limits::default() }
    }
}

/// Why a dashboard could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WebError {
    #[error("dashboard: cannot listen on {addr}: {source} — is another station or program using the port?")]
    Bind { addr: SocketAddr, #[source] source: std::io::Error },
    #[error("dashboard token: {0}")]
    Token(String),
    #[error("dashboard: {0}")]
    Records(#[from] crate::report::ReportError),
}

/// How often `flashline serve` re-reads the records.
const POLL: Duration = Duration::from_secs(2);

#[derive(Clone)]
enum WebEvent {
    Station(StationEvent),
    /// A tile as the server folded it (after results: carries the operator hint).
    Tile(model::Tile),
    Snapshot(Box<Model>),
}

#[derive(Clone)]
enum Source {
    Live(Arc<Supervisor>),
    Records,
}

/// Shared by every handler.
#[derive(Clone)]
pub struct AppState {
    access: Access,
    source: Source,
    db: Db,
    /// Station whose records the charts show (`None`: all).
    station: Option<String>,
    model: Arc<Mutex<Model>>,
    tx: broadcast::Sender<WebEvent>,
    stop: Arc<watch::Sender<bool>>,
    shutdown: watch::Receiver<bool>,
}

/// A running dashboard.
pub struct Dashboard {
    addr: SocketAddr,
    token: Option<String>,
    token_generated: bool,
    stop_rx: watch::Receiver<bool>,
    shutdown_tx: watch::Sender<bool>,
    server: JoinHandle<()>,
    feeder: JoinHandle<()>,
}

/// Check a given token, or generate one when the address is beyond loopback.
fn resolve_token(bind: SocketAddr, token: Option<String>) -> Result<(Option<String>, bool), WebError> {
    match token.map(|t| t.trim().to_string()).filter(|t| !t.is_empty()) {
        Some(t) => {
            if t.len() < 12 {
                return Err(WebError::Token("too short: use at least 12 characters (e.g. `openssl rand -hex 16`)".into()));
            }
            if !t.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b)) {
                return Err(WebError::Token("use only letters, digits and - . _ ~ (it travels in a cookie and a URL)".into()));
            }
            Ok((Some(t), false))
        }
        None if !bind.ip().is_loopback() => Ok((Some(auth::generate_token()), true)),
        None => Ok((None, false)),
    }
}

impl Dashboard {
    /// Serve a running station. `operator` is shown in the header.
    pub async fn live(sup: Arc<Supervisor>, db: Db, operator: String, opts: WebOptions) -> Result<Dashboard, WebError> {
        let station = sup.station().name.clone();
        let p = sup.production();
        let rx = sup.subscribe();
        let mut m = Model::live(&sup.slot_status());
        m.set_programmers(&sup.slot_programmers());
        m.station = station.clone();
        m.sku = p.recipe.sku.clone();
        m.recipe = crate::station::supervisor::recipe_name(&p.recipe_path, &p.recipe.sku);
        m.operator = operator;
        m.totals = sup.totals().into();
        if let crate::station::RecordsState::Unavailable { reason } = sup.records_state() {
            m.records_unavailable = Some(reason);
        }
        let model = Arc::new(Mutex::new(m));
        let (tx, _) = broadcast::channel(4096);
        let feeder = tokio::spawn(feed_live(sup.clone(), rx, model.clone(), tx.clone()));
        Self::start(Source::Live(sup), db, Some(station), model, tx, feeder, opts).await
    }

    /// Serve a read-only view of the records in `db` (of `station`, or all stations).
    pub async fn records(db: Db, station: Option<String>, opts: WebOptions) -> Result<Dashboard, WebError> {
        let m = records::records_model(&db, station.as_deref()).await?;
        let model = Arc::new(Mutex::new(m));
        let (tx, _) = broadcast::channel(64);
        let feeder = tokio::spawn(feed_records(db.clone(), station.clone(), model.clone(), tx.clone()));
        Self::start(Source::Records, db, station, model, tx, feeder, opts).await
    }

    async fn start(
        source: Source,
        db: Db,
        station: Option<String>,
        model: Arc<Mutex<Model>>,
        tx: broadcast::Sender<WebEvent>,
        feeder: JoinHandle<()>,
        opts: WebOptions,
    ) -> Result<Dashboard, WebError> {
        let (token, token_generated) = match resolve_token(opts.bind, opts.token) {
            Ok(t) => t,
            Err(e) => {
                feeder.abort();
                return Err(e);
            }
        };
        let listener = match tokio::net::TcpListener::bind(opts.bind).await {
            Ok(l) => l,
            Err(source) => {
                feeder.abort();
                return Err(WebError::Bind { addr: opts.bind, source });
            }
        };
        let addr = listener.local_addr().map_err(|source| WebError::Bind { addr: opts.bind, source })?;
        let (stop_tx, stop_rx) = watch::channel(false);
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let state = AppState {
            access: Access::new(addr, token.as_deref()),
            source,
            db,
            station,
            model,
            tx,
            stop: Arc::new(stop_tx),
            shutdown: shutdown_rx.clone(),
        };
        let app = router(state);
        let mut sd = shutdown_rx;
        let limits = opts.limits.clone();
        let server = tokio::spawn(async move {
            let _ = sd.borrow_and_update();
            serve::serve(listener, app, limits, sd).await;
        });
        tracing::info!(%addr, "dashboard listening");
        Ok(Dashboard { addr, token, token_generated, stop_rx, shutdown_tx, server, feeder })
    }

    /// The address actually bound (port 0 resolved).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://ADDR/`, with a loopback address when bound to every interface.
    pub fn url(&self) -> String {
        let mut a = self.addr;
        if a.ip().is_unspecified() {
            a.set_ip(if a.is_ipv4() { std::net::Ipv4Addr::LOCALHOST.into() } else { std::net::Ipv6Addr::LOCALHOST.into() });
        }
        format!("http://{a}/")
    }

    /// The token in force, if any.
    pub fn token(&self) -> Option<&str> {
        self.token.as_deref()
    }

    /// Whether the token was generated here (and must be shown to whoever starts the station).
    pub fn token_generated(&self) -> bool {
        self.token_generated
    }

    /// A future that resolves when an operator pressed Stop on the dashboard.
    pub fn stop_requested(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut rx = self.stop_rx.clone();
        async move {
            if rx.wait_for(|v| *v).await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }

    /// Close event streams and stop the server (bounded wait).
    pub async fn shutdown(self) {
        let _ = self.shutdown_tx.send(true);
        let mut server = self.server;
        if tokio::time::timeout(Duration::from_secs(5), &mut server).await.is_err() {
            server.abort();
        }
        self.feeder.abort();
    }
}

/// Fold supervisor events into the model and pass them on, under the model lock so a new
/// client's snapshot and its event stream never miss or reorder anything.
async fn feed_live(sup: Arc<Supervisor>, mut rx: broadcast::Receiver<StationEvent>, model: Arc<Mutex<Model>>, tx: broadcast::Sender<WebEvent>) {
    loop {
        match rx.recv().await {
            Ok(ev) => {
                let stop = matches!(ev, StationEvent::Stopped(_));
                {
                    let mut m = model.lock().unwrap_or_else(|e| e.into_inner());
                    m.apply(&ev);
                    let tile = match &ev {
                        StationEvent::JobFinished { slot, .. } | StationEvent::SlotOffline { slot, .. } => m.tiles.iter().find(|t| &t.slot == slot).cloned(),
                        _ => None,
                    };
                    let _ = tx.send(WebEvent::Station(ev));
                    if let Some(t) = tile {
                        let _ = tx.send(WebEvent::Tile(t));
                    }
                }
                if stop {
                    break;
                }
            }
            Err(broadcast::error::RecvError::Lagged(n)) => {
                tracing::warn!(skipped = n, "dashboard fell behind the station; resynchronising");
                let mut m = model.lock().unwrap_or_else(|e| e.into_inner());
                let fresh = Model::live(&sup.slot_status());
                for t in fresh.tiles {
                    if let Some(old) = m.tiles.iter_mut().find(|o| o.slot == t.slot) {
                        if t.state == "offline" || old.state == "busy" && t.state == "idle" {
                            old.state = t.state;
                            old.message = t.message;
                        }
                    }
                }
                m.totals = sup.totals().into();
                let _ = tx.send(WebEvent::Snapshot(Box::new(m.clone())));
            }
            Err(broadcast::error::RecvError::Closed) => break,
        }
    }
}

/// Re-read the records every [`POLL`] and push a snapshot when something changed.
async fn feed_records(db: Db, station: Option<String>, model: Arc<Mutex<Model>>, tx: broadcast::Sender<WebEvent>) {
    loop {
        tokio::time::sleep(POLL).await;
        match records::records_model(&db, station.as_deref()).await {
            Ok(fresh) => {
                let mut m = model.lock().unwrap_or_else(|e| e.into_inner());
                if *m != fresh {
                    *m = fresh;
                    let _ = tx.send(WebEvent::Snapshot(Box::new(m.clone())));
                }
            }
            Err(e) => tracing::warn!(error = %e, "dashboard: could not read the records"),
        }
    }
}

fn router(state: AppState) -> Router {
    Router::new()
        .route("/", get(index))
        .route("/login", get(login))
        .route("/assets/{name}", get(asset))
        .route("/api/snapshot", get(snapshot))
        .route("/api/events", get(events))
        .route("/api/today", get(today))
        .route("/api/charts.svg", get(charts))
        .route("/api/scan", post(scan))
        .route("/api/retest", post(retest))
        .route("/api/stop", post(stop))
        .fallback(|| async { (StatusCode::NOT_FOUND, "not found\n") })
        .layer(axum::middleware::from_fn_with_state(state.clone(), auth::guard))
        .with_state(state)
}

async fn index() -> Html<&'static str> {
    Html(assets::INDEX)
}

async fn login(Extension(Authorized(ok)): Extension<Authorized>) -> Response {
    if ok {
        (StatusCode::SEE_OTHER, [(header::LOCATION, "/")]).into_response()
    } else {
        (StatusCode::UNAUTHORIZED, "open /login?token=TOKEN (the token is printed when the station starts)\n").into_response()
    }
}

async fn asset(Path(name): Path<String>) -> Response {
    match assets::get(&name) {
        Some(a) => ([(header::CONTENT_TYPE, a.content_type), (header::CACHE_CONTROL, "no-cache")], a.body).into_response(),
        None => (StatusCode::NOT_FOUND, "not found\n").into_response(),
    }
}

/// What this browser may do, for the page to show or hide the write controls.
#[derive(Serialize)]
struct AccessView {
    /// The view is of records (`flashline serve`): no scans, retests or stop.
    read_only: bool,
    /// Write actions need the token and this browser has not presented it.
    needs_token: bool,
}

#[derive(Serialize)]
struct SnapshotView {
    model: Model,
    access: AccessView,
}

async fn snapshot(State(st): State<AppState>, Extension(Authorized(ok)): Extension<Authorized>) -> Response {
    let model = st.model.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let access = AccessView { read_only: matches!(st.source, Source::Records), needs_token: !ok };
    Json(SnapshotView { model, access }).into_response()
}

async fn events(State(st): State<AppState>) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let (rx, snap) = {
        let m = st.model.lock().unwrap_or_else(|e| e.into_inner());
        (st.tx.subscribe(), m.clone())
    };
    let first = futures::stream::once(async move { Event::default().event("snapshot").json_data(&snap) });
    let rest = BroadcastStream::new(rx).map(|r| match r {
        Ok(WebEvent::Station(e)) => Event::default().event("station").json_data(&e),
        Ok(WebEvent::Tile(t)) => Event::default().event("tile").json_data(&t),
        Ok(WebEvent::Snapshot(m)) => Event::default().event("snapshot").json_data(&*m),
        Err(BroadcastStreamRecvError::Lagged(_)) => Ok(Event::default().event("resync").data("reload")),
    });
    let mut shutdown = st.shutdown.clone();
    let stream = first
        .chain(rest)
        .map(|r| Ok(r.unwrap_or_else(|e| Event::default().event("error").data(e.to_string()))))
        .take_until(async move {
            let _ = shutdown.wait_for(|v| *v).await;
        });
    Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(10)))
}

fn db_error(e: impl std::fmt::Display) -> Response {
    tracing::warn!(error = %e, "dashboard: records query failed");
    (StatusCode::SERVICE_UNAVAILABLE, Json(serde_json::json!({ "ok": false, "reason": format!("records: {e}") }))).into_response()
}

async fn today(State(st): State<AppState>) -> Response {
    match records::today_figures(&st.db, st.station.as_deref()).await {
        Ok(t) => Json(t).into_response(),
        Err(e) => db_error(e),
    }
}

async fn charts(State(st): State<AppState>) -> Response {
    match records::charts(&st.db, st.station.as_deref()).await {
        Ok(svg) => ([(header::CONTENT_TYPE, "image/svg+xml")], svg).into_response(),
        Err(e) => db_error(e),
    }
}

/// The answer to a write action: `ok` with a message, or refused with the reason.
#[derive(Serialize)]
struct Reply {
    ok: bool,
    message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    slot: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    serial: Option<String>,
    /// Accepted, but every eligible slot is busy: it starts when one frees.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    waiting: bool,
}

impl Reply {
    fn refused(reason: impl Into<String>) -> Json<Reply> {
        Json(Reply { ok: false, message: reason.into(), slot: None, serial: None, waiting: false })
    }
}

fn live(st: &AppState) -> Result<Arc<Supervisor>, Box<Response>> {
    match &st.source {
        Source::Live(s) if !*st.stop.borrow() => Ok(s.clone()),
        Source::Live(_) => Err(Box::new((StatusCode::CONFLICT, Reply::refused("the station is stopping: no new boards")).into_response())),
        Source::Records => Err(Box::new(
            (StatusCode::CONFLICT, Reply::refused("this is a read-only view of the records (flashline serve): scan and retest at the station"))
                .into_response(),
        )),
    }
}

/// How long a write waits for the station before answering "waiting for a free slot".
const SUBMIT_WAIT: Duration = Duration::from_millis(1500);

async fn submit_reply(fut: impl std::future::Future<Output = Submit> + Send + 'static, what: String) -> Json<Reply> {
    let mut task = tokio::spawn(fut);
    match tokio::time::timeout(SUBMIT_WAIT, &mut task).await {
        Ok(Ok(Submit::Queued { slot, serial })) => {
            Json(Reply { ok: true, message: format!("{serial} → slot {slot}"), slot: Some(slot), serial: Some(serial), waiting: false })
        }
        Ok(Ok(Submit::Rejected { reason })) => Reply::refused(reason),
        Ok(Ok(Submit::Ignored)) => Reply::refused("empty scan"),
        Ok(Ok(Submit::Quit)) => Reply::refused("to stop the station use the Stop button"),
        Ok(Err(e)) => Reply::refused(format!("internal error: {e}")),
        // The task keeps going: it starts as soon as a slot frees (the tile shows it).
        Err(_) => Json(Reply { ok: true, message: format!("{what}: every slot is busy — it starts when one frees"), slot: None, serial: None, waiting: true }),
    }
}

#[derive(Deserialize)]
struct ScanBody {
    line: String,
}

async fn scan(State(st): State<AppState>, Json(b): Json<ScanBody>) -> Response {
    let sup = match live(&st) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    if b.line.len() > 512 {
        return Reply::refused("scan longer than 512 characters: not a barcode").into_response();
    }
    if is_quit(&b.line) {
        return Reply::refused("to stop the station use the Stop button").into_response();
    }
    let line = b.line.clone();
    submit_reply(async move { sup.submit(&line).await }, b.line.trim().to_string()).await.into_response()
}

#[derive(Deserialize)]
struct RetestBody {
    slot: String,
}

async fn retest(State(st): State<AppState>, Json(b): Json<RetestBody>) -> Response {
    let sup = match live(&st) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    let slot = b.slot.clone();
    submit_reply(async move { sup.retest(&slot).await }, format!("retest in {}", b.slot)).await.into_response()
}

async fn stop(State(st): State<AppState>) -> Response {
    if let Err(r) = live(&st) {
        return *r;
    }
    st.stop.send_replace(true);
    {
        let mut m = st.model.lock().unwrap_or_else(|e| e.into_inner());
        m.stopping = true;
        let _ = st.tx.send(WebEvent::Snapshot(Box::new(m.clone())));
    }
    tracing::info!("stop requested from the dashboard");
    Json(Reply { ok: true, message: "stopping: running boards finish and are recorded, then the station exits".into(), slot: None, serial: None, waiting: false })
        .into_response()
}
