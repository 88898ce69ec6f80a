//! The commands the documents show exist: every `chat…` invocation in the README and docs/ (code
//! blocks and inline code) is run with `--help`, which the binary answers only for subcommands it
//! has (a misspelt or removed one is exit code 2).

use chat_e2e::*;
use std::collections::BTreeSet;

const BINARIES: &[&str] = &["chat", "chat-auth", "chat-message-store", "chat-presence", "chat-ws-edge"];

/// The code in a Markdown text: fenced blocks line by line, and inline spans.
fn code_of(markdown: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut fenced = false;
    for line in markdown.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if fenced {
            out.push(line.to_string());
        } else {
            out.extend(line.split('`').skip(1).step_by(2).map(str::to_string));
        }
    }
    out
}

/// `binary sub…` invocations: a binary's name followed by lowercase words (subcommands, and perhaps
/// a value, which `--help` ignores).
fn invocations(code: &str) -> Vec<Vec<String>> {
    let tokens: Vec<&str> = code.split_whitespace().collect();
    let mut out = Vec::new();
    for (i, t) in tokens.iter().enumerate() {
        if !BINARIES.contains(t) {
            continue;
        }
        let words: Vec<String> = tokens[i + 1..]
            .iter()
            .take_while(|w| w.chars().all(|c| c.is_ascii_lowercase() || c == '-') && !w.starts_with('-'))
            .take(3)
            .map(|w| w.to_string())
            .collect();
        if !words.is_empty() {
            out.push(std::iter::once(t.to_string()).chain(words).collect());
        }
    }
    out
}

#[test]
fn every_command_the_documents_show_exists() {
    let root = repo_path("");
    let mut files = vec![format!("{root}/README.md")];
    for entry in std::fs::read_dir(format!("{root}/docs")).expect("docs/") {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "md") {
            files.push(path.display().to_string());
        }
    }
    let mut seen = BTreeSet::new();
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        for code in code_of(&text) {
            for cmd in invocations(&code) {
                seen.insert((cmd, file.rsplit('/').next().unwrap().to_string()));
            }
        }
    }
    assert!(seen.len() >= 5, "the documents show commands: {seen:?}");
    let mut wrong = Vec::new();
    for (cmd, file) in &seen {
        let out = std::process::Command::new(binary(&cmd[0])).args(&cmd[1..]).arg("--help").output().unwrap();
        if !out.status.success() {
            wrong.push(format!("{file}: `{}`: {}", cmd.join(" "), String::from_utf8_lossy(&out.stderr).trim()));
        }
    }
    assert!(wrong.is_empty(), "commands in the documents that the binaries do not have:\n{}", wrong.join("\n"));
}

#[test]
fn the_scanner_finds_commands_and_ignores_prose() {
    assert_eq!(
        invocations("kubectl exec deploy/auth -- chat-auth rotate-key --retire-previous"),
        vec![vec!["chat-auth".to_string(), "rotate-key".to_string()]]
    );
    assert!(invocations("cargo run -p chat -- openapi").is_empty());
    assert!(invocations("chat").is_empty());
    assert_eq!(code_of("see `chat migrate` and\n```sh\nchat-auth users disable bob\n```\n").len(), 2);
}
