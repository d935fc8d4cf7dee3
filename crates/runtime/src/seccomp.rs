//! Seccomp filters compiled once, loaded many times.
//!
//! Compiling Docker's profile with libseccomp costs tens of milliseconds (three architectures,
//! hundreds of rules), which libcontainer would pay inside every container's init. Instead the
//! engine compiles each distinct profile once ([`compile`]) into a BPF program file, and the
//! bundle names that file in its annotations ([`ANNOTATION_BPF`], [`ANNOTATION_FLAGS`]) with
//! `linux.seccomp` left out. The runtime reads the program before it clones and loads it in the
//! container's init (and in every exec) just before the workload runs, where libcontainer
//! would have loaded its own.
//!
//! Loading a filter without `no_new_privs` needs CAP_SYS_ADMIN, which containers normally do
//! not hold by then. A bundle with a precompiled filter therefore carries CAP_SYS_ADMIN in its
//! effective and permitted sets only (never in the bounding, inheritable or ambient sets). Right
//! after loading, the runtime drops it from every set unless the bounding set holds it, reads
//! the sets back and fails the start if it is still there. Even a filter that fakes success
//! for capset(2) cannot leave it to the workload: execve(2) recomputes the permitted set from
//! the bounding, inheritable and ambient sets, none of which holds it.

use std::collections::HashSet;
use std::io::{Read, Seek};
use std::path::{Path, PathBuf};

use libseccomp::{ScmpAction, ScmpArch, ScmpArgCompare, ScmpCompareOp, ScmpFilterContext};
use oci_spec::runtime::{
    Arch, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompFilterFlag, LinuxSeccompOperator, Spec,
};

/// The annotation naming the compiled program (an array of `struct sock_filter`).
pub const ANNOTATION_BPF: &str = "org.wharf.seccomp.bpf";
/// The annotation holding the `seccomp(2)` filter flags, in decimal.
pub const ANNOTATION_FLAGS: &str = "org.wharf.seccomp.flags";

const FLAG_TSYNC: u32 = 1;
const FLAG_LOG: u32 = 2;
const FLAG_SPEC_ALLOW: u32 = 4;

#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    #[error("seccomp profile: {0}")]
    Profile(String),
    #[error("compiling the seccomp profile")]
    Compile(#[source] libseccomp::error::SeccompError),
    #[error("seccomp program {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("seccomp program {0} is not a whole number of instructions")]
    Malformed(PathBuf),
}

/// A compiled filter, ready to load.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Program {
    /// `struct sock_filter` records, 8 bytes each, in host byte order.
    pub code: Vec<u8>,
    pub flags: u32,
}

/// The `seccomp(2)` flags the profile asks for. Notify actions are refused by [`compile`], so
/// the listener flags never apply.
pub fn flags(profile: &LinuxSeccomp) -> u32 {
    let mut out = 0;
    for f in profile.flags().iter().flatten() {
        out |= match f {
            LinuxSeccompFilterFlag::SeccompFilterFlagTsync => FLAG_TSYNC,
            LinuxSeccompFilterFlag::SeccompFilterFlagLog => FLAG_LOG,
            LinuxSeccompFilterFlag::SeccompFilterFlagSpecAllow => FLAG_SPEC_ALLOW,
            LinuxSeccompFilterFlag::SeccompFilterFlagWaitKillableRecv => 0,
        };
    }
    out
}

