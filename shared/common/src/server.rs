//! Serving a router: request spans and metrics, body limit, problem-details fallback, graceful shutdown.

use crate::ApiError;
use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;
use std::future::Future;
use std::time::Instant;
use tokio::net::TcpListener;
use tracing::Instrument;

/// Request bodies above this are refused with 413 (the contract).
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// Wraps a public router with what every service needs, outermost last:
/// a 404 problem for unknown routes, the 1 MiB body limit, the body read deadline, then one span and
/// two metrics per request.
pub fn public_layers(router: Router) -> Router {
    let deadline = body_timeout();
    router
        .fallback(|| async { ApiError::not_found() })
        .method_not_allowed_fallback(|| async {
            ApiError::new(axum::http::StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", "method not allowed")
        })
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(axum::middleware::from_fn(move |req: Request, next: Next| read_body(deadline, req, next)))
        .layer(axum::middleware::from_fn(observe))
}

/// How long a client may take to send a request's body (`HTTP_BODY_TIMEOUT_MS`, default 10 s):
/// a body trickled a byte at a time must not hold a connection and a handler's place for ever.
pub fn body_timeout() -> std::time::Duration {
    let ms = crate::config::env_parse("HTTP_BODY_TIMEOUT_MS", 10_000u64).unwrap_or_else(|e| {
        tracing::warn!(error = %e, "using the default body timeout of 10 s");
        10_000
    });
    std::time::Duration::from_millis(ms.max(1))
}

/// Reads the whole body (at most the 1 MiB limit) within the deadline before any handler runs:
/// `408 request_timeout` when the client is too slow, `413` when it sends too much.
async fn read_body(deadline: std::time::Duration, req: Request, next: Next) -> Response {
    use axum::response::IntoResponse;
    let (parts, body) = req.into_parts();
    match tokio::time::timeout(deadline, axum::body::to_bytes(body, MAX_BODY_BYTES)).await {
        Ok(Ok(bytes)) => next.run(Request::from_parts(parts, axum::body::Body::from(bytes))).await,
        Ok(Err(e)) => {
            let too_big = std::error::Error::source(&e).is_some_and(|s| s.is::<http_body_util::LengthLimitError>());
            if too_big {
                ApiError::payload_too_large().into_response()
            } else {
                ApiError::validation("the request body could not be read").into_response()
            }
        }
        Err(_) => {
            metrics::counter!("http_body_timeouts_total").increment(1);
            ApiError::new(
                axum::http::StatusCode::REQUEST_TIMEOUT,
                "request_timeout",
                "the request body came too slowly",
            )
            .into_response()
        }
    }
}

// The span records the route template, never the raw URI: query strings may carry access tokens.
async fn observe(req: Request, next: Next) -> Response {
    let route =
        req.extensions().get::<MatchedPath>().map(|m| m.as_str().to_owned()).unwrap_or_else(|| "unmatched".to_owned());
    let method = req.method().clone();
    let span = tracing::info_span!(
        "http",
        %method,
        route = %route,
        status = tracing::field::Empty,
        trace_id = tracing::field::Empty
    );
    // Continue the caller's trace (W3C traceparent from another service).
    if let Some(tp) = req.headers().get("traceparent").and_then(|v| v.to_str().ok()) {
        chat_telemetry::set_remote_parent(&span, tp);
    }
    if let Some(id) = chat_telemetry::trace_id(&span) {
        span.record("trace_id", id.as_str());
    }
    let start = Instant::now();
    let resp = next.run(req).instrument(span.clone()).await;
    let status = resp.status().as_u16();
    let elapsed = start.elapsed();
    span.record("status", status);
    span.in_scope(|| tracing::info!(latency_ms = elapsed.as_secs_f64() * 1e3, "request"));
    let labels = [("method", method.to_string()), ("route", route), ("status", status.to_string())];
    metrics::counter!("http_requests_total", &labels).increment(1);
    metrics::histogram!("http_request_duration_seconds", &labels).record(elapsed.as_secs_f64());
    resp
}

/// Binds a TCP listener with a clear error naming the variable that set the address.
pub async fn bind(addr: &str, var: &str) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| std::io::Error::new(e.kind(), format!("cannot listen on {addr} ({var}): {e}")))
}

/// Serves until `shutdown` resolves, then finishes in-flight requests.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_tuned(listener, router, None, shutdown).await
}

