//! A growable Fenwick (binary indexed) tree of counts.
//!
//! The waitlist needs each token's 1-based position in O(log n). A waitlist
//! position is "waitlisted tokens of a more important priority" plus "tokens
//! of the same priority that arrived earlier and are still waiting"; the
//! second term is a prefix sum over that priority's arrivals, which is what
//! this tree answers in O(log n).

#[derive(Debug, Default, Clone)]
pub(super) struct Fenwick {
    /// `tree[i - 1]` holds the sum of the elements `(i - lowbit(i), i]`
    /// (1-based), the classic layout.
    tree: Vec<u32>,
}

impl Fenwick {
    /// Appends a zero element and returns its 0-based index, in O(log n).
    pub(super) fn push(&mut self) -> u32 {
        let index = self.tree.len() + 1;
        let covered_from = index - lowbit(index);
        // The new node covers `(covered_from, index]`; its own element is
        // zero, so it holds what the earlier elements in that range hold.
        let node = self.prefix(index - 1) - self.prefix(covered_from);
        self.tree.push(node);
        u32::try_from(index - 1).expect("a slot never sees 2^32 arrivals of one priority")
    }

    /// Removes the last element, if it is `index` (0-based) and zero:
    /// what the earlier nodes hold never includes it.
    pub(super) fn pop_zero(&mut self, index: u32) -> bool {
        let count = self.tree.len();
        if count != index as usize + 1 || self.prefix(count) != self.prefix(count - 1) {
            return false;
        }
        self.tree.pop();
        true
    }

    /// Adds one to the element at `index` (0-based), or takes one away.
    /// An index past the end grows the tree with zero elements first.
    pub(super) fn set(&mut self, index: u32, present: bool) {
        while self.tree.len() <= index as usize {
            self.push();
        }
        let mut node = index as usize + 1;
        while node <= self.tree.len() {
            if present {
                self.tree[node - 1] += 1;
            } else {
                self.tree[node - 1] -= 1;
            }
            node += lowbit(node);
        }
    }

    /// The sum of the first `count` elements (elements past the end are
    /// zero).
    pub(super) fn prefix(&self, count: usize) -> u32 {
        let mut node = count.min(self.tree.len());
        let mut sum = 0;
        while node > 0 {
            sum += self.tree[node - 1];
            node -= lowbit(node);
        }
        sum
    }
}

fn lowbit(index: usize) -> usize {
    index & index.wrapping_neg()
}

#[cfg(test)]
mod tests {
    use super::Fenwick;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn prefix_sums_match_a_plain_vector(ops in proptest::collection::vec((0u8..3, 0usize..64), 0..200)) {
            let mut tree = Fenwick::default();
            let mut plain: Vec<bool> = Vec::new();
            for (op, at) in ops {
                match op {
                    0 => {
                        let index = tree.push();
                        prop_assert_eq!(index as usize, plain.len());
                        plain.push(false);
                    }
                    _ if plain.is_empty() => {}
                    _ => {
                        let index = at % plain.len();
                        let present = op == 1;
                        if plain[index] != present {
                            tree.set(index as u32, present);
                            plain[index] = present;
                        }
                    }
                }
                for count in 0..=plain.len() {
                    let expected = plain[..count].iter().filter(|present| **present).count() as u32;
                    prop_assert_eq!(tree.prefix(count), expected);
                }
            }
        }
    }
}
