//! The subset of Go's `text/template` that docker's `--format` uses, over JSON values:
//! fields (`.A.B`), variables, pipelines, `if`/`else if`/`else`, `range`, `with`, comments,
//! trim markers, Go's built-in functions and docker's additions (`json`, `join`, `split`,
//! `lower`, `upper`, `title`, `pad`, `truncate`).
//!
//! A field missing from a map prints `<no value>` and a JSON null prints `<nil>`, as Go does
//! for `map[string]interface{}`. Calls with arguments on a field (`.Label "k"`) go to a hook
//! the caller supplies, which stands in for Go methods.

use serde_json::Value;

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum TemplateError {
    #[error("template parsing error: {0}")]
    Parse(String),
    #[error("template: {0}")]
    Exec(String),
}

type Result<T> = std::result::Result<T, TemplateError>;

fn parse_err<T>(msg: impl Into<String>) -> Result<T> {
    Err(TemplateError::Parse(msg.into()))
}

fn exec_err<T>(msg: impl Into<String>) -> Result<T> {
    Err(TemplateError::Exec(msg.into()))
}

/// Methods with arguments (`.Label "k"`): receiver, method name, arguments.
pub type Hook<'a> = &'a dyn Fn(&Value, &str, &[Value]) -> Option<Value>;

#[derive(Debug, Clone)]
pub struct Template {
    nodes: Vec<Node>,
}

#[derive(Debug, Clone)]
enum Node {
    Text(String),
    Action(Pipeline),
    If(Vec<(Pipeline, Vec<Node>)>, Vec<Node>),
    Range(Pipeline, Vec<Node>, Vec<Node>),
    With(Pipeline, Vec<Node>, Vec<Node>),
}

#[derive(Debug, Clone)]
struct Pipeline {
    decl: Vec<String>,
    assign: bool,
    cmds: Vec<Vec<Operand>>,
}

#[derive(Debug, Clone)]
enum Operand {
    Field(Vec<String>),
    Var(String, Vec<String>),
    Str(String),
    Num(f64, bool),
    Bool(bool),
    Nil,
    Ident(String),
    Sub(Box<Pipeline>, Vec<String>),
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    Field(Vec<String>, bool),
    Var(String, Vec<String>),
    Str(String),
    Num(String),
    LParen,
    RParen,
    Pipe,
    Declare,
    Assign,
    Comma,
}

impl Template {
    pub fn parse(src: &str) -> Result<Template> {
        let items = split_actions(src)?;
        let mut pos = 0;
        let (nodes, end) = parse_list(&items, &mut pos)?;
        if let Some(e) = end {
            return parse_err(format!("unexpected {{{{{e}}}}}"));
        }
        Ok(Template { nodes })
    }

    pub fn execute(&self, data: &Value, hook: Option<Hook>) -> Result<String> {
        let mut st = State {
            vars: vec![("$".to_string(), data.clone())],
            hook,
            header: false,
        };
        let mut out = String::new();
        st.walk(&self.nodes, data, &mut out)?;
        Ok(out)
    }

    /// Runs the template for a table's header: functions pass their first argument through,
    /// methods answer with their field's header.
    pub fn execute_header(&self, headers: &Value) -> Result<String> {
        let mut st = State {
            vars: vec![("$".to_string(), headers.clone())],
            hook: None,
            header: true,
        };
        let mut out = String::new();
        st.walk(&self.nodes, headers, &mut out)?;
        Ok(out)
    }
}

enum Item {
    Text(String),
    Action(String),
}

/// Splits source into text and action bodies, applying `{{-` / `-}}` trimming.
fn split_actions(src: &str) -> Result<Vec<Item>> {
    let mut items = Vec::new();
    let mut rest = src;
    let mut trim_next = false;
    while let Some(start) = rest.find("{{") {
        let mut text = &rest[..start];
        if trim_next {
            text = text.trim_start();
        }
        let mut body_start = start + 2;
        let after = &rest[body_start..];
        if after.starts_with("- ") || after.starts_with("-\t") || after.starts_with("-\n") {
            text = text.trim_end();
            body_start += 1;
        }
        if !text.is_empty() {
            items.push(Item::Text(text.to_string()));
        }
        let end = find_close(&rest[body_start..])
            .ok_or_else(|| TemplateError::Parse("unclosed action".to_string()))?;
        let mut body = &rest[body_start..body_start + end];
        trim_next = false;
        if body.ends_with(" -") || body.ends_with("\t-") || body.ends_with("\n-") {
            body = &body[..body.len() - 1];
            trim_next = true;
        }
        let body = body.trim();
        if !(body.starts_with("/*") && body.ends_with("*/")) {
            items.push(Item::Action(body.to_string()));
        }
        rest = &rest[body_start + end + 2..];
    }
    let text = if trim_next { rest.trim_start() } else { rest };
    if !text.is_empty() {
        items.push(Item::Text(text.to_string()));
    }
    Ok(items)
}

/// The offset of the `}}` closing an action, skipping quoted strings.
fn find_close(s: &str) -> Option<usize> {
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'"' => {
                i += 1;
                while i < b.len() && b[i] != b'"' {
                    if b[i] == b'\\' {
                        i += 1;
                    }
                    i += 1;
                }
            }
            b'`' => {
                i += 1;
                while i < b.len() && b[i] != b'`' {
                    i += 1;
                }
            }
            b'}' if i + 1 < b.len() && b[i + 1] == b'}' => return Some(i),
            _ => {}
        }
        i += 1;
    }
    None
}

