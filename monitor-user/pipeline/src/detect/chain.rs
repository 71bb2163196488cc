//! Tool chaining ("toxic flows"): risky sequences of tool use in a session,
//! or across the servers one client uses, over the labels of
//! [`super::tool_labels`].
//!
//! Evidence of data flowing is stronger when content of the earlier result
//! reappears in the later call: a secret fingerprint, or a shared stretch of
//! text (winnowing fingerprints of 32-character windows).

use std::collections::{HashMap, VecDeque};

use serde::{Deserialize, Serialize};

use super::{
    alert::Severity,
    tool_labels::{Label, Labelled},
};

/// A chaining rule (configurable; see docs/RULES.md).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChainRule {
    /// `id` of the `[[chain_rules]]` entry, reported as the alert's `rule`; a file entry with a built-in's
    /// id changes that rule.
    pub id: String,
    /// Two labels in order: the first must have been seen before a call
    /// with the second (`[private_data, external_sink]`)...
    #[serde(default)]
    pub sequence: Vec<Label>,
    /// ...or all of these within the window, in any order.
    #[serde(default)]
    pub all_of: Vec<Label>,
    /// `session` (one server) or `client` (across the servers one client uses:
    /// only fires when more than one server took part).
    pub scope: Scope,
    /// `window_seconds`: steps further apart than this do not chain; the rule fires at most once
    /// per window and scope.
    pub window_seconds: u64,
    /// Most tool calls between the two steps.
    #[serde(default = "default_max_calls")]
    pub max_calls_between: u64,
    /// `severity`: the alert's severity when no content of an earlier step reappears.
    pub severity: Severity,
    /// Severity when content of the earlier step reappears in the later one.
    #[serde(default)]
    pub severity_with_shared_content: Option<Severity>,
    /// `summary`: start of the alert's summary, which then lists the tools of the chain.
    pub summary: String,
}

fn default_max_calls() -> u64 {
    50
}

/// Where a chaining rule looks for its steps (`scope` of a chain rule).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// Within one session, i.e. one client talking to one server.
    Session,
    /// Across all sessions of one client process; fires only when more than one server took part.
    Client,
}

/// The built-in chaining rules.
pub fn default_rules() -> Vec<ChainRule> {
    let r = |id: &str, seq: &[Label], all: &[Label], scope, sev, with, summary: &str| ChainRule {
        id: id.into(),
        sequence: seq.to_vec(),
        all_of: all.to_vec(),
        scope,
        window_seconds: 1800,
        max_calls_between: 50,
        severity: sev,
        severity_with_shared_content: with,
        summary: summary.into(),
    };
    use Label::*;
    vec![
        r(
            "tool_chain.exfiltration",
            &[PrivateData, ExternalSink],
            &[],
            Scope::Session,
            Severity::High,
            Some(Severity::Critical),
            "private data read, then sent to an external sink",
        ),
        r(
            "tool_chain.exfiltration_cross_server",
            &[PrivateData, ExternalSink],
            &[],
            Scope::Client,
            Severity::High,
            Some(Severity::Critical),
            "private data read from one server, then sent to an external sink on another",
        ),
        r(
            "tool_chain.untrusted_to_destructive",
            &[UntrustedContent, Destructive],
            &[],
            Scope::Session,
            Severity::High,
            Some(Severity::Critical),
            "untrusted content read, then a destructive action",
        ),
        r(
            "tool_chain.untrusted_to_destructive_cross_server",
            &[UntrustedContent, Destructive],
            &[],
            Scope::Client,
            Severity::High,
            Some(Severity::Critical),
            "untrusted content from one server, then a destructive action on another",
        ),
        r(
            "tool_chain.lethal_trifecta",
            &[],
            &[PrivateData, UntrustedContent, ExternalSink],
            Scope::Session,
            Severity::Critical,
            None,
            "private data, untrusted content and an external sink in one session",
        ),
        r(
            "tool_chain.lethal_trifecta_cross_server",
            &[],
            &[PrivateData, UntrustedContent, ExternalSink],
            Scope::Client,
            Severity::Critical,
            None,
            "private data, untrusted content and an external sink across one client's servers",
        ),
    ]
}

