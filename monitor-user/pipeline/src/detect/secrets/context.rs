//! Matches that their surroundings show to be public or not a credential
//! on their own: a Firebase web configuration's API key, an AWS access key
//! ID with no secret key near it, a Google Maps key in its embed URL, a
//! SealedSecret's ciphertext, a DocSearch key, a local database's default
//! login.

use std::ops::Range;

/// How far around a match its context is looked for, in bytes.
const NEAR: usize = 600;

/// Whether the match `range` of rule `rule_id` in `text` is public or not a
/// credential by what surrounds it; `name` is the assignment's name where
/// the rule has one (else empty).
pub fn public_by_context(rule_id: &str, name: &str, text: &str, range: &Range<usize>) -> bool {
    let before = &text[floor(text, range.start.saturating_sub(NEAR))..range.start];
    let after = &text[range.end..ceil(text, (range.end + NEAR).min(text.len()))];
    let line_before = before[before.rfind('\n').map_or(0, |i| i + 1)..].to_ascii_lowercase();
    // Firebase's web configuration carries an API key that Google
    // documents as public (it names the project; rules guard the data),
    // whichever rule took it (its format's, or `apiKey: ...`'s): a key
    // named `apiKey` or `*FIREBASE*` beside the configuration's other
    // fields. A Gemini key (`GEMINI_API_KEY=AIza...`) beside them counts.
    if text[range.clone()].starts_with("AIza")
        && (line_before.contains("apikey") || line_before.contains("firebase"))
        && ["firebaseapp.com", "messagingSenderId", "authDomain"]
            .iter()
            .any(|w| before.contains(w) || after.contains(w))
    {
        return true;
    }
    // A Google Maps key in the page's own embed or script URL: a browser
    // key, public by design (restricted to the site's referrers). The
    // key must be the URL's `key=` parameter, on the same URL.
    if text[range.clone()].starts_with("AIza") && maps_url_key(before) {
        return true;
    }
    match rule_id {
        // An access key ID names a key (and its account), like a user
        // name: without the secret access key it grants nothing. It counts
        // when a secret-key-shaped value is near it.
        "aws-access-key-id" => !has_secret_key_shape(before) && !has_secret_key_shape(after),
        "generic-secret-assignment" => {
            // A SealedSecret's `encryptedData` values: ciphertexts only the
            // cluster's controller can open, kept in Git by design. Within
            // the same YAML document only.
            let doc_start = text[..range.start].rfind("\n---").unwrap_or(0);
            let doc_end = text[range.end..].find("\n---").map_or(text.len(), |i| range.end + i);
            let sealed = text[doc_start..doc_end].contains("kind: SealedSecret")
                && text[doc_start..range.start].contains("encryptedData:");
            // Algolia DocSearch's `apiKey:` in its `docsearch` block: a
            // search-only key for browsers (the scraper's `API_KEY` is not).
            let near = &before[floor(before, before.len().saturating_sub(200))..];
            let docsearch = name.trim_matches(|c| c == '"' || c == '\'') == "apiKey" && near.contains("docsearch");
            sealed || docsearch
        }
        id if id.ends_with("-connection-string") || id == "url-credentials" => loopback_default_login(text, range),
        _ => false,
    }
}

/// Whether the text just before a key ends a Google Maps embed or
/// JavaScript API URL at its `key=` parameter.
fn maps_url_key(before: &str) -> bool {
    let Some(url) = before.rfind("https://").map(|i| &before[i..]) else {
        return false;
    };
    if url.contains(|c: char| c.is_whitespace() || c == '"' || c == '\'' || c == '<' || c == '>') {
        return false;
    }
    let maps = url.starts_with("https://maps.googleapis.com/maps/api/js?")
        || url.starts_with("https://www.google.com/maps/embed/v1/")
        || url.starts_with("https://maps.googleapis.com/maps/api/staticmap?");
    maps && (url.ends_with("?key=") || url.ends_with("&key=") || url.ends_with("&amp;key="))
}

