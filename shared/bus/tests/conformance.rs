//! One conformance suite for every bus backend: in-process, Redis and NATS (real servers: the shared
//! ones on their standard ports, and private ones on free ports for the restart cases).

use bytes::Bytes;
use chat_bus::{Bus, Delivery};
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use tokio::sync::mpsc;

const WAIT: Duration = Duration::from_secs(10);

fn topic(name: &str) -> String {
    format!("test.{}.{name}", uuid::Uuid::new_v4().simple())
}

async fn reachable(what: &str, url: &str, how: &str) {
    let addr = url.split("://").nth(1).unwrap_or(url).trim_end_matches('/');
    if tokio::net::TcpStream::connect(addr).await.is_err() {
        panic!("{what} is not reachable at {addr}. Start it with: {how} (or run scripts/test.sh, which starts it)");
    }
}

async fn bus(kind: &str) -> Bus {
    let url = match kind {
        "memory" => "memory://".to_string(),
        "redis" => {
            let url = std::env::var("CHAT_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
            reachable("Redis", &url, "redis-server --daemonize yes --port 6379 --save '' --appendonly no").await;
            url
        }
        "nats" => {
            let url = std::env::var("CHAT_TEST_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into());
            reachable("NATS", &url, "nats-server -a 127.0.0.1 -p 4222 -js").await;
            url
        }
        _ => unreachable!(),
    };
    Bus::connect(Some(&url), "").await.expect("bus connects")
}

async fn next_message(rx: &mut mpsc::Receiver<Delivery>) -> (String, Bytes) {
    loop {
        match tokio::time::timeout(WAIT, rx.recv()).await.expect("a delivery in time").expect("stream open") {
            Delivery::Message { topic, payload } => return (topic.to_string(), payload),
            Delivery::Resubscribed => continue,
        }
    }
}

async fn nothing_within(rx: &mut mpsc::Receiver<Delivery>, d: Duration) {
    if let Ok(Some(Delivery::Message { topic, .. })) = tokio::time::timeout(d, rx.recv()).await {
        panic!("unexpected delivery on {topic}");
    }
}

async fn delivery_to_every_subscriber(kind: &str) {
    let bus = bus(kind).await;
    let t = topic("fanout");
    let (s1, mut r1) = bus.subscriber(64);
    let (s2, mut r2) = bus.subscriber(64);
    s1.subscribe(vec![t.clone()]).await;
    s2.subscribe(vec![t.clone()]).await;
    for i in 0..3u8 {
        bus.publish(&t, Bytes::from(vec![i])).await.unwrap();
    }
    for r in [&mut r1, &mut r2] {
        for i in 0..3u8 {
            let (topic, p) = next_message(r).await;
            assert_eq!((topic.as_str(), &p[..]), (t.as_str(), &[i][..]));
        }
    }
}

async fn no_delivery_after_unsubscribe(kind: &str) {
    let bus = bus(kind).await;
    let (a, b) = (topic("a"), topic("b"));
    let (subs, mut rx) = bus.subscriber(64);
    subs.subscribe(vec![a.clone(), b.clone()]).await;
    subs.unsubscribe(vec![a.clone()]);
    // A subscribe round trip after the unsubscribe makes sure the broker applied it.
    subs.subscribe(vec![topic("barrier")]).await;
    bus.publish(&a, Bytes::from_static(b"gone")).await.unwrap();
    bus.publish(&b, Bytes::from_static(b"kept")).await.unwrap();
    let (t, p) = next_message(&mut rx).await;
    assert_eq!((t, &p[..]), (b, &b"kept"[..]));
    nothing_within(&mut rx, Duration::from_millis(300)).await;
}

async fn per_topic_order(kind: &str) {
    let bus = bus(kind).await;
    let t = topic("order");
    let (subs, mut rx) = bus.subscriber(4096);
    subs.subscribe(vec![t.clone()]).await;
    for i in 0..1000u32 {
        bus.publish(&t, Bytes::from(i.to_be_bytes().to_vec())).await.unwrap();
    }
    for i in 0..1000u32 {
        let (_, p) = next_message(&mut rx).await;
        assert_eq!(u32::from_be_bytes(p[..4].try_into().unwrap()), i);
    }
}

async fn ten_thousand_topics_on_one_connection(kind: &str) {
    let bus = bus(kind).await;
    let prefix = topic("many");
    let topics: Vec<String> = (0..10_000).map(|i| format!("{prefix}.{i}")).collect();
    let (subs, mut rx) = bus.subscriber(1024);
    subs.subscribe(topics.clone()).await;
    for i in (0..10_000).step_by(997) {
        bus.publish(&topics[i], Bytes::from(i.to_string())).await.unwrap();
        let (t, p) = next_message(&mut rx).await;
        assert_eq!((t.as_str(), std::str::from_utf8(&p).unwrap()), (topics[i].as_str(), i.to_string().as_str()));
    }
}

async fn large_payload(kind: &str) {
    let bus = bus(kind).await;
    let t = topic("large");
    let (subs, mut rx) = bus.subscriber(8);
    subs.subscribe(vec![t.clone()]).await;
    // Larger than the largest event: a 1000-member conversation event is about 120 KiB.
    let payload: Vec<u8> = (0..512 * 1024).map(|i| (i % 251) as u8).collect();
    bus.publish(&t, Bytes::from(payload.clone())).await.unwrap();
    assert_eq!(next_message(&mut rx).await.1, payload);
}

macro_rules! conformance {
    ($kind:ident) => {
        mod $kind {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn delivery_to_every_subscriber() {
                super::delivery_to_every_subscriber(stringify!($kind)).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn no_delivery_after_unsubscribe() {
                super::no_delivery_after_unsubscribe(stringify!($kind)).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn per_topic_order() {
                super::per_topic_order(stringify!($kind)).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn ten_thousand_topics_on_one_connection() {
                super::ten_thousand_topics_on_one_connection(stringify!($kind)).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn large_payload() {
                super::large_payload(stringify!($kind)).await
            }
        }
    };
}

conformance!(memory);
conformance!(redis);
conformance!(nats);

/// A private broker process on a free port.
struct Server {
    kind: &'static str,
    port: u16,
    dir: std::path::PathBuf,
    child: Option<Child>,
}

impl Server {
    fn start(kind: &'static str) -> Server {
        // Below the ephemeral range, so no outgoing connection can take the port before the server binds it.
        let port = (0..1000)
            .map(|_| 20_000 + (uuid::Uuid::new_v4().as_u128() % 12_000) as u16)
            .find(|p| std::net::TcpListener::bind(("127.0.0.1", *p)).is_ok())
            .expect("a free port in 20000..32000");
        let dir = std::env::temp_dir().join(format!("bus-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut s = Server { kind, port, dir, child: None };
        s.restart();
        s
    }

    fn url(&self) -> String {
        format!("{}://127.0.0.1:{}", self.kind, self.port)
    }

    fn restart(&mut self) {
        let port = self.port.to_string();
        let child = match self.kind {
            "redis" => Command::new("redis-server")
                .args(["--port", &port, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
                .stdout(Stdio::null())
                .spawn()
                .expect("redis-server runnable (apt-get install redis-server)"),
            _ => Command::new(if std::path::Path::new("/usr/sbin/nats-server").exists() {
                "/usr/sbin/nats-server"
            } else {
                "nats-server"
            })
            .args(["-a", "127.0.0.1", "-p", &port, "-sd", self.dir.to_str().unwrap()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nats-server runnable (apt-get install nats-server)"),
        };
        self.child = Some(child);
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("{} did not start", self.kind);
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Across a broker restart: publishing fails while it is down (so the outbox keeps the event), the
/// stream reports `Resubscribed`, and every subscription works again.
async fn survives_restart(kind: &'static str) {
    let mut server = Server::start(kind);
    let bus = Bus::connect(Some(&server.url()), "").await.unwrap();
    let t = topic("restart");
    let (subs, mut rx) = bus.subscriber(64);
    subs.subscribe(vec![t.clone()]).await;
    bus.publish(&t, Bytes::from_static(b"before")).await.unwrap();
    assert_eq!(&next_message(&mut rx).await.1[..], b"before");
    server.stop();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(bus.publish(&t, Bytes::from_static(b"lost")).await.is_err(), "publish while down is an error");
    server.restart();
    let resub = tokio::time::timeout(Duration::from_secs(15), async {
        loop {
            if let Some(Delivery::Resubscribed) = rx.recv().await {
                return;
            }
        }
    })
    .await;
    assert!(resub.is_ok(), "Resubscribed reported after the restart");
    let mut delivered = false;
    'outer: for _ in 0..50 {
        if bus.publish(&t, Bytes::from_static(b"after")).await.is_ok() {
            // NATS may still deliver the publish that reported an error (the client buffered it
            // across the reconnect): at-least-once, which consumers handle (edges drop seq duplicates).
            while let Ok(Some(d)) = tokio::time::timeout(Duration::from_millis(500), rx.recv()).await {
                if let Delivery::Message { payload, .. } = d {
                    assert!(&payload[..] == b"after" || &payload[..] == b"lost");
                    if &payload[..] == b"after" {
                        delivered = true;
                        break 'outer;
                    }
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(delivered, "the subscription came back");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_survives_restart() {
    survives_restart("redis").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_survives_restart() {
    survives_restart("nats").await
}

fn connections_received(info: &str) -> i64 {
    info.lines()
        .find_map(|l| l.strip_prefix("total_connections_received:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("INFO stats has total_connections_received")
}

/// Audit finding 22: when SUBSCRIBE was refused the subscriber reconnected in a tight loop (9,660
/// connections in 2 s). A broker user without channel permissions refuses every SUBSCRIBE.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_subscribe_backs_off() {
    let server = Server::start("redis");
    let admin = ::redis::Client::open(server.url()).unwrap();
    let mut c = admin.get_multiplexed_async_connection().await.unwrap();
    ::redis::cmd("ACL")
        .arg(&["SETUSER", "nochannels", "on", ">pw", "~*", "resetchannels", "+@all"])
        .query_async::<()>(&mut c)
        .await
        .unwrap();
    let info = || async {
        let mut c = admin.get_multiplexed_async_connection().await.unwrap();
        ::redis::cmd("INFO").arg("stats").query_async::<String>(&mut c).await.unwrap()
    };
    let before = connections_received(&info().await);
    let bus = Bus::connect(Some(&format!("redis://nochannels:pw@127.0.0.1:{}", server.port)), "").await.unwrap();
    let (subs, _rx) = bus.subscriber(16);
    drop(subs.subscribe(vec![topic("refused")]));
    tokio::time::sleep(Duration::from_secs(2)).await;
    let made = connections_received(&info().await) - before - 2;
    assert!(made <= 20, "{made} connections in 2 s while SUBSCRIBE is refused");
    drop(subs);
}
