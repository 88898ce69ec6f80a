//! Presence state in Redis, shared by any number of presence replicas. Every change is one Lua
//! script, so each online/offline transition is decided (and returned for publishing) exactly once
//! however many edges, devices and replicas are involved.
//!
//! Keys, under a configurable prefix `P`:
//! `P:edge:<edge>:users` (set of users on the edge), `P:edge:<edge>:alive` (expires when the edge
//! stops reporting), `P:user:<uid>:edges` (set of edges holding the user), `P:lastseen` (hash
//! uid → ms), `P:edges` (known edges, for the sweeper), `P:pending` (sorted set: users whose last
//! connection closed, by time; announced offline after the grace period), `P:online` (count of
//! users online, for the `presence_online_users` gauge).

use crate::state::Transition;
use chat_protocol::{PresenceEntry, PresenceStatus, Timestamp};
use redis::aio::ConnectionManager;
use std::time::Duration;
use uuid::Uuid;

const REPORT: &str = r#"
local p, edge, now, ttl = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])
local n_on, n_off, has_full = tonumber(ARGV[5]), tonumber(ARGV[6]), ARGV[7] == '1'
local eu = p .. ':edge:' .. edge .. ':users'
local out = {}
local function add(u)
  if redis.call('SADD', eu, u) == 1 then
    local ue = p .. ':user:' .. u .. ':edges'
    redis.call('SADD', ue, edge)
    if redis.call('SCARD', ue) == 1 then
      redis.call('HDEL', p .. ':lastseen', u)
      -- Back within the grace period: the offline was never announced, so neither is this.
      if redis.call('ZREM', p .. ':pending', u) == 0 then
        table.insert(out, '+' .. u)
      end
      redis.call('INCR', p .. ':online')
    end
  end
end
local function remove(u)
  if redis.call('SREM', eu, u) == 1 then
    local ue = p .. ':user:' .. u .. ':edges'
    redis.call('SREM', ue, edge)
    if redis.call('SCARD', ue) == 0 then
      redis.call('HSET', p .. ':lastseen', u, now)
      redis.call('ZADD', p .. ':pending', now, u)
      redis.call('DECR', p .. ':online')
    end
  end
end
local i = 8
for _ = 1, n_on do add(ARGV[i]); i = i + 1 end
for _ = 1, n_off do remove(ARGV[i]); i = i + 1 end
if has_full then
  local want = {}
  for j = i, #ARGV do want[ARGV[j]] = true end
  for _, u in ipairs(redis.call('SMEMBERS', eu)) do
    if not want[u] then remove(u) end
  end
  for u, _ in pairs(want) do add(u) end
end
redis.call('SET', p .. ':edge:' .. edge .. ':alive', '1', 'PX', ttl)
redis.call('SADD', p .. ':edges', edge)
return out
"#;

const SWEEP: &str = r#"
local p, now, grace = ARGV[1], ARGV[2], tonumber(ARGV[3])
local out = {}
for _, u in ipairs(redis.call('ZRANGEBYSCORE', p .. ':pending', '-inf', tonumber(now) - grace)) do
  redis.call('ZREM', p .. ':pending', u)
  if redis.call('SCARD', p .. ':user:' .. u .. ':edges') == 0 then
    table.insert(out, '-' .. u)
  end
end
for _, edge in ipairs(redis.call('SMEMBERS', p .. ':edges')) do
  if redis.call('EXISTS', p .. ':edge:' .. edge .. ':alive') == 0 then
    local eu = p .. ':edge:' .. edge .. ':users'
    for _, u in ipairs(redis.call('SMEMBERS', eu)) do
      local ue = p .. ':user:' .. u .. ':edges'
      redis.call('SREM', ue, edge)
      if redis.call('SCARD', ue) == 0 then
        redis.call('HSET', p .. ':lastseen', u, now)
        redis.call('ZREM', p .. ':pending', u)
        redis.call('DECR', p .. ':online')
        table.insert(out, '-' .. u)
      end
    end
    redis.call('DEL', eu)
    redis.call('SREM', p .. ':edges', edge)
  end
