//! Whether a name and value assigned to it are a credential: how strongly
//! the name says secret, placeholders and references that are not, and the
//! value's entropy.

/// Values that are obviously not real secrets: documentation placeholders,
/// templates, masks, repeated characters.
pub fn is_placeholder(s: &str) -> bool {
    let lower = s.to_ascii_lowercase();
    const MARKERS: &[&str] = &[
        "example",
        "changeme",
        "placeholder",
        "your_",
        "your-",
        "yourtoken",
        "-here",
        "_here",
        "fake",
        "not-a-real",
        "not_a_real",
        "not-real",
        "change-this",
        "change_this",
        "change-me",
        "change_me",
        "replace-me",
        "replace_me",
        "replaceme",
        "fill-me",
        "fill_me",
        "fillme",
        "dummy",
        "redacted",
        // What loggers and error trackers put in place of a value, and
        // masked displays (`sk-...Bog8`).
        "[filtered]",
        "[hidden]",
        "[masked]",
        "[removed]",
        "[sensitive]",
        "xxxx",
        "${",
        "{{",
        "}}",
        "****",
    ];
    if MARKERS.iter().any(|m| has_marker(s, &lower, m)) || has_typed_sequence(s.as_bytes()) {
        return true;
    }
    // `<TOKEN>`, `<your key>`, or one cut by the match (`<token`): angle
    // brackets around a name. A generated password may hold a lone `>`.
    let open = s.find('<');
    let close = s.rfind('>');
    if s.starts_with('<') || s.ends_with('>') || matches!((open, close), (Some(o), Some(c)) if o < c) {
        return true;
    }
    // `[password]`, `[[username]:[password]]` (the notation of docs for an
    // optional or variable part): square brackets around a lower-case word.
    let trimmed = s.trim_matches(|c| c == '[' || c == ']');
    if s.starts_with('[') && !trimmed.is_empty() && trimmed.bytes().all(|b| b.is_ascii_lowercase() || b == b'_') {
        return true;
    }
    // `myPassword`, `mySecretKey` (connectionstrings.com and every driver's
    // docs): `my` and capitalized words, one of them naming the value.
    if let Some(mut rest) = s.strip_prefix("my") {
        // Only capitalized words of that kind: `myPassionFruit` is a password.
        const WORDS: &[&str] = &[
            "Password", "Pass", "Pwd", "Secret", "Token", "Api", "Key", "Db", "Admin", "User",
        ];
        let named = !rest.is_empty();
        while let Some(w) = WORDS.iter().find(|w| rest.starts_with(**w)) {
            rest = &rest[w.len()..];
        }
        if named && rest.is_empty() {
            return true;
        }
    }
    // An interpolated name (`Password={password};` in an f-string or a C#
    // interpolated string): braces around a lower-case identifier.
    if let Some(inner) = s.strip_prefix('{').and_then(|r| r.strip_suffix('}')) {
        if inner.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
            && inner
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'.')
        {
            return true;
        }
    }
    // A masked display (`sk-...Bog8`), or a prefix alone before the dots
    // (`sk_live_...` in docs): short on both sides of the dots. A value cut
    // in a log (`Zr7kLm2Qx9...`) is still judged.
    for dots in ["...", "\u{2026}"] {
        if let Some((a, b)) = s.split_once(dots) {
            if !a.is_empty() && a.len() <= 8 && b.len() <= 8 {
                return true;
            }
        }
    }
    // `%NUGET_FEED_PASSWORD%` (a Windows variable), and `API_TOKEN` (the
    // name of a value, `curl -u USERNAME:API_TOKEN` in docs): upper-case
    // words joined by underscores, one of them naming what the value is.
    let wrapped = s.len() > 2 && s.starts_with('%') && s.ends_with('%');
    let inner = if wrapped { &s[1..s.len() - 1] } else { s };
    let words: Vec<&str> = inner.split('_').collect();
    let upper_snake = words.len() >= 2
        && words
            .iter()
            .all(|w| !w.is_empty() && w.bytes().all(|b| b.is_ascii_uppercase()));
    const WHAT: &[&str] = &[
        "TOKEN",
        "KEY",
        "PASSWORD",
        "PASS",
        "PWD",
        "SECRET",
        "APIKEY",
        "CREDENTIALS",
    ];
    if upper_snake && (wrapped || words.iter().any(|w| WHAT.contains(w))) {
        return true;
    }
    // Published keys of local emulators: Azurite's (and the Azure Storage
    // Emulator's) development account.
    // And the sample key of Mailgun's documentation.
    // The examples of the RFCs that define HTTP Basic (`Aladdin:open
    // sesame`, RFC 7617 and 2617) and OAuth 2.0 (RFC 6749's access and
    // refresh tokens, RFC 6750's bearer token), copied into countless docs.
    const WELL_KNOWN: &[&str] = &[
        "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==",
        "key-3ax6xnjp29jd6fds4gc373sgvjxteol0",
        "QWxhZGRpbjpvcGVuIHNlc2FtZQ==",
        "2YotnFZFEjr1zCsicMWpAA",
        "tGzv3JOkF0XG5Qx2TlKWIA",
        "mF_9.B5f-4.1JqM",
    ];
    if WELL_KNOWN.iter().any(|k| s.contains(k)) {
        return true;
    }
    // The word itself (`postgres://user:password@host`), `my-secret`, and
    // Python's `%(name)s` interpolation.
    const WORDS: &[&str] = &[
        "password",
        "passwd",
        "pass",
        "pwd",
        "secret",
        "token",
        "my-secret",
        "my_secret",
        "mysecret",
        "foobared",
    ];
    if WORDS.contains(&lower.as_str()) || lower.starts_with("%(") || lower.starts_with("%%(") {
        return true;
    }
    let mut chars = s.chars().filter(|c| c.is_ascii_alphanumeric());
    match chars.next() {
        Some(first) => chars.all(|c| c == first),
        None => true,
    }
}

