//! One WebSocket connection: a writer task draining the outbound queue (and pinging), and the
//! reader loop handling client frames one at a time, so a connection's sends are stored in order.

use crate::hub::{ConnId, Hub, close};
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use chat_authn::{Claims, VerifyError};
use chat_common::ApiError;
use chat_protocol::frames::{ClientFrame, ServerEvent, TypingState};
use futures_util::{SinkExt, StreamExt};
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};
use tracing::Instrument;
use uuid::Uuid;

fn frame(ev: &ServerEvent) -> Utf8Bytes {
    Utf8Bytes::from(ev.to_json())
}

fn error_frame(reply_to: Option<String>, e: &ApiError) -> Utf8Bytes {
    frame(&ServerEvent::Error { reply_to, code: e.code.to_string(), message: e.detail.clone() })
}

fn unix_to_instant(exp: i64) -> tokio::time::Instant {
    let now = chat_authn::now_secs();
    tokio::time::Instant::now() + Duration::from_secs((exp - now).max(0) as u64)
}

fn millis_since(start: Instant) -> i64 {
    start.elapsed().as_millis() as i64
}

/// Runs a connection to its end.
pub async fn run(hub: Arc<Hub>, socket: WebSocket, claims: Claims, resume: bool) {
    let user = claims.sub;
    let reg = match hub.register(user, claims.sid, resume).await {
        Ok(r) => r,
        Err(e) => {
            let mut socket = socket;
            let _ = socket.send(Message::Text(error_frame(None, &e))).await;
            let _ = socket.send(Message::Close(Some(CloseFrame { code: 1011, reason: "try again".into() }))).await;
            return;
        }
    };
    let id = reg.id;
    let signal = reg.signal.clone();
    let (sink, stream) = socket.split();
    let epoch = Instant::now();
    let last_pong = Arc::new(AtomicI64::new(0));
    let hello = frame(&ServerEvent::Hello {
        user_id: user,
        connection_id: Uuid::now_v7(),
        heartbeat_interval_ms: hub.limits.heartbeat.as_millis() as u64,
    });
    let writer = tokio::spawn(write_loop(
        sink,
        reg.queue.clone(),
        hello,
        signal.clone(),
        hub.limits.heartbeat,
        epoch,
        last_pong.clone(),
    ));
    let mut conn = Conn {
        hub: hub.clone(),
        id,
        user,
        queue: reg.queue.clone(),
        expires: unix_to_instant(claims.exp),
        rejections: VecDeque::new(),
        typing_sent: HashMap::new(),
        resume_pending: resume,
        signal: signal.clone(),
    };
    let client_code = conn.read_loop(stream, &signal, epoch, &last_pong).await;
    drop(conn);
    // 1006: the connection ended without a close frame from either side.
    let code = signal.requested().or(client_code).unwrap_or(1006);
    metrics::counter!("ws_disconnects_total", "code" => code.to_string()).increment(1);
    hub.unregister(id);
    // The writer ends once the queue is closed and drained, or on a close. Its writes are bounded by
    // the stall window, so a peer that stopped reading cannot hold it for ever; meanwhile a client
    // that reads again still gets what was queued and the close frame (4009 and the like).
    let mut writer = writer;
    let bound = 2 * hub.limits.heartbeat + Duration::from_secs(5);
    if tokio::time::timeout(bound, &mut writer).await.is_err() {
        writer.abort();
    }
}

/// Frames written per flush at most (bounded so a long queue cannot starve the ping/close checks).
const WRITE_BATCH: usize = 64;

/// Why the writer stopped.
enum WriteEnd {
    /// A close was requested with this code (None: the queue ended without one).
    Close(Option<u16>),
    /// The socket failed, or a write stalled past the window: nothing more can be written.
    Broken,
}