end
return out
"#;

#[derive(Clone)]
pub struct RedisPresence {
    conn: ConnectionManager,
    prefix: String,
    report: redis::Script,
    sweep: redis::Script,
}

fn parse(out: Vec<String>, at: Timestamp) -> Vec<Transition> {
    out.into_iter()
        .filter_map(|s| {
            let (sign, id) = s.split_at(1);
            Some(Transition { user: Uuid::parse_str(id).ok()?, online: sign == "+", at })
        })
        .collect()
}

impl RedisPresence {
    pub async fn connect(url: &str, prefix: &str) -> Result<Self, redis::RedisError> {
        let client = redis::Client::open(url)?;
        let conn = ConnectionManager::new(client).await?;
        Ok(RedisPresence {
            conn,
            prefix: prefix.to_string(),
            report: redis::Script::new(REPORT),
            sweep: redis::Script::new(SWEEP),
        })
    }

    pub async fn report(
        &self,
        edge: &str,
        online: &[Uuid],
        offline: &[Uuid],
        full: Option<&[Uuid]>,
        ttl: Duration,
    ) -> Result<Vec<Transition>, redis::RedisError> {
        let now = Timestamp::now();
        let mut inv = self.report.prepare_invoke();
        inv.arg(&self.prefix)
            .arg(edge)
            .arg(now.0)
            .arg(ttl.as_millis() as u64)
            .arg(online.len())
            .arg(offline.len())
            .arg(if full.is_some() { "1" } else { "0" });
        for u in online.iter().chain(offline) {
            inv.arg(u.to_string());
        }
        for u in full.unwrap_or(&[]) {
            inv.arg(u.to_string());
        }
        let out: Vec<String> = inv.invoke_async(&mut self.conn.clone()).await?;
        Ok(parse(out, now))
    }

    pub async fn expire_edges(&self) -> Result<Vec<Transition>, redis::RedisError> {
        let now = Timestamp::now();
        let grace = crate::state::GRACE.as_millis() as u64;
        let out: Vec<String> =
            self.sweep.arg(&self.prefix).arg(now.0).arg(grace).invoke_async(&mut self.conn.clone()).await?;
        Ok(parse(out, now))
    }

    pub async fn query(&self, users: &[Uuid]) -> Result<Vec<PresenceEntry>, redis::RedisError> {
        let mut pipe = redis::pipe();
        for u in users {
            pipe.cmd("SCARD").arg(format!("{}:user:{u}:edges", self.prefix));
            pipe.cmd("HGET").arg(format!("{}:lastseen", self.prefix)).arg(u.to_string());
        }
        let res: Vec<redis::Value> = pipe.query_async(&mut self.conn.clone()).await?;
        let mut out = Vec::with_capacity(users.len());
        for (i, u) in users.iter().enumerate() {
            let online = matches!(res.get(2 * i), Some(redis::Value::Int(n)) if *n > 0);
            let last_seen = match res.get(2 * i + 1) {
                Some(redis::Value::BulkString(b)) => {
                    std::str::from_utf8(b).ok().and_then(|s| s.parse().ok()).map(Timestamp)
                }
                _ => None,
            };
            out.push(PresenceEntry {
                user_id: *u,
                status: if online { PresenceStatus::Online } else { PresenceStatus::Offline },
                last_seen_at: if online { None } else { last_seen },
            });
        }
        Ok(out)
    }

    /// Users online on any edge (`P:online`, kept by the scripts).
    pub async fn online_count(&self) -> Result<i64, redis::RedisError> {
        let n: Option<i64> =
            redis::cmd("GET").arg(format!("{}:online", self.prefix)).query_async(&mut self.conn.clone()).await?;
        Ok(n.unwrap_or(0).max(0))
    }

    pub async fn ping(&self) -> Result<(), String> {
        redis::cmd("PING").query_async::<String>(&mut self.conn.clone()).await.map(|_| ()).map_err(|e| e.to_string())
    }
}
