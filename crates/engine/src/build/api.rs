//! The legacy builder protocol of `POST /build`, as engine functions the daemon's route
//! calls: query → [`BuildOptions`], progress [`Event`]s → the JSON lines docker's CLI prints
//! (`{"stream":...}`, `{"aux":{"ID":...}}`, `{"errorDetail":...}`), or, for wharf's CLI
//! (`wharfprogress=1`), structured `{"wharf":{...}}` lines it draws in BuildKit's plain style.
//!
//! wharf's own additions, which docker never sends: `wharfcontextdir` (an absolute path of
//! a context directory on this machine, read in place instead of a tar body), `wharfprogress`,
//! and the `X-Wharf-Build-Secrets` header (base64 of a JSON map id → base64 content).

use std::collections::HashMap;

use base64::Engine as _;
use serde_json::{Value, json};

use super::{BuildError, BuildOptions, Built, DockerfileSource, Event};

/// What the route needs besides the options.
#[derive(Debug, Clone, Default)]
pub struct Request {
    pub opts: BuildOptions,
    /// `q`: only the image id is printed.
    pub quiet: bool,
    /// Structured progress for wharf's CLI.
    pub wharf_progress: bool,
    /// A context directory read in place (no body).
    pub context_dir: Option<String>,
    /// `remote`: not supported (no fetching of git or tarball contexts).
    pub remote: Option<String>,
}

fn bad(msg: impl Into<String>) -> BuildError {
    BuildError::Invalid(msg.into())
}

fn truthy(v: &str) -> bool {
    matches!(v, "1" | "true" | "True" | "TRUE")
}

/// Reads the query of `POST /build` (pairs already percent-decoded, repeats kept).
pub fn request_from_query(
    pairs: &[(String, String)],
    secrets_header: Option<&str>,
) -> Result<Request, BuildError> {
    let mut r = Request::default();
    let mut dockerfile = None;
    for (k, v) in pairs {
        match k.as_str() {
            "t" if !v.is_empty() => r.opts.tags.push(v.clone()),
            "dockerfile" => dockerfile = Some(v.clone()).filter(|d| !d.is_empty()),
            "buildargs" if !v.is_empty() => {
                let m: HashMap<String, Option<String>> = serde_json::from_str(v)
                    .map_err(|e| bad(format!("invalid buildargs {v:?}: {e}")))?;
                r.opts.build_args.extend(m);
            }
            "labels" if !v.is_empty() => {
                let m: HashMap<String, String> = serde_json::from_str(v)
                    .map_err(|e| bad(format!("invalid labels {v:?}: {e}")))?;
                r.opts.labels.extend(m);
            }
            "target" => r.opts.target = Some(v.clone()).filter(|t| !t.is_empty()),
            "nocache" => r.opts.no_cache = truthy(v),
            "pull" => r.opts.pull = truthy(v) || v.eq_ignore_ascii_case("always"),
            "q" => r.quiet = truthy(v),
            "networkmode" if !v.is_empty() => match v.as_str() {
                "default" | "bridge" => r.opts.network = Some("default".into()),
                "host" | "none" => r.opts.network = Some(v.clone()),
                other => {
                    return Err(bad(format!(
                        "network mode {other:?} is not supported for builds (default, host or none)"
                    )));
                }
            },
            "platform" => r.opts.platform = Some(v.clone()).filter(|p| !p.is_empty()),
            "remote" => r.remote = Some(v.clone()).filter(|p| !p.is_empty()),
            "wharfcontextdir" => r.context_dir = Some(v.clone()).filter(|p| !p.is_empty()),
            "wharfprogress" => r.wharf_progress = truthy(v),
            // Accepted for compatibility; they change nothing here.
            _ => {}
        }
    }
    if let Some(d) = dockerfile {
        r.opts.dockerfile = DockerfileSource::Path(d);
    }
    if let Some(remote) = &r.remote {
        // docker's CLI sends the Dockerfile of `-f -` inside the context tar; anything else
        // is a context to fetch, which wharf does not do.
        return Err(bad(format!(
            "remote build contexts are not supported: {remote}"
        )));
    }
    // BuildKit takes SOURCE_DATE_EPOCH as a build arg; so does wharf.
    if let Some(Some(e)) = r.opts.build_args.get("SOURCE_DATE_EPOCH") {
        let e: i64 = e
            .parse()
            .map_err(|_| bad(format!("invalid SOURCE_DATE_EPOCH {e:?}: seconds expected")))?;
        r.opts.source_date_epoch = Some(e);
    }
    if let Some(h) = secrets_header {
        let raw = base64::engine::general_purpose::STANDARD
            .decode(h.trim())
            .map_err(|e| bad(format!("invalid secrets header: {e}")))?;
        let m: HashMap<String, String> = serde_json::from_slice(&raw)
            .map_err(|e| bad(format!("invalid secrets header: {e}")))?;
        for (id, b64) in m {
            let content = base64::engine::general_purpose::STANDARD
                .decode(b64)
                .map_err(|e| bad(format!("invalid secret {id}: {e}")))?;
            r.opts.secrets.insert(id, content);
        }
    }
    Ok(r)
}

