#!/usr/bin/env python3
"""Check the built-in credential rules in builtin.rs without building Rust.

    python3 check_builtin.py [path/to/builtin.rs]

For every rule in `RULES` this verifies that:

* the table is well formed: unique kebab-case ids, a known category, lowercase
  keywords, at least two examples and two counterexamples, and at least
  MIN_RULES rules;
* the pattern avoids syntax the Rust `regex` crate lacks or treats
  differently (look-around, backreferences, possessive quantifiers, atomic
  groups, unknown escapes, class set operations, stray `{`), and compiles
  with Python's `re` (`(?P<name>...)` means the same in both);
* every example contains a keyword (case-insensitively) and yields exactly
  one finding: a match whose secret (the `secret` group, else the whole
  match) passes the rule's check and is not a placeholder;
* no counterexample yields a finding. Counterexamples are run through the
  pattern even when they lack a keyword, so they cannot pass only because of
  the keyword pre-filter.

The placeholder allowlist is modelled twice, so the table does not depend on
the details of the monitor's implementation:

* an example's secret must not look like a placeholder under the broadest
  reading (the documented list, any case, plus the extra markers of
  `is_placeholder` in mod.rs: placeholder, your_, dummy, redacted, `<`, `>`,
  `****`, a lone `${`/`{{`/`}}`, only one distinct alphanumeric);
* a counterexample may rely on the allowlist only under the narrowest reading
  (EXAMPLE in capitals, xxxx in lower case, changeme, a complete `${...}` or
  `{{...}}`, or a single repeated character), which every reading includes.

Exit status 0 when everything passes, 1 otherwise.
"""

import base64
import binascii
import json
import math
import os
import re
import sys
import warnings
import zlib
from collections import Counter

MIN_RULES = 65
CATEGORIES = {
    "cloud", "code-hosting", "chat", "payments", "ai", "package-registry", "observability", "saas",
    "private-key", "database", "auth", "generic", "ci",
}
CHECKS = {"None", "GitHubCrc32", "Jwt", "MinEntropy", "AwsKeyIdPrefix", "Assignment", "GrafanaLegacyKey"}
CONFIDENCES = {"High", "Medium", "Low"}
ID_RE = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*$")
AWS_PREFIXES = ("AKIA", "ASIA", "AGPA", "AIDA", "AROA", "AIPA", "ANPA", "ANVA", "ABIA", "ACCA")
GITHUB_PREFIXES = ("ghp_", "gho_", "ghu_", "ghs_", "ghr_")
B62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
# Well-known documentation values that must never be used as positive examples.
DOC_VALUES = ("AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY")


# --------------------------------------------------------------- parsing
class ParseError(Exception):
    pass


