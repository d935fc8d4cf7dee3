//! Running stages and their steps: the plan (which stages the target needs, in what order,
//! numbered for progress), the per-step config edits, and RUN.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use wharf_api::models::HealthConfig;

use super::parse::{CmdForm, Dockerfile, Stage, Step, StepKind};
use super::shell::Lexer;
use super::{
    Args, BuildError, BuildOptions, Builder, Event, Results, RunMount, RunSpec, State, key_of, tree,
};
use crate::content::Digest;
use crate::image::config::{ConfigDoc, History, ImageConfig, host_arch};
use crate::image::{ImageStore, LayerRecord};

mod copy;

/// Where a stage starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Base {
    Scratch,
    Stage(usize),
    Image(String),
}

pub(crate) struct Plan {
    /// The stages to build, in file order.
    pub order: Vec<usize>,
    pub target: usize,
    pub base: HashMap<usize, Base>,
    pub global: Args,
    /// The progress number of each stage's FROM.
    pub first: HashMap<usize, usize>,
    pub total: usize,
    pub names: HashMap<usize, String>,
    declared: HashSet<String>,
}

impl Plan {
    /// Build args the user gave that no ARG declared.
    pub fn unused_args(&self, opts: &BuildOptions) -> Vec<String> {
        let mut v: Vec<String> = opts
            .build_args
            .keys()
            .filter(|k| !self.declared.contains(*k) && !is_predefined(k))
            .cloned()
            .collect();
        v.sort();
        v
    }
}

fn is_predefined(name: &str) -> bool {
    matches!(
        name.to_ascii_uppercase().as_str(),
        "HTTP_PROXY" | "HTTPS_PROXY" | "FTP_PROXY" | "NO_PROXY" | "ALL_PROXY"
    ) || name == "SOURCE_DATE_EPOCH"
}

/// The platform args BuildKit defines for every build.
fn platform_args() -> Vec<(String, String)> {
    let arch = host_arch();
    let platform = format!("linux/{arch}");
    vec![
        ("TARGETPLATFORM".into(), platform.clone()),
        ("TARGETOS".into(), "linux".into()),
        ("TARGETARCH".into(), arch.into()),
        ("TARGETVARIANT".into(), String::new()),
        ("BUILDPLATFORM".into(), platform),
        ("BUILDOS".into(), "linux".into()),
        ("BUILDARCH".into(), arch.into()),
        ("BUILDVARIANT".into(), String::new()),
    ]
}

fn lookup_in<'a>(env: &'a [String], args: &'a Args) -> impl Fn(&str) -> Option<String> + 'a {
    move |name: &str| {
        for e in env.iter().rev() {
            if let Some((k, v)) = e.split_once('=')
                && k == name
            {
                return Some(v.to_string());
            }
        }
        args.get(name).cloned().flatten()
    }
}

fn step_err(line: usize, msg: impl Into<String>) -> BuildError {
    BuildError::Step {
        line,
        msg: msg.into(),
    }
}

/// The value of build arg `name` from the user, if given with a value.
fn user_arg(opts: &BuildOptions, name: &str) -> Option<String> {
    opts.build_args.get(name).cloned().flatten()
}

/// Picks the stages the target needs and numbers their steps.
pub(crate) fn plan(df: &Dockerfile, opts: &BuildOptions) -> Result<Plan, BuildError> {
    let lex = Lexer { escape: df.escape };
    let mut global: Args = Args::new();
    let mut declared = HashSet::new();
    for (k, v) in platform_args() {
        global.insert(k, Some(v));
    }
    for step in &df.global_args {
        let StepKind::Arg(list) = &step.kind else {
            continue;
        };
        for (name, default) in list {
            declared.insert(name.clone());
            let value = match user_arg(opts, name) {
                Some(v) => Some(v),
                None => match default {
                    Some(d) => Some(
                        lex.word(d, &lookup_in(&[], &global))
                            .map_err(|e| step_err(step.line, e.0))?,
                    ),
                    None => global.get(name).cloned().flatten(),
                },
            };
            global.insert(name.clone(), value);
        }
    }
    for s in &df.stages {
        for step in &s.steps {
            if let StepKind::Arg(list) = &step.kind {
                declared.extend(list.iter().map(|(n, _)| n.clone()));
            }
        }
    }
    let find_stage = |name: &str, before: usize| -> Option<usize> {
        let lower = name.to_ascii_lowercase();
        if let Some(i) = df.stages[..before]
            .iter()
            .position(|s| s.name.as_deref() == Some(lower.as_str()))
        {
            return Some(i);
        }
        name.parse::<usize>().ok().filter(|&i| i < before)
    };
    let mut base = HashMap::new();
    let mut deps: HashMap<usize, Vec<usize>> = HashMap::new();
    for (i, s) in df.stages.iter().enumerate() {
        let name = lex
            .word(&s.base, &lookup_in(&[], &global))
            .map_err(|e| step_err(s.line, e.0))?;
        if name.is_empty() {
            return Err(step_err(s.line, "base name (FROM) should not be blank"));
        }
        if let Some(p) = &s.platform {
            let p = lex
                .word(p, &lookup_in(&[], &global))
                .map_err(|e| step_err(s.line, e.0))?;
            super::check_platform(&p).map_err(|e| step_err(s.line, e.to_string()))?;
        }
        let b = if name.eq_ignore_ascii_case("scratch") {
            Base::Scratch
        } else if let Some(j) = df.stages[..i]
            .iter()
            .position(|st| st.name.as_deref() == Some(name.to_ascii_lowercase().as_str()))
        {
            Base::Stage(j)
        } else {
            Base::Image(name)
        };
        let mut d = Vec::new();
        if let Base::Stage(j) = b {
            d.push(j);
        }
        for step in &s.steps {
            for from in step_froms(step) {
                let from = lex
                    .word(&from, &lookup_in(&[], &global))
                    .map_err(|e| step_err(step.line, e.0))?;
                if let Some(j) = find_stage(&from, i) {
                    d.push(j);
                } else if find_stage(&from, df.stages.len()).is_some() {
                    return Err(step_err(
                        step.line,
                        format!("stage {from:?} is used before it is defined"),
                    ));
                }
            }
        }
        base.insert(i, b);
        deps.insert(i, d);
    }
    let target = match &opts.target {
        None => df.stages.len() - 1,
        Some(t) => df
            .stages
            .iter()
            .position(|s| s.name.as_deref() == Some(t.to_ascii_lowercase().as_str()))
            .ok_or_else(|| BuildError::Invalid(format!("target stage {t:?} could not be found")))?,
    };
    let mut needed = HashSet::new();
    let mut todo = vec![target];
    while let Some(i) = todo.pop() {
        if needed.insert(i) {
            todo.extend(deps.get(&i).into_iter().flatten().copied());
        }
    }
    let order: Vec<usize> = (0..df.stages.len())
        .filter(|i| needed.contains(i))
        .collect();
    let mut first = HashMap::new();
    let mut names = HashMap::new();
    let mut n = 1;
    for &i in &order {
        first.insert(i, n);
        n += 1 + df.stages[i].steps.len();
        names.insert(
            i,
            df.stages[i]
                .name
                .clone()
                .unwrap_or_else(|| format!("stage-{i}")),
        );
    }
    Ok(Plan {
        order,
        target,
        base,
        global,
        first,
        total: n - 1,
        names,
        declared,
    })
}