/// Winnowing fingerprints of `text`: hashes of 32-character windows, the
/// minimum of every 16 consecutive ones. Two texts sharing a stretch of 47
/// or more characters share at least one fingerprint.
pub fn winnow(text: &str) -> Vec<u64> {
    const K: usize = 32;
    const W: usize = 16;
    let b = text.as_bytes();
    if b.len() < K {
        return Vec::new();
    }
    let hashes: Vec<u64> = b
        .windows(K)
        .map(|w| {
            // FNV-1a: deterministic across runs (replays must agree).
            let mut h: u64 = 0xcbf2_9ce4_8422_2325;
            for &x in w {
                h ^= x as u64;
                h = h.wrapping_mul(0x0100_0000_01b3);
            }
            h
        })
        .collect();
    let mut out: Vec<u64> = Vec::new();
    if hashes.len() <= W {
        out.push(*hashes.iter().min().expect("non-empty"));
    } else {
        for win in hashes.windows(W) {
            let m = *win.iter().min().expect("non-empty");
            if out.last() != Some(&m) {
                out.push(m);
            }
        }
    }
    out.sort_unstable();
    out.dedup();
    out
}

/// Most content fingerprints kept per step (bounds memory per session).
const MAX_PRINTS_PER_STEP: usize = 512;
/// Most steps kept per scope.
const MAX_STEPS: usize = 256;

/// One labelled step of a flow.
#[derive(Clone, Debug)]
pub struct Step {
    /// Assigned by [`Flow::push`]: tells steps apart.
    pub seq: u64,
    /// Time of the message, Unix ns.
    pub time: i128,
    /// Tool calls counted in this scope up to this step: for `max_calls_between`.
    pub call_index: u64,
    /// Labels this message contributes, with their sources (calls: external_sink, destructive;
    /// results: private_data, untrusted_content).
    pub labels: Vec<Labelled>,
    /// Tool name, or the method (`resources/read`) when there is none.
    pub tool: String,
    /// Human label of the server (executable and arguments).
    pub server: String,
    /// Index into the detector's message references for the alert.
    pub message: super::alert::MessageRef,
    /// Winnowing fingerprints of the text this step read (results) or sent
    /// (arguments), and secret fingerprints.
    pub prints: Vec<u64>,
    /// Fingerprints of the credentials found in the message.
    pub secrets: Vec<String>,
}

/// Steps of one scope (a session, or a client across sessions).
#[derive(Default)]
pub struct Flow {
    steps: VecDeque<Step>,
    calls: u64,
    seq: u64,
    /// Rule ids already fired, with the time (one alert per window).
    fired: HashMap<String, i128>,
}

/// A chaining finding.
#[derive(Clone, Debug)]
pub struct ChainHit {
    /// The rule the chain completes.
    pub rule: ChainRule,
    /// The rule's `severity`, or its `severity_with_shared_content` when content or a secret of the
    /// earlier step reappears.
    pub severity: Severity,
    /// The steps that make the chain, oldest first; the last one completed it.
    pub steps: Vec<Step>,
    /// Sequence rules: text of the earlier step reappears in the last one (shared winnowing fingerprints).
    pub shared_content: bool,
    /// Sequence rules: fingerprints of credentials seen both in an earlier step and in the last one.
    pub shared_secrets: Vec<String>,
}

impl Flow {
    /// Tool calls counted so far.
    pub fn calls(&self) -> u64 {
        self.calls
    }

    /// Counts a tool call (for `max_calls_between`).
    pub fn count_call(&mut self) -> u64 {
        self.calls += 1;
        self.calls
    }

