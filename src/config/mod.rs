//! The configuration: one TOML file, read once at start, validated whole.
//!
//! `config/outpost.toml` in the repository is the commented reference for every key.

mod reader;

use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

pub use reader::{parse_size, ConfigError};
use reader::{Errors, Section};

use crate::pop3::{AuthChoice, Mechanism, TlsMode};
use crate::routing::{Pattern, Route, Routing, DEFAULT_ENVELOPE_HEADERS};
use crate::schedule::{Schedule, Trigger};
use crate::secret::Secret;

/// The whole configuration, valid by construction.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where the spool lives (queue, index, pickup, badmail).
    pub spool_dir: PathBuf,
    /// Domain given to sender addresses that have none.
    pub default_domain: Option<String>,
    /// Who gets outpost's notices (a failing login, mail left on the server, badmail growing).
    pub postmaster: Option<String>,
    pub fetch: FetchSettings,
    pub local: LocalServer,
    pub delivery: DeliverySettings,
    /// When windows happen (accounts may have their own).
    pub schedule: Schedule,
    pub link: LinkSettings,
    pub window: WindowSettings,
    pub accounts: Vec<Account>,
}

#[derive(Debug, Clone)]
pub struct FetchSettings {
    /// Accounts fetched at once in a window.
    pub concurrency: usize,
}

/// How the Internet link is brought up and down around a window.
#[derive(Debug, Clone)]
pub struct LinkSettings {
    /// Run (with `sh -c`) to bring the link up; `None` for an always-on line.
    pub up: Option<String>,
    /// Run after every window, whatever happened in it.
    pub down: Option<String>,
    /// How long to wait, after `up`, for the first POP3 server to accept a connection.
    pub ready_timeout: Duration,
    /// Run once the link is up, before fetching (e.g. `postqueue -f` to send outgoing mail).
    pub on_up: Vec<String>,
    /// Limit for each command.
    pub command_timeout: Duration,
    pub cost_per_minute: Option<f64>,
    pub cost_per_mb: Option<f64>,
}

/// Caps on one window.
#[derive(Debug, Clone, Default)]
pub struct WindowSettings {
    /// After this, no new message is started and every session ends with QUIT.
    pub max_duration: Option<Duration>,
    /// With this byte budget, smaller messages go first; the rest wait for the next window.
    pub max_bytes: Option<u64>,
}

/// The site's own mail server, where the deliverer sends the spool.
#[derive(Debug, Clone)]
pub struct LocalServer {
    pub host: String,
    pub port: u16,
    pub tls: TlsMode,
    pub ca_file: Option<PathBuf>,
    /// The name outpost gives in EHLO.
    pub helo: Option<String>,
    /// Limit for the connect and for every read and write.
    pub timeout: Duration,
    /// Login for servers that want AUTH (PLAIN): user and secret.
    pub auth: Option<(String, SecretSource)>,
}

/// How the deliverer treats the queue.
#[derive(Debug, Clone)]
pub struct DeliverySettings {
    /// SMTP sessions to the local server at once.
    pub sessions: usize,
    /// Waits between attempts of a deferred message; the last one repeats.
    pub retry: Vec<Duration>,
    /// A message still undelivered this long after it arrived goes to badmail.
    pub give_up_after: Duration,
    /// A message during which the local server dropped the session this often goes to badmail.
    pub poison_limit: u32,
}

impl DeliverySettings {
    /// The wait after the `attempts`th failed attempt.
    pub fn retry_after(&self, attempts: u32) -> Duration {
        let index = (attempts.max(1) as usize - 1).min(self.retry.len() - 1);
        self.retry[index]
    }
}

impl Default for DeliverySettings {
    fn default() -> Self {
        let minutes = |m: u64| Duration::from_secs(60 * m);
        DeliverySettings {
            sessions: 2,
            retry: vec![
                minutes(1),
                minutes(5),
                minutes(15),
                minutes(30),
                minutes(60),
            ],
            give_up_after: Duration::from_secs(5 * 24 * 3600),
            poison_limit: 3,
        }
    }
}