/// Parses nodes until `{{end}}` or `{{else...}}`; returns the terminator's text.
fn parse_list(items: &[Item], pos: &mut usize) -> Result<(Vec<Node>, Option<String>)> {
    let mut nodes = Vec::new();
    while *pos < items.len() {
        let item = &items[*pos];
        *pos += 1;
        let body = match item {
            Item::Text(t) => {
                nodes.push(Node::Text(t.clone()));
                continue;
            }
            Item::Action(a) => a.as_str(),
        };
        let (word, rest) = match body.find(|c: char| c.is_whitespace()) {
            Some(i) => (&body[..i], body[i..].trim()),
            None => (body, ""),
        };
        match word {
            "end" | "else" => return Ok((nodes, Some(body.to_string()))),
            "if" => nodes.push(parse_if(rest, items, pos)?),
            "range" | "with" => {
                let pipe = parse_pipeline(&lex(rest)?)?;
                let (body_nodes, end) = parse_list(items, pos)?;
                let else_nodes = match end.as_deref() {
                    Some("end") => Vec::new(),
                    Some("else") => match parse_list(items, pos)? {
                        (n, Some(e)) if e == "end" => n,
                        _ => return parse_err(format!("missing {{{{end}}}} for {word}")),
                    },
                    _ => return parse_err(format!("missing {{{{end}}}} for {word}")),
                };
                nodes.push(if word == "range" {
                    Node::Range(pipe, body_nodes, else_nodes)
                } else {
                    Node::With(pipe, body_nodes, else_nodes)
                });
            }
            "define" | "template" | "block" | "break" | "continue" => {
                return parse_err(format!("{word} is not supported"));
            }
            _ => nodes.push(Node::Action(parse_pipeline(&lex(body)?)?)),
        }
    }
    Ok((nodes, None))
}

fn parse_if(cond: &str, items: &[Item], pos: &mut usize) -> Result<Node> {
    let mut branches = Vec::new();
    let mut cond = cond.to_string();
    loop {
        if cond.is_empty() {
            return parse_err("missing value for if");
        }
        let pipe = parse_pipeline(&lex(&cond)?)?;
        let (nodes, end) = parse_list(items, pos)?;
        branches.push((pipe, nodes));
        match end.as_deref() {
            Some("end") => return Ok(Node::If(branches, Vec::new())),
            Some("else") => {
                let (else_nodes, end) = parse_list(items, pos)?;
                if end.as_deref() != Some("end") {
                    return parse_err("missing {{end}} for if");
                }
                return Ok(Node::If(branches, else_nodes));
            }
            Some(e) if e.starts_with("else if ") => cond = e["else if ".len()..].trim().to_string(),
            _ => return parse_err("missing {{end}} for if"),
        }
    }
}

fn is_ident_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

fn lex(s: &str) -> Result<Vec<Tok>> {
    let chars: Vec<char> = s.chars().collect();
    let mut toks = Vec::new();
    let mut i = 0;
    let read_fields = |i: &mut usize| -> Vec<String> {
        let mut fields = Vec::new();
        while *i < chars.len()
            && chars[*i] == '.'
            && *i + 1 < chars.len()
            && is_ident_char(chars[*i + 1])
        {
            *i += 1;
            let start = *i;
            while *i < chars.len() && is_ident_char(chars[*i]) {
                *i += 1;
            }
            fields.push(chars[start..*i].iter().collect());
        }
        fields
    };
    while i < chars.len() {
        let c = chars[i];
        let attached = i > 0 && !chars[i - 1].is_whitespace();
        match c {
            c if c.is_whitespace() => i += 1,
            '(' => {
                toks.push(Tok::LParen);
                i += 1;
            }
            ')' => {
                toks.push(Tok::RParen);
                i += 1;
            }
            '|' => {
                toks.push(Tok::Pipe);
                i += 1;
            }
            ',' => {
                toks.push(Tok::Comma);
                i += 1;
            }
            ':' if chars.get(i + 1) == Some(&'=') => {
                toks.push(Tok::Declare);
                i += 2;
            }
            '=' => {
                toks.push(Tok::Assign);
                i += 1;
            }
            '"' => {
                let mut v = String::new();
                i += 1;
                loop {
                    match chars.get(i) {
                        None => return parse_err("unterminated quoted string"),
                        Some('"') => break,
                        Some('\\') => {
                            i += 1;
                            match chars.get(i) {
                                Some('n') => v.push('\n'),
                                Some('t') => v.push('\t'),
                                Some('r') => v.push('\r'),
                                Some('\\') => v.push('\\'),
                                Some('"') => v.push('"'),
                                Some(other) => {
                                    v.push('\\');
                                    v.push(*other);
                                }
                                None => return parse_err("unterminated quoted string"),
                            }
                        }
                        Some(ch) => v.push(*ch),
                    }
                    i += 1;
                }
                i += 1;
                toks.push(Tok::Str(v));
            }
            '`' => {
                let start = i + 1;
                let end = chars[start..]
                    .iter()
                    .position(|c| *c == '`')
                    .ok_or_else(|| TemplateError::Parse("unterminated raw quoted string".into()))?;
                toks.push(Tok::Str(chars[start..start + end].iter().collect()));
                i = start + end + 1;
            }
            '.' => {
                let fields = read_fields(&mut i);
                if fields.is_empty() {
                    i += 1;
                }
                // A field chain glued to `)` applies to the parenthesised value.
                let glued = attached && matches!(toks.last(), Some(Tok::RParen));
                toks.push(Tok::Field(fields, glued));
            }
            '$' => {
                let start = i;
                i += 1;
                while i < chars.len() && is_ident_char(chars[i]) {
                    i += 1;
                }
                let name: String = chars[start..i].iter().collect();
                let fields = read_fields(&mut i);
                toks.push(Tok::Var(name, fields));
            }
            c if c.is_ascii_digit()
                || ((c == '-' || c == '+')
                    && chars.get(i + 1).is_some_and(|d| d.is_ascii_digit())) =>
            {
                let start = i;
                i += 1;
                while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                    i += 1;
                }
                toks.push(Tok::Num(chars[start..i].iter().collect()));
            }
            c if is_ident_char(c) => {
                let start = i;
                while i < chars.len() && is_ident_char(chars[i]) {
                    i += 1;
                }
                toks.push(Tok::Ident(chars[start..i].iter().collect()));
            }
            other => return parse_err(format!("unexpected {other:?} in command")),
        }
    }
    Ok(toks)
}

