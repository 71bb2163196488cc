//! Operator credential rules in gitleaks' configuration format.
//!
//! Security teams keep their organisation's token formats in gitleaks
//! configurations; `[detection] extra_rules` loads such files next to the
//! built-in rules. What is read: each `[[rules]]` `id`, `description`,
//! `regex`, `secretGroup`, `entropy`, `keywords`, and its allowlists
//! (`[rules.allowlist]` or `[[rules.allowlists]]`: `condition`,
//! `regexTarget`, `regexes`, `stopwords`); the file's global allowlists
//! (`[allowlist]`, `[[allowlists]]` with `targetRules`) apply to its own
//! rules. What has no meaning for network messages is reported and left out:
//! `path` (no file paths here: a rule with only a path is skipped),
//! `commits`, `[extend]` (gitleaks' own default rules are not shipped; the
//! built-in rules of this tool stay on), composite `[[rules.required]]`
//! rules (skipped).
//!
//! Go's RE2 and the `regex` crate share their syntax; `\Q...\E` is
//! translated, `\C` (any byte) is refused, and `\w`, `\d`, `\s`, `\b` are
//! Unicode-aware here (a superset of Go's ASCII classes).

use std::collections::{BTreeMap, HashSet};
use std::sync::Mutex;

use regex::{Regex, RegexBuilder};
use serde::Deserialize;

/// What an allowlist regex is matched against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// The secret (the secret group, or the whole match).
    Secret,
    /// The whole regex match.
    Match,
    /// The line of text holding the match.
    Line,
}

/// One allowlist: a finding it matches is dropped.
#[derive(Clone, Debug)]
pub struct Allowlist {
    /// All criteria must hold (`AND`) rather than one (`OR`).
    pub all: bool,
    /// What `regexes` match.
    pub target: Target,
    /// Regexes, compiled.
    pub regexes: Vec<Regex>,
    /// Lower-case words: a secret containing one is allowed.
    pub stopwords: Vec<String>,
    /// Criteria this tool cannot evaluate (`paths`, `commits`): under
    /// `AND` they make the allowlist never apply, under `OR` they are
    /// ignored.
    pub unsupported: bool,
}

impl Allowlist {
    /// Does this allowlist drop a finding? `secret`, `whole` (the match)
    /// and `line` are the texts a `regexTarget` can name.
    pub fn allows(&self, secret: &str, whole: &str, line: &str) -> bool {
        let text = match self.target {
            Target::Secret => secret,
            Target::Match => whole,
            Target::Line => line,
        };
        let regex = (!self.regexes.is_empty()).then(|| self.regexes.iter().any(|r| r.is_match(text)));
        let stop = (!self.stopwords.is_empty()).then(|| {
            let lower = secret.to_lowercase();
            self.stopwords.iter().any(|w| lower.contains(w.as_str()))
        });
        let criteria = [regex, stop];
        if self.all {
            !self.unsupported && criteria.iter().flatten().count() > 0 && criteria.iter().flatten().all(|&c| c)
        } else {
            criteria.iter().flatten().any(|&c| c)
        }
    }
}

/// Which part of a match is the secret.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SecretGroup {
    /// `secretGroup = N`.
    Index(usize),
    /// No `secretGroup`: the first capture group that matched something,
    /// else the whole match (gitleaks' rule).
    FirstNonEmpty,
}

/// One operator rule, validated.
#[derive(Clone, Debug)]
pub struct CustomRule {
    /// `id`.
    pub id: &'static str,
    /// `description`, or the id.
    pub name: &'static str,
    /// `regex`, translated to this crate's syntax.
    pub pattern: String,
    /// The compiled regex.
    pub regex: Regex,
    /// Which part of a match is the secret.
    pub group: SecretGroup,
    /// `entropy`: the secret's Shannon entropy must exceed it.
    pub entropy: Option<f32>,
    /// `keywords`, lower case; empty: the regex runs on every message.
    pub keywords: Vec<String>,
    /// The rule's allowlists, then the file's global ones that target it.
    pub allowlists: Vec<Allowlist>,
}

/// The rules of one or more files, and what was left out of them.
#[derive(Clone, Debug, Default)]
pub struct CustomRules {
    /// Rules in file order.
    pub rules: Vec<CustomRule>,
    /// Parts of the files that were not used, each naming its file and rule.
    pub warnings: Vec<String>,
}

