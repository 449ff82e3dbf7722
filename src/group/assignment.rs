//! Which live member should hold which slot.
//!
//! Deterministic and the same in every member that sees the same live set:
//! members sorted by id, slot `s` goes to member `s mod n` (round-robin, like
//! RocketMQ's averaging allocation). Members beyond the slot count hold
//! nothing and stand by.

use crate::group::lease::MemberId;

/// The member that should hold `slot`, given the live members in any order.
pub fn owner(slot: u32, live: &[MemberId]) -> Option<MemberId> {
    let mut sorted = live.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    (!sorted.is_empty()).then(|| sorted[slot as usize % sorted.len()])
}

/// The slots of `slots` that `me` should hold.
pub fn slots_of(me: &MemberId, slots: u32, live: &[MemberId]) -> Vec<u32> {
    (0..slots).filter(|&s| owner(s, live).as_ref() == Some(me)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u8) -> MemberId {
        [n; 16]
    }

    #[test]
    fn every_slot_has_exactly_one_owner_and_shares_differ_by_at_most_one() {
        for members in 1..6u8 {
            let live: Vec<MemberId> = (1..=members).rev().map(id).collect();
            for slots in 1..10u32 {
                let shares: Vec<usize> = live.iter().map(|m| slots_of(m, slots, &live).len()).collect();
                assert_eq!(shares.iter().sum::<usize>(), slots as usize);
                assert!(shares.iter().max().unwrap() - shares.iter().min().unwrap() <= 1, "{shares:?}");
            }
        }
    }

    #[test]
    fn assignment_ignores_the_order_members_are_listed_in() {
        let a = [id(3), id(1), id(2)];
        let b = [id(2), id(3), id(1)];
        for s in 0..8 {
            assert_eq!(owner(s, &a), owner(s, &b));
        }
        assert_eq!(owner(0, &[]), None);
    }
}
