//! Tool integrity alerts on `tools/list` results: rug pulls against the
//! remembered definitions, tools added after the baseline, poisoned
//! descriptions, shadowing across a client's servers and cross-server
//! references.

use serde_json::{json, Value};

use super::{
    alert::{Alert, Category, Severity},
    integrity,
    lexicon::{self, Mode},
    parse,
    tool_labels::{self, Labelled},
    Detector, MessageCtx,
};

impl Detector {
    pub(super) fn integrity(&mut self, ctx: &MessageCtx<'_>, server: &str, method: &str, out: &mut Vec<Alert>) {
        let Some(result) = parse(ctx.result()) else { return };
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
                    tool_labels::label_tool(&name_refs, t, &self.cfg.rules.labels),
                ))
            })
            .collect();
        if let Some(s) = self.servers.get_mut(server) {
            for (n, l) in labelled {
                s.tools.insert(n, l);
            }
        }
        // Rug pulls and additions.
        let cmp = self.store.observe(server, &label, &tools, ctx.time());
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
                    .observe(ctx.session(), server, &label, &tools);
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
}

fn poisoning_severity(score: u32) -> Severity {
    match score {
        s if s >= 10 => Severity::Critical,
        s if s >= 7 => Severity::High,
        s if s >= 4 => Severity::Medium,
        _ => Severity::Low,
    }
}