impl CustomRules {
    /// Adds the rules of one gitleaks file (`origin` names it in messages).
    /// Errors name the file, the rule and the fix; ids must be unique
    /// across files and must not be built-in ids.
    pub fn add_file(&mut self, text: &str, origin: &str, builtin_ids: &[&str]) -> anyhow::Result<()> {
        let file: File =
            toml::from_str(text).map_err(|e| anyhow::anyhow!("{origin} is not a valid gitleaks configuration: {e}"))?;
        for k in file.other.keys() {
            self.warnings.push(format!("{origin}: `{k}` is not used"));
        }
        if file.extend.is_some() {
            self.warnings.push(format!(
                "{origin}: [extend] is not used: gitleaks' own default rules are not loaded (the built-in rules of mcp-monitor stay on)"
            ));
        }
        let mut global: Vec<(Vec<String>, Allowlist)> = Vec::new();
        for (i, a) in file.allowlist.iter().chain(&file.allowlists).enumerate() {
            let where_ = format!("{origin}: global allowlist {}", i + 1);
            global.push((
                a.target_rules.clone(),
                compile_allowlist(a, &where_, &mut self.warnings)?,
            ));
        }
        for (n, r) in file.rules.iter().enumerate() {
            let Some(id) = r.id.as_deref().filter(|s| !s.is_empty()) else {
                anyhow::bail!("{origin}: rule {} has no id: add `id = \"...\"`", n + 1);
            };
            let at = format!("{origin}: rule {id}");
            for k in r.other.keys() {
                self.warnings.push(format!("{at}: `{k}` is not used"));
            }
            if !r.required.is_empty() {
                self.warnings.push(format!(
                    "{at}: composite rules ([[rules.required]]) are not supported: skipped"
                ));
                continue;
            }
            let Some(regex_text) = r.regex.as_deref() else {
                if r.path.is_some() {
                    self.warnings
                        .push(format!("{at}: has only a `path` (messages have no file path): skipped"));
                    continue;
                }
                anyhow::bail!("{at}: no `regex`: add one, or remove the rule");
            };
            if r.path.is_some() {
                self.warnings
                    .push(format!("{at}: `path` is not used (messages have no file path)"));
            }
            if builtin_ids.contains(&id) || self.rules.iter().any(|x| x.id == id) {
                anyhow::bail!("{at}: the id is already taken (a built-in rule or an earlier rule): rename it");
            }
            let pattern = translate(regex_text).map_err(|e| anyhow::anyhow!("{at}: {e}"))?;
            let regex = compile(&pattern).map_err(|e| anyhow::anyhow!("{at}: the regex does not compile: {e}"))?;
            let groups = regex.captures_len() - 1;
            let group = match r.secret_group {
                Some(0) | None => SecretGroup::FirstNonEmpty,
                Some(g) if g as usize <= groups => SecretGroup::Index(g as usize),
                Some(g) => anyhow::bail!("{at}: secretGroup = {g} but the regex has {groups} capture groups"),
            };
            if r.keywords.is_empty() {
                self.warnings.push(format!(
                    "{at}: no keywords: its regex runs on every message (add keywords to keep scanning fast)"
                ));
            }
            let mut allowlists = Vec::new();
            for (i, a) in r.allowlist.iter().chain(&r.allowlists).enumerate() {
                allowlists.push(compile_allowlist(
                    a,
                    &format!("{at}: allowlist {}", i + 1),
                    &mut self.warnings,
                )?);
            }
            for (targets, a) in &global {
                if targets.is_empty() || targets.iter().any(|t| t == id) {
                    allowlists.push(a.clone());
                }
            }
            self.rules.push(CustomRule {
                id: intern(id),
                name: intern(r.description.as_deref().filter(|d| !d.is_empty()).unwrap_or(id)),
                pattern,
                regex,
                group,
                entropy: r.entropy.filter(|e| *e > 0.0).map(|e| e as f32),
                keywords: r
                    .keywords
                    .iter()
                    .map(|k| k.to_lowercase())
                    .filter(|k| !k.is_empty())
                    .collect(),
                allowlists,
            });
        }
        Ok(())
    }
}

/// Go RE2 to `regex` crate syntax: `\Q...\E` quoted literals become
/// escapes; `\C` has no equivalent in a UTF-8 matcher.
pub fn translate(go: &str) -> anyhow::Result<String> {
    let mut out = String::with_capacity(go.len());
    let mut chars = go.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('Q') => {
                let mut lit = String::new();
                loop {
                    match chars.next() {
                        Some('\\') if chars.peek() == Some(&'E') => {
                            chars.next();
                            break;
                        }
                        Some(x) => lit.push(x),
                        None => break,
                    }
                }
                out.push_str(&regex::escape(&lit));
            }
            Some('C') => anyhow::bail!("`\\C` (any byte) has no equivalent here: use `.` or `[\\s\\S]`"),
            Some(x) => {
                out.push('\\');
                out.push(x);
            }
            None => out.push('\\'),
        }
    }
    Ok(out)
}

