//! `.dockerignore` with Docker's semantics: Go's `filepath.Match` per path segment, `**` for
//! any number of segments, `!` exceptions, a leading `/` meaning the context root; the last
//! matching pattern decides, and a pattern that matches a directory matches all inside it.
//! This is not gitignore: `foo` matches only `./foo`, never `a/foo`.

#[derive(Debug, Clone, PartialEq, Eq)]
struct Pattern {
    segments: Vec<String>,
    exception: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ignore {
    patterns: Vec<Pattern>,
}

/// Lexically cleans a slash path (Go's `path.Clean`, without the leading `/`).
fn clean(p: &str) -> String {
    let mut out: Vec<&str> = Vec::new();
    for seg in p.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            s => out.push(s),
        }
    }
    out.join("/")
}

impl Ignore {
    /// Parses the text of a `.dockerignore`.
    pub fn parse(text: &str) -> Ignore {
        let mut patterns = Vec::new();
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (exception, pat) = match line.strip_prefix('!') {
                Some(rest) => (true, rest.trim()),
                None => (false, line),
            };
            let pat = clean(pat);
            if pat.is_empty() {
                continue;
            }
            patterns.push(Pattern {
                segments: pat.split('/').map(str::to_string).collect(),
                exception,
            });
        }
        Ignore { patterns }
    }

    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    /// Whether `path` (relative to the context root, `/`-separated) is excluded.
    pub fn excluded(&self, path: &str) -> bool {
        let path = clean(path);
        if path.is_empty() {
            return false;
        }
        let segs: Vec<&str> = path.split('/').collect();
        let mut excluded = false;
        for p in &self.patterns {
            // A pattern matches the path or any directory above it.
            let hit = (1..=segs.len()).any(|n| match_segments(&p.segments, &segs[..n]));
            if hit {
                excluded = !p.exception;
            }
        }
        excluded
    }

    /// Whether a walk may skip the excluded directory `dir` whole: no exception pattern could
    /// re-include something below it.
    pub fn can_skip_dir(&self, dir: &str) -> bool {
        if !self.excluded(dir) {
            return false;
        }
        !self.patterns.iter().any(|p| p.exception)
    }
}

fn match_segments(pat: &[String], path: &[&str]) -> bool {
    match pat.split_first() {
        None => path.is_empty(),
        Some((first, rest)) if first == "**" => {
            // A trailing `**` needs something below; elsewhere it may match nothing.
            let min = usize::from(rest.is_empty());
            (min..=path.len()).any(|skip| match_segments(rest, &path[skip..]))
        }
        Some((first, rest)) => match path.split_first() {
            Some((seg, more)) => go_match(first, seg) && match_segments(rest, more),
            None => false,
        },
    }
}

/// Go's `filepath.Match` for one segment: `*`, `?`, `[...]` (with `^` negation and ranges),
/// `\` escapes. A malformed pattern matches nothing.
pub fn go_match(pattern: &str, name: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    match_from(&p, &n)
}

fn match_from(p: &[char], n: &[char]) -> bool {
    let (mut pi, mut ni) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    loop {
        if pi < p.len() {
            match p[pi] {
                '*' => {
                    while pi < p.len() && p[pi] == '*' {
                        pi += 1;
                    }
                    star = Some((pi, ni));
                    continue;
                }
                '?' if ni < n.len() && n[ni] != '/' => {
                    pi += 1;
                    ni += 1;
                    continue;
                }
                '[' if ni < n.len() => {
                    if let Some((ok, len)) = class(&p[pi..], n[ni])
                        && ok
                    {
                        pi += len;
                        ni += 1;
                        continue;
                    }
                    if class(&p[pi..], n[ni]).is_none() {
                        return false;
                    }
                }
                '\\' if pi + 1 < p.len() && ni < n.len() && p[pi + 1] == n[ni] => {
                    pi += 2;
                    ni += 1;
                    continue;
                }
                c if c != '*'
                    && c != '?'
                    && c != '['
                    && c != '\\'
                    && ni < n.len()
                    && c == n[ni] =>
                {
                    pi += 1;
                    ni += 1;
                    continue;
                }
                _ => {}
            }
        } else if ni == n.len() {
            return true;
        }
        match star {
            Some((sp, sn)) if sn < n.len() && n[sn] != '/' => {
                star = Some((sp, sn + 1));
                pi = sp;
                ni = sn + 1;
            }
            _ => return false,
        }
    }
}