    /// Adds a step and returns the rules it completes.
    pub fn push(&mut self, mut step: Step, rules: &[ChainRule], scope: Scope) -> Vec<ChainHit> {
        self.seq += 1;
        step.seq = self.seq;
        let mut hits = Vec::new();
        for rule in rules.iter().filter(|r| r.scope == scope) {
            let window = rule.window_seconds as i128 * 1_000_000_000;
            if let Some(&t) = self.fired.get(&rule.id) {
                if step.time - t < window {
                    continue;
                }
            }
            let recent =
                |s: &Step| step.time - s.time <= window && step.call_index - s.call_index <= rule.max_calls_between;
            let multi_server = |steps: &[&Step]| {
                let mut servers: Vec<&str> = steps.iter().map(|s| s.server.as_str()).collect();
                servers.push(&step.server);
                servers.sort_unstable();
                servers.dedup();
                servers.len() > 1
            };
            if let [first, second] = rule.sequence[..] {
                if !step.labels.iter().any(|l| l.label == second) {
                    continue;
                }
                // Calls of the same tool are not a chain: a tool whose name
                // holds two words (`fetch_deploy_config`: untrusted and
                // destructive) called twice is one action repeated.
                let earlier: Vec<&Step> = self
                    .steps
                    .iter()
                    .filter(|s| recent(s) && s.tool != step.tool && s.labels.iter().any(|l| l.label == first))
                    .collect();
                if earlier.is_empty() {
                    continue;
                }
                // Cross-server rules need another server in the chain.
                let earlier: Vec<&Step> = if scope == Scope::Client {
                    earlier.into_iter().filter(|s| s.server != step.server).collect()
                } else {
                    earlier
                };
                if earlier.is_empty() {
                    continue;
                }
                // Prefer an earlier step whose content reappears now.
                let shared = earlier
                    .iter()
                    .find(|s| s.prints.iter().any(|p| step.prints.binary_search(p).is_ok()));
                let shared_secrets: Vec<String> = earlier
                    .iter()
                    .flat_map(|s| s.secrets.iter())
                    .filter(|f| step.secrets.contains(f))
                    .cloned()
                    .collect();
                let chosen = shared.copied().unwrap_or(earlier[earlier.len() - 1]);
                let evidence = shared.is_some() || !shared_secrets.is_empty();
                let severity = if evidence {
                    rule.severity_with_shared_content.unwrap_or(rule.severity)
                } else {
                    rule.severity
                };
                self.fired.insert(rule.id.clone(), step.time);
                hits.push(ChainHit {
                    rule: rule.clone(),
                    severity,
                    steps: vec![chosen.clone(), step.clone()],
                    shared_content: shared.is_some(),
                    shared_secrets,
                });
            } else if !rule.all_of.is_empty() {
                let mut chosen: Vec<&Step> = Vec::new();
                let mut ok = true;
                for want in &rule.all_of {
                    if step.labels.iter().any(|l| l.label == *want) {
                        continue;
                    }
                    match self
                        .steps
                        .iter()
                        .rev()
                        .find(|s| recent(s) && s.tool != step.tool && s.labels.iter().any(|l| l.label == *want))
                    {
                        Some(s) => chosen.push(s),
                        None => {
                            ok = false;
                            break;
                        }
                    }
                }
                // One tool carrying every label alone is not a chain.
                if !ok || chosen.is_empty() || (scope == Scope::Client && !multi_server(&chosen)) {
                    continue;
                }
                chosen.sort_by_key(|s| s.seq);
                chosen.dedup_by_key(|s| s.seq);
                let mut steps: Vec<Step> = chosen.into_iter().cloned().collect();
                steps.push(step.clone());
                self.fired.insert(rule.id.clone(), step.time);
                hits.push(ChainHit {
                    rule: rule.clone(),
                    severity: rule.severity,
                    steps,
                    shared_content: false,
                    shared_secrets: Vec::new(),
                });
            }
        }
        if !step.labels.is_empty() {
            let mut s = step;
            s.prints.truncate(MAX_PRINTS_PER_STEP);
            self.steps.push_back(s);
            while self.steps.len() > MAX_STEPS {
                self.steps.pop_front();
            }
        }
        hits
    }

    /// Drops steps older than `horizon`.
    pub fn expire(&mut self, horizon: i128) {
        while self.steps.front().is_some_and(|s| s.time < horizon) {
            self.steps.pop_front();
        }
    }