/// How long a client may take to send a request's headers, and how long a kept-alive HTTP connection
/// may sit idle between requests (`HTTP_HEADER_TIMEOUT_MS`, default 10 s). Without it a client that
/// trickles header bytes (slowloris) or opens connections and sends nothing holds them for ever.
pub fn header_timeout() -> std::time::Duration {
    let ms = crate::config::env_parse("HTTP_HEADER_TIMEOUT_MS", 10_000u64).unwrap_or_else(|e| {
        tracing::warn!(error = %e, "using the default header timeout of 10 s");
        10_000
    });
    std::time::Duration::from_millis(ms.max(1))
}

/// Like `serve`, with TCP_NODELAY on every connection and, when given, a fixed kernel send buffer:
/// chat frames are small, and a bounded buffer lets a client that stops reading show up as a full
/// outbound queue (4009) instead of hiding megabytes in the kernel. Every connection gets the
/// header-read/idle timeout of `header_timeout`; upgraded (WebSocket) connections leave it behind.
pub async fn serve_tuned(
    listener: TcpListener,
    router: Router,
    send_buffer: Option<usize>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let timeout = header_timeout();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    // Every connection task holds a clone; `recv` returns None once the last one has finished.
    let (alive_tx, mut alive_rx) = tokio::sync::mpsc::channel::<()>(1);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let _ = tcp.set_nodelay(true);
        if let Some(n) = send_buffer {
            let _ = socket2::SockRef::from(&tcp).set_send_buffer_size(n);
        }
        let router = router.clone();
        let service = hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
            req.extensions_mut().insert(axum::extract::ConnectInfo(peer));
            tower_service::Service::call(&mut router.clone(), req)
        });
        let mut stop = stop_rx.clone();
        let alive = alive_tx.clone();
        tokio::spawn(async move {
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(timeout)
                .serve_connection(hyper_util::rt::TokioIo::new(tcp), service)
                .with_upgrades();
            let mut conn = std::pin::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => return drop(alive),
                _ = stop.wait_for(|v| *v) => {}
            }
            // Finish the request in flight, then close (idle keep-alive connections close at once).
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
            drop(alive);
        });
    }
    drop(listener);
    let _ = stop_tx.send(true);
    drop(alive_tx);
    let _ = alive_rx.recv().await;
    Ok(())
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutdown signal received");
}

/// A service's internal listener: its address, the variable that set it, and the internal router
/// (already wrapped by `internal::internal_layers`).
pub struct Internal {
    pub addr: String,
    pub var: &'static str,
    pub router: Router,
}

/// Serves a service: `app` on its public listener, the internal routes on their own listener (never
/// the public one), the admin router on the admin listener; all stop when `shutdown` resolves.
pub async fn serve_service(
    listen: &str,
    listen_var: &str,
    app: Router,
    internal: Option<Internal>,
    admin: &str,
    admin_var: &str,
    checks: Vec<crate::ops::ReadyCheck>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_service_tuned(listen, listen_var, app, internal, admin, admin_var, checks, None, shutdown).await
}

/// `serve_service` with a fixed socket send buffer on the public listener (see `serve_tuned`).
pub async fn serve_service_tuned(
    listen: &str,
    listen_var: &str,
    app: Router,
    internal: Option<Internal>,
    admin: &str,
    admin_var: &str,
    checks: Vec<crate::ops::ReadyCheck>,
    send_buffer: Option<usize>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let public = bind(listen, listen_var).await?;
    let admin_l = bind(admin, admin_var).await?;
    let internal = match internal {
        Some(i) => Some((bind(&i.addr, i.var).await?, i.router)),
        None => None,
    };
    let internal_addr = internal.as_ref().and_then(|(l, _)| l.local_addr().ok());
    tracing::info!(public = %public.local_addr()?, internal = ?internal_addr, admin = %admin_l.local_addr()?, "listening");
    let (tx, rx) = tokio::sync::watch::channel(false);
    let wait = move |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|v| *v).await;
    };
    let admin_task = tokio::spawn(serve(admin_l, crate::ops::admin_router(checks), wait(rx.clone())));
    let internal_task = internal.map(|(l, router)| tokio::spawn(serve(l, router, wait(rx.clone()))));
    tokio::spawn(async move {
        shutdown.await;
        let _ = tx.send(true);
    });
    serve_tuned(public, app, send_buffer, wait(rx)).await?;
    if let Some(t) = internal_task {
        t.await.map_err(std::io::Error::other)??;
    }
    admin_task.await.map_err(std::io::Error::other)?
}