class Parser:
    """Just enough of Rust to read the RULES table."""

    def __init__(self, text, pos):
        self.s = text
        self.i = pos

    def line(self):
        return self.s.count("\n", 0, self.i) + 1

    def fail(self, msg):
        raise ParseError(f"line {self.line()}: {msg}")

    def skip(self):
        while self.i < len(self.s):
            if self.s[self.i].isspace():
                self.i += 1
            elif self.s.startswith("//", self.i):
                nl = self.s.find("\n", self.i)
                self.i = len(self.s) if nl < 0 else nl + 1
            elif self.s.startswith("/*", self.i):
                end = self.s.find("*/", self.i)
                if end < 0:
                    self.fail("unterminated comment")
                self.i = end + 2
            else:
                break

    def peek(self, tok):
        self.skip()
        return self.s.startswith(tok, self.i)

    def expect(self, tok):
        self.skip()
        if not self.s.startswith(tok, self.i):
            self.fail(f"expected {tok!r}, found {self.s[self.i:self.i + 30]!r}")
        self.i += len(tok)

    def ident(self):
        self.skip()
        m = re.compile(r"[A-Za-z_][A-Za-z0-9_]*").match(self.s, self.i)
        if not m:
            self.fail("expected identifier")
        self.i = m.end()
        return m.group()

    def string(self):
        self.skip()
        s, i = self.s, self.i
        if s.startswith("r", i) and re.compile(r'r#*"').match(s, i):
            j = i + 1
            while s[j] == "#":
                j += 1
            hashes = j - i - 1
            close = '"' + "#" * hashes
            end = s.find(close, j + 1)
            if end < 0:
                self.fail("unterminated raw string")
            self.i = end + len(close)
            return s[j + 1:end]
        if not s.startswith('"', i):
            self.fail(f"expected string literal, found {s[i:i + 30]!r}")
        out = []
        j = i + 1
        while True:
            if j >= len(s):
                self.fail("unterminated string")
            c = s[j]
            if c == '"':
                self.i = j + 1
                return "".join(out)
            if c != "\\":
                out.append(c)
                j += 1
                continue
            e = s[j + 1]
            simple = {"n": "\n", "r": "\r", "t": "\t", "\\": "\\", '"': '"', "'": "'", "0": "\0"}
            if e in simple:
                out.append(simple[e])
                j += 2
            elif e == "x":
                out.append(chr(int(s[j + 2:j + 4], 16)))
                j += 4
            elif e == "u":
                end = s.index("}", j)
                out.append(chr(int(s[j + 3:end], 16)))
                j = end + 1
            elif e == "\n":
                j += 2
                while j < len(s) and s[j] in " \t\r\n":
                    j += 1
            else:
                self.fail(f"unknown escape \\{e}")

    def string_list(self):
        self.expect("&[")
        items = []
        while not self.peek("]"):
            items.append(self.string())
            if not self.peek("]"):
                self.expect(",")
        self.expect("]")
        return items

    def enum_value(self, enum):
        self.expect(enum + "::")
        name = self.ident()
        arg = None
        if self.peek("("):
            self.expect("(")
            self.skip()
            m = re.compile(r"[0-9]+(?:\.[0-9]+)?(?:_?f32)?").match(self.s, self.i)
            if not m:
                self.fail("expected number")
            self.i = m.end()
            arg = float(m.group().replace("_", "").replace("f32", ""))
            self.expect(")")
        return name, arg

    def rule(self):
        start_line = self.line()
        self.expect("RuleDef")
        self.expect("{")
        r = {"line": start_line}
        while not self.peek("}"):
            field = self.ident()
            self.expect(":")
            if field in ("id", "name", "category", "pattern"):
                r[field] = self.string()
            elif field in ("keywords", "examples", "counterexamples"):
                r[field] = self.string_list()
            elif field == "check":
                r[field] = self.enum_value("Check")
            elif field == "confidence":
                r[field] = self.enum_value("Confidence")[0]
            else:
                self.fail(f"unknown field {field!r}")
            if not self.peek("}"):
                self.expect(",")
        self.expect("}")
        return r


def parse(text):
    m = re.search(r"pub\s+const\s+RULES\s*:\s*&\s*\[\s*RuleDef\s*\]\s*=\s*&\[", text)
    if not m:
        raise ParseError("no `pub const RULES: &[RuleDef] = &[` found")
    p = Parser(text, m.end())
    rules = []
    while not p.peek("]"):
        rules.append(p.rule())
        if not p.peek("]"):
            p.expect(",")
    p.expect("]")
    p.expect(";")
    return rules


# ---------------------------------------------------- Rust regex dialect
ESCAPES_OK = set("\\.+*?()|[]{}^$#&-~") | set("dDsSwWnrtx") | {" "}
ESCAPES_OK_OUTSIDE = ESCAPES_OK | set("bBA")


