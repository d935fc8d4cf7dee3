//! Docker's default seccomp profile, kept as wharf's own data: the syscalls every container
//! may make, and the rules that depend on the architecture, the capabilities and arguments.
//! Anything else fails with EPERM. A unit test checks every decision against moby's published
//! profile when `../shared/reference` is present.

use oci_spec::runtime::{
    Arch, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompArg, LinuxSeccompArgBuilder,
    LinuxSeccompBuilder, LinuxSeccompOperator, LinuxSyscall, LinuxSyscallBuilder,
};

/// Allowed for every container on every architecture (names the kernel or libseccomp does not
/// know on this architecture are skipped by the runtime).
const ALWAYS: &str = "
    _llseek _newselect accept accept4 access adjtimex alarm bind brk cachestat capget capset
    chdir chmod chown chown32 clock_adjtime clock_adjtime64 clock_getres clock_getres_time64
    clock_gettime clock_gettime64 clock_nanosleep clock_nanosleep_time64 close close_range
    connect copy_file_range creat dup dup2 dup3 epoll_create epoll_create1 epoll_ctl
    epoll_ctl_old epoll_pwait epoll_pwait2 epoll_wait epoll_wait_old eventfd eventfd2 execve
    execveat exit exit_group faccessat faccessat2 fadvise64 fadvise64_64 fallocate fanotify_mark
    fchdir fchmod fchmodat fchmodat2 fchown fchown32 fchownat fcntl fcntl64 fdatasync fgetxattr
    flistxattr flock fork fremovexattr fsetxattr fstat fstat64 fstatat64 fstatfs fstatfs64 fsync
    ftruncate ftruncate64 futex futex_requeue futex_time64 futex_wait futex_waitv futex_wake
    futimesat get_robust_list get_thread_area getcpu getcwd getdents getdents64 getegid
    getegid32 geteuid geteuid32 getgid getgid32 getgroups getgroups32 getitimer getpeername
    getpgid getpgrp getpid getppid getpriority getrandom getresgid getresgid32 getresuid
    getresuid32 getrlimit getrusage getsid getsockname getsockopt gettid gettimeofday getuid
    getuid32 getxattr getxattrat inotify_add_watch inotify_init inotify_init1 inotify_rm_watch
    io_cancel io_destroy io_getevents io_pgetevents io_pgetevents_time64 io_setup io_submit
    ioctl ioprio_get ioprio_set ipc kill landlock_add_rule landlock_create_ruleset
    landlock_restrict_self lchown lchown32 lgetxattr link linkat listen listmount listxattr
    listxattrat llistxattr lremovexattr lseek lsetxattr lstat lstat64 madvise map_shadow_stack
    membarrier memfd_create memfd_secret mincore mkdir mkdirat mknod mknodat mlock mlock2
    mlockall mmap mmap2 mprotect mq_getsetattr mq_notify mq_open mq_timedreceive
    mq_timedreceive_time64 mq_timedsend mq_timedsend_time64 mq_unlink mremap mseal msgctl msgget
    msgrcv msgsnd msync munlock munlockall munmap name_to_handle_at nanosleep newfstatat open
    openat openat2 pause pidfd_open pidfd_send_signal pipe pipe2 pkey_alloc pkey_free
    pkey_mprotect poll ppoll ppoll_time64 prctl pread64 preadv preadv2 prlimit64
    process_mrelease pselect6 pselect6_time64 pwrite64 pwritev pwritev2 read readahead readlink
    readlinkat readv recv recvfrom recvmmsg recvmmsg_time64 recvmsg remap_file_pages removexattr
    removexattrat rename renameat renameat2 restart_syscall riscv_hwprobe rmdir rseq
    rt_sigaction rt_sigpending rt_sigprocmask rt_sigqueueinfo rt_sigreturn rt_sigsuspend
    rt_sigtimedwait rt_sigtimedwait_time64 rt_tgsigqueueinfo sched_get_priority_max
    sched_get_priority_min sched_getaffinity sched_getattr sched_getparam sched_getscheduler
    sched_rr_get_interval sched_rr_get_interval_time64 sched_setaffinity sched_setattr
    sched_setparam sched_setscheduler sched_yield seccomp select semctl semget semop semtimedop
    semtimedop_time64 send sendfile sendfile64 sendmmsg sendmsg sendto set_robust_list
    set_thread_area set_tid_address setfsgid setfsgid32 setfsuid setfsuid32 setgid setgid32
    setgroups setgroups32 setitimer setpgid setpriority setregid setregid32 setresgid
    setresgid32 setresuid setresuid32 setreuid setreuid32 setrlimit setsid setsockopt setuid
    setuid32 setxattr setxattrat shmat shmctl shmdt shmget shutdown sigaltstack signalfd
    signalfd4 sigprocmask sigreturn socketcall socketpair splice stat stat64 statfs statfs64
    statmount statx symlink symlinkat sync sync_file_range syncfs sysinfo tee tgkill time
    timer_create timer_delete timer_getoverrun timer_gettime timer_gettime64 timer_settime
    timer_settime64 timerfd_create timerfd_gettime timerfd_gettime64 timerfd_settime
    timerfd_settime64 times tkill truncate truncate64 ugetrlimit umask uname unlink unlinkat
    uretprobe utime utimensat utimensat_time64 utimes vfork vmsplice wait4 waitid waitpid write
    writev
