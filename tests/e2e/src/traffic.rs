//! Live traffic for the fault tests: group members that send over the WebSocket, retry unacked sends
//! with the same `client_msg_id`, reconnect (`resume=1` + `sync`) to whichever edge answers, and check
//! that they receive every message of their conversation exactly once, in order.

use crate::{Api, TestUser, unique};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use uuid::Uuid;

/// The shape of the traffic.
#[derive(Clone, Copy)]
pub struct Plan {
    pub groups: usize,
    pub members: usize,
    /// Messages each member sends.
    pub per_sender: usize,
    /// Pause between one member's sends (kept under the per-user rate limit).
    pub interval: Duration,
}

impl Default for Plan {
    fn default() -> Self {
        Plan { groups: 2, members: 4, per_sender: 30, interval: Duration::from_millis(80) }
    }
}

/// What one client saw.
#[derive(Default, Debug)]
struct ClientReport {
    sent_frames: u64,
    acked: u64,
    last_seq: i64,
    delivered: u64,
    duplicated: u64,
    reordered: u64,
    reconnects: u64,
    retries: u64,
    close_codes: Vec<u16>,
    expected: i64,
}

/// The totals over every client.
#[derive(Default, Debug)]
pub struct Report {
    pub messages: u64,
    pub send_frames: u64,
    pub acked: u64,
    pub delivered: u64,
    pub expected_deliveries: u64,
    pub lost: u64,
    pub duplicated: u64,
    pub reordered: u64,
    pub reconnects: u64,
    pub retries: u64,
    pub close_codes: Vec<u16>,
    /// Messages stored more than once for one client_msg_id, or missing from history although acked.
    pub history_errors: Vec<String>,
}

impl Report {
    pub fn line(&self, case: &str) -> String {
        format!(
            "{case}: messages={} send_frames={} acked={} delivered={}/{} lost={} duplicated={} reordered={} \
             reconnects={} retries={} history_errors={}",
            self.messages,
            self.send_frames,
            self.acked,
            self.delivered,
            self.expected_deliveries,
            self.lost,
            self.duplicated,
            self.reordered,
            self.reconnects,
            self.retries,
            self.history_errors.len()
        )
    }

    /// Panics unless every acked message was stored once and reached every member, in order.
    pub fn assert_clean(&self, case: &str) {
        println!("{}", self.line(case));
        assert_eq!(self.acked, self.messages, "{case}: every message acked in the end");
        assert_eq!(self.lost, 0, "{case}: nothing lost");
        assert_eq!(self.duplicated, 0, "{case}: nothing duplicated");
        assert_eq!(self.reordered, 0, "{case}: nothing out of order");
        assert!(self.history_errors.is_empty(), "{case}: history: {:?}", self.history_errors);
    }
}

pub struct Traffic {
    clients: Vec<JoinHandle<ClientReport>>,
    groups: Vec<(Uuid, TestUser)>,
    plan: Plan,
}

impl Traffic {
    /// Registers the users, creates the groups, connects every member (member `i` to edge
    /// `i % edges.len()`) and, once all are connected, starts sending. Clients give up at `deadline`.
    pub async fn start(api: &Api, edges: &[String], plan: Plan, deadline: Duration) -> Traffic {
        let mut groups = Vec::new();
        let mut members = Vec::new();
        for _ in 0..plan.groups {
            let mut users = Vec::new();
            for _ in 0..plan.members {
                users.push(api.register(&unique("t")).await);
            }
            let ids: Vec<Uuid> = users[1..].iter().map(|u| u.id).collect();
            let (s, v) = api
                .call(
                    "POST",
                    "/v1/conversations",
                    Some(&users[0].token),
                    Some(json!({"kind": "group", "title": "traffic", "members": ids})),
                )
                .await;
            assert_eq!(s, 201, "create group: {v}");
            let cid = Uuid::parse_str(v["id"].as_str().expect("id")).expect("uuid");
            groups.push((cid, users[0].clone()));
            members.extend(users.into_iter().map(|u| (cid, u)));
        }
        let deadline = Instant::now() + deadline;
        let expected = (plan.members * plan.per_sender) as i64;
        let mut ready = Vec::new();
        for (i, (cid, user)) in members.into_iter().enumerate() {
            let start = i % edges.len();
            let mut ws = connect(&edges[start], &user.token, "").await.expect("first connect");
            // Registered once `hello` arrives: from then on the connection gets every new message.
            let hello = tokio::time::timeout(Duration::from_secs(10), ws.next()).await.expect("hello");
            assert!(matches!(hello, Some(Ok(Message::Text(_)))), "hello frame: {hello:?}");
            ready.push((cid, user, start, ws));
        }
        let clients = ready
            .into_iter()
            .map(|(cid, user, start, ws)| {
                let c = Client { user, cid, edges: edges.to_vec(), edge: start, plan, expected, deadline };
                tokio::spawn(c.run(ws))
            })
            .collect();
        Traffic { clients, groups, plan }
    }

