//! Results: a table for people and one JSON line for scripts.

use hdrhistogram::Histogram;
use serde_json::{Map, Value, json};

pub struct Report {
    pub scenario: String,
    pub fields: Vec<(String, Value)>,
}

impl Report {
    pub fn new(scenario: &str) -> Report {
        Report { scenario: scenario.to_string(), fields: Vec::new() }
    }

    pub fn add(&mut self, k: &str, v: impl Into<Value>) {
        self.fields.push((k.to_string(), v.into()));
    }

    /// Latency percentiles (recorded in microseconds) as milliseconds.
    pub fn latency(&mut self, prefix: &str, h: &Histogram<u64>) {
        for (name, q) in [("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("p99.9", 0.999)] {
            self.add(&format!("{prefix}_{name}_ms"), ms(h.value_at_quantile(q)));
        }
        self.add(&format!("{prefix}_max_ms"), ms(h.max()));
    }

    pub fn get(&self, k: &str) -> Option<&Value> {
        self.fields.iter().find(|(f, _)| f == k).map(|(_, v)| v)
    }

    pub fn print(&self) {
        println!("scenario: {}", self.scenario);
        let w = self.fields.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
        for (k, v) in &self.fields {
            println!("  {k:<w$}  {v}");
        }
        let mut m = Map::new();
        m.insert("scenario".into(), json!(self.scenario));
        for (k, v) in &self.fields {
            m.insert(k.clone(), v.clone());
        }
        println!("{}", Value::Object(m));
    }
}

fn ms(us: u64) -> f64 {
    (us as f64 / 10.0).round() / 100.0
}

pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 120_000_000, 3).expect("histogram bounds")
}
