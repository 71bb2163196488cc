use super::*;
use crate::detect::secrets::{Budget, Finding, SecretScanner};

/// A configuration the way teams write them: an internal token format, a
/// context rule with a secret group and entropy, allowlists of each kind,
/// a global allowlist, and parts that mean nothing for network messages.
const ACME: &str = r#"
title = "acme gitleaks config"

[extend]
useDefault = true

[allowlist]
description = "global: test fixtures"
regexes = ['''acme_test_''']

[[rules]]
id = "acme-api-token"
description = "Acme internal API token"
regex = '''\b(acme_(?:live|test)_[a-z0-9]{32})\b'''
keywords = ["acme_live_", "acme_test_"]
tags = ["internal"]

[[rules]]
id = "acme-db-password"
description = "Acme database password in service configs"
regex = '''(?i)acme[_.-]?db[_.-]?pass(?:word)?\s*[:=]\s*["']?([^\s"']{8,64})'''
secretGroup = 1
entropy = 3.0
keywords = ["acme_db", "acme.db", "acmedb"]
  [[rules.allowlists]]
  condition = "OR"
  stopwords = ["hunter2"]
  [[rules.allowlists]]
  regexTarget = "line"
  regexes = ['''(?i)#\s*fixture''']

[[rules]]
id = "acme-legacy-key"
regex = '''\QAK:\E[A-F0-9]{24}'''
keywords = ["ak:"]
  [rules.allowlist]
  regexTarget = "match"
  regexes = ['''^AK:0{6}''']
  paths = ['''testdata/''']

[[rules]]
id = "acme-ssh-config"
path = '''\.acme/ssh_config$'''
"#;

fn load(text: &str) -> anyhow::Result<CustomRules> {
    let mut r = CustomRules::default();
    r.add_file(text, "acme.toml", &["github-pat-classic"])?;
    Ok(r)
}

fn scan(rules: &CustomRules, text: &str) -> Vec<Finding> {
    let s = SecretScanner::with_rules(&[], b"k", &[], &rules.rules);
    let mut out = Vec::new();
    s.scan_str(text, "$", &mut Budget::new(1 << 20), &mut out);
    out
}

#[test]
fn a_gitleaks_file_loads_with_its_warnings() {
    let r = load(ACME).unwrap();
    let ids: Vec<&str> = r.rules.iter().map(|r| r.id).collect();
    assert_eq!(ids, ["acme-api-token", "acme-db-password", "acme-legacy-key"]);
    assert_eq!(r.rules[0].name, "Acme internal API token");
    assert_eq!(r.rules[2].name, "acme-legacy-key", "no description: the id");
    let w = r.warnings.join("\n");
    assert!(w.contains("[extend] is not used"), "{w}");
    assert!(w.contains("rule acme-ssh-config: has only a `path`"), "{w}");
    assert!(w.contains("allowlist 1: `paths` and `commits` are not used"), "{w}");
    // The global allowlist applies to every rule of the file.
    assert_eq!(r.rules[0].allowlists.len(), 1);
    assert_eq!(r.rules[1].allowlists.len(), 3);
}