/// The JSON line for one progress event (None: nothing to send).
pub fn event_json(e: &Event, req: &Request) -> Option<Value> {
    if req.wharf_progress {
        return Some(match e {
            Event::Step {
                n,
                total,
                stage,
                stage_step,
                stage_steps,
                text,
            } => json!({"wharf": {"step": n, "total": total, "stage": stage,
                "stage_step": stage_step, "stage_steps": stage_steps, "text": text}}),
            Event::Cached { n } => json!({"wharf": {"cached": n}}),
            Event::Output { n, text } => json!({"wharf": {"output": n, "text": text}}),
            Event::Done { n, elapsed } => {
                json!({"wharf": {"done": n, "ms": elapsed.as_millis() as u64}})
            }
            Event::Note(t) => json!({"wharf": {"note": t}}),
        });
    }
    if req.quiet {
        return None;
    }
    match e {
        Event::Step { n, total, text, .. } => {
            Some(json!({"stream": format!("Step {n}/{total} : {text}\n")}))
        }
        Event::Cached { .. } => Some(json!({"stream": " ---> Using cache\n"})),
        Event::Output { text, .. } => Some(json!({"stream": text})),
        Event::Note(t) => Some(json!({"stream": format!("{t}\n")})),
        Event::Done { .. } => None,
    }
}

/// The closing lines of a successful build.
pub fn success_json(b: &Built, req: &Request) -> Vec<Value> {
    let mut out = vec![json!({"aux": {"ID": b.id}})];
    if req.quiet {
        out.push(json!({"stream": format!("{}\n", b.id)}));
        return out;
    }
    let short = b.id.trim_start_matches("sha256:");
    let short = &short[..short.len().min(12)];
    out.push(json!({"stream": format!("Successfully built {short}\n")}));
    for t in &b.tags {
        out.push(json!({"stream": format!("Successfully tagged {t}\n")}));
    }
    out
}

/// The line that reports a failed build.
pub fn error_json(e: &BuildError) -> Value {
    let msg = e.to_string();
    json!({"errorDetail": {"message": msg}, "error": msg})
}

/// Runs one `POST /build`: the context from `req.context_dir` or the tar in `body` (plain
/// or gzip; empty for none), progress and the result sent as JSON lines through `send`.
/// Blocking: the route calls it from a blocking thread, `body` fed from the request.
pub fn run_request(
    builder: &super::Builder,
    req: &Request,
    body: &mut dyn std::io::Read,
    send: &(dyn Fn(Value) + Sync),
) -> Result<Built, BuildError> {
    let result = (|| {
        let mut extracted = None;
        let ctx: Option<std::path::PathBuf> = match &req.context_dir {
            Some(d) => {
                let p = std::path::PathBuf::from(d);
                if !p.is_absolute() || !p.is_dir() {
                    return Err(bad(format!(
                        "context directory {d} is not an absolute path of a directory"
                    )));
                }
                Some(p)
            }
            None => {
                let mut buffered = std::io::BufReader::new(body);
                let head = std::io::BufRead::fill_buf(&mut buffered)
                    .map_err(|e| BuildError::Context(format!("reading the request body: {e}")))?
                    .to_vec();
                if head.is_empty() {
                    None
                } else {
                    let dir = if head.starts_with(&[0x1f, 0x8b]) {
                        let mut gz = flate2::bufread::MultiGzDecoder::new(buffered);
                        builder.extract_context(&mut gz)?
                    } else {
                        builder.extract_context(&mut buffered)?
                    };
                    let p = dir.path().to_path_buf();
                    extracted = Some(dir);
                    Some(p)
                }
            }
        };
        let r = builder.build(ctx.as_deref(), &req.opts, &|e| {
            if let Some(v) = event_json(&e, req) {
                send(v);
            }
        });
        drop(extracted);
        r
    })();
    match &result {
        Ok(b) => {
            for v in success_json(b, req) {
                send(v);
            }
        }
        Err(e) => send(error_json(e)),
    }
    result
}