";

/// When a rule applies. All conditions of a rule must hold.
#[derive(Debug, Clone, Copy)]
enum When {
    /// The container holds this capability.
    Cap(&'static str),
    /// The container does not hold this capability.
    NoCap(&'static str),
    /// The host architecture (Go's names: amd64, arm64, ...) is one of these.
    Arch(&'static [&'static str]),
    /// The host architecture is none of these.
    NotArch(&'static [&'static str]),
    /// The running kernel is at least this version.
    Kernel(u32, u32),
}

/// An argument test: `(index, op, value)`; `MaskedEq` compares `arg & value == 0`.
#[derive(Debug, Clone, Copy)]
enum Test {
    Lt(u32, u64),
    Eq(u32, u64),
    Gt(u32, u64),
    /// `arg & mask == 0`.
    MaskClear(u32, u64),
}

struct Rule {
    names: &'static [&'static str],
    when: &'static [When],
    /// Alternatives: each test makes its own rule (any one allows the call).
    any_of: &'static [Test],
    /// `Some(errno)`: the call fails with this errno instead of being allowed.
    errno: Option<u32>,
}

/// Namespace flags a process without CAP_SYS_ADMIN may not pass to clone(2):
/// CLONE_NEWNS | CLONE_NEWCGROUP | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWUSER | CLONE_NEWPID | CLONE_NEWNET.
const CLONE_NS_FLAGS: u64 =
    0x0002_0000 | 0x0200_0000 | 0x0400_0000 | 0x0800_0000 | 0x1000_0000 | 0x2000_0000 | 0x4000_0000;
const S390: &[&str] = &["s390", "s390x"];
const ENOSYS: u32 = 38;