/// One external POP3 mailbox.
#[derive(Debug, Clone)]
pub struct Account {
    pub name: String,
    pub server: String,
    pub port: u16,
    pub tls: TlsMode,
    pub ca_file: Option<PathBuf>,
    pub user: String,
    pub auth: AuthChoice,
    pub secret: SecretSource,
    /// Local addresses that receive this mailbox's mail.
    pub deliver_to: Vec<String>,
    /// Messages larger than this (by LIST) are left on the server and reported.
    pub max_message_size: u64,
    /// Leave messages on the server after spooling them.
    pub keep: bool,
    /// With `keep`: delete from the server once spooled this long ago.
    pub delete_after: Option<Duration>,
    /// Allows mechanisms that send the secret in clear over an unencrypted connection.
    pub allow_insecure_auth: bool,
    /// Limit for the connect and for every single read and write.
    pub timeout: Duration,
    /// This account's own schedule, instead of the global one.
    pub schedule: Option<Schedule>,
    /// For a catch-all mailbox: how its mail is routed (then `deliver_to` is not used).
    pub routing: Option<CatchAll>,
    /// No window for this account sooner than this after its last one.
    pub min_interval: Option<Duration>,
}

impl Account {
    /// The schedule this account follows: its own, else the site's, with its minimum interval.
    pub fn effective_schedule(&self, global: &Schedule) -> Schedule {
        let mut schedule = self.schedule.clone().unwrap_or_else(|| global.clone());
        schedule.min_interval = match (schedule.min_interval, self.min_interval) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
        schedule
    }
}

/// A catch-all account's routing, and how long duplicates are remembered.
#[derive(Debug, Clone)]
pub struct CatchAll {
    pub rules: Routing,
    /// A message seen again (same Message-ID, same recipient) within this time is not delivered
    /// again.
    pub duplicate_window: Duration,
}

/// Where a password or token comes from. Files and commands are read when a session starts, so a
/// changed password or a refreshed OAuth token needs no restart.
#[derive(Clone)]
pub enum SecretSource {
    Value(Secret),
    File(PathBuf),
    /// Run with `sh -c`; its first line of output is the secret.
    Command(String),
}

impl fmt::Debug for SecretSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SecretSource::Value(_) => f.write_str("Value([redacted])"),
            SecretSource::File(p) => f.debug_tuple("File").field(p).finish(),
            SecretSource::Command(c) => f.debug_tuple("Command").field(c).finish(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("cannot read password_file {0}: {1}")]
    File(PathBuf, std::io::Error),
    #[error("password_command could not run: {0}")]
    Spawn(std::io::Error),
    #[error("password_command exited with {0}")]
    Failed(std::process::ExitStatus),
    #[error("password_command took longer than {0:?}")]
    Timeout(Duration),
    #[error("the secret is empty")]
    Empty,
}

impl SecretSource {
    /// The secret, now. A command gets 30 seconds.
    pub async fn resolve(&self) -> Result<Secret, SecretError> {
        let text = match self {
            SecretSource::Value(s) => return Ok(s.clone()),
            SecretSource::File(path) => tokio::fs::read_to_string(path)
                .await
                .map_err(|e| SecretError::File(path.clone(), e))?,
            SecretSource::Command(cmd) => {
                let limit = Duration::from_secs(30);
                let child = tokio::process::Command::new("sh")
                    .arg("-c")
                    .arg(cmd)
                    .stdin(Stdio::null())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::inherit())
                    .kill_on_drop(true)
                    .output();
                let output = tokio::time::timeout(limit, child)
                    .await
                    .map_err(|_| SecretError::Timeout(limit))?
                    .map_err(SecretError::Spawn)?;
                if !output.status.success() {
                    return Err(SecretError::Failed(output.status));
                }
                String::from_utf8_lossy(&output.stdout).into_owned()
            }
        };
        let first = text
            .lines()
            .next()
            .unwrap_or_default()
            .trim_end_matches('\r');
        if first.is_empty() {
            return Err(SecretError::Empty);
        }
        Ok(Secret::new(first))
    }
}

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read {0}: {1}")]
    Read(PathBuf, std::io::Error),
    #[error("{path}: {count} error(s):\n{}", list.iter().map(|e| format!("  {e}")).collect::<Vec<_>>().join("\n"))]
    Invalid {
        path: PathBuf,
        count: usize,
        list: Vec<ConfigError>,
    },
}

impl Config {
    /// Reads and validates `path`. Warns when the file is readable by other users, since it may
    /// hold passwords.
    pub fn load(path: &Path) -> Result<Config, LoadError> {
        let text =
            std::fs::read_to_string(path).map_err(|e| LoadError::Read(path.to_path_buf(), e))?;
        warn_if_readable_by_others(path);
        let base = path.parent().unwrap_or(Path::new("."));
        Config::parse(&text, base).map_err(|list| LoadError::Invalid {
            path: path.to_path_buf(),
            count: list.len(),
            list,
        })
    }

