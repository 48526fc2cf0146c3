//! The purge log: `tag → purged_at`, `key → purged_at`, `prefix → purged_at`.
//!
//! Purging is O(1) in the number of cached objects: a purge only records a time; a cache hit
//! whose entry was created at or before a purge of its key, one of its tags or a prefix of its
//! path is treated as a miss. The log is appended to a file (JSON lines) and replayed at
//! start, so purges survive restarts; a plain start compacts it. It never touches storage.
//!
//! During a graceful upgrade two processes share the data dir and both record purges.
//! Appends and a compaction hold an `flock` on the file, an append that finds the file
//! replaced goes to the new one, and each process reads what the others appended at most
//! once a second (from the hit path), so no purge accepted by either process is lost. A
//! process started with `--upgrade` does not compact (see [`PurgeLog::open`]).

use parking_lot::RwLock;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PurgeKind {
    Tag,
    Key,
    Prefix,
}

#[derive(Serialize, Deserialize)]
struct Line {
    k: PurgeKind,
    v: String,
    /// Unix milliseconds.
    at: u64,
}

#[derive(Default)]
struct Maps {
    tags: HashMap<String, u64>,
    keys: HashMap<String, u64>,
    prefixes: HashMap<String, u64>,
}

impl Maps {
    /// Drops purges recorded before `cutoff` (unix ms): no entry they could hide is servable
    /// any more (see [`PurgeLog::set_retention`]). Returns how many went.
    fn prune(&mut self, cutoff: u64) -> usize {
        let before = self.tags.len() + self.keys.len() + self.prefixes.len();
        for m in [&mut self.tags, &mut self.keys, &mut self.prefixes] {
            m.retain(|_, at| *at >= cutoff);
        }
        before - (self.tags.len() + self.keys.len() + self.prefixes.len())
    }

    fn map(&mut self, k: PurgeKind) -> &mut HashMap<String, u64> {
        match k {
            PurgeKind::Tag => &mut self.tags,
            PurgeKind::Key => &mut self.keys,
            PurgeKind::Prefix => &mut self.prefixes,
        }
    }

    /// Records a purge of `v` at `at`, keeping the later time if it was purged before.
    fn note(&mut self, k: PurgeKind, v: String, at: u64) {
        let e = self.map(k).entry(v).or_insert(0);
        *e = (*e).max(at);
    }
}

/// Appends one log line to `out`.
fn push_line(out: &mut String, k: PurgeKind, v: &str, at: u64) {
    let line = Line {
        k,
        v: v.to_string(),
        at,
    };
    out.push_str(&serde_json::to_string(&line).unwrap_or_default());
    out.push('\n');
}

/// What [`PurgeLog::record_all`] did.
#[derive(Debug)]
pub struct Recorded {
    /// Items purged (in effect now).
    pub count: usize,
    /// On disk now (else kept for a retry).
    pub persisted: bool,
    /// Why the log was not written.
    pub error: Option<std::io::Error>,
}

pub struct PurgeLog {
    maps: RwLock<Maps>,
    /// Purges older than this are forgotten (0: kept for ever); milliseconds.
    retention_ms: AtomicU64,
    /// Milliseconds since `opened` of the next prune.
    next_prune: AtomicU64,
    /// Lines not yet written (the log could not be written): written first next time.
    pending: parking_lot::Mutex<String>,
    file: parking_lot::Mutex<LogFile>,
    path: PathBuf,
    /// Milliseconds since `opened` after which the file is next read for others' purges.
    next_refresh: AtomicU64,
    opened: Instant,
}

/// The open log: appended to by every process sharing the data dir (an old and a new one
/// during a graceful upgrade), read from `offset` on for the lines the others append.
struct LogFile {
    file: std::fs::File,
    /// Bytes of the file already merged into the maps.
    offset: u64,
    /// A last line still being written.
    partial: Vec<u8>,
}

/// How often the log is read for purges recorded by another process.
const REFRESH_MS: u64 = 1000;

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_millis() as u64
}

