//! The bound on a plugin's record lists (crash reports, dead letters), kept
//! by running totals: a backend knows how many records each list it has
//! touched holds and their bytes, and drops a list's oldest records while it
//! is over `keep` or `keep_bytes`, the newest always kept. A list is read in
//! full once, the first time it is touched after the backend opens, not at
//! every record it takes (that scan was a tenth of a crash's time in the
//! restart benchmark). The memory and redb backends use it; PostgreSQL,
//! where other nodes write the same lists, trims in one statement.

use anyhow::Result;
use std::collections::HashMap;

/// How many records one list holds, and their bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct ListSize {
    pub(crate) count: usize,
    pub(crate) bytes: u64,
}

impl ListSize {
    /// A record of `len` bytes joined the list.
    pub(crate) fn add(&mut self, len: usize) {
        self.count += 1;
        self.bytes = self.bytes.saturating_add(len as u64);
    }

    /// A record of `len` bytes left the list.
    pub(crate) fn remove(&mut self, len: usize) {
        self.count = self.count.saturating_sub(1);
        self.bytes = self.bytes.saturating_sub(len as u64);
    }

    /// Whether the list holds more than its newest record and is over
    /// either bound: its oldest record goes.
    pub(crate) fn over(&self, keep: usize, keep_bytes: u64) -> bool {
        self.count > 1 && (self.count > keep || self.bytes > keep_bytes)
    }
}

/// The sizes of the lists a backend has touched, by plugin and kind.
#[derive(Debug, Default)]
pub(crate) struct ListSizes(HashMap<String, HashMap<u8, ListSize>>);

impl ListSizes {
    /// The size of `plugin`'s list of `kind`, from `scan` (the list read in
    /// full) the first time it is asked for.
    pub(crate) fn get(
        &mut self,
        plugin: &str,
        kind: u8,
        scan: impl FnOnce() -> Result<ListSize>,
    ) -> Result<&mut ListSize> {
        if !self.0.get(plugin).is_some_and(|k| k.contains_key(&kind)) {
            let size = scan()?;
            self.0
                .entry(plugin.to_string())
                .or_default()
                .insert(kind, size);
        }
        Ok(self
            .0
            .get_mut(plugin)
            .and_then(|k| k.get_mut(&kind))
            .expect("inserted above"))
    }

    /// A record of `len` bytes left `plugin`'s list of `kind`, if that
    /// list's size is known (else it is read when next needed).
    pub(crate) fn removed(&mut self, plugin: &str, kind: u8, len: usize) {
        if let Some(size) = self.0.get_mut(plugin).and_then(|k| k.get_mut(&kind)) {
            size.remove(len);
        }
    }

    /// Forgets every size: after a write transaction that did not commit,
    /// each list is read again when next needed.
    pub(crate) fn clear(&mut self) {
        self.0.clear();
    }
}

/// The size of a list from its records' body lengths.
pub(crate) fn size_of(lens: impl IntoIterator<Item = usize>) -> ListSize {
    let mut size = ListSize::default();
    for len in lens {
        size.add(len);
    }
    size
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Dropping the oldest while over the bounds keeps the newest records
    /// that fit both bounds, and always the newest one.
    #[test]
    fn the_oldest_go_while_over_either_bound() {
        let trim = |lens: &[usize], keep: usize, keep_bytes: u64| {
            let mut list: Vec<usize> = lens.to_vec();
            let mut size = size_of(list.iter().copied());
            while size.over(keep, keep_bytes) {
                size.remove(list.remove(0));
            }
            list
        };
        assert_eq!(trim(&[1, 2, 3, 4], 2, 100), vec![3, 4]);
        assert_eq!(trim(&[10, 10, 10], 5, 25), vec![10, 10]);
        assert_eq!(trim(&[10, 500], 5, 100), vec![500], "the newest stays");
        assert_eq!(trim(&[5], 0, 0), vec![5]);
    }

    #[test]
    fn a_list_is_scanned_once_and_forgotten_on_clear() {
        let mut sizes = ListSizes::default();
        let mut scans = 0;
        for _ in 0..3 {
            sizes
                .get("p", 1, || {
                    scans += 1;
                    Ok(size_of([3, 4]))
                })
                .unwrap()
                .add(5);
        }
        assert_eq!(scans, 1);
        sizes.removed("p", 1, 3);
        let size = *sizes.get("p", 1, || unreachable!()).unwrap();
        assert_eq!(
            size,
            ListSize {
                count: 4,
                bytes: 19
            }
        );
        sizes.clear();
        sizes.get("p", 1, || Ok(size_of([]))).unwrap();
    }
}