def rust_regex_problems(pat):
    """Syntax that Python's `re` accepts but the `regex` crate rejects or reads differently."""
    probs = []
    i, n = 0, len(pat)
    depth = 0          # character-class nesting
    prev_quant = False  # previous token was a quantifier
    while i < n:
        c = pat[i]
        if c == "\\":
            e = pat[i + 1] if i + 1 < n else ""
            ok = ESCAPES_OK if depth else ESCAPES_OK_OUTSIDE
            if e.isdigit():
                probs.append(f"backreference/octal escape \\{e} at {i}")
            elif e not in ok:
                probs.append(f"escape \\{e} at {i} is not portable to the regex crate")
            i += 2
            prev_quant = False
            continue
        if depth:
            if c == "[":
                if pat.startswith("[:", i):
                    probs.append(f"POSIX class at {i} (Python treats it as literal characters)")
                else:
                    probs.append(f"unescaped '[' inside a class at {i} (nested class in Rust)")
            elif pat.startswith(("&&", "--", "~~"), i):
                probs.append(f"class set operation {pat[i:i + 2]!r} at {i}")
            elif c == "]":
                depth -= 1
                prev_quant = False
            i += 1
            continue
        if c == "[":
            depth = 1
            i += 1
            if i < n and pat[i] == "^":
                i += 1
            if i < n and pat[i] == "]":
                probs.append(f"']' first in class at {i} (literal in Python, empty-class error in Rust)")
                i += 1
            continue
        if c == "(":
            if pat.startswith("(?", i):
                rest = pat[i + 2:]
                if rest.startswith(("=", "!", "<=", "<!")):
                    probs.append(f"look-around at {i}")
                elif rest.startswith(">"):
                    probs.append(f"atomic group at {i}")
                elif rest.startswith("P="):
                    probs.append(f"named backreference at {i}")
                elif rest.startswith("#"):
                    probs.append(f"inline comment at {i}")
                elif rest.startswith(("P<", ":")):
                    pass
                elif rest.startswith("-u:\\b)"):
                    pass  # an ASCII word boundary; translated for Python below
                else:
                    m = re.match(r"([a-zA-Z-]*)[:)]", rest)
                    if not m:
                        probs.append(f"unknown group syntax at {i}")
                    elif set(m.group(1)) - set("ims-"):
                        probs.append(f"flags {m.group(1)!r} at {i} differ between Python and Rust")
            prev_quant = False
            i += 1
            continue
        if c == "{":
            m = re.compile(r"\{([0-9]+)(,([0-9]*))?\}").match(pat, i)
            if not m:
                probs.append(f"literal '{{' at {i} must be escaped for the regex crate")
                i += 1
                continue
            lo = int(m.group(1))
            hi = m.group(3)
            if hi and int(hi) < lo:
                probs.append(f"bad repetition {m.group()} at {i}")
            if max(lo, int(hi) if hi else 0) > 1000:
                probs.append(f"repetition {m.group()} at {i} may exceed the regex crate's size limit")
            i = m.end()
            if i < n and pat[i] == "+":
                probs.append(f"possessive quantifier at {i}")
            prev_quant = True
            continue
        if c in "*+?":
            if c == "+" and prev_quant:
                probs.append(f"possessive quantifier at {i}")
            if c == "?" and prev_quant:
                prev_quant = False  # lazy marker
            else:
                prev_quant = True
            i += 1
            continue
        prev_quant = False
        i += 1
    if depth:
        probs.append("unterminated character class")
    return probs


# ------------------------------------------------------------- checks
def b62(n):
    out = ""
    while n:
        n, r = divmod(n, 62)
        out = B62[r] + out
    return out or "0"


def github_crc32_ok(secret):
    if not secret.startswith(GITHUB_PREFIXES) or len(secret) != 40:
        return False
    body = secret[4:]
    if not re.fullmatch(r"[A-Za-z0-9]{36}", body):
        return False
    want = b62(zlib.crc32(body[:30].encode()) & 0xFFFFFFFF).rjust(6, "0")
    return body[30:] == want


def b64url_decode(seg):
    seg = seg.rstrip("=")
    if not re.fullmatch(r"[A-Za-z0-9_-]+", seg) or len(seg) % 4 == 1:
        raise ValueError("not base64url")
    return base64.urlsafe_b64decode(seg + "=" * (-len(seg) % 4))


def jwt_ok(secret):
    parts = secret.split(".")
    if len(parts) != 3 or not all(parts):
        return False
    try:
        header = json.loads(b64url_decode(parts[0]))
    except (ValueError, binascii.Error, UnicodeDecodeError):
        return False
    return isinstance(header, dict) and "alg" in header