const RULES: &[Rule] = &[
    Rule {
        names: &["process_vm_readv", "process_vm_writev", "ptrace"],
        when: &[When::Kernel(4, 8)],
        any_of: &[],
        errno: None,
    },
    // socket(2): every address family except AF_ALG (38) and AF_VSOCK (40).
    Rule {
        names: &["socket"],
        when: &[],
        any_of: &[Test::Lt(0, 38), Test::Eq(0, 39), Test::Gt(0, 40)],
        errno: None,
    },
    // personality(2): PER_LINUX, PER_LINUX32, UNAME26, UNAME26|PER_LINUX32, and the query.
    Rule {
        names: &["personality"],
        when: &[],
        any_of: &[
            Test::Eq(0, 0),
            Test::Eq(0, 8),
            Test::Eq(0, 0x20000),
            Test::Eq(0, 0x20008),
            Test::Eq(0, 0xffff_ffff),
        ],
        errno: None,
    },
    Rule {
        names: &["swapcontext", "sync_file_range2"],
        when: &[When::Arch(&["ppc64le"])],
        any_of: &[],
        errno: None,
    },
    Rule {
        names: &[
            "arm_fadvise64_64",
            "arm_sync_file_range",
            "breakpoint",
            "cacheflush",
            "set_tls",
            "sync_file_range2",
        ],
        when: &[When::Arch(&["arm", "arm64"])],
        any_of: &[],
        errno: None,
    },
    Rule {
        names: &["arch_prctl"],
        when: &[When::Arch(&["amd64", "x32"])],
        any_of: &[],
        errno: None,
    },
    Rule {
        names: &["modify_ldt"],
        when: &[When::Arch(&["amd64", "x32", "x86"])],
        any_of: &[],
        errno: None,
    },
    Rule {
        names: &[
            "s390_pci_mmio_read",
            "s390_pci_mmio_write",
            "s390_runtime_instr",
        ],
        when: &[When::Arch(S390)],
        any_of: &[],
        errno: None,
    },
    Rule {
        names: &["riscv_flush_icache"],
        when: &[When::Arch(&["riscv64"])],
        any_of: &[],
        errno: None,
    },
    Rule {
        names: &["open_by_handle_at"],
        when: &[When::Cap("CAP_DAC_READ_SEARCH")],
        any_of: &[],
        errno: None,
    },
    Rule {
        names: &[
            "bpf",
            "clone",
            "clone3",
            "fanotify_init",
            "fsconfig",
            "fsmount",
            "fsopen",
            "fspick",
            "lookup_dcookie",
            "lsm_get_self_attr",
            "lsm_list_modules",
            "lsm_set_self_attr",
            "mount",
            "mount_setattr",
            "move_mount",
            "open_tree",
            "perf_event_open",
            "quotactl",
            "quotactl_fd",
            "setdomainname",
            "sethostname",
            "setns",
            "syslog",
            "umount",
            "umount2",
            "unshare",
        ],
        when: &[When::Cap("CAP_SYS_ADMIN")],
        any_of: &[],
        errno: None,
    },
    // Without CAP_SYS_ADMIN, clone(2) may not make namespaces (s390 swaps the first two args).
    Rule {
        names: &["clone"],
        when: &[When::NoCap("CAP_SYS_ADMIN"), When::NotArch(S390)],
        any_of: &[Test::MaskClear(0, CLONE_NS_FLAGS)],
        errno: None,
    },
    Rule {
        names: &["clone"],
        when: &[When::NoCap("CAP_SYS_ADMIN"), When::Arch(S390)],
        any_of: &[Test::MaskClear(1, CLONE_NS_FLAGS)],
        errno: None,
    },
    // clone3's flags are in memory seccomp cannot read: ENOSYS makes libc fall back to clone.
    Rule {
        names: &["clone3"],
        when: &[When::NoCap("CAP_SYS_ADMIN")],
        any_of: &[],
        errno: Some(ENOSYS),
    },
    Rule {
        names: &["reboot"],
        when: &[When::Cap("CAP_SYS_BOOT")],
        any_of: &[],
        errno: None,
    },
    Rule {
        names: &["chroot"],
        when: &[When::Cap("CAP_SYS_CHROOT")],
        any_of: &[],
        errno: None,
    },
    Rule {
        names: &["delete_module", "finit_module", "init_module"],
        when: &[When::Cap("CAP_SYS_MODULE")],
        any_of: &[],
        errno: None,
    },
    Rule {
        names: &["acct"],
        when: &[When::Cap("CAP_SYS_PACCT")],
        any_of: &[],
        errno: None,
    },
    Rule {
        names: &[
            "kcmp",
            "pidfd_getfd",
            "process_madvise",
            "process_vm_readv",
            "process_vm_writev",
            "ptrace",
        ],
        when: &[When::Cap("CAP_SYS_PTRACE")],
        any_of: &[],
        errno: None,
    },
    Rule {
        names: &["ioperm", "iopl"],
        when: &[When::Cap("CAP_SYS_RAWIO")],
        any_of: &[],
        errno: None,
    },
    Rule {
        names: &["clock_settime", "clock_settime64", "settimeofday", "stime"],
        when: &[When::Cap("CAP_SYS_TIME")],
        any_of: &[],
        errno: None,
    },
    Rule {
        names: &["vhangup"],
        when: &[When::Cap("CAP_SYS_TTY_CONFIG")],
        any_of: &[],
        errno: None,
    },
    Rule {
        names: &[
            "get_mempolicy",
            "mbind",
            "set_mempolicy",
            "set_mempolicy_home_node",
        ],
        when: &[When::Cap("CAP_SYS_NICE")],
        any_of: &[],
        errno: None,
    },
    Rule {
        names: &["syslog"],
        when: &[When::Cap("CAP_SYSLOG")],
        any_of: &[],
        errno: None,
    },
    Rule {
        names: &["bpf"],
        when: &[When::Cap("CAP_BPF")],
        any_of: &[],
        errno: None,
    },
    Rule {
        names: &["perf_event_open"],
        when: &[When::Cap("CAP_PERFMON")],
        any_of: &[],
        errno: None,
    },
];

