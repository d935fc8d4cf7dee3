//! BuildKit's variable expansion: `$V`, `${V}`, `${V:-d}`, `${V-d}`, `${V:+x}`, `${V+x}`,
//! `${V:?msg}`, `${V?msg}`, `${V#p}`, `${V##p}`, `${V%p}`, `${V%%p}`, `${V/a/b}`, `${V//a/b}`,
//! with quotes and escapes processed in the same pass (so `"$X"` and `'$X'` differ).
//!
//! [`Lexer::word`] gives one string (ENV values, paths); [`Lexer::words`] splits on unquoted
//! whitespace, including whitespace that an unquoted expansion produced (EXPOSE, VOLUME).

/// An expansion error; the caller adds the line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ShellError(pub String);

fn err(msg: impl Into<String>) -> ShellError {
    ShellError(msg.into())
}

/// Looks a variable up: None when it is not set (which differs from set and empty).
pub type Lookup<'a> = &'a dyn Fn(&str) -> Option<String>;

#[derive(Debug, Clone, Copy)]
pub struct Lexer {
    pub escape: char,
}

impl Default for Lexer {
    fn default() -> Self {
        Lexer { escape: '\\' }
    }
}

impl Lexer {
    /// Expands `text` as one word: quotes removed, escapes applied, variables substituted.
    pub fn word(&self, text: &str, env: Lookup<'_>) -> Result<String, ShellError> {
        let mut p = Proc::new(self.escape, text, env, false);
        p.top()?;
        Ok(p.cur)
    }

    /// Expands `text` into words split on unquoted whitespace.
    pub fn words(&self, text: &str, env: Lookup<'_>) -> Result<Vec<String>, ShellError> {
        let mut p = Proc::new(self.escape, text, env, true);
        p.top()?;
        if p.in_word {
            let w = std::mem::take(&mut p.cur);
            p.out.push(w);
        }
        Ok(p.out)
    }
}

struct Proc<'a> {
    chars: Vec<char>,
    pos: usize,
    escape: char,
    env: Lookup<'a>,
    split: bool,
    cur: String,
    in_word: bool,
    out: Vec<String>,
}

fn is_special(c: char) -> bool {
    matches!(c, '@' | '*' | '#' | '?' | '-' | '$' | '!')
}

impl<'a> Proc<'a> {
    fn new(escape: char, text: &str, env: Lookup<'a>, split: bool) -> Self {
        Proc {
            chars: text.chars().collect(),
            pos: 0,
            escape,
            env,
            split,
            cur: String::new(),
            in_word: false,
            out: Vec::new(),
        }
    }

    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn next(&mut self) -> Option<char> {
        let c = self.peek();
        if c.is_some() {
            self.pos += 1;
        }
        c
    }

    fn push(&mut self, s: &str) {
        self.cur.push_str(s);
        self.in_word = true;
    }

    /// The value of an unquoted expansion: in word-splitting mode its whitespace ends words.
    fn push_unquoted(&mut self, v: &str) {
        if !self.split {
            self.cur.push_str(v);
            return;
        }
        for c in v.chars() {
            if c.is_whitespace() {
                if self.in_word {
                    let w = std::mem::take(&mut self.cur);
                    self.out.push(w);
                    self.in_word = false;
                }
            } else {
                self.cur.push(c);
                self.in_word = true;
            }
        }
    }

    fn top(&mut self) -> Result<(), ShellError> {
        while let Some(c) = self.peek() {
            if self.split && c.is_whitespace() {
                self.next();
                if self.in_word {
                    let w = std::mem::take(&mut self.cur);
                    self.out.push(w);
                    self.in_word = false;
                }
                continue;
            }
            self.one(c)?;
        }
        Ok(())
    }

    /// Processes one unquoted element starting at `c`, appending to the current word.
    fn one(&mut self, c: char) -> Result<(), ShellError> {
        match c {
            '\'' => {
                self.next();
                let s = self.single_quoted()?;
                self.push(&s);
            }
            '"' => {
                self.next();
                let s = self.double_quoted()?;
                self.push(&s);
            }
            '$' => {
                let v = self.dollar()?;
                self.push_unquoted(&v);
            }
            c if c == self.escape => {
                self.next();
                if let Some(n) = self.next() {
                    self.push(&n.to_string());
                }
            }
            c => {
                self.next();
                self.push(&c.to_string());
            }
        }
        Ok(())
    }

    fn single_quoted(&mut self) -> Result<String, ShellError> {
        let mut s = String::new();
        loop {
            match self.next() {
                None => {
                    return Err(err(
                        "unexpected end of statement while looking for matching single-quote",
                    ));
                }
                Some('\'') => return Ok(s),
                Some(c) => s.push(c),
            }
        }
    }

