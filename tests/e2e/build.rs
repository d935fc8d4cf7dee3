//! `wharf build` / `docker build` (legacy protocol) / `commit` against a real daemon: RUN
//! through the engine's containers, mounts, stages, cache, failures that leave nothing.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Instant;

use crate::harness::{DOCKER20, DOCKER28, Daemon, ok, stderr, stdout, unique_dir};

/// A build context in a temporary directory, removed on drop.
struct Ctx {
    dir: PathBuf,
}

impl Ctx {
    fn new(dockerfile: &str) -> Ctx {
        let dir = unique_dir("wharf-test-build-ctx");
        std::fs::write(dir.join("Dockerfile"), dockerfile).unwrap();
        Ctx { dir }
    }

    fn write(&self, rel: &str, content: &str) -> &Ctx {
        let p = self.dir.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, content).unwrap();
        self
    }

    fn path(&self) -> &str {
        self.dir.to_str().unwrap()
    }
}

impl Drop for Ctx {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn build(d: &Daemon, ctx: &Ctx, extra: &[&str]) -> Output {
    let mut args = vec!["build"];
    args.extend_from_slice(extra);
    args.push(ctx.path());
    d.wharf(&args)
}

/// Builds, asserting success; returns the progress (stderr).
#[track_caller]
fn build_ok(d: &Daemon, ctx: &Ctx, extra: &[&str]) -> String {
    let out = build(d, ctx, extra);
    assert!(
        out.status.success(),
        "build failed:\n{}\n{}",
        stdout(&out),
        stderr(&out)
    );
    stderr(&out)
}

/// `sh -c script` in a fresh container of `image`; its stdout.
#[track_caller]
fn sh(d: &Daemon, image: &str, script: &str) -> String {
    ok(d.wharf(&["run", "--rm", image, "sh", "-c", script]))
}

fn cached_count(progress: &str) -> usize {
    progress.lines().filter(|l| l.ends_with(" CACHED")).count()
}

/// Mounts below the daemon's root besides those of running containers.
fn build_mounts(d: &Daemon) -> Vec<String> {
    let root = d.root.to_string_lossy().to_string();
    std::fs::read_to_string("/proc/self/mounts")
        .unwrap()
        .lines()
        .filter_map(|l| l.split(' ').nth(1))
        .filter(|t| t.starts_with(&root))
        .map(str::to_string)
        .collect()
}

/// No image but busybox, no container, no mount, empty build scratch.
#[track_caller]
fn assert_clean(d: &Daemon) {
    let images = ok(d.wharf(&["images", "-a", "-q"]));
    assert_eq!(images.lines().count(), 1, "images left: {images}");
    assert_eq!(ok(d.wharf(&["ps", "-aq"])), "", "containers left");
    assert_eq!(build_mounts(d), Vec::<String>::new(), "mounts left");
    let tmp: Vec<_> = std::fs::read_dir(d.root.join("build/tmp"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert!(tmp.is_empty(), "build scratch left: {tmp:?}");
}

#[test]
fn run_forms_and_file_system_results() {
    let d = Daemon::with_busybox();
    let ctx = Ctx::new(
        r#"FROM busybox
RUN echo shell-form > /shell.txt && mkdir -p /d/sub /old && echo x > /d/f && echo g > /d/gone && echo o > /old/one && echo visible-output
RUN ["sh", "-c", "echo exec-form > /exec.txt"]
RUN <<EOF
echo heredoc-1 > /heredoc.txt
echo heredoc-2 >> /heredoc.txt
EOF
RUN chown 1234:5678 /d/f && chmod 4750 /d/f && ln -s /d/f /link && rm /var/www/index.html /d/gone && rm -rf /old && mkdir /old && echo n > /old/new
RUN false || true
"#,
    );
    let progress = build_ok(&d, &ctx, &["-t", "runs"]);
    assert!(progress.contains("visible-output"), "{progress}");
    assert_eq!(
        sh(&d, "runs", "cat /shell.txt /exec.txt /heredoc.txt"),
        "shell-form\nexec-form\nheredoc-1\nheredoc-2"
    );
    assert_eq!(sh(&d, "runs", "stat -c '%u:%g %a' /d/f"), "1234:5678 4750");
    assert_eq!(sh(&d, "runs", "readlink /link"), "/d/f");
    // Deletions of base and earlier-layer files are whiteouts; a replaced directory is opaque.
    assert_eq!(
        sh(
            &d,
            "runs",
            "test -e /var/www/index.html || echo base-gone; test -e /d/gone || echo layer-gone; ls /old"
        ),
        "base-gone\nlayer-gone\nnew"
    );
    // The mount points the runtime made in the image's absence did not become layer content.
    let history = ok(d.wharf(&["history", "--no-trunc", "runs"]));
    assert!(history.contains("exec-form"), "{history}");
    let layers = ok(d.wharf(&[
        "image",
        "inspect",
        "--format",
        "{{len .RootFS.Layers}}",
        "runs",
    ]));
    assert_eq!(layers, "6", "one layer per RUN on busybox's one");
    let saved = unique_dir("wharf-test-build-save");
    let tar = saved.join("img.tar");
    ok(d.wharf(&["save", "-o", tar.to_str().unwrap(), "runs"]));
    let listing = tar_listing_of_layers(&tar);
    for stub in ["etc/hosts", "etc/resolv.conf", "etc/hostname"] {
        assert!(
            !listing.iter().any(|p| p == stub),
            "{stub} leaked into a layer: {listing:?}"
        );
    }
    // Nor did /etc, copied up only to hold them: busybox's layer is the one with it.
    assert_eq!(
        listing.iter().filter(|p| *p == "etc").count(),
        1,
        "{listing:?}"
    );
    let _ = std::fs::remove_dir_all(&saved);
    // A failing RUN: the exit code and the line, nothing left behind.
    let bad = Ctx::new("FROM busybox\nRUN echo partial > /p\nRUN echo before-fail && exit 3\n");
    let out = build(&d, &bad, &["-t", "bad"]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("before-fail"), "{err}");
    assert!(err.contains("line 3") && err.contains("code 3"), "{err}");
    // A RUN right on an untagged image of the user's uses that image and leaves it be.
    let base = Ctx::new("FROM busybox\nENV A=1\n");
    let dangling = ok(build(&d, &base, &["-q"]));
    let on = Ctx::new(&format!("FROM {dangling}\nRUN echo on-top > /t\n"));
    build_ok(&d, &on, &["-t", "on-top"]);
    assert_eq!(sh(&d, "on-top", "cat /t"), "on-top");
    ok(d.wharf(&["image", "inspect", &dangling]));
    ok(d.wharf(&["rmi", "runs", "on-top", &dangling]));
    assert_clean(&d);
}

/// Every file name in every layer tar of a docker-archive.
fn tar_listing_of_layers(archive: &Path) -> Vec<String> {
    let dir = archive.parent().unwrap().join("x");
    std::fs::create_dir_all(&dir).unwrap();
    let st = Command::new("tar")
        .arg("xf")
        .arg(archive)
        .arg("-C")
        .arg(&dir)
        .status()
        .unwrap();
    assert!(st.success());
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("manifest.json")).unwrap()).unwrap();
    let mut names = Vec::new();
    for l in manifest[0]["Layers"].as_array().unwrap() {
        let out = Command::new("tar")
            .arg("tf")
            .arg(dir.join(l.as_str().unwrap()))
            .output()
            .unwrap();
        names.extend(
            stdout(&out)
                .lines()
                .map(|s| s.trim_start_matches("./").trim_end_matches('/').to_string()),
        );
    }
    names
}

#[test]
fn run_mounts_secrets_and_network_modes() {
    let d = Daemon::with_busybox();
    let ctx = Ctx::new(
        r#"FROM busybox
RUN --mount=type=cache,target=/cache echo run >> /cache/log && wc -l < /cache/log > /count
RUN --mount=type=bind,source=data,target=/mnt cp /mnt/file /copied
RUN --mount=type=bind,source=data,target=/mnt,rw echo scribble > /mnt/scribble && cat /mnt/scribble > /scribbled
RUN --mount=type=secret,id=tok test "$(cat /run/secrets/tok)" = s3cret && echo secret-ok > /secret
RUN --mount=type=tmpfs,target=/scratch echo t > /scratch/f && grep -q ' /scratch tmpfs' /proc/mounts && echo tmpfs-ok > /tmpfs
RUN --network=none tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' ' > /nets-none
RUN --network=host readlink /proc/self/ns/net > /nets-host
"#,
    );
    ctx.write("data/file", "from-context\n");
    let secret = ctx.dir.join("secret.txt");
    std::fs::write(&secret, "s3cret").unwrap();
    let secret_arg = format!("id=tok,src={}", secret.display());
    build_ok(&d, &ctx, &["-t", "mounts", "--secret", &secret_arg]);
    assert_eq!(sh(&d, "mounts", "cat /count"), "1");
    assert_eq!(sh(&d, "mounts", "cat /copied"), "from-context");
    assert_eq!(sh(&d, "mounts", "cat /scribbled"), "scribble");
    assert!(
        !ctx.dir.join("data/scribble").exists(),
        "a rw bind mount wrote into the context"
    );
    assert_eq!(
        sh(&d, "mounts", "cat /secret /tmpfs"),
        "secret-ok\ntmpfs-ok"
    );
    assert_eq!(sh(&d, "mounts", "cat /nets-none"), "lo");
    // Interfaces come and go on a busy host; the namespace itself is the stable fact.
    let host_netns = std::fs::read_link("/proc/self/ns/net").unwrap();
    assert_eq!(
        sh(&d, "mounts", "cat /nets-host"),
        host_netns.display().to_string()
    );
    // Mount points of the step (/mnt, /run/secrets/tok, /scratch, /cache) left no trace.
    assert_eq!(
        sh(
            &d,
            "mounts",
            "for p in /mnt /run /scratch /cache; do test -e $p && echo $p; done; true"
        ),
        ""
    );
    // The cache mount outlives the build, even one with --no-cache.
    build_ok(
        &d,
        &ctx,
        &["-t", "mounts2", "--no-cache", "--secret", &secret_arg],
    );
    assert_eq!(sh(&d, "mounts2", "cat /count"), "2");
    // A missing required secret fails clearly.
    let need = Ctx::new("FROM busybox\nRUN --mount=type=secret,id=nope,required=true true\n");
    let out = build(&d, &need, &[]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("secret nope not found"),
        "{}",
        stderr(&out)
    );
    // `--network none` for the whole build.
    let none =
        Ctx::new("FROM busybox\nRUN tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' ' > /n\n");
    build_ok(&d, &none, &["-t", "none", "--network", "none"]);
    assert_eq!(sh(&d, "none", "cat /n"), "lo");
}

#[test]
fn stages_copy_from_target_and_run_in_parallel() {
    let d = Daemon::with_busybox();
    // Each slow stage waits (bounded) for the other to have started: the build only
    // succeeds when both run at once. The shared cache mount is their meeting point.
    let ctx = Ctx::new(
        r#"FROM busybox AS a
ARG TOKEN
RUN --mount=type=cache,id=meet,target=/meet touch /meet/$TOKEN-a && sleep 2 && i=0; while [ ! -e /meet/$TOKEN-b ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i+1)); done; test -e /meet/$TOKEN-b && echo a > /a
FROM busybox AS b
ARG TOKEN
RUN --mount=type=cache,id=meet,target=/meet touch /meet/$TOKEN-b && sleep 2 && i=0; while [ ! -e /meet/$TOKEN-a ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i+1)); done; test -e /meet/$TOKEN-a && echo b > /b
FROM busybox AS unused
RUN echo never-runs && exit 1
FROM busybox AS final
COPY --from=a /a /from-a
COPY --from=b /b /from-b
RUN cat /from-a /from-b > /both
"#,
    );
    // No clock: the rendezvous above fails the build unless both stages run at once.
    let progress = build_ok(&d, &ctx, &["-t", "stages", "--build-arg", "TOKEN=t1"]);
    assert_eq!(sh(&d, "stages", "cat /both"), "a\nb");
    assert!(!progress.contains("never-runs"), "{progress}");
    // --target: only what stage a needs is built.
    let progress = build_ok(
        &d,
        &ctx,
        &["-t", "only-a", "--target", "a", "--build-arg", "TOKEN=t1"],
    );
    assert!(
        !progress.contains("echo b > /b") && !progress.contains("never-runs"),
        "{progress}"
    );
    assert_eq!(
        sh(&d, "only-a", "cat /a; test -e /from-b || echo no-b"),
        "a\nno-b"
    );
    let out = build(&d, &ctx, &["--target", "nosuch"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("nosuch"), "{}", stderr(&out));
}