/// An exclusive `flock` on `f`, released when the guard drops. Appends and compactions take
/// it, so a compaction never drops a line another process is appending. On a filesystem
/// without `flock` the log works unlocked, as a single process needs.
struct Flock<'a>(Option<&'a std::fs::File>);

impl<'a> Flock<'a> {
    fn lock(f: &'a std::fs::File) -> std::io::Result<Flock<'a>> {
        loop {
            // SAFETY: flock on an open descriptor.
            if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) } == 0 {
                return Ok(Flock(Some(f)));
            }
            let e = std::io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::EINTR) => continue,
                Some(libc::ENOLCK | libc::EOPNOTSUPP | libc::ENOSYS) => return Ok(Flock(None)),
                _ => return Err(e),
            }
        }
    }
}

impl Drop for Flock<'_> {
    fn drop(&mut self) {
        if let Some(f) = self.0 {
            // SAFETY: unlocks what `lock` locked.
            unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_UN) };
        }
    }
}

/// Merges `src` into `dst`, keeping the later time of each item.
fn merge_maps(dst: &mut Maps, src: Maps) {
    for (k, m) in [
        (PurgeKind::Tag, src.tags),
        (PurgeKind::Key, src.keys),
        (PurgeKind::Prefix, src.prefixes),
    ] {
        for (v, at) in m {
            dst.note(k, v, at);
        }
    }
}

fn open_append(path: &Path) -> std::io::Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .open(path)
}

/// Whether `f` is still the file at `path` (a compaction replaces it).
fn is_current(f: &std::fs::File, path: &Path) -> bool {
    match (f.metadata(), std::fs::metadata(path)) {
        (Ok(a), Ok(b)) => a.ino() == b.ino() && a.dev() == b.dev(),
        _ => false,
    }
}

/// Merges the complete lines of `bytes` (after `partial`, what an earlier read left over);
/// keeps an unfinished last line in `partial`.
fn merge(maps: &mut Maps, partial: &mut Vec<u8>, bytes: &[u8]) {
    partial.extend_from_slice(bytes);
    let Some(end) = partial.iter().rposition(|&b| b == b'\n') else {
        return;
    };
    for line in partial[..end].split(|&b| b == b'\n') {
        // A torn line from a crash is skipped.
        if let Ok(l) = serde_json::from_slice::<Line>(line) {
            maps.note(l.k, l.v, l.at);
        }
    }
    partial.drain(..=end);
}

impl PurgeLog {
    /// Loads the log at `path`, creating it if missing, and compacts it unless `compact` is
    /// false. A process started for a graceful upgrade does not compact: the process it
    /// replaces may be an older build that appends without the lock, to the file it opened.
    pub fn open(path: &Path, compact: bool) -> std::io::Result<PurgeLog> {
        let mut maps = Maps::default();
        // The file is locked while it is read and replaced: a process appending to it waits,
        // then finds it replaced and appends to the new one.
        let current = loop {
            let f = open_append(path)?;
            let lock = Flock::lock(&f)?;
            if !is_current(&f, path) {
                continue; // replaced by another process's compaction meanwhile
            }
            let mut text = Vec::new();
            (&f).read_to_end(&mut text)?;
            let mut partial = Vec::new();
            merge(&mut maps, &mut partial, &text);
            if !compact {
                drop(lock);
                break LogFile {
                    offset: text.len() as u64,
                    file: f,
                    partial,
                };
            }
            merge(&mut maps, &mut partial, b"\n");
            // Compact: one line per item.
            let mut out = String::new();
            for (k, m) in [
                (PurgeKind::Tag, &maps.tags),
                (PurgeKind::Key, &maps.keys),
                (PurgeKind::Prefix, &maps.prefixes),
            ] {
                for (v, at) in m {
                    push_line(&mut out, k, v, *at);
                }
            }
            let tmp = path.with_extension("tmp");
            // Kept open as the log: its contents are exactly `out`, whatever replaces the
            // path later.
            let t = open_append(&tmp)?;
            t.set_len(0)?;
            (&t).write_all(out.as_bytes())?;
            t.sync_all()?;
            std::fs::rename(&tmp, path)?;
            drop(lock);
            break LogFile {
                file: t,
                offset: out.len() as u64,
                partial: Vec::new(),
            };
        };
        Ok(PurgeLog {
            maps: RwLock::new(maps),
            retention_ms: AtomicU64::new(0),
            next_prune: AtomicU64::new(0),
            pending: Default::default(),
            file: parking_lot::Mutex::new(current),
            path: path.to_path_buf(),
            next_refresh: AtomicU64::new(REFRESH_MS),
            opened: Instant::now(),
        })
    }

