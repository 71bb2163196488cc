//! Detection: credential leaks, tool integrity (rug pulls, poisoning,
//! shadowing), prompt injection and tool chaining, on the messages the
//! pipeline decodes.
//!
//! The detector is part of the pipeline, so it is deterministic and runs on
//! replays too. It sees each message once, with its session context, and
//! returns alerts. Everything it keeps is bounded.

pub mod alert;
pub mod chain;
mod chain_alerts;
mod credential_alerts;
pub mod integrity;
mod integrity_alerts;
pub mod lexicon;
pub mod prefilter;
pub mod relay;
pub mod rules;
pub mod secrets;
pub mod tool_labels;

use std::{collections::HashMap, sync::Arc};

use serde_json::{json, value::RawValue, Value};

use self::{
    alert::{alert_id, Alert, Category, Dedup, MessageRef, Severity},
    chain::Flow as ChainFlow,
    integrity::{ClientTools, PersistedTools, ToolStore},
    lexicon::Mode,
    rules::Rules,
    secrets::{Budget, SecretScanner},
    tool_labels::Labelled,
};
use crate::{
    event::{Event, Flow, Party, Transport},
    jsonrpc::{Id, Kind, Message},
    metrics::Metrics,
    observation::ProcKey,
};

/// Detection settings.
#[derive(Clone)]
pub struct DetectorConfig {
    /// Detection rules: the built-ins merged with the rules file, if any.
    pub rules: Rules,
    /// Key for secret fingerprints.
    pub fingerprint_key: Vec<u8>,
    /// Tool definitions from the previous run and where to keep them;
    /// `None`: in memory only.
    pub persisted_tools: Option<PersistedTools>,
    /// Bytes scanned per message at most.
    pub scan_budget_bytes: usize,
    /// Repeats of an alert within this many seconds are folded into one repeat summary.
    pub dedup_window_seconds: u64,
    /// Credentials servers return are recognised by value in later
    /// requests for this long after they were last returned.
    pub relay_memory_seconds: u64,
}

/// One decoded message with its context: the event the pipeline made of
/// it (session, parties, pairing, HTTP), the message itself (its raw
/// members), and the client process.
pub struct MessageCtx<'a> {
    /// The message's event, before it is written.
    pub event: &'a Event,
    /// The decoded message, borrowing from the frame.
    pub message: &'a Message<'a>,
    /// The client process, when known: the scope of client-wide chains and of shadowing checks.
    pub client_key: Option<ProcKey>,
}

impl<'a> MessageCtx<'a> {
    /// Wall-clock time the message was read, Unix ns.
    pub fn time(&self) -> i128 {
        self.event.time
    }
    /// Transport of the session.
    pub fn transport(&self) -> Transport {
        self.event.transport
    }
    /// Session key, as in events.
    pub fn session(&self) -> &'a Arc<str> {
        &self.event.session
    }
    /// Which way the message went.
    pub fn flow(&self) -> Flow {
        self.event.direction
    }
    /// JSON-RPC message type: request, notification, response or error.
    pub fn kind(&self) -> Kind {
        self.message.kind
    }
    /// Method, or for responses the method of the paired request.
    pub fn method(&self) -> Option<&'a str> {
        self.event.method.as_deref()
    }
    /// JSON-RPC id, when the message has one.
    pub fn id(&self) -> Option<&'a Id> {
        self.event.id.as_ref()
    }
    /// `tools/call` tool name, on the request and its response.
    pub fn tool(&self) -> Option<&'a str> {
        self.event.tool.as_deref()
    }
    /// `resources/read` URI (requests and their responses).
    pub fn resource(&self) -> Option<&'a str> {
        self.event.resource.as_deref()
    }
    /// The `params` member, unparsed.
    pub fn params(&self) -> Option<&'a RawValue> {
        self.message.params
    }
    /// The `result` member of a response, unparsed.
    pub fn result(&self) -> Option<&'a RawValue> {
        self.message.result
    }
    /// The message's own bytes: the whole frame, or its member of a batch.
    pub fn raw(&self) -> &'a [u8] {
        self.message.raw
    }
    /// The MCP server of the session.
    pub fn server(&self) -> &'a Party {
        &self.event.server
    }
    /// The MCP client of the session.
    pub fn client(&self) -> &'a Party {
        &self.event.client
    }
    /// Routing headers of the request (stateless revision) that disagree
    /// with its body.
    pub fn header_mismatch(&self) -> &'a [&'static str] {
        self.event.http.as_ref().map_or(&[], |h| &h.header_mismatch)
    }
}