async fn write_loop(
    mut sink: futures_util::stream::SplitSink<WebSocket, Message>,
    queue: Arc<crate::outq::OutQueue>,
    hello: Utf8Bytes,
    signal: Arc<crate::hub::ConnSignal>,
    heartbeat: Duration,
    epoch: Instant,
    last_pong: Arc<AtomicI64>,
) {
    // A peer that stops reading fills the kernel buffers and then every write waits; past the
    // heartbeat window (two intervals) such a connection is closed and its resources freed.
    let stall = 2 * heartbeat;
    let end = 'outer: {
        match tokio::time::timeout(stall, sink.send(Message::Text(hello))).await {
            Ok(Ok(())) => {}
            _ => break 'outer WriteEnd::Broken,
        }
        let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + heartbeat, heartbeat);
        loop {
            if let Some(c) = signal.requested() {
                break WriteEnd::Close(Some(c));
            }
            tokio::select! {
                biased;
                _ = signal.notify.notified() => break WriteEnd::Close(signal.requested()),
                f = queue.pop() => match f {
                    Some(f) => {
                        // Whatever else is already queued goes out in the same write (one syscall for
                        // a burst instead of one per frame).
                        let burst = async {
                            let mut n = 1u64;
                            sink.feed(Message::Text(f)).await?;
                            while n < WRITE_BATCH as u64 {
                                let Some(f) = queue.try_pop() else { break };
                                sink.feed(Message::Text(f)).await?;
                                n += 1;
                            }
                            sink.flush().await.map(|()| n)
                        };
                        match tokio::time::timeout(stall, burst).await {
                            Ok(Ok(n)) => metrics::counter!("ws_frames_out_total").increment(n),
                            Ok(Err(_)) => break WriteEnd::Broken,
                            Err(_) => break WriteEnd::Close(Some(close::SLOW_READER)),
                        }
                    }
                    None => break WriteEnd::Close(signal.requested()),
                },
                _ = ping.tick() => {
                    // Two intervals without a pong (or any frame): the peer is gone.
                    if millis_since(epoch) - last_pong.load(Ordering::Relaxed) > 2 * heartbeat.as_millis() as i64 {
                        break WriteEnd::Close(Some(1001));
                    }
                    match tokio::time::timeout(stall, sink.send(Message::Ping(Default::default()))).await {
                        Ok(Ok(())) => {}
                        Ok(Err(_)) => break WriteEnd::Broken,
                        Err(_) => break WriteEnd::Close(Some(close::SLOW_READER)),
                    }
                }
            }
        }
    };
    // Like a dropped channel receiver: producers see Closed from now on, not a full queue.
    queue.close();
    let code = match end {
        WriteEnd::Broken => {
            signal.close(1006);
            None
        }
        WriteEnd::Close(code) => code,
    };
    let Some(code) = code else { return };
    // The reader (and the hub) learn of a close the writer decided.
    signal.close(code);
    metrics::counter!("ws_closes_total", "code" => code.to_string()).increment(1);
    let reason = match code {
        close::GOING_AWAY_DRAIN => "server draining, reconnect and sync",
        close::TOKEN_EXPIRED => "access token expired",
        close::TOKEN_REVOKED => "session revoked",
        close::ABUSE => "too many rejected frames",
        close::SLOW_READER => "outbound queue overflow, reconnect and sync",
        close::TOO_BIG => "frame too large",
        close::UNSUPPORTED => "binary frames are not supported",
        _ => "",
    };
    // Replies already queued go out before the close (every frame with an `id` gets its reply), within
    // a bounded time; a slow reader's queue is not worth waiting for.
    let finish = async {
        if code != close::SLOW_READER {
            while let Some(f) = queue.try_pop() {
                sink.feed(Message::Text(f)).await?;
            }
        }
        sink.send(Message::Close(Some(CloseFrame { code, reason: reason.into() }))).await
    };
    let _ = tokio::time::timeout(Duration::from_secs(2), finish).await;
    let _ = tokio::time::timeout(Duration::from_secs(1), sink.close()).await;
}

struct Conn {
    hub: Arc<Hub>,
    id: ConnId,
    user: Uuid,
    /// The reader's own handle on the outbound queue: replies keep their order with events.
    queue: Arc<crate::outq::OutQueue>,
    expires: tokio::time::Instant,
    /// Times of recent `rate_limited` rejections (more than 100 within 10 s closes with 4008).
    rejections: VecDeque<Instant>,
    /// Last typing state sent upstream per conversation, and when (throttles chatty clients).
    typing_sent: HashMap<Uuid, (TypingState, Instant)>,
    resume_pending: bool,
    signal: Arc<crate::hub::ConnSignal>,
}