    /// Parses and validates a configuration text; relative paths in it are taken from `base`.
    /// Returns every error found, sorted by line.
    pub fn parse(text: &str, base: &Path) -> Result<Config, Vec<ConfigError>> {
        let doc = match toml_edit::Document::parse(text) {
            Ok(doc) => doc,
            Err(e) => {
                let errors = Errors::new(text);
                errors.push(e.span(), "(syntax)", e.message().to_string());
                return Err(errors.into_vec());
            }
        };
        let errors = Errors::new(text);
        let top = Section::new(doc.as_table(), "", None, &errors);
        let path = |p: String| base.join(p);

        let spool_dir = top.required_string("spool_dir").map(path);
        let default_domain = top.string("default_domain");
        let postmaster = top.string("postmaster");
        if let Some(addr) = postmaster
            .as_ref()
            .filter(|a| !crate::envelope::is_valid_address(a))
        {
            top.error(
                "postmaster",
                format!("{addr:?} is not an address of the form user@domain"),
            );
        }
        if let Some(domain) = &default_domain {
            if !is_domain(domain) {
                top.error("default_domain", format!("{domain:?} is not a domain name"));
            }
        }
        let fetch = FetchSettings {
            concurrency: top
                .section("fetch")
                .map(|s| {
                    let n = s.integer("concurrency", 1..=64).unwrap_or(4);
                    s.finish();
                    n as usize
                })
                .unwrap_or(4),
        };
        let local = read_local(top.section("local"), base);
        let delivery = read_delivery(top.section("delivery"));
        let schedule = top
            .section("schedule")
            .map(read_schedule)
            .unwrap_or_default();
        let link = read_link(top.section("link"));
        let window = read_window(top.section("window"));

        let mut accounts = Vec::new();
        match top.item("account") {
            None => top.error("account", "no [[account]] is configured: add at least one"),
            Some(item) => match item.as_array_of_tables() {
                None => top.error("account", "write each account as an [[account]] table"),
                Some(array) => {
                    for (i, table) in array.iter().enumerate() {
                        let section = Section::new(
                            table,
                            format!("account[{}]", i + 1),
                            table.span(),
                            &errors,
                        );
                        if let Some(account) = read_account(&section, base, postmaster.as_deref()) {
                            if accounts.iter().any(|a: &Account| a.name == account.name) {
                                section.error(
                                    "name",
                                    format!("another account is already named {:?}", account.name),
                                );
                            }
                            accounts.push(account);
                        }
                        section.finish();
                    }
                }
            },
        }
        top.finish();
        if !errors.is_empty() {
            return Err(errors.into_vec());
        }
        Ok(Config {
            spool_dir: spool_dir.expect("required key checked"),
            default_domain,
            postmaster,
            fetch,
            local,
            delivery,
            schedule,
            link,
            window,
            accounts,
        })
    }
}

fn read_local(section: Option<Section>, base: &Path) -> LocalServer {
    let mut local = LocalServer {
        host: "localhost".into(),
        port: 25,
        tls: TlsMode::None,
        ca_file: None,
        helo: None,
        timeout: Duration::from_secs(120),
        auth: None,
    };
    let Some(s) = section else { return local };
    if let Some(host) = s.string("host") {
        local.host = host;
    }
    local.tls = s.choice("tls", TLS_CHOICES).unwrap_or(TlsMode::None);
    let default_port = if local.tls == TlsMode::Implicit {
        465
    } else {
        25
    };
    local.port = s
        .integer("port", 1..=65535)
        .map_or(default_port, |p| p as u16);
    local.ca_file = s.string("ca_file").map(|p| base.join(p));
    local.helo = s.string("helo");
    local.timeout = positive_duration(&s, "timeout").unwrap_or(local.timeout);
    if let Some(user) = s.string("user") {
        local.auth = read_secret(&s, base).map(|secret| (user, secret));
    } else if SECRET_KEYS.iter().any(|k| s.has(k)) {
        s.error("user", "a password for the local server needs a user");
    }
    s.finish();
    local
}

