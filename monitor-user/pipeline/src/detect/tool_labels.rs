//! Tool labels for chaining: `private_data`, `untrusted_content`,
//! `external_sink`, `destructive`. They come from operator configuration
//! first (which can also remove labels), then MCP annotations, then name and
//! description heuristics. Annotations and heuristics can only add labels: a
//! server cannot talk its way out of one with `readOnlyHint`. Every label
//! carries its source, and alerts report it.

use std::collections::HashSet;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::glob::glob;

/// A tool label.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Label {
    /// Reads private data: files, environment, secrets, mail, databases...
    PrivateData,
    /// Brings in content from outside (web pages, URLs, downloads), or returned a result flagged as
    /// prompt injection.
    UntrustedContent,
    /// Sends data out: messages, uploads, webhooks, payments...
    ExternalSink,
    /// Changes or deletes things, or runs commands.
    Destructive,
}

impl Label {
    /// Every label, in the order of their declaration (and `Ord`).
    pub const ALL: [Label; 4] = [
        Label::PrivateData,
        Label::UntrustedContent,
        Label::ExternalSink,
        Label::Destructive,
    ];

    /// The label as spelled in rules files and alerts (`private_data`...).
    pub fn as_str(self) -> &'static str {
        match self {
            Label::PrivateData => "private_data",
            Label::UntrustedContent => "untrusted_content",
            Label::ExternalSink => "external_sink",
            Label::Destructive => "destructive",
        }
    }
}

/// A label and where it came from (`config`, `annotation:destructiveHint`,
/// `name:send`, `description:deletes`, `detector:prompt_injection`...).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Labelled {
    /// Which of the four labels the tool (or step) carries.
    pub label: Label,
    /// Where the label came from, e.g. `config`, `annotation:destructiveHint`, `name:send`.
    pub source: String,
}

/// Operator label configuration for one tool pattern.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LabelRule {
    /// Glob on the server name (`serverInfo.name`) or executable path;
    /// empty means any.
    #[serde(default)]
    pub server: String,
    /// Glob on the tool name.
    pub tool: String,
    /// Labels to set.
    #[serde(default)]
    pub labels: Vec<Label>,
    /// Labels to remove (for tools the heuristics get wrong).
    #[serde(default)]
    pub not: Vec<Label>,
}