/// `marker` in `s` (`lower` is `s` in ASCII lower case) written the way a
/// person writes a word: `fake`, `FAKE` or `Fake`. Random material holds
/// four-letter words in mixed case by chance (`aKfAkE` in a PEM body);
/// a person's placeholder does not.
fn has_marker(s: &str, lower: &str, marker: &str) -> bool {
    lower.match_indices(marker).any(|(i, m)| {
        let Some(orig) = s.get(i..i + m.len()) else {
            return true;
        };
        // Long markers (`changeme`, `your_`...) do not occur by chance and
        // come in any casing (`ChangeMe`, `yourToken`).
        if m.len() > 5 {
            return true;
        }
        let letters: Vec<u8> = orig.bytes().filter(u8::is_ascii_alphabetic).collect();
        let all_lower = letters.iter().all(u8::is_ascii_lowercase);
        let all_upper = letters.iter().all(u8::is_ascii_uppercase);
        let capitalised =
            letters.first().is_some_and(u8::is_ascii_uppercase) && letters[1..].iter().all(u8::is_ascii_lowercase);
        all_lower || all_upper || capitalised
    })
}

/// How sure a key name is that its value is a secret.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NameStrength {
    /// `password`, `secret`, `token`, `api_key`, `*_pat`...: short values count.
    Strong,
    /// `*_key`, `fooKey`, `*.login`, `auth`: only long random values count.
    Weak,
    /// Not a secret name (or one of the `*_key` names that are not secrets).
    None,
}