/// `cron` (one expression or a list), `every`, `min_interval`; every key optional.
fn read_schedule(s: Section) -> Schedule {
    let mut schedule = Schedule::default();
    for expression in s.string_list("cron").unwrap_or_default() {
        match Trigger::cron(&expression) {
            Ok(t) => schedule.triggers.push(t),
            Err(e) => s.error("cron", format!("{expression:?}: {e}")),
        }
    }
    if let Some(every) = s.duration("every") {
        match Trigger::every(every) {
            Ok(t) => schedule.triggers.push(t),
            Err(e) => s.error("every", e),
        }
    }
    schedule.min_interval = positive_duration(&s, "min_interval");
    s.finish();
    schedule
}

fn read_link(section: Option<Section>) -> LinkSettings {
    let mut link = LinkSettings {
        up: None,
        down: None,
        ready_timeout: Duration::from_secs(120),
        on_up: Vec::new(),
        command_timeout: Duration::from_secs(120),
        cost_per_minute: None,
        cost_per_mb: None,
    };
    let Some(s) = section else { return link };
    link.up = s.string("up");
    link.down = s.string("down");
    link.ready_timeout = positive_duration(&s, "ready_timeout").unwrap_or(link.ready_timeout);
    link.on_up = s.string_list("on_up").unwrap_or_default();
    link.command_timeout = positive_duration(&s, "command_timeout").unwrap_or(link.command_timeout);
    let cost = |key: &str| {
        let item = s.item(key)?;
        match item
            .as_float()
            .or_else(|| item.as_integer().map(|n| n as f64))
        {
            Some(v) if v >= 0.0 => Some(v),
            _ => {
                s.error(key, "expected a number of money units, 0 or more");
                None
            }
        }
    };
    link.cost_per_minute = cost("cost_per_minute");
    link.cost_per_mb = cost("cost_per_mb");
    if link.up.is_some() != link.down.is_some() {
        s.error(
            if link.up.is_some() { "down" } else { "up" },
            "up and down go together: a link brought up must be taken down",
        );
    }
    s.finish();
    link
}

fn read_window(section: Option<Section>) -> WindowSettings {
    let Some(s) = section else {
        return WindowSettings::default();
    };
    let window = WindowSettings {
        max_duration: positive_duration(&s, "max_duration"),
        max_bytes: s.size("max_bytes"),
    };
    s.finish();
    window
}

fn read_delivery(section: Option<Section>) -> DeliverySettings {
    let mut delivery = DeliverySettings::default();
    let Some(s) = section else { return delivery };
    delivery.sessions = s
        .integer("sessions", 1..=32)
        .map_or(delivery.sessions, |n| n as usize);
    if let Some(list) = s.string_list("retry") {
        let parsed: Result<Vec<Duration>, _> =
            list.iter().map(|t| humantime::parse_duration(t)).collect();
        match parsed {
            Ok(waits) if !waits.is_empty() && waits.iter().all(|w| !w.is_zero()) => {
                delivery.retry = waits
            }
            Ok(_) => s.error("retry", "needs at least one wait, each more than zero"),
            Err(e) => s.error("retry", format!("{e}; write e.g. [\"1m\", \"5m\", \"1h\"]")),
        }
    }
    delivery.give_up_after =
        positive_duration(&s, "give_up_after").unwrap_or(delivery.give_up_after);
    delivery.poison_limit = s
        .integer("poison_limit", 1..=100)
        .map_or(delivery.poison_limit, |n| n as u32);
    s.finish();
    delivery
}

/// A duration that must be more than zero.
fn positive_duration(s: &Section, key: &str) -> Option<Duration> {
    let d = s.duration(key)?;
    if d.is_zero() {
        s.error(key, "must be more than zero");
        return None;
    }
    Some(d)
}

const SECRET_KEYS: [&str; 3] = ["password", "password_file", "password_command"];

/// Exactly one of `password`, `password_file`, `password_command`.
fn read_secret(s: &Section, base: &Path) -> Option<SecretSource> {
    let given: Vec<&str> = SECRET_KEYS.into_iter().filter(|k| s.has(k)).collect();
    match given.as_slice() {
        [] => {
            s.error(
                "password",
                "one of password, password_file or password_command is required",
            );
            None
        }
        ["password"] => s
            .string("password")
            .map(|p| SecretSource::Value(Secret::new(p))),
        ["password_file"] => s
            .string("password_file")
            .map(|p| SecretSource::File(base.join(p))),
        ["password_command"] => s.string("password_command").map(SecretSource::Command),
        _ => {
            for k in &given {
                s.item(k);
            }
            s.error(given[1], format!("give only one of {}", given.join(", ")));
            None
        }
    }
}

