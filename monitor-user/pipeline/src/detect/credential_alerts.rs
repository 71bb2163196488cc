//! Credential alerts: secrets found in a message (arguments, results,
//! descriptions) become exposure, exfiltration and relay alerts; the
//! fingerprints of secrets seen in results follow them into later requests.

use serde_json::{json, Value};

use super::{
    alert::{Alert, Category, Severity},
    lower,
    relay::{Form, Origin, Recall},
    secrets::{self, Budget, Finding},
    tool_labels::Label,
    Detector, MessageCtx,
};
use crate::{event::Flow, jsonrpc::Kind};

impl Detector {
    pub(super) fn scan_credentials(&self, ctx: &MessageCtx<'_>, budget: &mut Budget) -> Vec<Finding> {
        let Ok(v) = serde_json::from_slice::<Value>(ctx.raw()) else {
            return Vec::new();
        };
        let mut findings = Vec::new();
        self.secrets.scan_value(&v, "$", budget, &mut findings);
        findings
    }

    pub(super) fn credential_alerts(
        &mut self,
        ctx: &MessageCtx<'_>,
        server: &str,
        findings: &[Finding],
        out: &mut Vec<Alert>,
    ) {
        let method = ctx.method().unwrap_or("");
        let sink = ctx.tool().map(|t| self.labels_of(server, t)).unwrap_or_default();
        let sink = sink.iter().find(|l| l.label == Label::ExternalSink).cloned();
        let (rule, severity, what) = match (ctx.flow(), ctx.kind()) {
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
            ctx.tool()
                .map(|t| format!(": tool {t}"))
                .unwrap_or_else(|| format!(": {method}"))
        );
        let mut evidence = json!({"findings": findings, "method": method, "tool": ctx.tool(), "server": label});
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

        // Remember what servers return, by value, for the relay check.
        if ctx.flow() == Flow::ServerToClient {
            for f in findings {
                let origin = Origin {
                    server: label.clone(),
                    tool: ctx.tool().map(str::to_owned),
                    message: ctx.reference(),
                };
                self.relay.remember(f, origin, ctx.time());
            }
        }
    }

    /// `credential.relay`: a credential a server returned earlier is in
    /// this request, found by the rules (`findings`) or by its value alone.
    pub(super) fn relay_alerts(
        &mut self,
        ctx: &MessageCtx<'_>,
        server: &str,
        findings: &[Finding],
        out: &mut Vec<Alert>,
    ) {
        let mut recalls = self.relay.recall(ctx.raw(), ctx.time());
        // Fingerprints the rules found here that the value search cannot
        // (values too long to search for, or decoded by the scanner).
        for f in findings {
            if recalls
                .iter()
                .any(|r| r.remembered.finding.fingerprint == f.fingerprint)
            {
                continue;
            }
            if let Some(remembered) = self.relay.get(&f.fingerprint) {
                recalls.push(Recall {
                    remembered: remembered.clone(),
                    path: f.path.clone(),
                    form: Form::Plain,
                });
            }
        }
        if recalls.is_empty() {
            return;
        }
        let method = ctx.method().unwrap_or("");
        let label = self.servers.get(server).map(|s| s.label.clone()).unwrap_or_default();
        for r in recalls {
            let origin = &r.remembered.origin;
            let f = &r.remembered.finding;
            let summary = format!(
                "credential ({}) returned by {}{} is passed on in a call to {}{}",
                f.rule,
                origin.server,
                origin.tool.as_ref().map(|t| format!(" (tool {t})")).unwrap_or_default(),
                label,
                ctx.tool().map(|t| format!(" (tool {t})")).unwrap_or_default()
            );
            // The finding as first made, at the path where it is now.
            let mut finding = json!(f);
            finding["path"] = json!(r.path);
            let evidence = json!({
                "finding": finding,
                "form": r.form.as_str(),
                "found_by": if findings.iter().any(|x| x.fingerprint == f.fingerprint) { "rule" } else { "value" },
                "first_seen": {"server": origin.server, "tool": origin.tool},
                "relayed_to": {"server": label, "tool": ctx.tool(), "method": method},
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