    /// Waits for every client, then checks each conversation's history through `api`.
    pub async fn finish(self, api: &Api) -> Report {
        let mut r = Report::default();
        for h in self.clients {
            let c = h.await.expect("client task");
            r.send_frames += c.sent_frames;
            r.acked += c.acked;
            r.delivered += c.delivered;
            r.expected_deliveries += c.expected as u64;
            r.lost += (c.expected - c.last_seq).max(0) as u64;
            r.duplicated += c.duplicated;
            r.reordered += c.reordered;
            r.reconnects += c.reconnects;
            r.retries += c.retries;
            r.close_codes.extend(c.close_codes);
        }
        r.messages = (self.plan.groups * self.plan.members * self.plan.per_sender) as u64;
        for (cid, owner) in &self.groups {
            let mut seen: HashMap<String, u32> = HashMap::new();
            let mut after = 0;
            loop {
                let path = format!("/v1/conversations/{cid}/messages?limit=200&after_seq={after}");
                let (s, v) = api.call("GET", &path, Some(&owner.token), None).await;
                assert_eq!(s, 200, "history: {v}");
                for m in v["messages"].as_array().expect("messages") {
                    let key = m["client_msg_id"].as_str().unwrap_or("").to_string();
                    *seen.entry(key).or_default() += 1;
                    after = m["seq"].as_i64().expect("seq");
                }
                if v["has_more"] != true {
                    break;
                }
            }
            for (k, n) in &seen {
                if *n != 1 {
                    r.history_errors.push(format!("{cid}: client_msg_id {k:?} stored {n} times"));
                }
            }
            let want = self.plan.members * self.plan.per_sender;
            if seen.len() != want {
                r.history_errors.push(format!("{cid}: {} distinct messages in history, {want} sent", seen.len()));
            }
        }
        r
    }
}

async fn connect(base: &str, token: &str, query: &str) -> Result<crate::WsStream, String> {
    let mut req = format!("{base}/v1/ws{query}").into_client_request().map_err(|e| e.to_string())?;
    req.headers_mut().insert("authorization", format!("Bearer {token}").parse().map_err(|_| "header")?);
    let (ws, _) = tokio::time::timeout(Duration::from_secs(3), tokio_tungstenite::connect_async(req))
        .await
        .map_err(|_| "connect timeout".to_string())?
        .map_err(|e| e.to_string())?;
    Ok(ws)
}

struct Client {
    user: TestUser,
    cid: Uuid,
    edges: Vec<String>,
    edge: usize,
    plan: Plan,
    expected: i64,
    deadline: Instant,
}

impl Client {
    async fn run(self, first: crate::WsStream) -> ClientReport {
        let mut r = ClientReport { expected: self.expected, ..Default::default() };
        let mut next = 0usize; // index of the next message to get acked
        let mut ws = Some(first);
        let mut edge = self.edge;
        let mut attempt = 0u64;
        while Instant::now() < self.deadline {
            let mut stream = match ws.take() {
                Some(s) => s,
                None => match connect(&self.edges[edge], &self.user.token, "?resume=1").await {
                    Ok(s) => {
                        r.reconnects += 1;
                        s
                    }
                    Err(_) => {
                        edge = (edge + 1) % self.edges.len();
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
            };
            let resumed = r.reconnects > 0;
            if resumed {
                let sync = json!({"type": "sync", "id": "sync", "positions": {self.cid.to_string(): r.last_seq}});
                if stream.send(Message::Text(sync.to_string().into())).await.is_err() {
                    continue;
                }
            }
            let mut syncing = resumed;
            let mut in_flight: Option<String> = None;
            let mut tick = tokio::time::interval(self.plan.interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                if next == self.plan.per_sender && r.last_seq >= self.expected {
                    let _ = stream.close(None).await;
                    return r;
                }
                let frame = tokio::select! {
                    _ = tick.tick(), if in_flight.is_none() && !syncing && next < self.plan.per_sender => {
                        attempt += 1;
                        let id = format!("s{attempt}");
                        let send = json!({
                            "type": "send", "id": id, "conversation_id": self.cid,
                            "body": format!("{} #{next}", self.user.username),
                            "client_msg_id": format!("{}-{next}", self.user.id),
                        });
                        r.sent_frames += 1;
                        if stream.send(Message::Text(send.to_string().into())).await.is_err() {
                            break;
                        }
                        in_flight = Some(id);
                        continue;
                    }
                    f = tokio::time::timeout_at(self.deadline, stream.next()) => f,
                };
                let text = match frame {
                    Err(_) => return r, // deadline
                    Ok(Some(Ok(Message::Text(t)))) => t,
                    Ok(Some(Ok(Message::Close(c)))) => {
                        r.close_codes.push(c.map(|c| u16::from(c.code)).unwrap_or(1005));
                        break;
                    }
                    Ok(Some(Ok(_))) => continue,
                    Ok(None) | Ok(Some(Err(_))) => break,
                };
                let v: Value = serde_json::from_str(text.as_str()).unwrap_or(Value::Null);
                match v["type"].as_str() {
                    Some("message") if v["message"]["conversation_id"] == self.cid.to_string() => {
                        let seq = v["message"]["seq"].as_i64().unwrap_or(0);
                        if seq <= r.last_seq {
                            eprintln!(
                                "{}: duplicate seq {seq} (had {}), syncing={syncing} reconnects={}",
                                self.user.username, r.last_seq, r.reconnects
                            );
                            r.duplicated += 1;
                        } else {
                            if seq != r.last_seq + 1 {
                                eprintln!(
                                    "{}: gap seq {seq} (had {}), syncing={syncing} reconnects={}",
                                    self.user.username, r.last_seq, r.reconnects
                                );
                                r.reordered += 1;
                            }
                            r.delivered += 1;
                            r.last_seq = seq;
                        }
                    }
                    Some("sync_done") => syncing = false,
                    Some("ack") if in_flight.as_deref() == v["reply_to"].as_str() && in_flight.is_some() => {
                        in_flight = None;
                        r.acked += 1;
                        next += 1;
                    }
                    Some("error") if in_flight.as_deref() == v["reply_to"].as_str() && in_flight.is_some() => {
                        // unavailable or rate limited: send the same client_msg_id again at the next tick.
                        in_flight = None;
                        r.retries += 1;
                    }
                    _ => {}
                }
            }
            // The connection ended: an unacked send is retried (same client_msg_id) on the next one.
            if in_flight.is_some() {
                r.retries += 1;
            }
            edge = (edge + 1) % self.edges.len();
        }
        r
    }
}