const TLS_CHOICES: &[(&str, TlsMode)] = &[
    ("implicit", TlsMode::Implicit),
    ("starttls", TlsMode::StartTls),
    ("none", TlsMode::None),
];

fn read_account(s: &Section, base: &Path, postmaster: Option<&str>) -> Option<Account> {
    let name = s.required_string("name");
    if let Some(name) = &name {
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.@".contains(c))
        {
            s.error(
                "name",
                format!("{name:?}: use letters, digits and - _ . @ only"),
            );
        }
    }
    let server = s.required_string("server");
    let tls = s.choice("tls", TLS_CHOICES);
    if !s.has("tls") {
        s.error(
            "tls",
            "is required: \"implicit\" (POP3S, port 995), \"starttls\" or \"none\"",
        );
    }
    let port = s.integer("port", 1..=65535).map(|p| p as u16);
    let user = s.required_string("user");
    let mut auth_choices: Vec<(&str, AuthChoice)> = vec![("auto", AuthChoice::Auto)];
    auth_choices.extend(
        Mechanism::ALL
            .iter()
            .map(|&m| (m.config_name(), AuthChoice::Exact(m))),
    );
    let auth = s.choice("auth", &auth_choices).unwrap_or(AuthChoice::Auto);

    let secret = read_secret(s, base);

    let catch_all = match s.string("mode").as_deref() {
        None | Some("mailbox") => false,
        Some("catch-all") => true,
        Some(other) => {
            s.error(
                "mode",
                format!("{other:?} is not \"mailbox\" or \"catch-all\""),
            );
            false
        }
    };
    let deliver_to = if catch_all && !s.has("deliver_to") {
        Some(Vec::new())
    } else {
        address_list(s, "deliver_to")
    };
    let routing = if catch_all {
        read_routing(s, postmaster, user.as_deref())
    } else {
        None
    };
    if !catch_all {
        for key in [
            "domains",
            "envelope_headers",
            "envelope_header_hop",
            "fallback",
            "own_address",
            "max_passes",
            "duplicate_window",
            "route",
        ] {
            if s.has(key) {
                s.item(key);
                s.error(key, "only for mode = \"catch-all\"");
            }
        }
    }
    let max_message_size = s.size("max_message_size").unwrap_or(10_000_000);
    let keep = s.boolean("keep").unwrap_or(false);
    let delete_after = s.duration("delete_after");
    if s.has("delete_after") && !keep {
        s.error(
            "delete_after",
            "only makes sense with keep = true (without keep, mail is deleted once spooled)",
        );
    }
    let allow_insecure_auth = s.boolean("allow_insecure_auth").unwrap_or(false);
    let timeout = positive_duration(s, "timeout").unwrap_or(Duration::from_secs(60));
    let schedule = s.section("schedule").map(read_schedule);
    let min_interval = positive_duration(s, "min_interval");
    let ca_file = s.string("ca_file").map(|p| base.join(p));
    if let Some(path) = &ca_file {
        if !path.is_file() {
            s.error("ca_file", format!("{} does not exist", path.display()));
        }
    }
    if let (Some(TlsMode::None), AuthChoice::Exact(m)) = (tls, auth) {
        if m.reveals_secret() && !allow_insecure_auth {
            s.error(
                "auth",
                format!(
                    "{} sends the secret in clear and tls = \"none\": use tls, a challenge-response mechanism \
                     (apop, cram-md5, ntlm), or set allow_insecure_auth = true",
                    m.config_name()
                ),
            );
        }
    }
    let tls = tls?;
    Some(Account {
        name: name?,
        server: server?,
        port: port.unwrap_or(if tls == TlsMode::Implicit { 995 } else { 110 }),
        tls,
        ca_file,
        user: user?,
        auth,
        secret: secret?,
        deliver_to: deliver_to?,
        routing,
        max_message_size,
        keep,
        delete_after,
        allow_insecure_auth,
        timeout,
        schedule,
        min_interval,
    })
}