    /// True when no step is kept: the flow can be forgotten.
    pub fn is_empty(&self) -> bool {
        self.steps.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{detect::alert::MessageRef, event::Flow as Dir};

    #[test]
    fn winnowing_finds_shared_stretches() {
        let secret_doc = "Quarterly revenue figures: 12,345,678 dollars, margin 23 percent, confidential until March.";
        let a = winnow(&format!("file contents: {secret_doc} end"));
        let b = winnow(&format!("please publish this: {secret_doc}"));
        assert!(a.iter().any(|p| b.binary_search(p).is_ok()));
        let c = winnow("a completely different text that shares nothing at all with the other one");
        assert!(!a.iter().any(|p| c.binary_search(p).is_ok()));
    }

    fn step(t: i128, i: u64, label: Label, server: &str, text: &str) -> Step {
        Step {
            seq: 0,
            time: t,
            call_index: i,
            labels: vec![Labelled {
                label,
                source: "test".into(),
            }],
            tool: format!("tool{i}"),
            server: server.into(),
            message: MessageRef {
                session: "s".into(),
                direction: Dir::ClientToServer,
                kind: "request",
                method: None,
                id: None,
                tool: None,
                time: t,
            },
            prints: winnow(text),
            secrets: vec![],
        }
    }

    #[test]
    fn exfiltration_with_and_without_evidence() {
        let rules = default_rules();
        let doc = "the private quarterly numbers are 12,345,678 and 9,876,543 for the board only";
        let mut f = Flow::default();
        assert!(f
            .push(step(0, 1, Label::PrivateData, "fs", doc), &rules, Scope::Session)
            .is_empty());
        let hits = f.push(
            step(10, 2, Label::ExternalSink, "fs", &format!("body: {doc}")),
            &rules,
            Scope::Session,
        );
        assert_eq!(hits.len(), 1);
        assert_eq!(
            (hits[0].rule.id.as_str(), hits[0].severity, hits[0].shared_content),
            ("tool_chain.exfiltration", Severity::Critical, true)
        );
        // Once per window.
        assert!(f
            .push(step(20, 3, Label::ExternalSink, "fs", "x"), &rules, Scope::Session)
            .is_empty());
        // Without shared content: high.
        let mut g = Flow::default();
        g.push(step(0, 1, Label::PrivateData, "fs", doc), &rules, Scope::Session);
        let hits = g.push(
            step(
                10,
                2,
                Label::ExternalSink,
                "fs",
                "unrelated text that is long enough to fingerprint",
            ),
            &rules,
            Scope::Session,
        );
        assert_eq!(hits[0].severity, Severity::High);
    }

    #[test]
    fn windows_and_cross_server_scope() {
        let rules = default_rules();
        let mut f = Flow::default();
        f.push(step(0, 1, Label::PrivateData, "fs", ""), &rules, Scope::Client);
        // Same server: not a cross-server chain.
        assert!(f
            .push(step(5, 2, Label::ExternalSink, "fs", ""), &rules, Scope::Client)
            .is_empty());
        let hits = f.push(step(6, 3, Label::ExternalSink, "mail", ""), &rules, Scope::Client);
        assert_eq!(
            hits.iter().map(|h| h.rule.id.as_str()).collect::<Vec<_>>(),
            ["tool_chain.exfiltration_cross_server"]
        );
        // Outside the window: nothing.
        let mut g = Flow::default();
        g.push(step(0, 1, Label::PrivateData, "fs", ""), &rules, Scope::Session);
        assert!(g
            .push(
                step(3_600_000_000_000, 2, Label::ExternalSink, "fs", ""),
                &rules,
                Scope::Session
            )
            .is_empty());
    }

    #[test]
    fn one_tool_with_two_labels_is_not_a_chain() {
        let rules = default_rules();
        let two_words = |t: i128, i: u64, server: &str| {
            let mut s = step(t, i, Label::UntrustedContent, server, "");
            s.tool = "fetch_deploy_config".into();
            s.labels.push(Labelled {
                label: Label::Destructive,
                source: "name".into(),
            });
            s
        };
        for scope in [Scope::Session, Scope::Client] {
            let mut f = Flow::default();
            // Called once, and again (on another instance of its server).
            assert!(
                f.push(two_words(0, 1, "deploy-a"), &rules, scope).is_empty(),
                "{scope:?}"
            );
            let hits = f.push(two_words(1, 2, "deploy-b"), &rules, scope);
            assert!(
                hits.is_empty(),
                "{scope:?}: {:?}",
                hits.iter().map(|h| &h.rule.id).collect::<Vec<_>>()
            );
            // A different tool after it is a chain.
            let mut other = step(2, 3, Label::Destructive, "shell", "");
            other.tool = "run_command".into();
            let hits = f.push(other, &rules, scope);
            assert!(!hits.is_empty(), "{scope:?}");
            assert!(hits
                .iter()
                .all(|h| h.steps.len() >= 2 && h.steps[0].tool != h.steps[1].tool));
        }
        // every-label rules: one tool with them all is no trifecta.
        let mut f = Flow::default();
        let mut all = step(0, 1, Label::PrivateData, "s", "");
        all.labels
            .extend([Label::UntrustedContent, Label::ExternalSink].map(|label| Labelled {
                label,
                source: "name".into(),
            }));
        let hits = f.push(all, &rules, Scope::Session);
        assert!(
            hits.is_empty(),
            "{:?}",
            hits.iter().map(|h| &h.rule.id).collect::<Vec<_>>()
        );
    }

    #[test]
    fn lethal_trifecta() {
        let rules = default_rules();
        let mut f = Flow::default();
        f.push(step(0, 1, Label::PrivateData, "s", ""), &rules, Scope::Session);
        f.push(step(1, 2, Label::UntrustedContent, "s", ""), &rules, Scope::Session);
        let hits = f.push(step(2, 3, Label::ExternalSink, "s", ""), &rules, Scope::Session);
        let ids: Vec<&str> = hits.iter().map(|h| h.rule.id.as_str()).collect();
        assert!(ids.contains(&"tool_chain.lethal_trifecta"), "{ids:?}");
        assert!(ids.contains(&"tool_chain.exfiltration"));
    }
}