#[test]
fn cache_hits_reruns_dependents_and_no_cache() {
    let d = Daemon::with_busybox();
    let ctx = Ctx::new(
        "FROM busybox\nCOPY a.txt /a.txt\nRUN cat /a.txt > /a.out\nCOPY b.txt /b.txt\nRUN cat /b.txt > /b.out\nENV X=1\nCMD [\"cat\", \"/b.out\"]\n",
    );
    ctx.write("a.txt", "a1\n").write("b.txt", "b1\n");
    let first = build_ok(&d, &ctx, &["-t", "c"]);
    assert_eq!(cached_count(&first), 0, "{first}");
    let id1 = ok(d.wharf(&["image", "inspect", "--format", "{{.Id}}", "c"]));
    let again = build_ok(&d, &ctx, &["-t", "c"]);
    assert_eq!(cached_count(&again), 6, "{again}");
    assert_eq!(
        ok(d.wharf(&["image", "inspect", "--format", "{{.Id}}", "c"])),
        id1
    );
    // One changed file: the steps before its COPY stay cached, the rest run.
    ctx.write("b.txt", "b2\n");
    let changed = build_ok(&d, &ctx, &["-t", "c"]);
    assert_eq!(cached_count(&changed), 2, "{changed}");
    assert_eq!(ok(d.wharf(&["run", "--rm", "c"])), "b2");
    // A touched but unchanged file hits the cache.
    let f = std::fs::File::options()
        .write(true)
        .open(ctx.dir.join("a.txt"))
        .unwrap();
    f.set_modified(std::time::SystemTime::now()).unwrap();
    drop(f);
    let touched = build_ok(&d, &ctx, &["-t", "c"]);
    assert_eq!(cached_count(&touched), 6, "{touched}");
    let none = build_ok(&d, &ctx, &["-t", "c", "--no-cache"]);
    assert_eq!(cached_count(&none), 0, "{none}");
    // The cache survives a daemon restart.
    let mut d = d;
    d.kill9();
    d.spawn();
    let restarted = build_ok(&d, &ctx, &["-t", "c"]);
    assert_eq!(cached_count(&restarted), 6, "{restarted}");
}