/// Names that hold no secret although they say `key`, `pass` or
/// `token` (`idempotency_key`, `bypass`, `max_tokens`, `public_key`).
pub fn names_no_secret(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    let lower = lower.trim_start_matches(['$', '@', '-', '.', '>', ':']);
    // The last word of the name, separators kept: `_pass` yes, `bypass` no.
    const NOT_SECRET: &[&str] = &[
        "public_key",
        "publickey",
        "public-key",
        "pubkey",
        "primary_key",
        "primarykey",
        "foreign_key",
        "foreignkey",
        "sort_key",
        "sortkey",
        "partition_key",
        "partitionkey",
        "cache_key",
        "cachekey",
        "idempotency_key",
        "idempotencykey",
        "idempotency-key",
        // Pagination and sync cursors (`next_page_token`, AWS `NextToken`,
        // `continuationToken`): opaque positions in a listing.
        "page_token",
        "pagetoken",
        "page-token",
        "next_token",
        "nexttoken",
        "continuation_token",
        "continuationtoken",
        "continuation-token",
        "sync_token",
        "synctoken",
        "resume_token",
        "resumetoken",
        // What a check compares against (`PasswordHash`, ASP.NET Identity's
        // `AQAAAA...`; `password_digest`), and WebSocket's handshake nonce.
        "hash",
        "digest",
        "websocket-key",
        "websocket_key",
        "websocket-accept",
        // An AEAD cipher's authentication tag: public beside its ciphertext.
        "auth_tag",
        "authtag",
        "authentication_tag",
        "hotkey",
        "monkey",
        "turnkey",
        "keyboard_key",
        "lookup_key",
        "row_key",
        "rowkey",
        "group_key",
        "object_key",
        "objectkey",
        "s3_key",
        "map_key",
        "dedup_key",
        "routing_key",
        "routingkey",
        "shortcut_key",
        "hash_key",
        "hashkey",
        "range_key",
        "rangekey",
        "registry_key",
        "license_key_id",
        "access_key_id",
        "accesskeyid",
        "key_id",
        "keyid",
        "token_type",
        // Labels of what is not the token itself (`Token ID:`).
        "token_id",
        "tokenid",
        "token_address",
        "token_url",
        "token_endpoint",
        "token_name",
        "tokentype",
        "bypass",
        "compass",
        "max_tokens",
        "author",
        "oauth",
        "passkey",
        // Meant to be public: browser and mobile clients carry them.
        "public_token",
        "publictoken",
        "publishable_key",
        "publishablekey",
        "public_api_key",
        "site_key",
        "sitekey",
        // A Web Push (VAPID) public key.
        "applicationserverkey",
        // Algolia's search-only key is meant for browsers, as are the
        // search keys of Meilisearch and Typesense (`ALGOLIA_SEARCH_KEY`).
        "search_only_api_key",
        "search_only_key",
        "searchonlyapikey",
        // An HTTP cache's key (`X-Cache-Key:`): a digest of the request.
        "cache-key",
    ];
    // `OLDPWD`: the shell's previous directory (`PWD` is judged by its
    // value: a path is the shell's, see `is_reference_or_code`).
    // A bare `key` names anything (`Cache restored from key: ...`), and a
    // word after a colon is part of an ARN (`...:secret:prod/api-key`) or
    // of a CloudFormation reference (`{{resolve:secretsmanager:MySecret:...}}`);
    // a constant name in capitals is a name of its own (`grep -n` prints
    // `.env:4:DB_PASSWORD=...`).
    let arn_part = name.starts_with(':')
        && !name[1..]
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_');
    NOT_SECRET.iter().any(|n| lower.ends_with(n))
        || lower == "oldpwd"
        || lower == "key"
        || arn_part
        || browser_search_key(lower)
}

/// The search key of a search service meant for browsers
/// (`ALGOLIA_SEARCH_KEY`, `MEILI_SEARCH_KEY`, `typesenseSearchKey`); not
/// their admin or master keys, nor other services' search API keys
/// (`ELASTICSEARCH_API_KEY`, `BRAVE_SEARCH_API_KEY` are secrets).
fn browser_search_key(lower: &str) -> bool {
    let l = lower.replace("meilisearch", "meili").replace("docsearch", "docs");
    ["algolia", "meili", "typesense"].iter().any(|v| l.contains(v))
        && l.contains("search")
        && !["admin", "master", "write"].iter().any(|w| l.contains(w))
}