impl MessageCtx<'_> {
    fn reference(&self) -> MessageRef {
        MessageRef {
            session: self.session().clone(),
            direction: self.flow(),
            kind: self.kind().as_str(),
            method: self.method().map(str::to_owned),
            id: self.id().cloned(),
            tool: self.tool().map(str::to_owned),
            time: self.time(),
        }
    }
}

/// A server, as far as detection cares.
struct ServerInfo {
    /// Human label: executable and arguments.
    label: String,
    /// Names to match rules against: serverInfo.name, executable path.
    names: Vec<String>,
    tools: HashMap<String, Vec<Labelled>>,
}

const MAX_SERVERS: usize = 4096;
/// Credentials the relay memory holds at most (values and their encoded
/// spellings: a few hundred bytes each).
const MAX_RELAY: usize = 4096;
const MAX_FLOWS: usize = 16_384;
/// Text kept from one result for content fingerprints.
const MAX_PRINT_TEXT: usize = 256 * 1024;

/// Secret-name fragments: a message containing one may hold a
/// `"password": "..."` pair even without any known token format.
pub const SECRET_NAME_FRAGMENTS: &[&str] = &[
    "password",
    "passwd",
    "secret",
    "token",
    "apikey",
    "api_key",
    "api-key",
    "access_key",
    "private_key",
    "credential",
    "auth",
];

/// The detector.
pub struct Detector {
    cfg: DetectorConfig,
    metrics: Arc<Metrics>,
    secrets: SecretScanner,
    prefilter: prefilter::Prefilter,
    store: ToolStore,
    servers: HashMap<String, ServerInfo>,
    client_tools: HashMap<ProcKey, ClientTools>,
    session_flows: HashMap<Arc<str>, ChainFlow>,
    client_flows: HashMap<ProcKey, ChainFlow>,
    relay: relay::RelayMemory,
    dedup: Dedup,
}

fn server_key(p: &Party) -> (String, String) {
    match &p.process {
        Some(info) => {
            let args = info.cmdline.get(1..).unwrap_or(&[]).join(" ");
            let label = if args.is_empty() {
                info.exe.clone()
            } else {
                format!("{} {}", info.exe, args)
            };
            (format!("stdio:{label}"), label)
        }
        None => {
            let label = format!("pid {}", p.pid.unwrap_or(0));
            (format!("stdio:{label}"), label)
        }
    }
}

fn parse(raw: Option<&RawValue>) -> Option<Value> {
    raw.and_then(|r| serde_json::from_str(r.get()).ok())
}

/// Concatenated string leaves of a value, at most `limit` bytes.
fn text_of(v: &Value, limit: usize) -> String {
    let mut out = String::new();
    let mut stack = vec![v];
    while let Some(v) = stack.pop() {
        if out.len() >= limit {
            break;
        }
        match v {
            Value::String(s) => {
                let room = limit - out.len();
                let mut end = s.len().min(room);
                while !s.is_char_boundary(end) {
                    end -= 1;
                }
                out.push_str(&s[..end]);
                out.push('\n');
            }
            Value::Array(a) => stack.extend(a.iter().rev()),
            Value::Object(m) => stack.extend(m.values().rev()),
            _ => {}
        }
    }
    out
}

impl Detector {
    /// A detector, starting from the tool definitions the previous run
    /// saved if there are any.
    pub fn new(cfg: DetectorConfig, metrics: Arc<Metrics>) -> anyhow::Result<Self> {
        let store = match cfg.persisted_tools.as_ref().and_then(|p| p.saved.as_deref()) {
            Some(saved) => ToolStore::from_json(saved)?,
            None => ToolStore::in_memory(),
        };
        let secrets = SecretScanner::with_rules(
            secrets::builtin::RULES,
            &cfg.fingerprint_key,
            &cfg.rules.disabled_credential_rules,
            &cfg.rules.extra_credential_rules.rules,
        );
        let prefilter = prefilter::Prefilter::new(&secrets.keyword_rules(), SECRET_NAME_FRAGMENTS, &lexicon::phrases());
        let dedup = Dedup::new(cfg.dedup_window_seconds as i128 * 1_000_000_000, 65_536);
        let relay = relay::RelayMemory::new(MAX_RELAY, cfg.relay_memory_seconds);
        Ok(Self {
            cfg,
            metrics,
            secrets,
            prefilter,
            store,
            servers: HashMap::new(),
            client_tools: HashMap::new(),
            session_flows: HashMap::new(),
            client_flows: HashMap::new(),
            relay,
            dedup,
        })
    }