#[test]
fn malformed_dockerfiles_leave_nothing() {
    let d = Daemon::with_busybox();
    // A real file outside the context, reached by `..` and by a relative symlink.
    let outside = unique_dir("wharf-test-build-outside");
    std::fs::write(outside.join("secret"), "not for the image").unwrap();
    let name = outside.file_name().unwrap().to_str().unwrap().to_string();
    let dotdot = format!("FROM busybox\nCOPY ../{name}/secret /x\n");
    let cases: &[(&str, &str, &str)] = &[
        (
            "FROM busybox\nFROBNICATE x\n",
            "line 2",
            "unknown instruction",
        ),
        ("FROM busybox\nCMD [\"a\",\n", "line 2", "JSON"),
        ("FROM busybox\nRUN <<EOF\necho never\n", "line 2", "heredoc"),
        ("RUN echo hi\n", "line 1", "FROM"),
        (&dotdot, "line 2", "outside the build context"),
        (
            "FROM busybox\nCOPY link/passwd /x\n",
            "line 2",
            "outside the build context",
        ),
        (
            "FROM busybox\nCOPY rel/secret /x\n",
            "line 2",
            "outside the build context",
        ),
        (
            "FROM busybox\nRUN echo ok > /ok\nRUN exit 7\n",
            "line 3",
            "code 7",
        ),
        (
            "FROM busybox\nRUN [\"/no/such/binary\"]\n",
            "line 2",
            "/no/such/binary",
        ),
    ];
    for (text, line, words) in cases {
        let ctx = Ctx::new(text);
        std::os::unix::fs::symlink("/etc", ctx.dir.join("link")).unwrap();
        std::os::unix::fs::symlink(format!("../{name}"), ctx.dir.join("rel")).unwrap();
        let out = build(&d, &ctx, &["-t", "broken"]);
        assert!(!out.status.success(), "{text} built");
        let err = stderr(&out);
        assert!(err.contains(line) && err.contains(words), "{text}: {err}");
        assert!(
            !ok(d.wharf(&["images", "-q"])).contains('\n'),
            "{text} left an image"
        );
    }
    let _ = std::fs::remove_dir_all(&outside);
    assert_clean(&d);
}

#[test]
fn source_date_epoch_gives_one_id_on_two_roots() {
    let ctx = Ctx::new(
        "FROM busybox\nCOPY f /f\nRUN echo built > /built && mkdir -p /var/lib/x && touch /var/lib/x/y\nENV A=b\n",
    );
    ctx.write("f", "content\n");
    let id = |d: &Daemon| {
        let out = d
            .cmd(&["build", "-q", ctx.path()])
            .env("SOURCE_DATE_EPOCH", "0")
            .output()
            .unwrap();
        ok(out)
    };
    let one = Daemon::with_busybox();
    // The same base on both roots (an import stamps its own creation time).
    let two = Daemon::start();
    let dir = unique_dir("wharf-test-build-sde");
    let tar = dir.join("busybox.tar");
    ok(one.wharf(&["save", "-o", tar.to_str().unwrap(), "busybox"]));
    ok(two.wharf(&["load", "-i", tar.to_str().unwrap()]));
    let _ = std::fs::remove_dir_all(&dir);
    let (a, b) = (id(&one), id(&two));
    assert!(a.starts_with("sha256:"), "{a}");
    assert_eq!(a, b);
    let created = ok(one.wharf(&["image", "inspect", "--format", "{{.Created}}", &a]));
    assert!(created.starts_with("1970-01-01"), "{created}");
}