/// Judges a key name (`DB_PASSWORD`, `fooKey`, `sonar.login`,
/// `aws.secretkey`, `GITHUB_PAT`).
pub fn name_strength(name: &str) -> NameStrength {
    if names_no_secret(name) {
        return NameStrength::None;
    }
    let lower = name.to_ascii_lowercase();
    let lower = lower.trim_start_matches(['$', '@', '-', '.', '>', ':']);
    const STRONG: &[&str] = &[
        "password",
        "passwd",
        "passphrase",
        "pwd",
        "secret",
        "token",
        "apikey",
        "api_key",
        "api-key",
        "secretkey",
        "secret_key",
        "secret-key",
        "privatekey",
        "private_key",
        "private-key",
        "accesskey",
        "access_key",
        "access-key",
        "credential",
        "credentials",
        "client_secret",
    ];
    if STRONG.iter().any(|w| lower.ends_with(w)) {
        return NameStrength::Strong;
    }
    // "Password" in the languages teams write notes and configs in.
    const LOCALIZED: &[&str] = &[
        "passwort",
        "kennwort",
        "contraseña",
        "contrasena",
        "mot_de_passe",
        "motdepasse",
        "senha",
        "wachtwoord",
        "hasło",
        "haslo",
        "lösenord",
        "losenord",
        "salasana",
        "adgangskode",
        "passord",
        "пароль",
        "密码",
        "密碼",
        "口令",
        "パスワード",
        "비밀번호",
    ];
    let folded = name.to_lowercase();
    if LOCALIZED.iter().any(|w| folded.ends_with(w)) {
        return NameStrength::Strong;
    }
    let sep_word = |w: &str| {
        lower == w
            || [b'_', b'-', b'.']
                .iter()
                .any(|s| lower.ends_with(&format!("{}{w}", *s as char)))
    };
    if sep_word("pass") || sep_word("pat") {
        return NameStrength::Strong;
    }
    // camelCase `fooKey`, `fooPass`: the original spelling has the capital.
    if name.ends_with("Key") || sep_word("key") || sep_word("login") || sep_word("auth") || lower == "auth" {
        return NameStrength::Weak;
    }
    if name.ends_with("Pass") || name.ends_with("Pat") {
        return NameStrength::Strong;
    }
    NameStrength::None
}