/// A required list of valid addresses.
fn address_list(s: &Section, key: &str) -> Option<Vec<String>> {
    let list = s.string_list(key);
    match &list {
        None if !s.has(key) => s.error(
            key,
            "is required: the local address(es) that get this mailbox's mail",
        ),
        Some(list) if list.is_empty() => s.error(key, "needs at least one address"),
        Some(list) => {
            for addr in list
                .iter()
                .filter(|a| !crate::envelope::is_valid_address(a))
            {
                s.error(
                    key,
                    format!("{addr:?} is not an address of the form user@domain"),
                );
            }
        }
        None => {}
    }
    list
}

/// The keys of a catch-all account and its `[[account.route]]` tables.
fn read_routing(s: &Section, postmaster: Option<&str>, user: Option<&str>) -> Option<CatchAll> {
    let domains: Vec<String> = s
        .string_list("domains")
        .unwrap_or_default()
        .iter()
        .map(|d| d.to_ascii_lowercase())
        .collect();
    if domains.is_empty() {
        s.error(
            "domains",
            "a catch-all account needs its local domains, e.g. [\"example.org\"]",
        );
    }
    for d in domains.iter().filter(|d| !is_domain(d)) {
        s.error("domains", format!("{d:?} is not a domain name"));
    }
    let envelope_headers = s.string_list("envelope_headers").unwrap_or_else(|| {
        DEFAULT_ENVELOPE_HEADERS
            .iter()
            .map(|h| h.to_string())
            .collect()
    });
    let hop = s.integer("envelope_header_hop", 0..=20).unwrap_or(1) as usize;
    let fallback = s
        .string("fallback")
        .or_else(|| postmaster.map(str::to_string));
    match &fallback {
        None => s.error("fallback", "a catch-all needs a fallback address (or a global postmaster) for mail whose recipients cannot be found"),
        Some(f) if !crate::envelope::is_valid_address(f) => s.error("fallback", format!("{f:?} is not an address")),
        Some(_) => {}
    }
    let own_address = s.string("own_address").or_else(|| {
        user.filter(|u| crate::envelope::is_valid_address(u))
            .map(str::to_string)
    });
    let max_passes = s.integer("max_passes", 0..=100).unwrap_or(2) as usize;
    let duplicate_window =
        positive_duration(s, "duplicate_window").unwrap_or(Duration::from_secs(7 * 24 * 3600));
    let mut routes = Vec::new();
    if let Some(item) = s.item("route") {
        match item.as_array_of_tables() {
            None => s.error("route", "write each route as an [[account.route]] table"),
            Some(array) => {
                for (i, table) in array.iter().enumerate() {
                    let r = Section::new(
                        table,
                        s.key_path(&format!("route[{}]", i + 1)),
                        table.span(),
                        s.errors(),
                    );
                    let text = r.required_string("match");
                    let pattern = text.as_deref().map(Pattern::parse);
                    if let Some(Err(e)) = &pattern {
                        r.error("match", e.clone());
                    }
                    let deliver_to = address_list(&r, "deliver_to");
                    if let (Some(text), Some(Ok(pattern)), Some(deliver_to)) =
                        (text, pattern, deliver_to)
                    {
                        routes.push(Route {
                            text,
                            pattern,
                            deliver_to,
                        });
                    }
                    r.finish();
                }
            }
        }
    }
    let rules = Routing {
        domains,
        envelope_headers,
        hop,
        routes,
        fallback: fallback?,
        own_address,
        max_passes,
    };
    Some(CatchAll {
        rules,
        duplicate_window,
    })
}

fn is_domain(text: &str) -> bool {
    !text.is_empty()
        && text.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
}

#[cfg(unix)]
fn warn_if_readable_by_others(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = std::fs::metadata(path) {
        if meta.permissions().mode() & 0o004 != 0 {
            tracing::warn!(file = %path.display(), "the configuration is readable by every user; it may hold passwords (chmod 600 or 640)");
        }
    }
}

#[cfg(not(unix))]
fn warn_if_readable_by_others(_: &Path) {}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
spool_dir = "/var/spool/outpost"
default_domain = "example.org"

