//! The builder without containers: metadata instructions, COPY/ADD, stages, the cache,
//! reproducibility and malformed Dockerfiles, on temporary roots.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "images_common/mod.rs"]
mod images_common;

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use images_common::{RawTar, dir_names, docker_archive};
use wharf_engine::build::{BuildError, BuildOptions, Builder, Built, DockerfileSource, Event};
use wharf_engine::image::{ImageStore, InUse};
use wharf_engine::meta::Meta;

struct Env {
    base: tempfile::TempDir,
    store: Arc<ImageStore>,
    builder: Builder,
}

fn base_layer() -> Vec<u8> {
    RawTar::new()
        .dir("etc", 0o755)
        .file(
            "etc/passwd",
            b"root:x:0:0:root:/root:/bin/sh\napp:x:1000:1001:app:/home/app:/bin/sh\n",
        )
        .file("etc/group", b"root:x:0:\napp:x:1001:\nstaff:x:50:\n")
        .dir("usr", 0o755)
        .dir("usr/bin", 0o755)
        .symlink("bin", "usr/bin")
        .dir("tmp", 0o1777)
        .file("gone-later", b"x")
        .finish()
}

impl Env {
    fn new() -> Env {
        let base = tempfile::tempdir().unwrap();
        let root = base.path().join("root");
        std::fs::create_dir_all(&root).unwrap();
        std::fs::create_dir_all(base.path().join("ctx")).unwrap();
        let store = Arc::new(open(&root));
        let (archive, _) = docker_archive(&[base_layer()], Some("base:latest"));
        store.load(&mut archive.as_slice()).unwrap();
        let builder = Builder::new(store.clone(), &root).unwrap();
        Env {
            base,
            store,
            builder,
        }
    }

    fn root(&self) -> PathBuf {
        self.base.path().join("root")
    }

    fn ctx(&self) -> PathBuf {
        self.base.path().join("ctx")
    }

    fn write(&self, rel: &str, content: &str) {
        let p = self.ctx().join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, content).unwrap();
    }

    fn build_with(
        &self,
        dockerfile: &str,
        mut opts: BuildOptions,
    ) -> (Result<Built, BuildError>, Vec<Event>) {
        opts.dockerfile = DockerfileSource::Inline(dockerfile.to_string());
        let events = Mutex::new(Vec::new());
        let r = self.builder.build(Some(&self.ctx()), &opts, &|e| {
            events.lock().unwrap().push(e)
        });
        (r, events.into_inner().unwrap())
    }

    fn build(&self, dockerfile: &str) -> Built {
        let (r, _) = self.build_with(dockerfile, BuildOptions::default());
        r.unwrap()
    }

    fn config(&self, id: &str) -> wharf_engine::image::ImageConfig {
        self.store.resolve(id).unwrap().config
    }

    /// The file at `path` in image `id`, as overlay would show it.
    fn lookup(&self, id: &str, path: &str) -> Option<(PathBuf, std::fs::Metadata)> {
        let img = self.store.resolve(id).unwrap();
        let lowers = self.store.lower_dirs(&img).unwrap();
        wharf_engine::build::tree::lookup(&lowers, path)
    }

    fn read(&self, id: &str, path: &str) -> String {
        let (p, _) = self
            .lookup(id, path)
            .unwrap_or_else(|| panic!("{path} missing"));
        std::fs::read_to_string(p).unwrap()
    }

    /// What a refused build must leave as it was.
    fn state(&self) -> (Vec<String>, usize, Vec<String>) {
        let mut ids: Vec<String> = self
            .store
            .list()
            .unwrap()
            .into_iter()
            .map(|i| i.id)
            .collect();
        ids.sort();
        let mounts = std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap()
            .lines()
            .filter(|l| l.contains(self.root().to_str().unwrap()))
            .count();
        (ids, mounts, dir_names(&self.root().join("build/tmp")))
    }
}

fn open(root: &Path) -> ImageStore {
    let meta = Arc::new(Meta::open(&root.join("meta.redb")).unwrap());
    ImageStore::open(root, meta).unwrap()
}

fn cached_steps(events: &[Event]) -> Vec<usize> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Cached { n } => Some(*n),
            _ => None,
        })
        .collect()
}