    /// Purges older than `retention` are forgotten (checked once a minute): an entry can be
    /// served at most `cache.max_ttl` fresh plus as long again stale (each window is capped
    /// by the cache policy), so a purge older than that can hide nothing still servable and
    /// the maps stay bounded by time.
    pub fn set_retention(&self, retention: Duration) {
        self.retention_ms
            .store(retention.as_millis() as u64, Ordering::Relaxed);
        self.next_prune.store(0, Ordering::Relaxed);
    }

    /// Forgets purges past the retention, at most once a minute; how many went.
    fn prune(&self) -> usize {
        let now = self.opened.elapsed().as_millis() as u64;
        let retention = self.retention_ms.load(Ordering::Relaxed);
        if retention == 0 || now < self.next_prune.load(Ordering::Relaxed) {
            return 0;
        }
        self.next_prune.store(now + 60_000, Ordering::Relaxed);
        let cutoff = unix_ms(SystemTime::now()).saturating_sub(retention);
        self.maps.write().prune(cutoff)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads what other processes appended since the last read (all of a file that replaced
    /// ours). Called with the file's lock held.
    fn catch_up(&self, log: &mut LogFile) -> std::io::Result<()> {
        if !is_current(&log.file, &self.path) {
            *log = LogFile {
                file: open_append(&self.path)?,
                offset: 0,
                partial: Vec::new(),
            };
        }
        let len = log.file.metadata()?.len();
        if len <= log.offset {
            return Ok(());
        }
        let mut bytes = vec![0u8; (len - log.offset) as usize];
        log.file.read_exact_at(&mut bytes, log.offset)?;
        log.offset = len;
        // Parsed aside (a replaced file is read whole): hits only wait for the merge.
        let mut read = Maps::default();
        merge(&mut read, &mut log.partial, &bytes);
        merge_maps(&mut self.maps.write(), read);
        Ok(())
    }

    /// At most once every [`REFRESH_MS`]: merges purges other processes recorded.
    fn refresh(&self) {
        let now = self.opened.elapsed().as_millis() as u64;
        if now < self.next_refresh.load(Ordering::Relaxed) {
            return;
        }
        // One caller reads; the others go on with what is known.
        let Some(mut log) = self.file.try_lock() else {
            return;
        };
        self.next_refresh.store(now + REFRESH_MS, Ordering::Relaxed);
        let pruned = self.prune();
        if pruned > 0 {
            tracing::info!(pruned, "purge records past the retention forgotten");
        }
        if let Err(e) = self.catch_up(&mut log) {
            tracing::warn!(error = %e, "reading the purge log");
        }
        self.flush_pending(&mut log);
    }

    /// Records purges of `items` of one kind, now: see [`Self::record_all`]. The error is
    /// the one that kept the log from being written (the purge holds in memory anyway).
    pub fn record(&self, kind: PurgeKind, items: &[String]) -> std::io::Result<usize> {
        let r = self.record_all(&[(kind, items)]);
        match r.error {
            Some(e) => Err(e),
            None => Ok(r.count),
        }
    }

    /// Records purges of several kinds at one instant. They take effect at once in this
    /// process; the log lines are appended (and synced) for restarts and other processes.
    /// When the log cannot be written (a full disk), the lines are kept and written with the
    /// next purge or the next once-a-second refresh: nothing is lost, and `persisted` says
    /// whether it is on disk yet. Blocking (file lock and sync): call off the reactor.
    pub fn record_all(&self, batch: &[(PurgeKind, &[String])]) -> Recorded {
        let at = unix_ms(SystemTime::now());
        let mut out = String::new();
        let mut count = 0;
        {
            let mut maps = self.maps.write();
            for (kind, items) in batch {
                for v in items.iter() {
                    push_line(&mut out, *kind, v, at);
                    maps.note(*kind, v.clone(), at);
                    count += 1;
                }
            }
        }
        if count == 0 {
            return Recorded {
                count,
                persisted: true,
                error: None,
            };
        }
        let mut pending = self.pending.lock();
        pending.push_str(&out);
        let mut log = self.file.lock();
        match self.append(&mut log, &pending) {
            Ok(()) => {
                pending.clear();
                Recorded {
                    count,
                    persisted: true,
                    error: None,
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, pending = pending.len(), "purge log not written yet: kept for a retry");
                Recorded {
                    count,
                    persisted: false,
                    error: Some(e),
                }
            }
        }
    }

    /// Appends `out` (whole lines) to the log under its `flock`.
    fn append(&self, log: &mut LogFile, out: &str) -> std::io::Result<()> {
        loop {
            let lock = Flock::lock(&log.file)?;
            if is_current(&log.file, &self.path) {
                // Ours are read back with the next lines others append (merging is
                // idempotent). After a torn last line (a crash mid-append), a new line first,
                // so this purge is not glued to it.
                let len = log.file.metadata()?.len();
                let mut last = [b'\n'];
                if len > 0 {
                    log.file.read_exact_at(&mut last, len - 1)?;
                }
                if last[0] != b'\n' {
                    (&log.file).write_all(b"\n")?;
                }
                (&log.file).write_all(out.as_bytes())?;
                log.file.sync_data()?;
                drop(lock);
                return Ok(());
            }
            drop(lock);
            self.catch_up(log)?;
        }
    }

    /// Writes purges that could not be written before, if any.
    fn flush_pending(&self, log: &mut LogFile) {
        let Some(mut pending) = self.pending.try_lock() else {
            return;
        };
        if pending.is_empty() {
            return;
        }
        if self.append(log, &pending).is_ok() {
            tracing::info!(bytes = pending.len(), "purge log written after a failure");
            pending.clear();
        }
    }

    /// Whether an entry created at `created` is purged by its key, one of its tags
    /// (comma-separated `Cache-Tag` value) or a prefix of its path.
    pub fn is_purged(
        &self,
        key: &str,
        path: &str,
        tags: Option<&str>,
        created: SystemTime,
    ) -> bool {
        self.refresh();
        let maps = self.maps.read();
        if maps.tags.is_empty() && maps.keys.is_empty() && maps.prefixes.is_empty() {
            return false;
        }
        // An entry from the purge's own millisecond counts as purged (at worst it is fetched again).
        let created = unix_ms(created);
        let hit = |at: Option<&u64>| at.is_some_and(|at| created <= *at);
        if hit(maps.keys.get(key)) {
            return true;
        }
        if let Some(tags) = tags {
            if !maps.tags.is_empty() && tags.split(',').any(|t| hit(maps.tags.get(t.trim()))) {
                return true;
            }
        }
        if !maps.prefixes.is_empty() {
            if maps.prefixes.len() <= 32 {
                return maps
                    .prefixes
                    .iter()
                    .any(|(p, at)| path.starts_with(p.as_str()) && created <= *at);
            }
            return path
                .char_indices()
                .map(|(i, c)| &path[..i + c.len_utf8()])
                .any(|p| hit(maps.prefixes.get(p)));
        }
        false
    }

    /// Counts for the admin API.
    pub fn counts(&self) -> (usize, usize, usize) {
        let m = self.maps.read();
        (m.tags.len(), m.keys.len(), m.prefixes.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn purges_apply_to_older_entries_and_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("purge.log");
        let old = SystemTime::now() - Duration::from_secs(10);
        let new = SystemTime::now() + Duration::from_secs(10);
        {
            let log = PurgeLog::open(&p, true).unwrap();
            assert!(!log.is_purged("orig:/a", "/a", Some("t1,t2"), old));
            log.record(PurgeKind::Tag, &["t2".into()]).unwrap();
            log.record(PurgeKind::Prefix, &["/img/".into()]).unwrap();
            log.record(PurgeKind::Key, &["orig:/k".into()]).unwrap();
        }
        let log = PurgeLog::open(&p, true).unwrap();
        assert!(log.is_purged("orig:/a", "/a", Some("t1, t2"), old));
        assert!(!log.is_purged("orig:/a", "/a", Some("t1,t2"), new));
        assert!(log.is_purged("orig:/img/x.jpg", "/img/x.jpg", None, old));
        assert!(!log.is_purged("orig:/imgx.jpg", "/imgx.jpg", None, old));
        assert!(log.is_purged("orig:/k", "/k", None, old));
        assert!(!log.is_purged("orig:/j", "/j", Some("t1"), old));
        assert_eq!(log.counts(), (1, 1, 1));
    }

    /// Two processes on one data dir (a graceful upgrade): the new one compacts the log the
    /// old one appends to; each sees the other's purges within a refresh.
    #[test]
    fn processes_sharing_the_log_see_each_others_purges() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("purge.log");
        let old = SystemTime::now() - Duration::from_secs(10);
        let a = PurgeLog::open(&p, true).unwrap();
        a.record(PurgeKind::Tag, &["before".into()]).unwrap();
        let b = PurgeLog::open(&p, true).unwrap(); // compacts: `a`'s file is replaced
        assert!(b.is_purged("k", "/x", Some("before"), old));
        a.record(PurgeKind::Tag, &["from-a".into()]).unwrap();
        a.record(PurgeKind::Key, &["ka".into()]).unwrap();
        b.record(PurgeKind::Prefix, &["/from-b/".into()]).unwrap();
        // Not before the refresh interval: the hit path reads the file at most once a second.
        b.next_refresh.store(u64::MAX, Ordering::Relaxed);
        assert!(!b.is_purged("k", "/x", Some("from-a"), old));
        for log in [&a, &b] {
            log.next_refresh.store(0, Ordering::Relaxed);
        }
        assert!(b.is_purged("k", "/x", Some("from-a"), old));
        assert!(b.is_purged("ka", "/x", None, old));
        assert!(a.is_purged("k", "/from-b/y", None, old));
        assert!(a.is_purged("k", "/x", Some("before"), old));
        // Nothing was lost on disk either.
        let c = PurgeLog::open(&p, true).unwrap();
        assert_eq!(c.counts(), (2, 1, 1));
        // A line still being written is merged once it is complete.
        let mut f = std::fs::OpenOptions::new().append(true).open(&p).unwrap();
        f.write_all(br#"{"k":"tag","v":"late","at":"#).unwrap();
        c.next_refresh.store(0, Ordering::Relaxed);
        assert!(!c.is_purged("k", "/x", Some("late"), old));
        f.write_all(format!("{}}}\n", unix_ms(SystemTime::now())).as_bytes())
            .unwrap();
        c.next_refresh.store(0, Ordering::Relaxed);
        assert!(c.is_purged("k", "/x", Some("late"), old));
    }

    /// A process started for an upgrade leaves the file in place: the process it replaces
    /// (possibly an older build, appending without the lock to the file it opened) is read.
    /// A purge recorded after a torn line is not lost to it.
    #[test]
    fn upgrade_start_keeps_the_file_and_torn_lines_lose_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("purge.log");
        let old = SystemTime::now() - Duration::from_secs(10);
        let mut older_build = open_append(&p).unwrap();
        let line = |v: &str| {
            format!(
                "{{\"k\":\"tag\",\"v\":\"{v}\",\"at\":{}}}\n",
                unix_ms(SystemTime::now())
            )
        };
        older_build.write_all(line("t1").as_bytes()).unwrap();
        let new = PurgeLog::open(&p, false).unwrap();
        assert!(new.is_purged("k", "/x", Some("t1"), old));
        older_build.write_all(line("t2").as_bytes()).unwrap();
        new.next_refresh.store(0, Ordering::Relaxed);
        assert!(
            new.is_purged("k", "/x", Some("t2"), old),
            "read from the same file"
        );
        // A crash mid-append leaves a torn line; the next purge starts a line of its own.
        older_build
            .write_all(b"{\"k\":\"tag\",\"v\":\"torn")
            .unwrap();
        new.record(PurgeKind::Tag, &["t3".into()]).unwrap();
        let again = PurgeLog::open(&p, true).unwrap();
        assert!(again.is_purged("k", "/x", Some("t3"), old));
        assert!(!again.is_purged("k", "/x", Some("torn"), old));
        assert_eq!(again.counts(), (3, 0, 0));
    }

    #[test]
    fn many_prefixes_use_the_indexed_path() {
        let dir = tempfile::tempdir().unwrap();
        let log = PurgeLog::open(&dir.path().join("p.log"), true).unwrap();
        let items: Vec<String> = (0..100).map(|i| format!("/p{i}/")).collect();
        log.record(PurgeKind::Prefix, &items).unwrap();
        let old = SystemTime::now() - Duration::from_secs(5);
        assert!(log.is_purged("k", "/p42/a.jpg", None, old));
        assert!(!log.is_purged("k", "/q42/a.jpg", None, old));
    }

    #[test]
    fn a_full_disk_keeps_purges_in_effect_and_writes_them_when_space_returns() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("purge.log");
        let log = PurgeLog::open(&path, true).unwrap();
        let before = SystemTime::now() - Duration::from_secs(5);
        assert!(
            log.record_all(&[(PurgeKind::Tag, &["before".into()])])
                .persisted
        );
        // The disk fills up: every write fails with ENOSPC.
        let aside = dir.path().join("purge.log.aside");
        std::fs::rename(&path, &aside).unwrap();
        std::os::unix::fs::symlink("/dev/full", &path).unwrap();
        let r = log.record_all(&[(PurgeKind::Tag, &["full".into()])]);
        assert!(!r.persisted);
        assert_eq!(r.error.unwrap().raw_os_error(), Some(libc::ENOSPC));
        assert!(
            log.is_purged("k", "/p", Some("full"), before),
            "in effect at once"
        );
        // Space returns: the next purge writes the one kept, then its own.
        std::fs::remove_file(&path).unwrap();
        std::fs::rename(&aside, &path).unwrap();
        assert!(
            log.record_all(&[(PurgeKind::Key, &["after".into()])])
                .persisted
        );
        let reopened = PurgeLog::open(&path, false).unwrap();
        assert!(reopened.is_purged("k", "/p", Some("before"), before));
        assert!(
            reopened.is_purged("k", "/p", Some("full"), before),
            "written later"
        );
        assert!(reopened.is_purged("after", "/p", None, before));
    }

    #[test]
    fn purges_past_the_retention_are_forgotten() {
        let dir = tempfile::tempdir().unwrap();
        let log = PurgeLog::open(&dir.path().join("p.log"), true).unwrap();
        let long_ago = SystemTime::now() - Duration::from_secs(3600);
        {
            // One purge recorded two hours ago, one now.
            let mut maps = log.maps.write();
            maps.note(
                PurgeKind::Tag,
                "old".into(),
                unix_ms(long_ago - Duration::from_secs(3600)),
            );
        }
        log.record(PurgeKind::Tag, &["new".into()]).unwrap();
        assert_eq!(log.counts().0, 2);
        log.set_retention(Duration::from_secs(1800));
        assert_eq!(log.prune(), 1);
        assert_eq!(log.counts().0, 1);
        assert!(log.is_purged("k", "/p", Some("new"), long_ago));
        assert!(!log.is_purged("k", "/p", Some("old"), long_ago - Duration::from_secs(7200)));
        // At most once a minute.
        assert_eq!(log.prune(), 0);
    }
}
