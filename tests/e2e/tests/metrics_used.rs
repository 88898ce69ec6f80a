//! Every metric an alert, the Grafana dashboard or an autoscaler reads is one the code emits: a
//! renamed metric must not leave an alert that can never fire or an HPA that cannot scale.

use chat_e2e::*;
use std::collections::BTreeSet;

/// Names passed to `counter!`, `gauge!` and `histogram!` anywhere in the workspace's code.
fn emitted() -> (BTreeSet<String>, BTreeSet<String>) {
    let mut all = BTreeSet::new();
    let mut histograms = BTreeSet::new();
    let mut stack =
        vec![std::path::PathBuf::from(repo_path("shared")), std::path::PathBuf::from(repo_path("services"))];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            for kind in ["counter!(", "gauge!(", "histogram!("] {
                for (i, _) in text.match_indices(kind) {
                    let rest = text[i + kind.len()..].trim_start();
                    let Some(rest) = rest.strip_prefix('"') else { continue };
                    let name: String = rest.chars().take_while(|c| *c != '"').collect();
                    if kind == "histogram!(" {
                        histograms.insert(name.clone());
                    }
                    all.insert(name);
                }
            }
        }
    }
    (all, histograms)
}

/// Metric names in a PromQL expression: identifiers that are not functions, keywords, label names
/// (inside `{}` or a `by (...)` list) or durations.
fn metrics_in(expr: &str) -> BTreeSet<String> {
    const WORDS: &[&str] =
        &["by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless", "offset", "bool"];
    let mut cleaned = String::new();
    let mut depth_brace = 0;
    let mut depth_bracket = 0;
    for c in expr.chars() {
        match c {
            '{' => depth_brace += 1,
            '}' => depth_brace -= 1,
            '[' => depth_bracket += 1,
            ']' => depth_bracket -= 1,
            _ if depth_brace > 0 || depth_bracket > 0 => {}
            _ => cleaned.push(c),
        }
    }
    // Drop the label lists of `by (...)` / `without (...)`.
    let mut text = cleaned;
    for kw in ["by (", "without ("] {
        while let Some(i) = text.find(kw) {
            let end = text[i..].find(')').map(|j| i + j + 1).unwrap_or(text.len());
            text.replace_range(i..end, " ");
        }
    }
    let mut out = BTreeSet::new();
    let chars: Vec<char> = text.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        if chars[i].is_ascii_alphabetic() || chars[i] == '_' {
            let start = i;
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '_' || chars[i] == ':') {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            let next = chars[i..].iter().find(|c| !c.is_whitespace());
            let preceded_by_digit = start > 0 && chars[start - 1].is_ascii_digit();
            if next != Some(&'(') && !WORDS.contains(&word.as_str()) && !preceded_by_digit {
                out.insert(word);
            }
        } else {
            i += 1;
        }
    }
    out
}

#[test]
fn every_metric_alerts_dashboards_and_autoscalers_read_is_emitted() {
    let (emitted, histograms) = emitted();
    assert!(emitted.len() > 20, "the scan found the code's metrics: {emitted:?}");
    let known = |name: &str| {
        if emitted.contains(name) || name == "up" {
            return true;
        }
        ["_bucket", "_sum", "_count"].iter().any(|s| name.strip_suffix(s).is_some_and(|b| histograms.contains(b)))
    };
    let mut uses: Vec<(String, String)> = Vec::new();
    let alerts = std::fs::read_to_string(repo_path("deploy/prometheus/alerts.yml")).unwrap();
    for line in alerts.lines().filter_map(|l| l.trim().strip_prefix("expr:")) {
        uses.extend(metrics_in(line).into_iter().map(|m| (m, "deploy/prometheus/alerts.yml".to_string())));
    }
    let dash: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(repo_path("deploy/grafana/dashboards/chat.json")).unwrap())
            .unwrap();
    for panel in dash["panels"].as_array().unwrap() {
        for t in panel["targets"].as_array().unwrap() {
            uses.extend(
                metrics_in(t["expr"].as_str().unwrap()).into_iter().map(|m| (m, "the Grafana dashboard".into())),
            );
        }
    }
    // HPA Pods/Object metrics: `metric:` followed by `name: <metric>`.
    for file in std::fs::read_dir(repo_path("k8s/base")).unwrap() {
        let path = file.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        for (i, l) in lines.iter().enumerate() {
            if l.trim() == "metric:"
                && let Some(name) = lines.get(i + 1).and_then(|n| n.trim().strip_prefix("name:"))
            {
                uses.push((name.trim().to_string(), path.display().to_string()));
            }
        }
    }
    assert!(uses.len() >= 10, "the scan found the uses: {uses:?}");
    let unknown: Vec<String> =
        uses.iter().filter(|(m, _)| !known(m)).map(|(m, f)| format!("{m} (used in {f})")).collect();
    assert!(unknown.is_empty(), "metrics read but never emitted by the code:\n{}", unknown.join("\n"));
}

#[test]
fn promql_names_are_told_from_functions_and_labels() {
    let got = metrics_in(
        r#"histogram_quantile(0.99, sum by (le, route) (rate(http_request_duration_seconds_bucket{job="x"}[5m]))) > 0.05"#,
    );
    assert_eq!(got, BTreeSet::from(["http_request_duration_seconds_bucket".to_string()]));
    let got = metrics_in("sum(ws_connections) < 0.5 * sum(ws_connections offset 10m) and up == 0");
    assert_eq!(got, BTreeSet::from(["up".to_string(), "ws_connections".to_string()]));
}