#[test]
fn metadata_instructions_set_the_config() {
    let env = Env::new();
    let built = env.build(
        r#"FROM base
ARG V=1.2
ENV APP=/srv/app VERSION=$V \
    QUOTED="two words"
ENV LEGACY legacy value
LABEL org.x.version="${VERSION}" plain=yes
EXPOSE 80 53/udp 8000-8001
VOLUME ["/data", "/logs"]
VOLUME /cache
WORKDIR $APP
WORKDIR sub
USER app:staff
SHELL ["/bin/sh", "-e", "-c"]
STOPSIGNAL SIGINT
HEALTHCHECK --interval=5s --timeout=2s --retries=4 CMD wget -q localhost || exit 1
ONBUILD RUN echo triggered
ENTRYPOINT ["/bin/app"]
CMD --serve
"#,
    );
    let c = env.config(&built.id);
    let envs = c.env.clone().unwrap();
    assert!(envs.contains(&"APP=/srv/app".to_string()), "{envs:?}");
    assert!(envs.contains(&"VERSION=1.2".to_string()));
    assert!(envs.contains(&"QUOTED=two words".to_string()));
    assert!(envs.contains(&"LEGACY=legacy value".to_string()));
    // Build args are not part of the image.
    assert!(!envs.iter().any(|e| e.starts_with("V=")));
    let labels = c.labels.clone().unwrap();
    assert_eq!(labels["org.x.version"], "1.2");
    assert_eq!(labels["plain"], "yes");
    assert_eq!(labels["a"], "b", "base labels are inherited");
    assert_eq!(
        c.exposed_ports.clone().unwrap(),
        vec!["53/udp", "80/tcp", "8000/tcp", "8001/tcp"]
    );
    assert_eq!(c.volumes.clone().unwrap(), vec!["/cache", "/data", "/logs"]);
    assert_eq!(c.working_dir.as_deref(), Some("/srv/app/sub"));
    assert_eq!(c.user.as_deref(), Some("app:staff"));
    assert_eq!(c.shell.clone().unwrap(), vec!["/bin/sh", "-e", "-c"]);
    assert_eq!(c.stop_signal.as_deref(), Some("SIGINT"));
    let hc = c.healthcheck.clone().unwrap();
    assert_eq!(
        hc.test.unwrap(),
        vec!["CMD-SHELL", "wget -q localhost || exit 1"]
    );
    assert_eq!(hc.interval, Some(5_000_000_000));
    assert_eq!(hc.timeout, Some(2_000_000_000));
    assert_eq!(hc.retries, Some(4));
    assert_eq!(c.on_build.clone().unwrap(), vec!["RUN echo triggered"]);
    assert_eq!(c.entrypoint.clone().unwrap(), vec!["/bin/app"]);
    // The shell form runs under the SHELL set above.
    assert_eq!(
        c.cmd.clone().unwrap(),
        vec!["/bin/sh", "-e", "-c", "--serve"]
    );
    // WORKDIR made the directory, owned by nobody in particular (root) at that point.
    let (_, m) = env.lookup(&built.id, "srv/app/sub").unwrap();
    assert!(m.is_dir());
    // ENTRYPOINT without a CMD in the stage drops the inherited CMD.
    let b2 = env.build("FROM base\nENTRYPOINT [\"/x\"]\n");
    assert_eq!(env.config(&b2.id).cmd, None);
    let hn = env.build("FROM base\nHEALTHCHECK NONE\n");
    assert_eq!(
        env.config(&hn.id).healthcheck.unwrap().test.unwrap(),
        vec!["NONE"]
    );
}