    fn double_quoted(&mut self) -> Result<String, ShellError> {
        let mut s = String::new();
        loop {
            match self.peek() {
                None => {
                    return Err(err(
                        "unexpected end of statement while looking for matching double-quote",
                    ));
                }
                Some('"') => {
                    self.next();
                    return Ok(s);
                }
                Some('$') => s.push_str(&self.dollar()?),
                Some(c) => {
                    self.next();
                    if c == self.escape {
                        match self.peek() {
                            Some(n) if n == '"' || n == '$' || n == self.escape => {
                                self.next();
                                s.push(n);
                            }
                            _ => s.push(c),
                        }
                    } else {
                        s.push(c);
                    }
                }
            }
        }
    }

    /// A word inside `${V:-word}` up to the closing `}` (consumed), expansions and quotes
    /// processed, never split.
    fn until_brace(&mut self) -> Result<String, ShellError> {
        let mut s = String::new();
        loop {
            match self.peek() {
                None => {
                    return Err(err(
                        "unexpected end of statement while looking for matching }",
                    ));
                }
                Some('}') => {
                    self.next();
                    return Ok(s);
                }
                Some('\'') => {
                    self.next();
                    s.push_str(&self.single_quoted()?);
                }
                Some('"') => {
                    self.next();
                    s.push_str(&self.double_quoted()?);
                }
                Some('$') => s.push_str(&self.dollar()?),
                Some(c) => {
                    self.next();
                    if c == self.escape {
                        if let Some(n) = self.next() {
                            s.push(n);
                        }
                    } else {
                        s.push(c);
                    }
                }
            }
        }
    }

    /// Like `until_brace` but stops before `stop` too (for `${V/a/b}`'s pattern).
    fn until_either(&mut self, stop: char) -> Result<(String, bool), ShellError> {
        let mut s = String::new();
        loop {
            match self.peek() {
                None => {
                    return Err(err(
                        "unexpected end of statement while looking for matching }",
                    ));
                }
                Some('}') => {
                    self.next();
                    return Ok((s, true));
                }
                Some(c) if c == stop => {
                    self.next();
                    return Ok((s, false));
                }
                Some('$') => s.push_str(&self.dollar()?),
                Some(c) => {
                    self.next();
                    if c == self.escape {
                        if let Some(n) = self.next() {
                            // Kept escaped: the pattern matcher treats it as a literal.
                            s.push('\\');
                            s.push(n);
                        }
                    } else {
                        s.push(c);
                    }
                }
            }
        }
    }

    fn name(&mut self) -> String {
        let mut name = String::new();
        match self.peek() {
            Some(c) if c.is_ascii_digit() => {
                while let Some(c) = self.peek().filter(char::is_ascii_digit) {
                    self.next();
                    name.push(c);
                }
            }
            Some(c) if is_special(c) => {
                self.next();
                name.push(c);
            }
            _ => {
                while let Some(c) = self
                    .peek()
                    .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
                {
                    self.next();
                    name.push(c);
                }
            }
        }
        name
    }

    fn lookup(&self, name: &str) -> Option<String> {
        // Positional and special parameters are never set in a Dockerfile.
        let first = name.chars().next()?;
        if first.is_ascii_digit() || is_special(first) {
            return None;
        }
        (self.env)(name)
    }

    fn dollar(&mut self) -> Result<String, ShellError> {
        self.next(); // '$'
        if self.peek() != Some('{') {
            let name = self.name();
            if name.is_empty() {
                return Ok("$".into());
            }
            return Ok(self.lookup(&name).unwrap_or_default());
        }
        self.next(); // '{'
        let name = self.name();
        if name.is_empty() {
            return Err(err("bad substitution"));
        }
        let value = self.lookup(&name);
        let Some(op) = self.next() else {
            return Err(err(
                "unexpected end of statement while looking for matching }",
            ));
        };
        match op {
            '}' => Ok(value.unwrap_or_default()),
            ':' => {
                let modifier = self.next();
                match modifier {
                    Some('-') => {
                        let word = self.until_brace()?;
                        Ok(value.filter(|v| !v.is_empty()).unwrap_or(word))
                    }
                    Some('+') => {
                        let word = self.until_brace()?;
                        Ok(if value.is_some_and(|v| !v.is_empty()) {
                            word
                        } else {
                            String::new()
                        })
                    }
                    Some('?') => {
                        let word = self.until_brace()?;
                        match value.filter(|v| !v.is_empty()) {
                            Some(v) => Ok(v),
                            None => Err(unset(&name, &word)),
                        }
                    }
                    Some(c) => Err(err(format!("unsupported modifier ({c}) in substitution"))),
                    None => Err(err("bad substitution")),
                }
            }
            '-' => {
                let word = self.until_brace()?;
                Ok(value.unwrap_or(word))
            }
            '+' => {
                let word = self.until_brace()?;
                Ok(if value.is_some() { word } else { String::new() })
            }
            '?' => {
                let word = self.until_brace()?;
                value.ok_or_else(|| unset(&name, &word))
            }
            '#' | '%' => {
                let longest = self.peek() == Some(op);
                if longest {
                    self.next();
                }
                let (pattern, _) = self.until_either('}')?;
                let v = value.unwrap_or_default();
                Ok(if op == '#' {
                    trim_prefix(&v, &pattern, longest)
                } else {
                    trim_suffix(&v, &pattern, longest)
                })
            }
            '/' => {
                let all = self.peek() == Some('/');
                if all {
                    self.next();
                }
                let (pattern, closed) = self.until_either('/')?;
                let replacement = if closed {
                    String::new()
                } else {
                    self.until_brace()?
                };
                Ok(replace(
                    &value.unwrap_or_default(),
                    &pattern,
                    &replacement,
                    all,
                ))
            }
            c => Err(err(format!("unsupported modifier ({c}) in substitution"))),
        }
    }
}