/// The architecture wharf runs on, in Go's names (the profile's vocabulary).
pub fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "x86" => "386",
        "aarch64" => "arm64",
        "arm" => "arm",
        "s390x" => "s390x",
        "powerpc64" => "ppc64le",
        "riscv64" => "riscv64",
        "loongarch64" => "loong64",
        "mips64" => "mips64le",
        other => other,
    }
}

/// The seccomp architectures a filter covers on `arch` (the native one and its compat modes).
fn scmp_arches(arch: &str) -> Vec<Arch> {
    match arch {
        "amd64" => vec![Arch::ScmpArchX86_64, Arch::ScmpArchX86, Arch::ScmpArchX32],
        "arm64" => vec![Arch::ScmpArchAarch64, Arch::ScmpArchArm],
        "s390x" => vec![Arch::ScmpArchS390x, Arch::ScmpArchS390],
        "riscv64" => vec![Arch::ScmpArchRiscv64],
        "ppc64le" => vec![Arch::ScmpArchPpc64le],
        "loong64" => vec![Arch::ScmpArchLoongarch64],
        _ => vec![Arch::ScmpArchNative],
    }
}

/// The running kernel's (major, minor).
pub fn kernel_version() -> (u32, u32) {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mut parts = release
        .trim()
        .split(['.', '-'])
        .map(|p| p.parse::<u32>().unwrap_or(0));
    (parts.next().unwrap_or(0), parts.next().unwrap_or(0))
}

fn holds(when: &When, caps: &[String], arch: &str, kernel: (u32, u32)) -> bool {
    match *when {
        When::Cap(c) => caps.iter().any(|x| x == c),
        When::NoCap(c) => !caps.iter().any(|x| x == c),
        When::Arch(list) => list.contains(&arch),
        When::NotArch(list) => !list.contains(&arch),
        When::Kernel(maj, min) => kernel >= (maj, min),
    }
}

fn arg(test: Test) -> LinuxSeccompArg {
    let (index, op, value) = match test {
        Test::Lt(i, v) => (i, LinuxSeccompOperator::ScmpCmpLt, v),
        Test::Eq(i, v) => (i, LinuxSeccompOperator::ScmpCmpEq, v),
        Test::Gt(i, v) => (i, LinuxSeccompOperator::ScmpCmpGt, v),
        Test::MaskClear(i, v) => (i, LinuxSeccompOperator::ScmpCmpMaskedEq, v),
    };
    let mut b = LinuxSeccompArgBuilder::default()
        .index(index as usize)
        .value(value)
        .op(op);
    // MaskedEq compares `arg & value == value_two`; the profile's mask tests want zero.
    if matches!(test, Test::MaskClear(..)) {
        b = b.value_two(0u64);
    }
    // Every field the builder needs is set above.
    b.build().unwrap_or_default()
}

fn syscall(
    names: Vec<String>,
    errno: Option<u32>,
    args: Option<Vec<LinuxSeccompArg>>,
) -> LinuxSyscall {
    let action = if errno.is_some() {
        LinuxSeccompAction::ScmpActErrno
    } else {
        LinuxSeccompAction::ScmpActAllow
    };
    let mut b = LinuxSyscallBuilder::default().names(names).action(action);
    if let Some(e) = errno {
        b = b.errno_ret(e);
    }
    if let Some(a) = args {
        b = b.args(a);
    }
    // Every field the builder needs is set above.
    b.build().unwrap_or_default()
}

