//! Every answered request counted into the rollups where it is answered: a few
//! uncontended-lock hash lookups, no allocation unless the request opens a new group (a new
//! combination of route, status, cache result, origin, derivative, … within the hour; their
//! number is bounded by the config, never by the traffic). The writer takes the counts about
//! once a second ([`Counts::take`]) and adds them to the database in one transaction.

use crate::store::requests::{floor, GroupKey, Rollup, Sums, HOUR};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::hash::{BuildHasher, Hash, Hasher, RandomState};
use std::sync::atomic::{AtomicUsize, Ordering};

/// One answered request, as counted (borrowed from the request's context).
#[derive(Debug, Clone, Copy)]
pub struct Seen<'a> {
    /// Ms since the epoch.
    pub at: i64,
    pub route: &'static str,
    pub status: u16,
    pub cache: &'a str,
    pub tier: &'static str,
    pub origin: &'a str,
    pub derivative: &'a str,
    pub source: &'static str,
    pub mode: &'a str,
    pub bytes: u64,
    /// Time to answer, µs.
    pub us: u64,
}

impl Seen<'_> {
    fn hour(&self) -> i64 {
        floor(self.at, HOUR)
    }

    fn hash(&self, s: &RandomState) -> u64 {
        let mut h = s.build_hasher();
        (
            self.hour(),
            self.route,
            self.status,
            self.cache,
            self.tier,
            self.origin,
            self.derivative,
            self.source,
            self.mode,
        )
            .hash(&mut h);
        h.finish()
    }

    fn is(&self, k: &GroupKey) -> bool {
        k.hour == self.hour()
            && k.status == self.status
            && k.route == self.route
            && k.tier == self.tier
            && k.cache == self.cache
            && k.origin == self.origin
            && k.derivative == self.derivative
            && k.source == self.source
            && k.mode == self.mode
    }

    fn key(&self) -> GroupKey {
        GroupKey {
            hour: self.hour(),
            route: self.route,
            status: self.status,
            cache: self.cache.to_string(),
            tier: self.tier,
            origin: self.origin.to_string(),
            derivative: self.derivative.to_string(),
            source: self.source.to_string(),
            mode: self.mode.to_string(),
        }
    }

    fn sums(&self) -> Sums {
        Sums {
            n: 1,
            bytes: self.bytes as i64,
            us: self.us as i64,
        }
    }
}

#[derive(Default)]
struct Shard {
    /// Groups by the hash of their key (a collision keeps both in the bucket).
    groups: HashMap<u64, Vec<(GroupKey, Sums)>>,
    /// The latency buckets and minutes (their `hours` stay empty).
    times: Rollup,
}

/// Shards: a thread counts into its own (assigned round robin), so the request threads
/// never wait on each other; the writer takes each in turn.
const SHARDS: usize = 16;

static NEXT_SHARD: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    static SHARD: usize = NEXT_SHARD.fetch_add(1, Ordering::Relaxed) % SHARDS;
}

/// The counts not yet written.
pub struct Counts {
    hasher: RandomState,
    shards: Box<[Mutex<Shard>]>,
}

impl Default for Counts {
    fn default() -> Self {
        Counts {
            hasher: RandomState::new(),
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
        }
    }
}

impl Counts {
    /// Counts one request.
    pub fn count(&self, seen: &Seen<'_>) {
        let hash = seen.hash(&self.hasher);
        let i = SHARD.with(|i| *i);
        let mut guard = self.shards[i].lock();
        let Shard { groups, times } = &mut *guard;
        let bucket = groups.entry(hash).or_default();
        let at = match bucket.iter().position(|(k, _)| seen.is(k)) {
            Some(at) => at,
            None => {
                bucket.push((seen.key(), Sums::default()));
                bucket.len() - 1
            }
        };
        let (key, sums) = &mut bucket[at];
        sums.add(seen.sums());
        times.count_times(key, seen.at, seen.sums());
    }

    /// Takes every count so far (they are not counted again).
    pub fn take(&self) -> Rollup {
        let mut all = Rollup::default();
        for shard in self.shards.iter() {
            let Shard { groups, times } = std::mem::take(&mut *shard.lock());
            all.merge(times);
            for (key, sums) in groups.into_values().flatten() {
                all.hours.entry(key).or_default().add(sums);
            }
        }
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::requests::{RequestRow, MINUTE};

    fn seen(at: i64, cache: &'static str, status: u16, us: u64) -> Seen<'static> {
        Seen {
            at,
            route: "original",
            status,
            cache,
            tier: if cache == "HIT" { "memory" } else { "" },
            origin: "samples",
            derivative: "",
            source: "local",
            mode: "",
            bytes: 100,
            us,
        }
    }

    fn row(s: &Seen<'_>) -> RequestRow {
        RequestRow {
            at: s.at,
            route: s.route,
            method: "GET".into(),
            path: "/p".into(),
            status: s.status,
            cache: s.cache.into(),
            tier: s.tier,
            origin: s.origin.into(),
            derivative: s.derivative.into(),
            source: s.source.into(),
            mode: s.mode.into(),
            bytes: s.bytes,
            us: s.us,
            client: String::new(),
            error: String::new(),
        }
    }

    #[test]
    fn counts_from_many_threads_equal_the_rows_rollup() {
        let t = 40 * HOUR + 59 * MINUTE;
        let all: Vec<Seen<'static>> = (0..4000)
            .map(|i| {
                let (cache, status) = [("HIT", 200), ("MISS", 200), ("", 404)][i % 3];
                // Across an hour boundary and several latency buckets.
                seen(
                    t + (i as i64 % 120) * 1000,
                    cache,
                    status,
                    (i as u64 % 50) * 37,
                )
            })
            .collect();
        let counts = Counts::default();
        std::thread::scope(|s| {
            for part in all.chunks(1000) {
                let counts = &counts;
                s.spawn(move || part.iter().for_each(|x| counts.count(x)));
            }
        });
        let got = counts.take();
        let rows: Vec<RequestRow> = all.iter().map(row).collect();
        assert_eq!(got, Rollup::of(&rows));
        assert_eq!(got.requests(), 4000);
        assert_eq!(got.hours.len(), 6, "three groups in each of two hours");
        assert!(counts.take().is_empty(), "taken counts are gone");
    }
}