/// Splits `readTextFile`, `read_text_file`, `read-text-file` into words.
fn words(name: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut prev_lower = false;
    for c in name.chars() {
        if !c.is_alphanumeric() {
            if !cur.is_empty() {
                out.push(std::mem::take(&mut cur));
            }
            prev_lower = false;
            continue;
        }
        if c.is_uppercase() && prev_lower && !cur.is_empty() {
            out.push(std::mem::take(&mut cur));
        }
        prev_lower = c.is_lowercase() || c.is_ascii_digit();
        cur.extend(c.to_lowercase());
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

const READ_VERBS: &[&str] = &[
    "read", "get", "list", "fetch", "query", "search", "find", "show", "view", "cat", "open", "export", "dump", "load",
    "lookup", "retrieve",
];
const PRIVATE_NOUNS: &[&str] = &[
    "file",
    "files",
    "env",
    "environment",
    "secret",
    "secrets",
    "credential",
    "credentials",
    "password",
    "passwords",
    "key",
    "keys",
    "token",
    "tokens",
    "email",
    "emails",
    "mail",
    "inbox",
    "message",
    "messages",
    "chat",
    "calendar",
    "contact",
    "contacts",
    "document",
    "documents",
    "doc",
    "docs",
    "note",
    "notes",
    "database",
    "db",
    "sql",
    "table",
    "record",
    "records",
    "customer",
    "customers",
    "account",
    "accounts",
    "wallet",
    "history",
    "repo",
    "repository",
    "directory",
    "folder",
    "drive",
    "vault",
    "memory",
    "profile",
    "issue",
    "issues",
];
const SINK_WORDS: &[&str] = &[
    "send", "post", "publish", "upload", "share", "tweet", "notify", "webhook", "http", "https", "curl", "submit",
    "comment", "gist", "paste", "pastebin", "push", "slack", "discord", "telegram", "sms", "forward", "reply",
    "invite", "transfer", "pay",
];
const UNTRUSTED_WORDS: &[&str] = &[
    "fetch", "browse", "browser", "web", "url", "scrape", "crawl", "download", "rss", "news", "website", "page",
    "navigate",
];
const DESTRUCTIVE_WORDS: &[&str] = &[
    "delete",
    "remove",
    "rm",
    "drop",
    "truncate",
    "purge",
    "destroy",
    "kill",
    "terminate",
    "exec",
    "execute",
    "run",
    "shell",
    "command",
    "bash",
    "eval",
    "write",
    "overwrite",
    "move",
    "deploy",
    "format",
    "reset",
    "revoke",
    "edit",
    "update",
    "modify",
    "transfer",
    "pay",
];

const DESC_SINK: &[&str] = &[
    "sends ",
    "send a ",
    "posts ",
    "uploads ",
    "publishes ",
    "to a webhook",
    "http request",
    "makes a request",
    "emails ",
];
const DESC_UNTRUSTED: &[&str] = &[
    "from the web",
    "from a url",
    "from the internet",
    "web page",
    "fetches a url",
    "fetches the url",
    "search the web",
    "third-party content",
];
const DESC_DESTRUCTIVE: &[&str] = &[
    "deletes ",
    "delete the",
    "removes ",
    "executes ",
    "runs a command",
    "shell command",
    "overwrite",
    "permanently",
];
const DESC_PRIVATE: &[&str] = &[
    "contents of a file",
    "content of the file",
    "read the complete contents",
    "environment variables",
    "private ",
    "personal ",
    "your emails",
    "credentials",
];

/// Labels of one tool: configuration first, then annotations, then names
/// and descriptions.
pub fn label_tool(server_names: &[&str], def: &Value, rules: &[LabelRule]) -> Vec<Labelled> {
    let name = def.get("name").and_then(Value::as_str).unwrap_or("");
    let mut out: Vec<Labelled> = Vec::new();
    let add = |out: &mut Vec<Labelled>, label: Label, source: String| {
        if !out.iter().any(|l| l.label == label) {
            out.push(Labelled { label, source });
        }
    };
    let mut removed: HashSet<Label> = HashSet::new();
    for r in rules {
        let server_ok = r.server.is_empty() || server_names.iter().any(|s| glob(&r.server, s));
        if server_ok && glob(&r.tool, name) {
            for l in &r.labels {
                add(&mut out, *l, "config".into());
            }
            removed.extend(r.not.iter().copied());
        }
    }
    if let Some(a) = def.get("annotations") {
        if a.get("destructiveHint").and_then(Value::as_bool) == Some(true) {
            add(&mut out, Label::Destructive, "annotation:destructiveHint".into());
        }
        if a.get("openWorldHint").and_then(Value::as_bool) == Some(true) {
            add(&mut out, Label::UntrustedContent, "annotation:openWorldHint".into());
        }
    }
    let w = words(name);
    let has = |set: &[&str]| w.iter().find(|x| set.contains(&x.as_str())).cloned();
    if let (Some(_), Some(noun)) = (has(READ_VERBS), has(PRIVATE_NOUNS)) {
        add(&mut out, Label::PrivateData, format!("name:{noun}"));
    }
    if let Some(x) = has(SINK_WORDS) {
        add(&mut out, Label::ExternalSink, format!("name:{x}"));
    }
    if let Some(x) = has(UNTRUSTED_WORDS) {
        add(&mut out, Label::UntrustedContent, format!("name:{x}"));
    }
    if let Some(x) = has(DESTRUCTIVE_WORDS) {
        add(&mut out, Label::Destructive, format!("name:{x}"));
    }
    if let Some(desc) = def.get("description").and_then(Value::as_str) {
        let d = desc.to_lowercase();
        for (label, phrases) in [
            (Label::ExternalSink, DESC_SINK),
            (Label::UntrustedContent, DESC_UNTRUSTED),
            (Label::Destructive, DESC_DESTRUCTIVE),
            (Label::PrivateData, DESC_PRIVATE),
        ] {
            if let Some(p) = phrases.iter().find(|p| d.contains(*p)) {
                add(&mut out, label, format!("description:{}", p.trim()));
            }
        }
    }
    out.retain(|l| l.source == "config" || !removed.contains(&l.label));
    out.sort_by_key(|l| l.label);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn labels(name: &str, desc: &str) -> Vec<(Label, String)> {
        label_tool(&[], &json!({"name": name, "description": desc}), &[])
            .into_iter()
            .map(|l| (l.label, l.source))
            .collect()
    }

    #[test]
    fn heuristics_from_names_and_descriptions() {
        assert_eq!(
            labels("read_text_file", ""),
            [(Label::PrivateData, "name:file".to_owned())]
        );
        assert_eq!(labels("get-env", ""), [(Label::PrivateData, "name:env".to_owned())]);
        assert!(labels("get-sum", "").is_empty());
        assert!(labels("echo", "Echoes back the input").is_empty());
        assert_eq!(
            labels("send_email", "").iter().map(|l| l.0).collect::<Vec<_>>(),
            [Label::ExternalSink]
        );
        assert_eq!(
            labels("fetchUrl", "").iter().map(|l| l.0).collect::<Vec<_>>(),
            [Label::UntrustedContent]
        );
        assert!(labels("delete_file", "").iter().any(|l| l.0 == Label::Destructive));
        assert!(labels("notify", "Posts the text to a webhook")
            .iter()
            .any(|l| l == &(Label::ExternalSink, "name:notify".to_owned())));
    }

    #[test]
    fn configuration_wins_and_annotations_only_add() {
        let rules = vec![
            LabelRule {
                server: "internal-*".into(),
                tool: "send_*".into(),
                labels: vec![],
                not: vec![Label::ExternalSink],
            },
            LabelRule {
                server: String::new(),
                tool: "lookup".into(),
                labels: vec![Label::PrivateData],
                not: vec![],
            },
        ];
        let def = json!({"name": "send_report", "annotations": {"readOnlyHint": true}});
        assert!(label_tool(&["internal-reports"], &def, &rules).is_empty());
        assert_eq!(
            label_tool(&["public"], &def, &rules)[0].label,
            Label::ExternalSink,
            "readOnlyHint cannot remove a label"
        );
        let l = label_tool(&[], &json!({"name": "lookup"}), &rules);
        assert_eq!((l[0].label, l[0].source.as_str()), (Label::PrivateData, "config"));
        let l = label_tool(
            &[],
            &json!({"name": "x", "annotations": {"destructiveHint": true}}),
            &[],
        );
        assert_eq!(l[0].source, "annotation:destructiveHint");
    }
}