#[test]
fn copy_and_add_write_files_with_owners_modes_and_links() {
    let env = Env::new();
    env.write("app/main.sh", "echo main\n");
    env.write("app/lib/util.sh", "echo util\n");
    env.write("a.txt", "A");
    env.write("b.txt", "B");
    env.write("c.md", "C");
    std::fs::set_permissions(
        env.ctx().join("app/main.sh"),
        std::os::unix::fs::PermissionsExt::from_mode(0o750),
    )
    .unwrap();
    std::os::unix::fs::symlink("main.sh", env.ctx().join("app/link")).unwrap();
    // A local archive for ADD.
    let tgz = images_common::gzip(
        &RawTar::new()
            .dir("pkg", 0o755)
            .file("pkg/data", b"unpacked")
            .finish(),
    );
    std::fs::write(env.ctx().join("pkg.tar.gz"), tgz).unwrap();
    let built = env.build(
        "FROM base
COPY app /opt/app
COPY --chown=app:staff --chmod=640 *.txt /drop/
COPY a.txt /single
COPY --chown=1234 c.md relative/
ADD pkg.tar.gz /unpacked/
ADD c.md /bin/c.md
COPY <<EOF /etc/motd
hello $HOSTNAME
EOF
",
    );
    let id = &built.id;
    assert_eq!(env.read(id, "opt/app/main.sh"), "echo main\n");
    assert_eq!(env.read(id, "opt/app/lib/util.sh"), "echo util\n");
    let (_, m) = env.lookup(id, "opt/app/main.sh").unwrap();
    assert_eq!(m.mode() & 0o7777, 0o750);
    assert_eq!((m.uid(), m.gid()), (0, 0));
    // Symlinks inside a copied directory stay links.
    let (p, m) = env.lookup(id, "opt/app/link").unwrap();
    assert!(m.file_type().is_symlink());
    assert_eq!(std::fs::read_link(p).unwrap(), Path::new("main.sh"));
    for (f, want) in [("drop/a.txt", "A"), ("drop/b.txt", "B")] {
        assert_eq!(env.read(id, f), want);
        let (_, m) = env.lookup(id, f).unwrap();
        assert_eq!((m.uid(), m.gid(), m.mode() & 0o7777), (1000, 50, 0o640));
    }
    assert!(env.lookup(id, "drop/c.md").is_none());
    assert_eq!(env.read(id, "single"), "A");
    let (_, m) = env.lookup(id, "relative/c.md").unwrap();
    assert_eq!((m.uid(), m.gid()), (1234, 1234));
    assert_eq!(env.read(id, "unpacked/pkg/data"), "unpacked");
    // `/bin` links to `usr/bin` in the base: the file lands there, the link survives.
    assert_eq!(env.read(id, "usr/bin/c.md"), "C");
    let (_, m) = env.lookup(id, "bin").unwrap();
    assert!(m.file_type().is_symlink());
    assert_eq!(env.read(id, "etc/motd"), "hello \n");
}

#[test]
fn add_of_an_unreachable_url_fails_clearly() {
    let env = Env::new();
    let before = env.state();
    let (r, _) = env.build_with(
        "FROM base\nADD http://127.0.0.1:9/file.txt /x\n",
        BuildOptions::default(),
    );
    let e = r.unwrap_err();
    assert_eq!(e.line(), Some(2));
    let msg = e.to_string();
    assert!(msg.contains("ADD http://127.0.0.1:9/file.txt"), "{msg}");
    assert_eq!(env.state(), before);
}

#[test]
fn dockerignore_hides_files_from_copy() {
    let env = Env::new();
    env.write(".dockerignore", "*.log\n!keep.log\nsecret\n**/*.tmp\n");
    env.write("a.log", "x");
    env.write("keep.log", "k");
    env.write("secret/key", "s");
    env.write("deep/x.tmp", "t");
    env.write("deep/ok", "o");
    env.write("sub/secret", "not at the root: kept");
    let built = env.build("FROM base\nCOPY . /ctx/\n");
    let id = &built.id;
    assert!(env.lookup(id, "ctx/a.log").is_none());
    assert_eq!(env.read(id, "ctx/keep.log"), "k");
    assert!(env.lookup(id, "ctx/secret").is_none());
    assert!(env.lookup(id, "ctx/deep/x.tmp").is_none());
    assert_eq!(env.read(id, "ctx/deep/ok"), "o");
    assert_eq!(env.read(id, "ctx/sub/secret"), "not at the root: kept");
    // An ignored file named directly is not found.
    let (r, _) = env.build_with("FROM base\nCOPY a.log /\n", BuildOptions::default());
    assert!(r.unwrap_err().to_string().contains("not found"));
}

