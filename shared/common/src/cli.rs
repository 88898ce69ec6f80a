//! The command line every binary shares: each setting is a flag and an environment variable (the
//! default shown in `--help`), `--version` with the git revision, `config` to print the effective
//! configuration with secrets redacted, and exit code 2 with a one-line reason for every mistake.

use clap::parser::ValueSource;
use clap::{Arg, ArgAction, ArgMatches, Command};
use std::collections::HashMap;

/// How a setting's value may be shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Show {
    Plain,
    /// A URL: shown with its password or token replaced.
    Url,
    /// Never shown, only whether it is set.
    Secret,
}

/// One setting: its environment variable (the flag is the same name in kebab case), its default
/// (empty: none), and what it is for.
#[derive(Debug, Clone, Copy)]
pub struct Setting {
    pub env: &'static str,
    pub default: &'static str,
    pub help: &'static str,
    pub show: Show,
}

impl Setting {
    pub const fn new(env: &'static str, default: &'static str, help: &'static str) -> Setting {
        Setting { env, default, help, show: Show::Plain }
    }
    pub const fn url(env: &'static str, default: &'static str, help: &'static str) -> Setting {
        Setting { env, default, help, show: Show::Url }
    }
    pub const fn secret(env: &'static str, help: &'static str) -> Setting {
        Setting { env, default: "", help, show: Show::Secret }
    }
    /// `--auth-listen` for `AUTH_LISTEN`.
    pub fn flag(&self) -> String {
        self.env.to_ascii_lowercase().replace('_', "-")
    }
}

/// Logging, tracing and the HTTP timeouts of every listener.
pub const COMMON: &[Setting] = &[
    Setting::new("LOG_FORMAT", "json", "log lines as `json` or `pretty`"),
    Setting::new("RUST_LOG", "info", "log filter (tracing-subscriber syntax: `info,chat_ws_edge=debug`)"),
    Setting::url(
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "",
        "export spans over OTLP/HTTP to this collector (http:// or https://); the other standard OTEL_* \
         variables apply",
    ),
    Setting::new("OTEL_SERVICE_NAME", "", "service name on exported spans (default: the binary's name)"),
    Setting::new("HTTP_HEADER_TIMEOUT_MS", "10000", "time to send a request's headers; idle keep-alive limit"),
    Setting::new("HTTP_BODY_TIMEOUT_MS", "10000", "time to send a request's body (408 after it)"),
];

/// The bus between services.
pub const BUS: &[Setting] = &[
    Setting::url("BUS_URL", "", "redis://, rediss:// (TLS), nats:// or tls:// (NATS over TLS); unset: in-process"),
    Setting::new("BUS_TOPIC_PREFIX", "", "put before every bus topic (deployments sharing a broker)"),
    Setting::secret("BUS_SIGNING_KEY", "64 hex characters authenticating every bus message (required with a broker)"),
    Setting::new("BUS_SIGNING_KEY_FILE", "", "a file holding BUS_SIGNING_KEY"),
];

/// The credential of the internal listeners (microservices only).
pub const INTERNAL: &[Setting] = &[
    Setting::secret("CHAT_INTERNAL_TOKEN", "the service credential of the internal listeners (>= 32 characters)"),
    Setting::new("CHAT_INTERNAL_TOKEN_FILE", "", "a file holding CHAT_INTERNAL_TOKEN"),
];

/// Every service that verifies access tokens.
pub const VERIFIER: &[Setting] = &[
    Setting::new("CHAT_ACCESS_TOKEN_TTL", "900", "access-token lifetime, seconds"),
    Setting::new("CHAT_JWKS_REFRESH_SECS", "60", "how often verifiers re-read the signing keys"),
];

/// The version of this build (the workspace's) and the git revision it was built from
/// (`CHAT_GIT_REV` at build time; the images set it).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
pub const REVISION: &str = match option_env!("CHAT_GIT_REV") {
    Some(r) => r,
    None => "unknown",
};

fn leak(s: String) -> &'static str {
    Box::leak(s.into_boxed_str())
}

/// The settings of a binary, in order, each once (groups may overlap).
pub fn union(groups: &[&[Setting]]) -> Vec<Setting> {
    let mut seen = std::collections::HashSet::new();
    groups.iter().flat_map(|g| g.iter().copied()).filter(|s| seen.insert(s.env)).collect()
}

/// The command of a binary: its settings as global flags, `--version`, and the subcommands given.
pub fn command(name: &'static str, about: &'static str, settings: &[Setting], subcommands: Vec<Command>) -> Command {
    let mut cmd = Command::new(name)
        .about(about)
        .version(leak(format!("{VERSION} (revision {REVISION})")))
        .after_help("Every setting is also read from the environment variable named in brackets; a flag wins.")
        .subcommands(subcommands)
        .subcommand(Command::new("serve").about("Run the service (the default)"))
        .subcommand(Command::new("config").about("Print the effective configuration, secrets redacted"))
        .subcommand(Command::new("health-check").about("Exit 0 when this instance's /readyz answers 200"))
        // Older container health checks call `--health-check`.
        .arg(Arg::new("health-check").long("health-check").action(ArgAction::SetTrue).hide(true));
    for s in settings {
        let mut arg = Arg::new(s.env)
            .long(leak(s.flag()))
            .env(s.env)
            .value_name("VALUE")
            .help(s.help)
            .global(true)
            .action(ArgAction::Set)
            .help_heading("Settings");
        if !s.default.is_empty() {
            arg = arg.default_value(s.default);
        }
        if s.show != Show::Plain {
            arg = arg.hide_env_values(true);
        }
        cmd = cmd.arg(arg);
    }
    cmd
}