fn parse_pipeline(toks: &[Tok]) -> Result<Pipeline> {
    let mut decl = Vec::new();
    let mut assign = false;
    let mut start = 0;
    // `$x :=`, `$i, $e :=`, `$x =`
    let mut j = 0;
    let mut vars = Vec::new();
    while let Some(Tok::Var(name, fields)) = toks.get(j) {
        if !fields.is_empty() {
            break;
        }
        vars.push(name.clone());
        j += 1;
        match toks.get(j) {
            Some(Tok::Comma) => j += 1,
            Some(Tok::Declare) | Some(Tok::Assign) => {
                assign = toks[j] == Tok::Assign;
                decl = std::mem::take(&mut vars);
                start = j + 1;
                break;
            }
            _ => break,
        }
    }
    let mut cmds = Vec::new();
    let mut cur = Vec::new();
    let mut i = start;
    while i < toks.len() {
        match &toks[i] {
            Tok::Pipe => {
                if cur.is_empty() {
                    return parse_err("missing command");
                }
                cmds.push(std::mem::take(&mut cur));
                i += 1;
            }
            _ => {
                let (op, next) = parse_operand(toks, i)?;
                cur.push(op);
                i = next;
            }
        }
    }
    if cur.is_empty() {
        return parse_err("missing command");
    }
    cmds.push(cur);
    Ok(Pipeline { decl, assign, cmds })
}

fn parse_operand(toks: &[Tok], i: usize) -> Result<(Operand, usize)> {
    let op = match &toks[i] {
        Tok::Field(f, _) => Operand::Field(f.clone()),
        Tok::Var(n, f) => Operand::Var(n.clone(), f.clone()),
        Tok::Str(s) => Operand::Str(s.clone()),
        Tok::Num(n) => {
            let is_int = !n.contains(['.', 'e', 'E']);
            let v = if let Some(hex) = n.strip_prefix("0x") {
                i64::from_str_radix(hex, 16).map(|v| v as f64).ok()
            } else {
                n.parse::<f64>().ok()
            };
            match v {
                Some(v) => Operand::Num(v, is_int),
                None => return parse_err(format!("bad number syntax: {n}")),
            }
        }
        Tok::Ident(name) => match name.as_str() {
            "true" => Operand::Bool(true),
            "false" => Operand::Bool(false),
            "nil" => Operand::Nil,
            _ => Operand::Ident(name.clone()),
        },
        Tok::LParen => {
            let mut depth = 0;
            let mut j = i;
            loop {
                match toks.get(j) {
                    Some(Tok::LParen) => depth += 1,
                    Some(Tok::RParen) => {
                        depth -= 1;
                        if depth == 0 {
                            break;
                        }
                    }
                    Some(_) => {}
                    None => return parse_err("unclosed left paren"),
                }
                j += 1;
            }
            let inner = parse_pipeline(&toks[i + 1..j])?;
            let mut fields = Vec::new();
            let mut next = j + 1;
            if let Some(Tok::Field(f, true)) = toks.get(next) {
                fields = f.clone();
                next += 1;
            }
            return Ok((Operand::Sub(Box::new(inner), fields), next));
        }
        Tok::RParen => return parse_err("unexpected right paren"),
        other => return parse_err(format!("unexpected {other:?} in operand")),
    };
    Ok((op, i + 1))
}

struct State<'a> {
    vars: Vec<(String, Value)>,
    hook: Option<Hook<'a>>,
    header: bool,
}

/// A value, or nothing (Go's `<no value>` for a missing map key).
type Val = Option<Value>;

fn truthy(v: &Val) -> bool {
    match v {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(Value::Number(n)) => n.as_f64().is_some_and(|f| f != 0.0),
        Some(Value::String(s)) => !s.is_empty(),
        Some(Value::Array(a)) => !a.is_empty(),
        Some(Value::Object(o)) => !o.is_empty(),
    }
}

/// Go's `%v` / print form of a value.
pub fn go_print(v: &Value) -> String {
    match v {
        Value::Null => "<nil>".to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => s.clone(),
        Value::Array(a) => {
            let items: Vec<String> = a.iter().map(go_print).collect();
            format!("[{}]", items.join(" "))
        }
        Value::Object(o) => {
            let mut keys: Vec<&String> = o.keys().collect();
            keys.sort();
            let items: Vec<String> = keys
                .iter()
                .map(|k| format!("{k}:{}", o.get(*k).map(go_print).unwrap_or_default()))
                .collect();
            format!("map[{}]", items.join(" "))
        }
    }
}