def entropy(s):
    if not s:
        return 0.0
    n = len(s)
    return -sum(c / n * math.log2(c / n) for c in Counter(s).values())


def aws_key_id_ok(secret):
    return len(secret) == 20 and secret.startswith(AWS_PREFIXES) and re.fullmatch(r"[A-Z2-7]{16}", secret[4:]) is not None


# The assignment check (`name_strength`, `is_reference_or_code`,
# `assignment_ok` in mod.rs), written again from their documentation.
NOT_SECRET_NAMES = (
    "public_key", "publickey", "public-key", "pubkey", "primary_key", "primarykey", "foreign_key",
    "foreignkey", "sort_key", "sortkey", "partition_key", "partitionkey", "cache_key", "cachekey",
    "idempotency_key", "idempotencykey", "hotkey", "monkey", "turnkey", "keyboard_key", "lookup_key",
    "row_key", "rowkey", "group_key", "object_key", "objectkey", "s3_key", "map_key", "dedup_key",
    "routing_key", "routingkey", "shortcut_key", "hash_key", "hashkey", "range_key", "rangekey",
    "registry_key", "license_key_id", "access_key_id", "accesskeyid", "key_id", "keyid", "token_type",
    "tokentype", "bypass", "compass", "max_tokens", "author", "oauth", "passkey", "idempotency-key",
    "page_token", "pagetoken", "page-token", "next_token", "nexttoken", "continuation_token",
    "continuationtoken", "continuation-token", "sync_token", "synctoken", "resume_token", "resumetoken",
    "token_id", "tokenid", "token_address", "token_url", "token_endpoint", "token_name",
    "public_token", "publictoken", "publishable_key", "publishablekey", "public_api_key", "site_key", "sitekey",
    "hash", "digest", "websocket-key", "websocket_key", "websocket-accept", "auth_tag", "authtag",
    "authentication_tag")
STRONG_NAMES = (
    "password", "passwd", "passphrase", "pwd", "secret", "token", "apikey", "api_key", "api-key",
    "secretkey", "secret_key", "secret-key", "privatekey", "private_key", "private-key", "accesskey",
    "access_key", "access-key", "credential", "credentials", "client_secret")
LOCALIZED_NAMES = (
    "passwort", "kennwort", "contraseña", "contrasena", "mot_de_passe", "motdepasse", "senha",
    "wachtwoord", "hasło", "haslo", "lösenord", "losenord", "salasana", "adgangskode", "passord",
    "пароль", "密码", "密碼", "口令", "パスワード", "비밀번호")
VALUE_WORDS = {
    "null", "none", "nil", "true", "false", "undefined", "string", "str", "int", "bool", "boolean",
    "required", "optional", "secret", "password", "token", "value", "empty", "default", "env",
    "hidden", "masked", "unset", "not_set", "notset", "secretstring", "securestring", "text", "bytes",
    "os.environ", "process.env"}
IDENT_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def name_strength(name):
    low = name.lower().lstrip("$@-.>")
    if low.endswith(NOT_SECRET_NAMES) or low in ("oldpwd", "key") or name.startswith(":"):
        return "none"
    if low.endswith(STRONG_NAMES) or low.endswith(LOCALIZED_NAMES):
        return "strong"
    def sep_word(w):
        return low == w or any(low.endswith(sep + w) for sep in "_-.")
    if sep_word("pass") or sep_word("pat"):
        return "strong"
    if name.endswith("Key") or sep_word("key") or sep_word("login") or sep_word("auth") or low == "auth":
        return "weak"
    if name.endswith("Pass") or name.endswith("Pat"):
        return "strong"
    return "none"