fn arch(a: Arch) -> ScmpArch {
    match a {
        Arch::ScmpArchNative => ScmpArch::Native,
        Arch::ScmpArchX86 => ScmpArch::X86,
        Arch::ScmpArchX86_64 => ScmpArch::X8664,
        Arch::ScmpArchX32 => ScmpArch::X32,
        Arch::ScmpArchArm => ScmpArch::Arm,
        Arch::ScmpArchAarch64 => ScmpArch::Aarch64,
        Arch::ScmpArchMips => ScmpArch::Mips,
        Arch::ScmpArchMips64 => ScmpArch::Mips64,
        Arch::ScmpArchMips64n32 => ScmpArch::Mips64N32,
        Arch::ScmpArchMipsel => ScmpArch::Mipsel,
        Arch::ScmpArchMipsel64 => ScmpArch::Mipsel64,
        Arch::ScmpArchMipsel64n32 => ScmpArch::Mipsel64N32,
        Arch::ScmpArchPpc => ScmpArch::Ppc,
        Arch::ScmpArchPpc64 => ScmpArch::Ppc64,
        Arch::ScmpArchPpc64le => ScmpArch::Ppc64Le,
        Arch::ScmpArchS390 => ScmpArch::S390,
        Arch::ScmpArchS390x => ScmpArch::S390X,
        Arch::ScmpArchRiscv64 => ScmpArch::Riscv64,
        Arch::ScmpArchParisc => ScmpArch::Parisc,
        Arch::ScmpArchParisc64 => ScmpArch::Parisc64,
        Arch::ScmpArchLoongarch64 => ScmpArch::Loongarch64,
        Arch::ScmpArchM68k => ScmpArch::M68k,
        Arch::ScmpArchSh => ScmpArch::Sh,
        Arch::ScmpArchSheb => ScmpArch::Sheb,
    }
}

fn action(a: LinuxSeccompAction, errno: Option<u32>) -> Result<ScmpAction, SeccompError> {
    let errno = errno.map(|e| e as i32).unwrap_or(libc::EPERM);
    Ok(match a {
        LinuxSeccompAction::ScmpActKill | LinuxSeccompAction::ScmpActKillThread => {
            ScmpAction::KillThread
        }
        LinuxSeccompAction::ScmpActKillProcess => ScmpAction::KillProcess,
        LinuxSeccompAction::ScmpActTrap => ScmpAction::Trap,
        LinuxSeccompAction::ScmpActErrno => ScmpAction::Errno(errno),
        LinuxSeccompAction::ScmpActTrace => ScmpAction::Trace(
            u16::try_from(errno)
                .map_err(|_| SeccompError::Profile(format!("trace value {errno} out of range")))?,
        ),
        LinuxSeccompAction::ScmpActAllow => ScmpAction::Allow,
        LinuxSeccompAction::ScmpActLog => ScmpAction::Log,
        LinuxSeccompAction::ScmpActNotify => {
            return Err(SeccompError::Profile(
                "notify actions cannot be precompiled".into(),
            ));
        }
    })
}

/// The comparison of one argument. `SCMP_CMP_MASKED_EQ` reads as the OCI spec and runc do:
/// `(arg & value) == valueTwo`.
fn compare(index: u32, op: LinuxSeccompOperator, value: u64, value_two: u64) -> ScmpArgCompare {
    let op = match op {
        LinuxSeccompOperator::ScmpCmpNe => ScmpCompareOp::NotEqual,
        LinuxSeccompOperator::ScmpCmpLt => ScmpCompareOp::Less,
        LinuxSeccompOperator::ScmpCmpLe => ScmpCompareOp::LessOrEqual,
        LinuxSeccompOperator::ScmpCmpEq => ScmpCompareOp::Equal,
        LinuxSeccompOperator::ScmpCmpGe => ScmpCompareOp::GreaterEqual,
        LinuxSeccompOperator::ScmpCmpGt => ScmpCompareOp::Greater,
        LinuxSeccompOperator::ScmpCmpMaskedEq => {
            return ScmpArgCompare::new(index, ScmpCompareOp::MaskedEqual(value), value_two);
        }
    };
    ScmpArgCompare::new(index, op, value)
}