#[test]
fn stages_copy_from_and_target() {
    let env = Env::new();
    env.write("f", "from context");
    let df = "FROM base AS one
COPY f /built/f
ENV IN_ONE=1

FROM scratch AS unused
COPY does-not-exist /

FROM base AS two
COPY --from=one /built/f /copied
COPY --from=0 /etc/group /group-from-index
LABEL stage=two

FROM two AS three
LABEL stage=three
";
    let (r, events) = env.build_with(df, BuildOptions::default());
    let built = r.unwrap();
    let id = &built.id;
    assert_eq!(env.read(id, "copied"), "from context");
    assert!(env.read(id, "group-from-index").contains("staff"));
    let c = env.config(id);
    assert_eq!(c.labels.unwrap()["stage"], "three");
    // The stage nothing needs was not built (its COPY would have failed).
    assert!(
        !events
            .iter()
            .any(|e| matches!(e, Event::Step { text, .. } if text.contains("does-not-exist")))
    );
    let t = env
        .build_with(
            df,
            BuildOptions {
                target: Some("two".into()),
                ..Default::default()
            },
        )
        .0
        .unwrap();
    assert_eq!(env.config(&t.id).labels.unwrap()["stage"], "two");
    assert!(
        env.config(&t.id)
            .env
            .unwrap()
            .iter()
            .all(|e| !e.starts_with("IN_ONE"))
    );
    let (r, _) = env.build_with(
        df,
        BuildOptions {
            target: Some("nope".into()),
            ..Default::default()
        },
    );
    assert!(r.unwrap_err().to_string().contains("nope"));
}

#[test]
fn cache_hits_misses_and_survives_reopen_and_prune() {
    let mut env = Env::new();
    env.write("a", "1");
    env.write("b", "1");
    let df = "FROM base
ARG MODE=dev
COPY a /a
ENV X=1
COPY b /b
LABEL mode=$MODE
ENV Y=2
";
    let (r1, ev1) = env.build_with(df, BuildOptions::default());
    let first = r1.unwrap();
    assert!(cached_steps(&ev1).is_empty(), "{ev1:?}");
    // No change: everything but the ARG (which does nothing) comes from the cache, and the
    // image is the same.
    let (r2, ev2) = env.build_with(df, BuildOptions::default());
    assert_eq!(r2.unwrap().id, first.id);
    assert_eq!(cached_steps(&ev2), vec![3, 4, 5, 6, 7]);
    // One changed file: the steps before it stay cached.
    std::fs::write(env.ctx().join("b"), "2").unwrap();
    let (r3, ev3) = env.build_with(df, BuildOptions::default());
    let third = r3.unwrap();
    assert_ne!(third.id, first.id);
    assert_eq!(cached_steps(&ev3), vec![3, 4]);
    assert_eq!(env.read(&third.id, "b"), "2");
    // A build arg only matters where it is used.
    let mut args = HashMap::new();
    args.insert("MODE".to_string(), Some("prod".to_string()));
    let (r4, ev4) = env.build_with(
        df,
        BuildOptions {
            build_args: args,
            ..Default::default()
        },
    );
    let fourth = r4.unwrap();
    assert_eq!(cached_steps(&ev4), vec![3, 4, 5]);
    assert_eq!(env.config(&fourth.id).labels.unwrap()["mode"], "prod");
    // --no-cache runs everything again.
    let (r5, ev5) = env.build_with(
        df,
        BuildOptions {
            no_cache: true,
            ..Default::default()
        },
    );
    r5.unwrap();
    assert!(cached_steps(&ev5).is_empty());

    // A tagged image's cache survives a restart and a prune of dangling images.
    let (tagged, _) = env.build_with(
        df,
        BuildOptions {
            tags: vec!["app:v1".into()],
            ..Default::default()
        },
    );
    let tagged = tagged.unwrap();
    let root = env.root();
    // Both holders of the old store let go of it (redb locks its file), then the root is
    // opened again, as a restarted daemon does.
    let spare = env.base.path().join("spare");
    std::fs::create_dir_all(&spare).unwrap();
    env.store = Arc::new(open(&spare));
    env.builder = Builder::new(env.store.clone(), &spare).unwrap();
    env.store = Arc::new(open(&root));
    env.builder = Builder::new(env.store.clone(), &root).unwrap();
    env.store.prune(false, &|_: &str| InUse::No).unwrap();
    let (again, ev) = env.build_with(
        df,
        BuildOptions {
            tags: vec!["app:v1".into()],
            ..Default::default()
        },
    );
    assert_eq!(again.unwrap().id, tagged.id);
    assert_eq!(cached_steps(&ev), vec![3, 4, 5, 6, 7]);
}