def is_reference_or_code(value, name):
    v = value.strip("\"'").rstrip("!?")
    if v.startswith(("$", "%(", "%{", "#{")):
        return True
    if v.startswith("%") and v.endswith("%") and len(v) > 2:
        return True
    if v.startswith("!") and len(v) > 1 and all(c.isascii() and c.isalpha() for c in v[1:]):
        return True
    if v.startswith(("/", "./", "../", "~/")) or any(p in v for p in ("::", "?.", "()", "->")) \
            or v.lower().startswith("@microsoft.keyvault"):
        return True
    if v.startswith("?") or v.lower().startswith(("op://", "arn:", "vault:", "awssm:", "sm://", "gcpsm://",
                                                    "azkv://", "ref+", "secretref:", "keyvault:")):
        return True
    if v.count("/") >= 2 and not any(c.isupper() for c in v):
        return True
    if v.lower() in VALUE_WORDS:
        return True
    def ident(x):
        return IDENT_RE.fullmatch(x) is not None
    roots = {"env", "self", "this", "config", "cfg", "conf", "settings", "process", "os", "values", "secrets",
             "vars", "params", "props", "ctx", "context", "app", "options", "opts", "request", "req", "input", "inputs"}
    d = v.lstrip("@")
    if "." in d and all(p and ident(p) for p in d.split(".")):
        parts = d.split(".")
        code = parts[0].lower() in roots or "_" in d or len(parts) > 3 or \
            any(any(c.isdigit() for c in p) for p in parts[:-1])
        if not any(c.isdigit() for c in d) or code:
            return True
    if ident(v) and not any(c.islower() for c in v) and "_" in v:
        return True
    if ident(v) and not any(c.isdigit() for c in v):
        letters = sum(c.isascii() and c.isalpha() for c in v)
        vowels = sum(c.lower() in "aeiouy" for c in v)
        if letters < 12 or vowels * 4 >= letters:
            return True
    def norm(x):
        return "".join(c for c in x if c.isascii() and c.isalnum()).lower()
    nv, nn = norm(v), norm(name)
    return bool(nv) and bool(nn) and (nn.endswith(nv) or nv.endswith(nn))


def assignment_ok(name, value):
    name = name.replace(" ", "_")
    strength = name_strength(name)
    if strength == "none" or is_reference_or_code(value, name):
        return False
    low_name = name.lower()
    if "encrypted" in low_name or "ciphertext" in low_name or value.startswith("--"):
        return False
    m = re.match(r"(?i)(hmac-sha256|hmac-sha512|hmac-sha1|sha256|sha512|sha1|md5):([0-9a-f]*)$", value)
    if m:
        return False
    if (value.startswith("age1") and len(value) == 62) or value.startswith(
            ("ssh-", "ecdsa-sha2-", "npub1", "pk.ey", "pk_live_", "pk_test_")):
        return False
    classes = sum([any(c.islower() and c.isascii() for c in value), any(c.isupper() and c.isascii() for c in value),
                   any(c.isdigit() for c in value), any(not (c.isascii() and c.isalnum()) for c in value)])
    if strength == "strong":
        return len(value) >= 8 and classes >= 2 and entropy(value) >= 2.5
    return len(value) >= 16 and classes >= 2 and entropy(value) >= 3.5


def check_ok(check, secret, name=""):
    name_, arg = check
    if name_ == "Assignment":
        return assignment_ok(name, secret)
    name = name_
    if name == "GrafanaLegacyKey":
        try:
            obj = json.loads(base64.b64decode(secret, validate=True))
        except Exception:
            return False
        return isinstance(obj, dict) and all(k in obj for k in ("k", "n", "id"))
    if name == "None":
        return True
    if name == "GitHubCrc32":
        return github_crc32_ok(secret)
    if name == "Jwt":
        return jwt_ok(secret)
    if name == "MinEntropy":
        return entropy(secret) >= arg
    if name == "AwsKeyIdPrefix":
        return aws_key_id_ok(secret)
    raise ValueError(name)


TEMPLATE_RE = re.compile(r"\$\{[^}]*\}|\{\{.*?\}\}", re.S)
# Broadest reading: the documented markers in any case, and those of
# `is_placeholder` in mod.rs.
LOOSE_MARKERS = ("example", "xxx", "changeme", "placeholder", "your_", "your-", "-here", "_here", "fake", "not-a-real", "not_a_real", "not-real",
                 "change-this", "change_this", "replace-me", "replace_me", "replaceme", "yourtoken", "dummy", "redacted",
                 "${", "{{", "}}", "<", ">", "****")