fn docker_build(docker: &str) {
    if !Path::new(docker).exists() {
        eprintln!("skipping: {docker} is not installed");
        return;
    }
    let d = Daemon::with_busybox();
    let ctx = Ctx::new(
        "FROM busybox\nCOPY hello.txt /hello.txt\nRUN echo from-run-step && cat /hello.txt > /out\nCMD [\"cat\", \"/out\"]\n",
    );
    ctx.write("hello.txt", "hello docker\n");
    let run = |args: &[&str]| {
        d.docker_cmd(docker, args)
            .env("DOCKER_BUILDKIT", "0")
            .current_dir(&ctx.dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .output()
            .unwrap()
    };
    let out = run(&["build", "-t", "x", "."]);
    assert!(
        out.status.success(),
        "{docker} build: {}{}",
        stdout(&out),
        stderr(&out)
    );
    let text = stdout(&out);
    assert!(
        text.contains("from-run-step") && text.contains("Successfully tagged x:latest"),
        "{text}"
    );
    assert_eq!(ok(run(&["run", "--rm", "x"])), "hello docker");
    let out = run(&["build", "-q", "-t", "x", "."]);
    let id = ok(out);
    assert!(id.starts_with("sha256:"), "{id}");
    // A failing step: docker's CLI shows the error and exits non-zero.
    std::fs::write(ctx.dir.join("Dockerfile"), "FROM busybox\nRUN exit 4\n").unwrap();
    let out = run(&["build", "-t", "y", "."]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("code 4"), "{}", stderr(&out));
    assert_eq!(ok(run(&["ps", "-aq"])), "");
}

#[test]
fn docker28_legacy_build() {
    docker_build(DOCKER28);
}

#[test]
fn docker20_legacy_build() {
    docker_build(DOCKER20);
}

#[test]
fn commit_makes_an_image_of_a_container() {
    let d = Daemon::with_busybox();
    ok(d.wharf(&[
        "run",
        "--name",
        "c1",
        "-e",
        "FROM_RUN=1",
        "busybox",
        "sh",
        "-c",
        "echo committed > /f && rm /var/www/index.html",
    ]));
    let id = ok(d.wharf(&[
        "commit",
        "-c",
        "CMD [\"cat\", \"/f\"]",
        "-m",
        "a message",
        "-a",
        "someone",
        "c1",
        "snap:1",
    ]));
    assert!(id.starts_with("sha256:"), "{id}");
    assert_eq!(ok(d.wharf(&["run", "--rm", "snap:1"])), "committed");
    assert_eq!(
        sh(
            &d,
            "snap:1",
            "echo $FROM_RUN; test -e /var/www/index.html || echo gone"
        ),
        "1\ngone"
    );
    let inspect = ok(d.wharf(&[
        "image",
        "inspect",
        "--format",
        "{{.Author}}|{{.Comment}}",
        "snap:1",
    ]));
    assert_eq!(inspect, "someone|a message");
    // A running container is committed too (frozen meanwhile), through docker's CLI.
    ok(d.wharf(&[
        "run",
        "-d",
        "--name",
        "c2",
        "busybox",
        "sh",
        "-c",
        "echo live > /live; sleep 1000",
    ]));
    if Path::new(DOCKER28).exists() {
        std::thread::sleep(std::time::Duration::from_millis(200));
        ok(d.docker(DOCKER28, &["commit", "c2", "snap:2"]));
        assert_eq!(sh(&d, "snap:2", "cat /live"), "live");
        assert_eq!(
            ok(d.wharf(&["inspect", "--format", "{{.State.Status}}", "c2"])),
            "running"
        );
    }
    let out = d.wharf(&["commit", "nosuch", "x:1"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("No such container"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_killed_daemon_leaves_no_build_container_behind() {
    let mut d = Daemon::with_busybox();
    let ctx = Ctx::new("FROM busybox\nRUN echo started && sleep 1000\n");
    let mut child = d
        .cmd(&["build", ctx.path()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + std::time::Duration::from_secs(20);
    while ok(d.wharf(&["ps", "-q"])).is_empty() {
        assert!(Instant::now() < deadline, "the RUN container never started");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    d.kill9();
    let _ = child.wait();
    d.spawn();
    assert_eq!(ok(d.wharf(&["ps", "-aq"])), "");
    assert_eq!(build_mounts(&d), Vec::<String>::new());
}

#[test]
fn base_images_are_pulled_and_built_images_run_under_docker() {
    let reg = crate::registry::common::Registry::start();
    let a = Daemon::with_busybox();
    let base = format!("{}/base/bb:v1", reg.addr);
    ok(a.wharf(&["tag", "busybox", &base]));
    ok(a.wharf(&["push", &base]));
    // A root without the base image pulls it for FROM.
    let b = Daemon::start();
    let ctx = Ctx::new(&format!(
        "FROM {base}\nRUN echo built-by-wharf > /msg\nCMD [\"cat\", \"/msg\"]\n"
    ));
    let built = format!("{}/built/x:v1", reg.addr);
    build_ok(&b, &ctx, &["-t", &built]);
    assert_eq!(ok(b.wharf(&["run", "--rm", &built])), "built-by-wharf");
    ok(b.wharf(&["push", &built]));
    // An unreachable base fails the build with the pull's error, on the FROM line.
    let gone = Ctx::new("FROM 127.0.0.1:1/none/such:v1\nRUN true\n");
    let out = build(&b, &gone, &[]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("line 1"), "{}", stderr(&out));
    if std::process::Command::new("dockerd")
        .arg("--version")
        .output()
        .is_err()
        || !Path::new(DOCKER20).exists()
    {
        eprintln!("skipping the docker half: Debian's dockerd is not installed");
        return;
    }
    let dockerd = crate::registry::Dockerd::start();
    ok(dockerd.docker(&["pull", &built]));
    assert_eq!(
        ok(dockerd.docker(&["run", "--rm", "--network", "none", &built])),
        "built-by-wharf"
    );
}

/// The image's `Config`, as `image inspect` reports it.
#[track_caller]
fn config(d: &Daemon, image: &str) -> serde_json::Value {
    let out = ok(d.wharf(&["image", "inspect", image]));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    v[0]["Config"].clone()
}

/// `cat`s each file of `image` on its own line.
#[track_caller]
fn cat(d: &Daemon, image: &str, files: &str) -> String {
    sh(d, image, &format!("cat {files}"))
}

#[test]
fn one_dockerfile_per_instruction() {
    let d = Daemon::with_busybox();
    let built = |name: &str, dockerfile: &str| {
        let ctx = Ctx::new(dockerfile);
        build_ok(&d, &ctx, &["-t", name]);
        config(&d, name)
    };

    let c = built(
        "i-cmd-exec",
        "FROM busybox\nCMD [\"echo\", \"exec form\"]\n",
    );
    assert_eq!(c["Cmd"], serde_json::json!(["echo", "exec form"]));
    assert_eq!(ok(d.wharf(&["run", "--rm", "i-cmd-exec"])), "exec form");
    let c = built("i-cmd-shell", "FROM busybox\nCMD echo $HOME shell\n");
    assert_eq!(
        c["Cmd"],
        serde_json::json!(["/bin/sh", "-c", "echo $HOME shell"])
    );
    assert_eq!(ok(d.wharf(&["run", "--rm", "i-cmd-shell"])), "/root shell");

    let c = built(
        "i-entrypoint",
        "FROM busybox\nENTRYPOINT [\"echo\", \"ep\"]\nCMD [\"default-arg\"]\n",
    );
    assert_eq!(c["Entrypoint"], serde_json::json!(["echo", "ep"]));
    assert_eq!(
        ok(d.wharf(&["run", "--rm", "i-entrypoint"])),
        "ep default-arg"
    );
    assert_eq!(
        ok(d.wharf(&["run", "--rm", "i-entrypoint", "given"])),
        "ep given"
    );

    let c = built(
        "i-env",
        "FROM busybox\nENV A=1 B=\"two words\"\nENV C ${A}-legacy form\nRUN echo \"$A|$B|$C\" > /seen\n",
    );
    let env: Vec<String> = serde_json::from_value(c["Env"].clone()).unwrap();
    for want in ["A=1", "B=two words", "C=1-legacy form"] {
        assert!(env.iter().any(|e| e == want), "{want} not in {env:?}");
    }
    assert_eq!(cat(&d, "i-env", "/seen"), "1|two words|1-legacy form");

    // ARG before FROM feeds FROM only; redeclared inside, it takes its default.
    let c = built(
        "i-arg",
        "ARG BASE=busybox\nFROM ${BASE}\nARG BASE\nARG LOCAL=dflt\nRUN echo \"$BASE $LOCAL\" > /args\n",
    );
    assert_eq!(cat(&d, "i-arg", "/args"), "busybox dflt");
    let env = c["Env"].to_string();
    assert!(!env.contains("LOCAL"), "an ARG leaked into Env: {env}");

    let c = built(
        "i-label",
        "FROM busybox\nLABEL a=1 \"b c\"=\"d e\"\nLABEL a=2\n",
    );
    assert_eq!(c["Labels"], serde_json::json!({"a": "2", "b c": "d e"}));

    let c = built(
        "i-expose",
        "FROM busybox\nEXPOSE 80 53/udp\nEXPOSE 443/tcp\n",
    );
    assert_eq!(
        c["ExposedPorts"],
        serde_json::json!({"80/tcp": {}, "53/udp": {}, "443/tcp": {}})
    );

    let c = built(
        "i-workdir",
        "FROM busybox\nWORKDIR /a\nWORKDIR b\nRUN pwd > here\n",
    );
    assert_eq!(c["WorkingDir"], "/a/b");
    assert_eq!(cat(&d, "i-workdir", "/a/b/here"), "/a/b");

    let c = built(
        "i-user",
        "FROM busybox\nRUN echo app:x:1500:1500::/home:/bin/sh >> /etc/passwd && mkdir /out && chmod 777 /out\nUSER app\nRUN id -u > /out/uid && touch /out/mine\n",
    );
    assert_eq!(c["User"], "app");
    assert_eq!(cat(&d, "i-user", "/out/uid"), "1500");
    assert_eq!(
        sh(&d, "i-user", "stat -c %u /out/mine; id -u"),
        "1500\n1500"
    );

    let c = built(
        "i-volume",
        "FROM busybox\nVOLUME [\"/data\"]\nVOLUME /logs /cache\n",
    );
    assert_eq!(
        c["Volumes"],
        serde_json::json!({"/data": {}, "/logs": {}, "/cache": {}})
    );

    let c = built(
        "i-shell",
        "FROM busybox\nSHELL [\"/usr/bin/env\", \"VIA=shell\", \"/bin/sh\", \"-c\"]\nRUN echo $VIA > /via\nCMD echo $VIA\n",
    );
    assert_eq!(
        c["Shell"],
        serde_json::json!(["/usr/bin/env", "VIA=shell", "/bin/sh", "-c"])
    );
    assert_eq!(cat(&d, "i-shell", "/via"), "shell");
    assert_eq!(ok(d.wharf(&["run", "--rm", "i-shell"])), "shell");

    let c = built("i-stopsignal", "FROM busybox\nSTOPSIGNAL SIGUSR1\n");
    assert_eq!(c["StopSignal"], "SIGUSR1");

    let c = built(
        "i-healthcheck",
        "FROM busybox\nHEALTHCHECK --interval=5s --timeout=3s --start-period=1s --retries=2 CMD test -e /ok\n",
    );
    let hc = &c["Healthcheck"];
    assert_eq!(hc["Test"], serde_json::json!(["CMD-SHELL", "test -e /ok"]));
    assert_eq!(hc["Interval"], 5_000_000_000u64);
    assert_eq!(hc["Timeout"], 3_000_000_000u64);
    assert_eq!(hc["StartPeriod"], 1_000_000_000u64);
    assert_eq!(hc["Retries"], 2);

    // ONBUILD is recorded, and runs (once) in the image built FROM it.
    let c = built(
        "i-onbuild",
        "FROM busybox\nONBUILD RUN echo triggered > /onbuild\n",
    );
    assert_eq!(
        c["OnBuild"],
        serde_json::json!(["RUN echo triggered > /onbuild"])
    );
    assert_eq!(
        sh(&d, "i-onbuild", "test -e /onbuild || echo not-yet"),
        "not-yet"
    );
    let c = built("i-onbuild-child", "FROM i-onbuild\nENV CHILD=1\n");
    assert_eq!(cat(&d, "i-onbuild-child", "/onbuild"), "triggered");
    assert!(
        c["OnBuild"].is_null() || c["OnBuild"] == serde_json::json!([]),
        "triggers are not inherited: {}",
        c["OnBuild"]
    );

    // FROM scratch, FROM --platform (the host's), and a previous stage by name.
    let ctx = Ctx::new(
        "FROM scratch AS files\nCOPY f /f\nFROM --platform=linux/amd64 busybox\nCOPY --from=files /f /from-scratch\n",
    );
    ctx.write("f", "scratch content\n");
    build_ok(&d, &ctx, &["-t", "i-from"]);
    assert_eq!(cat(&d, "i-from", "/from-scratch"), "scratch content");
    let only = build_ok(&d, &ctx, &["-t", "i-scratch", "--target", "files"]);
    let layers = ok(d.wharf(&[
        "image",
        "inspect",
        "--format",
        "{{len .RootFS.Layers}}",
        "i-scratch",
    ]));
    assert_eq!(layers, "1", "{only}");

    // COPY / ADD: owners, modes, directory semantics, globs, links, local tar extraction.
    let ctx = Ctx::new(
        "FROM busybox\nCOPY dir /copied/\nCOPY --chown=1234:5678 --chmod=600 g*.txt /globbed/\nCOPY dir/sub/f2 /renamed\nADD pkg.tar /added/\nADD pkg.tar.gz /gz/\nCOPY --from=busybox /etc/group /group-from-image\n",
    );
    ctx.write("dir/f1", "one\n")
        .write("dir/sub/f2", "two\n")
        .write("g1.txt", "g1\n")
        .write("g2.txt", "g2\n")
        .write("h.txt", "h\n");
    std::os::unix::fs::symlink("f1", ctx.dir.join("dir/ln")).unwrap();
    std::fs::set_permissions(
        ctx.dir.join("dir/f1"),
        std::os::unix::fs::PermissionsExt::from_mode(0o751),
    )
    .unwrap();
    let pkg = ctx.dir.join("pkg");
    std::fs::create_dir_all(pkg.join("inner")).unwrap();
    std::fs::write(pkg.join("inner/data"), "from tar\n").unwrap();
    for (name, flag) in [("pkg.tar", "-cf"), ("pkg.tar.gz", "-czf")] {
        let st = Command::new("tar")
            .arg("-C")
            .arg(&pkg)
            .arg(flag)
            .arg(ctx.dir.join(name))
            .arg("inner")
            .status()
            .unwrap();
        assert!(st.success());
    }
    build_ok(&d, &ctx, &["-t", "i-copy"]);
    assert_eq!(
        sh(
            &d,
            "i-copy",
            "cd /copied && find . | sort && stat -c '%a %u:%g' f1 && readlink ln"
        ),
        ".\n./f1\n./ln\n./sub\n./sub/f2\n751 0:0\nf1"
    );
    assert_eq!(
        sh(
            &d,
            "i-copy",
            "ls /globbed && stat -c '%a %u:%g' /globbed/g1.txt /globbed/g2.txt"
        ),
        "g1.txt\ng2.txt\n600 1234:5678\n600 1234:5678"
    );
    assert_eq!(
        cat(&d, "i-copy", "/renamed /added/inner/data /gz/inner/data"),
        "two\nfrom tar\nfrom tar"
    );
    assert_eq!(
        sh(&d, "i-copy", "test -e /added/pkg.tar || echo extracted"),
        "extracted"
    );
    assert!(cat(&d, "i-copy", "/group-from-image").contains("nogroup"));

    // ADD of a URL that cannot be reached fails on its line.
    let ctx = Ctx::new("FROM busybox\nADD http://127.0.0.1:9/file.txt /x\n");
    let out = build(&d, &ctx, &["-t", "i-url"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("line 2") && stderr(&out).contains("127.0.0.1:9"),
        "{}",
        stderr(&out)
    );

    // Directives: `# syntax=` is noted and ignored, `# escape=` changes the escape.
    let ctx = Ctx::new(
        "# syntax=docker/dockerfile:1\n# escape=`\nFROM busybox\nENV A=a\nENV B=`$A C=$A\nRUN echo one `\n  two > /joined\n",
    );
    let progress = build_ok(&d, &ctx, &["-t", "i-directives"]);
    assert!(
        progress.contains("# syntax=docker/dockerfile:1 ignored"),
        "{progress}"
    );
    let env = config(&d, "i-directives")["Env"].to_string();
    assert!(env.contains("\"B=$A\"") && env.contains("\"C=a\""), "{env}");
    assert_eq!(cat(&d, "i-directives", "/joined"), "one two");
}

/// `wharf build` with stdin (a Dockerfile or a tar) given.
fn build_stdin(d: &Daemon, args: &[&str], input: &[u8]) -> Output {
    use std::io::Write;
    let mut child = d
        .cmd(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input).unwrap();
    child.wait_with_output().unwrap()
}

fn image_id_of(d: &Daemon, name: &str) -> String {
    ok(d.wharf(&["image", "inspect", "--format", "{{.Id}}", name]))
}

#[test]
fn build_flags_and_context_forms() {
    let d = Daemon::with_busybox();
    let ctx = Ctx::new("FROM busybox\nRUN echo default > /which\n");
    ctx.write(
        "other.Dockerfile",
        "FROM busybox\nCOPY f /f\nRUN echo other > /which\n",
    )
    .write("f", "context file\n");

    // -t twice, --label, --iidfile, -q.
    let scratch = unique_dir("wharf-test-build-iid");
    let iid = scratch.join("iid");
    let quiet = ok(build(
        &d,
        &ctx,
        &[
            "-q",
            "-t",
            "one:a",
            "-t",
            "two:b",
            "--label",
            "from.flag=yes",
            "--iidfile",
            iid.to_str().unwrap(),
        ],
    ));
    assert!(
        quiet.starts_with("sha256:") && !quiet.contains('\n'),
        "-q prints the id only: {quiet}"
    );
    assert_eq!(image_id_of(&d, "one:a"), quiet);
    assert_eq!(image_id_of(&d, "two:b"), quiet);
    assert_eq!(std::fs::read_to_string(&iid).unwrap(), quiet);
    assert_eq!(config(&d, "one:a")["Labels"]["from.flag"], "yes");
    let _ = std::fs::remove_dir_all(&scratch);

    // -f: another file in the context, and one from outside it.
    let f = ctx.dir.join("other.Dockerfile");
    build_ok(&d, &ctx, &["-t", "f-in", "-f", f.to_str().unwrap()]);
    assert_eq!(cat(&d, "f-in", "/which /f"), "other\ncontext file");
    let outside = unique_dir("wharf-test-build-outside");
    let of = outside.join("Dockerfile.out");
    std::fs::write(&of, "FROM busybox\nCOPY f /f\nRUN echo outside > /which\n").unwrap();
    build_ok(&d, &ctx, &["-t", "f-out", "-f", of.to_str().unwrap()]);
    assert_eq!(cat(&d, "f-out", "/which /f"), "outside\ncontext file");
    let _ = std::fs::remove_dir_all(&outside);

    // -f -: the Dockerfile on stdin, the context from the directory.
    let out = build_stdin(
        &d,
        &["build", "-t", "f-stdin", "-f", "-", ctx.path()],
        b"FROM busybox\nCOPY f /f\nRUN echo stdin > /which\n",
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(cat(&d, "f-stdin", "/which /f"), "stdin\ncontext file");

    // `-`: only a Dockerfile, no context (COPY finds nothing).
    let out = build_stdin(
        &d,
        &["build", "-t", "df-only", "-"],
        b"FROM busybox\nRUN echo lone > /which\n",
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(cat(&d, "df-only", "/which"), "lone");
    let out = build_stdin(&d, &["build", "-"], b"FROM busybox\nCOPY f /f\n");
    assert!(!out.status.success());
    assert!(stderr(&out).contains("line 2"), "{}", stderr(&out));

    // `-`: a tar context on stdin, with -f naming a file in it.
    let tar = Command::new("tar")
        .arg("-C")
        .arg(&ctx.dir)
        .args(["-cf", "-", "."])
        .output()
        .unwrap();
    assert!(tar.status.success());
    let out = build_stdin(
        &d,
        &["build", "-t", "tar-ctx", "-f", "other.Dockerfile", "-"],
        &tar.stdout,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(cat(&d, "tar-ctx", "/which /f"), "other\ncontext file");
    let out = build_stdin(&d, &["build", "-f", "-", "-"], b"FROM busybox\n");
    assert!(!out.status.success(), "stdin for both was accepted");

    // --platform: the host's builds, another is refused before anything happens.
    build_ok(&d, &ctx, &["-t", "plat", "--platform", "linux/amd64"]);
    let before = ok(d.wharf(&["images", "-a", "-q", "--no-trunc"]));
    let out = build(&d, &ctx, &["-t", "arm", "--platform", "linux/arm64"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("platform linux/arm64 is not supported"),
        "{}",
        stderr(&out)
    );
    assert_eq!(ok(d.wharf(&["images", "-a", "-q", "--no-trunc"])), before);

    // --network with a mode builds cannot use.
    let out = build(&d, &ctx, &["--network", "container:x"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("not supported"), "{}", stderr(&out));
}

#[test]
fn pull_flag_refreshes_the_base_image() {
    let reg = crate::registry::common::Registry::start();
    let a = Daemon::with_busybox();
    let base = format!("{}/pullflag/base:v1", reg.addr);
    let push_base = |marker: &str| {
        let ctx = Ctx::new(&format!("FROM busybox\nRUN echo {marker} > /marker\n"));
        build_ok(&a, &ctx, &["-t", &base]);
        ok(a.wharf(&["push", &base]));
    };
    push_base("first");
    let b = Daemon::start();
    let ctx = Ctx::new(&format!("FROM {base}\nRUN cp /marker /seen\n"));
    build_ok(&b, &ctx, &["-t", "child"]);
    assert_eq!(cat(&b, "child", "/seen"), "first");
    push_base("second");
    // Without --pull the local base is used (and the cache hits); with it, the new one.
    let progress = build_ok(&b, &ctx, &["-t", "child"]);
    assert_eq!(cached_count(&progress), 1, "{progress}");
    assert_eq!(cat(&b, "child", "/seen"), "first");
    build_ok(&b, &ctx, &["-t", "child", "--pull"]);
    assert_eq!(cat(&b, "child", "/seen"), "second");
    assert_eq!(cat(&b, &base, "/marker"), "second");
}

#[test]
fn dockerignore_cases_in_a_directory_and_a_tar_context() {
    let d = Daemon::with_busybox();
    let ctx = Ctx::new("FROM busybox\nCOPY . /ctx/\nRUN cd /ctx && find . | sort > /list\n");
    ctx.write(
        ".dockerignore",
        "# comment\n*.log\n!keep.log\n/rootonly\n**/*.tmp\nq?.txt\n[ab].md\nsecret/**\nnested/*\n!nested/wanted\n./clean/../cleaned\nDockerfile\n",
    );
    for f in [
        "a.log",
        "keep.log",
        "rootonly",
        "sub/rootonly",
        "x.tmp",
        "deep/er/y.tmp",
        "deep/er/z.txt",
        "q1.txt",
        "q12.txt",
        "a.md",
        "c.md",
        "secret/key",
        "nested/unwanted",
        "nested/wanted",
        "cleaned",
        "sub/a.log",
    ] {
        ctx.write(f, "x");
    }
    // Docker's semantics: a pattern without `**` matches from the root only (`sub/a.log`
    // stays), `secret/**` keeps the directory itself, the Dockerfile is sent regardless.
    let want = ".\n./.dockerignore\n./c.md\n./deep\n./deep/er\n./deep/er/z.txt\n./keep.log\n./nested\n./nested/wanted\n./q12.txt\n./secret\n./sub\n./sub/a.log\n./sub/rootonly";
    build_ok(&d, &ctx, &["-t", "ig-dir"]);
    assert_eq!(cat(&d, "ig-dir", "/list"), want);
    // The same rules when the context comes as a tar on stdin.
    let tar = Command::new("tar")
        .arg("-C")
        .arg(&ctx.dir)
        .args(["-cf", "-", "."])
        .output()
        .unwrap();
    let out = build_stdin(&d, &["build", "-t", "ig-tar", "-"], &tar.stdout);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(cat(&d, "ig-tar", "/list"), want);
    // A file the rules exclude cannot be named by COPY either.
    std::fs::write(ctx.dir.join("Dockerfile"), "FROM busybox\nCOPY a.log /\n").unwrap();
    let out = build(&d, &ctx, &[]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("line 2") && stderr(&out).contains("not found"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn variable_expansion_cases() {
    let d = Daemon::with_busybox();
    let ctx = Ctx::new(
        r#"FROM busybox
ARG FROMARG=dflt
ENV P=/usr/local/bin/tool.tar.gz A=hello E=
ENV R1=$A R2=${A}x R3=${UNSET:-d} R4=${E:-d} R5=${E-d} R6=${A:+alt} R7=${UNSET:+alt}
ENV R8=${P#*/} R9=${P##*/} R10=${P%.*} R11=${P%%.*} R12=${A/l/L} R13=${A//l/L}
ENV R14=\$A R15='$A' R16="$A w" R17=${FROMARG} R18=pre-${A}-post
WORKDIR /w/${A}
COPY ${A}.txt ./${A:+copied}
LABEL l=${P##*/}
"#,
    );
    ctx.write("hello.txt", "via expansion\n");
    let want = [
        "R1=hello",
        "R2=hellox",
        "R3=d",
        "R4=d",
        "R5=",
        "R6=alt",
        "R7=",
        "R8=usr/local/bin/tool.tar.gz",
        "R9=tool.tar.gz",
        "R10=/usr/local/bin/tool.tar",
        "R11=/usr/local/bin/tool",
        "R12=heLlo",
        "R13=heLLo",
        "R14=$A",
        "R15=$A",
        "R16=hello w",
        "R18=pre-hello-post",
    ];
    let check = |image: &str, fromarg: &str| {
        let c = config(&d, image);
        let env: Vec<String> = serde_json::from_value(c["Env"].clone()).unwrap();
        for w in want {
            assert!(env.iter().any(|e| e == w), "{w} not in {env:?}");
        }
        let r17 = format!("R17={fromarg}");
        assert!(env.contains(&r17), "{r17} not in {env:?}");
        assert_eq!(c["WorkingDir"], "/w/hello");
        assert_eq!(c["Labels"]["l"], "tool.tar.gz");
        assert_eq!(cat(&d, image, "/w/hello/copied"), "via expansion");
    };
    build_ok(&d, &ctx, &["-t", "exp"]);
    check("exp", "dflt");
    build_ok(&d, &ctx, &["-t", "exp2", "--build-arg", "FROMARG=given"]);
    check("exp2", "given");
    // `${V:?message}` stops the build on its line.
    let bad = Ctx::new("FROM busybox\n\nENV X=${NOPE:?must-be-set}\n");
    let out = build(&d, &bad, &[]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("line 3") && stderr(&out).contains("NOPE: must-be-set"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn build_arg_changes_invalidate_only_later_steps() {
    let d = Daemon::with_busybox();
    let ctx = Ctx::new(
        "FROM busybox\nRUN echo before > /before\nARG MODE=dev\nRUN echo $MODE > /mode\nENV AFTER=1\n",
    );
    let first = build_ok(&d, &ctx, &["-t", "ba"]);
    assert_eq!(cached_count(&first), 0, "{first}");
    assert_eq!(cat(&d, "ba", "/before /mode"), "before\ndev");
    let dev = image_id_of(&d, "ba");
    let prod = build_ok(&d, &ctx, &["-t", "ba", "--build-arg", "MODE=prod"]);
    // The RUN before the ARG is cached; the RUN that reads it and what follows are not.
    let lines: Vec<&str> = prod.lines().collect();
    let cached: Vec<&str> = lines
        .windows(2)
        .filter(|w| w[1].ends_with(" CACHED"))
        .map(|w| w[0])
        .collect();
    assert_eq!(cached.len(), 1, "{prod}");
    assert!(cached[0].ends_with("RUN echo before > /before"), "{prod}");
    assert_eq!(cat(&d, "ba", "/mode"), "prod");
    let again = build_ok(&d, &ctx, &["-t", "ba", "--build-arg", "MODE=prod"]);
    assert_eq!(cached_count(&again), 3, "{again}");
    // The default value again: the first build's cache, the first build's image.
    let back = build_ok(&d, &ctx, &["-t", "ba"]);
    assert_eq!(cached_count(&back), 3, "{back}");
    assert_eq!(image_id_of(&d, "ba"), dev);
    // An unused build arg changes nothing and is reported.
    let unused = build_ok(&d, &ctx, &["-t", "ba", "--build-arg", "NOBODY=x"]);
    assert_eq!(cached_count(&unused), 3, "{unused}");
    assert_eq!(image_id_of(&d, "ba"), dev);
    assert!(unused.contains("NOBODY"), "{unused}");
}