/// A `[...]` class at the start of `p` against `c`: (matched, length); None when malformed.
fn class(p: &[char], c: char) -> Option<(bool, usize)> {
    let mut i = 1;
    let negate = p.get(i) == Some(&'^');
    if negate {
        i += 1;
    }
    let mut matched = false;
    let mut first = true;
    loop {
        let lo = *p.get(i)?;
        if lo == ']' && !first {
            return Some((matched != negate, i + 1));
        }
        first = false;
        let lo = if lo == '\\' {
            i += 1;
            *p.get(i)?
        } else {
            lo
        };
        i += 1;
        if p.get(i) == Some(&'-') && p.get(i + 1).is_some_and(|&h| h != ']') {
            let mut hi = p[i + 1];
            i += 2;
            if hi == '\\' {
                hi = *p.get(i)?;
                i += 1;
            }
            if lo <= c && c <= hi {
                matched = true;
            }
        } else if lo == c {
            matched = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_match_cases() {
        let cases = [
            ("abc", "abc", true),
            ("*", "abc", true),
            ("*c", "abc", true),
            ("a*", "a", true),
            ("a*/b", "abc/b", true),
            ("a*", "ab/c", false),
            ("a?c", "abc", true),
            ("a[b-d]c", "acc", true),
            ("a[^b]c", "abc", false),
            ("a[^b]c", "axc", true),
            ("a\\*b", "a*b", true),
            ("a\\*b", "axb", false),
            ("[", "a", false),
            ("*.go", "main.go", true),
            ("*.go", "main.rs", false),
        ];
        for (p, n, want) in cases {
            assert_eq!(go_match(p, n), want, "{p} vs {n}");
        }
    }

    #[test]
    fn docker_semantics_not_gitignore() {
        let ig = Ignore::parse(
            "# comment\n\
             node_modules\n\
             /build\n\
             **/*.log\n\
             *.tmp\n\
             docs\n\
             !docs/keep.md\n\
             secret/**\n\
             ./dot/../x.txt\n",
        );
        // Only at the root: gitignore would match these at any depth.
        assert!(ig.excluded("node_modules"));
        assert!(ig.excluded("node_modules/a/b.js"));
        assert!(!ig.excluded("src/node_modules"));
        assert!(!ig.excluded("src/a.tmp"));
        assert!(ig.excluded("a.tmp"));
        assert!(ig.excluded("build/out"));
        // `**` at any depth, including none.
        assert!(ig.excluded("a.log"));
        assert!(ig.excluded("deep/er/a.log"));
        // Exceptions re-include, the last match wins.
        assert!(ig.excluded("docs/other.md"));
        assert!(!ig.excluded("docs/keep.md"));
        // A trailing `**` excludes what is inside, not the directory itself.
        assert!(ig.excluded("secret/key"));
        assert!(!ig.excluded("secret"));
        // Patterns are cleaned.
        assert!(ig.excluded("x.txt"));
        assert!(!ig.can_skip_dir("docs"));
    }

    #[test]
    fn exception_order_matters() {
        let ig = Ignore::parse("!keep\n*\n");
        assert!(ig.excluded("keep"));
        let ig = Ignore::parse("*\n!keep\n");
        assert!(!ig.excluded("keep"));
        assert!(ig.excluded("other"));
        let ig = Ignore::parse("*\n");
        assert!(ig.can_skip_dir("anything"));
    }
}