#[test]
fn source_date_epoch_gives_the_same_image_on_two_roots() {
    let one = Env::new();
    let two = Env::new();
    let df = "FROM base\nCOPY . /app/\nENV A=1\nWORKDIR /w\nCMD [\"run\"]\n";
    for env in [&one, &two] {
        env.write("x/y", "same");
        env.write("z", "same too");
    }
    // Different file times on the two sides: clamped away.
    let old = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
    std::fs::File::open(one.ctx().join("z"))
        .unwrap()
        .set_modified(old)
        .unwrap();
    let opts = || BuildOptions {
        source_date_epoch: Some(0),
        ..Default::default()
    };
    let a = one.build_with(df, opts()).0.unwrap();
    let b = two.build_with(df, opts()).0.unwrap();
    assert_eq!(a.id, b.id);
    let img = one.store.resolve(&a.id).unwrap();
    assert_eq!(img.created.as_deref(), Some("1970-01-01T00:00:00Z"));
    let (_, m) = one.lookup(&a.id, "app/z").unwrap();
    assert_eq!(m.mtime(), 0);
}

#[test]
fn malformed_dockerfiles_fail_with_line_numbers_and_leave_nothing() {
    let env = Env::new();
    env.write("inside", "x");
    std::os::unix::fs::symlink("/etc/passwd", env.ctx().join("abs-link")).unwrap();
    std::os::unix::fs::symlink("../../outside", env.ctx().join("up-link")).unwrap();
    let before = env.state();
    let cases: &[(&str, usize, &str)] = &[
        ("FROM base\n\nFOO bar\n", 3, "unknown instruction"),
        ("FROM base\nCMD [\"a\", \"b\"\n", 2, "JSON"),
        ("FROM base\nRUN cat <<EOF > /x\nno end\n", 2, "heredoc"),
        ("RUN echo hi\n", 1, "FROM"),
        (
            "FROM base\nCOPY inside /\nCOPY ../outside /\n",
            3,
            "outside the build context",
        ),
        (
            "FROM base\nCOPY abs-link /\n",
            2,
            "outside the build context",
        ),
        (
            "FROM base\nCOPY up-link /x\n",
            2,
            "outside the build context",
        ),
        ("FROM base\nCOPY missing /\n", 2, "not found"),
        ("FROM base\nCOPY a b c\n", 2, "must be a directory"),
        ("FROM base\nEXPOSE 80/xyz\n", 2, "invalid proto"),
        ("FROM base\nRUN true\n", 2, "container runtime"),
        ("FROM nosuchimage\n", 1, "nosuchimage"),
        ("FROM base\nENV A=${B\n", 2, "matching }"),
    ];
    for (df, line, words) in cases {
        let (r, _) = env.build_with(df, BuildOptions::default());
        let e = r.expect_err(df);
        let msg = e.to_string();
        assert_eq!(e.line(), Some(*line), "{df:?}: {msg}");
        assert!(msg.contains(&format!("line {line}")), "{msg}");
        assert!(msg.contains(words), "{df:?}: {msg}");
        assert_eq!(env.state(), before, "{df:?} left something");
    }
    // A platform other than the host's is refused up front.
    let (r, _) = env.build_with(
        "FROM base\n",
        BuildOptions {
            platform: Some("linux/s390x".into()),
            ..Default::default()
        },
    );
    assert!(r.unwrap_err().to_string().contains("linux/s390x"));
}

#[test]
fn parser_handles_heredocs_escapes_and_directives() {
    let df = wharf_engine::build::parse(
        "# syntax=docker/dockerfile:1\n# escape=`\nFROM base\nRUN echo a `\n  b\nRUN cat <<EOF > /x && echo done\nline $A\nEOF\nRUN <<EOF\necho script\nEOF\n",
    )
    .unwrap();
    use wharf_engine::build::parse::{CmdForm, StepKind};
    assert_eq!(df.escape, '`');
    assert_eq!(df.syntax.as_deref(), Some("docker/dockerfile:1"));
    let steps = &df.stages[0].steps;
    assert_eq!(
        steps[0].kind,
        StepKind::Run {
            flags: vec![],
            cmd: CmdForm::Shell("echo a   b".into()),
            script: false
        }
    );
    assert_eq!(
        steps[1].kind,
        StepKind::Run {
            flags: vec![],
            cmd: CmdForm::Shell("cat <<EOF > /x && echo done\nline $A\nEOF\n".into()),
            script: false
        }
    );
    assert_eq!(steps[1].line, 6);
    assert_eq!(
        steps[2].kind,
        StepKind::Run {
            flags: vec![],
            cmd: CmdForm::Shell("echo script".into()),
            script: true
        }
    );
    assert_eq!(steps[2].line, 9);
}

