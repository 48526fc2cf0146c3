//! Whether a unix socket is listening, read from `/proc/net/unix` (`__SO_ACCEPTCON`,
//! unconnected): a probe connection would take the place of the one a listener waits for
//! (the graceful upgrade's hand-over). Std only: the e2e tests include this file as is.

use std::path::Path;

/// Whether a unix socket bound at `path` (as given to `bind`) is listening.
pub fn listening(path: &Path) -> bool {
    let Some(path) = path.to_str() else {
        return false;
    };
    let Ok(table) = std::fs::read_to_string("/proc/net/unix") else {
        return false;
    };
    // Num RefCount Protocol Flags Type St Inode Path
    table.lines().skip(1).any(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        f.len() >= 8 && f[7] == path && f[3] == "00010000" && f[5] == "01"
    })
}
