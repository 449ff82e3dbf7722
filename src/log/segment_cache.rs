//! Which segments of a partition this process keeps mapped.
//!
//! A handle that works through a long log must not keep every segment it has
//! passed mapped: each one is `segment_bytes` of address space, and every
//! page it touched stays in the process's resident set until it is unmapped.
//! So the cache owns only the [`SEGMENTS_KEPT_MAPPED`] most recently used
//! segments. Everything else that uses a segment owns an `Arc` of it: the
//! producer's tail, a reader's cursor, a span whose frames are lent out as
//! messages, a prefault request. A segment is unmapped when the last of these
//! lets go, so a borrowed slice never outlives its mapping.
//!
//! **Invariant:** a segment is mapped at most once per partition handle at a
//! time: a segment still in use anywhere is found again through a weak
//! reference instead of being mapped a second time. One asked for after it
//! was unmapped is mapped again from its file by the caller.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Weak};

use crate::log::segment::Segment;

/// Segments the cache keeps mapped though nothing else uses them: the newest
/// (usually the tail) and the one before it, so a reader going back and forth
/// across a segment boundary does not map the same file again and again.
pub(crate) const SEGMENTS_KEPT_MAPPED: usize = 2;

/// The segments of one partition that this process has mapped.
#[derive(Default)]
pub(crate) struct SegmentCache {
    /// Every segment mapped and not yet unmapped, by base offset.
    mapped: BTreeMap<u64, Weak<Segment>>,
    /// The most recently used, oldest first; at most `SEGMENTS_KEPT_MAPPED`.
    recent: VecDeque<Arc<Segment>>,
}

impl SegmentCache {
    /// The segment starting at `base`, if it is still mapped; it becomes the
    /// most recently used.
    pub(crate) fn get(&mut self, base: u64) -> Option<Arc<Segment>> {
        let segment = self.mapped.get(&base)?.upgrade()?;
        self.touch(&segment);
        Some(segment)
    }

    /// Adds a segment the caller has just mapped, as the most recently used.
    /// If another thread mapped the same segment meanwhile, returns that one
    /// (and `segment` is unmapped when the caller drops it).
    pub(crate) fn insert(&mut self, segment: Arc<Segment>) -> Arc<Segment> {
        if let Some(existing) = self.get(segment.base_offset) {
            return existing;
        }
        // Entries whose segment was unmapped since; without this the map
        // would grow by one entry per segment ever used.
        self.mapped.retain(|_, weak| weak.strong_count() > 0);
        self.mapped.insert(segment.base_offset, Arc::downgrade(&segment));
        self.touch(&segment);
        segment
    }

    /// Forgets the segment starting at `base` (retention removed its file);
    /// users that still hold it keep their mapping.
    pub(crate) fn remove(&mut self, base: u64) {
        self.mapped.remove(&base);
        self.recent.retain(|s| s.base_offset != base);
    }

    fn touch(&mut self, segment: &Arc<Segment>) {
        self.recent.retain(|s| !Arc::ptr_eq(s, segment));
        self.recent.push_back(segment.clone());
        if self.recent.len() > SEGMENTS_KEPT_MAPPED {
            // Unmapped here unless something else still uses it.
            self.recent.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEGMENT_BYTES: u64 = 64 << 10;

    /// Segments mapped by this partition handle now.
    fn mapped_now(cache: &SegmentCache) -> usize {
        cache.mapped.values().filter(|w| w.strong_count() > 0).count()
    }

    fn segments(dir: &std::path::Path, n: u64) -> Vec<Arc<Segment>> {
        (0..n)
            .map(|i| {
                Arc::new(
                    Segment::create(dir, 0, i * 100, SEGMENT_BYTES, i * 100, 4096, crate::log::salt::Salt::UNSALTED)
                        .unwrap(),
                )
            })
            .collect()
    }

    #[test]
    fn segment_cache_keeps_only_the_recent_segments_that_nothing_else_holds() {
        let dir = tempfile::tempdir().unwrap();
        let mut cache = SegmentCache::default();
        for s in segments(dir.path(), 10) {
            cache.insert(s);
        }
        assert_eq!(mapped_now(&cache), SEGMENTS_KEPT_MAPPED);
        assert!(cache.get(0).is_none(), "the oldest was unmapped");
        assert!(cache.get(900).is_some() && cache.get(800).is_some());
        assert!(cache.mapped.len() <= SEGMENTS_KEPT_MAPPED + 1, "dead entries are pruned: {}", cache.mapped.len());
    }

    #[test]
    fn segment_cache_finds_a_held_segment_instead_of_mapping_it_twice() {
        let dir = tempfile::tempdir().unwrap();
        let mut cache = SegmentCache::default();
        let all = segments(dir.path(), 5);
        let held = cache.insert(all[0].clone());
        for s in &all[1..] {
            cache.insert(s.clone());
        }
        drop(all);
        assert_eq!(mapped_now(&cache), SEGMENTS_KEPT_MAPPED + 1, "the recent ones and the held one");
        assert!(Arc::ptr_eq(&cache.get(0).expect("still mapped"), &held));
        let again = Arc::new(Segment::open(dir.path(), 0, 0, SEGMENT_BYTES).unwrap());
        assert!(Arc::ptr_eq(&cache.insert(again), &held), "a racing mapping yields to the existing one");
        drop(held);
        cache.remove(0);
        assert!(cache.get(0).is_none());
    }
}
