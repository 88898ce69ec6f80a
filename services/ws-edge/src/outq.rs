//! A connection's outbound frame queue: bounded, single consumer (the writer task). An idle
//! connection holds an empty `VecDeque` (no allocation) instead of the first block of a tokio mpsc
//! channel (about 1 KiB each, which was an eighth of an idle connection's memory).

use axum::extract::ws::Utf8Bytes;
use std::collections::VecDeque;
use std::sync::Mutex;
use tokio::sync::Notify;

pub struct OutQueue {
    state: Mutex<State>,
    /// Wakes the writer: a frame arrived or the queue closed.
    ready: Notify,
    /// Wakes a producer waiting for room.
    room: Notify,
    cap: usize,
}

struct State {
    frames: VecDeque<Utf8Bytes>,
    closed: bool,
}

pub enum Rejected {
    Full(Utf8Bytes),
    Closed,
}

impl OutQueue {
    pub fn new(cap: usize) -> Self {
        OutQueue {
            state: Mutex::new(State { frames: VecDeque::new(), closed: false }),
            ready: Notify::new(),
            room: Notify::new(),
            cap: cap.max(1),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues a frame without waiting.
    pub fn try_push(&self, frame: Utf8Bytes) -> Result<(), Rejected> {
        self.try_push_below(frame, usize::MAX)
    }

    /// Queues a frame without waiting unless `limit` (or the capacity) frames already wait: one lock
    /// for the check and the push.
    pub fn try_push_below(&self, frame: Utf8Bytes, limit: usize) -> Result<(), Rejected> {
        let mut s = self.lock();
        if s.closed {
            return Err(Rejected::Closed);
        }
        if s.frames.len() >= self.cap.min(limit) {
            return Err(Rejected::Full(frame));
        }
        s.frames.push_back(frame);
        drop(s);
        self.ready.notify_one();
        Ok(())
    }

    /// Queues a frame, waiting for room (replies to the client's own frames: backpressure on its
    /// reader instead of a close). False when the queue is closed.
    pub async fn push(&self, frame: Utf8Bytes) -> bool {
        let mut frame = frame;
        loop {
            let room = self.room.notified();
            match self.try_push(frame) {
                Ok(()) => return true,
                Err(Rejected::Closed) => return false,
                Err(Rejected::Full(f)) => frame = f,
            }
            room.await;
        }
    }

    /// The most frames the queue holds.
    pub fn capacity(&self) -> usize {
        self.cap
    }

    /// The queue length from which inessential frames (typing, presence) are dropped: more than
    /// three quarters full.
    pub fn inessential_limit(&self) -> usize {
        self.cap * 3 / 4 + 1
    }

    /// The next frame if one is queued (benchmarks drain with it).
    pub fn try_pop(&self) -> Option<Utf8Bytes> {
        let f = self.lock().frames.pop_front();
        if f.is_some() {
            self.room.notify_one();
        }
        f
    }

    /// The next frame; None once closed and empty.
    pub async fn pop(&self) -> Option<Utf8Bytes> {
        loop {
            let ready = self.ready.notified();
            {
                let mut s = self.lock();
                if let Some(f) = s.frames.pop_front() {
                    // Give back what a burst grew, so idle connections stay small.
                    if s.frames.is_empty() && s.frames.capacity() > 16 {
                        s.frames = VecDeque::new();
                    }
                    drop(s);
                    self.room.notify_one();
                    return Some(f);
                }
                if s.closed {
                    return None;
                }
            }
            ready.await;
        }
    }

    /// No more frames are accepted; the writer sees the end after the queued ones.
    pub fn close(&self) {
        self.lock().closed = true;
        self.ready.notify_one();
        self.room.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn bounded_in_order_and_closes() {
        let q = std::sync::Arc::new(OutQueue::new(2));
        assert!(q.try_push("a".into()).is_ok());
        assert!(q.try_push("b".into()).is_ok());
        assert!(matches!(q.try_push("c".into()), Err(Rejected::Full(_))));
        let q2 = q.clone();
        let waiter = tokio::spawn(async move { q2.push("c".into()).await });
        assert_eq!(q.pop().await.as_deref(), Some("a"));
        assert!(waiter.await.unwrap(), "room made by the pop lets the waiting push in");
        assert_eq!(q.pop().await.as_deref(), Some("b"));
        assert_eq!(q.pop().await.as_deref(), Some("c"));
        q.close();
        assert!(matches!(q.try_push("d".into()), Err(Rejected::Closed)));
        assert_eq!(q.pop().await, None);
    }
}

#[cfg(test)]
mod stress {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    /// A writer shaped like the connection's (select over a signal, the queue and a ticker) never
    /// leaves a pushed frame waiting.
    #[test]
    fn no_lost_wakeups() {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        rt.block_on(async {
            for round in 0..2000u32 {
                let q = Arc::new(OutQueue::new(64));
                let signal = Arc::new(tokio::sync::Notify::new());
                let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
                let (wq, ws) = (q.clone(), signal.clone());
                let writer = tokio::spawn(async move {
                    let mut tick = tokio::time::interval(Duration::from_micros(50 + u64::from(round % 7) * 30));
                    loop {
                        tokio::select! {
                            biased;
                            _ = ws.notified() => break,
                            f = wq.pop() => match f {
                                Some(f) => {
                                    tokio::task::yield_now().await;
                                    let _ = tx.send(f);
                                    while let Some(f) = wq.try_pop() { let _ = tx.send(f); }
                                }
                                None => break,
                            },
                            _ = tick.tick() => tokio::task::yield_now().await,
                        }
                    }
                });
                for i in 0..3 {
                    if (round + i) % 3 == 0 {
                        tokio::task::yield_now().await;
                    }
                    assert!(q.try_push_below(format!("{round}-{i}").into(), usize::MAX).is_ok());
                    let got = tokio::time::timeout(Duration::from_secs(2), rx.recv()).await;
                    assert!(matches!(got, Ok(Some(_))), "round {round} frame {i} never written");
                }
                signal.notify_one();
                writer.await.unwrap();
            }
        });
    }
}