/// Compiles `profile` (OCI semantics) to a BPF program. Syscall names this libseccomp does not
/// know are skipped, as runtimes do; rules whose action is the default one are redundant.
pub fn compile(profile: &LinuxSeccomp) -> Result<Program, SeccompError> {
    let default = action(profile.default_action(), profile.default_errno_ret())?;
    let mut ctx = ScmpFilterContext::new(default).map_err(SeccompError::Compile)?;
    for a in profile.architectures().iter().flatten() {
        ctx.add_arch(arch(*a)).map_err(SeccompError::Compile)?;
    }
    // The container decides about no_new_privs; loading the filter must not set it.
    ctx.set_ctl_nnp(false).map_err(SeccompError::Compile)?;
    for rule in profile.syscalls().iter().flatten() {
        let act = action(rule.action(), rule.errno_ret())?;
        if act == default {
            continue;
        }
        let args = rule.args().clone().unwrap_or_default();
        let comparisons: Vec<ScmpArgCompare> = args
            .iter()
            .map(|a| {
                compare(
                    a.index() as u32,
                    a.op(),
                    a.value(),
                    a.value_two().unwrap_or(0),
                )
            })
            .collect();
        // libseccomp compares each argument at most once per rule; a rule testing one
        // argument twice becomes one rule per test (runc does the same).
        let mut seen = HashSet::new();
        let split = !args.iter().all(|a| seen.insert(a.index()));
        for name in rule.names() {
            let Ok(nr) = libseccomp::ScmpSyscall::from_name(name) else {
                continue;
            };
            if comparisons.is_empty() {
                ctx.add_rule(act, nr).map_err(SeccompError::Compile)?;
            } else if split {
                for c in &comparisons {
                    ctx.add_rule_conditional(act, nr, std::slice::from_ref(c))
                        .map_err(SeccompError::Compile)?;
                }
            } else {
                ctx.add_rule_conditional(act, nr, &comparisons)
                    .map_err(SeccompError::Compile)?;
            }
        }
    }
    let mut file = memfd().map_err(|source| SeccompError::Io {
        path: "memfd".into(),
        source,
    })?;
    ctx.export_bpf(&file).map_err(SeccompError::Compile)?;
    let mut code = Vec::new();
    file.rewind()
        .and_then(|_| file.read_to_end(&mut code))
        .map_err(|source| SeccompError::Io {
            path: "memfd".into(),
            source,
        })?;
    Ok(Program {
        code,
        flags: flags(profile),
    })
}

fn memfd() -> std::io::Result<std::fs::File> {
    let fd = nix::sys::memfd::memfd_create(
        c"wharf-seccomp",
        nix::sys::memfd::MemFdCreateFlag::MFD_CLOEXEC,
    )?;
    Ok(std::fs::File::from(fd))
}

