//! Dockerfile text → stages of steps, with line numbers. `parse-dockerfile` tokenises; this
//! file adds what it leaves to the caller: RUN heredocs anywhere in the command (the crate
//! takes only a leading one), line continuations and comment lines inside shell-form
//! commands, malformed JSON forms, and ARG/ENV/LABEL `key=value` splitting.

use parse_dockerfile::{Command, Flag, HealthcheckArguments, Instruction, JsonOrStringArray};

use super::BuildError;

/// A command in exec (JSON) form or shell form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CmdForm {
    Exec(Vec<String>),
    Shell(String),
}

/// A COPY/ADD source: a path in the context (or stage), or inline heredoc content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Path(String),
    HereDoc { content: String, expand: bool },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StepKind {
    /// Names with optional (raw) defaults.
    Arg(Vec<(String, Option<String>)>),
    /// Raw (unexpanded, still quoted) key/value pairs.
    Env(Vec<(String, String)>),
    Label(Vec<(String, String)>),
    Cmd(CmdForm),
    Entrypoint(CmdForm),
    Run {
        flags: Vec<(String, Option<String>)>,
        cmd: CmdForm,
        /// For a heredoc-only RUN (`RUN <<EOF`): the script itself, run by the shell.
        script: bool,
    },
    Copy {
        add: bool,
        flags: Vec<(String, Option<String>)>,
        srcs: Vec<Source>,
        dest: String,
    },
    Expose(Vec<String>),
    Volume(Vec<String>),
    Workdir(String),
    User(String),
    Shell(Vec<String>),
    StopSignal(String),
    Healthcheck {
        flags: Vec<(String, Option<String>)>,
        /// None for `HEALTHCHECK NONE`.
        cmd: Option<CmdForm>,
    },
    /// The trigger's text, as stored in the image's OnBuild list.
    OnBuild(String),
    Maintainer(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// 1-based line of the instruction.
    pub line: usize,
    /// The instruction as written (continuations joined), for progress and history.
    pub text: String,
    pub kind: StepKind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stage {
    pub line: usize,
    /// The FROM argument, unexpanded.
    pub base: String,
    pub name: Option<String>,
    pub platform: Option<String>,
    pub steps: Vec<Step>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dockerfile {
    pub escape: char,
    /// `# syntax=` when given: noted, not followed.
    pub syntax: Option<String>,
    /// ARGs before the first FROM.
    pub global_args: Vec<Step>,
    pub stages: Vec<Stage>,
}

/// 1-based line and column of byte offset `pos`.
fn line_col(text: &str, pos: usize) -> (usize, usize) {
    let before = &text[..pos.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
    (line, col)
}

fn syntax_err(line: usize, msg: impl Into<String>) -> BuildError {
    BuildError::Syntax {
        line,
        msg: msg.into(),
    }
}

/// The escape character from the leading directives (`# escape=`), before any parsing.
fn escape_directive(text: &str) -> char {
    for line in text.lines() {
        let l = line.trim();
        let Some(d) = l.strip_prefix('#') else { break };
        if let Some((k, v)) = d.split_once('=')
            && k.trim().eq_ignore_ascii_case("escape")
            && let Some(c) = v.trim().chars().next()
        {
            return c;
        }
        if !d.contains('=') {
            break;
        }
    }
    '\\'
}

const MARK: char = '\u{E000}';

/// RUN heredocs found by [`lift_heredocs`]: per RUN line, the markers (as written) and bodies
/// (with their closing delimiter line).
#[derive(Debug, Default)]
struct HereDocs {
    by_line: Vec<(usize, Vec<String>, String)>,
}

/// Finds `<<WORD`, `<<-WORD`, `<<"WORD"`, `<<'WORD'` markers in a RUN line: (start, end,
/// delimiter).
fn heredoc_markers(line: &str) -> Vec<(usize, usize, String)> {
    let b = line.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i + 2 < b.len() {
        if b[i] == b'<' && b[i + 1] == b'<' && (i == 0 || b[i - 1] != b'<') {
            let mut j = i + 2;
            if b.get(j) == Some(&b'<') {
                i += 3;
                continue;
            }
            if b.get(j) == Some(&b'-') {
                j += 1;
            }
            let quote = match b.get(j) {
                Some(&q @ (b'"' | b'\'')) => {
                    j += 1;
                    Some(q)
                }
                _ => None,
            };
            let start = j;
            while j < b.len() && (b[j].is_ascii_alphanumeric() || b"_.-".contains(&b[j])) {
                j += 1;
            }
            if j > start {
                let delim = line[start..j].to_string();
                if let Some(q) = quote {
                    if b.get(j) != Some(&q) {
                        i += 2;
                        continue;
                    }
                    j += 1;
                }
                out.push((i, j, delim));
                i = j;
                continue;
            }
        }
        i += 1;
    }
    out
}

/// Takes RUN heredoc bodies out of the text (their lines become blank, so line numbers hold)
/// and replaces the markers with placeholders the tokeniser reads as plain text.
fn lift_heredocs(text: &str, escape: char) -> Result<(String, HereDocs), BuildError> {
    let lines: Vec<&str> = text.split('\n').collect();
    let mut out: Vec<String> = Vec::with_capacity(lines.len());
    let mut docs = HereDocs::default();
    let mut continued = false;
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        let trimmed = line.trim_start();
        let starts_run = !continued
            && trimmed
                .get(..4)
                .is_some_and(|w| w.eq_ignore_ascii_case("run ") || w.eq_ignore_ascii_case("run\t"));
        let is_comment = trimmed.starts_with('#');
        let ends_escape = line.trim_end().ends_with(escape) && !is_comment;
        if starts_run || (continued && !is_comment) {
            let markers = heredoc_markers(line);
            if !markers.is_empty() && !ends_escape {
                let run_line = i + 1;
                let mut replaced = String::new();
                let mut last = 0;
                let mut written = Vec::new();
                for (n, (s, e, _)) in markers.iter().enumerate() {
                    replaced.push_str(&line[last..*s]);
                    replaced.push(MARK);
                    replaced.push_str(&n.to_string());
                    replaced.push(MARK);
                    written.push(line[*s..*e].to_string());
                    last = *e;
                }
                replaced.push_str(&line[last..]);
                out.push(replaced);
                let mut body = String::new();
                for (_, _, delim) in &markers {
                    loop {
                        i += 1;
                        let Some(l) = lines.get(i) else {
                            return Err(syntax_err(
                                run_line,
                                format!("unterminated heredoc: no line {delim:?} ends it"),
                            ));
                        };
                        out.push(String::new());
                        body.push_str(l);
                        body.push('\n');
                        if l.trim_start_matches('\t') == delim {
                            break;
                        }
                    }
                }
                docs.by_line.push((run_line, written, body));
                continued = false;
                i += 1;
                continue;
            }
        }
        if !is_comment && !trimmed.is_empty() {
            continued = ends_escape;
        }
        out.push(line.to_string());
        i += 1;
    }
    Ok((out.join("\n"), docs))
}

/// Joins shell-form text the way Docker does: escape+newline removed, comment and empty
/// lines inside the continuation dropped.
fn join_lines(raw: &str, escape: char) -> String {
    let mut out = String::new();
    for (n, line) in raw.split('\n').enumerate() {
        let t = line.trim_start();
        if n > 0 && (t.starts_with('#') || t.is_empty()) {
            continue;
        }
        let trimmed = line.trim_end();
        match trimmed.strip_suffix(escape) {
            Some(rest) => out.push_str(rest),
            None => out.push_str(line),
        }
    }
    out
}

/// Splits text into words on whitespace, keeping quotes and escapes in the words (Docker's
/// parser step before expansion).
pub fn raw_words(text: &str, escape: char) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quote: Option<char> = None;
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == escape && quote != Some('\'') {
            cur.push(c);
            if let Some(n) = chars.next() {
                cur.push(n);
            }
            continue;
        }
        match quote {
            Some(q) if c == q => {
                quote = None;
                cur.push(c);
            }
            Some(_) => cur.push(c),
            None if c == '"' || c == '\'' => {
                quote = Some(c);
                cur.push(c);
            }
            None if c.is_whitespace() => {
                if !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
            }
            None => cur.push(c),
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// ENV/LABEL arguments: `k=v k2="v 2"`, or the legacy `k v w` (one pair).
fn key_values(
    instr: &str,
    text: &str,
    escape: char,
    line: usize,
) -> Result<Vec<(String, String)>, BuildError> {
    let words = raw_words(text, escape);
    let Some(first) = words.first() else {
        return Err(syntax_err(
            line,
            format!("{instr} requires at least one argument"),
        ));
    };
    if !first.contains('=') {
        let rest = text.trim_start()[first.len()..].trim();
        if rest.is_empty() {
            return Err(syntax_err(line, format!("{instr} names can not be blank")));
        }
        return Ok(vec![(first.clone(), rest.to_string())]);
    }
    words
        .into_iter()
        .map(|w| match w.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
            _ => Err(syntax_err(
                line,
                format!("{instr} names can not be blank: {w:?}"),
            )),
        })
        .collect()
}

fn arg_kind(text: &str, escape: char, line: usize) -> Result<StepKind, BuildError> {
    let mut out = Vec::new();
    for w in raw_words(text, escape) {
        match w.split_once('=') {
            Some((k, v)) => out.push((k.to_string(), Some(v.to_string()))),
            None => out.push((w, None)),
        }
    }
    if out.is_empty() {
        return Err(syntax_err(line, "ARG requires at least one argument"));
    }
    Ok(StepKind::Arg(out))
}

fn flags(options: &[Flag<'_>]) -> Vec<(String, Option<String>)> {
    options
        .iter()
        .map(|f| {
            (
                f.name.value.to_string(),
                f.value.as_ref().map(|v| v.value.to_string()),
            )
        })
        .collect()
}

struct Conv<'t> {
    text: &'t str,
    escape: char,
    docs: HereDocs,
}

impl Conv<'_> {
    fn cmd(&self, c: &Command<'_>, line: usize, what: &str) -> Result<CmdForm, BuildError> {
        match c {
            Command::Exec(v) => Ok(CmdForm::Exec(
                v.value.iter().map(|s| s.value.to_string()).collect(),
            )),
            Command::Shell(s) => {
                let joined = join_lines(s.value, self.escape);
                let t = joined.trim();
                // The crate reads a broken JSON array as shell form, as Docker does; a
                // command that starts like one (`["`) is almost always a typo, so say so.
                if t.starts_with("[\"") && serde_json::from_str::<Vec<String>>(t).is_err() {
                    return Err(syntax_err(line, format!("{what}: invalid JSON array: {t}")));
                }
                Ok(CmdForm::Shell(joined.trim().to_string()))
            }
            _ => Err(syntax_err(line, format!("{what}: unknown command form"))),
        }
    }

    fn step(&mut self, ins: &Instruction<'_>, start: usize) -> Result<Step, BuildError> {
        let (line, _) = line_col(self.text, start);
        let markers: Vec<String> = self
            .docs
            .by_line
            .iter()
            .find(|(l, _, _)| *l == line)
            .map(|(_, m, _)| m.clone())
            .unwrap_or_default();
        let kind = match ins {
            Instruction::Arg(a) => arg_kind(&a.arguments.value, self.escape, line)?,
            Instruction::Env(e) => {
                StepKind::Env(key_values("ENV", &e.arguments.value, self.escape, line)?)
            }
            Instruction::Label(l) => {
                StepKind::Label(key_values("LABEL", &l.arguments.value, self.escape, line)?)
            }
            Instruction::Cmd(c) => StepKind::Cmd(self.cmd(&c.arguments, line, "CMD")?),
            Instruction::Entrypoint(c) => {
                StepKind::Entrypoint(self.cmd(&c.arguments, line, "ENTRYPOINT")?)
            }
            Instruction::Run(r) => {
                let mut cmd = self.cmd(&r.arguments, line, "RUN")?;
                let mut script = false;
                if let CmdForm::Shell(s) = &mut cmd
                    && let Some(pos) = self.docs.by_line.iter().position(|(l, _, _)| *l == line)
                {
                    let (_, markers, body) = self.docs.by_line.remove(pos);
                    let mut rebuilt = s.clone();
                    for (n, m) in markers.iter().enumerate() {
                        rebuilt = rebuilt.replace(&format!("{MARK}{n}{MARK}"), m);
                    }
                    let mut bare = rebuilt.clone();
                    for m in &markers {
                        bare = bare.replace(m.as_str(), "");
                    }
                    if bare.trim().is_empty() && markers.len() == 1 {
                        // `RUN <<EOF`: the body is the script (without its delimiter line).
                        let mut lines: Vec<&str> = body.lines().collect();
                        lines.pop();
                        *s = lines.join("\n");
                        script = true;
                    } else {
                        *s = format!("{rebuilt}\n{body}");
                    }
                } else if let CmdForm::Shell(s) = &mut cmd
                    && let Some(doc) = r.here_docs.first()
                {
                    // A leading heredoc the crate took itself (only when not lifted above).
                    *s = doc.value.to_string();
                    script = true;
                }
                StepKind::Run {
                    flags: flags(&r.options),
                    cmd,
                    script,
                }
            }
            Instruction::Copy(c) => StepKind::Copy {
                add: false,
                flags: flags(&c.options),
                srcs: c.src.iter().map(source).collect(),
                dest: c.dest.value.to_string(),
            },
            Instruction::Add(c) => StepKind::Copy {
                add: true,
                flags: flags(&c.options),
                srcs: c.src.iter().map(source).collect(),
                dest: c.dest.value.to_string(),
            },
            Instruction::Expose(e) => {
                StepKind::Expose(e.arguments.iter().map(|s| s.value.to_string()).collect())
            }
            Instruction::Volume(v) => StepKind::Volume(match &v.arguments {
                JsonOrStringArray::Json(j) => j.value.iter().map(|s| s.value.to_string()).collect(),
                JsonOrStringArray::String(s) => s.iter().map(|s| s.value.to_string()).collect(),
            }),
            Instruction::Workdir(w) => StepKind::Workdir(w.arguments.value.trim().to_string()),
            Instruction::User(u) => StepKind::User(u.arguments.value.trim().to_string()),
            Instruction::Shell(s) => {
                let raw = self.text[s.shell.span.end..].trim_start();
                if !raw.starts_with('[') {
                    return Err(syntax_err(
                        line,
                        "SHELL requires the arguments to be in JSON form",
                    ));
                }
                StepKind::Shell(s.arguments.iter().map(|a| a.value.to_string()).collect())
            }
            Instruction::Stopsignal(s) => {
                StepKind::StopSignal(s.arguments.value.trim().to_string())
            }
            Instruction::Healthcheck(h) => StepKind::Healthcheck {
                flags: flags(&h.options),
                cmd: match &h.arguments {
                    HealthcheckArguments::Cmd { arguments, .. } => {
                        Some(self.cmd(arguments, line, "HEALTHCHECK")?)
                    }
                    HealthcheckArguments::None { .. } => None,
                    _ => return Err(syntax_err(line, "HEALTHCHECK: unknown form")),
                },
            },
            Instruction::Onbuild(o) => {
                let inner_start = instruction_start(o.instruction.as_ref());
                let end = end_of_instruction(self.text, inner_start, self.escape);
                let trigger = join_lines(&self.text[inner_start..end], self.escape);
                let word = trigger
                    .split_whitespace()
                    .next()
                    .unwrap_or_default()
                    .to_ascii_uppercase();
                if matches!(word.as_str(), "ONBUILD" | "FROM" | "MAINTAINER") {
                    return Err(syntax_err(
                        line,
                        format!("{word} isn't allowed as an ONBUILD trigger"),
                    ));
                }
                StepKind::OnBuild(trigger.trim().to_string())
            }
            Instruction::Maintainer(m) => StepKind::Maintainer(m.name.value.to_string()),
            Instruction::From(_) => return Err(syntax_err(line, "unexpected FROM")),
            _ => return Err(syntax_err(line, "unsupported instruction")),
        };
        let end = end_of_instruction(self.text, start, self.escape);
        let text = join_lines(&self.text[start..end], self.escape)
            .trim()
            .to_string();
        let mut text = text;
        for (n, m) in markers.iter().enumerate() {
            text = text.replace(&format!("{MARK}{n}{MARK}"), m);
        }
        Ok(Step { line, text, kind })
    }
}

fn source(s: &parse_dockerfile::Source<'_>) -> Source {
    match s {
        parse_dockerfile::Source::Path(p) => Source::Path(p.value.to_string()),
        parse_dockerfile::Source::HereDoc(h) => Source::HereDoc {
            content: h.value.to_string(),
            expand: h.expand,
        },
        _ => Source::Path(String::new()),
    }
}

fn instruction_start(i: &Instruction<'_>) -> usize {
    match i {
        Instruction::Add(x) => x.add.span.start,
        Instruction::Arg(x) => x.arg.span.start,
        Instruction::Cmd(x) => x.cmd.span.start,
        Instruction::Copy(x) => x.copy.span.start,
        Instruction::Entrypoint(x) => x.entrypoint.span.start,
        Instruction::Env(x) => x.env.span.start,
        Instruction::Expose(x) => x.expose.span.start,
        Instruction::From(x) => x.from.span.start,
        Instruction::Healthcheck(x) => x.healthcheck.span.start,
        Instruction::Label(x) => x.label.span.start,
        Instruction::Maintainer(x) => x.maintainer.span.start,
        Instruction::Onbuild(x) => x.onbuild.span.start,
        Instruction::Run(x) => x.run.span.start,
        Instruction::Shell(x) => x.shell.span.start,
        Instruction::Stopsignal(x) => x.stopsignal.span.start,
        Instruction::User(x) => x.user.span.start,
        Instruction::Volume(x) => x.volume.span.start,
        Instruction::Workdir(x) => x.workdir.span.start,
        _ => 0,
    }
}

/// The byte offset where the logical line starting at `start` ends (continuations followed).
fn end_of_instruction(text: &str, start: usize, escape: char) -> usize {
    let mut pos = start;
    loop {
        let end = text[pos..].find('\n').map_or(text.len(), |i| pos + i);
        let line = &text[pos..end];
        let t = line.trim_start();
        let continues = if pos != start && (t.starts_with('#') || t.is_empty()) {
            true
        } else {
            line.trim_end().ends_with(escape)
        };
        if !continues || end >= text.len() {
            return end;
        }
        pos = end + 1;
    }
}

/// Parses a Dockerfile.
pub fn parse(text: &str) -> Result<Dockerfile, BuildError> {
    let escape = escape_directive(text);
    let (lifted, docs) = lift_heredocs(text, escape)?;
    let df = parse_dockerfile::parse(&lifted).map_err(|e| {
        let msg = e.to_string();
        let msg = match msg.find(" at line ") {
            Some(i) => msg[..i].to_string(),
            None => msg,
        };
        let msg = if msg == "expected FROM" {
            "no FROM instruction before the first build step".to_string()
        } else {
            msg
        };
        syntax_err(e.line(), msg)
    })?;
    let mut conv = Conv {
        text: &lifted,
        escape,
        docs,
    };
    let syntax = df
        .parser_directives
        .syntax
        .as_ref()
        .map(|d| d.value.value.to_string());
    let mut global_args = Vec::new();
    for a in df.global_args() {
        let start = a.arg.span.start;
        let (line, _) = line_col(&lifted, start);
        let end = end_of_instruction(&lifted, start, escape);
        global_args.push(Step {
            line,
            text: join_lines(&lifted[start..end], escape).trim().to_string(),
            kind: arg_kind(&a.arguments.value, escape, line)?,
        });
    }
    let mut stages = Vec::new();
    for s in df.stages() {
        let (line, _) = line_col(&lifted, s.from.from.span.start);
        let platform = s
            .from
            .options
            .iter()
            .find(|f| f.name.value == "platform")
            .and_then(|f| f.value.as_ref().map(|v| v.value.to_string()));
        if let Some(f) = s.from.options.iter().find(|f| f.name.value != "platform") {
            return Err(syntax_err(
                line,
                format!("unknown flag: --{}", f.name.value),
            ));
        }
        let mut steps = Vec::new();
        for ins in s.instructions {
            steps.push(conv.step(ins, instruction_start(ins))?);
        }
        stages.push(Stage {
            line,
            base: s.from.image.value.to_string(),
            name: s
                .from
                .as_
                .as_ref()
                .map(|(_, n)| n.value.to_ascii_lowercase()),
            platform,
            steps,
        });
    }
    Ok(Dockerfile {
        escape,
        syntax,
        global_args,
        stages,
    })
}