fn print_val(v: &Val) -> String {
    match v {
        None => "<no value>".to_string(),
        Some(v) => go_print(v),
    }
}

fn field(v: &Value, name: &str) -> Result<Val> {
    match v {
        Value::Object(o) => Ok(o.get(name).cloned()),
        Value::Null => Ok(None),
        other => exec_err(format!(
            "can't evaluate field {name} in type {}",
            type_name(other)
        )),
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "<nil>",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "slice",
        Value::Object(_) => "map",
    }
}

fn fields_of(mut v: Val, names: &[String]) -> Result<Val> {
    for n in names {
        v = match v {
            None => None,
            Some(val) => field(&val, n)?,
        };
    }
    Ok(v)
}

impl State<'_> {
    fn walk(&mut self, nodes: &[Node], dot: &Value, out: &mut String) -> Result<()> {
        for node in nodes {
            match node {
                Node::Text(t) => out.push_str(t),
                Node::Action(p) => {
                    let v = self.pipeline(p, dot)?;
                    if p.decl.is_empty() {
                        out.push_str(&print_val(&v));
                    }
                }
                Node::If(branches, else_nodes) => {
                    let depth = self.vars.len();
                    let mut done = false;
                    for (cond, body) in branches {
                        let v = self.pipeline(cond, dot)?;
                        if truthy(&v) {
                            self.walk(body, dot, out)?;
                            done = true;
                            break;
                        }
                    }
                    if !done {
                        self.walk(else_nodes, dot, out)?;
                    }
                    self.vars.truncate(depth);
                }
                Node::With(p, body, else_nodes) => {
                    let depth = self.vars.len();
                    let v = self.pipeline(p, dot)?;
                    if truthy(&v) {
                        let inner = v.unwrap_or(Value::Null);
                        self.walk(body, &inner, out)?;
                    } else {
                        self.walk(else_nodes, dot, out)?;
                    }
                    self.vars.truncate(depth);
                }
                Node::Range(p, body, else_nodes) => self.range(p, body, else_nodes, dot, out)?,
            }
        }
        Ok(())
    }

    fn range(
        &mut self,
        p: &Pipeline,
        body: &[Node],
        else_nodes: &[Node],
        dot: &Value,
        out: &mut String,
    ) -> Result<()> {
        let depth = self.vars.len();
        let plain = Pipeline {
            decl: Vec::new(),
            assign: false,
            cmds: p.cmds.clone(),
        };
        let v = self.pipeline(&plain, dot)?;
        let items: Vec<(Value, Value)> = match v {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(a)) => a
                .into_iter()
                .enumerate()
                .map(|(i, v)| (Value::from(i), v))
                .collect(),
            Some(Value::Object(o)) => {
                let mut kv: Vec<(String, Value)> = o.into_iter().collect();
                kv.sort_by(|a, b| a.0.cmp(&b.0));
                kv.into_iter().map(|(k, v)| (Value::String(k), v)).collect()
            }
            Some(Value::Number(n)) if n.as_u64().is_some() => (0..n.as_u64().unwrap_or(0))
                .map(|i| (Value::from(i), Value::from(i)))
                .collect(),
            Some(other) => {
                return exec_err(format!("range can't iterate over {}", go_print(&other)));
            }
        };
        if items.is_empty() {
            self.walk(else_nodes, dot, out)?;
        }
        for (k, v) in items {
            match p.decl.as_slice() {
                [] => {}
                [e] => self.vars.push((e.clone(), v.clone())),
                [i, e, ..] => {
                    self.vars.push((i.clone(), k));
                    self.vars.push((e.clone(), v.clone()));
                }
            }
            self.walk(body, &v, out)?;
            self.vars.truncate(depth);
        }
        Ok(())
    }

    fn var(&self, name: &str) -> Result<Value> {
        match self.vars.iter().rev().find(|(n, _)| n == name) {
            Some((_, v)) => Ok(v.clone()),
            None => exec_err(format!("undefined variable: {name}")),
        }
    }

    fn pipeline(&mut self, p: &Pipeline, dot: &Value) -> Result<Val> {
        let mut piped: Option<Val> = None;
        for cmd in &p.cmds {
            piped = Some(self.command(cmd, dot, piped)?);
        }
        let v = piped.unwrap_or(None);
        if p.assign {
            for name in &p.decl {
                let val = v.clone().unwrap_or(Value::Null);
                match self.vars.iter_mut().rev().find(|(n, _)| n == name) {
                    Some(slot) => slot.1 = val,
                    None => return exec_err(format!("undefined variable: {name}")),
                }
            }
        } else if let [name] = p.decl.as_slice() {
            self.vars
                .push((name.clone(), v.clone().unwrap_or(Value::Null)));
        }
        Ok(v)
    }

    fn operand(&mut self, op: &Operand, dot: &Value) -> Result<Val> {
        match op {
            Operand::Field(f) => fields_of(Some(dot.clone()), f),
            Operand::Var(n, f) => fields_of(Some(self.var(n)?), f),
            Operand::Str(s) => Ok(Some(Value::String(s.clone()))),
            Operand::Num(n, is_int) => Ok(Some(if *is_int {
                Value::from(*n as i64)
            } else {
                serde_json::Number::from_f64(*n).map_or(Value::Null, Value::Number)
            })),
            Operand::Bool(b) => Ok(Some(Value::Bool(*b))),
            Operand::Nil => Ok(Some(Value::Null)),
            Operand::Ident(name) => self.call(name, Vec::new()),
            Operand::Sub(p, f) => {
                let v = self.pipeline(p, dot)?;
                fields_of(v, f)
            }
        }
    }

    fn command(&mut self, cmd: &[Operand], dot: &Value, piped: Option<Val>) -> Result<Val> {
        match cmd.first() {
            Some(Operand::Ident(name)) => {
                let mut args = Vec::with_capacity(cmd.len());
                for op in &cmd[1..] {
                    args.push(self.operand(op, dot)?);
                }
                if let Some(p) = piped {
                    args.push(p);
                }
                self.call(name, args)
            }
            Some(Operand::Field(f)) if (cmd.len() > 1 || piped.is_some()) && !f.is_empty() => {
                let mut args = Vec::new();
                for op in &cmd[1..] {
                    args.push(self.operand(op, dot)?.unwrap_or(Value::Null));
                }
                if let Some(p) = piped {
                    args.push(p.unwrap_or(Value::Null));
                }
                let (method, recv_path) = f
                    .split_last()
                    .ok_or_else(|| TemplateError::Exec("empty field".into()))?;
                let recv = fields_of(Some(dot.clone()), recv_path)?.unwrap_or(Value::Null);
                if self.header {
                    // docker titles a method column with its argument (`.Label "k"` -> "k").
                    return Ok(Some(
                        args.into_iter()
                            .next()
                            .unwrap_or(Value::String(method.clone())),
                    ));
                }
                match self.hook.and_then(|h| h(&recv, method, &args)) {
                    Some(v) => Ok(Some(v)),
                    None => exec_err(format!(
                        "can't give argument to non-function .{}",
                        f.join(".")
                    )),
                }
            }
            Some(op) => {
                if cmd.len() > 1 || piped.is_some() {
                    return exec_err("can't give argument to non-function");
                }
                self.operand(op, dot)
            }
            None => exec_err("empty command"),
        }
    }

    fn call(&mut self, name: &str, args: Vec<Val>) -> Result<Val> {
        if self.header
            && !matches!(
                name,
                "and" | "or" | "not" | "eq" | "ne" | "lt" | "le" | "gt" | "ge" | "index" | "len"
            )
        {
            // Header rendering: docker's header functions hand their input back unchanged.
            return Ok(args
                .into_iter()
                .next()
                .flatten()
                .or(Some(Value::String(String::new()))));
        }
        let arity = |n: usize| -> Result<()> {
            if args.len() == n {
                Ok(())
            } else {
                exec_err(format!(
                    "wrong number of args for {name}: want {n} got {}",
                    args.len()
                ))
            }
        };
        let s = |v: &Val| -> String { v.as_ref().map(go_print).unwrap_or_default() };
        let out = match name {
            "and" => {
                if args.is_empty() {
                    return exec_err("wrong number of args for and");
                }
                let mut last = None;
                for a in args {
                    if !truthy(&a) {
                        return Ok(a);
                    }
                    last = a;
                }
                last
            }
            "or" => {
                if args.is_empty() {
                    return exec_err("wrong number of args for or");
                }
                let mut last = None;
                for a in args {
                    if truthy(&a) {
                        return Ok(a);
                    }
                    last = a;
                }
                last
            }
            "not" => {
                arity(1)?;
                Some(Value::Bool(!truthy(&args[0])))
            }
            "eq" => {
                if args.len() < 2 {
                    return exec_err("missing argument for comparison");
                }
                let first = &args[0];
                Some(Value::Bool(args[1..].iter().any(|b| {
                    compare(first, b) == Some(std::cmp::Ordering::Equal)
                })))
            }
            "ne" | "lt" | "le" | "gt" | "ge" => {
                arity(2)?;
                let ord = compare(&args[0], &args[1]).ok_or_else(|| {
                    TemplateError::Exec(format!("incompatible types for comparison in {name}"))
                })?;
                use std::cmp::Ordering::*;
                Some(Value::Bool(match name {
                    "ne" => ord != Equal,
                    "lt" => ord == Less,
                    "le" => ord != Greater,
                    "gt" => ord == Greater,
                    _ => ord != Less,
                }))
            }
            "len" => {
                arity(1)?;
                let n = match &args[0] {
                    Some(Value::String(s)) => s.len(),
                    Some(Value::Array(a)) => a.len(),
                    Some(Value::Object(o)) => o.len(),
                    Some(Value::Null) | None => 0,
                    Some(other) => return exec_err(format!("len of type {}", type_name(other))),
                };
                Some(Value::from(n))
            }
            "index" => {
                let mut it = args.into_iter();
                let mut v = it.next().flatten().unwrap_or(Value::Null);
                for key in it {
                    v = match (&v, key) {
                        (Value::Object(o), Some(Value::String(k))) => {
                            o.get(&k).cloned().unwrap_or(Value::String(String::new()))
                        }
                        (Value::Array(a), Some(Value::Number(n))) => {
                            match n.as_u64().and_then(|i| a.get(i as usize)) {
                                Some(x) => x.clone(),
                                None => return exec_err(format!("index out of range: {n}")),
                            }
                        }
                        (Value::Null, _) => Value::String(String::new()),
                        (other, _) => {
                            return exec_err(format!(
                                "can't index item of type {}",
                                type_name(other)
                            ));
                        }
                    };
                }
                Some(v)
            }
            "slice" => {
                let mut it = args.into_iter();
                let v = it.next().flatten().unwrap_or(Value::Null);
                let idx: Vec<usize> = it
                    .filter_map(|a| a.and_then(|x| x.as_u64()).map(|x| x as usize))
                    .collect();
                match v {
                    Value::String(s) => {
                        let from = idx.first().copied().unwrap_or(0).min(s.len());
                        let to = idx
                            .get(1)
                            .copied()
                            .unwrap_or(s.len())
                            .min(s.len())
                            .max(from);
                        Some(Value::String(
                            s.get(from..to).unwrap_or_default().to_string(),
                        ))
                    }
                    Value::Array(a) => {
                        let from = idx.first().copied().unwrap_or(0).min(a.len());
                        let to = idx
                            .get(1)
                            .copied()
                            .unwrap_or(a.len())
                            .min(a.len())
                            .max(from);
                        Some(Value::Array(a[from..to].to_vec()))
                    }
                    other => {
                        return exec_err(format!("can't slice item of type {}", type_name(&other)));
                    }
                }
            }
            "print" => Some(Value::String(go_sprint(&args))),
            "println" => {
                let parts: Vec<String> = args.iter().map(print_val).collect();
                Some(Value::String(format!("{}\n", parts.join(" "))))
            }
            "printf" => {
                let mut it = args.into_iter();
                let fmt = s(&it.next().flatten());
                let rest: Vec<Val> = it.collect();
                Some(Value::String(sprintf(&fmt, &rest)))
            }
            "json" => {
                arity(1)?;
                let v = args[0].clone().unwrap_or(Value::Null);
                Some(Value::String(serde_json::to_string(&v).unwrap_or_default()))
            }
            "join" => {
                arity(2)?;
                let sep = s(&args[1]);
                let parts: Vec<String> = match &args[0] {
                    Some(Value::Array(a)) => a.iter().map(go_print).collect(),
                    Some(Value::Null) | None => Vec::new(),
                    Some(other) => vec![go_print(other)],
                };
                Some(Value::String(parts.join(&sep)))
            }
            "split" => {
                arity(2)?;
                let (text, sep) = (s(&args[0]), s(&args[1]));
                let parts: Vec<Value> = if sep.is_empty() {
                    text.chars().map(|c| Value::String(c.to_string())).collect()
                } else {
                    text.split(sep.as_str())
                        .map(|p| Value::String(p.to_string()))
                        .collect()
                };
                Some(Value::Array(parts))
            }
            "lower" => {
                arity(1)?;
                Some(Value::String(s(&args[0]).to_lowercase()))
            }
            "upper" => {
                arity(1)?;
                Some(Value::String(s(&args[0]).to_uppercase()))
            }
            "title" => {
                arity(1)?;
                Some(Value::String(title(&s(&args[0]))))
            }
            "pad" => {
                arity(3)?;
                let l = args[1].as_ref().and_then(Value::as_u64).unwrap_or(0) as usize;
                let r = args[2].as_ref().and_then(Value::as_u64).unwrap_or(0) as usize;
                Some(Value::String(format!(
                    "{}{}{}",
                    " ".repeat(l),
                    s(&args[0]),
                    " ".repeat(r)
                )))
            }
            "truncate" => {
                arity(2)?;
                let n = args[1].as_ref().and_then(Value::as_u64).unwrap_or(0) as usize;
                let text = s(&args[0]);
                Some(Value::String(text.chars().take(n).collect()))
            }
            _ => return exec_err(format!("function {name:?} not defined")),
        };
        Ok(out)
    }
}

