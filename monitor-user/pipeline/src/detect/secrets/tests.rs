use super::*;
use proptest::prelude::*;
use serde_json::json;

/// Compiled once: 129 regexes take a while in debug builds.
fn scanner() -> &'static SecretScanner {
    static S: std::sync::OnceLock<SecretScanner> = std::sync::OnceLock::new();
    S.get_or_init(|| SecretScanner::new(b"test-key-test-key-test-key-test!"))
}

fn scan_text(s: &SecretScanner, text: &str) -> Vec<Finding> {
    let mut out = Vec::new();
    s.scan_str(text, "$", &mut Budget::new(1 << 20), &mut out);
    out
}

/// Every rule finds each of its examples (and the finding names it), and
/// none of its near misses. Fails when a rule stops matching its format.
#[test]
fn every_rule_matches_its_examples_and_not_its_counterexamples() {
    let s = scanner();
    let mut failures = Vec::new();
    for rule in builtin::RULES {
        assert!(rule.examples.len() >= 2, "{} needs at least two examples", rule.id);
        assert!(
            rule.counterexamples.len() >= 2,
            "{} needs at least two counterexamples",
            rule.id
        );
        for ex in rule.examples {
            let found = scan_text(s, ex);
            if !found.iter().any(|f| f.rule == rule.id) {
                failures.push(format!("{}: example not found: {ex}", rule.id));
            }
        }
        for ce in rule.counterexamples {
            let found = scan_text(s, ce);
            if found.iter().any(|f| f.rule == rule.id) {
                failures.push(format!("{}: counterexample matched: {ce}", rule.id));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} rule failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn at_least_sixty_rules_with_unique_ids_and_keywords() {
    let mut ids: Vec<&str> = builtin::RULES.iter().map(|r| r.id).collect();
    assert!(ids.len() >= 60, "only {} rules", ids.len());
    ids.sort_unstable();
    let n = ids.len();
    ids.dedup();
    assert_eq!(ids.len(), n, "duplicate rule ids");
    for r in builtin::RULES {
        assert!(
            !r.keywords.is_empty(),
            "{} has no keyword: it would run on every string",
            r.id
        );
        for k in r.keywords {
            assert_eq!(k.to_ascii_lowercase(), *k, "{}: keywords are lowercase", r.id);
            assert!(k.len() >= 3, "{}: keyword {k:?} is too short to filter anything", r.id);
        }
    }
}

#[test]
fn findings_never_hold_the_secret() {
    let s = scanner();
    for rule in builtin::RULES {
        let re = regex::Regex::new(rule.pattern).unwrap();
        for ex in rule.examples {
            // The secret as the rule extracts it.
            let caps = re.captures(ex).expect("example matches");
            let secret = caps.name("secret").or_else(|| caps.get(0)).unwrap().as_str();
            for f in scan_text(s, ex).into_iter().filter(|f| f.rule == rule.id) {
                // What is exported (serialized) and what a log or panic
                // would print (Debug); the finding carries the secret for
                // the relay memory, and neither may show it.
                // Rule id, name and category are static text (a rule's
                // name may share six letters with its URLs): left out.
                let f = Finding {
                    rule: "",
                    name: "",
                    category: "",
                    ..f
                };
                let json = format!("{} {f:?}", serde_json::to_string(&f).unwrap());
                // Beyond the 4-character prefix, no 6 consecutive
                // characters of the secret may appear.
                let chars: Vec<char> = secret.chars().collect();
                for w in chars.windows(6).skip(1) {
                    let piece: String = w.iter().collect();
                    assert!(!json.contains(&piece), "{}: finding leaks {piece:?}: {json}", rule.id);
                }
                // Found in a JSON document carried as text: in its decoded form.
                let decoded: Option<String> = serde_json::from_str(&format!("\"{secret}\"")).ok();
                let decoded_len = decoded.map_or(0, |d| d.chars().count());
                assert!(
                    f.length == chars.len() || (f.path.contains("<json>") && f.length == decoded_len),
                    "{}: {} at {}",
                    rule.id,
                    ex,
                    f.path
                );
                assert!(f.prefix.chars().count() <= 4);
                assert!(f.fingerprint.starts_with("hmac-sha256:") && f.fingerprint.len() == 12 + 32);
            }
        }
    }
}

#[test]
fn fingerprints_are_keyed_and_stable() {
    let a = SecretScanner::new(b"key-a-key-a-key-a");
    let b = SecretScanner::new(b"key-b-key-b-key-b");
    assert_eq!(a.fingerprint("s3cr3t"), a.fingerprint("s3cr3t"));
    assert_ne!(a.fingerprint("s3cr3t"), b.fingerprint("s3cr3t"));
    assert_ne!(a.fingerprint("s3cr3t"), a.fingerprint("s3cr3u"));
}

#[test]
fn github_checksum() {
    // A token built here: 30 random base62 characters + their checksum.
    let body = "Zq7rT2mW9xK4vB8nL3pD6sF1hJ5gC0";
    let tok = format!("ghp_{body}{}", base62(crc32(body.as_bytes()), 6));
    assert!(github_checksum_ok(&tok));
    let mut bad = tok.clone();
    bad.pop();
    bad.push(if tok.ends_with('A') { 'B' } else { 'A' });
    assert!(!github_checksum_ok(&bad));
    assert_eq!(crc32(b"123456789"), 0xcbf4_3926);
}

#[test]
fn json_leaves_paths_escapes_and_secret_named_keys() {
    let s = scanner();
    let body = "Zq7rT2mW9xK4vB8nL3pD6sF1hJ5gC0";
    let tok = format!("ghp_{body}{}", base62(crc32(body.as_bytes()), 6));
    // Escaped as JSON would escape it, with a \u escape in the middle.
    let raw = format!(
        r#"{{"params":{{"arguments":{{"note":"use \u0067{} now","db_password":"q8#Lm2$vX9!pR4&tZ7"}}}}}}"#,
        &tok[1..]
    );
    let pf = crate::detect::prefilter::Prefilter::new(&s.keyword_rules(), &[], &[]);
    assert!(
        pf.scan(raw.as_bytes()).must_parse_for_credentials(),
        "the \\u escape forces a full scan"
    );
    let v: Value = serde_json::from_str(&raw).unwrap();
    let mut out = Vec::new();
    s.scan_value(&v, "$", &mut Budget::new(1 << 20), &mut out);
    let gh = out
        .iter()
        .find(|f| f.rule.starts_with("github"))
        .expect("token behind a \\u escape");
    assert_eq!(gh.path, "$.params.arguments.note");
    let generic = out
        .iter()
        .find(|f| f.rule == GENERIC_KEY_RULE)
        .expect("secret-named key");
    assert_eq!(generic.path, "$.params.arguments.db_password");
}

#[test]
fn encoded_secrets_are_decoded() {
    use base64::Engine;
    let s = scanner();
    let body = "Zq7rT2mW9xK4vB8nL3pD6sF1hJ5gC0";
    let tok = format!("ghp_{body}{}", base62(crc32(body.as_bytes()), 6));
    let b64 = base64::engine::general_purpose::STANDARD.encode(format!("GITHUB_TOKEN={tok}\n"));
    let found = scan_text(s, &format!("attachment: {b64}"));
    assert!(
        found
            .iter()
            .any(|f| f.path == "$<base64>" && f.rule.starts_with("github")),
        "{found:?}"
    );
    // After a name joined to it by `=` (both base64 bytes), as in
    // `.env` files: `SSH_KEY_B64=LS0tLS1CRUdJTi...`.
    let key = "-----BEGIN EC PRIVATE KEY-----\nMHQCAQEEIMw+1g7/zUzTtrBFLjP7I0NaAY0RjzTCt6K9pakfNiIUoAcGBSuBBAAK\noUQDQgAEPc81kPsNHbOMeoSs/GBLTfOOZU8kMfIQ2WrpotEhMSldZsHguGHuAo0+\n4tB+ZvxsaCncKW9Y20RRdJRUkACtVw==\n-----END EC PRIVATE KEY-----\n";
    let b64 = base64::engine::general_purpose::STANDARD.encode(key);
    for text in [
        format!("SSH_PRIVATE_KEY_B64={b64}"),
        format!("export ID_EC_BASE64={b64}"),
    ] {
        let found = scan_text(s, &text);
        assert!(
            found
                .iter()
                .any(|f| f.path == "$<base64>" && f.rule.contains("private-key")),
            "{text}: {found:?}"
        );
    }
    let pct = format!("https://x.example/cb?t={}", tok.replace('_', "%5F"));
    let found = scan_text(s, &pct);
    assert!(found.iter().any(|f| f.path == "$<percent>"), "{found:?}");
}

#[test]
fn redaction_replaces_exactly_the_secrets() {
    let s = scanner();
    for rule in builtin::RULES {
        for ex in rule.examples {
            let red = s
                .redact(ex)
                .unwrap_or_else(|| panic!("{}: nothing redacted in {ex}", rule.id));
            assert!(red.contains("[REDACTED]"));
            assert!(
                s.redact(&red).is_none(),
                "{}: redacted text still has a secret: {red}",
                rule.id
            );
        }
    }
    assert_eq!(s.redact("nothing secret here"), None);
}

#[test]
fn placeholders_are_not_secrets() {
    for p in [
        "AKIAIOSFODNN7EXAMPLE",
        "${GITHUB_TOKEN}",
        "{{ api_key }}",
        "xxxxxxxxxxxxxxxxxxxx",
        "changeme",
        "aaaaaaaaaaaaaaaa",
        "<your-token>",
        "****************",
    ] {
        assert!(is_placeholder(p), "{p}");
    }
    assert!(!is_placeholder("q8#Lm2$vX9!pR4&tZ7"));
}

#[test]
fn budget_stops_work_and_says_so() {
    let s = scanner();
    let mut b = Budget::new(10);
    let mut out = Vec::new();
    s.scan_str(&"a".repeat(100), "$", &mut b, &mut out);
    assert!(b.exceeded);
}

#[test]
fn ordinary_mcp_payloads_are_clean() {
    let s = scanner();
    for text in [
        json!({"jsonrpc":"2.0","id":1,"result":{"content":[{"type":"text","text":"Echo: hello world"}]}}).to_string(),
        json!({"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"read_file","arguments":{"path":"/home/user/project/src/main.rs"}}}).to_string(),
        json!({"jsonrpc":"2.0","method":"notifications/progress","params":{"progressToken":"abc-123","progress":50,"total":100}}).to_string(),
        json!({"jsonrpc":"2.0","id":3,"result":{"tools":[{"name":"get-sum","description":"Returns the sum of two numbers","inputSchema":{"type":"object"}}]}}).to_string(),
    ] {
        let v: Value = serde_json::from_str(&text).unwrap();
        let mut out = Vec::new();
        s.scan_value(&v, "$", &mut Budget::new(1 << 20), &mut out);
        assert!(out.is_empty(), "false positive in {text}: {out:?}");
    }
}

proptest! {
    #[test]
    fn arbitrary_text_never_panics(text in "\\PC{0,300}") {
        let s = scanner();
        let _ = scan_text(s, &text);
    }

    #[test]
    fn arbitrary_json_never_panics(text in "[\\[\\]{}\":,a-zA-Z0-9_+/=%\\\\ -]{0,200}") {
        let s = scanner();
        if let Ok(v) = serde_json::from_str::<Value>(&text) {
            let mut out = Vec::new();
            s.scan_value(&v, "$", &mut Budget::new(4096), &mut out);
        }
    }

    /// Undoing the escapes of a JSON string gives the string back between
    /// its quotes, whatever it holds (and with `/` escaped too).
    #[test]
    fn json_unescape_inverts_the_serializer(text in "\\PC{0,80}|[\\x00-\\x7f]{0,80}", slash in any::<bool>()) {
        let mut json = serde_json::to_string(&text).unwrap();
        if slash {
            json = json.replace('/', "\\/");
        }
        prop_assert_eq!(json_unescape(&json).into_owned(), format!("\"{text}\""));
    }

    /// Arbitrary bytes around backslashes never panic and keep every
    /// character that is not part of an escape.
    #[test]
    fn json_unescape_never_panics(text in "[a\\\\u0-9dDfF\"/é]{0,60}") {
        let _ = json_unescape(&text);
    }
}

/// Forms that name a secret without holding one: an empty value whose
/// line ends (the next line's text is not its value), references into
/// secret stores, and one finding per secret when two rules match it.
#[test]
fn empty_values_store_references_and_one_finding_per_secret() {
    let s = scanner();
    for text in [
        "spring.datasource.password=\nexternal.api.timeout_ms=Xq7Lm2Zp9Rt4",
        "DB_PASSWORD=op://Production/crm-db/password",
        "STRIPE_SECRET_KEY: ${STRIPE_SECRET_KEY:?missing}",
        "stripeKey: process.env.STRIPE_SECRET_KEY!,",
    ] {
        let f = scan_text(s, text);
        assert!(
            f.is_empty(),
            "{text:?}: {:?}",
            f.iter().map(|f| f.rule).collect::<Vec<_>>()
        );
    }
    // A postgres URL is also a URL with credentials: one finding, the
    // more confident rule's.
    let f = scan_text(s, "DATABASE_URL=postgres://app:xS8F-sZ-onlYMEyOaS@db.internal:5432/app");
    assert_eq!(
        f.iter().map(|f| f.rule).collect::<Vec<_>>(),
        ["postgres-connection-string"]
    );
}

/// Secrets inside a JSON document that a tool returns as text, in `grep -n`
/// output, with commas in them; and values that look like secrets but are
/// hashes, public or well-known keys, or what is left of an empty value in
/// escaped text.
#[test]
fn json_documents_grep_output_and_look_alikes() {
    let s = SecretScanner::new(b"k");
    let found = |text: &str| -> Vec<String> {
        scan_text(&s, text)
            .iter()
            .map(|f| f.secret.expose().to_owned())
            .collect()
    };
    // A file read returned as a JSON document: the assignment sits in a
    // string of it, escaped once more.
    let doc = serde_json::json!({
        "path": "app/settings.py",
        "content": "CONFIG = {\n    \"secret\": \"zkkdKNRP+~6j*znt-6:8FT\",\n}\n",
    })
    .to_string();
    assert_eq!(found(&doc), ["zkkdKNRP+~6j*znt-6:8FT"]);
    // A secret found plain and parsed is reported once, decoded.
    let pem = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW\nQyNTUxOQAAACDJZ9zOj5HSDDb6WGhGfI/663W96k1YLHElhLt4/sdAKwAAAJj7oR0t+6Ed\n-----END OPENSSH PRIVATE KEY-----\n";
    let doc =
        serde_json::json!({"path": ".env", "content": format!("PRIVATE_KEY=\"{pem}\"\nAPP_ID=4805\n")}).to_string();
    let keys = found(&doc);
    assert_eq!(keys.len(), 1, "{keys:?}");
    assert!(
        keys[0].contains('\n') && !keys[0].contains("\\n"),
        "decoded form: {:?}",
        keys[0]
    );
    // grep -n output: the name follows `path:line:`.
    let grep = "$ grep -rn -C1 key .\nservices/media/.env:4:APP_SECRET=0a0a50cd1839b7e9e1b5d79ecdbbea6f174d79d9f881ed3455adac5b170455b1\nservices/media/.env-5-MAX_RETRIES=5";
    assert_eq!(
        found(grep),
        ["0a0a50cd1839b7e9e1b5d79ecdbbea6f174d79d9f881ed3455adac5b170455b1"]
    );
    assert_eq!(
        found("export POSTGRES_PASSWORD=zMw*,uLjwh~:LLTRa6fKbFR\n"),
        ["zMw*,uLjwh~:LLTRa6fKbFR"]
    );
    assert_eq!(
        found("*:5432:billing:build:j=0eyMU-Obuy%TEqMG\n"),
        ["j=0eyMU-Obuy%TEqMG"]
    );
    // A comma ends the value where another field starts, not at any `,x=`.
    assert_eq!(found("f(password=Sup3rS3cret9,host=db)"), ["Sup3rS3cret9"]);
    assert_eq!(found("password=Zq8,x=Lm2pW7v"), ["Zq8,x=Lm2pW7v"]);
    // A value cut in a log is still one; a signing key's fingerprint is
    // not, a key under the same name is.
    assert_eq!(found("password=Zr7kLm2Qx9..."), ["Zr7kLm2Qx9..."]);
    assert_eq!(
        found("GPG_KEY=Zk4pQ9wX2mR7vL3nB8tY5cH1Lq6Vd0Ws"),
        ["Zk4pQ9wX2mR7vL3nB8tY5cH1Lq6Vd0Ws"]
    );
    for not_secret in [
        // An ARN part and a CloudFormation dynamic reference after a colon.
        "arn:aws:secretsmanager:us-east-1:123456789012:secret:prod/api-key-AbCdEf",
        r#"MasterUserPassword: "{{resolve:secretsmanager:MyRDSSecret:SecretString:password}}""#,
        // A Django password hash, Jenkins' encrypted form.
        r#""password": "pbkdf2_sha256$600000$kNtB0MVBwpMcwRS2TLUzMr$MqVb67kN1PBHe5JMCKxuDlm6Ql2Esrb5M5ao1d2KfRA=","#,
        "<password>{AQAAABAAAAAQmGHvz8QcNOjKy8t1mxwF+MAlPdFosay6XmoszZynwe07UosOxYmv7WdpDnohIRBQ}</password>",
        // Supabase's public anon key and jwt.io's sample token.
        "SUPABASE_ANON_KEY=eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJpc3MiOiJzdXBhYmFzZSIsInJlZiI6Im5pc2hsb3h6ZGVtd2dnbm9iZHhsIiwicm9sZSI6ImFub24iLCJpYXQiOjE3MDAwMDAwMDAsImV4cCI6MjAxNTU3NjAwMH0.BDFFtmojvmcOLs3S7-vT2vPGS3LzQ2XSBWo04TAzeUw",
        "e.g. eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4gRG9lIiwiaWF0IjoxNTE2MjM5MDIyfQ.SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c",
        // Azurite's published development key; Algolia's search-only key.
        "AccountName=devstoreaccount1;AccountKey=Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==;",
        "ALGOLIA_SEARCH_ONLY_API_KEY=7fd37e9c639bd413c2d1c26e3e575e97",
        "FLASK_SECRET_KEY=fill-me-in",
        // Empty values and a Terraform reference, in escaped text.
        r#"{"text": "DATABASE_URL=\nOPENAI_API_KEY=\nSTRIPE_SECRET_KEY=\n"}"#,
        r#"resource \"aws_db_instance\" \"main\" {\n  password = var.db_password\n}"#,
        // Ciphertexts (dotenvx, SOPS, ejson), filtered and masked values,
        // a reference into a template's store, deployment-tool markers,
        // Datadog's browser token, a release key's fingerprint.
        r#"DATABASE_URL="encrypted:ER06EYi8jmgdkTs58quQ047OBn6Lssv7+4H4aEGgi2oj""#,
        "db_password: ENC[AES256_GCM,data:Tr5kq9Zx2Lm8,iv:Qw3e,tag:Zx9c,type:str]",
        r#""database_password": "EJ[1:kS5p/H94QyQbk4R4i77V9/VkgXFdPzt0R3LtnXJudg8=:ZbWXE0m3rdf1]""#,
        r#"{"headers": {"Authorization": "[Filtered]"}, "data": {"password": "[Filtered]"}}"#,
        "api_key = sk-...Bog8",
        r#"MAILGUN_API_KEY={{ secret "stripe/api_key" }}"#,
        "DB_PASSWORD=@@DB_PASSWORD@@",
        "clientToken: 'pube7127f7808b92a723cf8f537c71ede49',",
        "GPG_KEY=D81DD5DD96538B1817E3FB88219AA241932E4AA0",
        r"PRIVATE_KEY=C:\certs\prod\server.key",
        // A log line's idempotency key, parsed out of a JSON document.
        r#"{"level":"info","msg":"processed","idempotency_key":"36ce3ec3-4119-4a83-8411-2500cbe9eee5"}"#,
    ] {
        assert_eq!(found(not_secret), Vec::<String>::new(), "{not_secret}");
    }
}

/// A JSON document carried as text is charged to the budget once, not
/// once plain and again parsed; and what the scan finds in it is redacted
/// from it.
#[test]
fn json_documents_cost_their_size_once_and_are_redacted() {
    let s = SecretScanner::new(b"k");
    let filler = "x".repeat(2000);
    let doc = serde_json::json!({
        "path": "app/settings.py",
        "notes": filler,
        "content": "CONFIG = {\n    \"secret\": \"zkkdKNRP+~6j*znt-6:8FT\",\n}\n",
    })
    .to_string();
    let mut budget = Budget::new(doc.len() + 16);
    let mut out = Vec::new();
    s.scan_str(&doc, "$", &mut budget, &mut out);
    assert_eq!(out.len(), 1, "found within a budget of the document's size");
    assert!(!budget.exceeded && budget.remaining <= 16);
    let redacted = s.redact(&doc).expect("redacted");
    assert!(!redacted.contains("zkkdKNRP"), "{redacted}");
    let back: serde_json::Value = serde_json::from_str(&redacted).expect("still a JSON document");
    assert_eq!(back["notes"], filler.as_str());
}

/// Forms that a look-alike takes and that hold no credential: cursors of
/// listings, idempotency keys, interpolated names in connection strings,
/// the names of secrets in a store, a SealedSecret's ciphertext, a Twilio
/// account SID alone (an identifier); and forms of real ones: a value alone
/// on its line under a label, a tab-separated listing, and vendor formats
/// (Salesforce, Yandex, Fly.io, Asana, an EVM key given to a wallet).
#[test]
fn cursors_names_and_ciphertexts_are_not_secrets_and_labelled_lines_are() {
    let s = scanner();
    let clean = [
        "next_page_token: Qz8LmT2vXw4Rp7NkB1cY6dHf3JsG9aEu0WoZiMqVn5Kx",
        r#"{"NextToken": "AAMA-EFRSURBSGpoSkRleEp6ZU9yZ3gvd0tjZ3dMZz09ZmZXS0xB"}"#,
        r#"{"continuationToken": "b3ZlcnNlZW4/cGFnZT0xMiZzaXplPTUwJnNvcnQ9ZGVzYw=="}"#,
        "Idempotency-Key: 5f0c2a9e-7b3d-41c8-a6e2-f9d0b1c7e4a3",
        r#"conn = f"Server={host};Database={db};User Id={user};Password={db_password};""#,
        "gcloud secrets versions access latest --secret=payments-api-key --project=acme",
        "TWILIO_ACCOUNT_SID=AC7d2f9a4c1e8b3d6f0a5c9e2b7d4f1a8c",
        "Token ID:\n7d2f9a4c-1e8b-4d6f-8a5c-9e2b7d4f1a8c\n",
        "Next page token:\nQz8LmT2vXw4Rp7NkB1cY6dHf3JsG9aEu0WoZiMqVn5Kx\n",
    ];
    for text in clean {
        let found = scan_text(s, text);
        assert!(found.is_empty(), "{text}: {found:?}");
    }
    let sealed = format!(
        "spec:\n  encryptedData:\n    password: AgC{}\n",
        "Xq7Lm2Zp9Rv4Nk8Tb3Yc6Jd1Fg0Sa5WeHuOiPl+/".repeat(10)
    );
    assert!(scan_text(s, &sealed).is_empty(), "a SealedSecret's ciphertext");

    let found = [
        ("Staging API token:\n-----\nR7kQ2mZx9Lp4Wt8Nv3Bc6Yh1Jd5Fg0SaKe\n-----\n", "labelled-secret-line"),
        ("the new API key:\n\n  Wq4Lp9Zx2Rt7Nv3Bk8Yc1Jd6Fg0SaHe\n", "labelled-secret-line"),
        // A passphrase of words under a name that is not `secret` alone.
        ("CLIENT_SECRET=sprout-gallant-yodel-repel", "generic-secret-assignment"),
        ("app\tSTRIPE_WEBHOOK_SECRET\tq8Vd2LmZx4Rt7NwKp3Hs9Cb\tteam-a\n", "env-listing-secret"),
        (
            "session = 00D5e000001AbCdE!AQ8AQGm3xT.Zk7Lp2Rv9Nq4Wb6Yc1Hd8Fg3Js0Ku5Mt2Xe7Pa.Oi9Rl4Sn6Vb1Qw3Ez8Tc5Yg0Uh2Ij7Kf4Lm9Nd6Pb1Qc3",
            "salesforce-access-token",
        ),
        ("AQVNx7Kq2mZLp9Rt4Wv8Nb3Yc6Jd1Fg0SaHeUi5O", "yandex-cloud-api-key"),
        (
            "FLY_API_TOKEN=FlyV1 fm2_k8Lq2Zp9Xw4Rv7Nt3Bc6Yh1Jd5Fg0SaKe+Mu/Oi8Pl2Qr4Sn6Tb1Vc3Wd5Xe7Yf9Zg0Ah2Bi4Cj6Dk8El",
            "flyio-macaroon-token",
        ),
        (
            r#"headers = {"Authorization": "Bearer 1/1203948576102938:8f3a9c2e7b1d4f6a0c5e9b2d7f1a4c8e"}"#,
            "asana-personal-access-token",
        ),
        (
            r#"account = Account.from_key(private_key="0x4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318")"#,
            "ethereum-private-key",
        ),
        (
            r#"twilio = Client("AC7d2f9a4c1e8b3d6f0a5c9e2b7d4f1a8c", "9f2c7a4e1b8d3f6a0c5e9b2d7f1a4c8e")"#,
            "twilio-credential-pair",
        ),
    ];
    for (text, rule) in found {
        let f = scan_text(s, text);
        assert!(f.iter().any(|f| f.rule == rule), "{rule}: {text}: {f:?}");
    }
}

/// Look-alikes of corpus 7 (docs, audit logs, ciphertexts, argument
/// lists): no finding. Each names what makes it no credential.
#[test]
fn documented_examples_digests_ciphertexts_and_names_are_not_secrets() {
    let s = scanner();
    for text in [
        // A vendor prefix alone before dots (docs).
        r#"stripe.api_key = "sk_live_..."  # never commit the real key"#,
        // A Windows variable, and the name of a value in a docs command.
        r#"<add key="ClearTextPassword" value="%NUGET_FEED_PASSWORD%" />"#,
        "curl -u USERNAME:API_TOKEN https://acme.atlassian.test/rest/api/3/myself",
        // Vault's audit log: every token as an HMAC.
        r#"{"auth": {"client_token": "hmac-sha256:3eb2063efbb82618b528355c69a5dfffb594aefdb97d465937fb52ba15de8f4d"}}"#,
        // The RFCs' own examples.
        "Authorization: Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==",
        r#"{"access_token":"2YotnFZFEjr1zCsicMWpAA","token_type":"example","expires_in":3600}"#,
        // A KMS ciphertext under a name that says so.
        "ENCRYPTED_DB_PASSWORD=AQICAH9cVVBO/zc9nu6syH4KIQ+v+z+Il3ARpmB/yu4l6FOaf8jQKkm+MpP/4o35EqrAQs56PZQPpjYlu1bKK6lY",
        // An option in an argument list after a word ending in `token`.
        r#"args: ["eks", "get-token", "--cluster-name", "prod-eks"]"#,
        // Angle brackets around a name.
        "DB_PASSWORD=<db-password-from-vault>",
        // Corpus 8: a stored password hash, a WebSocket handshake nonce, the
        // name of a Kubernetes Secret, an encrypted envelope, a marked
        // placeholder.
        r#"{"UserName": "ops@contoso.test", "PasswordHash": "AQAAAAIAAYagAAAAEH2ZW4YfDyxIZ+/fdcPH/WVr1yXU7bKVA3O7U8Lza6D3qRcEbQSOzzWV8AcHllac"}"#,
        "GET /chat HTTP/1.1\nUpgrade: websocket\nSec-WebSocket-Key: j10HZd+UEljSwU0pcjPf6w==\n",
        "postgresql:\n  auth:\n    password: \"\"\n    existingSecret: app-postgresql\n",
        r#"{"password": {"encrypted_data": "3/361xgKqPn9Gzv32e/PbU5+ACNAs0x+cYxfvaUIa6x5B/w/3NtJUdrorBVCn2TM", "iv": "iTZ386LBPyhAghC9", "auth_tag": "qqAlXXQc4A6pe5+VYYn52A==", "cipher": "aes-256-gcm"}}"#,
        "SECRET_KEY = 'django-insecure-CHANGE-ME'",
    ] {
        let found = scan_text(s, text);
        assert!(found.is_empty(), "{text}: {found:?}");
    }
}

/// A password that holds a lone `>` is still a password; a name in another
/// script is a name (it does not make every value "repeat the name").
#[test]
fn generated_passwords_with_angle_brackets_and_localized_names_are_found() {
    let s = scanner();
    for text in [
        "$ docker login iad.ocir.io -u 'tenancy/ci@acme.test' -p '0XEj2CATS>U:F9rvGUW;'",
        "数据库连接信息：主机 10.0.3.15，用户名 root，密码 T0aj5$mTq8",
        "Hola Marta, la contraseña del servidor de base de datos es Nebula2008? (usuario: admin_ventas).",
        "db:\n  passwort: Vq8#kLz2Rt",
    ] {
        let found = scan_text(s, text);
        assert!(!found.is_empty(), "{text}: nothing found");
    }
    assert_eq!(name_strength("пароль"), NameStrength::Strong);
    assert!(!is_reference_or_code("T0aj5mTq8", "密码"));
}

/// Placeholder words count when a person wrote them (`fake`, `FAKE`,
/// `Fake`), not when random material spells them in mixed case.
#[test]
fn placeholder_words_in_random_material_do_not_hide_it() {
    assert!(is_placeholder("my-fake-token-value"));
    assert!(is_placeholder("FAKE_KEY_9f8e7d6c"));
    assert!(is_placeholder("FakeToken9f8e7d6c"));
    assert!(!is_placeholder(
        "AoGAd/8aKFakEbPB4WeGk9SNI3I9a6CVS7ZTlTQ2ccMFSzzURCN3gtteqFzE"
    ));
    assert!(!is_placeholder("0XEj2CATS>U:F9rvGUW;"));
    assert!(is_placeholder("<your-token>"));
}

/// Review of corpus 8's fixes: the exceptions stay narrow. A passphrase
/// beside an envelope's parts, a password for an unencrypted store, and a
/// `CHANGEME`-style word in a person's casing still decide as before.
#[test]
fn the_exceptions_for_envelopes_encrypted_names_and_markers_stay_narrow() {
    let s = scanner();
    for text in [
        r#"{"cipher": "aes-256-gcm", "nonce": "a1b2", "passphrase": "Tr0ub4dor&3xQ"}"#,
        "UNENCRYPTED_DB_PASSWORD=Vq8#kLz2Rt7mWp",
        "ENCRYPTED_VOLUME_PASSPHRASE=Vq8#kLz2Rt7mWp",
    ] {
        assert!(!scan_text(s, text).is_empty(), "{text}: nothing found");
    }
    assert!(is_placeholder("ChangeMe123"));
    assert!(is_placeholder("Not-A-Real-Key-7f3a"));
    assert!(!is_placeholder("NOC_READ_ONLY"));
}

/// An AWS key pair as values of one JSON object is reported under its own
/// rules, though each value, scanned alone, has no context; an ID alone in
/// an object (an IAM listing) is not.
#[test]
fn aws_key_pair_in_one_object_is_found_an_id_alone_is_not() {
    let s = scanner();
    let scan = |v: serde_json::Value| {
        let mut out = Vec::new();
        s.scan_value(&v, "$", &mut Budget::new(1 << 20), &mut out);
        out
    };
    let pair = scan(
        json!({"AccessKeyId": "AKIAQ7XRT2MB5VZW4NLD", "SecretAccessKey": "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"}),
    );
    let rules: Vec<&str> = pair.iter().map(|f| f.rule).collect();
    assert!(
        rules.contains(&"aws-access-key-id") && rules.contains(&"aws-secret-access-key"),
        "{rules:?}"
    );
    assert!(pair.iter().any(|f| f.path == "$.SecretAccessKey"), "{pair:?}");
    let listing = scan(json!({"UserName": "ci", "AccessKeyId": "AKIAQ7XRT2MB5VZW4NLD", "Status": "Active"}));
    assert!(listing.is_empty(), "{listing:?}");
}

/// Search keys of browser search services are public by name; other
/// services' search API keys, and admin keys, are not.
#[test]
fn only_browser_search_keys_are_public_by_name() {
    for public in [
        "ALGOLIA_SEARCH_KEY",
        "NEXT_PUBLIC_ALGOLIA_SEARCH_API_KEY",
        "MEILI_SEARCH_KEY",
        "typesenseSearchOnlyKey",
    ] {
        assert!(names_no_secret(public), "{public}");
    }
    for secret in [
        "ELASTICSEARCH_API_KEY",
        "BRAVE_SEARCH_API_KEY",
        "AZURE_SEARCH_API_KEY",
        "MEILISEARCH_MASTER_KEY",
        "ALGOLIA_ADMIN_KEY",
        "ALGOLIA_WRITE_SEARCH_KEY",
    ] {
        assert!(!names_no_secret(secret), "{secret}");
    }
}

/// `myPassword` is a documentation placeholder; a password that merely
/// starts with `my` is not.
#[test]
fn my_placeholders_are_whole_words_only() {
    for p in ["myPassword", "mySecretKey", "myApiKey", "myDbPassword", "[password]"] {
        assert!(is_placeholder(p), "{p}");
    }
    for real in ["myPassionFruit42", "mySecretGarden", "myPasswordIs9x!"] {
        assert!(!is_placeholder(real), "{real}");
    }
}

/// Validation rules name what a password must be; a password made of
/// pipes and words is still a password.
#[test]
fn validation_rules_are_not_passwords() {
    let s = scanner();
    for text in [
        "'password' => 'required|string|min:12|confirmed',",
        "$rules = ['password' => 'nullable|min:8|max:64'];",
    ] {
        assert!(scan_text(s, text).is_empty(), "{text}: {:?}", scan_text(s, text));
    }
    assert!(assignment_ok("password", "tiger|Lamp9|sun_Rise"));
    assert!(!assignment_ok("password", "required|string|min:12|confirmed"));
}

/// Rules are compiled when a message first selects them: a fresh scanner
/// holds no automaton, text without a keyword compiles nothing, and a
/// rule's example compiles that rule (and those sharing its keywords), not
/// the whole set; clones share what was compiled.
#[test]
fn rules_are_compiled_when_a_message_first_selects_them() {
    let s = SecretScanner::new(b"test-key-test-key-test-key-test!");
    let compiled = |s: &SecretScanner| s.rules.iter().filter(|c| c.regex.is_compiled()).count();
    assert_eq!(compiled(&s), 0, "a fresh scanner compiled rules");
    assert!(scan_text(&s, "hello world, nothing to see here").is_empty());
    assert_eq!(compiled(&s), 0, "text without a keyword compiled rules");
    let clone = s.clone();
    let rule = &builtin::RULES[0];
    let found = scan_text(&s, rule.examples[0]);
    assert!(
        found.iter().any(|f| f.rule == rule.id),
        "{} not found: {found:?}",
        rule.id
    );
    let index = s.rules.iter().position(|c| c.def.id == rule.id).unwrap();
    assert!(s.rules[index].regex.is_compiled());
    let n = compiled(&s);
    assert!(
        n < s.rules.len() / 4,
        "{n} of {} rules compiled for one example",
        s.rules.len()
    );
    assert_eq!(
        compiled(&clone),
        n,
        "a clone compiled its own or missed the shared ones"
    );
}
