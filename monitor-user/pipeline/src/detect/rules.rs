//! The rules file: built-in defaults plus an operator file merged on top.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{alert::Severity, chain::ChainRule, tool_labels::LabelRule};

/// The built-in rules, as shipped (documented in docs/RULES.md).
pub const DEFAULT_RULES_TOML: &str = include_str!("default_rules.toml");

/// A chaining rule as written in a rules file (all fields optional when it
/// overrides a built-in rule of the same id).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ChainRuleSpec {
    /// `id`: the id of a built-in rule changes that rule; any other id adds a rule.
    pub id: String,
    /// `enabled` (default true): false turns the rule off.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// `sequence`: two labels; the rule fires on a call with the second after one with the first.
    #[serde(default)]
    pub sequence: Option<Vec<super::tool_labels::Label>>,
    /// `all_of` (instead of `sequence`): labels that must all be seen within the window, in any order.
    #[serde(default)]
    pub all_of: Option<Vec<super::tool_labels::Label>>,
    /// `scope`: `session` or `client` (across one client's servers); required for a new rule.
    #[serde(default)]
    pub scope: Option<super::chain::Scope>,
    /// `window_seconds` (default 1800): how far apart the steps may be; the rule fires at most once per window
    /// and scope.
    #[serde(default)]
    pub window_seconds: Option<u64>,
    /// `max_calls_between` (default 50): most tool calls between an earlier step and the one
    /// completing the chain.
    #[serde(default)]
    pub max_calls_between: Option<u64>,
    /// `severity`: the alert's severity; required for a new rule.
    #[serde(default)]
    pub severity: Option<Severity>,
    /// `severity_with_shared_content`: severity when content of the earlier step
    /// reappears in the later one.
    #[serde(default)]
    pub severity_with_shared_content: Option<Severity>,
    /// `summary`: start of the alert's summary (default: the rule id).
    #[serde(default)]
    pub summary: Option<String>,
}

fn yes() -> bool {
    true
}

/// An alert that is counted but not emitted.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Silence {
    /// Glob on the rule id.
    pub rule: String,
    /// Glob on the server name or executable path (empty: any).
    #[serde(default)]
    pub server: String,
    /// Glob on the tool name (empty: any).
    #[serde(default)]
    pub tool: String,
}

/// One rules file.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RulesFile {
    /// `disabled_credential_rules`: ids of credential rules to turn off; each must exist.
    #[serde(default)]
    pub disabled_credential_rules: Vec<String>,
    /// `enabled_credential_rules`: ids of credential rules to turn on that the built-in defaults
    /// turn off (`stripe-test-secret-key`); each must exist.
    #[serde(default)]
    pub enabled_credential_rules: Vec<String>,
    /// `poisoning_min_score`: replaces the built-in score (4) from which a tool definition or server
    /// instructions are reported as poisoned.
    #[serde(default)]
    pub poisoning_min_score: Option<u32>,
    /// `injection_min_score`: replaces the built-in score (5) from which returned content is
    /// reported as prompt injection.
    #[serde(default)]
    pub injection_min_score: Option<u32>,
    /// `[severity]`: severity per alert rule id, overriding the detector's choice.
    #[serde(default)]
    pub severity: BTreeMap<String, Severity>,
    /// `[[chain_rules]]`: chaining rules to change, turn off or add.
    #[serde(default)]
    pub chain_rules: Vec<ChainRuleSpec>,
    /// `[[labels]]`: tool labels set or removed by the operator; they win over annotations and heuristics.
    #[serde(default)]
    pub labels: Vec<LabelRule>,
    /// `[[silence]]`: alerts to count in `mcp_monitor_alerts_silenced_total` and not emit.
    #[serde(default)]
    pub silence: Vec<Silence>,
}

