//! Talking to the system like a client: REST set-up calls and WebSocket connections.

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use tokio::net::TcpSocket;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub type Ws = WebSocketStream<MaybeTlsStream<tokio::net::TcpStream>>;

#[derive(Clone, Debug)]
pub struct User {
    pub id: String,
    pub token: String,
}

#[derive(Clone)]
pub struct Api {
    base: String,
    http: reqwest::Client,
}

impl Api {
    pub fn new(base: &str) -> Api {
        Api {
            base: base.trim_end_matches('/').to_string(),
            http: reqwest::Client::builder().pool_max_idle_per_host(64).build().expect("http client"),
        }
    }

    pub async fn post(&self, path: &str, token: Option<&str>, body: Value) -> Result<Value, String> {
        let mut req = self.http.post(format!("{}{path}", self.base)).json(&body);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await.map_err(|e| e.to_string())?;
        let status = resp.status();
        let v: Value = resp.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            return Err(format!("POST {path}: {status} {v}"));
        }
        Ok(v)
    }

    pub async fn register(&self, name: &str) -> Result<User, String> {
        let v = self.post("/v1/auth/register", None, json!({"username": name, "password": "bench-password-1"})).await?;
        Ok(User {
            id: v["user"]["id"].as_str().unwrap_or_default().to_string(),
            token: v["access_token"].as_str().unwrap_or_default().to_string(),
        })
    }

    /// Registers `n` users, 32 at a time.
    pub async fn register_many(&self, prefix: &str, n: usize) -> Result<Vec<User>, String> {
        let mut out = Vec::with_capacity(n);
        let ids: Vec<usize> = (0..n).collect();
        for chunk in ids.chunks(32) {
            let futs = chunk.iter().map(|i| {
                let name = format!("{prefix}{i}");
                async move { self.register(&name).await }
            });
            for r in futures_util::future::join_all(futs).await {
                out.push(r?);
            }
        }
        Ok(out)
    }

    pub async fn conversation(&self, creator: &User, kind: &str, others: &[&User]) -> Result<String, String> {
        let members: Vec<&str> = others.iter().map(|u| u.id.as_str()).collect();
        let v = self
            .post(
                "/v1/conversations",
                Some(&creator.token),
                json!({"kind": kind, "title": "bench", "members": members}),
            )
            .await?;
        Ok(v["id"].as_str().unwrap_or_default().to_string())
    }
}

/// Opens an authenticated WebSocket from source address 127.0.0.`1 + (i % sources)` and reads `hello`.
pub async fn connect(ws_base: &str, token: &str, query: &str, i: usize, sources: usize) -> Result<Ws, String> {
    let url = format!("{}/v1/ws{query}", ws_base.trim_end_matches('/'));
    let mut req = url.clone().into_client_request().map_err(|e| e.to_string())?;
    req.headers_mut().insert("authorization", format!("Bearer {token}").parse().map_err(|_| "bad token")?);
    let hostport = url.trim_start_matches("ws://").split('/').next().unwrap_or_default().to_string();
    let target: SocketAddr =
        tokio::net::lookup_host(&hostport).await.map_err(|e| e.to_string())?.next().ok_or("no address")?;
    let sock = TcpSocket::new_v4().map_err(|e| e.to_string())?;
    if sources > 1 {
        let src = Ipv4Addr::new(127, 0, 0, 1 + (i % sources) as u8);
        sock.bind(SocketAddr::new(IpAddr::V4(src), 0)).map_err(|e| e.to_string())?;
    }
    let stream = sock.connect(target).await.map_err(|e| format!("connect {target}: {e}"))?;
    stream.set_nodelay(true).ok();
    let (mut ws, _) =
        tokio_tungstenite::client_async(req, MaybeTlsStream::Plain(stream)).await.map_err(|e| e.to_string())?;
    match ws.next().await {
        Some(Ok(Message::Text(t))) if t.contains("\"hello\"") => Ok(ws),
        other => Err(format!("expected hello, got {other:?}")),
    }
}

pub async fn send(ws: &mut futures_util::stream::SplitSink<Ws, Message>, v: &Value) -> Result<(), String> {
    ws.send(Message::Text(v.to_string().into())).await.map_err(|e| e.to_string())
}
