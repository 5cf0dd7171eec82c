//! Token storage that grows without stalling the server.
//!
//! A day's tokens are never removed, so the token store only grows. A plain
//! `Vec` and a plain `HashMap` grow by doubling: at a million tokens one
//! booking would copy the whole arena or rehash the whole id index, a pause
//! of tens of milliseconds that every request queued behind it waits out.
//! Both structures here grow in small fixed steps instead, so the worst
//! single insert touches one chunk or one shard.

use std::ops::{Index, IndexMut};

use uuid::Uuid;

use super::slot::TokenKey;
use super::HashMap;

/// Tokens per chunk: 4096 tokens of about a hundred bytes are a few hundred
/// kilobytes, large enough that the chunk list stays short.
const CHUNK_BITS: u32 = 12;
const CHUNK_LEN: usize = 1 << CHUNK_BITS;

/// A vector of fixed-size chunks, indexed by token key. Elements never move
/// once pushed.
#[derive(Debug)]
pub(super) struct Arena<T> {
    chunks: Vec<Vec<T>>,
    len: usize,
}

impl<T> Default for Arena<T> {
    fn default() -> Self {
        Arena {
            chunks: Vec::new(),
            len: 0,
        }
    }
}

impl<T> Arena<T> {
    pub(super) fn len(&self) -> usize {
        self.len
    }

    /// Appends an element and returns its key.
    pub(super) fn push(&mut self, value: T) -> TokenKey {
        let key = TokenKey::try_from(self.len).expect("fewer than 2^32 tokens");
        if self.len.is_multiple_of(CHUNK_LEN) {
            self.chunks.push(Vec::with_capacity(CHUNK_LEN));
        }
        let chunk = self.chunks.last_mut().expect("a chunk with room");
        chunk.push(value);
        self.len += 1;
        key
    }

    /// Every element with its key, in insertion order.
    pub(super) fn iter(&self) -> impl Iterator<Item = (TokenKey, &T)> {
        self.chunks
            .iter()
            .flatten()
            .enumerate()
            .map(|(key, value)| (key as TokenKey, value))
    }
}

impl<T> Index<TokenKey> for Arena<T> {
    type Output = T;

    fn index(&self, key: TokenKey) -> &T {
        &self.chunks[(key >> CHUNK_BITS) as usize][key as usize & (CHUNK_LEN - 1)]
    }
}

impl<T> IndexMut<TokenKey> for Arena<T> {
    fn index_mut(&mut self, key: TokenKey) -> &mut T {
        &mut self.chunks[(key >> CHUNK_BITS) as usize][key as usize & (CHUNK_LEN - 1)]
    }
}

/// Shards of the id index. With 64 shards, a million tokens rehash at most
/// about 16,000 entries at once.
const SHARDS: usize = 64;

/// The token id index, split into shards that each grow on their own.
#[derive(Debug)]
pub(super) struct IdIndex {
    shards: Box<[HashMap<Uuid, TokenKey>]>,
}

impl Default for IdIndex {
    fn default() -> Self {
        IdIndex {
            shards: (0..SHARDS).map(|_| HashMap::default()).collect(),
        }
    }
}

impl IdIndex {
    /// Token ids are random (version 4) UUIDs issued by the server, so their
    /// last byte spreads them evenly; the shard's own hasher still hashes
    /// the whole id.
    fn shard(&self, id: &Uuid) -> &HashMap<Uuid, TokenKey> {
        &self.shards[usize::from(id.as_bytes()[15]) % SHARDS]
    }

    pub(super) fn get(&self, id: &Uuid) -> Option<TokenKey> {
        self.shard(id).get(id).copied()
    }

    pub(super) fn contains(&self, id: &Uuid) -> bool {
        self.shard(id).contains_key(id)
    }

    pub(super) fn insert(&mut self, id: Uuid, key: TokenKey) {
        self.shards[usize::from(id.as_bytes()[15]) % SHARDS].insert(id, key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arena_keys_address_what_was_pushed_across_chunks() {
        let mut arena = Arena::default();
        let count = 3 * CHUNK_LEN + 5;
        for n in 0..count {
            assert_eq!(arena.push(n * 7), n as TokenKey);
        }
        assert_eq!(arena.len(), count);
        arena[CHUNK_LEN as TokenKey] += 1;
        assert_eq!(arena[CHUNK_LEN as TokenKey], CHUNK_LEN * 7 + 1);
        assert_eq!(arena[(count - 1) as TokenKey], (count - 1) * 7);
        let keys: Vec<TokenKey> = arena.iter().map(|(key, _)| key).collect();
        assert_eq!(keys, (0..count as TokenKey).collect::<Vec<_>>());
    }

    #[test]
    fn id_index_finds_every_id_it_holds_and_no_other() {
        let mut index = IdIndex::default();
        for n in 0..1000u128 {
            index.insert(Uuid::from_u128(n * 0x1_0000_0001), n as TokenKey);
        }
        for n in 0..1000u128 {
            let id = Uuid::from_u128(n * 0x1_0000_0001);
            assert_eq!(index.get(&id), Some(n as TokenKey));
            assert!(index.contains(&id));
        }
        assert_eq!(index.get(&Uuid::from_u128(7)), None);
    }
}
