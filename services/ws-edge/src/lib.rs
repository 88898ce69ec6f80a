//! ws-edge: the WebSocket endpoint `/v1/ws`. Authenticates the upgrade, keeps the connections of
//! this edge, follows the bus for their conversations, and relays client frames to the services.

pub mod config;
pub mod conn;
pub mod hub;
pub mod legacy;
pub mod outq;
pub mod upstream;

pub use config::{Config, Limits};

use axum::Router;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use chat_authn::Verifier;
use chat_bus::Bus;
use chat_common::ApiError;
use chat_common::ops::ReadyCheck;
use hub::Hub;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use upstream::{MessageStore, Presence, PresenceReport};

/// Frames above 64 KiB close the connection with 1009.
pub const MAX_FRAME_BYTES: usize = 64 * 1024;

#[derive(Clone)]
pub struct Edge {
    pub hub: Arc<Hub>,
    pub edge_id: Arc<str>,
}

/// Builds the edge: subscribes to the broadcast topics and starts the bus dispatcher and the
/// presence reporter.
pub async fn build(
    edge_id: &str,
    limits: Limits,
    bus: Bus,
    verifier: Arc<Verifier>,
    store: Arc<dyn MessageStore>,
    presence: Arc<dyn Presence>,
) -> Edge {
    let (subs, rx) = bus.subscriber(4096);
    subs.subscribe(vec![
        chat_protocol::bus::topics::CONVERSATIONS.to_string(),
        chat_protocol::bus::topics::SESSIONS_REVOKED.to_string(),
        chat_protocol::bus::topics::PRESENCE.to_string(),
    ])
    .await;
    let hub = Hub::new(bus, subs, store, verifier, limits);
    tokio::spawn(hub.clone().dispatch(rx));
    hub.spawn_revocation_sweeper();
    let edge = Edge { hub, edge_id: Arc::from(edge_id) };
    tokio::spawn(report_presence(edge.clone(), presence));
    edge
}

/// Reports presence changes in batches (every 100 ms at most: O(1) requests however many clients
/// connect) and the full list of online users every half heartbeat (the liveness signal; the first
/// one, sent at start, also clears what a previous run with the same edge id left behind).
async fn report_presence(edge: Edge, presence: Arc<dyn Presence>) {
    let heartbeat = edge.hub.limits.heartbeat / 2;
    let heartbeat_ms = edge.hub.limits.heartbeat.as_millis() as u64;
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    let mut last_full = tokio::time::Instant::now() - heartbeat;
    let mut carry = PresenceReport { heartbeat_ms, ..Default::default() };
    loop {
        tick.tick().await;
        let (on, off) = edge.hub.take_presence_changes();
        carry.online.extend(on);
        carry.offline.extend(off);
        let full_due = last_full.elapsed() >= heartbeat;
        if carry.online.is_empty() && carry.offline.is_empty() && !full_due {
            continue;
        }
        if full_due {
            carry.full = Some(edge.hub.online_users());
        }
        match presence.report(&edge.edge_id, &carry).await {
            Ok(()) => {
                if full_due {
                    last_full = tokio::time::Instant::now();
                }
                carry = PresenceReport { heartbeat_ms, ..Default::default() };
            }
            Err(e) => {
                tracing::warn!(error = %e, "presence report failed; will retry");
                carry.full = None;
            }
        }
    }
}

pub fn router(edge: Edge) -> Router {
    Router::new().route("/v1/ws", get(upgrade)).with_state(edge)
}

async fn upgrade(
    State(edge): State<Edge>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
    ws: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Response {
    if edge.hub.draining.load(std::sync::atomic::Ordering::Relaxed) {
        // Another edge takes it (the gateway retries a 503 on the next one).
        return ApiError::unavailable("this edge is draining; connect again").into_response();
    }
    // The header wins over the query parameter.
    let header_token = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(s, _)| s.eq_ignore_ascii_case("bearer"))
        .map(|(_, t)| t.trim().to_string());
    let Some(token) = header_token.or_else(|| q.get("access_token").cloned()) else {
        return ApiError::unauthorized("missing access token").into_response();
    };
    let claims = match edge.hub.verifier.verify(&token).await {
        Ok(c) => c,
        Err(e) => return ApiError::from(e).into_response(),
    };
    let ws = match ws {
        Ok(ws) => ws,
        Err(e) => {
            return ApiError::new(StatusCode::BAD_REQUEST, "validation_failed", e.body_text()).into_response();
        }
    };
    let resume = matches!(q.get("resume").map(String::as_str), Some("1") | Some("true"));
    let hub = edge.hub.clone();
    ws.max_message_size(MAX_FRAME_BYTES)
        .max_frame_size(MAX_FRAME_BYTES)
        // Chat frames are small: 4 KiB read chunks and 8 KiB write batches instead of tungstenite's
        // 128 KiB defaults (the read buffer is allocated per connection, idle or not).
        .read_buffer_size(512)
        .write_buffer_size(8 * 1024)
        .on_upgrade(move |socket| conn::run(hub, socket, claims, resume))
}