/// Parses the command line (a mistake prints its reason and exits with code 2; `--help` and
/// `--version` exit 0), then installs the flags given and the defaults as the source of every
/// setting. Returns the subcommand (`serve` when none) and its arguments.
pub fn parse(cmd: Command, settings: &[Setting]) -> (String, ArgMatches) {
    let name = cmd.get_name().to_string();
    let matches = match cmd.try_get_matches() {
        Ok(m) => m,
        Err(e) if !e.use_stderr() => e.exit(),
        Err(e) => {
            // One line: the reason (clap's first line), the suggestion if it has one.
            let text = e.to_string();
            let mut lines = text.lines().filter(|l| !l.trim().is_empty());
            let mut reason = lines.next().unwrap_or("invalid arguments").trim_start_matches("error: ").to_string();
            if reason.ends_with(':') {
                reason = format!("{reason} {}", lines.next().unwrap_or("").trim());
            }
            let tip = lines
                .find(|l| l.trim_start().starts_with("tip:"))
                .map(|t| format!(" ({})", t.trim()))
                .unwrap_or_default();
            eprintln!("{name}: {reason}{tip}; see {name} --help");
            std::process::exit(2);
        }
    };
    let mut given = HashMap::new();
    let mut level = Some(&matches);
    while let Some(m) = level {
        for s in settings {
            if m.value_source(s.env) == Some(ValueSource::CommandLine)
                && let Some(v) = m.get_one::<String>(s.env)
            {
                given.insert(s.env.to_string(), v.clone());
            }
        }
        level = m.subcommand().map(|(_, sub)| sub);
    }
    let defaults =
        settings.iter().filter(|s| !s.default.is_empty()).map(|s| (s.env.to_string(), s.default.to_string())).collect();
    chat_settings::install(given, defaults);
    // Settings every binary reads deep inside (the HTTP layers) are checked here, where a mistake can
    // still be one line and exit code 2 instead of a warning and a silent default.
    if settings.iter().any(|s| s.env == "HTTP_BODY_TIMEOUT_MS")
        && let Err(e) = crate::config::env_parse::<u64>("HTTP_BODY_TIMEOUT_MS", 10_000)
    {
        eprintln!("{name}: {e}");
        std::process::exit(2);
    }
    match matches.subcommand() {
        Some((name, sub)) => (name.to_string(), sub.clone()),
        None if matches.get_flag("health-check") => ("health-check".to_string(), matches.clone()),
        None => ("serve".to_string(), matches.clone()),
    }
}

/// `config`: every setting as `NAME=value  # source`, URLs without passwords, secrets as `<set>`.
pub fn render_config(settings: &[Setting]) -> String {
    let mut out = String::new();
    for s in settings {
        let value = match (chat_settings::var(s.env), s.show) {
            (None, _) => String::new(),
            (Some(_), Show::Secret) => "<set, redacted>".to_string(),
            (Some(v), Show::Url) => crate::config::redact_url(&v),
            (Some(v), Show::Plain) => v,
        };
        out.push_str(&format!("{}={value}  # {}\n", s.env, chat_settings::source(s.env).as_str()));
    }
    out
}

/// Logs what is starting and exports `build_info{service, version, revision} 1`.
pub fn announce(service: &'static str) {
    tracing::info!(service, version = VERSION, revision = REVISION, "starting");
    metrics::gauge!("build_info", "service" => service, "version" => VERSION, "revision" => REVISION).set(1.0);
    raise_open_files_limit();
}

/// Raises the soft open-files limit to the hard one: every WebSocket, upstream and database
/// connection is a descriptor, and container runtimes often start processes at a soft 1,024.
/// The limit reached is logged and exported as `process_open_files_limit`.
pub fn raise_open_files_limit() {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => {
            tracing::info!(limit, "open files limit");
            metrics::gauge!("process_open_files_limit").set(limit as f64);
            if limit < 4096 {
                tracing::warn!(
                    limit,
                    "the open files limit is low: raise the hard limit (ulimit -Hn, compose ulimits)"
                );
            }
        }
        Err(e) => tracing::warn!(error = %e, "could not raise the open files limit"),
    }
}

/// A username argument for the account commands.
pub fn username_arg() -> Arg {
    Arg::new("username").required(true).help("the account's username")
}

/// Exit code 2 and a one-line reason: a mistake in how the binary was called or configured.
pub fn usage_error(binary: &str, reason: impl std::fmt::Display) -> std::process::ExitCode {
    eprintln!("{binary}: {reason}");
    std::process::ExitCode::from(2)
}

/// Prints a document as pretty JSON (`openapi`).
pub fn print_json(binary: &str, doc: &impl serde::Serialize) -> std::process::ExitCode {
    match serde_json::to_string_pretty(doc) {
        Ok(json) => {
            println!("{json}");
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{binary}: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Ends a one-shot command: prints what it did, or its error (logged too) with exit code 1.
pub fn finish<T: std::fmt::Display, E: std::fmt::Display>(
    binary: &str,
    what: &str,
    result: Result<T, E>,
) -> std::process::ExitCode {
    match result {
        Ok(done) => {
            let done = done.to_string();
            if !done.is_empty() {
                println!("{done}");
            }
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            tracing::error!(error = %e, what, "{binary} failed");
            eprintln!("{binary} {what}: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