impl Conn {
    async fn read_loop(
        &mut self,
        mut stream: futures_util::stream::SplitStream<WebSocket>,
        signal: &crate::hub::ConnSignal,
        epoch: Instant,
        last_pong: &AtomicI64,
    ) -> Option<u16> {
        // `resume=1` holds live messages until the first `sync`: a client that never sends one is
        // closed like a slow reader once the heartbeat window has passed (the hold is bounded in
        // count by the hub as well).
        let resume_deadline = tokio::time::Instant::now() + 2 * self.hub.limits.heartbeat;
        loop {
            let msg = tokio::select! {
                m = stream.next() => m,
                _ = tokio::time::sleep_until(self.expires) => {
                    signal.close(close::TOKEN_EXPIRED);
                    return None;
                }
                _ = tokio::time::sleep_until(resume_deadline), if self.resume_pending => {
                    signal.close(close::SLOW_READER);
                    return None;
                }
                _ = signal.notify.notified() => return None,
            };
            last_pong.store(millis_since(epoch), Ordering::Relaxed);
            match msg {
                Some(Ok(Message::Text(t))) => {
                    metrics::counter!("ws_frames_in_total").increment(1);
                    self.on_text(t.as_str(), signal).await;
                }
                Some(Ok(Message::Binary(_))) => {
                    signal.close(close::UNSUPPORTED);
                    return None;
                }
                Some(Ok(Message::Close(c))) => return Some(c.map(|c| c.code).unwrap_or(1005)),
                None => return None,
                Some(Ok(_)) => {} // ping/pong: liveness already recorded
                Some(Err(e)) => {
                    // tungstenite reports an oversized frame as a capacity error.
                    let text = e.to_string();
                    if text.contains("Space limit") || text.contains("too long") || text.contains("capacity") {
                        signal.close(close::TOO_BIG);
                    }
                    return None;
                }
            }
            if signal.requested().is_some() {
                return None;
            }
        }
    }

    /// Queues a reply, waiting for room (backpressure on this client's own frames) for at most the
    /// heartbeat window: a client that sends but never reads is closed as a slow reader (4009).
    async fn reply(&self, f: Utf8Bytes) {
        let stall = 2 * self.hub.limits.heartbeat;
        if tokio::time::timeout(stall, self.queue.push(f)).await.is_err() {
            self.signal.close(close::SLOW_READER);
        }
    }

