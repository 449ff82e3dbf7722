//! Which live member should hold which slot.
//!
//! Fair and sticky, and the same in every member that sees the same state:
//! with `n` slots and `m` live members, every member's quota is `n / m`, and
//! `n % m` members get one more: those holding the most slots now (ties
//! broken by id), so nobody gives up a slot only to balance the count. Each
//! member keeps the slots it holds, up to its quota; the slots left over go,
//! in slot order, to the members below quota, in id order. A member joining
//! a busy group therefore takes only its share, from the members above
//! quota, and the others keep theirs. Members beyond the slot count hold
//! nothing and stand by.

use crate::group::lease::MemberId;

/// The owner of each slot, given the live members (any order) and the
/// member that holds each slot now (`None`: nobody alive holds it).
pub fn assign(live: &[MemberId], holders: &[Option<MemberId>]) -> Vec<Option<MemberId>> {
    let mut members = live.to_vec();
    members.sort_unstable();
    members.dedup();
    if members.is_empty() {
        return vec![None; holders.len()];
    }
    let held = |m: &MemberId| holders.iter().filter(|h| h.as_ref() == Some(m)).count();
    let base = holders.len() / members.len();
    let extra = holders.len() % members.len();
    let mut by_claim = members.clone();
    by_claim.sort_by_key(|m| (std::cmp::Reverse(held(m)), *m));
    // The `extra` slots go to the members that claim the most.
    let mut quota = vec![base; members.len()];
    for m in by_claim.iter().take(extra) {
        if let Ok(i) = members.binary_search(m) {
            quota[i] += 1;
        }
    }
    let mut owners = vec![None; holders.len()];
    let mut counts = vec![0usize; members.len()];
    for (slot, holder) in holders.iter().enumerate() {
        if let Some(h) = holder
            && let Ok(i) = members.binary_search(h)
            && counts[i] < quota[i]
        {
            owners[slot] = Some(*h);
            counts[i] += 1;
        }
    }
    let mut next = 0;
    for owner in owners.iter_mut().filter(|o| o.is_none()) {
        while counts[next] >= quota[next] {
            next = (next + 1) % members.len();
        }
        *owner = Some(members[next]);
        counts[next] += 1;
    }
    owners
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u8) -> MemberId {
        [n; 16]
    }

    fn shares(owners: &[Option<MemberId>], live: &[MemberId]) -> Vec<usize> {
        live.iter().map(|m| owners.iter().filter(|o| o.as_ref() == Some(m)).count()).collect()
    }

    #[test]
    fn every_slot_has_one_owner_and_shares_differ_by_at_most_one() {
        for members in 1..6u8 {
            let live: Vec<MemberId> = (1..=members).rev().map(id).collect();
            for slots in 1..10usize {
                let owners = assign(&live, &vec![None; slots]);
                assert!(owners.iter().all(Option::is_some));
                let shares = shares(&owners, &live);
                assert_eq!(shares.iter().sum::<usize>(), slots);
                assert!(shares.iter().max().unwrap() - shares.iter().min().unwrap() <= 1, "{shares:?}");
            }
        }
    }

    #[test]
    fn current_holders_keep_their_slots_up_to_their_share() {
        // A holds all four slots; B joins: B takes two, A keeps the others.
        let holders = vec![Some(id(1)); 4];
        let owners = assign(&[id(1), id(2)], &holders);
        assert_eq!(shares(&owners, &[id(1), id(2)]), [2, 2]);
        assert_eq!(&owners[..2], &[Some(id(1)), Some(id(1))], "A keeps its lowest slots");
        // One slot, two members: the holder keeps it, whoever has the lower id.
        assert_eq!(assign(&[id(1), id(2)], &[Some(id(2))]), [Some(id(2))]);
        // A third member joining a balanced 2 + 2 group takes one slot only.
        let holders = vec![Some(id(1)), Some(id(2)), Some(id(1)), Some(id(2))];
        let owners = assign(&[id(1), id(2), id(3)], &holders);
        let moved = owners.iter().zip(&holders).filter(|(o, h)| o != h).count();
        assert_eq!(moved, 1);
    }

    #[test]
    fn assignment_ignores_the_order_members_are_listed_in() {
        let holders = [Some(id(2)), None, Some(id(3)), None, None];
        assert_eq!(assign(&[id(3), id(1), id(2)], &holders), assign(&[id(2), id(3), id(1)], &holders));
        assert_eq!(assign(&[], &holders), vec![None; 5]);
    }
}