    /// A detector with this one's configuration and compiled rules but no
    /// state, remembering tools in memory only: for fuzzing, where
    /// compiling the rules for every input would leave no time to run them.
    pub fn fresh(&self) -> Self {
        Self {
            cfg: DetectorConfig {
                persisted_tools: None,
                ..self.cfg.clone()
            },
            metrics: self.metrics.clone(),
            secrets: self.secrets.clone(),
            prefilter: self.prefilter.clone(),
            store: ToolStore::in_memory(),
            servers: HashMap::new(),
            client_tools: HashMap::new(),
            session_flows: HashMap::new(),
            client_flows: HashMap::new(),
            relay: relay::RelayMemory::new(MAX_RELAY, self.cfg.relay_memory_seconds),
            dedup: Dedup::new(self.cfg.dedup_window_seconds as i128 * 1_000_000_000, 65_536),
        }
    }

    /// Replaces the rules (SIGHUP), keeping everything learnt: remembered
    /// tools, flows, fingerprints, open deduplication windows. Tool labels
    /// from the new rules apply to tools listed from now on.
    pub fn set_rules(&mut self, rules: rules::Rules) {
        self.secrets = SecretScanner::with_rules(
            secrets::builtin::RULES,
            &self.cfg.fingerprint_key,
            &rules.disabled_credential_rules,
            &rules.extra_credential_rules.rules,
        );
        self.prefilter = prefilter::Prefilter::new(
            &self.secrets.keyword_rules(),
            SECRET_NAME_FRAGMENTS,
            &lexicon::phrases(),
        );
        self.cfg.rules = rules;
    }

    /// Redacts every secret the credential rules find in `s`, and every
    /// credential the relay memory holds (a value passed on without the
    /// context a rule needs), as of the last [`Detector::prepare_redaction`].
    pub fn redact(&self, s: &str) -> Option<String> {
        match self.secrets.redact(s) {
            Some(r) => Some(self.relay.redact(&r).unwrap_or(r)),
            None => self.relay.redact(s),
        }
    }

    /// Brings the relay memory's search up to date for [`Detector::redact`]
    /// (`now`: Unix ns of the message about to be redacted).
    pub fn prepare_redaction(&mut self, now: i128) {
        self.relay.prepare(now);
    }

    /// Number of credential rules in force.
    pub fn credential_rules(&self) -> usize {
        self.secrets.rule_count()
    }

    fn server_entry(&mut self, ctx: &MessageCtx<'_>) -> String {
        let (key, label) = server_key(ctx.server());
        if !self.servers.contains_key(&key) {
            if self.servers.len() >= MAX_SERVERS {
                // Forget an arbitrary server; its tools are re-learnt on the
                // next tools/list.
                if let Some(k) = self.servers.keys().next().cloned() {
                    self.servers.remove(&k);
                }
            }
            let mut names = Vec::new();
            if let Some(p) = &ctx.server().process {
                names.push(p.exe.clone());
            }
            self.servers.insert(
                key.clone(),
                ServerInfo {
                    label,
                    names,
                    tools: HashMap::new(),
                },
            );
        }
        if let Some(n) = &ctx.server().name {
            let s = self.servers.get_mut(&key).expect("inserted");
            if !s.names.iter().any(|x| x == &**n) {
                s.names.push(n.to_string());
            }
        }
        key
    }

    fn labels_of(&self, server: &str, tool: &str) -> Vec<Labelled> {
        if let Some(l) = self.servers.get(server).and_then(|s| s.tools.get(tool)) {
            return l.clone();
        }
        // Tool not listed (yet): name heuristics and configuration only.
        let names: Vec<&str> = self
            .servers
            .get(server)
            .map(|s| s.names.iter().map(String::as_str).collect())
            .unwrap_or_default();
        tool_labels::label_tool(&names, &json!({"name": tool}), &self.cfg.rules.labels)
    }