/// A blocking reader over body chunks sent from async code (the route forwards the request
/// body's frames into the channel).
pub struct ChannelReader {
    rx: tokio::sync::mpsc::Receiver<bytes::Bytes>,
    cur: bytes::Bytes,
}

impl ChannelReader {
    pub fn new(rx: tokio::sync::mpsc::Receiver<bytes::Bytes>) -> ChannelReader {
        ChannelReader {
            rx,
            cur: bytes::Bytes::new(),
        }
    }
}

impl std::io::Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.cur.is_empty() {
            match self.rx.blocking_recv() {
                Some(b) => self.cur = b,
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.cur.len());
        buf[..n].copy_from_slice(&self.cur.split_to(n));
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(p: &[(&str, &str)]) -> Vec<(String, String)> {
        p.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn query_becomes_options() {
        let secrets = base64::engine::general_purpose::STANDARD.encode(
            serde_json::to_vec(
                &json!({"tok": base64::engine::general_purpose::STANDARD.encode("s3")}),
            )
            .unwrap(),
        );
        let r = request_from_query(
            &pairs(&[
                ("t", "a:1"),
                ("t", "b"),
                ("dockerfile", "sub/Dockerfile.x"),
                ("buildargs", r#"{"A":"1","B":null,"SOURCE_DATE_EPOCH":"0"}"#),
                ("labels", r#"{"l":"v"}"#),
                ("target", "final"),
                ("nocache", "1"),
                ("q", "true"),
                ("networkmode", "none"),
                ("platform", "linux/amd64"),
                ("rm", "1"),
            ]),
            Some(&secrets),
        )
        .unwrap();
        assert_eq!(r.opts.tags, vec!["a:1", "b"]);
        assert_eq!(
            r.opts.dockerfile,
            DockerfileSource::Path("sub/Dockerfile.x".into())
        );
        assert_eq!(r.opts.build_args["A"], Some("1".into()));
        assert_eq!(r.opts.build_args["B"], None);
        assert_eq!(r.opts.source_date_epoch, Some(0));
        assert_eq!(r.opts.labels["l"], "v");
        assert_eq!(r.opts.target.as_deref(), Some("final"));
        assert!(r.opts.no_cache && r.quiet);
        assert_eq!(r.opts.network.as_deref(), Some("none"));
        assert_eq!(r.opts.secrets["tok"], b"s3");
        assert!(request_from_query(&pairs(&[("buildargs", "{bad")]), None).is_err());
        assert!(request_from_query(&pairs(&[("networkmode", "container:x")]), None).is_err());
        assert!(request_from_query(&pairs(&[("remote", "https://x/y.git")]), None).is_err());
    }

    #[test]
    fn events_render_for_docker_and_for_wharf() {
        let docker = Request::default();
        let step = Event::Step {
            n: 1,
            total: 3,
            stage: "stage-0".into(),
            stage_step: 1,
            stage_steps: 3,
            text: "FROM busybox".into(),
        };
        assert_eq!(
            event_json(&step, &docker).unwrap(),
            json!({"stream": "Step 1/3 : FROM busybox\n"})
        );
        let wharf = Request {
            wharf_progress: true,
            ..Default::default()
        };
        assert_eq!(
            event_json(&Event::Cached { n: 2 }, &wharf).unwrap(),
            json!({"wharf": {"cached": 2}})
        );
        let built = Built {
            id: format!("sha256:{}", "ab".repeat(32)),
            tags: vec!["x:latest".into()],
        };
        let lines = success_json(&built, &docker);
        assert_eq!(lines[0], json!({"aux": {"ID": built.id}}));
        assert_eq!(
            lines[1],
            json!({"stream": "Successfully built abababababab\n"})
        );
        assert_eq!(
            lines[2],
            json!({"stream": "Successfully tagged x:latest\n"})
        );
        let e = error_json(&BuildError::Invalid("boom".into()));
        assert_eq!(e["errorDetail"]["message"], "boom");
    }
}