fn compile(pattern: &str) -> Result<Regex, regex::Error> {
    // Large alternations (lists of vendor names) exceed the default 10 MB.
    RegexBuilder::new(pattern).size_limit(64 << 20).build()
}

fn compile_allowlist(a: &AllowlistSpec, at: &str, warnings: &mut Vec<String>) -> anyhow::Result<Allowlist> {
    let all = match a.condition.as_deref().map(str::to_ascii_uppercase).as_deref() {
        None | Some("OR") => false,
        Some("AND") => true,
        Some(other) => anyhow::bail!("{at}: condition {other:?} is neither \"OR\" nor \"AND\""),
    };
    let target = match a.regex_target.as_deref() {
        None | Some("secret") | Some("") => Target::Secret,
        Some("match") => Target::Match,
        Some("line") => Target::Line,
        Some(other) => anyhow::bail!("{at}: regexTarget {other:?} is not one of \"secret\", \"match\", \"line\""),
    };
    let mut regexes = Vec::new();
    for r in &a.regexes {
        let p = translate(r).map_err(|e| anyhow::anyhow!("{at}: {e}"))?;
        regexes.push(compile(&p).map_err(|e| anyhow::anyhow!("{at}: regex {r:?} does not compile: {e}"))?);
    }
    let unsupported = !a.paths.is_empty() || !a.commits.is_empty();
    if unsupported {
        warnings.push(format!(
            "{at}: `paths` and `commits` are not used (messages have neither){}",
            if all {
                "; with condition AND this allowlist never applies"
            } else {
                ""
            }
        ));
    }
    Ok(Allowlist {
        all,
        target,
        regexes,
        stopwords: a.stopwords.iter().map(|w| w.to_lowercase()).collect(),
        unsupported,
    })
}

/// A `'static` copy of `s`, made once per distinct text: rule ids and names
/// outlive a rules reload (they are in findings), and reloading the same
/// file again costs nothing.
fn intern(s: &str) -> &'static str {
    static SEEN: Mutex<Option<HashSet<&'static str>>> = Mutex::new(None);
    let mut seen = SEEN.lock().unwrap_or_else(|e| e.into_inner());
    let set = seen.get_or_insert_with(HashSet::new);
    if let Some(s) = set.get(s) {
        return s;
    }
    let leaked: &'static str = Box::leak(s.to_owned().into_boxed_str());
    set.insert(leaked);
    leaked
}

#[derive(Deserialize)]
struct File {
    #[serde(default)]
    rules: Vec<RuleSpec>,
    #[serde(default)]
    allowlist: Option<AllowlistSpec>,
    #[serde(default)]
    allowlists: Vec<AllowlistSpec>,
    #[serde(default)]
    extend: Option<toml::Value>,
    // Read so they are not reported as unknown.
    #[serde(default, rename = "title")]
    _title: Option<toml::Value>,
    #[serde(default, rename = "description")]
    _description: Option<toml::Value>,
    #[serde(flatten)]
    other: BTreeMap<String, toml::Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RuleSpec {
    id: Option<String>,
    description: Option<String>,
    regex: Option<String>,
    secret_group: Option<u32>,
    entropy: Option<f64>,
    #[serde(default)]
    keywords: Vec<String>,
    path: Option<String>,
    #[serde(default, rename = "tags")]
    _tags: Vec<String>,
    allowlist: Option<AllowlistSpec>,
    #[serde(default)]
    allowlists: Vec<AllowlistSpec>,
    #[serde(default)]
    required: Vec<toml::Value>,
    #[serde(flatten)]
    other: BTreeMap<String, toml::Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct AllowlistSpec {
    #[serde(default, rename = "description")]
    _description: Option<String>,
    condition: Option<String>,
    regex_target: Option<String>,
    #[serde(default)]
    regexes: Vec<String>,
    #[serde(default)]
    stopwords: Vec<String>,
    #[serde(default)]
    paths: Vec<String>,
    #[serde(default)]
    commits: Vec<String>,
    #[serde(default)]
    target_rules: Vec<String>,
}

#[cfg(test)]
mod tests;