# Narrowest reading: spellings that every reading treats as a placeholder.
STRICT_MARKERS = ("EXAMPLE", "xxxx", "changeme")


def typed_sequence(value):
    """Six ascending characters, or a1b2c3 (`has_typed_sequence`)."""
    b = value.encode()
    def nxt(x, y):
        return chr(x).isascii() and chr(x).isalnum() and y == x + 1 and chr(y).isalnum()
    if sum(all(nxt(b[i + j], b[i + j + 1]) for j in range(3)) for i in range(len(b) - 3)) >= 2:
        return True
    for i in range(len(b) - 5):
        w = b[i:i + 6]
        if all(nxt(w[j], w[j + 1]) for j in range(5)):
            return True
        if (chr(w[0]).isalpha() and chr(w[1]).isdigit() and nxt(w[0], w[2]) and nxt(w[2], w[4])
                and nxt(w[1], w[3]) and nxt(w[3], w[5])):
            return True
    return False


def is_placeholder(value, strict):
    """strict: placeholder under every reading; not strict: under some reading."""
    if typed_sequence(value):
        return True
    if strict:
        return (len(set(value)) <= 1 or TEMPLATE_RE.search(value) is not None
                or any(m in value for m in STRICT_MARKERS))
    low = value.lower()
    alnum = {c for c in value if c.isascii() and c.isalnum()}
    return len(set(value)) <= 1 or len(alnum) <= 1 or any(m in low for m in LOOSE_MARKERS)


def findings(rx, check, text, strict):
    """(secret, reason) for every match; reason is None for a reported finding."""
    out = []
    for m in rx.finditer(text):
        secret = m.group("secret") if "secret" in rx.groupindex else m.group(0)
        if secret is None:
            out.append((m.group(0), "no secret"))
        elif not check_ok(check, secret, m.group("name") if "name" in rx.groupindex and m.group("name") else ""):
            out.append((secret, "check failed"))
        elif is_placeholder(secret, strict):
            out.append((secret, "placeholder"))
        else:
            out.append((secret, None))
    return out


def short(s, n=70):
    s = s.replace("\n", "\\n")
    return s if len(s) <= n else s[:n - 3] + "..."