/// The `--from` values of a step (COPY --from, RUN --mount=from=).
fn step_froms(step: &Step) -> Vec<String> {
    match &step.kind {
        StepKind::Copy { flags, .. } => flags
            .iter()
            .filter(|(k, _)| k == "from")
            .filter_map(|(_, v)| v.clone())
            .collect(),
        StepKind::Run { flags, .. } => flags
            .iter()
            .filter(|(k, _)| k == "mount")
            .filter_map(|(_, v)| v.as_ref())
            .filter_map(|v| {
                v.split(',')
                    .find_map(|kv| kv.strip_prefix("from=").map(str::to_string))
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// RFC 3339 time of a step: `SOURCE_DATE_EPOCH` when set.
fn timestamp(epoch: Option<i64>) -> String {
    match epoch.and_then(|e| chrono::DateTime::from_timestamp(e, 0)) {
        Some(t) => t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        None => crate::image::now(),
    }
}

/// What one stage carries from step to step besides its state.
pub(crate) struct StageCtx<'a> {
    pub lex: Lexer,
    pub args: Args,
    pub key: String,
    /// CMD was set in this stage (ENTRYPOINT then keeps it).
    pub cmd_set: bool,
    pub opts: &'a BuildOptions,
    pub lease: &'a str,
    pub scratch: &'a Path,
    pub context: &'a tree::Tree,
    pub results: &'a Results,
    pub plan: &'a Plan,
    pub df: &'a Dockerfile,
    pub stage: usize,
    pub n: usize,
    pub events: &'a (dyn Fn(Event) + Sync),
}

impl StageCtx<'_> {
    pub fn env_lookup<'b>(&'b self, st: &'b State) -> impl Fn(&str) -> Option<String> + 'b {
        let env = st
            .doc
            .config
            .as_ref()
            .and_then(|c| c.env.as_deref())
            .unwrap_or(&[]);
        lookup_in(env, &self.args)
    }

    pub fn word(&self, st: &State, line: usize, text: &str) -> Result<String, BuildError> {
        self.lex
            .word(text, &self.env_lookup(st))
            .map_err(|e| step_err(line, format!("{}: {text}", e.0)))
    }

    pub fn words(&self, st: &State, line: usize, text: &str) -> Result<Vec<String>, BuildError> {
        self.lex
            .words(text, &self.env_lookup(st))
            .map_err(|e| step_err(line, format!("{}: {text}", e.0)))
    }
}

impl Builder {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn run_stage(
        &self,
        df: &Dockerfile,
        plan: &Plan,
        i: usize,
        context: &tree::Tree,
        opts: &BuildOptions,
        lease: &str,
        scratch: &Path,
        events: &(dyn Fn(Event) + Sync),
        results: &Results,
    ) -> Result<(State, String), BuildError> {
        let stage: &Stage = &df.stages[i];
        let first = plan.first.get(&i).copied().unwrap_or(1);
        let stage_name = plan.names.get(&i).cloned().unwrap_or_default();
        let stage_steps = stage.steps.len() + 1;
        let from_text = format!("FROM {}", stage.base);
        events(Event::Step {
            n: first,
            total: plan.total,
            stage: stage_name.clone(),
            stage_step: 1,
            stage_steps,
            text: from_text,
        });
        let t0 = Instant::now();
        let (mut st, key) = match plan.base.get(&i) {
            Some(Base::Stage(j)) => Builder::wait_stage(results, *j)?,
            Some(Base::Image(name)) => self.base_image(name, opts, stage.line, lease)?,
            _ => (
                State {
                    doc: ConfigDoc {
                        architecture: Some(host_arch().into()),
                        os: Some("linux".into()),
                        config: Some(ImageConfig {
                            env: Some(vec![
                                "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
                                    .into(),
                            ]),
                            ..Default::default()
                        }),
                        ..Default::default()
                    },
                    layers: Vec::new(),
                },
                key_of(&["scratch", host_arch()]),
            ),
        };
        events(Event::Done {
            n: first,
            elapsed: t0.elapsed(),
        });
        let mut ctx = StageCtx {
            lex: Lexer { escape: df.escape },
            args: Args::new(),
            key,
            cmd_set: false,
            opts,
            lease,
            scratch,
            context,
            results,
            plan,
            df,
            stage: i,
            n: first,
            events,
        };
        // The base image's ONBUILD triggers run first, and are not inherited.
        let triggers = st
            .doc
            .config
            .as_mut()
            .and_then(|c| c.on_build.take())
            .unwrap_or_default();
        if !triggers.is_empty() {
            events(Event::Note(format!(
                "executing {} build trigger(s) of the base image",
                triggers.len()
            )));
            let text = format!("FROM scratch\n{}\n", triggers.join("\n"));
            let parsed = super::parse(&text).map_err(|e| {
                step_err(
                    stage.line,
                    format!("a build trigger of the base image: {e}"),
                )
            })?;
            for mut t in parsed.stages.into_iter().flat_map(|s| s.steps) {
                t.line = stage.line;
                st = self.step(&mut ctx, st, &t)?.0;
            }
        }
        for (k, step) in stage.steps.iter().enumerate() {
            let n = first + 1 + k;
            ctx.n = n;
            events(Event::Step {
                n,
                total: plan.total,
                stage: stage_name.clone(),
                stage_step: k + 2,
                stage_steps,
                text: step.text.clone(),
            });
            let t0 = Instant::now();
            let (next, cached) = self.step(&mut ctx, st, step)?;
            st = next;
            if cached {
                events(Event::Cached { n });
            }
            events(Event::Done {
                n,
                elapsed: t0.elapsed(),
            });
        }
        Ok((st, ctx.key))
    }

    /// The state and key a FROM of an image starts with.
    fn base_image(
        &self,
        name: &str,
        opts: &BuildOptions,
        line: usize,
        lease: &str,
    ) -> Result<(State, String), BuildError> {
        let found = self.images.resolve(name);
        let image = match (found, &self.puller) {
            (Ok(img), Some(pull)) if opts.pull => {
                pull(name).map_err(|e| step_err(line, format!("pulling {name}: {e}")))?;
                self.images.resolve(name).unwrap_or(img)
            }
            (Ok(img), _) => img,
            (Err(_), Some(pull)) => {
                pull(name).map_err(|e| step_err(line, format!("pulling {name}: {e}")))?;
                self.images.resolve(name)?
            }
            (Err(e), None) => {
                return Err(step_err(line, format!("base image {name}: {e}")));
            }
        };
        let (doc, layers) = self.images.config_and_layers(&image);
        // Kept while the build runs, even if the image is removed meanwhile.
        self.images.lease_layers(lease, &layers)?;
        Ok((State { doc, layers }, key_of(&["image", &image.id])))
    }

    /// Runs one step; returns the new state and whether it came from the cache.
    pub(crate) fn step(
        &self,
        ctx: &mut StageCtx<'_>,
        st: State,
        step: &Step,
    ) -> Result<(State, bool), BuildError> {
        let line = step.line;
        let epoch = ctx.opts.source_date_epoch;
        let mut config = st.doc.config.clone().unwrap_or_default();
        let mut author = None;
        let desc: String;
        match &step.kind {
            StepKind::Arg(list) => {
                for (name, default) in list {
                    let value = match user_arg(ctx.opts, name) {
                        Some(v) => Some(v),
                        None => match default {
                            Some(d) => Some(ctx.word(&st, line, d)?),
                            None => ctx.plan.global.get(name).cloned().flatten(),
                        },
                    };
                    ctx.args.insert(name.clone(), value);
                }
                // ARG changes nothing by itself: the steps that read the value key on it.
                return Ok((st, false));
            }
            StepKind::Env(pairs) => {
                let mut out = Vec::new();
                for (k, v) in pairs {
                    out.push((ctx.word(&st, line, k)?, ctx.word(&st, line, v)?));
                }
                let env = config.env.get_or_insert_with(Vec::new);
                for (k, v) in &out {
                    if let Some(e) = env.iter_mut().find(|e| e.split('=').next() == Some(k)) {
                        *e = format!("{k}={v}");
                    } else {
                        env.push(format!("{k}={v}"));
                    }
                }
                desc = format!(
                    "ENV {}",
                    out.iter()
                        .map(|(k, v)| format!("{k}={v}"))
                        .collect::<Vec<_>>()
                        .join(" ")
                );
            }
            StepKind::Label(pairs) => {
                let mut out = Vec::new();
                for (k, v) in pairs {
                    out.push((ctx.word(&st, line, k)?, ctx.word(&st, line, v)?));
                }
                let labels = config.labels.get_or_insert_with(HashMap::new);
                for (k, v) in &out {
                    labels.insert(k.clone(), v.clone());
                }
                desc = format!(
                    "LABEL {}",
                    out.iter()
                        .map(|(k, v)| format!("{k}={v}"))
                        .collect::<Vec<_>>()
                        .join(" ")
                );
            }
            StepKind::Cmd(c) => {
                config.cmd = Some(self.argv(&config, c));
                ctx.cmd_set = true;
                desc = format!("CMD {}", json(config.cmd.as_deref().unwrap_or(&[])));
            }
            StepKind::Entrypoint(c) => {
                config.entrypoint = Some(self.argv(&config, c));
                if !ctx.cmd_set {
                    config.cmd = None;
                }
                desc = format!(
                    "ENTRYPOINT {}",
                    json(config.entrypoint.as_deref().unwrap_or(&[]))
                );
            }
            StepKind::Expose(list) => {
                let ports = config.exposed_ports.get_or_insert_with(Vec::new);
                let mut shown = Vec::new();
                for raw in list {
                    for p in ctx.words(&st, line, raw)? {
                        let expanded = expand_port(&p).map_err(|m| step_err(line, m))?;
                        shown.extend(expanded.iter().cloned());
                        ports.extend(expanded);
                    }
                }
                ports.sort();
                ports.dedup();
                desc = format!("EXPOSE map[{}]", shown.join(" "));
            }
            StepKind::Volume(list) => {
                let vols = config.volumes.get_or_insert_with(Vec::new);
                let mut shown = Vec::new();
                for raw in list {
                    let v = ctx.word(&st, line, raw)?;
                    if v.trim().is_empty() {
                        return Err(step_err(
                            line,
                            "VOLUME specified can not be an empty string",
                        ));
                    }
                    shown.push(v.clone());
                    vols.push(v);
                }
                vols.sort();
                vols.dedup();
                desc = format!("VOLUME {}", json(&shown));
            }
            StepKind::User(u) => {
                let u = ctx.word(&st, line, u)?;
                if u.is_empty() {
                    return Err(step_err(line, "USER requires a user name or id"));
                }
                config.user = Some(u.clone());
                desc = format!("USER {u}");
            }
            StepKind::StopSignal(s) => {
                let s = ctx.word(&st, line, s)?;
                check_signal(&s).map_err(|m| step_err(line, m))?;
                config.stop_signal = Some(s.clone());
                desc = format!("STOPSIGNAL {s}");
            }
            StepKind::Shell(list) => {
                if list.is_empty() {
                    return Err(step_err(line, "SHELL requires at least one argument"));
                }
                config.shell = Some(list.clone());
                desc = format!("SHELL {}", json(list));
            }
            StepKind::Healthcheck { flags, cmd } => {
                config.healthcheck =
                    Some(healthcheck(&config, flags, cmd.as_ref()).map_err(|m| step_err(line, m))?);
                desc = format!(
                    "HEALTHCHECK {}",
                    step.text
                        .trim_start_matches(|c: char| c.is_alphabetic())
                        .trim()
                );
            }
            StepKind::OnBuild(t) => {
                config.on_build.get_or_insert_with(Vec::new).push(t.clone());
                desc = format!("ONBUILD {t}");
            }
            StepKind::Maintainer(m) => {
                author = Some(m.clone());
                desc = format!("MAINTAINER {m}");
            }
            StepKind::Workdir(w) => return self.workdir(ctx, st, line, w),
            StepKind::Copy {
                add,
                flags,
                srcs,
                dest,
            } => return self.copy(ctx, st, line, *add, flags, srcs, dest, &step.text),
            StepKind::Run { flags, cmd, script } => {
                return self.run(ctx, st, line, flags, cmd, *script);
            }
        }
        let key = key_of(&[&ctx.key, &desc, &epoch_str(epoch)]);
        if !ctx.opts.no_cache
            && let Some(hit) = self.cache_get(&key)
        {
            ctx.key = key;
            return Ok((hit, true));
        }
        let mut doc = st.doc.clone();
        let when = timestamp(epoch);
        doc.config = Some(config);
        if author.is_some() {
            doc.author = author;
        }
        doc.created = Some(when.clone());
        doc.history.push(History {
            created: Some(when),
            created_by: Some(desc),
            comment: Some("buildkit.dockerfile.v0".into()),
            empty_layer: Some(true),
            ..Default::default()
        });
        let next = State {
            doc,
            layers: st.layers,
        };
        self.cache_put(&key, &next);
        ctx.key = key;
        Ok((next, false))
    }

    /// CMD/ENTRYPOINT/RUN argv: the exec form as is, the shell form under the stage's shell.
    fn argv(&self, config: &ImageConfig, c: &CmdForm) -> Vec<String> {
        match c {
            CmdForm::Exec(v) => v.clone(),
            CmdForm::Shell(s) => {
                let mut v = shell_of(config);
                v.push(s.clone());
                v
            }
        }
    }

    /// A state with a new layer from `tar_writer` (run on a thread, streamed through a pipe)
    /// and a history entry.
    pub(crate) fn with_layer(
        &self,
        ctx: &StageCtx<'_>,
        st: &State,
        config: Option<ImageConfig>,
        created_by: String,
        write: impl FnOnce(std::io::PipeWriter) -> std::io::Result<()> + Send,
    ) -> Result<State, BuildError> {
        let (mut reader, writer) =
            std::io::pipe().map_err(|e| BuildError::io("making a pipe", e))?;
        let parent = match st.layers.last() {
            Some(l) => Some(Digest::parse(&l.chain_id).map_err(crate::image::ImageError::from)?),
            None => None,
        };
        let layer: Result<LayerRecord, BuildError> = std::thread::scope(|s| {
            let w = s.spawn(move || write(writer));
            let added = self
                .images
                .add_layer(&mut reader, parent.as_ref(), ctx.lease)
                .map_err(BuildError::from);
            drop(reader);
            let wrote = w
                .join()
                .unwrap_or_else(|_| Err(std::io::Error::other("layer writer panicked")));
            match (added, wrote) {
                (Ok(l), Ok(())) => Ok(l),
                (_, Err(e)) => Err(BuildError::io("writing the layer", e)),
                (Err(e), Ok(())) => Err(e),
            }
        });
        let layer = layer?;
        let mut doc = st.doc.clone();
        if let Some(c) = config {
            doc.config = Some(c);
        }
        let when = timestamp(ctx.opts.source_date_epoch);
        doc.created = Some(when.clone());
        doc.history.push(History {
            created: Some(when),
            created_by: Some(created_by),
            comment: Some("buildkit.dockerfile.v0".into()),
            ..Default::default()
        });
        let mut layers = st.layers.clone();
        layers.push(layer);
        Ok(State { doc, layers })
    }

    fn workdir(
        &self,
        ctx: &mut StageCtx<'_>,
        st: State,
        line: usize,
        w: &str,
    ) -> Result<(State, bool), BuildError> {
        let mut config = st.doc.config.clone().unwrap_or_default();
        let w = ctx.word(&st, line, w)?;
        if w.is_empty() {
            return Err(step_err(line, "WORKDIR requires exactly one argument"));
        }
        let joined = if w.starts_with('/') {
            w.clone()
        } else {
            format!(
                "{}/{w}",
                config.working_dir.clone().unwrap_or_else(|| "/".into())
            )
        };
        let clean = format!(
            "/{}",
            tree::components(&joined).unwrap_or_default().join("/")
        );
        config.working_dir = Some(clean.clone());
        let desc = format!("WORKDIR {clean}");
        let key = key_of(&[&ctx.key, &desc, &epoch_str(ctx.opts.source_date_epoch)]);
        if !ctx.opts.no_cache
            && let Some(hit) = self.cache_get(&key)
        {
            ctx.key = key;
            return Ok((hit, true));
        }
        let lowers = self.images.layer_dirs(&st.layers)?;
        let rel = clean.trim_start_matches('/').to_string();
        let next = if rel.is_empty() || tree::lookup(&lowers, &rel).is_some() {
            let mut doc = st.doc.clone();
            doc.config = Some(config);
            let when = timestamp(ctx.opts.source_date_epoch);
            doc.created = Some(when.clone());
            doc.history.push(History {
                created: Some(when),
                created_by: Some(desc),
                comment: Some("buildkit.dockerfile.v0".into()),
                empty_layer: Some(true),
                ..Default::default()
            });
            State {
                doc,
                layers: st.layers.clone(),
            }
        } else {
            // A missing working directory is made, owned by the stage's user, as BuildKit does.
            let (uid, gid) = match config.user.as_deref() {
                Some(u) if !u.is_empty() => {
                    copy::resolve_owner(&lowers, u).map_err(|m| step_err(line, m))?
                }
                _ => (0, 0),
            };
            let rel = tree::resolve_dest(&lowers, &rel);
            let now = chrono::Utc::now().timestamp();
            let mut items = Vec::new();
            let comps = tree::components(&rel).unwrap_or_default();
            for n in 1..=comps.len() {
                let p = comps[..n].join("/");
                if tree::lookup(&lowers, &p).is_some() {
                    continue;
                }
                let owner = if n == comps.len() { (uid, gid) } else { (0, 0) };
                items.push(super::layer::Item {
                    path: p,
                    kind: super::layer::ItemKind::Dir,
                    mode: 0o755,
                    uid: owner.0,
                    gid: owner.1,
                    mtime: now,
                });
            }
            let epoch = ctx.opts.source_date_epoch;
            self.with_layer(ctx, &st, Some(config), desc, move |w| {
                super::layer::write_items(&mut items, epoch, w).map(|_| ())
            })?
        };
        self.cache_put(&key, &next);
        ctx.key = key;
        Ok((next, false))
    }

    fn run(
        &self,
        ctx: &mut StageCtx<'_>,
        st: State,
        line: usize,
        flags: &[(String, Option<String>)],
        cmd: &CmdForm,
        script: bool,
    ) -> Result<(State, bool), BuildError> {
        let config = st.doc.config.clone().unwrap_or_default();
        let argv = if script {
            let CmdForm::Shell(body) = cmd else {
                return Err(step_err(line, "a heredoc RUN needs the shell form"));
            };
            match body.strip_prefix("#!") {
                Some(rest) => {
                    let (first, others) = rest.split_once('\n').unwrap_or((rest, ""));
                    let mut v: Vec<String> = first.split_whitespace().map(str::to_string).collect();
                    v.push("-c".into());
                    v.push(others.to_string());
                    v
                }
                None => {
                    let mut v = shell_of(&config);
                    v.push(body.clone());
                    v
                }
            }
        } else {
            self.argv(&config, cmd)
        };
        let mut network = ctx.opts.network.clone().unwrap_or_else(|| "default".into());
        let mut mount_specs = Vec::new();
        for (k, v) in flags {
            match (k.as_str(), v) {
                ("network", Some(n)) => {
                    if !matches!(n.as_str(), "default" | "none" | "host") {
                        return Err(step_err(
                            line,
                            format!("RUN --network={n} is not supported (default, none or host)"),
                        ));
                    }
                    network = n.clone();
                }
                ("mount", Some(m)) => mount_specs.push(ctx.word(&st, line, m)?),
                ("security", Some(s)) if s == "sandbox" => {}
                _ => {
                    return Err(step_err(
                        line,
                        format!("RUN: unknown or unsupported flag --{k}"),
                    ));
                }
            }
        }
        // The environment a RUN sees: the config's, plus the build args in scope.
        let mut env: Vec<String> = config.env.clone().unwrap_or_default();
        let mut arg_env = Vec::new();
        for (k, v) in &ctx.args {
            if let Some(v) = v
                && !env.iter().any(|e| e.split('=').next() == Some(k.as_str()))
            {
                arg_env.push(format!("{k}={v}"));
            }
        }
        env.extend(arg_env.iter().cloned());
        let mounts = self.run_mounts(ctx, &st, line, &mount_specs)?;
        let desc = format!("RUN {}", json(&argv));
        let key = key_of(&[
            &ctx.key,
            &desc,
            &json(&arg_env),
            &mounts.key,
            &network,
            &epoch_str(ctx.opts.source_date_epoch),
        ]);
        if !ctx.opts.no_cache
            && let Some(hit) = self.cache_get(&key)
        {
            ctx.key = key;
            return Ok((hit, true));
        }
        let Some(runner) = self.runner.clone() else {
            return Err(step_err(
                line,
                "RUN needs the container runtime, which this builder was not given",
            ));
        };
        let created_by = if arg_env.is_empty() {
            format!("RUN {} # buildkit", argv.join(" "))
        } else {
            format!(
                "RUN |{} {} {} # buildkit",
                arg_env.len(),
                arg_env.join(" "),
                argv.join(" ")
            )
        };
        let next = self.run_container(
            ctx,
            &st,
            line,
            &runner,
            RunSpec {
                image: String::new(),
                argv: argv.clone(),
                env,
                user: config.user.clone().unwrap_or_default(),
                workdir: config.working_dir.clone().unwrap_or_else(|| "/".into()),
                network,
                mounts: mounts.mounts,
            },
            created_by,
        )?;
        drop(mounts.views);
        self.cache_put(&key, &next);
        ctx.key = key;
        Ok((next, false))
    }

    fn run_container(
        &self,
        ctx: &StageCtx<'_>,
        st: &State,
        line: usize,
        runner: &Arc<super::Runner>,
        mut spec: RunSpec,
        created_by: String,
    ) -> Result<State, BuildError> {
        let image = self.hold_step_image(st)?;
        spec.image = image.clone();
        let n = ctx.n;
        let events = ctx.events;
        let mut pending = Vec::new();
        let mut on_output = |b: &[u8]| {
            pending.extend_from_slice(b);
            while let Some(i) = pending.iter().position(|&c| c == b'\n') {
                let chunk: Vec<u8> = pending.drain(..=i).collect();
                events(Event::Output {
                    n,
                    text: String::from_utf8_lossy(&chunk).to_string(),
                });
            }
        };
        let done = runner(&spec, &mut on_output);
        if !pending.is_empty() {
            events(Event::Output {
                n,
                text: String::from_utf8_lossy(&pending).to_string(),
            });
        }
        let done = match done {
            Ok(d) => d,
            Err(e) => {
                self.release_step_image(&image);
                return Err(step_err(line, format!("RUN: {e}")));
            }
        };
        if done.exit_code != 0 {
            (done.cleanup)();
            self.release_step_image(&image);
            return Err(BuildError::RunFailed {
                line,
                code: done.exit_code,
                cmd: spec.argv.join(" "),
            });
        }
        let epoch = ctx.opts.source_date_epoch;
        let upper = done.upper.clone();
        let next = self.with_layer(ctx, st, None, created_by, move |w| {
            super::layer::write_upper(&upper, epoch, w).map(|_| ())
        });
        (done.cleanup)();
        self.release_step_image(&image);
        next
    }

    /// An image record of the stage's state for a RUN container. Stages running at once
    /// may need the same one, and it may be an image the user has: it is counted, and only
    /// a record a build made is dropped, once no step uses it.
    fn hold_step_image(&self, st: &State) -> Result<String, BuildError> {
        let mut held = self.step_images.lock().unwrap_or_else(|e| e.into_inner());
        let id = ImageStore::built_id(&st.doc, &st.layers)?;
        let ours = match held.get_mut(&id) {
            Some(n) => {
                *n += 1;
                true
            }
            None => !self.images.has_record(&id),
        };
        self.images.commit_built(&st.doc, &st.layers, &[])?;
        if ours {
            held.entry(id.clone()).or_insert(1);
        }
        Ok(id)
    }

    fn release_step_image(&self, id: &str) {
        let mut held = self.step_images.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = held.get_mut(id) {
            *n -= 1;
            if *n == 0 {
                held.remove(id);
                let _ = self.images.drop_step_image(id);
            }
        }
    }

    fn run_mounts(
        &self,
        ctx: &StageCtx<'_>,
        st: &State,
        line: usize,
        specs: &[String],
    ) -> Result<Mounts, BuildError> {
        let mut out = Mounts::default();
        let mut key = String::new();
        for spec in specs {
            let mut kv: HashMap<String, String> = HashMap::new();
            for part in spec.split(',') {
                let (k, v) = part.split_once('=').unwrap_or((part, "true"));
                kv.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
            }
            let typ = kv.get("type").cloned().unwrap_or_else(|| "bind".into());
            let target = kv
                .get("target")
                .or_else(|| kv.get("dst"))
                .or_else(|| kv.get("destination"))
                .cloned();
            let readonly = kv
                .get("readonly")
                .or_else(|| kv.get("ro"))
                .is_some_and(|v| v != "false");
            match typ.as_str() {
                "cache" => {
                    let target =
                        target.ok_or_else(|| step_err(line, "a cache mount needs a target"))?;
                    let id = kv.get("id").cloned().unwrap_or_else(|| target.clone());
                    let dir = self
                        .dir
                        .join("mounts")
                        .join(format!("cache-{}", key_of(&[&id])));
                    std::fs::create_dir_all(&dir)
                        .map_err(|e| BuildError::io("making a cache mount", e))?;
                    key.push_str(&format!("cache:{id}:{target};"));
                    out.mounts.push(RunMount {
                        kind: "bind".into(),
                        source: Some(dir),
                        target,
                        readonly,
                    });
                }
                "tmpfs" => {
                    let target =
                        target.ok_or_else(|| step_err(line, "a tmpfs mount needs a target"))?;
                    key.push_str(&format!("tmpfs:{target};"));
                    out.mounts.push(RunMount {
                        kind: "tmpfs".into(),
                        source: None,
                        target,
                        readonly: false,
                    });
                }
                "secret" => {
                    let id = kv.get("id").cloned().or_else(|| {
                        target
                            .as_ref()
                            .and_then(|t| t.rsplit('/').next().map(str::to_string))
                    });
                    let Some(id) = id else {
                        return Err(step_err(line, "a secret mount needs an id"));
                    };
                    let target = target.unwrap_or_else(|| format!("/run/secrets/{id}"));
                    let Some(content) = ctx.opts.secrets.get(&id) else {
                        if kv.get("required").is_some_and(|v| v != "false") {
                            return Err(step_err(line, format!("secret {id} not found")));
                        }
                        continue;
                    };
                    let file = ctx
                        .scratch
                        .join(format!("secret-{}", crate::content::random_name()));
                    std::fs::write(&file, content)
                        .map_err(|e| BuildError::io("writing a secret", e))?;
                    // The secret's name is in the key, never its content.
                    key.push_str(&format!("secret:{id}:{target};"));
                    out.mounts.push(RunMount {
                        kind: "bind".into(),
                        source: Some(file),
                        target,
                        readonly: true,
                    });
                }
                "bind" => {
                    let target =
                        target.ok_or_else(|| step_err(line, "a bind mount needs a target"))?;
                    let source = kv
                        .get("source")
                        .or_else(|| kv.get("src"))
                        .cloned()
                        .unwrap_or_default();
                    let (path, digest) = match kv.get("from") {
                        Some(from) => {
                            let view = self.view_of(ctx, line, from)?;
                            let (p, _) =
                                view.resolve(&source, true).map_err(|m| step_err(line, m))?;
                            let d = copy::tree_digest(&self.hashes, &p, None)
                                .map_err(|e| BuildError::io("hashing a bind mount", e))?;
                            out.views.push(view);
                            (p, d)
                        }
                        None => {
                            let (p, rel) = ctx
                                .context
                                .resolve(&source, true)
                                .map_err(|m| step_err(line, m))?;
                            let d = copy::tree_digest(&self.hashes, &p, Some((ctx.context, &rel)))
                                .map_err(|e| BuildError::io("hashing a bind mount", e))?;
                            (p, d)
                        }
                    };
                    let _ = st;
                    key.push_str(&format!("bind:{target}:{digest};"));
                    out.mounts.push(RunMount {
                        kind: "bind".into(),
                        source: Some(path),
                        target,
                        readonly: kv.get("rw").is_none_or(|v| v == "false")
                            && kv.get("readwrite").is_none_or(|v| v == "false"),
                    });
                }
                other => {
                    return Err(step_err(
                        line,
                        format!("RUN --mount type={other} is not supported"),
                    ));
                }
            }
        }
        out.key = key;
        Ok(out)
    }

    /// The file system of a stage (by name or index) or an image, for `--from`.
    pub(crate) fn view_of(
        &self,
        ctx: &StageCtx<'_>,
        line: usize,
        from: &str,
    ) -> Result<tree::Tree, BuildError> {
        let df = ctx.df;
        let lower = from.to_ascii_lowercase();
        let stage = df.stages[..ctx.stage]
            .iter()
            .position(|s| s.name.as_deref() == Some(lower.as_str()))
            .or_else(|| from.parse::<usize>().ok().filter(|&i| i < ctx.stage));
        let layers = match stage {
            Some(j) => Builder::wait_stage(ctx.results, j)?.0.layers,
            None => {
                let image = match self.images.resolve(from) {
                    Ok(i) => i,
                    Err(_) if self.puller.is_some() => {
                        if let Some(p) = &self.puller {
                            p(from).map_err(|e| step_err(line, format!("pulling {from}: {e}")))?;
                        }
                        self.images
                            .resolve(from)
                            .map_err(|e| step_err(line, e.to_string()))?
                    }
                    Err(e) => return Err(step_err(line, format!("--from={from}: {e}"))),
                };
                self.images.config_and_layers(&image).1
            }
        };
        self.images.lease_layers(ctx.lease, &layers)?;
        let lowers = self.images.layer_dirs(&layers)?;
        tree::Tree::layers(&lowers, ctx.scratch)
    }
}

#[derive(Default)]
struct Mounts {
    mounts: Vec<RunMount>,
    key: String,
    views: Vec<tree::Tree>,
}

fn epoch_str(e: Option<i64>) -> String {
    e.map(|e| e.to_string()).unwrap_or_default()
}

pub(crate) fn shell_of(config: &ImageConfig) -> Vec<String> {
    config
        .shell
        .clone()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| vec!["/bin/sh".into(), "-c".into()])
}

fn json(v: &[String]) -> String {
    serde_json::to_string(v).unwrap_or_default()
}

/// `80`, `80/udp`, `8000-8002/tcp` into Docker's `port/proto` keys.
fn expand_port(p: &str) -> Result<Vec<String>, String> {
    let (ports, proto) = match p.split_once('/') {
        Some((ports, proto)) => (ports, proto.to_ascii_lowercase()),
        None => (p, "tcp".to_string()),
    };
    if !matches!(proto.as_str(), "tcp" | "udp" | "sctp") {
        return Err(format!("invalid proto: {proto}"));
    }
    let parse = |s: &str| {
        s.parse::<u16>()
            .map_err(|_| format!("invalid containerPort: {s}"))
    };
    let (lo, hi) = match ports.split_once('-') {
        Some((a, b)) => (parse(a)?, parse(b)?),
        None => (parse(ports)?, parse(ports)?),
    };
    if hi < lo {
        return Err(format!("invalid port range: {ports}"));
    }
    Ok((lo..=hi).map(|p| format!("{p}/{proto}")).collect())
}

fn check_signal(s: &str) -> Result<(), String> {
    if s.parse::<u32>().is_ok_and(|n| n > 0 && n < 65) {
        return Ok(());
    }
    let name = s.to_ascii_uppercase();
    let name = name.strip_prefix("SIG").unwrap_or(&name);
    const KNOWN: &[&str] = &[
        "HUP", "INT", "QUIT", "ILL", "TRAP", "ABRT", "BUS", "FPE", "KILL", "USR1", "SEGV", "USR2",
        "PIPE", "ALRM", "TERM", "STKFLT", "CHLD", "CONT", "STOP", "TSTP", "TTIN", "TTOU", "URG",
        "XCPU", "XFSZ", "VTALRM", "PROF", "WINCH", "IO", "PWR", "SYS",
    ];
    if KNOWN.contains(&name) || name.starts_with("RTMIN") || name.starts_with("RTMAX") {
        Ok(())
    } else {
        Err(format!("invalid signal: {s}"))
    }
}

/// A Go duration (`30s`, `1m30s`, `500ms`, `1h`) in nanoseconds.
pub(crate) fn go_duration(s: &str) -> Option<i64> {
    if s == "0" {
        return Some(0);
    }
    let mut total: f64 = 0.0;
    let mut rest = s;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let num_end = rest.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
        let n: f64 = rest[..num_end].parse().ok()?;
        rest = &rest[num_end..];
        let unit_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let mult = match &rest[..unit_end] {
            "ns" => 1.0,
            "us" | "µs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return None,
        };
        total += n * mult;
        rest = &rest[unit_end..];
    }
    Some(total as i64)
}