/// The effective rules.
#[derive(Clone, Debug)]
pub struct Rules {
    /// Credential rule ids turned off (the built-in list plus the file's).
    pub disabled_credential_rules: Vec<String>,
    /// Lowest score of a tool definition or server instructions that raises
    /// `tool_integrity.poisoning`.
    pub poisoning_min_score: u32,
    /// Lowest score of a tool result, resource or prompt that raises `prompt_injection.*`.
    pub injection_min_score: u32,
    /// Severity per alert rule id, replacing the detector's choice.
    pub severity: BTreeMap<String, Severity>,
    /// Enabled chaining rules: the built-ins as changed by the file, then the file's new ones.
    pub chain_rules: Vec<ChainRule>,
    /// Operator tool labels, the built-in ones then the file's.
    pub labels: Vec<LabelRule>,
    /// Silences: alerts matching one are counted, not emitted.
    pub silence: Vec<Silence>,
    /// Operator credential rules in gitleaks' format (`[detection]
    /// extra_rules`), added with [`Rules::with_extra_credential_rules`].
    pub extra_credential_rules: super::secrets::gitleaks::CustomRules,
}

impl Rules {
    /// These rules plus the credential rules of gitleaks-format files:
    /// (origin, text) pairs, read by the caller.
    pub fn with_extra_credential_rules(mut self, files: &[(String, String)]) -> anyhow::Result<Rules> {
        let builtin: Vec<&str> = super::secrets::builtin::RULES
            .iter()
            .map(|r| r.id)
            .chain([super::secrets::GENERIC_KEY_RULE])
            .collect();
        for (origin, text) in files {
            self.extra_credential_rules.add_file(text, origin, &builtin)?;
        }
        Ok(self)
    }

    /// The built-in rules alone.
    pub fn builtin() -> Rules {
        Self::merge(&[]).expect("built-in rules are valid")
    }

    /// Built-ins with an operator file (TOML text) on top.
    pub fn with_file(text: &str, origin: &str) -> anyhow::Result<Rules> {
        let file: RulesFile =
            toml::from_str(text).map_err(|e| anyhow::anyhow!("rules file {origin} is invalid: {e}"))?;
        Self::merge(&[file]).map_err(|e| anyhow::anyhow!("rules file {origin}: {e}"))
    }