/// Docker's default profile for a container holding `caps` (names as `CAP_*`), on `arch`
/// with a kernel of version `kernel`.
pub fn profile_for(caps: &[String], arch: &str, kernel: (u32, u32)) -> LinuxSeccomp {
    let mut syscalls = vec![syscall(
        ALWAYS.split_whitespace().map(String::from).collect(),
        None,
        None,
    )];
    for rule in RULES {
        if !rule.when.iter().all(|w| holds(w, caps, arch, kernel)) {
            continue;
        }
        let names: Vec<String> = rule.names.iter().map(|n| n.to_string()).collect();
        if rule.any_of.is_empty() {
            syscalls.push(syscall(names, rule.errno, None));
        } else {
            for t in rule.any_of {
                syscalls.push(syscall(names.clone(), rule.errno, Some(vec![arg(*t)])));
            }
        }
    }
    let mut s = LinuxSeccompBuilder::default()
        .default_action(LinuxSeccompAction::ScmpActErrno)
        .default_errno_ret(1u32)
        .architectures(scmp_arches(arch))
        .syscalls(syscalls)
        .build()
        .unwrap_or_default();
    s.set_flags(None);
    s
}

/// Docker's default profile for this host.
pub fn default_profile(caps: &[String]) -> LinuxSeccomp {
    profile_for(caps, host_arch(), kernel_version())
}