/// Values of secret-named keys that are not secrets: references to
/// variables (`${X}`, `$password`, `process.env.X`, `config.db.password`,
/// `DB_PASSWORD`), types and keywords (`string`, `null`, `true`), or
/// identifiers (`accessToken`, `user_password`).
pub fn is_reference_or_code(value: &str, name: &str) -> bool {
    // TypeScript's `x!` and `x?` assertions end code, not secrets.
    let v = value
        .trim_matches(|c| c == '"' || c == '\'')
        .trim_end_matches(['!', '?']);
    if v.starts_with('$') || v.starts_with("%(") || v.starts_with("%{") || v.starts_with("#{") {
        return true;
    }
    if v.starts_with('%') && v.ends_with('%') && v.len() > 2 {
        return true; // %WINDOWS_VAR%
    }
    if v.starts_with('!') && v.len() > 1 && v[1..].bytes().all(|b| b.is_ascii_alphabetic()) {
        return true; // YAML tags: !Ref, !vault
    }
    // File paths (`./db_password.txt`, `/run/secrets/x`, `~/.token`), Rust
    // and C++ paths (`std::env::var`), optional chaining and calls
    // (`req.headers.authorization?.split`, `getToken()`), Azure Key Vault
    // references (`@Microsoft.KeyVault(...)`).
    // A Windows path (`C:\\certs\\server.key`).
    let b = v.as_bytes();
    if b.len() > 3 && b[0].is_ascii_alphabetic() && b[1] == b':' && b[2] == b'\\' {
        return true;
    }
    if ["/", "./", "../", "~/"].iter().any(|p| v.starts_with(p))
        || ["::", "?.", "()", "->"].iter().any(|p| v.contains(p))
        || v.to_ascii_lowercase().starts_with("@microsoft.keyvault")
    {
        return true;
    }
    // References into secret stores: 1Password `op://`, AWS ARNs, Vault,
    // and the shell's `${X:?message}` tail.
    const STORES: &[&str] = &[
        // Ciphertexts, safe to show: dotenvx, SOPS and Jasypt, ejson,
        // Vault transit, Spring Cloud Config.
        "encrypted:",
        "enc[",
        "enc(",
        "ej[",
        "vault:v",
        "{cipher}",
        "op://",
        "arn:",
        "vault:",
        "awssm:",
        "sm://",
        "gcpsm://",
        "azkv://",
        "ref+",
        "secretref:",
        "keyvault:",
    ];
    if v.starts_with('?') || STORES.iter().any(|p| v.to_ascii_lowercase().starts_with(p)) {
        return true;
    }
    // A path of lowercase words (`secret/data/app:api_key`, a Vault path,
    // `stripe/api_key`): random values with slashes (base64) mix cases, and
    // one slash between words without digits names a path, not a secret.
    let lower_path = !v.bytes().any(|b| b.is_ascii_uppercase());
    if (v.matches('/').count() >= 2 && lower_path)
        || (v.contains('/')
            && v.bytes()
                .all(|b| b.is_ascii_lowercase() || matches!(b, b'/' | b'_' | b'-' | b'.')))
    {
        return true;
    }
    // Template markers of deployment tools: `@@DB_PASSWORD@@`, `__TOKEN__`.
    if v.len() > 4 && ["@@", "__"].iter().any(|m| v.starts_with(m) && v.ends_with(m)) {
        return true;
    }
    let lower = v.to_ascii_lowercase();
    const WORDS: &[&str] = &[
        "null",
        "none",
        "nil",
        "true",
        "false",
        "undefined",
        "string",
        "str",
        "int",
        "bool",
        "boolean",
        "required",
        "optional",
        "secret",
        "password",
        "token",
        "value",
        "empty",
        "default",
        "env",
        "hidden",
        "masked",
        "unset",
        "not_set",
        "notset",
        "secretstring",
        "securestring",
        "text",
        "bytes",
        "os.environ",
        "process.env",
    ];
    if WORDS.contains(&lower.as_str()) {
        return true;
    }
    let ident = |s: &str| {
        s.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
            && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
    };
    // A dotted path of identifiers: `env.FOO_PASSWORD`, `self.token`,
    // `config.db.password`. Not a passphrase of words and digits
    // (`mango.pickle.cactus24`), unless it starts from a known root.
    const ROOTS: &[&str] = &[
        "env", "self", "this", "config", "cfg", "conf", "settings", "process", "os", "values", "secrets", "vars",
        "params", "props", "ctx", "context", "app", "options", "opts", "request", "req", "input", "inputs",
    ];
    let dotted = v.trim_start_matches('@');
    if dotted.contains('.') && dotted.split('.').all(|p| !p.is_empty() && ident(p)) {
        let parts: Vec<&str> = dotted.split('.').collect();
        let root = parts[0].to_ascii_lowercase();
        // Code (`client.secrets.kv.v2.read_secret_version`): a known root,
        // an underscore, more than three parts, or digits before the last.
        let code = ROOTS.contains(&root.as_str())
            || dotted.contains('_')
            || parts.len() > 3
            || parts[..parts.len() - 1]
                .iter()
                .any(|p| p.bytes().any(|b| b.is_ascii_digit()));
        if !dotted.bytes().any(|b| b.is_ascii_digit()) || code {
            return true;
        }
    }
    // An upper-case constant name (`DB_PASSWORD`, `API_KEY_2`).
    if ident(v) && v.bytes().all(|b| !b.is_ascii_lowercase()) && v.contains('_') {
        return true;
    }
    // An identifier of words with no digit (`accessToken`,
    // `user_password`): words have vowels, random letters few of them.
    if ident(v) && !v.bytes().any(|b| b.is_ascii_digit()) && looks_like_words(v) {
        return true;
    }
    // The value repeats the name (`password=password`, `token: TOKEN`).
    let norm = |s: &str| {
        s.chars()
            .filter(char::is_ascii_alphanumeric)
            .collect::<String>()
            .to_ascii_lowercase()
    };
    // A name without ASCII letters (`密码`) repeats nothing.
    let (nv, nn) = (norm(v), norm(name));
    !nv.is_empty() && !nn.is_empty() && (nn.ends_with(&nv) || nv.ends_with(&nn))
}

/// Letters of an identifier that read as words: short, or about a
/// quarter vowels or more (English words about 40%, random letters 19%).
fn looks_like_words(v: &str) -> bool {
    let letters = v.bytes().filter(u8::is_ascii_alphabetic).count();
    let vowels = v
        .bytes()
        .filter(|b| matches!(b.to_ascii_lowercase(), b'a' | b'e' | b'i' | b'o' | b'u' | b'y'))
        .count();
    letters < 12 || vowels * 4 >= letters
}

