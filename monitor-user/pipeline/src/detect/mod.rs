//! Detection: credential leaks, tool integrity (rug pulls, poisoning,
//! shadowing), prompt injection and tool chaining, on the messages the
//! pipeline decodes.
//!
//! The detector is part of the pipeline, so it is deterministic and runs on
//! replays too. It sees each message once, with its session context, and
//! returns alerts. Everything it keeps is bounded.

pub mod alert;
pub mod chain;
pub mod integrity;
pub mod lexicon;
pub mod prefilter;
pub mod rules;
pub mod secrets;

use std::{
    collections::{HashMap, VecDeque},
    sync::Arc,
};

use serde_json::{json, value::RawValue, Value};

use self::{
    alert::{alert_id, Alert, Category, Dedup, MessageRef, Severity},
    chain::{Flow as ChainFlow, Label, Labelled, Scope, Step},
    integrity::{ClientTools, PersistedTools, ToolStore},
    lexicon::Mode,
    rules::Rules,
    secrets::{Budget, Finding, SecretScanner},
};
use crate::{
    event::{Flow, Party, Transport},
    jsonrpc::{Id, Kind},
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
}

/// One decoded message with its context.
pub struct MessageCtx<'a> {
    /// Wall-clock time the message was read, Unix ns.
    pub time: i128,
    /// Transport of the session.
    pub transport: Transport,
    /// Session key, as in events.
    pub session: &'a Arc<str>,
    /// Which way the message went.
    pub flow: Flow,
    /// JSON-RPC message type: request, notification, response or error.
    pub kind: Kind,
    /// Method, or for responses the method of the paired request.
    pub method: Option<&'a str>,
    /// JSON-RPC id, when the message has one.
    pub id: Option<&'a Id>,
    /// `tools/call` tool name, on the request and its response.
    pub tool: Option<&'a str>,
    /// `resources/read` URI (requests and their responses).
    pub resource: Option<&'a str>,
    /// The `params` member, unparsed.
    pub params: Option<&'a RawValue>,
    /// The `result` member of a response, unparsed.
    pub result: Option<&'a RawValue>,
    /// The message's own bytes: the whole frame, or its member of a batch.
    pub raw: &'a [u8],
    /// The MCP server of the session.
    pub server: &'a Party,
    /// The MCP client of the session.
    pub client: &'a Party,
    /// The client process, when known: the scope of client-wide chains and of shadowing checks.
    pub client_key: Option<ProcKey>,
    /// Routing headers of the request (stateless revision) that disagree
    /// with its body.
    pub header_mismatch: &'a [&'static str],
}