# ---------------------------------------------------------------- main
def main():
    path = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(os.path.abspath(__file__)), "builtin.rs")
    text = open(path, encoding="utf-8").read()
    errors = []
    notes = []

    if not re.search(r"use\s+super::rule::\{[^}]*\bRuleDef\b[^}]*\}", text) or \
            not re.search(r"use\s+super::rule::\{[^}]*\bCheck\b[^}]*\}", text) or \
            not re.search(r"use\s+super::rule::\{[^}]*\bConfidence\b[^}]*\}", text):
        errors.append("builtin.rs must `use super::rule::{RuleDef, Check, Confidence}`")
    if re.search(r"\b(struct\s+RuleDef|enum\s+Check|enum\s+Confidence)\b", text):
        errors.append("builtin.rs must not define RuleDef/Check/Confidence itself")

    try:
        rules = parse(text)
    except ParseError as e:
        print(f"FAIL: cannot parse {path}: {e}")
        return 1

    if len(rules) < MIN_RULES:
        errors.append(f"only {len(rules)} rules, need at least {MIN_RULES}")
    ids = Counter(r.get("id") for r in rules)
    for rid, cnt in ids.items():
        if cnt > 1:
            errors.append(f"duplicate id {rid!r} ({cnt} times)")

    n_examples = n_counter = 0
    for r in rules:
        rid = r.get("id", f"<rule at line {r['line']}>")
        errs = []
        missing = {"id", "name", "category", "keywords", "pattern", "check", "confidence", "examples",
                   "counterexamples"} - set(r)
        if missing:
            errors.append(f"{rid}: missing fields {sorted(missing)}")
            continue
        if not ID_RE.match(r["id"]):
            errs.append("id is not kebab-case")
        if not r["name"].strip():
            errs.append("empty name")
        if r["category"] not in CATEGORIES:
            errs.append(f"unknown category {r['category']!r}")
        if not r["keywords"]:
            errs.append("no keywords")
        for k in r["keywords"]:
            if k != k.lower():
                errs.append(f"keyword {k!r} is not lowercase")
            if len(k) < 3:
                errs.append(f"keyword {k!r} is too short to be distinctive")
        name, arg = r["check"]
        if name not in CHECKS:
            errs.append(f"unknown check {name}")
        if name == "MinEntropy" and not (arg is not None and 1.0 <= arg <= 6.0):
            errs.append(f"MinEntropy({arg}) out of range")
        if r["confidence"] not in CONFIDENCES:
            errs.append(f"unknown confidence {r['confidence']}")
        if len(r["examples"]) < 2:
            errs.append("fewer than 2 examples")
        if len(r["counterexamples"]) < 2:
            errs.append("fewer than 2 counterexamples")

        for p in rust_regex_problems(r["pattern"]):
            errs.append(f"pattern: {p}")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error")
                # `(?-u:\b)` (an ASCII word boundary, which keeps the regex
                # crate on its fast DFA) is `(?a:\b)` in Python.
                rx = re.compile(r["pattern"].replace("(?-u:\\b)", "(?a:\\b)"))
        except (re.error, FutureWarning, DeprecationWarning) as e:
            errors.append(f"{rid}: pattern does not compile: {e}")
            continue
        for g in rx.groupindex:
            if g not in ("secret", "name") or (g == "name" and name != "Assignment"):
                errs.append(f"unexpected named group {g!r} (only `secret`, and `name` for the Assignment check)")

        keyword_outside_match = False
        for ex in r["examples"]:
            n_examples += 1
            low = ex.lower()
            if not any(k in low for k in r["keywords"]):
                errs.append(f"example has none of the keywords: {short(ex)}")
            for doc in DOC_VALUES:
                if doc in ex:
                    errs.append(f"example uses the documentation value {doc}")
            found = findings(rx, r["check"], ex, strict=False)
            good = [s for s, why in found if why is None]
            if len(good) != 1:
                detail = ", ".join(f"{short(s, 40)} ({why or 'finding'})" for s, why in found) or "no match"
                errs.append(f"example yields {len(good)} findings, expected 1 [{detail}]: {short(ex)}")
            for m in rx.finditer(ex):
                if not any(k in m.group(0).lower() for k in r["keywords"]):
                    keyword_outside_match = True
        if keyword_outside_match:
            notes.append(f"{rid}: keyword is context elsewhere in the text, not part of the match")

        bad_checksum_seen = False
        for cx in r["counterexamples"]:
            n_counter += 1
            found = findings(rx, r["check"], cx, strict=True)
            leaked = [s for s, why in found if why is None]
            if leaked:
                errs.append(f"counterexample produces a finding {short(leaked[0], 40)!r}: {short(cx)}")
            if name == "GitHubCrc32":
                for s, why in found:
                    if why == "check failed" and not is_placeholder(s, strict=False):
                        bad_checksum_seen = True
        if name == "GitHubCrc32" and not bad_checksum_seen:
            errs.append("needs a counterexample of the right shape with a wrong checksum")

        status = "ok  " if not errs else "FAIL"
        chk = name if arg is None else f"{name}({arg:g})"
        print(f"{status} {r['id']:<36} {r['category']:<17} {r['confidence']:<6} {chk:<16} "
              f"{len(r['examples'])} ex / {len(r['counterexamples'])} cx")
        errors.extend(f"{rid}: {e}" for e in errs)

    print()
    for n in notes:
        print(f"note: {n}")
    if notes:
        print()
    cats = Counter(r.get("category") for r in rules)
    print("rules per category: " + ", ".join(f"{c}={cats[c]}" for c in sorted(cats)))
    print(f"{len(rules)} rules, {len(ids)} unique ids, {n_examples} examples, {n_counter} counterexamples")
    if errors:
        print(f"\n{len(errors)} problem(s):")
        for e in errors:
            print(f"  - {e}")
        return 1
    print("all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