/// Values of formats that are public by design: age and SSH public keys,
/// Mapbox `pk.` and Stripe `pk_` publishable tokens, Supabase `anon` JWTs.
fn is_public_value(v: &str) -> bool {
    (v.starts_with("age1") && v.len() == 62)
        // A SealedSecret's ciphertext (`encryptedData`, safe in Git by
        // design): base64 of a two-byte length (0x02 0x00 and the like) and
        // the sealed key, hundreds of characters (the match stops at 200).
        || (v.starts_with("Ag")
            && v.as_bytes().get(2).is_some_and(|b| (b'A'..=b'D').contains(b))
            && v.len() >= 190
            && v.bytes().all(|b| b.is_ascii_alphanumeric() || b"+/=".contains(&b)))
        || (v.starts_with("eyJ") && super::checks::jwt_is_public(v))
        // Datadog browser (RUM) client tokens: `pub` and 32 hex digits.
        || (v.len() == 35 && v.starts_with("pub") && v[3..].bytes().all(|b| b.is_ascii_hexdigit()))
        // PostHog project keys (`phc_`): shipped in every page that
        // reports to PostHog, write-only by design.
        || ["ssh-", "ecdsa-sha2-", "npub1", "pk.ey", "pk_live_", "pk_test_", "phc_"]
            .iter()
            .any(|p| v.starts_with(p))
}

/// Validation rules in Laravel's (and Yii's, CakePHP's) pipe form,
/// `'password' => 'required|string|min:12|confirmed'`: what a password
/// must be, not one.
fn is_validation_rules(v: &str) -> bool {
    const RULES: &[&str] = &[
        "required",
        "nullable",
        "string",
        "min",
        "max",
        "confirmed",
        "sometimes",
        "between",
        "size",
    ];
    let mut parts = 0;
    let mut known = false;
    for part in v.split('|') {
        let head = part.split(':').next().unwrap_or("");
        if head.len() < 3 || !head.bytes().all(|b| b.is_ascii_lowercase() || b == b'_') {
            return false;
        }
        known |= RULES.contains(&head);
        parts += 1;
    }
    parts >= 2 && known
}

/// A password hash in the `algorithm$...` form of Django and Passlib
/// (`pbkdf2_sha256$600000$salt$hash`): what a password check compares
/// against, not a credential (the `$2b$...` and `$6$...` crypt forms start
/// with `$` and are taken for references before this).
fn is_password_hash(v: &str) -> bool {
    const ALGORITHMS: &[&str] = &[
        "pbkdf2_sha256$",
        "pbkdf2_sha1$",
        "pbkdf2-sha256$",
        "pbkdf2-sha512$",
        "argon2$",
        "bcrypt$",
        "bcrypt_sha256$",
        "scrypt$",
        "sha1$",
        "md5$",
        // PostgreSQL's stored SCRAM verifier (`CREATE ROLE ... PASSWORD
        // 'SCRAM-SHA-256$4096:...'`, `pg_authid`).
        "scram-sha-256$",
        "scram-sha-1$",
    ];
    let lower = v.to_ascii_lowercase();
    ALGORITHMS.iter().any(|a| lower.starts_with(a))
}

/// A keyed digest named by its algorithm (`hmac-sha256:<hex>`, Vault's
/// audit log form of every token it logs; `sha256:<hex>`): one-way, not a
/// credential.
fn is_digest(v: &str) -> bool {
    let lower = v.to_ascii_lowercase();
    [
        "hmac-sha256:",
        "hmac-sha512:",
        "hmac-sha1:",
        "sha256:",
        "sha512:",
        "sha1:",
        "md5:",
    ]
    .iter()
    .any(|p| lower.starts_with(p) && lower[p.len()..].bytes().all(|b| b.is_ascii_hexdigit()))
}