impl MessageCtx<'_> {
    fn reference(&self) -> MessageRef {
        MessageRef {
            session: self.session.clone(),
            direction: self.flow,
            kind: self.kind.as_str(),
            method: self.method.map(str::to_owned),
            id: self.id.cloned(),
            tool: self.tool.map(str::to_owned),
            time: self.time,
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

/// Where a fingerprint was first seen in content a server returned.
#[derive(Clone)]
struct Origin {
    server: String,
    tool: Option<String>,
    message: MessageRef,
}

const MAX_SERVERS: usize = 4096;
const MAX_RELAY: usize = 16_384;
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
    relay: HashMap<String, Origin>,
    relay_order: VecDeque<String>,
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
        );
        let prefilter = prefilter::Prefilter::new(&secrets.keyword_rules(), SECRET_NAME_FRAGMENTS, &lexicon::phrases());
        let dedup = Dedup::new(cfg.dedup_window_seconds as i128 * 1_000_000_000, 65_536);
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
            relay: HashMap::new(),
            relay_order: VecDeque::new(),
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
            relay: HashMap::new(),
            relay_order: VecDeque::new(),
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
        );
        self.prefilter = prefilter::Prefilter::new(
            &self.secrets.keyword_rules(),
            SECRET_NAME_FRAGMENTS,
            &lexicon::phrases(),
        );
        self.cfg.rules = rules;
    }

    /// Redacts every secret the credential rules find in `s`.
    pub fn redact(&self, s: &str) -> Option<String> {
        self.secrets.redact(s)
    }

    /// Number of credential rules in force.
    pub fn credential_rules(&self) -> usize {
        self.secrets.rule_count()
    }

    fn server_entry(&mut self, ctx: &MessageCtx<'_>) -> String {
        let (key, label) = server_key(ctx.server);
        if !self.servers.contains_key(&key) {
            if self.servers.len() >= MAX_SERVERS {
                // Forget an arbitrary server; its tools are re-learnt on the
                // next tools/list.
                if let Some(k) = self.servers.keys().next().cloned() {
                    self.servers.remove(&k);
                }
            }
            let mut names = Vec::new();
            if let Some(p) = &ctx.server.process {
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
        if let Some(n) = &ctx.server.name {
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
        chain::label_tool(&names, &json!({"name": tool}), &self.cfg.rules.labels)
    }

    /// Examines one message; returns the alerts it raises.
    pub fn on_message(&mut self, ctx: &MessageCtx<'_>) -> Vec<Alert> {
        let mut out = Vec::new();
        let server = self.server_entry(ctx);
        let mut budget = Budget::new(self.cfg.scan_budget_bytes);
        let hits = self.prefilter.scan(ctx.raw);
        let scan = hits.must_parse_for_credentials()
            || (!hits.credential_rules.is_empty()
                && std::str::from_utf8(ctx.raw)
                    .is_ok_and(|raw| self.secrets.raw_may_match(raw, &hits.credential_rules)));
        let findings = if scan {
            self.scan_credentials(ctx, &mut budget)
        } else {
            Vec::new()
        };
        if !findings.is_empty() {
            self.credential_alerts(ctx, &server, &findings, &mut out);
        }
        let method = ctx.method.unwrap_or("");
        let is_result = ctx.kind == Kind::Response && ctx.flow == Flow::ServerToClient;
        if is_result && (method == "tools/list" || method == "initialize") {
            self.integrity(ctx, &server, method, &mut out);
        }
        let mut injected = false;
        let content_method = matches!(method, "tools/call" | "resources/read" | "prompts/get");
        if is_result && content_method && hits.injection() {
            injected = self.injection(ctx, &server, &mut budget, &mut out);
        }
        self.chaining(ctx, &server, &findings, injected, &mut out);
        if !ctx.header_mismatch.is_empty() {
            self.header_mismatch(ctx, &server, &mut out);
        }
        if budget.exceeded {
            self.metrics.detection_budget_exceeded.inc();
        }
        self.metrics
            .detection_scanned_bytes
            .inc_by((self.cfg.scan_budget_bytes - budget.remaining) as u64);
        self.finish(out)
    }

    fn scan_credentials(&self, ctx: &MessageCtx<'_>, budget: &mut Budget) -> Vec<Finding> {
        let Ok(v) = serde_json::from_slice::<Value>(ctx.raw) else {
            return Vec::new();
        };
        let mut findings = Vec::new();
        self.secrets.scan_value(&v, "$", budget, &mut findings);
        findings
    }

    fn credential_alerts(&mut self, ctx: &MessageCtx<'_>, server: &str, findings: &[Finding], out: &mut Vec<Alert>) {
        let method = ctx.method.unwrap_or("");
        let sink = ctx.tool.map(|t| self.labels_of(server, t)).unwrap_or_default();
        let sink = sink.iter().find(|l| l.label == Label::ExternalSink).cloned();
        let (rule, severity, what) = match (ctx.flow, ctx.kind) {
            (Flow::ClientToServer, Kind::Request) if method == "tools/call" => match &sink {
                Some(_) => (
                    "credential.exfiltration",
                    Severity::Critical,
                    "in the arguments of an external-sink tool",
                ),
                None => ("credential.in_arguments", Severity::Medium, "in tool arguments"),
            },
            (Flow::ServerToClient, Kind::Response)
                if matches!(
                    method,
                    "tools/list" | "initialize" | "prompts/list" | "resources/list" | "resources/templates/list"
                ) =>
            {
                (
                    "credential.in_tool_definition",
                    Severity::High,
                    "in tool or server definitions",
                )
            }
            (Flow::ServerToClient, _) => ("credential.exposure", Severity::High, "returned by the server"),
            (Flow::ClientToServer, _) => ("credential.in_arguments", Severity::Medium, "sent to the server"),
        };
        // Low-confidence (generic) findings alone lower the severity a step.
        let severity = if findings.iter().all(|f| f.confidence == secrets::Confidence::Low) && severity > Severity::Low
        {
            lower(severity)
        } else {
            severity
        };
        let mut prints: Vec<&str> = findings.iter().map(|f| f.fingerprint.as_str()).collect();
        prints.sort_unstable();
        prints.dedup();
        let label = self.servers.get(server).map(|s| s.label.clone()).unwrap_or_default();
        // The same secret at several paths is one credential.
        let mut rules: Vec<&str> = findings.iter().map(|f| f.rule).collect();
        rules.sort_unstable();
        rules.dedup();
        let summary = format!(
            "{} credential{} ({}) {what}{}",
            prints.len(),
            if prints.len() == 1 { "" } else { "s" },
            rules.join(", "),
            ctx.tool
                .map(|t| format!(": tool {t}"))
                .unwrap_or_else(|| format!(": {method}"))
        );
        let mut evidence = json!({"findings": findings, "method": method, "tool": ctx.tool, "server": label});
        if let Some(s) = &sink {
            evidence["sink_label_source"] = json!(s.source);
        }
        out.push(self.alert(
            ctx,
            rule,
            Category::CredentialLeak,
            severity,
            summary,
            evidence,
            vec![ctx.reference()],
            &[rule, server, &prints.join(",")],
        ));

        // Relay: a secret returned earlier reappears in a later call.
        if ctx.flow == Flow::ServerToClient {
            for f in findings {
                if !self.relay.contains_key(&f.fingerprint) {
                    if self.relay.len() >= MAX_RELAY {
                        if let Some(old) = self.relay_order.pop_front() {
                            self.relay.remove(&old);
                        }
                    }
                    self.relay.insert(
                        f.fingerprint.clone(),
                        Origin {
                            server: label.clone(),
                            tool: ctx.tool.map(str::to_owned),
                            message: ctx.reference(),
                        },
                    );
                    self.relay_order.push_back(f.fingerprint.clone());
                }
            }
        } else if ctx.kind == Kind::Request {
            for f in findings {
                let Some(origin) = self.relay.get(&f.fingerprint).cloned() else {
                    continue;
                };
                let summary = format!(
                    "credential ({}) returned by {}{} is passed on in a call to {}{}",
                    f.rule,
                    origin.server,
                    origin.tool.as_ref().map(|t| format!(" (tool {t})")).unwrap_or_default(),
                    label,
                    ctx.tool.map(|t| format!(" (tool {t})")).unwrap_or_default()
                );
                let evidence = json!({
                    "finding": f,
                    "first_seen": {"server": origin.server, "tool": origin.tool},
                    "relayed_to": {"server": label, "tool": ctx.tool, "method": method},
                    "cross_server": origin.server != label,
                });
                out.push(self.alert(
                    ctx,
                    "credential.relay",
                    Category::CredentialLeak,
                    Severity::Critical,
                    summary,
                    evidence,
                    vec![origin.message.clone(), ctx.reference()],
                    &["credential.relay", &f.fingerprint, server],
                ));
            }
        }
    }

    fn integrity(&mut self, ctx: &MessageCtx<'_>, server: &str, method: &str, out: &mut Vec<Alert>) {
        let Some(result) = parse(ctx.result) else { return };
        let label = self.servers.get(server).map(|s| s.label.clone()).unwrap_or_default();
        if method == "initialize" {
            if let Some(instr) = result.get("instructions").and_then(Value::as_str) {
                let ind = lexicon::scan(instr, Mode::Description);
                let score = lexicon::score(&ind);
                if score >= self.cfg.rules.poisoning_min_score {
                    let summary =
                        format!("server instructions of {label} look like hidden instructions (score {score})");
                    out.push(self.alert(
                        ctx,
                        "tool_integrity.poisoning",
                        Category::ToolIntegrity,
                        poisoning_severity(score),
                        summary,
                        json!({"where": "server instructions", "score": score, "indicators": ind, "server": label}),
                        vec![ctx.reference()],
                        &["tool_integrity.poisoning", server, "(instructions)"],
                    ));
                }
            }
            return;
        }
        let tools: Vec<Value> = result
            .get("tools")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        if tools.is_empty() {
            return;
        }
        // Labels for chaining.
        let names: Vec<String> = self.servers.get(server).map(|s| s.names.clone()).unwrap_or_default();
        let name_refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let labelled: Vec<(String, Vec<Labelled>)> = tools
            .iter()
            .filter_map(|t| {
                Some((
                    t.get("name")?.as_str()?.to_owned(),
                    chain::label_tool(&name_refs, t, &self.cfg.rules.labels),
                ))
            })
            .collect();
        if let Some(s) = self.servers.get_mut(server) {
            for (n, l) in labelled {
                s.tools.insert(n, l);
            }
        }
        // Rug pulls and additions.
        let cmp = self.store.observe(server, &label, &tools, ctx.time);
        for change in &cmp.changed {
            let poisoned_now = tools
                .iter()
                .find(|t| t.get("name").and_then(Value::as_str) == Some(&change.tool))
                .map(|t| integrity::assess_tool(t, integrity::median_description_len(&tools)))
                .filter(|r| r.score >= self.cfg.rules.poisoning_min_score);
            let severity = if poisoned_now.is_some() {
                Severity::Critical
            } else {
                Severity::High
            };
            let summary = format!(
                "tool {} of {label} changed after it was first seen ({})",
                change.tool,
                change.changed_fields.join(", ")
            );
            out.push(self.alert(
                ctx,
                "tool_integrity.rug_pull",
                Category::ToolIntegrity,
                severity,
                summary,
                json!({"change": change, "server": label, "now_poisoned": poisoned_now}),
                vec![ctx.reference()],
                &["tool_integrity.rug_pull", server, &change.tool, &change.hash_after],
            ));
        }
        for added in &cmp.added {
            let summary = format!("tool {added} appeared on {label} after its tool list was first seen");
            out.push(self.alert(
                ctx,
                "tool_integrity.tool_added",
                Category::ToolIntegrity,
                Severity::Low,
                summary,
                json!({"tool": added, "server": label}),
                vec![ctx.reference()],
                &["tool_integrity.tool_added", server, added],
            ));
        }
        // Poisoning.
        let median = integrity::median_description_len(&tools);
        for t in &tools {
            let r = integrity::assess_tool(t, median);
            if r.score >= self.cfg.rules.poisoning_min_score {
                let summary = format!(
                    "tool {} of {label} has hidden instructions in its definition (score {})",
                    r.tool, r.score
                );
                let key_hash = integrity::ToolRecord::of(t, 0).hash;
                out.push(self.alert(
                    ctx,
                    "tool_integrity.poisoning",
                    Category::ToolIntegrity,
                    poisoning_severity(r.score),
                    summary,
                    json!({"tool": r.tool, "score": r.score, "indicators": r.indicators, "server": label}),
                    vec![ctx.reference()],
                    &["tool_integrity.poisoning", server, &r.tool, &key_hash],
                ));
            }
        }
        // Shadowing across the client's servers.
        if let Some(client) = ctx.client_key {
            let (shadows, refs) =
                self.client_tools
                    .entry(client)
                    .or_default()
                    .observe(ctx.session, server, &label, &tools);
            for s in shadows {
                let (sev, what) = if s.kind == "look_alike" {
                    (Severity::High, "a look-alike of")
                } else {
                    (Severity::Medium, "the same name as")
                };
                let summary = format!(
                    "tool {} of {label} has {what} tool {} of {}, used by the same client",
                    s.tool, s.other_tool, s.other_server
                );
                out.push(self.alert(
                    ctx,
                    "tool_integrity.shadowing",
                    Category::ToolIntegrity,
                    sev,
                    summary,
                    json!({"shadowing": s, "server": label}),
                    vec![ctx.reference()],
                    &["tool_integrity.shadowing", server, &s.tool, &s.other_server],
                ));
            }
            for r in refs {
                let summary = format!(
                    "description of tool {} of {label} refers to tool {} of another server ({})",
                    r.tool, r.mentions, r.other_server
                );
                out.push(self.alert(
                    ctx,
                    "tool_integrity.cross_server_reference",
                    Category::ToolIntegrity,
                    Severity::High,
                    summary,
                    json!({"reference": r, "server": label}),
                    vec![ctx.reference()],
                    &["tool_integrity.cross_server_reference", server, &r.tool, &r.mentions],
                ));
            }
        }
        if let Some(persisted) = &self.cfg.persisted_tools {
            if let Some(state) = self.store.take_changes() {
                persisted.sink.save(state);
            }
        }
    }

    /// Prompt injection in content returned to the model; true when found.
    fn injection(&mut self, ctx: &MessageCtx<'_>, server: &str, budget: &mut Budget, out: &mut Vec<Alert>) -> bool {
        let Some(result) = parse(ctx.result) else { return false };
        let text = text_of(&result, budget.remaining.min(MAX_PRINT_TEXT));
        let ind = lexicon::scan(&text, Mode::Content);
        let score = lexicon::score(&ind);
        if score < self.cfg.rules.injection_min_score {
            return false;
        }
        let method = ctx.method.unwrap_or("");
        let (rule, where_) = match method {
            "resources/read" => ("prompt_injection.resource", "a resource"),
            "prompts/get" => ("prompt_injection.prompt", "a prompt"),
            _ => ("prompt_injection.tool_result", "a tool result"),
        };
        let label = self.servers.get(server).map(|s| s.label.clone()).unwrap_or_default();
        let summary = format!(
            "{where_} from {label}{} carries instructions to the model (score {score})",
            ctx.tool.map(|t| format!(" (tool {t})")).unwrap_or_default()
        );
        out.push(self.alert(
            ctx,
            rule,
            Category::PromptInjection,
            injection_severity(score),
            summary,
            json!({"score": score, "indicators": ind, "tool": ctx.tool, "server": label}),
            vec![ctx.reference()],
            &[rule, server, ctx.tool.unwrap_or(method)],
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
        let method = ctx.method.unwrap_or("");
        let summary = format!(
            "a {method}{} request to {label} carries {} header(s) that name another call than its body",
            ctx.tool.map(|t| format!(" ({t})")).unwrap_or_default(),
            ctx.header_mismatch.join(" and ")
        );
        out.push(self.alert(
            ctx,
            "protocol.header_mismatch",
            Category::Protocol,
            Severity::High,
            summary,
            json!({"headers": ctx.header_mismatch, "method": method, "tool": ctx.tool, "server": label}),
            vec![ctx.reference()],
            &["protocol.header_mismatch", server, ctx.tool.unwrap_or(method)],
        ));
    }

    fn chaining(
        &mut self,
        ctx: &MessageCtx<'_>,
        server: &str,
        findings: &[Finding],
        injected: bool,
        out: &mut Vec<Alert>,
    ) {
        let method = ctx.method.unwrap_or("");
        let request = ctx.kind == Kind::Request && ctx.flow == Flow::ClientToServer && method == "tools/call";
        let response = ctx.kind == Kind::Response && ctx.flow == Flow::ServerToClient;
        let mut labels: Vec<Labelled> = Vec::new();
        if request {
            if let Some(t) = ctx.tool {
                labels = self
                    .labels_of(server, t)
                    .into_iter()
                    .filter(|l| matches!(l.label, Label::ExternalSink | Label::Destructive))
                    .collect();
            }
        } else if response && method == "tools/call" {
            if let Some(t) = ctx.tool {
                labels = self
                    .labels_of(server, t)
                    .into_iter()
                    .filter(|l| matches!(l.label, Label::PrivateData | Label::UntrustedContent))
                    .collect();
            }
        } else if response && method == "resources/read" && ctx.resource.is_some_and(|u| u.starts_with("file:")) {
            // Local files behind a resource are private data; other
            // resources (documentation, generated content) are not assumed so.
            labels.push(Labelled {
                label: Label::PrivateData,
                source: "method:resources/read(file)".into(),
            });
        }
        if injected && !labels.iter().any(|l| l.label == Label::UntrustedContent) {
            labels.push(Labelled {
                label: Label::UntrustedContent,
                source: "detector:prompt_injection".into(),
            });
        }
        let session = ctx.session.clone();
        let call_index = if request {
            let s = self.session_flows.entry(session.clone()).or_default().count_call();
            if let Some(c) = ctx.client_key {
                self.client_flows.entry(c).or_default().count_call();
            }
            s
        } else {
            0
        };
        if labels.is_empty() {
            return;
        }
        // Content fingerprints of what was read (results) or sent (arguments).
        let body = if request {
            parse(ctx.params).and_then(|p| p.get("arguments").cloned())
        } else {
            parse(ctx.result)
        };
        let prints = body
            .map(|b| chain::winnow(&text_of(&b, MAX_PRINT_TEXT)))
            .unwrap_or_default();
        let step_index = if request {
            call_index
        } else {
            self.session_flows.get(&session).map_or(0, |f| f.calls())
        };
        let label = self.servers.get(server).map(|s| s.label.clone()).unwrap_or_default();
        let step = Step {
            seq: 0,
            time: ctx.time,
            call_index: step_index,
            labels,
            tool: ctx.tool.unwrap_or(method).to_owned(),
            server: label.clone(),
            message: ctx.reference(),
            prints,
            secrets: findings.iter().map(|f| f.fingerprint.clone()).collect(),
        };
        let rules = self.cfg.rules.chain_rules.clone();
        if self.session_flows.len() >= MAX_FLOWS && !self.session_flows.contains_key(&session) {
            self.session_flows.clear();
            self.metrics.state_evictions.with_label_values(&["chain_flow"]).inc();
        }
        let mut hits = self
            .session_flows
            .entry(session)
            .or_default()
            .push(step.clone(), &rules, Scope::Session);
        if let Some(c) = ctx.client_key {
            if self.client_flows.len() >= MAX_FLOWS && !self.client_flows.contains_key(&c) {
                self.client_flows.clear();
                self.metrics.state_evictions.with_label_values(&["chain_flow"]).inc();
            }
            let mut client_step = step;
            client_step.call_index = self.client_flows.get(&c).map_or(0, |f| f.calls());
            hits.extend(
                self.client_flows
                    .entry(c)
                    .or_default()
                    .push(client_step, &rules, Scope::Client),
            );
        }
        for h in hits {
            let steps: Vec<Value> = h
                .steps
                .iter()
                .map(|s| json!({"tool": s.tool, "server": s.server, "labels": s.labels, "time": crate::clock::rfc3339(s.time)}))
                .collect();
            let tools: Vec<&str> = h.steps.iter().map(|s| s.tool.as_str()).collect();
            let summary = format!(
                "{}: {}{}",
                h.rule.summary,
                tools.join(" -> "),
                if h.shared_content || !h.shared_secrets.is_empty() {
                    " (content of the earlier step reappears)"
                } else {
                    ""
                }
            );
            let scope_key = match h.rule.scope {
                Scope::Session => ctx.session.to_string(),
                Scope::Client => format!("client:{:?}", ctx.client_key),
            };
            let refs: Vec<MessageRef> = h.steps.iter().map(|s| s.message.clone()).collect();
            let evidence = json!({"steps": steps, "shared_content": h.shared_content, "shared_secret_fingerprints": h.shared_secrets, "scope": h.rule.scope});
            out.push(self.alert(
                ctx,
                &h.rule.id,
                Category::ToolChain,
                h.severity,
                summary,
                evidence,
                refs,
                &[&h.rule.id, &scope_key],
            ));
        }
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
        let t = ctx.time.to_string();
        Alert {
            id: alert_id(&[&dedup_key, ctx.session, &t]),
            time: ctx.time,
            rule: rule.to_owned(),
            category,
            severity,
            summary,
            transport: ctx.transport,
            session: ctx.session.clone(),
            server: ctx.server.clone(),
            client: ctx.client.clone(),
            actor: alert::Actor::of(ctx.client),
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
                    .alerts_silenced
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
                    .alerts_deduplicated
                    .with_label_values(&[a.category.as_str(), &a.rule])
                    .inc(),
            }
        }
        out
    }

    fn count(&self, a: &Alert) {
        let (ns, wl) = crate::event::Party::metric_workload(&a.server, &a.client);
        let counter = match self.metrics.workload_label_values(ns, wl) {
            None => self
                .metrics
                .alerts
                .with_label_values(&[a.category.as_str(), &a.rule, a.severity.as_str()]),
            Some((ns, wl)) => {
                self.metrics
                    .alerts
                    .with_label_values(&[a.category.as_str(), &a.rule, a.severity.as_str(), &ns, &wl])
            }
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

fn poisoning_severity(score: u32) -> Severity {
    match score {
        s if s >= 10 => Severity::Critical,
        s if s >= 7 => Severity::High,
        s if s >= 4 => Severity::Medium,
        _ => Severity::Low,
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
