//! In-process bus for the all-in-one binary: a topic map of subscriber channels.

use crate::{BusError, Delivery};
use bytes::Bytes;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc;

type Sink = mpsc::Sender<Delivery>;

#[derive(Default)]
struct Inner {
    topics: Mutex<HashMap<Arc<str>, HashMap<u64, Sink>>>,
    next_id: AtomicU64,
}

#[derive(Clone, Default)]
pub struct MemoryBus {
    inner: Arc<Inner>,
}

impl MemoryBus {
    pub(crate) async fn publish(&self, topic: &str, payload: Bytes) -> Result<(), BusError> {
        // Copy the receivers out so no lock is held across the sends.
        let (topic, sinks): (Arc<str>, Vec<Sink>) = {
            let map = self.inner.topics.lock().expect("bus lock");
            match map.get_key_value(topic) {
                Some((k, subs)) => (k.clone(), subs.values().cloned().collect()),
                None => return Ok(()),
            }
        };
        for sink in sinks {
            // A closed receiver is a subscriber that went away; not the publisher's problem.
            let _ = sink.send(Delivery::Message { topic: topic.clone(), payload: payload.clone() }).await;
        }
        Ok(())
    }

    pub(crate) fn subscriber(&self, tx: Sink) -> MemorySubscriptions {
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        MemorySubscriptions {
            state: Arc::new(SubState { bus: self.clone(), id, tx, topics: Mutex::new(HashSet::new()) }),
        }
    }
}

struct SubState {
    bus: MemoryBus,
    id: u64,
    tx: Sink,
    topics: Mutex<HashSet<Arc<str>>>,
}

impl Drop for SubState {
    fn drop(&mut self) {
        let mut map = self.bus.inner.topics.lock().expect("bus lock");
        for t in self.topics.get_mut().expect("bus lock").drain() {
            if let Some(subs) = map.get_mut(&t) {
                subs.remove(&self.id);
                if subs.is_empty() {
                    map.remove(&t);
                }
            }
        }
    }
}

#[derive(Clone)]
pub struct MemorySubscriptions {
    state: Arc<SubState>,
}

impl MemorySubscriptions {
    pub(crate) fn subscribe(&self, topics: Vec<String>) {
        let s = &self.state;
        let mut map = s.bus.inner.topics.lock().expect("bus lock");
        let mut mine = s.topics.lock().expect("bus lock");
        for t in topics {
            let t: Arc<str> = Arc::from(t);
            map.entry(t.clone()).or_default().insert(s.id, s.tx.clone());
            mine.insert(t);
        }
    }

    pub(crate) fn unsubscribe(&self, topics: Vec<String>) {
        let s = &self.state;
        let mut map = s.bus.inner.topics.lock().expect("bus lock");
        let mut mine = s.topics.lock().expect("bus lock");
        for t in topics {
            if let Some(subs) = map.get_mut(t.as_str()) {
                subs.remove(&s.id);
                if subs.is_empty() {
                    map.remove(t.as_str());
                }
            }
            mine.remove(t.as_str());
        }
    }
}