/// A 40-character run of the base64 alphabet with upper case, lower case
/// and a digit (an AWS secret access key's shape; hex digests, which are
/// one case, are not).
pub fn has_secret_key_shape(s: &str) -> bool {
    s.split(|c: char| !(c.is_ascii_alphanumeric() || c == '/' || c == '+'))
        .any(|w| {
            w.len() == 40
                && w.bytes().any(|b| b.is_ascii_uppercase())
                && w.bytes().any(|b| b.is_ascii_lowercase())
                && w.bytes().any(|b| b.is_ascii_digit())
        })
}

/// `scheme://postgres:postgres@localhost`, `amqp://guest:guest@127.0.0.1`:
/// the password is the user name and the host is this machine, the
/// defaults of local development images.
fn loopback_default_login(text: &str, range: &Range<usize>) -> bool {
    let secret = &text[range.clone()];
    let head = &text[..range.start];
    let Some(user) = head.strip_suffix(':').and_then(|h| h.rsplit("//").next()) else {
        return false;
    };
    let Some(host) = text[range.end..].strip_prefix('@') else {
        return false;
    };
    user == secret
        && ["localhost", "127.0.0.1", "[::1]"].iter().any(|h| {
            host.strip_prefix(h)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with([':', '/', '?', '#']))
        })
}