impl Edge {
    /// Closes every connection with 1012, in ten batches spread over the drain window, so clients
    /// do not all reconnect at once. Returns when every connection is gone (or after the window + 5 s).
    pub async fn drain(&self) {
        self.hub.draining.store(true, std::sync::atomic::Ordering::Relaxed);
        let window = self.hub.limits.drain_window;
        let ids = self.hub.connection_ids();
        tracing::info!(connections = ids.len(), window_ms = window.as_millis() as u64, "draining");
        let batches = 10usize;
        let per = ids.len().div_ceil(batches).max(1);
        for (i, chunk) in ids.chunks(per).enumerate() {
            if i > 0 {
                tokio::time::sleep(window / batches as u32).await;
            }
            for id in chunk {
                self.hub.close_connection(*id, hub::close::GOING_AWAY_DRAIN);
            }
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while !self.hub.connection_ids().is_empty() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Runs the service until `shutdown`, then drains.
pub async fn run(cfg: Config, shutdown: impl std::future::Future<Output = ()> + Send + 'static) -> std::io::Result<()> {
    let bus = Bus::connect_signed(cfg.bus_url.as_deref(), &cfg.bus_topic_prefix, cfg.bus_key.clone())
        .await
        .map_err(std::io::Error::other)?;
    let token = chat_common::internal::InternalToken::required(&cfg.internal_token).map_err(std::io::Error::other)?;
    let auth = cfg.auth_url.trim_end_matches('/').to_string();
    // Revocations from the bus are the hub's (it closes the sockets as it applies them).
    let verifier = chat_authn::remote_verifier(&auth, &token, None);
    let store = Arc::new(upstream::HttpMessageStore::new(&cfg.message_store_url, &token));
    let presence = Arc::new(upstream::HttpPresence::new(&cfg.presence_url, &token));
    let edge = build(&cfg.edge_id, cfg.limits.clone(), bus.clone(), verifier, store, presence).await;
    // Readiness is this edge's own: auth and the message-store being down does not take every edge
    // out of its Service (cached keys keep verifying; sends answer `unavailable` and clients retry).
    let checks = vec![chat_common::ops::bus_check(bus), draining_check(&edge)];
    let drain_edge = edge.clone();
    let shutdown = async move {
        shutdown.await;
        drain_edge.drain().await;
    };
    let legacy = Arc::new(legacy::HttpLegacyDirectory::new(&cfg.message_store_url, &auth, &cfg.presence_url, &token));
    let app = chat_common::server::public_layers(router(edge.clone()).merge(legacy::router(edge, legacy)));
    chat_common::server::serve_service_tuned(
        &cfg.listen,
        "WS_EDGE_LISTEN",
        app,
        None,
        &cfg.admin_listen,
        "WS_EDGE_ADMIN_LISTEN",
        checks,
        Some(cfg.limits.socket_send_buffer).filter(|n| *n > 0),
        shutdown,
    )
    .await
}

/// Readiness checks of an edge composed in-process (the all-in-one binary): the bus, and not draining.
pub fn ready_checks(bus: Bus, edge: &Edge) -> Vec<ReadyCheck> {
    vec![chat_common::ops::bus_check(bus), draining_check(edge)]
}

/// Fails from the moment the drain starts, before the first connection is closed.
fn draining_check(edge: &Edge) -> ReadyCheck {
    let hub = edge.hub.clone();
    ReadyCheck::new("draining", move || {
        let draining = hub.draining.load(std::sync::atomic::Ordering::Relaxed);
        async move { if draining { Err("draining: closing connections, accepting none".to_string()) } else { Ok(()) } }
    })
}
