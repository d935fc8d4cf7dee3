//! Unit tests of the spec decisions (no container is run here; tests/e2e/shim.rs runs them).

use super::*;

fn rootfs() -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "wharf-spec-{}-{:?}",
        std::process::id(),
        std::thread::current().id()
    ));
    std::fs::create_dir_all(dir.join("etc")).unwrap();
    std::fs::write(dir.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n").unwrap();
    std::fs::write(dir.join("etc/group"), "root:x:0:\n").unwrap();
    dir
}

fn input<'a>(root: &'a Path, host: &'a HostConfig) -> SpecInput<'a> {
    SpecInput {
        id: "abc",
        rootfs: root,
        args: vec!["echo".into(), "hi".into()],
        env: vec!["PATH=/bin".into()],
        cwd: String::new(),
        user: String::new(),
        hostname: "abc".into(),
        tty: false,
        open_stdin: false,
        host,
        etc_files: &[],
        cgroup_parent: "wharf",
        init_binary: None,
        netns: None,
    }
}

fn cap_names(spec: &Spec) -> Vec<String> {
    let caps = spec
        .process()
        .as_ref()
        .unwrap()
        .capabilities()
        .as_ref()
        .unwrap();
    let mut v: Vec<String> = caps
        .effective()
        .as_ref()
        .unwrap()
        .iter()
        .map(|c| {
            serde_json::to_value(c)
                .unwrap()
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    v.sort();
    v
}

#[test]
fn defaults_are_dockers() {
    let root = rootfs();
    let host = HostConfig::default();
    let (spec, warnings) = build(&input(&root, &host)).unwrap();
    assert!(warnings.is_empty(), "{warnings:?}");
    let mut want: Vec<String> = DEFAULT_CAPS.iter().map(|s| s.to_string()).collect();
    want.sort();
    assert_eq!(cap_names(&spec), want);
    let linux = spec.linux().as_ref().unwrap();
    assert_eq!(
        linux.cgroups_path().as_deref(),
        Some(Path::new("/wharf/abc"))
    );
    assert!(linux.seccomp().is_some());
    assert!(
        linux
            .masked_paths()
            .as_ref()
            .unwrap()
            .contains(&"/proc/kcore".to_string())
    );
    assert!(
        linux
            .readonly_paths()
            .as_ref()
            .unwrap()
            .contains(&"/proc/sysrq-trigger".to_string())
    );
    let p = spec.process().as_ref().unwrap();
    assert_eq!(p.no_new_privileges(), None);
    assert_eq!(p.rlimits(), &None);
    assert_eq!(
        p.args().as_ref().unwrap(),
        &vec!["echo".to_string(), "hi".to_string()]
    );
    assert!(
        p.env()
            .as_ref()
            .unwrap()
            .contains(&"HOSTNAME=abc".to_string())
    );
    let mounts = spec.mounts().as_ref().unwrap();
    let shm = mounts
        .iter()
        .find(|m| m.destination() == Path::new("/dev/shm"))
        .unwrap();
    assert!(
        shm.options()
            .as_ref()
            .unwrap()
            .contains(&"size=65536k".to_string())
    );
    let nss: Vec<LinuxNamespaceType> = linux
        .namespaces()
        .as_ref()
        .unwrap()
        .iter()
        .map(|n| n.typ())
        .collect();
    assert!(nss.contains(&LinuxNamespaceType::Network) && nss.contains(&LinuxNamespaceType::Pid));
    // Round trip through JSON as the bundle stores it.
    let json = serde_json::to_string(&spec).unwrap();
    let _: Spec = serde_json::from_str(&json).unwrap();
    std::fs::remove_dir_all(&root).unwrap();
}

#[test]
fn privileged_lifts_confinement() {
    let root = rootfs();
    let host = HostConfig {
        privileged: Some(true),
        ..Default::default()
    };
    let (spec, _) = build(&input(&root, &host)).unwrap();
    let linux = spec.linux().as_ref().unwrap();
    assert!(linux.seccomp().is_none());
    assert!(linux.masked_paths().is_none());
    assert!(cap_names(&spec).contains(&"CAP_SYS_ADMIN".to_string()));
    let rules = linux
        .resources()
        .as_ref()
        .unwrap()
        .devices()
        .as_ref()
        .unwrap();
    assert_eq!(rules.len(), 1);
    assert!(rules[0].allow());
    std::fs::remove_dir_all(&root).unwrap();
}

#[test]
fn options_map_to_the_spec() {
    let root = rootfs();
    let host = HostConfig {
        memory: Some(32 << 20),
        nano_cpus: Some(500_000_000),
        pids_limit: Some(10),
        cap_add: Some(vec!["sys_admin".into()]),
        cap_drop: Some(vec!["CAP_NET_RAW".into()]),
        security_opt: Some(vec![
            "no-new-privileges:true".into(),
            "seccomp=unconfined".into(),
        ]),
        readonly_rootfs: Some(true),
        tmpfs: Some([("/run".to_string(), "size=1m,exec".to_string())].into()),
        binds: Some(vec![format!("{}:/data:ro", root.display())]),
        network_mode: Some("host".into()),
        shm_size: Some(1 << 20),
        ..Default::default()
    };
    let mut inp = input(&root, &host);
    inp.init_binary = Some(Path::new("/usr/bin/tini-static"));
    let (spec, _) = build(&inp).unwrap();
    let caps = cap_names(&spec);
    assert!(
        caps.contains(&"CAP_SYS_ADMIN".to_string()) && !caps.contains(&"CAP_NET_RAW".to_string())
    );
    let p = spec.process().as_ref().unwrap();
    assert_eq!(p.no_new_privileges(), Some(true));
    assert_eq!(
        p.args().as_ref().unwrap()[..3],
        ["/sbin/docker-init", "--", "echo"]
    );
    let linux = spec.linux().as_ref().unwrap();
    assert!(linux.seccomp().is_none());
    let res = linux.resources().as_ref().unwrap();
    assert_eq!(res.memory().as_ref().unwrap().limit(), Some(32 << 20));
    assert_eq!(res.cpu().as_ref().unwrap().quota(), Some(50_000));
    assert_eq!(res.cpu().as_ref().unwrap().period(), Some(100_000));
    assert_eq!(res.pids().as_ref().unwrap().limit(), 10);
    assert_eq!(spec.root().as_ref().unwrap().readonly(), Some(true));
    let nss: Vec<LinuxNamespaceType> = linux
        .namespaces()
        .as_ref()
        .unwrap()
        .iter()
        .map(|n| n.typ())
        .collect();
    assert!(!nss.contains(&LinuxNamespaceType::Network));
    let mounts = spec.mounts().as_ref().unwrap();
    let find = |d: &str| {
        mounts
            .iter()
            .find(|m| m.destination() == Path::new(d))
            .unwrap()
    };
    let run = find("/run").options().clone().unwrap();
    assert!(run.contains(&"size=1m".to_string()) && !run.contains(&"noexec".to_string()));
    assert_eq!(
        find("/data").options().clone().unwrap(),
        vec!["rbind", "ro", "rprivate"]
    );
    assert_eq!(
        find(INIT_PATH).source().as_deref(),
        Some(Path::new("/usr/bin/tini-static"))
    );
    assert!(
        find("/dev/shm")
            .options()
            .clone()
            .unwrap()
            .contains(&"size=1024k".to_string())
    );
    std::fs::remove_dir_all(&root).unwrap();
}

#[test]
fn bad_input_is_refused() {
    let root = rootfs();
    for host in [
        HostConfig {
            cap_add: Some(vec!["CAP_FOO".into()]),
            ..Default::default()
        },
        HostConfig {
            security_opt: Some(vec!["bogus".into()]),
            ..Default::default()
        },
        HostConfig {
            binds: Some(vec!["relative:/x".into()]),
            ..Default::default()
        },
        HostConfig {
            binds: Some(vec!["/tmp:relative".into()]),
            ..Default::default()
        },
        HostConfig {
            memory: Some(64 << 20),
            memory_swap: Some(32 << 20),
            ..Default::default()
        },
    ] {
        assert!(build(&input(&root, &host)).is_err(), "{host:?}");
    }
    let hc = HostConfig::default();
    let mut inp = input(&root, &hc);
    inp.user = "nobody".into();
    assert!(
        build(&inp)
            .unwrap_err()
            .to_string()
            .contains("unable to find user nobody")
    );
    assert_eq!(validate_capability("chown").unwrap(), "CAP_CHOWN");
    assert_eq!(validate_capability("all").unwrap(), "ALL");
    assert_eq!(
        validate_capability("CAP_NOPE").unwrap_err().to_string(),
        "unknown capability: \"CAP_NOPE\""
    );
    std::fs::remove_dir_all(&root).unwrap();
}

#[test]
fn limits_beyond_the_host_are_clamped() {
    let mut w = Vec::new();
    assert_eq!(
        clamp_rlimit("nofile", 30000, 30000, 20000, &mut w),
        (20000, 20000)
    );
    assert!(
        w[0].contains("nofile=30000:30000") && w[0].contains("20000"),
        "{w:?}"
    );
    let mut w = Vec::new();
    assert_eq!(
        clamp_rlimit("nofile", 100, 1000, 20000, &mut w),
        (100, 1000)
    );
    assert!(w.is_empty());
    assert_eq!(oom_score_adj(Some(-500), false, 0, &mut w), Some(0));
    assert_eq!(w.len(), 1);
    assert_eq!(oom_score_adj(Some(-500), true, 0, &mut w), Some(-500));
    assert_eq!(oom_score_adj(Some(300), false, 0, &mut w), Some(300));
    assert_eq!(oom_score_adj(None, false, 0, &mut w), None);
    // Through build: on this host (no CAP_SYS_RESOURCE) a nofile above the hard limit warns.
    if !has_sys_resource() {
        let root = rootfs();
        let (_, hard) =
            nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE).unwrap();
        let want = (hard + 10000) as i64;
        let host = HostConfig {
            ulimits: Some(vec![wharf_api::models::ResourcesUlimits {
                name: Some("nofile".into()),
                soft: Some(want),
                hard: Some(want),
            }]),
            ..Default::default()
        };
        let (spec, warnings) = build(&input(&root, &host)).unwrap();
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        let r = &spec.process().as_ref().unwrap().rlimits().as_ref().unwrap()[0];
        assert_eq!((r.soft(), r.hard()), (hard, hard));
        std::fs::remove_dir_all(&root).unwrap();
    }
}

#[test]
fn capabilities_outside_the_host_bounding_set_are_not_granted() {
    let mut w = Vec::new();
    let mask = !(1u64 << CAP_SYS_RESOURCE_BIT);
    let caps = capability_set(false, &["SYS_RESOURCE".into()], &[], mask, &mut w).unwrap();
    assert!(!caps.contains(&"CAP_SYS_RESOURCE".to_string()));
    assert_eq!(w.len(), 1);
    let caps = capability_set(true, &[], &[], mask, &mut w).unwrap();
    assert_eq!(caps.len(), ALL_CAPS.len() - 1);
    let caps = capability_set(false, &[], &["ALL".into()], mask, &mut w).unwrap();
    assert!(caps.is_empty());
}

#[test]
fn exec_processes_inherit_the_container() {
    let root = rootfs();
    let host = HostConfig::default();
    let (spec, _) = build(&input(&root, &host)).unwrap();
    let p = exec_process(&ExecInput {
        base: &spec,
        rootfs: &root,
        args: vec!["id".into()],
        env: vec!["PATH=/x".into(), "A=1".into()],
        cwd: "/tmp".into(),
        user: "0:0".into(),
        tty: true,
        privileged: true,
    })
    .unwrap();
    let env = p.env().clone().unwrap();
    assert!(
        env.contains(&"PATH=/x".to_string())
            && env.contains(&"A=1".to_string())
            && env.contains(&"TERM=xterm".to_string())
    );
    assert_eq!(env.iter().filter(|e| e.starts_with("PATH=")).count(), 1);
    assert_eq!(p.cwd(), Path::new("/tmp"));
    assert_eq!(p.terminal(), Some(true));
    assert!(
        p.capabilities()
            .as_ref()
            .unwrap()
            .effective()
            .as_ref()
            .unwrap()
            .len()
            > DEFAULT_CAPS.len()
    );
    std::fs::remove_dir_all(&root).unwrap();
}