/// libcontainer 0.7 reads a masked-equal test as `arg & value_two == value`, the other way
/// round from runc and the OCI spec (`arg & value == value_two`). The spec wharf writes is
/// consumed only by libcontainer, so the two fields are swapped for it here.
pub fn for_libcontainer(mut profile: LinuxSeccomp) -> LinuxSeccomp {
    let swap = |a: &LinuxSeccompArg| -> LinuxSeccompArg {
        if a.op() != LinuxSeccompOperator::ScmpCmpMaskedEq {
            return *a;
        }
        LinuxSeccompArgBuilder::default()
            .index(a.index())
            .value(a.value_two().unwrap_or(0))
            .value_two(a.value())
            .op(a.op())
            .build()
            .unwrap_or(*a)
    };
    let calls: Option<Vec<LinuxSyscall>> = profile.syscalls().as_ref().map(|calls| {
        calls
            .iter()
            .map(|c| {
                let mut c = c.clone();
                let args: Option<Vec<LinuxSeccompArg>> =
                    c.args().as_ref().map(|a| a.iter().map(swap).collect());
                c.set_args(args);
                c
            })
            .collect()
    });
    profile.set_syscalls(calls);
    profile
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    /// One decision: (syscall, errno or allow, argument tests).
    type Decision = (String, Option<u32>, String);

    fn ours(caps: &[String], arch: &str) -> BTreeSet<Decision> {
        let p = profile_for(caps, arch, (6, 18));
        let mut out = BTreeSet::new();
        for s in p.syscalls().clone().unwrap_or_default() {
            let errno = (s.action() == LinuxSeccompAction::ScmpActErrno)
                .then(|| s.errno_ret().unwrap_or(1));
            let args = s
                .args()
                .clone()
                .unwrap_or_default()
                .iter()
                .map(|a| {
                    format!(
                        "{}:{:?}:{}:{}",
                        a.index(),
                        a.op(),
                        a.value(),
                        a.value_two().unwrap_or(0)
                    )
                })
                .collect::<Vec<_>>()
                .join(",");
            for n in s.names() {
                out.insert((n.clone(), errno, args.clone()));
            }
        }
        out
    }

    fn op_name(op: &str) -> &'static str {
        match op {
            "SCMP_CMP_LT" => "ScmpCmpLt",
            "SCMP_CMP_EQ" => "ScmpCmpEq",
            "SCMP_CMP_GT" => "ScmpCmpGt",
            "SCMP_CMP_MASKED_EQ" => "ScmpCmpMaskedEq",
            "SCMP_CMP_NE" => "ScmpCmpNe",
            "SCMP_CMP_LE" => "ScmpCmpLe",
            "SCMP_CMP_GE" => "ScmpCmpGe",
            _ => "unknown",
        }
    }

    /// moby's own evaluation of its profile for a container with `caps` on `arch`.
    fn reference(profile: &serde_json::Value, caps: &[String], arch: &str) -> BTreeSet<Decision> {
        let strs = |v: &serde_json::Value| -> Vec<String> {
            v.as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|x| x.as_str().map(String::from))
                        .collect()
                })
                .unwrap_or_default()
        };
        let mut out = BTreeSet::new();
        for s in profile["syscalls"].as_array().unwrap() {
            let inc = &s["includes"];
            let exc = &s["excludes"];
            if !strs(&inc["caps"]).iter().all(|c| caps.contains(c)) {
                continue;
            }
            let arches = strs(&inc["arches"]);
            if !arches.is_empty() && !arches.iter().any(|a| a == arch) {
                continue;
            }
            if let Some(k) = inc["minKernel"].as_str() {
                let mut it = k.split('.').map(|p| p.parse::<u32>().unwrap());
                if (6, 18) < (it.next().unwrap(), it.next().unwrap()) {
                    continue;
                }
            }
            if strs(&exc["caps"]).iter().any(|c| caps.contains(c))
                || strs(&exc["arches"]).iter().any(|a| a == arch)
            {
                continue;
            }
            let errno = (s["action"] == "SCMP_ACT_ERRNO")
                .then(|| s["errnoRet"].as_u64().unwrap_or(1) as u32);
            let args: Vec<String> = s["args"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .iter()
                .map(|a| {
                    format!(
                        "{}:{}:{}:{}",
                        a["index"],
                        op_name(a["op"].as_str().unwrap()),
                        a["value"],
                        a["valueTwo"].as_u64().unwrap_or(0)
                    )
                })
                .collect();
            // A rule with several tests on one argument is, for libseccomp, several rules.
            let alternatives = if args.is_empty() {
                vec![String::new()]
            } else {
                args
            };
            for n in strs(&s["names"]) {
                for a in &alternatives {
                    out.insert((n.clone(), errno, a.clone()));
                }
            }
        }
        out
    }

    #[test]
    fn decisions_match_mobys_profile() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../../shared/reference/docker-seccomp-default.json");
        let Ok(text) = std::fs::read_to_string(&path) else {
            eprintln!(
                "skipped: {} is not present (it ships beside the repository, not in it)",
                path.display()
            );
            return;
        };
        let profile: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(profile["defaultAction"], "SCMP_ACT_ERRNO");
        assert_eq!(profile["defaultErrnoRet"], 1);
        let default: Vec<String> = crate::container::spec::default_capabilities()
            .iter()
            .map(|c| c.to_string())
            .collect();
        let mut with_admin = default.clone();
        with_admin.push("CAP_SYS_ADMIN".into());
        let all: Vec<String> = profile["syscalls"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|s| {
                s["includes"]["caps"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
            })
            .filter_map(|c| c.as_str().map(String::from))
            .chain(default.iter().cloned())
            .collect();
        for arch in ["amd64", "arm64", "s390x", "ppc64le", "riscv64", "x86"] {
            for caps in [&default, &with_admin, &all, &Vec::new()] {
                let (a, b) = (ours(caps, arch), reference(&profile, caps, arch));
                let missing: Vec<_> = b.difference(&a).collect();
                let extra: Vec<_> = a.difference(&b).collect();
                assert!(
                    missing.is_empty() && extra.is_empty(),
                    "{arch} {caps:?}: missing {missing:?} extra {extra:?}"
                );
            }
        }
    }

    #[test]
    fn libcontainer_gets_masks_in_value_two() {
        let p = for_libcontainer(profile_for(&[], "amd64", (6, 18)));
        let clone = p
            .syscalls()
            .clone()
            .unwrap()
            .into_iter()
            .find(|s| s.names() == &vec!["clone".to_string()])
            .unwrap();
        let a = &clone.args().clone().unwrap()[0];
        assert_eq!((a.value(), a.value_two()), (0, Some(CLONE_NS_FLAGS)));
        assert_eq!(CLONE_NS_FLAGS, 2114060288);
    }
}