fn title(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut start = true;
    for c in s.chars() {
        if start && c.is_alphabetic() {
            out.extend(c.to_uppercase());
        } else {
            out.push(c);
        }
        start = !c.is_alphanumeric();
    }
    out
}

fn compare(a: &Val, b: &Val) -> Option<std::cmp::Ordering> {
    let a = a.clone().unwrap_or(Value::Null);
    let b = b.clone().unwrap_or(Value::Null);
    match (&a, &b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64()?.partial_cmp(&y.as_f64()?),
        (Value::String(x), Value::String(y)) => Some(x.cmp(y)),
        (Value::Bool(x), Value::Bool(y)) => Some(x.cmp(y)),
        (Value::Null, Value::Null) => Some(std::cmp::Ordering::Equal),
        _ => None,
    }
}

/// Go's `fmt.Sprint`: spaces only between operands when neither is a string.
fn go_sprint(args: &[Val]) -> String {
    let mut out = String::new();
    for (i, a) in args.iter().enumerate() {
        let is_str = matches!(a, Some(Value::String(_)));
        let prev_str = i > 0 && matches!(args[i - 1], Some(Value::String(_)));
        if i > 0 && !is_str && !prev_str {
            out.push(' ');
        }
        out.push_str(&print_val(a));
    }
    out
}