    /// Examines one message; returns the alerts it raises.
    pub fn on_message(&mut self, ctx: &MessageCtx<'_>) -> Vec<Alert> {
        let mut out = Vec::new();
        let server = self.server_entry(ctx);
        let mut budget = Budget::new(self.cfg.scan_budget_bytes);
        let hits = self.prefilter.scan(ctx.raw());
        let scan = hits.must_parse_for_credentials()
            || ((!hits.credential_rules.is_empty() || self.secrets.has_unconditional_rules())
                && std::str::from_utf8(ctx.raw())
                    .is_ok_and(|raw| self.secrets.raw_may_match(raw, &hits.credential_rules)));
        let findings = if scan {
            self.scan_credentials(ctx, &mut budget)
        } else {
            Vec::new()
        };
        if !findings.is_empty() {
            self.credential_alerts(ctx, &server, &findings, &mut out);
        }
        if ctx.flow() == Flow::ClientToServer && ctx.kind() == Kind::Request {
            self.relay_alerts(ctx, &server, &findings, &mut out);
        }
        let method = ctx.method().unwrap_or("");
        let is_result = ctx.kind() == Kind::Response && ctx.flow() == Flow::ServerToClient;
        if is_result && (method == "tools/list" || method == "initialize") {
            self.integrity(ctx, &server, method, &mut out);
        }
        let mut injected = false;
        let content_method = matches!(method, "tools/call" | "resources/read" | "prompts/get");
        if is_result && content_method && hits.injection() {
            injected = self.injection(ctx, &server, &mut budget, &mut out);
        }
        self.chaining(ctx, &server, &findings, injected, &mut out);
        if !ctx.header_mismatch().is_empty() {
            self.header_mismatch(ctx, &server, &mut out);
        }
        if budget.exceeded {
            self.metrics.detection.budget_exceeded.inc();
        }
        self.metrics
            .detection
            .scanned_bytes
            .inc_by((self.cfg.scan_budget_bytes - budget.remaining) as u64);
        self.finish(out)
    }

    /// Prompt injection in content returned to the model; true when found.
    fn injection(&mut self, ctx: &MessageCtx<'_>, server: &str, budget: &mut Budget, out: &mut Vec<Alert>) -> bool {
        let Some(result) = parse(ctx.result()) else {
            return false;
        };
        let text = text_of(&result, budget.remaining.min(MAX_PRINT_TEXT));
        let ind = lexicon::scan(&text, Mode::Content);
        let score = lexicon::score(&ind);
        if score < self.cfg.rules.injection_min_score {
            return false;
        }
        let method = ctx.method().unwrap_or("");
        let (rule, where_) = match method {
            "resources/read" => ("prompt_injection.resource", "a resource"),
            "prompts/get" => ("prompt_injection.prompt", "a prompt"),
            _ => ("prompt_injection.tool_result", "a tool result"),
        };
        let label = self.servers.get(server).map(|s| s.label.clone()).unwrap_or_default();
        let summary = format!(
            "{where_} from {label}{} carries instructions to the model (score {score})",
            ctx.tool().map(|t| format!(" (tool {t})")).unwrap_or_default()
        );
        out.push(self.alert(
            ctx,
            rule,
            Category::PromptInjection,
            injection_severity(score),
            summary,
            json!({"score": score, "indicators": ind, "tool": ctx.tool(), "server": label}),
            vec![ctx.reference()],
            &[rule, server, ctx.tool().unwrap_or(method)],
        ));
        true
    }

    /// `protocol.header_mismatch`: the request's `Mcp-Method`/`Mcp-Name`
    /// headers name another call than its body. Gateways and proxies of the
    /// stateless revision route and authorise by these headers without
    /// parsing the body; a server that does not check them runs what the
    /// body says.
    fn header_mismatch(&mut self, ctx: &MessageCtx<'_>, server: &str, out: &mut Vec<Alert>) {
        let label = self.servers.get(server).map(|s| s.label.clone()).unwrap_or_default();
        let method = ctx.method().unwrap_or("");
        let summary = format!(
            "a {method}{} request to {label} carries {} header(s) that name another call than its body",
            ctx.tool().map(|t| format!(" ({t})")).unwrap_or_default(),
            ctx.header_mismatch().join(" and ")
        );
        out.push(self.alert(
            ctx,
            "protocol.header_mismatch",
            Category::Protocol,
            Severity::High,
            summary,
            json!({"headers": ctx.header_mismatch(), "method": method, "tool": ctx.tool(), "server": label}),
            vec![ctx.reference()],
            &["protocol.header_mismatch", server, ctx.tool().unwrap_or(method)],
        ));
    }

