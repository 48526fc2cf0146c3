//! The purge log: `tag → purged_at`, `key → purged_at`, `prefix → purged_at`.
//!
//! Purging is O(1) in the number of cached objects: a purge only records a time; a cache hit
//! whose entry was created at or before a purge of its key, one of its tags or a prefix of its
//! path is treated as a miss. The log is appended to a file (JSON lines) and replayed at
//! start, so purges survive restarts; it is compacted on load. It never touches storage.

use parking_lot::RwLock;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

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
    fn map(&mut self, k: PurgeKind) -> &mut HashMap<String, u64> {
        match k {
            PurgeKind::Tag => &mut self.tags,
            PurgeKind::Key => &mut self.keys,
            PurgeKind::Prefix => &mut self.prefixes,
        }
    }
}

pub struct PurgeLog {
    maps: RwLock<Maps>,
    file: parking_lot::Mutex<Option<std::fs::File>>,
    path: PathBuf,
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_millis() as u64
}

impl PurgeLog {
    /// Loads (and compacts) the log at `path`, creating it if missing.
    pub fn open(path: &Path) -> std::io::Result<PurgeLog> {
        let mut maps = Maps::default();
        if let Ok(text) = std::fs::read_to_string(path) {
            for line in text.lines() {
                // A torn last line from a crash is skipped.
                if let Ok(l) = serde_json::from_str::<Line>(line) {
                    let e = maps.map(l.k).entry(l.v).or_insert(0);
                    *e = (*e).max(l.at);
                }
            }
        }
        // Compact: one line per item.
        let tmp = path.with_extension("tmp");
        {
            let mut f = std::fs::File::create(&tmp)?;
            for (k, m) in [
                (PurgeKind::Tag, &maps.tags),
                (PurgeKind::Key, &maps.keys),
                (PurgeKind::Prefix, &maps.prefixes),
            ] {
                for (v, at) in m {
                    let line = serde_json::to_string(&Line {
                        k,
                        v: v.clone(),
                        at: *at,
                    })
                    .unwrap_or_default();
                    writeln!(f, "{line}")?;
                }
            }
            f.sync_all()?;
        }
        std::fs::rename(&tmp, path)?;
        let file = std::fs::OpenOptions::new().append(true).open(path)?;
        Ok(PurgeLog {
            maps: RwLock::new(maps),
            file: parking_lot::Mutex::new(Some(file)),
            path: path.to_path_buf(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Records purges of `items` of one kind, now. Returns how many were recorded.
    pub fn record(&self, kind: PurgeKind, items: &[String]) -> std::io::Result<usize> {
        let at = unix_ms(SystemTime::now());
        let mut out = String::new();
        {
            let mut maps = self.maps.write();
            for v in items {
                maps.map(kind).insert(v.clone(), at);
                out.push_str(
                    &serde_json::to_string(&Line {
                        k: kind,
                        v: v.clone(),
                        at,
                    })
                    .unwrap_or_default(),
                );
                out.push('\n');
            }
        }
        if let Some(f) = self.file.lock().as_mut() {
            f.write_all(out.as_bytes())?;
            f.sync_data()?;
        }
        Ok(items.len())
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
            let log = PurgeLog::open(&p).unwrap();
            assert!(!log.is_purged("orig:/a", "/a", Some("t1,t2"), old));
            log.record(PurgeKind::Tag, &["t2".into()]).unwrap();
            log.record(PurgeKind::Prefix, &["/img/".into()]).unwrap();
            log.record(PurgeKind::Key, &["orig:/k".into()]).unwrap();
        }
        let log = PurgeLog::open(&p).unwrap();
        assert!(log.is_purged("orig:/a", "/a", Some("t1, t2"), old));
        assert!(!log.is_purged("orig:/a", "/a", Some("t1,t2"), new));
        assert!(log.is_purged("orig:/img/x.jpg", "/img/x.jpg", None, old));
        assert!(!log.is_purged("orig:/imgx.jpg", "/imgx.jpg", None, old));
        assert!(log.is_purged("orig:/k", "/k", None, old));
        assert!(!log.is_purged("orig:/j", "/j", Some("t1"), old));
        assert_eq!(log.counts(), (1, 1, 1));
    }

    #[test]
    fn many_prefixes_use_the_indexed_path() {
        let dir = tempfile::tempdir().unwrap();
        let log = PurgeLog::open(&dir.path().join("p.log")).unwrap();
        let items: Vec<String> = (0..100).map(|i| format!("/p{i}/")).collect();
        log.record(PurgeKind::Prefix, &items).unwrap();
        let old = SystemTime::now() - Duration::from_secs(5);
        assert!(log.is_purged("k", "/p42/a.jpg", None, old));
        assert!(!log.is_purged("k", "/q42/a.jpg", None, old));
    }
}