/// Go's `fmt.Sprintf` for the verbs templates use: %s %v %d %q %t %f %g %x %%, with flags
/// `-`, `0`, `+`, width and precision.
pub fn sprintf(fmt: &str, args: &[Val]) -> String {
    let mut out = String::new();
    let mut chars = fmt.chars().peekable();
    let mut next = 0usize;
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let (mut left, mut zero, mut plus) = (false, false, false);
        while let Some(&f) = chars.peek() {
            match f {
                '-' => left = true,
                '0' => zero = true,
                '+' => plus = true,
                ' ' | '#' => {}
                _ => break,
            }
            chars.next();
        }
        let mut width = String::new();
        while let Some(&d) = chars.peek().filter(|d| d.is_ascii_digit()) {
            width.push(d);
            chars.next();
        }
        let mut prec: Option<usize> = None;
        if chars.peek() == Some(&'.') {
            chars.next();
            let mut p = String::new();
            while let Some(&d) = chars.peek().filter(|d| d.is_ascii_digit()) {
                p.push(d);
                chars.next();
            }
            prec = Some(p.parse().unwrap_or(0));
        }
        let Some(verb) = chars.next() else {
            out.push_str("%!(NOVERB)");
            break;
        };
        if verb == '%' {
            out.push('%');
            continue;
        }
        let Some(arg) = args.get(next) else {
            out.push_str(&format!("%!{verb}(MISSING)"));
            continue;
        };
        next += 1;
        let v = arg.clone().unwrap_or(Value::Null);
        let mut body = match verb {
            'd' => match v.as_f64() {
                Some(n) if v.is_number() => {
                    format!("{}{}", if plus && n >= 0.0 { "+" } else { "" }, n as i64)
                }
                _ => format!("%!d({})", print_val(arg)),
            },
            'f' | 'F' => match v.as_f64() {
                Some(n) => format!(
                    "{}{n:.*}",
                    if plus && n >= 0.0 { "+" } else { "" },
                    prec.unwrap_or(6)
                ),
                None => format!("%!f({})", print_val(arg)),
            },
            'g' => match v.as_f64() {
                Some(n) => crate::units::go_g(n, prec.unwrap_or(6)),
                None => format!("%!g({})", print_val(arg)),
            },
            'x' | 'X' => {
                let t = match &v {
                    Value::Number(n) => n.as_i64().map(|i| format!("{i:x}")).unwrap_or_default(),
                    other => go_print(other)
                        .bytes()
                        .map(|b| format!("{b:02x}"))
                        .collect(),
                };
                if verb == 'X' { t.to_uppercase() } else { t }
            }
            'q' => crate::units::go_quote(&print_val(arg)),
            't' => match v {
                Value::Bool(b) => b.to_string(),
                _ => format!("%!t({})", print_val(arg)),
            },
            's' | 'v' => {
                let t = print_val(arg);
                match prec {
                    Some(p) if verb == 's' => t.chars().take(p).collect(),
                    _ => t,
                }
            }
            other => format!("%!{other}({})", print_val(arg)),
        };
        if let Ok(w) = width.parse::<usize>() {
            let len = body.chars().count();
            if len < w {
                let pad = w - len;
                if left {
                    body.push_str(&" ".repeat(pad));
                } else if zero && matches!(verb, 'd' | 'f' | 'F' | 'g' | 'x' | 'X') {
                    let (sign, digits) = match body.strip_prefix(['-', '+']) {
                        Some(rest) => (&body[..1], rest.to_string()),
                        None => ("", body.clone()),
                    };
                    body = format!("{sign}{}{digits}", "0".repeat(pad));
                } else {
                    body = format!("{}{body}", " ".repeat(pad));
                }
            }
        }
        out.push_str(&body);
    }
    if next < args.len() {
        let extra: Vec<String> = args[next..]
            .iter()
            .map(|a| format!("{}={}", go_kind(a), print_val(a)))
            .collect();
        out.push_str(&format!("%!(EXTRA {})", extra.join(", ")));
    }
    out
}

