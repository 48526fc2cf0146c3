//! A transform worker locks itself down once, before it reads its first request: it dies
//! with the node, closes every inherited descriptor but its pipes, caps its address space
//! and core dumps, drops root for `nobody`, sets `no_new_privs`, denies itself every
//! file, socket and signal outside itself by Landlock (where the kernel has it), and
//! installs a seccomp filter that allows only what decoding and encoding need: memory,
//! threads, time, reading and writing descriptors it already holds. Everything else fails
//! with `EPERM` (`clone3` with `ENOSYS`, so the C library falls back to `clone`, which is
//! allowed only for threads). Owns the confinement; nothing here decodes or talks.

use super::wire::Confinement;

/// The user a worker runs as when the node runs as root.
const NOBODY: u32 = 65534;

/// Locks the calling process down (call it before any thread is started: the seccomp filter
/// and Landlock apply to this thread and the threads it starts later). `parent` is the
/// node's pid: a worker whose node is already gone exits at once.
pub fn lock_down(parent: u32, address_space: u64) -> Confinement {
    let mut c = Confinement::default();
    // SAFETY: plain syscalls on this process with constant or checked arguments.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0);
        if libc::getppid() as u32 != parent {
            libc::_exit(0);
        }
        // Every descriptor but stdin, stdout and stderr.
        libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32);
        let limit = |res, v: u64| {
            let l = libc::rlimit {
                rlim_cur: v as libc::rlim_t,
                rlim_max: v as libc::rlim_t,
            };
            libc::setrlimit(res, &l) == 0
        };
        if address_space > 0 && limit(libc::RLIMIT_AS, address_space) {
            c.address_space = address_space;
        }
        limit(libc::RLIMIT_CORE, 0);
        if libc::geteuid() == 0 {
            libc::setgroups(0, std::ptr::null());
            libc::setresgid(NOBODY, NOBODY, NOBODY);
            libc::setresuid(NOBODY, NOBODY, NOBODY);
        }
        c.uid = libc::geteuid();
        c.no_new_privs = libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0;
    }
    c.landlock = landlock().to_string();
    // After Landlock, whose ruleset is a descriptor: from here no new descriptor at all.
    let nofile = libc::rlimit {
        rlim_cur: 3,
        rlim_max: 3,
    };
    // SAFETY: setrlimit with a valid struct.
    unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &nofile) };
    c.seccomp = seccomp().is_ok();
    c
}

/// Denies every file access right, TCP bind and connect, abstract unix sockets and signals
/// outside the worker (no rule grants anything back). Best effort: what this kernel knows.
fn landlock() -> &'static str {
    use landlock::{Access, AccessFs, AccessNet, Ruleset, RulesetAttr, RulesetStatus, Scope, ABI};
    let abi = ABI::V6;
    let status = Ruleset::default()
        .handle_access(AccessFs::from_all(abi))
        .and_then(|r| r.handle_access(AccessNet::from_all(abi)))
        .and_then(|r| r.scope(Scope::from_all(abi)))
        .and_then(|r| r.create())
        .and_then(|r| r.restrict_self());
    match status.map(|s| s.ruleset) {
        Ok(RulesetStatus::FullyEnforced) => "full",
        Ok(RulesetStatus::PartiallyEnforced) => "partial",
        Ok(RulesetStatus::NotEnforced) => "unsupported",
        Err(_) => "failed",
    }
}

/// The syscalls a worker may make, unconditionally.
fn allowed() -> Vec<i64> {
    let mut v = vec![
        libc::SYS_read,
        libc::SYS_write,
        libc::SYS_readv,
        libc::SYS_writev,
        libc::SYS_close,
        libc::SYS_fstat,
        libc::SYS_newfstatat,
        libc::SYS_lseek,
        libc::SYS_mmap,
        libc::SYS_munmap,
        libc::SYS_mremap,
        libc::SYS_mprotect,
        libc::SYS_madvise,
        libc::SYS_brk,
        libc::SYS_futex,
        libc::SYS_sched_yield,
        libc::SYS_sched_getaffinity,
        libc::SYS_set_robust_list,
        libc::SYS_get_robust_list,
        libc::SYS_rseq,
        libc::SYS_rt_sigprocmask,
        libc::SYS_rt_sigaction,
        libc::SYS_rt_sigreturn,
        libc::SYS_sigaltstack,
        libc::SYS_exit,
        libc::SYS_exit_group,
        libc::SYS_getpid,
        libc::SYS_gettid,
        libc::SYS_getuid,
        libc::SYS_geteuid,
        libc::SYS_getgid,
        libc::SYS_getegid,
        libc::SYS_clock_gettime,
        libc::SYS_clock_getres,
        libc::SYS_clock_nanosleep,
        libc::SYS_nanosleep,
        libc::SYS_gettimeofday,
        libc::SYS_getrandom,
        libc::SYS_getrusage,
        libc::SYS_membarrier,
    ];
    #[cfg(target_arch = "x86_64")]
    v.extend([libc::SYS_arch_prctl, libc::SYS_time]);
    v
}

