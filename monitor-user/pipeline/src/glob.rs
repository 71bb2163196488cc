//! Shell-style `*` and `?` patterns, as rules and identity mappings write
//! them for tool, server, rule and executable names.

/// `*` and `?` globs. The text comes from servers, so matching must stay
/// linear-ish whatever the pattern: on a mismatch, only the most recent `*`
/// is retried (at most pattern length x text length steps).
pub fn glob(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    let (mut pi, mut ti) = (0, 0);
    // Position after the last `*`, and the text position it was tried at.
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || (p[pi] != '*' && p[pi] == t[ti])) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi + 1, ti));
            pi += 1;
        } else if let Some((after, tried)) = star {
            // Let the `*` swallow one more character.
            pi = after;
            ti = tried + 1;
            star = Some((after, tried + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob("read_*", "read_text_file"));
        assert!(glob("*", ""));
        assert!(glob("?at", "cat"));
        assert!(!glob("read_*", "write_file"));
        assert!(glob("*_file", "read_text_file") && glob("a*b*c", "axxbyyc") && !glob("a*b*c", "axxbyy"));
        // Many stars against a long non-matching name: answered at once.
        let name = "a".repeat(10_000);
        assert!(!glob("*a*a*a*a*a*a*a*a*b", &name));
    }

    proptest::proptest! {
        /// Agrees with plain backtracking on short inputs.
        #[test]
        fn glob_matches_backtracking(p in "[ab*?]{0,8}", t in "[ab]{0,10}") {
            fn reference(p: &[char], t: &[char]) -> bool {
                match p.split_first() {
                    None => t.is_empty(),
                    Some(('*', rest)) => (0..=t.len()).any(|i| reference(rest, &t[i..])),
                    Some(('?', rest)) => !t.is_empty() && reference(rest, &t[1..]),
                    Some((c, rest)) => t.first() == Some(c) && reference(rest, &t[1..]),
                }
            }
            let (pc, tc): (Vec<char>, Vec<char>) = (p.chars().collect(), t.chars().collect());
            proptest::prop_assert_eq!(glob(&p, &t), reference(&pc, &tc));
        }
    }
}
