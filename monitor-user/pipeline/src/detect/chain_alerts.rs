//! Tool chaining alerts: each call and result adds labelled steps to the
//! session's and the client's flows; a rule whose sequence completes raises
//! an alert naming every step.

use serde_json::{json, Value};

use super::{
    alert::{Alert, Category, MessageRef},
    chain::{self, Scope, Step},
    parse,
    secrets::Finding,
    text_of,
    tool_labels::{Label, Labelled},
    Detector, MessageCtx, MAX_FLOWS, MAX_PRINT_TEXT,
};
use crate::{event::Flow, jsonrpc::Kind};

impl Detector {
    pub(super) fn chaining(
        &mut self,
        ctx: &MessageCtx<'_>,
        server: &str,
        findings: &[Finding],
        injected: bool,
        out: &mut Vec<Alert>,
    ) {
        let method = ctx.method().unwrap_or("");
        let request = ctx.kind() == Kind::Request && ctx.flow() == Flow::ClientToServer && method == "tools/call";
        let response = ctx.kind() == Kind::Response && ctx.flow() == Flow::ServerToClient;
        let mut labels: Vec<Labelled> = Vec::new();
        if request {
            if let Some(t) = ctx.tool() {
                labels = self
                    .labels_of(server, t)
                    .into_iter()
                    .filter(|l| matches!(l.label, Label::ExternalSink | Label::Destructive))
                    .collect();
            }
        } else if response && method == "tools/call" {
            if let Some(t) = ctx.tool() {
                labels = self
                    .labels_of(server, t)
                    .into_iter()
                    .filter(|l| matches!(l.label, Label::PrivateData | Label::UntrustedContent))
                    .collect();
            }
        } else if response && method == "resources/read" && ctx.resource().is_some_and(|u| u.starts_with("file:")) {
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
        let session = ctx.session().clone();
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
            parse(ctx.params()).and_then(|p| p.get("arguments").cloned())
        } else {
            parse(ctx.result())
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
            time: ctx.time(),
            call_index: step_index,
            labels,
            tool: ctx.tool().unwrap_or(method).to_owned(),
            server: label.clone(),
            message: ctx.reference(),
            prints,
            secrets: findings.iter().map(|f| f.fingerprint.clone()).collect(),
        };
        let rules = self.cfg.rules.chain_rules.clone();
        if self.session_flows.len() >= MAX_FLOWS && !self.session_flows.contains_key(&session) {
            self.session_flows.clear();
            self.metrics
                .pipeline
                .state_evictions
                .with_label_values(&["chain_flow"])
                .inc();
        }
        let mut hits = self
            .session_flows
            .entry(session)
            .or_default()
            .push(step.clone(), &rules, Scope::Session);
        if let Some(c) = ctx.client_key {
            if self.client_flows.len() >= MAX_FLOWS && !self.client_flows.contains_key(&c) {
                self.client_flows.clear();
                self.metrics
                    .pipeline
                    .state_evictions
                    .with_label_values(&["chain_flow"])
                    .inc();
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
                Scope::Session => ctx.session().to_string(),
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
}