#[test]
fn legacy_protocol_builds_a_tar_context() {
    let env = Env::new();
    let mut b = tar::Builder::new(Vec::new());
    for (name, data) in [
        (
            "Dockerfile",
            &b"FROM base\nCOPY hello /hello\nCMD [\"cat\", \"/hello\"]\n"[..],
        ),
        ("hello", &b"hi from a tar\n"[..]),
        (".dockerignore", &b"ignored\n"[..]),
        ("ignored", &b"x"[..]),
    ] {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        b.append_data(&mut h, name, data).unwrap();
    }
    let body = b.into_inner().unwrap();
    let pairs: Vec<(String, String)> = vec![("t".into(), "legacy:v1".into())];
    let req = wharf_engine::build::api::request_from_query(&pairs, None).unwrap();
    let lines = Mutex::new(Vec::new());
    let built =
        wharf_engine::build::api::run_request(&env.builder, &req, &mut body.as_slice(), &|v| {
            lines.lock().unwrap().push(v)
        })
        .unwrap();
    let lines = lines.into_inner().unwrap();
    let text: String = lines
        .iter()
        .filter_map(|v| v.get("stream").and_then(|s| s.as_str()))
        .collect();
    assert!(text.contains("Step 1/3 : FROM base\n"), "{text}");
    assert!(text.contains("Step 2/3 : COPY hello /hello\n"), "{text}");
    assert!(text.contains("Successfully tagged legacy:v1\n"), "{text}");
    assert!(lines.iter().any(|v| v["aux"]["ID"] == built.id.as_str()));
    assert_eq!(env.read(&built.id, "hello"), "hi from a tar\n");
    assert_eq!(env.store.resolve("legacy:v1").unwrap().id, built.id);
    // The extracted context is gone.
    assert!(dir_names(&env.root().join("build/tmp")).is_empty());
    // A failing build reports through errorDetail.
    let lines = Mutex::new(Vec::new());
    let bad =
        wharf_engine::build::api::request_from_query(&[("dockerfile".into(), "Nope".into())], None)
            .unwrap();
    let r = wharf_engine::build::api::run_request(&env.builder, &bad, &mut body.as_slice(), &|v| {
        lines.lock().unwrap().push(v)
    });
    assert!(r.is_err());
    let lines = lines.into_inner().unwrap();
    let msg = lines.last().unwrap()["errorDetail"]["message"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(msg.contains("cannot find the Dockerfile Nope"), "{msg}");
}

#[test]
fn commit_turns_an_upper_directory_into_a_layer() {
    let env = Env::new();
    let rw = env.base.path().join("rw");
    std::fs::create_dir_all(rw.join("new/dir")).unwrap();
    std::fs::write(rw.join("new/dir/file"), "added").unwrap();
    // An overlay whiteout: a 0:0 character device.
    nix::sys::stat::mknod(
        &rw.join("gone-later"),
        nix::sys::stat::SFlag::S_IFCHR,
        nix::sys::stat::Mode::empty(),
        0,
    )
    .unwrap();
    let base = env.store.resolve("base").unwrap();
    let img = wharf_engine::build::commit::commit_container(
        &env.store,
        &base.id,
        &rw,
        &wharf_engine::build::commit::CommitOptions {
            reference: Some("committed:v1".into()),
            author: Some("me".into()),
            comment: Some("a commit".into()),
            changes: vec!["CMD [\"cat\", \"/new/dir/file\"]".into(), "ENV C=1".into()],
            config: None,
        },
    )
    .unwrap();
    assert_eq!(env.read(&img.id, "new/dir/file"), "added");
    assert!(env.lookup(&img.id, "gone-later").is_none());
    assert!(env.lookup(&base.id, "gone-later").is_some());
    let c = env.config(&img.id);
    assert_eq!(c.cmd.unwrap(), vec!["cat", "/new/dir/file"]);
    assert!(c.env.unwrap().contains(&"C=1".to_string()));
    assert_eq!(env.store.resolve("committed:v1").unwrap().id, img.id);
    assert_eq!(img.diff_ids().len(), base.diff_ids().len() + 1);
}
