//! Half-open UTC intervals `[start, end)` and the set operations on sorted,
//! merged lists of them. Adjacent intervals merge: `[a, b) ∪ [b, c) = [a, c)`.

use chrono::{DateTime, Utc};
use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Interval {
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
}

impl Interval {
    pub fn new(start: DateTime<Utc>, end: DateTime<Utc>) -> Self {
        Interval { start, end }
    }

    pub fn is_empty(&self) -> bool {
        self.start >= self.end
    }

    pub fn contains(&self, t: DateTime<Utc>) -> bool {
        self.start <= t && t < self.end
    }

    pub fn overlaps(&self, other: &Interval) -> bool {
        self.start < other.end && other.start < self.end
    }
}

/// Sort, drop empty intervals and merge overlapping or adjacent ones.
pub fn normalize(mut v: Vec<Interval>) -> Vec<Interval> {
    v.retain(|i| !i.is_empty());
    v.sort_unstable();
    let mut out: Vec<Interval> = Vec::with_capacity(v.len());
    for i in v {
        match out.last_mut() {
            Some(last) if i.start <= last.end => {
                if i.end > last.end {
                    last.end = i.end;
                }
            }
            _ => out.push(i),
        }
    }
    out
}

/// `a − b` for normalized lists.
pub fn subtract(a: &[Interval], b: &[Interval]) -> Vec<Interval> {
    let mut out = Vec::with_capacity(a.len());
    let mut j = 0;
    for &x in a {
        let mut cur = x;
        // Skip cuts that end before this interval starts.
        while j < b.len() && b[j].end <= cur.start {
            j += 1;
        }
        let mut k = j;
        while k < b.len() && b[k].start < cur.end {
            let cut = b[k];
            if cut.start > cur.start {
                out.push(Interval::new(cur.start, cut.start));
            }
            if cut.end >= cur.end {
                cur.start = cur.end;
                break;
            }
            cur.start = cur.start.max(cut.end);
            k += 1;
        }
        if !cur.is_empty() {
            out.push(cur);
        }
    }
    out
}

/// `a ∩ b` for normalized lists.
pub fn intersect(a: &[Interval], b: &[Interval]) -> Vec<Interval> {
    let (mut i, mut j) = (0, 0);
    let mut out = Vec::new();
    while i < a.len() && j < b.len() {
        let s = a[i].start.max(b[j].start);
        let e = a[i].end.min(b[j].end);
        if s < e {
            out.push(Interval::new(s, e));
        }
        if a[i].end < b[j].end {
            i += 1;
        } else {
            j += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn iv(a: i64, b: i64) -> Interval {
        Interval::new(
            Utc.timestamp_opt(a, 0).unwrap(),
            Utc.timestamp_opt(b, 0).unwrap(),
        )
    }

    #[test]
    fn normalize_merges_adjacent_and_overlapping() {
        let v = normalize(vec![iv(5, 7), iv(0, 2), iv(2, 3), iv(6, 9), iv(4, 4)]);
        assert_eq!(v, vec![iv(0, 3), iv(5, 9)]);
    }

    #[test]
    fn subtract_cuts_holes_and_edges() {
        let a = vec![iv(0, 10), iv(20, 30)];
        let b = vec![iv(-5, 1), iv(3, 4), iv(9, 21), iv(25, 26)];
        assert_eq!(
            subtract(&a, &b),
            vec![iv(1, 3), iv(4, 9), iv(21, 25), iv(26, 30)]
        );
        assert_eq!(subtract(&a, &[]), a);
        assert!(subtract(&a, &[iv(-100, 100)]).is_empty());
    }

    #[test]
    fn intersect_keeps_common_parts() {
        let a = vec![iv(0, 10), iv(20, 30)];
        let b = vec![iv(5, 25)];
        assert_eq!(intersect(&a, &b), vec![iv(5, 10), iv(20, 25)]);
    }

    proptest::proptest! {
        #[test]
        fn subtract_is_disjoint_from_cut(
            a in proptest::collection::vec((0i64..1000, 0i64..100), 0..20),
            b in proptest::collection::vec((0i64..1000, 0i64..100), 0..20),
        ) {
            let a = normalize(a.into_iter().map(|(s, l)| iv(s, s + l)).collect());
            let b = normalize(b.into_iter().map(|(s, l)| iv(s, s + l)).collect());
            let d = subtract(&a, &b);
            for x in &d {
                proptest::prop_assert!(!x.is_empty());
                for y in &b { proptest::prop_assert!(!x.overlaps(y)); }
                proptest::prop_assert!(a.iter().any(|y| y.start <= x.start && x.end <= y.end));
            }
            // Nothing of a is lost except what b covers.
            let total = |v: &[Interval]| v.iter().map(|i| (i.end - i.start).num_seconds()).sum::<i64>();
            proptest::prop_assert_eq!(total(&d) + total(&intersect(&a, &b)), total(&a));
        }
    }
}