fn unset(name: &str, word: &str) -> ShellError {
    if word.is_empty() {
        err(format!("{name}: is not allowed to be unset"))
    } else {
        err(format!("{name}: {word}"))
    }
}

/// Shell pattern match of the whole of `text`: `*`, `?`, `[...]` (with `!`/`^` negation and
/// ranges) and `\x` for a literal x.
pub fn pattern_match(pattern: &[char], text: &[char]) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() {
            match pattern[p] {
                '*' => {
                    star = Some((p, t));
                    p += 1;
                    continue;
                }
                '?' => {
                    p += 1;
                    t += 1;
                    continue;
                }
                '[' => {
                    if let Some((ok, len)) = class_match(&pattern[p..], text[t])
                        && ok
                    {
                        p += len;
                        t += 1;
                        continue;
                    }
                }
                '\\' if p + 1 < pattern.len() => {
                    if pattern[p + 1] == text[t] {
                        p += 2;
                        t += 1;
                        continue;
                    }
                }
                c => {
                    if c == text[t] {
                        p += 1;
                        t += 1;
                        continue;
                    }
                }
            }
        }
        match star {
            Some((sp, st)) => {
                p = sp + 1;
                t = st + 1;
                star = Some((sp, st + 1));
            }
            None => return false,
        }
    }
    pattern[p..].iter().all(|&c| c == '*')
}

/// Matches `c` against the class at the start of `pattern` (`[...]`): (matched, length).
fn class_match(pattern: &[char], c: char) -> Option<(bool, usize)> {
    let mut i = 1;
    let negate = matches!(pattern.get(i), Some('!' | '^'));
    if negate {
        i += 1;
    }
    let mut matched = false;
    let mut first = true;
    while i < pattern.len() {
        let lo = pattern[i];
        if lo == ']' && !first {
            return Some((matched != negate, i + 1));
        }
        first = false;
        let lo = if lo == '\\' && i + 1 < pattern.len() {
            i += 1;
            pattern[i]
        } else {
            lo
        };
        if pattern.get(i + 1) == Some(&'-') && pattern.get(i + 2).is_some_and(|&h| h != ']') {
            let hi = pattern[i + 2];
            if lo <= c && c <= hi {
                matched = true;
            }
            i += 3;
        } else {
            if lo == c {
                matched = true;
            }
            i += 1;
        }
    }
    None
}

fn trim_prefix(v: &str, pattern: &str, longest: bool) -> String {
    let chars: Vec<char> = v.chars().collect();
    let pat: Vec<char> = pattern.chars().collect();
    let mut ends: Vec<usize> = (0..=chars.len()).collect();
    if longest {
        ends.reverse();
    }
    for end in ends {
        if pattern_match(&pat, &chars[..end]) {
            return chars[end..].iter().collect();
        }
    }
    v.to_string()
}

fn trim_suffix(v: &str, pattern: &str, longest: bool) -> String {
    let chars: Vec<char> = v.chars().collect();
    let pat: Vec<char> = pattern.chars().collect();
    let mut starts: Vec<usize> = (0..=chars.len()).rev().collect();
    if longest {
        starts.reverse();
    }
    for start in starts {
        if pattern_match(&pat, &chars[start..]) {
            return chars[..start].iter().collect();
        }
    }
    v.to_string()
}

