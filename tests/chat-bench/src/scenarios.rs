//! The scenarios. Every number comes from what clients observe over the public API.

use crate::Opts;
use crate::client::{self, Api, User, Ws};
use crate::report::{Report, histogram};
use futures_util::{StreamExt, stream};
use hdrhistogram::Histogram;
use serde_json::{Value, json};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};
use tokio_tungstenite::tungstenite::Message;

fn run_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..8].to_string()
}

/// Resident memory of the given processes, bytes.
fn rss(pids: &[u32]) -> u64 {
    pids.iter()
        .filter_map(|p| std::fs::read_to_string(format!("/proc/{p}/status")).ok())
        .filter_map(|s| {
            s.lines().find(|l| l.starts_with("VmRSS:")).and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        })
        .sum::<u64>()
        * 1024
}

async fn connect_all(o: &Opts, tokens: &[String], query: &str) -> Result<Vec<Ws>, String> {
    let n = tokens.len();
    let results: Vec<(usize, Result<Ws, String>)> = stream::iter(0..n)
        .map(|i| {
            let ws = o.ws[i % o.ws.len()].clone();
            let token = tokens[i].clone();
            let query = query.to_string();
            let sources = o.source_addrs;
            async move { (i, client::connect(&ws, &token, &query, i, sources).await) }
        })
        .buffer_unordered(256)
        .collect()
        .await;
    let mut out: Vec<Option<Ws>> = (0..n).map(|_| None).collect();
    for (i, r) in results {
        out[i] = Some(r?);
    }
    Ok(out.into_iter().map(|w| w.expect("every index connected")).collect())
}