fn floor(s: &str, mut i: usize) -> usize {
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

fn ceil(s: &str, mut i: usize) -> usize {
    while !s.is_char_boundary(i) {
        i += 1;
    }
    i
}

#[cfg(test)]
mod tests {
    use super::*;

    fn judge(rule: &str, text: &str, secret: &str) -> bool {
        let start = text.find(secret).expect("secret in text");
        let name = if text.contains("apiKey:") { "apiKey" } else { "" };
        public_by_context(rule, name, text, &(start..start + secret.len()))
    }

    #[test]
    fn firebase_web_config_key_is_public_a_lone_google_key_is_not() {
        let key = "AIzaQ3bX9kLm2Nv8Rt5Yw1Zc4Hd7Jf0Gp6Sq2Ue";
        let config = format!(
            "const firebaseConfig = {{\n  apiKey: \"{key}\",\n  authDomain: \"shop.firebaseapp.com\",\n  projectId: \"shop\"\n}};"
        );
        assert!(judge("gcp-api-key", &config, key));
        assert!(judge("generic-secret-assignment", &config, key));
        assert!(!judge("gcp-api-key", &format!("GOOGLE_API_KEY={key}"), key));
        // A Gemini key in the same .env as a Firebase auth domain.
        let env = format!("NEXT_PUBLIC_FIREBASE_AUTH_DOMAIN=shop.firebaseapp.com\nGEMINI_API_KEY={key}\n");
        assert!(!judge("gcp-api-key", &env, key));
    }

    #[test]
    fn google_maps_browser_keys_in_their_urls_are_public_elsewhere_not() {
        let key = "AIzaSyB4kWORFb5QK0tdA9Pqaka5Ux009r1VKb3";
        for page in [
            format!("<iframe src=\"https://www.google.com/maps/embed/v1/place?key={key}&q=Berlin\"></iframe>"),
            format!(
                "<script async src=\"https://maps.googleapis.com/maps/api/js?key={key}&callback=initMap\"></script>"
            ),
            format!("<img src=\"https://maps.googleapis.com/maps/api/staticmap?center=Paris&zoom=12&key={key}\">"),
        ] {
            assert!(judge("gcp-api-key", &page, key), "{page}");
        }
        for text in [
            format!("curl \"https://generativelanguage.googleapis.com/v1beta/models?key={key}\""),
            format!("see https://maps.googleapis.com/maps/api/js?callback=x then GOOGLE_API_KEY={key}"),
            format!("https://maps.googleapis.com/maps/api/js?key= {key}"),
        ] {
            assert!(!judge("gcp-api-key", &text, key), "{text}");
        }
    }

    #[test]
    fn aws_key_id_counts_only_beside_a_secret_key() {
        let id = "AKIAQ7XRT2MB5VZW4NLD";
        assert!(judge(
            "aws-access-key-id",
            &format!("Deactivated access key {id} for user ana"),
            id
        ));
        assert!(judge(
            "aws-access-key-id",
            &format!("key {id} rotated; commit 9f3c2a7d1e0b4c5a6f7e8d9c0b1a2f3e4d5c6b7a"),
            id
        ));
        let pair = format!(
            "[default]\naws_access_key_id = {id}\naws_secret_access_key = kP3v9Xq2Lm8Rt5Yw1Zc4Hd7Jf0Gp6Sq2Ue9Bn4Ma\n"
        );
        assert!(!judge("aws-access-key-id", &pair, id));
        let csv =
            format!("User name,Access key ID,Secret access key\nci,{id},kP3v9Xq2Lm8Rt5Yw1Zc4Hd7Jf0Gp6Sq2Ue9Bn4Ma");
        assert!(!judge("aws-access-key-id", &csv, id));
    }

    #[test]
    fn sealed_secret_and_docsearch_values_are_public() {
        let blob = "AgZ8HXBNevqzw1DlJh3aQfQrUWAWuJL4lVk8NqZ3eOJ";
        let sealed = format!("kind: SealedSecret\nspec:\n  encryptedData:\n    password: {blob}\n");
        assert!(judge("generic-secret-assignment", &sealed, blob));
        let plain = format!("kind: Secret\nstringData:\n  password: {blob}\n");
        assert!(!judge("generic-secret-assignment", &plain, blob));
        // A plain Secret after a SealedSecret, in another YAML document.
        let both = format!("{sealed}---\nkind: Secret\nstringData:\n  password: {blob}Q\n");
        let second = both.rfind(blob).unwrap();
        let r = second..second + blob.len() + 1;
        assert!(!public_by_context("generic-secret-assignment", "password", &both, &r));
        // The scraper's admin key beside the word is not the search key.
        let scraper = "# docsearch scraper\nAPPLICATION_ID=KNNXFQH91G\nAPI_KEY=9f3c2a7d1e0b4c5a6f7e8d9c0b1a2f3e\n";
        let start = scraper.find("9f3c").unwrap();
        assert!(!public_by_context(
            "generic-secret-assignment",
            "API_KEY",
            scraper,
            &(start..start + 32)
        ));
        let ds = "docsearch:\n  appId: KNNXFQH91G\n  apiKey: 6ebe75c35eb78c4ad2cae51f078a4511\n";
        assert!(judge(
            "generic-secret-assignment",
            ds,
            "6ebe75c35eb78c4ad2cae51f078a4511"
        ));
    }

    #[test]
    fn local_default_logins_are_not_credentials_elsewhere_they_are() {
        let t = "DATABASE_URL=postgres://postgres:postgres@localhost:5432/app";
        let start = t.find(":postgres@").unwrap() + 1;
        assert!(public_by_context(
            "postgres-connection-string",
            "",
            t,
            &(start..start + 8)
        ));
        assert!(public_by_context("url-credentials", "", t, &(start..start + 8)));
        let t = "amqp://guest:guest@rabbit.prod.internal:5672//";
        let start = t.find(":guest@").unwrap() + 1;
        assert!(!public_by_context("amqp-connection-string", "", t, &(start..start + 5)));
        let t = "postgres://admin:admin@localhost.prod.example.net/app";
        let start = t.find(":admin@").unwrap() + 1;
        assert!(!public_by_context(
            "postgres-connection-string",
            "",
            t,
            &(start..start + 5)
        ));
        let t = "postgres://app:Zr7kLm2Qx9@localhost/app";
        let start = t.find("Zr7").unwrap();
        assert!(!public_by_context(
            "postgres-connection-string",
            "",
            t,
            &(start..start + 10)
        ));
    }

    proptest::proptest! {
        /// Any text, any match range on character boundaries, any rule:
        /// an answer, never a panic.
        #[test]
        fn never_panics(text in "\\PC{0,300}", a in 0usize..400, b in 0usize..400, rule in 0usize..5) {
            let (a, b) = (floor(&text, a.min(text.len())), floor(&text, b.min(text.len())));
            let range = a.min(b)..a.max(b);
            let rules = ["aws-access-key-id", "gcp-api-key", "generic-secret-assignment", "url-credentials", "x"];
            let _ = public_by_context(rules[rule], "apiKey", &text, &range);
        }
    }

    #[test]
    fn windows_at_the_text_edges_and_inside_multibyte_characters() {
        let t = format!("é{}AKIAQ7XRT2MB5VZW4NLDé", "ü".repeat(400));
        let start = t.find("AKIA").unwrap();
        assert!(public_by_context("aws-access-key-id", "", &t, &(start..start + 20)));
    }
}