/// Reads a compiled program from `path`.
pub fn read(path: &Path, flags: u32) -> Result<Program, SeccompError> {
    let code = std::fs::read(path).map_err(|source| SeccompError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    if code.is_empty() || code.len() % 8 != 0 {
        return Err(SeccompError::Malformed(path.to_path_buf()));
    }
    Ok(Program { code, flags })
}

/// The precompiled program a spec names in its annotations, if it names one.
pub fn from_spec(spec: &Spec) -> Result<Option<Program>, SeccompError> {
    let Some(annotations) = spec.annotations() else {
        return Ok(None);
    };
    let Some(path) = annotations.get(ANNOTATION_BPF) else {
        return Ok(None);
    };
    let flags = match annotations.get(ANNOTATION_FLAGS) {
        Some(f) => f
            .parse()
            .map_err(|_| SeccompError::Profile(format!("bad {ANNOTATION_FLAGS} {f:?}")))?,
        None => 0,
    };
    read(Path::new(path), flags).map(Some)
}

/// Loads `program` into the calling thread, then drops CAP_SYS_ADMIN from every set unless the
/// bounding set holds it (see the module documentation), and checks that it is gone: a process
/// that could keep it fails here instead of running the workload.
pub(crate) fn install(program: &Program) -> std::io::Result<()> {
    use caps::{CapSet, Capability};
    crate::sys::seccomp_set_filter(&program.code, program.flags)?;
    let admin = Capability::CAP_SYS_ADMIN;
    if caps::has_cap(None, CapSet::Bounding, admin).map_err(std::io::Error::other)? {
        return Ok(());
    }
    // Ambient first: it must stay a subset of permitted and inheritable.
    let sets = [
        CapSet::Ambient,
        CapSet::Inheritable,
        CapSet::Effective,
        CapSet::Permitted,
    ];
    for set in sets {
        if caps::has_cap(None, set, admin).map_err(std::io::Error::other)? {
            caps::drop(None, set, admin).map_err(std::io::Error::other)?;
        }
    }
    for set in sets {
        if caps::has_cap(None, set, admin).map_err(std::io::Error::other)? {
            return Err(std::io::Error::other(format!(
                "CAP_SYS_ADMIN still in the {set:?} set after loading the filter"
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::{LinuxSeccompArgBuilder, LinuxSeccompBuilder, LinuxSyscallBuilder};

    fn profile() -> LinuxSeccomp {
        let rules = vec![
            LinuxSyscallBuilder::default()
                .names(vec!["read".into(), "write".into(), "no_such_call".into()])
                .action(LinuxSeccompAction::ScmpActAllow)
                .build()
                .unwrap(),
            LinuxSyscallBuilder::default()
                .names(vec!["clone".into()])
                .action(LinuxSeccompAction::ScmpActAllow)
                .args(vec![
                    LinuxSeccompArgBuilder::default()
                        .index(0usize)
                        .value(0x7e020000u64)
                        .value_two(0u64)
                        .op(LinuxSeccompOperator::ScmpCmpMaskedEq)
                        .build()
                        .unwrap(),
                ])
                .build()
                .unwrap(),
            // Two tests of one argument: split into two rules.
            LinuxSyscallBuilder::default()
                .names(vec!["personality".into()])
                .action(LinuxSeccompAction::ScmpActAllow)
                .args(vec![
                    LinuxSeccompArgBuilder::default()
                        .index(0usize)
                        .value(0u64)
                        .op(LinuxSeccompOperator::ScmpCmpEq)
                        .build()
                        .unwrap(),
                    LinuxSeccompArgBuilder::default()
                        .index(0usize)
                        .value(8u64)
                        .op(LinuxSeccompOperator::ScmpCmpEq)
                        .build()
                        .unwrap(),
                ])
                .build()
                .unwrap(),
        ];
        LinuxSeccompBuilder::default()
            .default_action(LinuxSeccompAction::ScmpActErrno)
            .architectures(vec![Arch::ScmpArchX86_64, Arch::ScmpArchX86])
            .syscalls(rules)
            .build()
            .unwrap()
    }

    #[test]
    fn compiles_to_whole_instructions_and_reads_back() {
        let p = compile(&profile()).unwrap();
        assert!(!p.code.is_empty());
        assert_eq!(p.code.len() % 8, 0);
        assert_eq!(p.flags, 0);
        let dir = tempfile_dir();
        let path = dir.join("p.bpf");
        std::fs::write(&path, &p.code).unwrap();
        assert_eq!(read(&path, 0).unwrap(), p);
        std::fs::write(&path, b"123").unwrap();
        assert!(matches!(read(&path, 0), Err(SeccompError::Malformed(_))));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn notify_is_refused() {
        let mut p = profile();
        p.set_default_action(LinuxSeccompAction::ScmpActNotify);
        assert!(matches!(compile(&p), Err(SeccompError::Profile(_))));
    }

    #[test]
    fn annotations_name_the_program() {
        let dir = tempfile_dir();
        let path = dir.join("p.bpf");
        std::fs::write(&path, [0u8; 16]).unwrap();
        let mut spec = Spec::default();
        assert_eq!(from_spec(&spec).unwrap(), None);
        spec.set_annotations(Some(
            [
                (ANNOTATION_BPF.to_string(), path.display().to_string()),
                (ANNOTATION_FLAGS.to_string(), "2".to_string()),
            ]
            .into_iter()
            .collect(),
        ));
        let p = from_spec(&spec).unwrap().unwrap();
        assert_eq!((p.code.len(), p.flags), (16, 2));
        std::fs::remove_file(&path).unwrap();
        // A named program that is missing fails rather than running unfiltered.
        assert!(from_spec(&spec).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    fn tempfile_dir() -> PathBuf {
        let d = std::env::temp_dir().join(format!(
            "wharf-seccomp-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        std::fs::create_dir_all(&d).unwrap();
        d
    }
}