/// `name = value` with no known format: is it a credential?
pub fn assignment_ok(name: &str, value: &str) -> bool {
    // A label in words (`Staging API token`) reads as a name in snake case.
    let name = &name.replace(' ', "_");
    let strength = name_strength(name);
    // `GPG_KEY=<fingerprint>` (official container images): the id of a
    // release signing key, public; a key itself is not 40 hex digits.
    let lower = name.to_ascii_lowercase();
    let fingerprint = (lower.ends_with("gpg_key") || lower.ends_with("gpgkey"))
        && matches!(value.len(), 16 | 40)
        && value.bytes().all(|b| b.is_ascii_hexdigit());
    // `--secret=stripe-secret-key` (`gcloud secrets versions access`),
    // `secret: db-password`: the name of a secret in a store, words joined
    // by dashes, not the secret itself. Only under a name that is `secret`
    // alone: `CLIENT_SECRET=sprout-gallant-yodel` is a passphrase.
    let bare = lower.trim_start_matches('-');
    let secret_name = matches!(
        bare,
        "secret"
            | "secret_id"
            | "secret-id"
            | "secret_name"
            | "secret-name"
            | "secretname"
            | "existingsecret"
            | "existing_secret"
            | "existing-secret"
            | "secretref"
            | "secret_ref"
    ) && value.contains(['-', '_'])
        && value
            .split(['-', '_'])
            .all(|w| w.len() >= 2 && w.bytes().all(|b| b.is_ascii_lowercase()));
    // `ENCRYPTED_DB_PASSWORD=AQICAH...` (a KMS ciphertext), `*_ciphertext`:
    // what only a key holder can read, kept in config by design.
    let encrypted = ((lower.contains("encrypted") && !lower.contains("unencrypted")) || lower.contains("ciphertext"))
        && value.len() >= 40
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+/=_-".contains(&b));
    if strength == NameStrength::None
        || fingerprint
        || secret_name
        || encrypted
        || is_reference_or_code(value, name)
        || is_public_value(value)
        || is_password_hash(value)
        || is_digest(value)
        || is_validation_rules(value)
        // `"get-token", "--cluster-name"` (an argument list): an option.
        || value.starts_with("--")
    {
        return false;
    }
    let classes = [
        value.bytes().any(|b| b.is_ascii_lowercase()),
        value.bytes().any(|b| b.is_ascii_uppercase()),
        value.bytes().any(|b| b.is_ascii_digit()),
        value.bytes().any(|b| !b.is_ascii_alphanumeric()),
    ]
    .iter()
    .filter(|&&c| c)
    .count();
    let len = value.chars().count();
    match strength {
        NameStrength::Strong => len >= 8 && classes >= 2 && shannon_entropy(value) >= 2.5,
        NameStrength::Weak => len >= 16 && classes >= 2 && shannon_entropy(value) >= 3.5,
        NameStrength::None => false,
    }
}

/// A run someone typed rather than a generator drew: six ascending
/// characters (`abcdef`, `ABCDEF`, `123456`) or `a1b2c3`. Random tokens
/// hold one with a probability around 10^-7.
fn has_typed_sequence(b: &[u8]) -> bool {
    let next = |x: u8, y: u8| x.is_ascii_alphanumeric() && y == x.wrapping_add(1) && y.is_ascii_alphanumeric();
    // Two runs of four (`abcd1234`): about 10^-9 in a random token.
    let fours = b.windows(4).filter(|w| (0..3).all(|i| next(w[i], w[i + 1]))).count();
    if fours >= 2 {
        return true;
    }
    b.windows(6).any(|w| {
        (0..5).all(|i| next(w[i], w[i + 1]))
            || (w[0].is_ascii_alphabetic()
                && w[1].is_ascii_digit()
                && next(w[0], w[2])
                && next(w[2], w[4])
                && next(w[1], w[3])
                && next(w[3], w[5]))
    })
}

/// Shannon entropy in bits per character.
pub fn shannon_entropy(s: &str) -> f32 {
    if s.is_empty() {
        return 0.0;
    }
    let mut counts = [0u32; 256];
    let mut n = 0u32;
    for b in s.bytes() {
        counts[b as usize] += 1;
        n += 1;
    }
    let n = n as f32;
    counts
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| {
            let p = c as f32 / n;
            -p * p.log2()
        })
        .sum()
}
