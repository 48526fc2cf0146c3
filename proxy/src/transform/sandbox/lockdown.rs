//! A transform worker locks itself down once, before it reads its first request: it dies
//! with the node, closes every inherited descriptor but its pipes, caps its address space
//! and core dumps, drops root for `nobody`, sets `no_new_privs`, denies itself every
//! file, socket and signal outside itself by Landlock (where the kernel has it), and
//! installs a seccomp filter that allows only what decoding and encoding need: memory,
//! threads, time, reading and writing descriptors it already holds. Everything else fails
//! with `EPERM` (`clone3` with `ENOSYS`, so the C library falls back to `clone`, which is
//! allowed only for threads). A video worker ([`Role::Video`]) locks down in two steps
//! around reading its one request: it may also open, write, rename and remove files, but
//! Landlock confines that to the one directory the node handed it (its output), and it
//! reads its source from a descriptor it was given. Owns the confinement; nothing here
//! decodes or talks.

use super::wire::Confinement;

/// The user a worker runs as when the node runs as root.
const NOBODY: u32 = 65534;

/// What a worker does, which decides what it may touch.
#[derive(Clone, Copy)]
pub enum Role<'a> {
    /// Image work: bytes in, bytes out, no file at all.
    Image,
    /// One video call: files only beneath `writable` (the output directory), when given.
    Video {
        writable: Option<std::os::fd::BorrowedFd<'a>>,
    },
}

/// Locks the calling process down (call it before any thread is started: the seccomp filter
/// and Landlock apply to this thread and the threads it starts later). `parent` is the
/// node's pid: a worker whose node is already gone exits at once.
pub fn lock_down(parent: u32, address_space: u64) -> Confinement {
    let mut c = prepare(parent, address_space, 3);
    confine(&mut c, Role::Image);
    c
}

/// The first step: dies with the node, closes every descriptor from `keep` up, caps its
/// address space and core dumps, drops root, sets `no_new_privs`.
pub fn prepare(parent: u32, address_space: u64, keep: u32) -> Confinement {
    let mut c = Confinement::default();
    // SAFETY: plain syscalls on this process with constant or checked arguments.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0);
        if libc::getppid() as u32 != parent {
            libc::_exit(0);
        }
        // Every descriptor but stdin, stdout, stderr (and those handed over below `keep`).
        libc::syscall(libc::SYS_close_range, keep, u32::MAX, 0u32);
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
            // A change of credentials clears the parent-death signal: set it again, and
            // look again for a node that went away in between.
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0);
            if libc::getppid() as u32 != parent {
                libc::_exit(0);
            }
        }
        c.uid = libc::geteuid();
        // Not dumpable: nothing of the same user may ptrace it or read its memory, and it
        // may not read theirs through /proc.
        libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0);
        c.no_new_privs = libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0;
    }
    c
}

/// The second step: Landlock, the descriptor limit, seccomp.
pub fn confine(c: &mut Confinement, role: Role<'_>) {
    let (writable, files) = match role {
        Role::Image => (None, false),
        Role::Video { writable } => (writable, true),
    };
    c.landlock = landlock(writable).to_string();
    // After Landlock, whose ruleset is a descriptor: from here an image worker opens no
    // descriptor at all; a video worker opens its outputs (one or two at a time).
    let n = if files { 64 } else { 3 };
    let nofile = libc::rlimit {
        rlim_cur: n,
        rlim_max: n,
    };
    // SAFETY: setrlimit with a valid struct.
    unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &nofile) };
    c.seccomp = seccomp(files).is_ok();
}

/// Denies every file access right, TCP bind and connect, abstract unix sockets and signals
/// outside the worker; the only rule grants reading and writing files beneath `writable`.
/// Best effort: what this kernel knows.
fn landlock(writable: Option<std::os::fd::BorrowedFd<'_>>) -> &'static str {
    use landlock::{
        Access, AccessFs, AccessNet, PathBeneath, Ruleset, RulesetAttr, RulesetCreatedAttr,
        RulesetStatus, Scope, ABI,
    };
    let abi = ABI::V6;
    let output = AccessFs::ReadFile
        | AccessFs::WriteFile
        | AccessFs::ReadDir
        | AccessFs::RemoveFile
        | AccessFs::MakeReg
        | AccessFs::Truncate;
    let status = Ruleset::default()
        .handle_access(AccessFs::from_all(abi))
        .and_then(|r| r.handle_access(AccessNet::from_all(abi)))
        .and_then(|r| r.scope(Scope::from_all(abi)))
        .and_then(|r| r.create())
        .and_then(|r| match writable {
            Some(dir) => r.add_rule(PathBeneath::new(dir, output)),
            None => Ok(r),
        })
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

/// What a video worker may do besides: open, write, rename and remove its output files
/// (Landlock decides which), read its source descriptor at an offset, list its directory.
fn file_calls() -> Vec<i64> {
    let mut v = vec![
        libc::SYS_openat,
        libc::SYS_pread64,
        libc::SYS_pwrite64,
        libc::SYS_ftruncate,
        libc::SYS_fsync,
        libc::SYS_fdatasync,
        libc::SYS_fcntl,
        libc::SYS_statx,
        libc::SYS_getdents64,
        libc::SYS_unlinkat,
        libc::SYS_renameat,
        libc::SYS_renameat2,
        libc::SYS_faccessat,
        libc::SYS_faccessat2,
        libc::SYS_getcwd,
        libc::SYS_dup,
        libc::SYS_sysinfo,
        libc::SYS_uname,
        libc::SYS_sched_getparam,
        libc::SYS_sched_getscheduler,
    ];
    #[cfg(target_arch = "x86_64")]
    v.extend([
        libc::SYS_open,
        libc::SYS_stat,
        libc::SYS_lstat,
        libc::SYS_unlink,
        libc::SYS_rename,
        libc::SYS_access,
    ]);
    v
}

/// Installs the filter (this thread and every thread it starts from now on); `files` adds
/// [`file_calls`].
fn seccomp(files: bool) -> Result<(), seccompiler::Error> {
    use seccompiler::{
        SeccompAction, SeccompCmpArgLen as Len, SeccompCmpOp as Op, SeccompCondition as Cond,
        SeccompFilter, SeccompRule, TargetArch,
    };
    use std::collections::BTreeMap;
    let arch: TargetArch = std::env::consts::ARCH
        .try_into()
        .map_err(seccompiler::Error::Backend)?;
    let mut calls = allowed();
    if files {
        calls.extend(file_calls());
    }
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> =
        calls.into_iter().map(|s| (s, vec![])).collect();
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

/// What the worker gets when it creates (and then removes) the file `path`: `refused:
/// <error>` or `ALLOWED`.
pub fn try_create(path: &str) -> String {
    match std::fs::File::create(path) {
        Ok(_) => {
            let _ = std::fs::remove_file(path);
            "ALLOWED".into()
        }
        Err(e) => format!("refused: {e}"),
    }
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