    fn merge(extra: &[RulesFile]) -> anyhow::Result<Rules> {
        let base: RulesFile = toml::from_str(DEFAULT_RULES_TOML).expect("default rules parse");
        let mut rules = Rules {
            disabled_credential_rules: base.disabled_credential_rules,
            poisoning_min_score: base.poisoning_min_score.unwrap_or(4),
            injection_min_score: base.injection_min_score.unwrap_or(5),
            severity: base.severity,
            chain_rules: Vec::new(),
            labels: base.labels,
            silence: base.silence,
            extra_credential_rules: Default::default(),
        };
        let mut specs: Vec<ChainRuleSpec> = base.chain_rules;
        for f in extra {
            if let Some(id) = f
                .enabled_credential_rules
                .iter()
                .find(|id| f.disabled_credential_rules.contains(id))
            {
                anyhow::bail!(
                    "credential rule {id:?} is both in disabled_credential_rules and enabled_credential_rules"
                );
            }
            rules
                .disabled_credential_rules
                .extend(f.disabled_credential_rules.iter().cloned());
            rules
                .disabled_credential_rules
                .retain(|id| !f.enabled_credential_rules.contains(id));
            if let Some(s) = f.poisoning_min_score {
                rules.poisoning_min_score = s;
            }
            if let Some(s) = f.injection_min_score {
                rules.injection_min_score = s;
            }
            rules.severity.extend(f.severity.clone());
            rules.labels.extend(f.labels.iter().cloned());
            rules.silence.extend(f.silence.iter().cloned());
            for spec in &f.chain_rules {
                match specs.iter_mut().find(|s| s.id == spec.id) {
                    Some(s) => {
                        s.enabled = spec.enabled;
                        macro_rules! over {
                            ($($f:ident),*) => {$( if spec.$f.is_some() { s.$f = spec.$f.clone(); } )*};
                        }
                        over!(
                            sequence,
                            all_of,
                            scope,
                            window_seconds,
                            max_calls_between,
                            severity,
                            severity_with_shared_content,
                            summary
                        );
                    }
                    None => specs.push(spec.clone()),
                }
            }
        }
        let known = super::secrets::builtin::RULES;
        let enabled = extra.iter().flat_map(|f| &f.enabled_credential_rules);
        for (key, id) in rules
            .disabled_credential_rules
            .iter()
            .map(|id| ("disabled_credential_rules", id))
            .chain(enabled.map(|id| ("enabled_credential_rules", id)))
        {
            anyhow::ensure!(
                known.iter().any(|r| r.id == id) || id == super::secrets::GENERIC_KEY_RULE,
                "{key}: no credential rule {id:?} (list them with `mcp-monitor rules credentials`)"
            );
        }
        for spec in specs.into_iter().filter(|s| s.enabled) {
            let id = spec.id.clone();
            let sequence = spec.sequence.unwrap_or_default();
            let all_of = spec.all_of.unwrap_or_default();
            anyhow::ensure!(
                (sequence.len() == 2) == all_of.is_empty(),
                "chain rule {id}: give either `sequence` with two labels or `all_of`"
            );
            rules.chain_rules.push(ChainRule {
                id,
                sequence,
                all_of,
                scope: spec
                    .scope
                    .ok_or_else(|| anyhow::anyhow!("chain rule {}: `scope` is required", spec.id))?,
                window_seconds: spec.window_seconds.unwrap_or(1800),
                max_calls_between: spec.max_calls_between.unwrap_or(50),
                severity: spec
                    .severity
                    .ok_or_else(|| anyhow::anyhow!("chain rule {}: `severity` is required", spec.id))?,
                severity_with_shared_content: spec.severity_with_shared_content,
                summary: spec.summary.unwrap_or_else(|| spec.id.clone()),
            });
        }
        Ok(rules)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtins_match_the_code_defaults() {
        let r = Rules::builtin();
        assert_eq!(r.chain_rules, super::super::chain::default_rules());
        assert_eq!(r.poisoning_min_score, 4);
    }

    #[test]
    fn operator_file_overrides_adds_and_disables() {
        let r = Rules::with_file(
            r#"
            poisoning_min_score = 6
            disabled_credential_rules = ["generic-secret-key"]
            [severity]
            "credential.in_arguments" = "high"
            [[chain_rules]]
            id = "tool_chain.exfiltration"
            window_seconds = 60
            [[chain_rules]]
            id = "tool_chain.lethal_trifecta_cross_server"
            enabled = false
            [[chain_rules]]
            id = "custom.read_then_delete"
            sequence = ["private_data", "destructive"]
            scope = "session"
            severity = "medium"
            [[labels]]
            tool = "lookup_customer"
            labels = ["private_data"]
            [[silence]]
            rule = "tool_integrity.shadowing"
            server = "internal-*"
            "#,
            "test",
        )
        .unwrap();
        assert_eq!(r.poisoning_min_score, 6);
        let ex = r
            .chain_rules
            .iter()
            .find(|c| c.id == "tool_chain.exfiltration")
            .unwrap();
        assert_eq!((ex.window_seconds, ex.severity), (60, Severity::High));
        assert!(!r
            .chain_rules
            .iter()
            .any(|c| c.id == "tool_chain.lethal_trifecta_cross_server"));
        assert!(r.chain_rules.iter().any(|c| c.id == "custom.read_then_delete"));
        assert_eq!(r.severity["credential.in_arguments"], Severity::High);
        assert_eq!(r.labels.len(), 1);
        assert_eq!(r.silence.len(), 1);
    }

    #[test]
    fn mistakes_are_named() {
        let e = Rules::with_file(
            "[[chain_rules]]\nid = \"x\"\nsequence = [\"private_data\"]\nscope = \"session\"\nseverity = \"low\"\n",
            "f",
        )
        .unwrap_err();
        assert!(e.to_string().contains("chain rule x"), "{e}");
        let e = Rules::with_file("disabled_credential_rules = [\"nope\"]", "f").unwrap_err();
        assert!(e.to_string().contains("nope"), "{e}");
        let e = Rules::with_file("severity_typo = 1", "f").unwrap_err();
        assert!(e.to_string().contains("severity_typo"), "{e}");
    }
}