fn healthcheck(
    config: &ImageConfig,
    flags: &[(String, Option<String>)],
    cmd: Option<&CmdForm>,
) -> Result<HealthConfig, String> {
    let Some(cmd) = cmd else {
        return Ok(HealthConfig {
            test: Some(vec!["NONE".into()]),
            ..Default::default()
        });
    };
    let test = match cmd {
        CmdForm::Exec(v) => {
            let mut t = vec!["CMD".to_string()];
            t.extend(v.iter().cloned());
            t
        }
        CmdForm::Shell(s) => vec!["CMD-SHELL".into(), s.clone()],
    };
    let _ = config;
    let mut hc = HealthConfig {
        test: Some(test),
        ..Default::default()
    };
    for (k, v) in flags {
        let v = v.clone().unwrap_or_default();
        let dur = |what: &str| -> Result<i64, String> {
            let d = go_duration(&v)
                .ok_or_else(|| format!("HEALTHCHECK --{what}: invalid duration {v:?}"))?;
            if d != 0 && d < 1_000_000 {
                return Err(format!("HEALTHCHECK --{what} cannot be less than 1ms"));
            }
            Ok(d)
        };
        match k.as_str() {
            "interval" => hc.interval = Some(dur("interval")?),
            "timeout" => hc.timeout = Some(dur("timeout")?),
            "start-period" => hc.start_period = Some(dur("start-period")?),
            "start-interval" => hc.start_interval = Some(dur("start-interval")?),
            "retries" => {
                let r: i64 = v
                    .parse()
                    .map_err(|_| format!("HEALTHCHECK --retries: invalid number {v:?}"))?;
                if r < 0 {
                    return Err("HEALTHCHECK --retries cannot be negative".into());
                }
                hc.retries = Some(r);
            }
            other => return Err(format!("HEALTHCHECK: unknown flag --{other}")),
        }
    }
    Ok(hc)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_ports() {
        assert_eq!(go_duration("30s"), Some(30_000_000_000));
        assert_eq!(go_duration("1m30s"), Some(90_000_000_000));
        assert_eq!(go_duration("500ms"), Some(500_000_000));
        assert_eq!(go_duration("x"), None);
        assert_eq!(expand_port("80").unwrap(), vec!["80/tcp"]);
        assert_eq!(expand_port("53/UDP").unwrap(), vec!["53/udp"]);
        assert_eq!(expand_port("1-2").unwrap(), vec!["1/tcp", "2/tcp"]);
        assert!(expand_port("80/xyz").is_err());
        assert!(check_signal("SIGTERM").is_ok());
        assert!(check_signal("9").is_ok());
        assert!(check_signal("SIGFOO").is_err());
    }
}