    async fn on_text(&mut self, text: &str, signal: &crate::hub::ConnSignal) {
        let f = match ClientFrame::decode(text) {
            Ok(f) => f,
            Err(e) => {
                self.reply(error_frame(e.reply_to, &ApiError::validation(e.message))).await;
                return;
            }
        };
        match f {
            ClientFrame::Ping { id } => self.reply(frame(&ServerEvent::Pong { reply_to: id })).await,
            ClientFrame::Send { id, conversation_id, body, client_msg_id } => {
                if !self.hub.take_send_token(self.user) {
                    self.reply(error_frame(Some(id), &ApiError::rate_limited(1))).await;
                    let now = Instant::now();
                    self.rejections.push_back(now);
                    while self.rejections.front().is_some_and(|t| now.duration_since(*t) > Duration::from_secs(10)) {
                        self.rejections.pop_front();
                    }
                    if self.rejections.len() > 100 {
                        signal.close(close::ABUSE);
                    }
                    return;
                }
                let start = Instant::now();
                // The root of a message's trace: store call, insert, publish and delivery hang off it.
                let span = tracing::info_span!("ws.send", conversation_id = %conversation_id);
                let r = self
                    .hub
                    .store
                    .send(self.user, conversation_id, &body, client_msg_id.as_deref())
                    .instrument(span)
                    .await;
                match r {
                    Ok(m) => {
                        metrics::histogram!("ws_send_ack_seconds").record(start.elapsed().as_secs_f64());
                        self.reply(frame(&ServerEvent::Ack { reply_to: id, message: Some(m) })).await
                    }
                    Err(e) => self.reply(error_frame(Some(id), &e)).await,
                }
            }
            ClientFrame::Typing { id, conversation_id, state } => {
                if !self.hub.is_member(self.user, conversation_id) {
                    self.reply(error_frame(id, &ApiError::not_found())).await;
                    return;
                }
                self.typing(conversation_id, state).await;
                if let Some(id) = id {
                    self.reply(frame(&ServerEvent::Ack { reply_to: id, message: None })).await;
                }
            }
            ClientFrame::Read { id, conversation_id, seq } => {
                let r = if self.hub.is_member(self.user, conversation_id) {
                    self.hub.store.read(self.user, conversation_id, seq).await
                } else {
                    Err(ApiError::not_found())
                };
                match (r, id) {
                    (Ok(()), Some(id)) => self.reply(frame(&ServerEvent::Ack { reply_to: id, message: None })).await,
                    (Err(e), id) => self.reply(error_frame(id, &e)).await,
                    (Ok(()), None) => {}
                }
            }
            ClientFrame::Auth { id, access_token } => match self.hub.verifier.verify(&access_token).await {
                Ok(c) if c.sub == self.user => {
                    self.expires = unix_to_instant(c.exp);
                    self.hub.set_session(self.id, c.sid);
                    self.reply(frame(&ServerEvent::Ack { reply_to: id, message: None })).await;
                }
                Ok(_) => self.reply(error_frame(Some(id), &ApiError::forbidden("token of another user"))).await,
                Err(VerifyError::Expired) => self.reply(error_frame(Some(id), &ApiError::token_expired())).await,
                Err(e) => self.reply(error_frame(Some(id), &ApiError::unauthorized(e.to_string()))).await,
            },
            ClientFrame::Sync { id, positions } => self.sync(id, positions).await,
        }
    }

    /// Forwards typing upstream, at most one `start` per conversation per 2 s (the receivers' 6 s
    /// lapse covers the gap) and no repeated `stop`.
    async fn typing(&mut self, cid: Uuid, state: TypingState) {
        let now = Instant::now();
        if let Some((last, at)) = self.typing_sent.get(&cid)
            && *last == state
            && (state == TypingState::Stop || now.duration_since(*at) < Duration::from_secs(2))
        {
            return;
        }
        // Alternating start/stop passes the check above: a per-user budget bounds what a flood of
        // changes can publish (the frame is still acknowledged; the indicator lapses on its own).
        if !self.hub.take_typing_token(self.user) {
            metrics::counter!("ws_typing_dropped_total").increment(1);
            return;
        }
        self.typing_sent.insert(cid, (state, now));
        self.hub.publish_typing(cid, self.user, state).await;
    }

    async fn sync(&mut self, id: String, positions: HashMap<Uuid, i64>) {
        let mut truncated = HashMap::new();
        let mut not_found = Vec::new();
        let mut replayed = HashMap::new();
        for (cid, pos) in positions {
            if !self.hub.is_member(self.user, cid) {
                not_found.push(cid);
                continue;
            }
            let page = match self.hub.store.history(self.user, cid, Some(pos), 200).await {
                Ok(p) if p.has_more => self.hub.store.history(self.user, cid, None, 200).await.map(|p| (p, true)),
                Ok(p) => Ok((p, false)),
                Err(e) => Err(e),
            };
            match page {
                Ok((page, trunc)) => {
                    let mut last = pos;
                    for m in page.messages {
                        last = last.max(m.seq);
                        self.reply(frame(&ServerEvent::Message { message: m })).await;
                    }
                    truncated.insert(cid, trunc);
                    replayed.insert(cid, last);
                }
                Err(e) if e.code == "not_found" => not_found.push(cid),
                Err(e) => {
                    self.reply(error_frame(Some(id), &e)).await;
                    return;
                }
            }
        }
        self.reply(frame(&ServerEvent::SyncDone { reply_to: id, truncated, not_found })).await;
        if self.resume_pending {
            self.resume_pending = false;
            self.hub.release_hold(self.id, &replayed);
        }
    }
}