pub async fn idle(o: &Opts) -> Result<Report, String> {
    let api = Api::new(&o.api);
    let users = api.register_many(&format!("b{}i", run_id()), o.users.min(o.connections)).await?;
    let tokens: Vec<String> = (0..o.connections).map(|i| users[i % users.len()].token.clone()).collect();
    let before = rss(&o.pids);
    let start = Instant::now();
    let conns = connect_all(o, &tokens, "").await?;
    let took = start.elapsed().as_secs_f64();
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = Vec::new();
    for mut ws in conns {
        let mut stop = stop_rx.clone();
        // Reading keeps answering the server's pings.
        tasks.push(tokio::spawn(async move {
            loop {
                tokio::select! {
                    m = ws.next() => if m.is_none() { break },
                    _ = stop.changed() => break,
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = rss(&o.pids);
    tokio::time::sleep(Duration::from_secs_f64(o.duration_secs)).await;
    let alive = tasks.iter().filter(|t| !t.is_finished()).count();
    let _ = stop_tx.send(true);
    let mut r = Report::new("idle");
    r.add("connections", o.connections as u64);
    r.add("users", users.len() as u64);
    r.add("connect_seconds", (took * 1000.0).round() / 1000.0);
    r.add("connects_per_second", (o.connections as f64 / took).round());
    r.add("still_open_after_hold", alive as u64);
    if !o.pids.is_empty() {
        r.add("server_rss_before_mib", before as f64 / 1048576.0);
        r.add("server_rss_after_mib", after as f64 / 1048576.0);
        r.add("rss_per_connection_bytes", (after.saturating_sub(before) as f64 / o.connections as f64).round());
    }
    Ok(r)
}

/// The fields of a server frame the traffic scenarios read.
#[derive(serde::Deserialize)]
struct Frame<'a> {
    #[serde(rename = "type", borrow)]
    ty: std::borrow::Cow<'a, str>,
    #[serde(default, borrow)]
    message: Option<FrameMessage<'a>>,
}

#[derive(serde::Deserialize)]
struct FrameMessage<'a> {
    #[serde(borrow)]
    conversation_id: std::borrow::Cow<'a, str>,
    seq: i64,
    #[serde(default, borrow)]
    body: Option<std::borrow::Cow<'a, str>>,
}

/// What one connection saw.
#[derive(Default)]
struct Seen {
    delivery: Option<Histogram<u64>>,
    ack: Option<Histogram<u64>>,
    /// (conversation index, seq) of every `message` event.
    received: Vec<(u32, i64)>,
    acked: Vec<(u32, i64)>,
    errors: u64,
}

struct Setup {
    /// Per conversation: its members' connection indices.
    convs: Vec<(String, Vec<usize>)>,
    writers: Vec<mpsc::UnboundedSender<Value>>,
    readers: Vec<tokio::task::JoinHandle<Seen>>,
    stop: watch::Sender<bool>,
    epoch: Instant,
    /// Frames (acks and messages) received so far by all readers: the tail wait watches it.
    progress: Arc<AtomicU64>,
}

async fn setup(o: &Opts, fanout: bool) -> Result<Setup, String> {
    let api = Api::new(&o.api);
    let (groups, members) = if fanout { (o.groups, o.members.max(2)) } else { (o.pairs, 2) };
    let users = api.register_many(&format!("b{}t", run_id()), groups * members).await?;
    let mut convs = Vec::with_capacity(groups);
    for g in 0..groups {
        let idx: Vec<usize> = (g * members..(g + 1) * members).collect();
        let others: Vec<&User> = idx[1..].iter().map(|i| &users[*i]).collect();
        let kind = if fanout { "group" } else { "direct" };
        convs.push((api.conversation(&users[idx[0]], kind, &others).await?, idx));
    }
    let tokens: Vec<String> = users.iter().map(|u| u.token.clone()).collect();
    let conns = connect_all(o, &tokens, "").await?;
    let epoch = Instant::now();
    let (stop, stop_rx) = watch::channel(false);
    let progress = Arc::new(AtomicU64::new(0));
    let index: Arc<HashMap<String, u32>> =
        Arc::new(convs.iter().enumerate().map(|(i, (cid, _))| (cid.clone(), i as u32)).collect());
    let mut writers = Vec::new();
    let mut readers = Vec::new();
    for ws in conns {
        let (mut sink, mut rs) = ws.split();
        let (tx, mut rx) = mpsc::unbounded_channel::<Value>();
        writers.push(tx);
        tokio::spawn(async move {
            while let Some(v) = rx.recv().await {
                if client::send(&mut sink, &v).await.is_err() {
                    break;
                }
            }
        });
        let mut stop = stop_rx.clone();
        let (progress, index) = (progress.clone(), index.clone());
        readers.push(tokio::spawn(async move {
            let mut seen = Seen { delivery: Some(histogram()), ack: Some(histogram()), ..Default::default() };
            loop {
                let m = tokio::select! {
                    m = rs.next() => m,
                    _ = stop.changed() => break,
                };
                let Some(Ok(Message::Text(t))) = m else {
                    if m.is_none() {
                        break;
                    }
                    continue;
                };
                let now = epoch.elapsed().as_micros() as u64;
                // Typed and borrowed: the generator shares the cores with the server, so it reads
                // only the fields it measures (a full `Value` per frame cost most of a core).
                let Ok(f) = serde_json::from_str::<Frame<'_>>(t.as_str()) else { continue };
                progress.fetch_add(1, Ordering::Relaxed);
                let msg = f.message.as_ref();
                let sent_at = msg.and_then(|m| m.body.as_deref()?.strip_prefix("t:")?.parse::<u64>().ok());
                let key = || msg.map(|m| (index.get(m.conversation_id.as_ref()).copied().unwrap_or(u32::MAX), m.seq));
                match f.ty.as_ref() {
                    "message" => {
                        if let (Some(s), Some(h)) = (sent_at, seen.delivery.as_mut()) {
                            let _ = h.record(now.saturating_sub(s).max(1));
                        }
                        seen.received.extend(key());
                    }
                    "ack" => {
                        if let (Some(s), Some(h)) = (sent_at, seen.ack.as_mut()) {
                            let _ = h.record(now.saturating_sub(s).max(1));
                        }
                        seen.acked.extend(key());
                    }
                    "error" => seen.errors += 1,
                    _ => {}
                }
            }
            seen
        }));
    }
    Ok(Setup { convs, writers, readers, stop, epoch, progress })
}

/// Sends at `rate`/s (open loop: the schedule does not wait for acks) for `secs`, then collects.
async fn measure(name: &str, s: Setup, rate: f64, secs: f64) -> Result<Report, String> {
    let total = (rate * secs).round() as u64;
    let start = Instant::now();
    let mut turn: HashMap<usize, usize> = HashMap::new();
    for k in 0..total {
        let due = start + Duration::from_secs_f64(k as f64 / rate);
        tokio::time::sleep_until(due.into()).await;
        let g = (k as usize) % s.convs.len();
        let (cid, members) = &s.convs[g];
        let t = turn.entry(g).or_default();
        let sender = members[*t % members.len()];
        *t += 1;
        let body = format!("t:{}", s.epoch.elapsed().as_micros());
        let _ = s.writers[sender]
            .send(json!({"type": "send", "id": format!("m{k}"), "conversation_id": cid, "body": body}));
    }
    let send_secs = start.elapsed().as_secs_f64();
    // The tail: wait until nothing has arrived for 3 s (at most 60 s), so an overloaded run is
    // judged on what it delivered late, not on what was still queued when the window closed.
    let mut last = s.progress.load(Ordering::Relaxed);
    let mut quiet = 0;
    let tail = Instant::now();
    while quiet < 3 && tail.elapsed() < Duration::from_secs(60) {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = s.progress.load(Ordering::Relaxed);
        quiet = if now == last { quiet + 1 } else { 0 };
        last = now;
    }
    let _ = s.stop.send(true);
    let mut delivery = histogram();
    let mut ack = histogram();
    let mut acked: HashSet<(u32, i64)> = HashSet::new();
    let mut received: Vec<Vec<(u32, i64)>> = Vec::new();
    let mut errors = 0;
    for r in s.readers {
        let seen = r.await.map_err(|e| e.to_string())?;
        delivery.add(seen.delivery.as_ref().expect("hist")).map_err(|e| e.to_string())?;
        ack.add(seen.ack.as_ref().expect("hist")).map_err(|e| e.to_string())?;
        acked.extend(seen.acked);
        errors += seen.errors;
        received.push(seen.received);
    }
    // Every acked message must reach every member's connection exactly once.
    let mut lost = 0u64;
    let mut dup = 0u64;
    let mut delivered = 0u64;
    let sets: Vec<HashMap<(u32, i64), u32>> = received
        .into_iter()
        .map(|v| {
            let mut m = HashMap::new();
            for k in v {
                *m.entry(k).or_insert(0) += 1;
            }
            m
        })
        .collect();
    for set in &sets {
        for n in set.values() {
            delivered += u64::from(*n);
            dup += u64::from(n.saturating_sub(1));
        }
    }
    for key in &acked {
        for c in s.convs.get(key.0 as usize).map(|(_, m)| m.as_slice()).unwrap_or(&[]) {
            if !sets[*c].contains_key(key) {
                lost += 1;
            }
        }
    }
    let mut r = Report::new(name);
    r.add("rate_target_per_s", rate);
    r.add("sent", total);
    r.add("acked", acked.len() as u64);
    r.add("errors", errors);
    r.add("send_window_s", (send_secs * 100.0).round() / 100.0);
    r.add("deliveries", delivered);
    r.add("deliveries_per_s", (delivered as f64 / send_secs).round());
    r.add("lost", lost);
    r.add("duplicated", dup);
    r.latency("send_to_delivery", &delivery);
    r.latency("send_to_ack", &ack);
    Ok(r)
}

pub async fn traffic(o: &Opts, fanout: bool) -> Result<Report, String> {
    let s = setup(o, fanout).await?;
    let mut r = measure(if fanout { "fanout" } else { "dm" }, s, o.rate, o.duration_secs).await?;
    if fanout {
        r.add("groups", o.groups as u64);
        r.add("members", o.members as u64);
    } else {
        r.add("pairs", o.pairs as u64);
    }
    Ok(r)
}

/// Raises the rate by 1.5x per step until p99 send-to-delivery passes the SLO or anything is lost.
pub async fn find_max(o: &Opts) -> Result<Report, String> {
    let fanout = o.scenario == "fanout";
    let mut rate = o.rate;
    let mut last_good: Option<Report> = None;
    loop {
        let s = setup(o, fanout).await?;
        let r = measure(&o.scenario, s, rate, o.duration_secs).await?;
        let p99 = r.get("send_to_delivery_p99_ms").and_then(Value::as_f64).unwrap_or(f64::MAX);
        let ok = p99 <= o.slo_ms
            && r.get("lost").and_then(Value::as_u64) == Some(0)
            && r.get("errors").and_then(Value::as_u64) == Some(0);
        eprintln!("rate {rate:.0}/s: p99 {p99} ms, {}", if ok { "ok" } else { "over the SLO or lossy" });
        if !ok {
            break;
        }
        last_good = Some(r);
        rate *= 1.5;
    }
    let mut r = last_good.ok_or("even the starting rate missed the SLO")?;
    r.scenario = format!("{}-find-max", o.scenario);
    r.add("slo_p99_ms", o.slo_ms);
    Ok(r)
}

/// Drops every client, commits one message per conversation while they are away, then reconnects
/// all at once with `resume=1` and `sync`, and measures until every client has caught up.
pub async fn reconnect_storm(o: &Opts) -> Result<Report, String> {
    let api = Api::new(&o.api);
    let n = o.connections.max(2) & !1;
    let users = api.register_many(&format!("b{}r", run_id()), n).await?;
    let mut conv_of = vec![String::new(); n];
    let mut convs = Vec::new();
    for i in (0..n).step_by(2) {
        let cid = api.conversation(&users[i], "direct", &[&users[i + 1]]).await?;
        conv_of[i] = cid.clone();
        conv_of[i + 1] = cid.clone();
        convs.push((i, cid));
    }
    let tokens: Vec<String> = users.iter().map(|u| u.token.clone()).collect();
    let conns = connect_all(o, &tokens, "").await?;
    drop(conns);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let missed: Vec<Result<Value, String>> = stream::iter(convs.iter())
        .map(|(i, cid)| {
            let api = api.clone();
            let token = users[*i].token.clone();
            async move {
                api.post(
                    &format!("/v1/conversations/{cid}/messages"),
                    Some(&token),
                    json!({"body": "while you were away"}),
                )
                .await
            }
        })
        .buffer_unordered(64)
        .collect()
        .await;
    for m in missed {
        m?;
    }
    let start = Instant::now();
    let conns = connect_all(o, &tokens, "?resume=1").await?;
    let connected = start.elapsed().as_secs_f64();
    let results: Vec<bool> = stream::iter(conns.into_iter().enumerate())
        .map(|(i, mut ws)| {
            let cid = conv_of[i].clone();
            async move {
                use futures_util::SinkExt;
                let sync = json!({"type": "sync", "id": "s", "positions": {cid.clone(): 0}});
                if ws.send(Message::Text(sync.to_string().into())).await.is_err() {
                    return false;
                }
                let mut got = false;
                while let Ok(Some(Ok(Message::Text(t)))) =
                    tokio::time::timeout(Duration::from_secs(30), ws.next()).await
                {
                    let v: Value = serde_json::from_str(t.as_str()).unwrap_or(Value::Null);
                    if v["type"] == "message"
                        && v["message"]["conversation_id"] == cid.as_str()
                        && v["message"]["seq"] == 1
                    {
                        got = true;
                    }
                    if v["type"] == "sync_done" {
                        return got;
                    }
                }
                false
            }
        })
        .buffer_unordered(n)
        .collect()
        .await;
    let caught_up = start.elapsed().as_secs_f64();
    let mut r = Report::new("reconnect-storm");
    r.add("clients", n as u64);
    r.add("reconnect_seconds", (connected * 1000.0).round() / 1000.0);
    r.add("all_synced_seconds", (caught_up * 1000.0).round() / 1000.0);
    r.add("lost", results.iter().filter(|ok| !**ok).count() as u64);
    Ok(r)
}