fn replace(v: &str, pattern: &str, replacement: &str, all: bool) -> String {
    let chars: Vec<char> = v.chars().collect();
    let pat: Vec<char> = pattern.chars().collect();
    if pat.is_empty() {
        return v.to_string();
    }
    let mut out = String::new();
    let mut i = 0;
    let mut done = false;
    while i < chars.len() {
        if !done
            && let Some(end) = (i + 1..=chars.len())
                .rev()
                .find(|&end| pattern_match(&pat, &chars[i..end]))
        {
            out.push_str(replacement);
            i = end;
            done = !all;
            continue;
        }
        out.push(chars[i]);
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn word(text: &str, e: &HashMap<String, String>) -> Result<String, ShellError> {
        Lexer::default().word(text, &|k| e.get(k).cloned())
    }

    #[test]
    fn expansion_forms() {
        let e = env(&[
            ("A", "hello"),
            ("P", "/usr/local/bin/tool.tar.gz"),
            ("E", ""),
        ]);
        let cases = [
            ("$A", "hello"),
            ("${A}x", "hellox"),
            ("${B:-d}", "d"),
            ("${E:-d}", "d"),
            ("${E-d}", ""),
            ("${B-d}", "d"),
            ("${A:+x}", "x"),
            ("${E:+x}", ""),
            ("${E+x}", "x"),
            ("${P#*/}", "usr/local/bin/tool.tar.gz"),
            ("${P##*/}", "tool.tar.gz"),
            ("${P%.*}", "/usr/local/bin/tool.tar"),
            ("${P%%.*}", "/usr/local/bin/tool"),
            ("${A/l/L}", "heLlo"),
            ("${A//l/L}", "heLLo"),
            ("${A/l}", "helo"),
            ("${A/#h/H}x", "hellox"),
            ("\\$A", "$A"),
            ("'$A'", "$A"),
            ("\"$A\"", "hello"),
            ("${P##*[/]}", "tool.tar.gz"),
        ];
        for (input, want) in cases {
            assert_eq!(word(input, &e).unwrap(), want, "{input}");
        }
        assert_eq!(
            word("${B:?must be set}", &e).unwrap_err().to_string(),
            "B: must be set"
        );
        assert!(word("${A:=x}", &e).is_err());
        assert!(word("${A", &e).is_err());
    }

    #[test]
    fn escape_directive_changes_the_escape() {
        let e = env(&[("A", "x")]);
        let lex = Lexer { escape: '`' };
        assert_eq!(lex.word("`$A\\n", &|k| e.get(k).cloned()).unwrap(), "$A\\n");
    }

    #[test]
    fn words_split_unquoted_expansions() {
        let e = env(&[("S", "a  b")]);
        let lex = Lexer::default();
        let w = lex
            .words("x${S}y \"$S\" ''", &|k| e.get(k).cloned())
            .unwrap();
        assert_eq!(w, vec!["xa", "by", "a  b", ""]);
    }

    /// BuildKit's own expansion cases, when the reference copy is on this machine.
    #[test]
    fn buildkit_env_var_cases() {
        let path = "/work/shared/reference/dockerfile/shell/envVarTest";
        let Ok(text) = std::fs::read_to_string(path) else {
            eprintln!("skipping: {path} is not on this machine");
            return;
        };
        let e = env(&[
            ("PWD", "/home"),
            ("SHELL", "bash"),
            ("KOREAN", "한국어"),
            ("NULL", ""),
        ]);
        let mut checked = 0;
        for line in text.lines() {
            let line = line.trim_start();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let parts: Vec<&str> = line.split('|').collect();
            assert_eq!(parts.len(), 3, "{line}");
            if parts[0] == "W" {
                continue;
            }
            let (input, want) = (parts[1].trim(), parts[2].trim());
            let got = word(input, &e);
            if want == "error" {
                assert!(got.is_err(), "{input:?} gave {got:?}, want an error");
            } else {
                assert_eq!(got.as_deref(), Ok(want), "{input:?}");
            }
            checked += 1;
        }
        assert!(checked > 200, "only {checked} cases");
    }

    #[test]
    fn buildkit_words_cases() {
        let path = "/work/shared/reference/dockerfile/shell/wordsTest";
        let Ok(text) = std::fs::read_to_string(path) else {
            eprintln!("skipping: {path} is not on this machine");
            return;
        };
        let mut e = HashMap::new();
        let mut checked = 0;
        for line in text.lines() {
            if line.starts_with('#') || line.trim().is_empty() {
                continue;
            }
            if let Some(kv) = line.strip_prefix("ENV ") {
                let (k, v) = kv.split_once('=').unwrap();
                e.insert(k.to_string(), v.to_string());
                continue;
            }
            let (input, want) = line.split_once('|').unwrap();
            let (input, want) = (input.trim(), want.trim_start_matches(' '));
            let got = Lexer::default().words(input, &|k| e.get(k).cloned());
            if want.trim() == "error" {
                assert!(got.is_err(), "{input:?} gave {got:?}");
            } else {
                assert_eq!(got.unwrap().join(","), want, "{input:?}");
            }
            checked += 1;
        }
        assert!(checked > 20, "only {checked} cases");
    }
}
