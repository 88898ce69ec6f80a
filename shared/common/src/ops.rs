//! The admin listener: `/healthz`, `/readyz` (real dependency checks) and `/metrics`.

use axum::Router;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use futures_util::future::BoxFuture;
use std::sync::Arc;
use std::time::Duration;

/// One readiness check: a name and an async probe of a dependency.
#[derive(Clone)]
pub struct ReadyCheck {
    pub name: &'static str,
    pub probe: Arc<dyn Fn() -> BoxFuture<'static, Result<(), String>> + Send + Sync>,
}

impl ReadyCheck {
    pub fn new<F, Fut>(name: &'static str, f: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = Result<(), String>> + Send + 'static,
    {
        ReadyCheck { name, probe: Arc::new(move || Box::pin(f())) }
    }
}

/// Runs every check concurrently, each bounded to 2 s so a hung dependency reads as "not ready".
pub async fn check_all(checks: &[ReadyCheck]) -> Vec<(&'static str, Result<(), String>)> {
    let futs = checks.iter().map(|c| {
        let probe = (c.probe)();
        async move {
            let r = match tokio::time::timeout(Duration::from_secs(2), probe).await {
                Ok(r) => r,
                Err(_) => Err("timed out".to_string()),
            };
            (c.name, r)
        }
    });
    futures_util::future::join_all(futs).await
}

/// The admin router of a service (or of the all-in-one binary, with every service's checks).
pub fn admin_router(checks: Vec<ReadyCheck>) -> Router {
    // Install the recorder now: metrics recorded before it exists would be lost.
    chat_telemetry::metrics_handle();
    let checks = Arc::new(checks);
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route(
            "/readyz",
            get(move || {
                let checks = checks.clone();
                async move {
                    let results = check_all(&checks).await;
                    let mut body = String::new();
                    let mut ok = true;
                    for (name, r) in results {
                        match r {
                            Ok(()) => body.push_str(&format!("{name}: ok\n")),
                            Err(e) => {
                                ok = false;
                                body.push_str(&format!("{name}: FAIL {e}\n"));
                            }
                        }
                    }
                    let status = if ok { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
                    (status, body)
                }
            }),
        )
        .route(
            "/metrics",
            get(|| async {
                ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], chat_telemetry::render_metrics())
                    .into_response()
            }),
        )
}

/// `--health-check` mode of every binary: GET /healthz on the admin address with plain std I/O,
/// so container images need no curl. Returns the process exit code.
pub fn health_check(admin_addr: &str) -> std::process::ExitCode {
    use std::io::{Read, Write};
    let addr = admin_addr.replace("0.0.0.0", "127.0.0.1");
    let run = || -> std::io::Result<bool> {
        let sock: std::net::SocketAddr =
            addr.parse().map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("{e}")))?;
        let mut s = std::net::TcpStream::connect_timeout(&sock, Duration::from_secs(2))?;
        s.set_read_timeout(Some(Duration::from_secs(2)))?;
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")?;
        let mut buf = [0u8; 16];
        let n = s.read(&mut buf)?;
        Ok(buf[..n].starts_with(b"HTTP/1.1 200"))
    };
    match run() {
        Ok(true) => std::process::ExitCode::SUCCESS,
        _ => std::process::ExitCode::FAILURE,
    }
}

/// Readiness of the event bus.
pub fn bus_check(bus: chat_bus::Bus) -> ReadyCheck {
    ReadyCheck::new("bus", move || {
        let bus = bus.clone();
        async move { bus.ping().await.map_err(|e| e.to_string()) }
    })
}

/// Readiness of a peer service: its URL answers 2xx.
pub fn http_check(name: &'static str, url: String) -> ReadyCheck {
    http_check_with(name, url, None)
}

/// Readiness of a peer's internal route, sending the service credential.
pub fn http_check_with(name: &'static str, url: String, token: Option<crate::internal::InternalToken>) -> ReadyCheck {
    let auth = token.map(|t| format!("Authorization: {}\r\n", t.header_value().to_str().unwrap_or_default()));
    ReadyCheck::new(name, move || {
        let url = url.clone();
        let auth = auth.clone().unwrap_or_default();
        async move {
            let addr = url.strip_prefix("http://").ok_or("only http:// peers are checked")?;
            let (hostport, path) =
                addr.split_once('/').map(|(h, p)| (h, format!("/{p}"))).unwrap_or((addr, "/".into()));
            let mut s = tokio::net::TcpStream::connect(hostport).await.map_err(|e| e.to_string())?;
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let req = format!("GET {path} HTTP/1.1\r\nHost: {hostport}\r\n{auth}Connection: close\r\n\r\n");
            s.write_all(req.as_bytes()).await.map_err(|e| e.to_string())?;
            let mut buf = [0u8; 12];
            s.read_exact(&mut buf).await.map_err(|e| e.to_string())?;
            if buf.starts_with(b"HTTP/1.1 2") {
                Ok(())
            } else {
                Err(format!("{name} answered {}", String::from_utf8_lossy(&buf)))
            }
        }
    })
}