#[test]
fn rules_find_what_they_describe_and_allowlists_drop_the_rest() {
    let r = load(ACME).unwrap();
    let token = "acme_live_7f3k9q2m8x4v1b6n0p5r2t8w3y7z1c4d";
    let f = scan(&r, &format!("config:\n{token}\n"));
    assert_eq!(f.len(), 1, "{f:?}");
    assert_eq!(
        (f[0].rule, f[0].category, f[0].length),
        ("acme-api-token", "custom", token.len())
    );
    assert!(
        scan(&r, "acme_test_7f3k9q2m8x4v1b6n0p5r2t8w3y7z1c4d").is_empty(),
        "global allowlist"
    );
    assert!(scan(&r, "acme_live_short").is_empty());

    // secretGroup: the password, not the key name.
    let f = scan(&r, "ACME_DB_PASSWORD=Zr8#kQ2!vN5x");
    assert_eq!(f.len(), 1, "{f:?}");
    assert_eq!((f[0].length, f[0].prefix.as_str()), (12, "Zr8#"));
    assert!(
        scan(&r, "acme.db.pass: aaaaaaaabbbb").is_empty(),
        "entropy at or under 3.0"
    );
    assert!(
        scan(&r, "acme_db_password = Hunter2Xy9!qq").is_empty(),
        "stopword (case-insensitive)"
    );
    assert!(
        scan(&r, "acme_db_password = Zr8kQ2vN5xLp  # fixture").is_empty(),
        "line allowlist"
    );
    assert_eq!(
        scan(&r, "acme_db_password = Zr8kQ2vN5xLp\n# fixture").len(),
        1,
        "another line"
    );

    // \Q...\E quoting; a `match` allowlist; its `paths` are ignored under OR.
    assert_eq!(scan(&r, "legacy AK:9F3A6B2C8D1E4F7A0B5C6D2E").len(), 1);
    assert!(scan(&r, "legacy AK:000000AB8D1E4F7A0B5C6D2E").is_empty());
    assert!(
        scan(&r, "legacy AKX9F3A6B2C8D1E4F7A0B5C6D2E").is_empty(),
        "`:` is literal"
    );
}

#[test]
fn errors_name_the_file_the_rule_and_the_fix() {
    let e = |t: &str| load(t).unwrap_err().to_string();
    assert!(e("[[rules]]\nid = 'x'\nregex = '''a\\Cb'''").contains("acme.toml: rule x: `\\C`"));
    assert!(e("[[rules]]\nid = 'x'\nregex = '''(unclosed'''").contains("rule x: the regex does not compile"));
    assert!(e("[[rules]]\nid = 'x'\nregex = 'a(b)'\nsecretGroup = 2").contains("secretGroup = 2 but the regex has 1"));
    assert!(e("[[rules]]\nid = 'github-pat-classic'\nregex = 'x'").contains("already taken"));
    assert!(e("[[rules]]\nid = 'x'\nregex = 'a'\n[[rules]]\nid = 'x'\nregex = 'b'").contains("already taken"));
    assert!(e("[[rules]]\nregex = 'a'").contains("rule 1 has no id"));
    assert!(e("[[rules]]\nid = 'x'").contains("no `regex`"));
    assert!(e("[[rules]]\nid = 'x'\nregex = 'a'\n[[rules.allowlists]]\ncondition = 'XOR'").contains("neither"));
    assert!(e("rules = 3").contains("is not a valid gitleaks configuration"));
}

#[test]
fn rules_without_keywords_run_everywhere_and_say_so() {
    let r = load("[[rules]]\nid = 'bare'\nregex = '''zz[0-9]{6}zz'''\n").unwrap();
    assert!(r.warnings.iter().any(|w| w.contains("no keywords")));
    assert_eq!(scan(&r, "value zz483920zz here").len(), 1);
}

#[test]
fn and_allowlists_with_criteria_this_tool_lacks_never_apply() {
    let text = "[[rules]]\nid = 'x'\nregex = '''tok_[a-z0-9]{12}'''\nkeywords = ['tok_']\n[[rules.allowlists]]\ncondition = 'AND'\nregexes = ['tok_']\ncommits = ['abc']\n";
    let r = load(text).unwrap();
    assert!(
        r.warnings.iter().any(|w| w.contains("never applies")),
        "{:?}",
        r.warnings
    );
    assert_eq!(scan(&r, "tok_q8v3k1m9x2z7").len(), 1);
}

#[test]
fn translation_keeps_ordinary_escapes() {
    assert_eq!(translate(r"\d+\.\w\Q.*\E").unwrap(), r"\d+\.\w\.\*");
    assert_eq!(translate(r"\Qa+").unwrap(), r"a\+");
}
