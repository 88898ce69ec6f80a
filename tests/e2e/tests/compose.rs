//! The deployment as users run it: `scripts/compose-up.sh` builds the images from the repository's
//! Dockerfiles and brings `docker-compose.yml` up on a real Docker engine; the test then uses the
//! stack through its gateway like a client, kills an edge, drains the others with `docker compose
//! stop`, and tears everything down. The same for the `single` profile (the all-in-one image with
//! its data in a volume, kept across a restart).
//!
//! Needs a Docker engine: scripts/test.sh starts one (installing Debian's docker.io if needed).

use chat_e2e::*;
use serde_json::{Value, json};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Message;

const GATEWAY: &str = "127.0.0.1:8080";
const SINGLE_PORT: u16 = 18090;

fn require_docker() {
    let ok = Command::new("docker")
        .arg("info")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok,
        "no Docker engine answers (`docker info` failed). Start one: `dockerd &` (install it with \
         `apt-get install docker.io`), or run scripts/test.sh, which does both"
    );
}

/// `docker compose` (the plugin) or the standalone `docker-compose`, for one project.
struct Compose {
    project: &'static str,
    env: Vec<(&'static str, String)>,
}

impl Compose {
    fn cmd(&self, args: &[&str]) -> Command {
        let plugin = Command::new("docker")
            .args(["compose", "version"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        let mut c = if plugin {
            let mut c = Command::new("docker");
            c.arg("compose");
            c
        } else {
            Command::new("docker-compose")
        };
        c.current_dir(repo_path("")).env("COMPOSE_PROJECT_NAME", self.project).args(args);
        for (k, v) in &self.env {
            c.env(k, v);
        }
        c
    }

    fn run(&self, args: &[&str]) -> String {
        let out = self.cmd(args).output().unwrap_or_else(|e| panic!("docker compose {args:?}: {e}"));
        assert!(
            out.status.success(),
            "docker compose {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `scripts/compose-up.sh ARGS`: images, `up -d`, and the wait until the stack answers.
    fn up(&self, args: &[&str]) {
        let mut c = Command::new("bash");
        c.current_dir(repo_path("")).arg("scripts/compose-up.sh").args(args).env("COMPOSE_PROJECT_NAME", self.project);
        for (k, v) in &self.env {
            c.env(k, v);
        }
        let out = c.output().expect("scripts/compose-up.sh");
        if !out.status.success() {
            let logs = self.cmd(&["logs", "--no-color", "--tail", "40"]).output().map(|o| o.stdout).unwrap_or_default();
            panic!(
                "scripts/compose-up.sh failed:\n{}{}\nlogs:\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr),
                String::from_utf8_lossy(&logs)
            );
        }
    }

    fn containers(&self, service: &str) -> Vec<String> {
        self.run(&["ps", "-q", service]).lines().map(str::to_string).filter(|l| !l.is_empty()).collect()
    }
}

impl Drop for Compose {
    fn drop(&mut self) {
        let _ = self.cmd(&["down", "-v", "--remove-orphans", "-t", "5"]).output();
    }
}

fn docker(args: &[&str]) -> String {
    let out = Command::new("docker").args(args).output().expect("docker");
    assert!(out.status.success(), "docker {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn git_head() -> String {
    let out = Command::new("git").args(["rev-parse", "HEAD"]).current_dir(repo_path("")).output().expect("git");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Sends `body` with `client_msg_id` and waits for its ack; `None` if the connection broke first.
async fn send_acked(ws: &mut Ws, cid: &Value, n: usize) -> Option<Value> {
    let frame = json!({"type": "send", "id": format!("s{n}"), "conversation_id": cid,
        "body": format!("m{n}"), "client_msg_id": format!("c{n}")});
    if ws.stream.send_frame(frame).await.is_err() {
        return None;
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let m = tokio::time::timeout_at(deadline, futures_util::StreamExt::next(&mut ws.stream)).await.ok()??;
        match m {
            Ok(Message::Text(t)) => {
                let v: Value = serde_json::from_str(t.as_str()).ok()?;
                if v["type"] == "ack" && v["reply_to"] == format!("s{n}") {
                    return Some(v);
                }
                if v["type"] == "error" && v["reply_to"] == format!("s{n}") {
                    panic!("send s{n} refused: {v}");
                }
            }
            Ok(Message::Close(_)) | Err(_) => return None,
            Ok(_) => {}
        }
    }
}

trait SendFrame {
    async fn send_frame(&mut self, v: Value) -> Result<(), tokio_tungstenite::tungstenite::Error>;
}

impl SendFrame for WsStream {
    async fn send_frame(&mut self, v: Value) -> Result<(), tokio_tungstenite::tungstenite::Error> {
        futures_util::SinkExt::send(self, Message::Text(v.to_string().into())).await
    }
}

/// Reads until the server closes; returns the close code.
async fn close_code(ws: &mut Ws, within: Duration) -> Option<u16> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, futures_util::StreamExt::next(&mut ws.stream)).await {
            Ok(Some(Ok(Message::Close(f)))) => return f.map(|f| f.code.into()),
            Ok(Some(Ok(_))) => continue,
            _ => return None,
        }
    }
}

async fn history(api: &Api, token: &str, cid: &Value) -> Vec<String> {
    let cid = cid.as_str().expect("conversation id");
    let (s, v) = api.call("GET", &format!("/v1/conversations/{cid}/messages?limit=100"), Some(token), None).await;
    assert_eq!(s, 200, "{v}");
    let mut out: Vec<(i64, String)> = v["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .map(|m| (m["seq"].as_i64().unwrap_or(0), m["body"].as_str().unwrap_or_default().to_string()))
        .collect();
    out.sort();
    out.into_iter().map(|(_, b)| b).collect()
}

/// One test, the stack then the single profile: compose projects share the fixed gateway subnet
/// (the address auth trusts for client addresses), so they cannot run side by side.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compose_stack_then_single_profile() {
    stack_up_used_and_stopped().await;
    single_profile_keeps_its_data_in_a_volume().await;
}

async fn stack_up_used_and_stopped() {
    require_docker();
    let stack = Compose { project: "chat-e2e", env: vec![] };
    // A stack left by an interrupted run would hold the port.
    drop(Compose { project: "chat-e2e", env: vec![] });
    stack.up(&[]);

    // Every long-running service reports healthy (Dockerfile HEALTHCHECKs and compose's own; the
    // gateway's first check may lag its first answer by an interval).
    let services = ["postgres", "redis", "auth", "message-store", "presence", "ws-edge", "gateway"];
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let ps = stack.run(&["ps", "--format", "{{.Service}} {{.Health}}"]);
        let unhealthy: Vec<&str> =
            services.iter().copied().filter(|s| !ps.lines().any(|l| l == format!("{s} healthy"))).collect();
        if unhealthy.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "not healthy: {unhealthy:?}\n{ps}");
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let edges = stack.containers("ws-edge");
    assert_eq!(edges.len(), 2, "two edge replicas");
    // The images say which revision they were built from.
    let label = docker(&[
        "image",
        "inspect",
        "-f",
        "{{index .Config.Labels \"org.opencontainers.image.revision\"}}",
        "chat-auth:dev",
    ]);
    assert_eq!(label, git_head());

    let api = Api::new(format!("http://{GATEWAY}"));
    let ws_base = format!("ws://{GATEWAY}");
    let a = api.register(&unique("a")).await;
    let b = api.register(&unique("b")).await;
    let cid = json!(api.direct(&a, &b).await.to_string());
    // least_conn spreads the two connections over the two edges.
    let mut wa = Ws::connect(&ws_base, &a.token, "").await;
    assert_eq!(wa.next(WAIT).await["type"], "hello");
    let mut wb = Ws::connect(&ws_base, &b.token, "").await;
    assert_eq!(wb.next(WAIT).await["type"], "hello");
    for n in 1..=5 {
        send_acked(&mut wa, &cid, n).await.expect("ack");
    }
    for n in 1..=5 {
        let m = wb.wait_for(WAIT, |v| v["type"] == "message").await;
        assert_eq!(m["message"]["body"], format!("m{n}"), "in order across edges");
    }

    // Kill one edge outright: whoever was on it reconnects through the gateway; a's unacknowledged
    // sends are repeated with the same client_msg_id. Nothing acknowledged is lost or doubled.
    docker(&["kill", &edges[0]]);
    let killed = Instant::now();
    let mut n = 6;
    while n <= 10 {
        match send_acked(&mut wa, &cid, n).await {
            Some(_) => n += 1,
            None => {
                wa = Ws::connect(&ws_base, &a.token, "").await;
                assert_eq!(wa.next(WAIT).await["type"], "hello");
            }
        }
    }
    println!("five sends across an edge kill (reconnect included) took {} ms", killed.elapsed().as_millis());
    let expected: Vec<String> = (1..=10).map(|n| format!("m{n}")).collect();
    assert_eq!(history(&api, &b.token, &cid).await, expected, "every acknowledged message, once, in order");
    drop(wb);
    let mut wb = Ws::connect(&ws_base, &b.token, "").await;
    assert_eq!(wb.next(WAIT).await["type"], "hello");

    // Both clients live (a client that stops answering pings for two heartbeats is closed with 1001).
    for ws in [&mut wa, &mut wb] {
        ws.send(json!({"type": "ping", "id": "p"})).await;
        ws.wait_for(WAIT, |v| v["type"] == "pong").await;
    }
    // `docker compose stop`: the remaining edge drains (close 1012, "reconnect and sync") and exits
    // cleanly well within its grace period.
    let started = Instant::now();
    let stopper = {
        let mut c = stack.cmd(&["stop", "-t", "30", "ws-edge"]);
        tokio::task::spawn_blocking(move || c.output())
    };
    let (ca, cb) =
        tokio::join!(close_code(&mut wa, Duration::from_secs(25)), close_code(&mut wb, Duration::from_secs(25)));
    assert_eq!((ca, cb), (Some(1012), Some(1012)), "both clients told to reconnect by the drain");
    let out = stopper.await.expect("join").expect("docker compose stop");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let took = started.elapsed();
    assert!(took < Duration::from_secs(25), "drain and exit took {took:?}");
    let survivor = &edges[1];
    let exit = docker(&["inspect", "-f", "{{.State.ExitCode}}", survivor]);
    assert_eq!(exit, "0", "the drained edge exits cleanly (not killed at the grace period)");
    println!("edge drained and stopped in {} ms", took.as_millis());
}

async fn single_profile_keeps_its_data_in_a_volume() {
    require_docker();
    let env = vec![("COMPOSE_PROFILES", "single".to_string()), ("CHAT_SINGLE_PORT", SINGLE_PORT.to_string())];
    drop(Compose { project: "chat-e2e-single", env: env.clone() });
    let single = Compose { project: "chat-e2e-single", env };
    single.up(&["chat"]);
    let api = Api::new(format!("http://127.0.0.1:{SINGLE_PORT}"));
    let a = api.register(&unique("a")).await;
    let b = api.register(&unique("b")).await;
    let cid = json!(api.direct(&a, &b).await.to_string());
    let mut wa = Ws::connect(&format!("ws://127.0.0.1:{SINGLE_PORT}"), &a.token, "").await;
    assert_eq!(wa.next(WAIT).await["type"], "hello");
    send_acked(&mut wa, &cid, 1).await.expect("ack");
    drop(wa);

    // A new container on the same volume: accounts and history are still there.
    single.run(&["down", "-t", "20"]);
    single.up(&["chat"]);
    assert_eq!(history(&api, &b.token, &cid).await, vec!["m1".to_string()]);
    let (s, v) = api
        .call("POST", "/v1/auth/login", None, Some(json!({"username": a.username, "password": "correct horse 1"})))
        .await;
    assert_eq!(s, 200, "{v}");
}
