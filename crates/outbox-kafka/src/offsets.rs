//! Which offset of each partition may be committed while deliveries are settled
//! out of order.
//!
//! The consumer hands out records of one partition in offset order, but the
//! caller settles them in any order (different keys run in parallel). Kafka keeps
//! one committed offset per partition, meaning "everything below was handled", so
//! only the lowest offset still unsettled, or one past the last delivered when all
//! are settled, may be committed. [`OffsetTracker`] computes that low-water mark.

use std::collections::{BTreeSet, HashMap};

/// One partition of one topic.
pub(crate) type PartitionKey = (String, i32);

/// What a delivery needs to settle itself: its partition, its offset, and the
/// assignment it was made under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Ticket {
    pub(crate) partition: PartitionKey,
    pub(crate) offset: i64,
    epoch: u64,
}

#[derive(Debug)]
struct PartitionState {
    /// Which assignment of the partition this state belongs to.
    epoch: u64,
    /// Offsets delivered and not yet settled.
    unsettled: BTreeSet<i64>,
    /// One past the highest offset delivered.
    next: i64,
    /// The mark last handed out for storing, or the first offset delivered in
    /// this assignment, where the group's committed position already is.
    stored: i64,
}

impl PartitionState {
    fn mark(&self) -> i64 {
        self.unsettled.first().copied().unwrap_or(self.next)
    }
}

/// The unsettled offsets of every partition the consumer holds.
#[derive(Debug, Default)]
pub(crate) struct OffsetTracker {
    partitions: HashMap<PartitionKey, PartitionState>,
    next_epoch: u64,
}

impl OffsetTracker {
    /// Records that `offset` of `partition` was handed out.
    pub(crate) fn delivered(&mut self, partition: PartitionKey, offset: i64) -> Ticket {
        let next_epoch = &mut self.next_epoch;
        let state = self.partitions.entry(partition.clone()).or_insert_with(|| {
            *next_epoch += 1;
            PartitionState {
                epoch: *next_epoch,
                unsettled: BTreeSet::new(),
                next: offset,
                stored: offset,
            }
        });
        state.unsettled.insert(offset);
        state.next = state.next.max(offset + 1);
        Ticket {
            partition,
            offset,
            epoch: state.epoch,
        }
    }

    /// Records that the delivery of `ticket` was settled, and returns the
    /// partition's new low-water mark when it moved past the one last returned.
    ///
    /// A ticket from an earlier assignment of the partition changes nothing: the
    /// partition was taken away since, and whoever holds it now reads from the
    /// last committed offset again.
    pub(crate) fn settled(&mut self, ticket: &Ticket) -> Option<i64> {
        let state = self.partitions.get_mut(&ticket.partition)?;
        if state.epoch != ticket.epoch || !state.unsettled.remove(&ticket.offset) {
            return None;
        }

        let mark = state.mark();
        if mark <= state.stored {
            return None;
        }
        state.stored = mark;
        Some(mark)
    }

    /// Forgets `partition`, which a rebalance took away.
    pub(crate) fn revoked(&mut self, partition: &PartitionKey) {
        self.partitions.remove(partition);
    }

    /// The number of deliveries not yet settled, over all partitions.
    #[cfg(test)]
    fn unsettled(&self) -> usize {
        self.partitions.values().map(|s| s.unsettled.len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(n: i32) -> PartitionKey {
        ("orders".to_owned(), n)
    }

    #[test]
    fn the_mark_waits_for_the_lowest_unsettled_offset() {
        let mut tracker = OffsetTracker::default();
        let tickets: Vec<Ticket> = (10..15).map(|o| tracker.delivered(p(0), o)).collect();

        assert_eq!(tracker.settled(&tickets[1]), None);
        assert_eq!(tracker.settled(&tickets[3]), None);
        assert_eq!(tracker.settled(&tickets[0]), Some(12));
        assert_eq!(tracker.settled(&tickets[4]), None);
        assert_eq!(tracker.settled(&tickets[2]), Some(15));
        assert_eq!(tracker.unsettled(), 0);
    }

    #[test]
    fn settling_in_order_moves_the_mark_each_time() {
        let mut tracker = OffsetTracker::default();
        let tickets: Vec<Ticket> = (0..3).map(|o| tracker.delivered(p(0), o)).collect();
        let marks: Vec<Option<i64>> = tickets.iter().map(|t| tracker.settled(t)).collect();
        assert_eq!(marks, [Some(1), Some(2), Some(3)]);
    }

    #[test]
    fn gaps_in_the_offsets_do_not_hold_the_mark_back() {
        let mut tracker = OffsetTracker::default();
        let a = tracker.delivered(p(0), 4);
        let b = tracker.delivered(p(0), 9);

        assert_eq!(tracker.settled(&b), None);
        assert_eq!(tracker.settled(&a), Some(10));
    }

    #[test]
    fn a_mark_never_moves_back() {
        let mut tracker = OffsetTracker::default();
        let a = tracker.delivered(p(0), 0);
        assert_eq!(tracker.settled(&a), Some(1));

        // A record read again below the mark, as after a seek, settles without
        // storing an older offset.
        let again = tracker.delivered(p(0), 0);
        assert_eq!(tracker.settled(&again), None);
    }

    #[test]
    fn partitions_are_tracked_apart() {
        let mut tracker = OffsetTracker::default();
        let a0 = tracker.delivered(p(0), 0);
        let b0 = tracker.delivered(p(1), 0);
        let a1 = tracker.delivered(p(0), 1);

        assert_eq!(tracker.settled(&a1), None);
        assert_eq!(tracker.settled(&b0), Some(1));
        assert_eq!(tracker.settled(&a0), Some(2));
    }

    #[test]
    fn settling_twice_or_after_a_revocation_changes_nothing() {
        let mut tracker = OffsetTracker::default();
        let old = tracker.delivered(p(0), 5);
        let other = tracker.delivered(p(0), 6);
        assert_eq!(tracker.settled(&other), None);
        assert_eq!(tracker.settled(&other), None);

        tracker.revoked(&p(0));
        assert_eq!(tracker.settled(&old), None);

        // Assigned again: the group reads from the committed offset, 5.
        let new = tracker.delivered(p(0), 5);
        assert_ne!(new, old);
        assert_eq!(tracker.settled(&old), None);
        assert_eq!(tracker.settled(&new), Some(6));
    }
}