[[account]]
name = "office"
server = "pop.example.net"
tls = "implicit"
user = "office@example.net"
password = "secret"
deliver_to = "office@example.org"
"#;

    #[test]
    fn a_minimal_config_gets_defaults() {
        let config = Config::parse(GOOD, Path::new("/etc/outpost")).unwrap();
        let account = &config.accounts[0];
        assert_eq!(account.port, 995);
        assert_eq!(account.max_message_size, 10_000_000);
        assert_eq!(account.auth, AuthChoice::Auto);
        assert_eq!(account.deliver_to, ["office@example.org"]);
        assert_eq!(config.fetch.concurrency, 4);
        assert!(!format!("{config:?}").contains("secret\""));
    }

    #[test]
    fn every_error_is_reported_with_its_key_and_line() {
        let text = r#"
spool_dir = "/tmp/x"
colour = "blue"

[[account]]
name = "a"
server = "pop.example.net"
tls = "none"
port = 99999
user = "u"
password = "p"
auth = "plain"
deliver_to = ["not an address"]
max_message_size = "ten"
delete_after = "soon"
"#;
        let errors = Config::parse(text, Path::new("/")).unwrap_err();
        let shown: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
        let expect = [
            "line 3: colour: unknown key",
            "line 9: account[1].port: 99999 is out of range",
            "line 12: account[1].auth: plain sends the secret in clear",
            "line 13: account[1].deliver_to: \"not an address\"",
            "line 14: account[1].max_message_size:",
            "line 15: account[1].delete_after: \"soon\" is not a duration",
        ];
        for want in expect {
            assert!(
                shown.iter().any(|s| s.starts_with(want)),
                "missing {want:?} in {shown:#?}"
            );
        }
        assert!(
            shown
                .iter()
                .any(|s| s.contains("delete_after: only makes sense with keep")),
            "{shown:#?}"
        );
    }

    #[test]
    fn syntax_errors_have_a_line() {
        let errors = Config::parse("spool_dir = \"x\"\n[[account]\n", Path::new("/")).unwrap_err();
        assert_eq!(errors[0].line, 2);
    }

    #[test]
    fn missing_pieces_are_named() {
        let errors = Config::parse(
            "spool_dir = \"x\"\n[[account]]\nname = \"a\"\n",
            Path::new("/"),
        )
        .unwrap_err();
        let shown = errors
            .iter()
            .map(|e| e.to_string())
            .collect::<Vec<_>>()
            .join("\n");
        for key in ["server", "tls", "user", "password", "deliver_to"] {
            assert!(
                shown.contains(&format!("account[1].{key}")),
                "{key} not in {shown}"
            );
        }
    }

    #[test]
    fn a_catch_all_account_with_routes() {
        let text = r#"
spool_dir = "/x"
postmaster = "postmaster@example.org"

[[account]]
name = "domain"
server = "pop.example.net"
tls = "implicit"
user = "catchall@example.net"
password = "p"
mode = "catch-all"
domains = ["Example.org"]
envelope_header_hop = 2

[[account.route]]
match = "sales"
deliver_to = ["team@example.org"]

[[account.route]]
match = "/[/"
deliver_to = "x@example.org"
"#;
        let errors = Config::parse(text, Path::new("/")).unwrap_err();
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(
            errors[0]
                .to_string()
                .starts_with("line 20: account[1].route[2].match:"),
            "{}",
            errors[0]
        );
        let config =
            Config::parse(&text.replace("/[/", "list-*@example.org"), Path::new("/")).unwrap();
        let catch_all = config.accounts[0].routing.as_ref().unwrap();
        assert_eq!(catch_all.rules.domains, ["example.org"]);
        assert_eq!(catch_all.rules.hop, 2);
        assert_eq!(
            catch_all.rules.fallback, "postmaster@example.org",
            "the postmaster by default"
        );
        assert_eq!(
            catch_all.rules.own_address.as_deref(),
            Some("catchall@example.net")
        );
        assert_eq!(catch_all.rules.routes.len(), 2);
        let plain = text.replace("mode = \"catch-all\"\n", "");
        let errors = Config::parse(&plain, Path::new("/")).unwrap_err();
        assert!(
            errors
                .iter()
                .any(|e| e.to_string().contains("domains: only for mode")),
            "{errors:?}"
        );
    }

    #[tokio::test]
    async fn secrets_from_files_and_commands() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pass");
        std::fs::write(&file, "from-file\n").unwrap();
        assert_eq!(
            SecretSource::File(file).resolve().await.unwrap().expose(),
            "from-file"
        );
        let cmd = SecretSource::Command("printf 'from-command\\nignored'".into());
        assert_eq!(cmd.resolve().await.unwrap().expose(), "from-command");
        assert!(SecretSource::Command("exit 3".into())
            .resolve()
            .await
            .is_err());
        assert!(matches!(
            SecretSource::Command("true".into()).resolve().await,
            Err(SecretError::Empty)
        ));
    }
}