fn go_kind(v: &Val) -> &'static str {
    match v {
        Some(Value::String(_)) => "string",
        Some(Value::Number(n)) if n.is_f64() => "float64",
        Some(Value::Number(_)) => "int",
        Some(Value::Bool(_)) => "bool",
        Some(Value::Array(_)) => "[]interface {}",
        Some(Value::Object(_)) => "map[string]interface {}",
        _ => "<nil>",
    }
}

/// docker's `--format` preprocessing: the literal two-character sequences `\t` and `\n`
/// become a tab and a newline.
pub fn unescape_format(f: &str) -> String {
    f.replace("\\t", "\t").replace("\\n", "\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn run(t: &str, v: &Value) -> String {
        match Template::parse(t) {
            Ok(tpl) => tpl.execute(v, None).unwrap_or_else(|e| format!("ERR {e}")),
            Err(e) => format!("PARSE {e}"),
        }
    }

    #[test]
    fn fields_and_text() {
        let v = json!({"State": {"Status": "running", "Pid": 42}, "Name": "/x"});
        assert_eq!(run("{{.State.Status}}", &v), "running");
        assert_eq!(
            run("pid={{.State.Pid}} name={{.Name}}", &v),
            "pid=42 name=/x"
        );
        assert_eq!(run("{{.Missing}}", &v), "<no value>");
        assert_eq!(run("{{.State.Nope.Deeper}}", &v), "<no value>");
        assert_eq!(
            run("{{.}}", &json!({"b": 1, "a": [1, "x"]})),
            "map[a:[1 x] b:1]"
        );
        assert_eq!(run("{{.X}}", &json!({"X": null})), "<nil>");
        assert_eq!(
            run("{{.Name.Foo}}", &v),
            "ERR template: can't evaluate field Foo in type string"
        );
    }

    #[test]
    fn json_and_index() {
        let v = json!({"Config": {"Labels": {"a": "1", "b": "<&>"}, "Env": ["A=1", "B=2"]}});
        assert_eq!(run("{{json .Config.Labels}}", &v), r#"{"a":"1","b":"<&>"}"#);
        assert_eq!(run(r#"{{index .Config.Labels "a"}}"#, &v), "1");
        assert_eq!(run(r#"{{index .Config.Labels "zz"}}"#, &v), "");
        assert_eq!(run("{{index .Config.Env 1}}", &v), "B=2");
        assert_eq!(run("{{(index .Config.Env 0)}}", &v), "A=1");
        assert_eq!(run(r#"{{join .Config.Env ","}}"#, &v), "A=1,B=2");
        assert_eq!(run("{{len .Config.Env}}", &v), "2");
        assert_eq!(run(r#"{{index (split "a:b:c" ":") 2}}"#, &v), "c");
    }

    #[test]
    fn control_flow() {
        let v = json!({"Running": true, "Code": 0, "Items": ["a", "b"], "M": {"y": 2, "x": 1}});
        assert_eq!(run("{{if .Running}}up{{else}}down{{end}}", &v), "up");
        assert_eq!(
            run("{{if .Code}}bad{{else if .Running}}ok{{else}}no{{end}}", &v),
            "ok"
        );
        assert_eq!(run("{{if not .Running}}a{{end}}b", &v), "b");
        assert_eq!(run("{{range .Items}}[{{.}}]{{end}}", &v), "[a][b]");
        assert_eq!(
            run("{{range $i, $e := .Items}}{{$i}}={{$e}} {{end}}", &v),
            "0=a 1=b "
        );
        assert_eq!(
            run("{{range $k, $v := .M}}{{$k}}:{{$v}};{{end}}", &v),
            "x:1;y:2;"
        );
        assert_eq!(run("{{range .Nope}}x{{else}}empty{{end}}", &v), "empty");
        assert_eq!(run("{{with .M}}{{.x}}{{end}}", &v), "1");
        assert_eq!(run("{{with .Nope}}x{{else}}none{{end}}", &v), "none");
        assert_eq!(run("{{range .Items}}{{$.Code}}{{end}}", &v), "00");
        assert_eq!(run("{{$x := .Code}}{{$x}}", &v), "0");
        assert_eq!(run("{{if eq .Code 0 1}}zero{{end}}", &v), "zero");
        assert_eq!(run("{{if and .Running (eq .Code 0)}}y{{end}}", &v), "y");
        assert_eq!(run("{{if gt (len .Items) 1}}many{{end}}", &v), "many");
    }

    #[test]
    fn functions_and_pipes() {
        let v = json!({"Name": "Web", "N": 3});
        assert_eq!(run("{{lower .Name}}{{upper .Name}}", &v), "webWEB");
        assert_eq!(run("{{.Name | lower}}", &v), "web");
        assert_eq!(
            run(r#"{{printf "%s-%d|%5s|%-4s|" .Name .N "ab" "c"}}"#, &v),
            "Web-3|   ab|c   |"
        );
        assert_eq!(
            run(r#"{{printf "%q %03d %v" .Name .N true}}"#, &v),
            "\"Web\" 003 true"
        );
        assert_eq!(run("{{println .Name}}", &v), "Web\n");
        assert_eq!(run(r#"{{title "hello world"}}"#, &v), "Hello World");
        assert_eq!(run(r#"{{truncate "abcdef" 3}}"#, &v), "abc");
        assert_eq!(run(r#"{{pad "x" 1 2}}"#, &v), " x  ");
        assert_eq!(run("{{json .}}", &v), r#"{"N":3,"Name":"Web"}"#);
        assert_eq!(
            run("{{nosuch .}}", &v),
            "ERR template: function \"nosuch\" not defined"
        );
    }

    #[test]
    fn trimming_and_comments() {
        let v = json!({"A": "a"});
        assert_eq!(run("x  {{- .A -}}  y", &v), "xay");
        assert_eq!(run("{{/* note */}}{{.A}}", &v), "a");
        assert_eq!(run("{{ .A }}", &v), "a");
        assert_eq!(run("{{\"}}\"}}", &v), "}}");
    }

    #[test]
    fn parse_errors() {
        assert!(matches!(
            Template::parse("{{.A"),
            Err(TemplateError::Parse(_))
        ));
        assert!(matches!(
            Template::parse("{{if .A}}x"),
            Err(TemplateError::Parse(_))
        ));
        assert!(matches!(
            Template::parse("{{end}}"),
            Err(TemplateError::Parse(_))
        ));
        assert!(matches!(
            Template::parse("{{.A | }}"),
            Err(TemplateError::Parse(_))
        ));
    }

    #[test]
    fn methods_and_headers() {
        let v = json!({"ID": "abc"});
        let hook = |_: &Value, name: &str, args: &[Value]| -> Option<Value> {
            (name == "Label").then(|| Value::String(format!("label:{}", go_print(&args[0]))))
        };
        let t = Template::parse(r#"{{.ID}} {{.Label "k"}}"#).unwrap();
        assert_eq!(t.execute(&v, Some(&hook)).unwrap(), "abc label:k");
        let t = Template::parse(r#"{{.ID}}\t{{upper .Names}} {{.Label "k"}}"#).unwrap();
        let h = json!({"ID": "CONTAINER ID", "Names": "NAMES"});
        assert_eq!(t.execute_header(&h).unwrap(), "CONTAINER ID\\tNAMES k");
        assert_eq!(unescape_format(r"{{.A}}\t{{.B}}\n"), "{{.A}}\t{{.B}}\n");
    }
}