    #[allow(clippy::too_many_arguments)]
    fn alert(
        &self,
        ctx: &MessageCtx<'_>,
        rule: &str,
        category: Category,
        severity: Severity,
        summary: String,
        evidence: Value,
        messages: Vec<MessageRef>,
        dedup: &[&str],
    ) -> Alert {
        let severity = self.cfg.rules.severity.get(rule).copied().unwrap_or(severity);
        let dedup_key = dedup.join("\u{1f}");
        let t = ctx.time().to_string();
        Alert {
            id: alert_id(&[&dedup_key, ctx.session(), &t]),
            time: ctx.time(),
            rule: rule.to_owned(),
            category,
            severity,
            summary,
            transport: ctx.transport(),
            session: ctx.session().clone(),
            server: ctx.server().clone(),
            client: ctx.client().clone(),
            actor: alert::Actor::of(ctx.client()),
            evidence,
            messages,
            count: 1,
            first_seen: None,
            last_seen: None,
            repeats: Vec::new(),
            repeats_in_other_sessions: 0,
            dedup_key,
        }
    }

    fn silenced(&self, a: &Alert) -> bool {
        let tool = a
            .evidence
            .get("tool")
            .and_then(Value::as_str)
            .or_else(|| a.messages.last().and_then(|m| m.tool.as_deref()))
            .unwrap_or("");
        let mut servers: Vec<String> = Vec::new();
        if let Some(n) = &a.server.name {
            servers.push(n.to_string());
        }
        if let Some(p) = &a.server.process {
            servers.push(p.exe.clone());
        }
        self.cfg.rules.silence.iter().any(|s| {
            crate::glob::glob(&s.rule, &a.rule)
                && (s.server.is_empty() || servers.iter().any(|n| crate::glob::glob(&s.server, n)))
                && (s.tool.is_empty() || crate::glob::glob(&s.tool, tool))
        })
    }

    /// Silences, deduplication and counting.
    fn finish(&mut self, alerts: Vec<Alert>) -> Vec<Alert> {
        let mut out = Vec::new();
        for a in alerts {
            if self.silenced(&a) {
                self.metrics
                    .detection
                    .silenced
                    .with_label_values(&[a.category.as_str(), &a.rule])
                    .inc();
                continue;
            }
            match self.dedup.admit(a.clone()) {
                Some(a) => {
                    self.count(&a);
                    out.push(a);
                }
                None => self
                    .metrics
                    .detection
                    .deduplicated
                    .with_label_values(&[a.category.as_str(), &a.rule])
                    .inc(),
            }
        }
        out
    }

    fn count(&self, a: &Alert) {
        let (ns, wl) = crate::event::Party::metric_workload(&a.server, &a.client);
        let counter = match self.metrics.workload_label_values(ns, wl) {
            None => {
                self.metrics
                    .detection
                    .alerts
                    .with_label_values(&[a.category.as_str(), &a.rule, a.severity.as_str()])
            }
            Some((ns, wl)) => self.metrics.detection.alerts.with_label_values(&[
                a.category.as_str(),
                &a.rule,
                a.severity.as_str(),
                &ns,
                &wl,
            ]),
        };
        counter.inc_by(a.count);
    }

    /// Time passes: closes deduplication windows (returning repeat
    /// summaries) and forgets old flow steps.
    pub fn on_tick(&mut self, now: i128) -> Vec<Alert> {
        let horizon = now
            - self
                .cfg
                .rules
                .chain_rules
                .iter()
                .map(|r| r.window_seconds)
                .max()
                .unwrap_or(1800) as i128
                * 1_000_000_000;
        self.session_flows.retain(|_, f| {
            f.expire(horizon);
            !f.is_empty()
        });
        self.client_flows.retain(|_, f| {
            f.expire(horizon);
            !f.is_empty()
        });
        self.dedup.expire(now)
    }

    /// A session ended.
    pub fn end_session(&mut self, session: &Arc<str>) {
        self.session_flows.remove(session);
        // Its server no longer shadows, or is shadowed by, the client's
        // other servers.
        self.client_tools.retain(|_, c| !c.end_session(session));
    }

    /// End of input: repeat summaries still open.
    pub fn flush(&mut self) -> Vec<Alert> {
        self.dedup.flush()
    }
}

fn lower(s: Severity) -> Severity {
    match s {
        Severity::Critical => Severity::High,
        Severity::High => Severity::Medium,
        Severity::Medium => Severity::Low,
        _ => Severity::Info,
    }
}

fn injection_severity(score: u32) -> Severity {
    match score {
        s if s >= 10 => Severity::High,
        s if s >= 6 => Severity::Medium,
        _ => Severity::Low,
    }
}

#[cfg(test)]
mod tests;
