//! Token storage that grows without stalling the server.
//!
//! A day's tokens are never removed, so the token store only grows. A plain
//! `Vec` and a plain `HashMap` grow by doubling: at a million tokens one
//! booking would copy the whole arena or rehash the whole id index, a pause
//! of tens of milliseconds that every request queued behind it waits out.
//! Both structures here grow in small fixed steps instead, so the worst
//! single insert touches one chunk or one shard.

use std::hash::BuildHasher;
use std::ops::{Index, IndexMut};

use foldhash::fast::RandomState;
use hashbrown::hash_table::{Entry, HashTable};
use uuid::Uuid;

use super::slot::TokenKey;

/// Tokens per chunk: 4,096 tokens of 128 bytes are 512 KiB, large enough
/// that the chunk list stays short.
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

    /// Removes the element pushed last.
    pub(super) fn pop(&mut self) -> Option<T> {
        let chunk = self.chunks.last_mut()?;
        let value = chunk.pop()?;
        if chunk.is_empty() {
            self.chunks.pop();
        }
        self.len -= 1;
        Some(value)
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

/// A set of token keys found by a field of the token each key names (its
/// id, its patient). An entry is the 4-byte key and 32 bits of the field's
/// hash; the field itself is read through the arena only when a lookup's
/// hash bits match. Against a map that stores the field beside the key,
/// this saves about 15 bytes a token and the field's copy, and growing the
/// table needs no arena reads (those are cold cache lines).
#[derive(Debug, Default)]
pub(super) struct KeyIndex {
    table: HashTable<(TokenKey, u32)>,
}

/// The 32 hash bits an entry keeps, and the 64-bit hash the table places
/// it by, rebuilt from those bits alone so that growing needs nothing
/// else. The table takes its bucket from the low bits and a 7-bit tag
/// from the top ones; both come from the kept bits.
fn kept_bits(hash: u64) -> (u32, u64) {
    let kept = (hash >> 32) as u32;
    (kept, u64::from(kept) << 32 | u64::from(kept))
}

impl KeyIndex {
    pub(super) fn len(&self) -> usize {
        self.table.len()
    }

    /// The key whose field equals `wanted`; `hash` is `wanted`'s hash.
    pub(super) fn find<'a, Q: PartialEq + ?Sized + 'a>(
        &self,
        hash: u64,
        wanted: &Q,
        field: impl Fn(TokenKey) -> &'a Q,
    ) -> Option<TokenKey> {
        let (kept, placed) = kept_bits(hash);
        self.table
            .find(placed, |&(key, bits)| bits == kept && field(key) == wanted)
            .map(|&(key, _)| key)
    }

    /// Adds `key`, whose field hashes to `hash`, unless a key with an equal
    /// field is there already; returns that key then.
    pub(super) fn insert<'a, Q: PartialEq + ?Sized + 'a>(
        &mut self,
        hash: u64,
        key: TokenKey,
        field: impl Fn(TokenKey) -> &'a Q,
    ) -> Result<(), TokenKey> {
        let (kept, placed) = kept_bits(hash);
        let wanted = field(key);
        match self.table.entry(
            placed,
            |&(stored, bits)| bits == kept && field(stored) == wanted,
            |&(_, bits)| kept_bits(u64::from(bits) << 32).1,
        ) {
            Entry::Occupied(entry) => Err(entry.get().0),
            Entry::Vacant(entry) => {
                entry.insert((key, kept));
                Ok(())
            }
        }
    }

    /// Removes `key`, whose field hashes to `hash`; false if it was absent.
    pub(super) fn remove(&mut self, hash: u64, key: TokenKey) -> bool {
        let (_, placed) = kept_bits(hash);
        match self.table.find_entry(placed, |&(stored, _)| stored == key) {
            Ok(entry) => {
                entry.remove();
                true
            }
            Err(_) => false,
        }
    }
}

/// Shards of the id index. With 64 shards, a million tokens rehash at most
/// about 16,000 entries at once.
const SHARDS: usize = 64;

/// The token id index, split into shards that each grow on their own.
#[derive(Debug)]
pub(super) struct IdIndex {
    hasher: RandomState,
    shards: Box<[KeyIndex]>,
}

impl Default for IdIndex {
    fn default() -> Self {
        IdIndex {
            hasher: RandomState::default(),
            shards: (0..SHARDS).map(|_| KeyIndex::default()).collect(),
        }
    }
}

impl IdIndex {
    /// The hash and the shard of an id. The shard takes the low bits,
    /// which the shard's table does not keep.
    fn locate(&self, id: &Uuid) -> (u64, usize) {
        let hash = self.hasher.hash_one(id);
        (hash, hash as usize % SHARDS)
    }

    pub(super) fn get<'a>(
        &self,
        id: &Uuid,
        id_of: impl Fn(TokenKey) -> &'a Uuid,
    ) -> Option<TokenKey> {
        let (hash, shard) = self.locate(id);
        self.shards[shard].find(hash, id, id_of)
    }

    /// Removes `key`, indexed under `id`; false if it was absent.
    pub(super) fn remove(&mut self, id: &Uuid, key: TokenKey) -> bool {
        let (hash, shard) = self.locate(id);
        self.shards[shard].remove(hash, key)
    }

    /// Indexes `key` under its id; if the id is indexed already, returns
    /// the key that holds it.
    pub(super) fn insert<'a>(
        &mut self,
        key: TokenKey,
        id_of: impl Fn(TokenKey) -> &'a Uuid,
    ) -> Result<(), TokenKey> {
        let (hash, shard) = self.locate(id_of(key));
        self.shards[shard].insert(hash, key, id_of)
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
        let ids: Vec<Uuid> = (0..10_000u128)
            .map(|n| Uuid::from_u128(n * 0x1_0000_0001))
            .collect();
        let mut index = IdIndex::default();
        for key in 0..ids.len() as TokenKey {
            assert_eq!(index.insert(key, |k| &ids[k as usize]), Ok(()));
        }
        for (key, id) in ids.iter().enumerate() {
            assert_eq!(index.get(id, |k| &ids[k as usize]), Some(key as TokenKey));
        }
        assert_eq!(index.get(&Uuid::from_u128(7), |k| &ids[k as usize]), None);
        let mut doubled = ids.clone();
        doubled.push(ids[42]);
        let last = (doubled.len() - 1) as TokenKey;
        assert_eq!(index.insert(last, |k| &doubled[k as usize]), Err(42));
    }

    #[test]
    fn key_index_removes_only_the_key_asked_for() {
        let names = ["ana", "ben", "cy"];
        let hasher = RandomState::default();
        let field = |key: TokenKey| names[key as usize];
        let mut index = KeyIndex::default();
        for key in 0..3 {
            let hash = hasher.hash_one(field(key));
            assert_eq!(index.insert(hash, key, field), Ok(()));
        }
        assert!(index.remove(hasher.hash_one("ben"), 1));
        assert!(!index.remove(hasher.hash_one("ben"), 1));
        assert_eq!(index.len(), 2);
        assert_eq!(index.find(hasher.hash_one("ben"), "ben", field), None);
        assert_eq!(index.find(hasher.hash_one("cy"), "cy", field), Some(2));
    }
}