/// Installs the filter (this thread and every thread it starts from now on).
fn seccomp() -> Result<(), seccompiler::Error> {
    use seccompiler::{
        SeccompAction, SeccompCmpArgLen as Len, SeccompCmpOp as Op, SeccompCondition as Cond,
        SeccompFilter, SeccompRule, TargetArch,
    };
    use std::collections::BTreeMap;
    let arch: TargetArch = std::env::consts::ARCH
        .try_into()
        .map_err(seccompiler::Error::Backend)?;
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> =
        allowed().into_iter().map(|s| (s, vec![])).collect();
    // Threads, never processes.
    let thread = libc::CLONE_THREAD as u64;
    rules.insert(
        libc::SYS_clone,
        vec![SeccompRule::new(vec![Cond::new(
            0,
            Len::Qword,
            Op::MaskedEq(thread),
            thread,
        )?])?],
    );
    // Naming a thread; no other prctl.
    rules.insert(
        libc::SYS_prctl,
        vec![
            SeccompRule::new(vec![Cond::new(
                0,
                Len::Dword,
                Op::Eq,
                libc::PR_SET_NAME as u64,
            )?])?,
            SeccompRule::new(vec![Cond::new(
                0,
                Len::Dword,
                Op::Eq,
                libc::PR_GET_NAME as u64,
            )?])?,
        ],
    );
    // Signals to its own threads only (abort raises SIGABRT with tgkill).
    let own = std::process::id() as u64;
    rules.insert(
        libc::SYS_tgkill,
        vec![SeccompRule::new(vec![Cond::new(
            0,
            Len::Dword,
            Op::Eq,
            own,
        )?])?],
    );
    // `clone3` (whose flags a filter cannot read) answers ENOSYS, so the C library falls
    // back to `clone`. This filter goes in first: the allow-list, installed after it, lets
    // `clone3` through, and the stricter of the two answers wins. (The allow-list has to come
    // last: it forbids installing filters.)
    rules.insert(libc::SYS_clone3, vec![]);
    let no_clone3 = SeccompFilter::new(
        BTreeMap::from([(libc::SYS_clone3, vec![])]),
        SeccompAction::Allow,
        SeccompAction::Errno(libc::ENOSYS as u32),
        arch,
    )?;
    let program: seccompiler::BpfProgram = no_clone3.try_into()?;
    seccompiler::apply_filter(&program)?;
    let allow = SeccompFilter::new(
        rules,
        SeccompAction::Errno(libc::EPERM as u32),
        SeccompAction::Allow,
        arch,
    )?;
    let program: seccompiler::BpfProgram = allow.try_into()?;
    seccompiler::apply_filter(&program)
}

/// What the worker gets when it tries what it must not do (the self-test): `refused:
/// <error>` or `ALLOWED`.
pub fn try_forbidden(path: &str) -> (String, String, String) {
    fn verdict(ok: bool) -> String {
        if ok {
            "ALLOWED".into()
        } else {
            format!("refused: {}", std::io::Error::last_os_error())
        }
    }
    // SAFETY: plain syscalls; every descriptor or child they might give is closed or
    // ended at once.
    unsafe {
        let s = libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0);
        let socket = verdict(s >= 0);
        if s >= 0 {
            libc::close(s);
        }
        let open = match std::ffi::CString::new(path) {
            Ok(p) => {
                let fd = libc::open(p.as_ptr(), libc::O_RDONLY);
                let v = verdict(fd >= 0);
                if fd >= 0 {
                    libc::close(fd);
                }
                v
            }
            Err(_) => "refused: the path holds a NUL".into(),
        };
        let pid = libc::fork();
        if pid == 0 {
            libc::_exit(0);
        }
        let fork = verdict(pid > 0);
        if pid > 0 {
            libc::waitpid(pid, std::ptr::null_mut(), 0);
        }
        (socket, open, fork)
    }
}
