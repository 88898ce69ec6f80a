//! `chat-bench`: a load generator that speaks only the public contract to the all-in-one
//! binary or to the microservices behind one or several ws-edge URLs.
//!
//! Scenarios: `idle`, `dm`, `fanout`, `reconnect-storm`; `--find-max` raises the rate of `dm` or
//! `fanout` until p99 passes the SLO or anything is lost. Setup (users, conversations, connections)
//! happens before the measured window. Output: a table for people, then one JSON line.

mod client;
mod report;
mod scenarios;

use std::process::ExitCode;

#[derive(Debug, Clone)]
pub struct Opts {
    pub scenario: String,
    /// Base URL of the REST API (the gateway, or the all-in-one binary).
    pub api: String,
    /// WebSocket base URLs; connections are spread over them.
    pub ws: Vec<String>,
    pub connections: usize,
    pub groups: usize,
    pub members: usize,
    pub pairs: usize,
    /// Aggregate sends per second (open loop).
    pub rate: f64,
    pub duration_secs: f64,
    pub pids: Vec<u32>,
    pub find_max: bool,
    pub slo_ms: f64,
    /// Loopback source addresses to spread connections over (beyond 64k ports per address).
    pub source_addrs: usize,
    pub users: usize,
}

fn parse() -> Result<Opts, String> {
    let mut args = std::env::args().skip(1);
    let scenario = args.next().ok_or("usage: chat-bench <idle|dm|fanout|reconnect-storm> [options]; see --help")?;
    if scenario == "--help" || scenario == "-h" {
        return Err(HELP.to_string());
    }
    let mut o = Opts {
        scenario,
        api: "http://127.0.0.1:8080".into(),
        ws: vec![],
        connections: 1000,
        groups: 10,
        members: 10,
        pairs: 50,
        rate: 1000.0,
        duration_secs: 10.0,
        pids: vec![],
        find_max: false,
        slo_ms: 50.0,
        source_addrs: 1,
        users: 100,
    };
    while let Some(a) = args.next() {
        let mut val = || args.next().ok_or(format!("{a} needs a value"));
        let num = |v: String| v.parse::<f64>().map_err(|e| format!("{v}: {e}"));
        match a.as_str() {
            "--api" => o.api = val()?,
            "--ws" => o.ws = val()?.split(',').map(str::to_string).collect(),
            "--connections" | "-n" => o.connections = num(val()?)? as usize,
            "--groups" => o.groups = num(val()?)? as usize,
            "--members" => o.members = num(val()?)? as usize,
            "--pairs" => o.pairs = num(val()?)? as usize,
            "--rate" => o.rate = num(val()?)?,
            "--duration" => o.duration_secs = num(val()?)?,
            "--pids" => {
                o.pids = val()?.split(',').filter_map(|p| p.trim().parse().ok()).collect();
            }
            "--find-max" => o.find_max = true,
            "--slo-ms" => o.slo_ms = num(val()?)?,
            "--source-addrs" => o.source_addrs = num(val()?)?.max(1.0) as usize,
            "--users" => o.users = num(val()?)?.max(1.0) as usize,
            other => return Err(format!("unknown option {other}\n{HELP}")),
        }
    }
    if o.ws.is_empty() {
        o.ws = vec![o.api.replacen("http", "ws", 1)];
    }
    Ok(o)
}

const HELP: &str = "chat-bench <scenario> [options]
scenarios:
  idle             hold --connections authenticated idle connections; connect rate, RSS per connection (--pids)
  dm               --pairs two-person conversations, sends at --rate/s for --duration s
  fanout           --groups groups of --members members, sends at --rate/s for --duration s
  reconnect-storm  drop --connections clients and reconnect them at once with resume=1 + sync
options:
  --api URL  --ws URL[,URL...]  --rate R  --duration S  --pids PID[,PID]  --find-max  --slo-ms MS
  --source-addrs K (use 127.0.0.1..127.0.0.K)  --users U (idle/reconnect: distinct users)
The target must allow bulk registration from one address: run it with CHAT_REGISTER_MAX_PER_IP=1000000,
CHAT_CREATE_PER_MIN=1000000 CHAT_CREATE_BURST=1000000 (conversation creations per user), and a generous
CHAT_SEND_RATE_PER_SEC/CHAT_SEND_BURST for rates above 20/s per user (REST and WebSocket share it).";

#[tokio::main]
async fn main() -> ExitCode {
    let opts = match parse() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let r = match opts.scenario.as_str() {
        "idle" => scenarios::idle(&opts).await,
        "dm" | "fanout" if opts.find_max => scenarios::find_max(&opts).await,
        "dm" => scenarios::traffic(&opts, false).await,
        "fanout" => scenarios::traffic(&opts, true).await,
        "reconnect-storm" => scenarios::reconnect_storm(&opts).await,
        other => Err(format!("unknown scenario {other}\n{HELP}")),
    };
    match r {
        Ok(report) => {
            report.print();
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("chat-bench: {e}");
            ExitCode::FAILURE
        }
    }
}
