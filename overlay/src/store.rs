//! The node's storage engine: entries of the resources it is a replica of, and the peers it
//! has met, in sled.
//!
//! # Layout
//!
//! One sled database per data directory, with two trees:
//! - `entries`: key `resource (32 bytes) || kind (u32, big-endian) || dictionary key`, value the
//!   bincode encoding of the [`StoredData`]. The entries of one resource and kind are adjacent,
//!   so [`Store::get`] is one prefix scan and [`Store::all_resources`] jumps from one
//!   (resource, kind) to the next.
//! - `peers`: key the `PeerId` bytes, value `(sequence, addresses)`; the sequence orders peers by
//!   when they were last remembered.
//!
//! # Guarantees
//!
//! - [`Store::put`] and [`Store::store`] return only once the entry is on disk (sled `flush`):
//!   a node that acknowledged a store and is then killed still has the entry when it restarts.
//! - Reads never return expired entries; [`Store::sweep`] deletes them.
//! - State is bounded ([`Limits`]): value size and entries per resource for each kind, total
//!   bytes for the node, entries and bytes per signer (the key that signed the entries: a
//!   device's Node-ID key for registrations, a user key for claims, so that one peer cannot
//!   fill a node's store), and the size of the peer cache. A write over a limit is refused
//!   with [`Error::DataTooLarge`] (which limit, in its sentence); the peer cache forgets its
//!   oldest peer instead. The per-signer counts live in memory and are rebuilt from the
//!   entries when the store opens.
//! - An entry stored again as it is (a replay, a replica's second push) costs no disk write:
//!   [`Store::store`] neither inserts nor flushes it ([`Store::disk_writes`] counts writes).
//! - Writes are serialized inside one `Store` (and its clones), so [`Store::store`]'s check and
//!   write see no other write between them.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use libp2p::PeerId;

use crate::access::{AccessPolicy, KindLimits, check_store};
use crate::data::{AorClaim, Kind, StoredData};
use crate::error::Error;
use crate::id::ResourceId;
use crate::message::{decode_value, encode_value};

/// The bounds of a [`Store`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Limits per kind; a kind without limits here uses [`KindLimits::default_for`].
    pub kinds: BTreeMap<Kind, KindLimits>,
    /// The most bytes (keys and encoded entries) the node stores in all.
    pub max_node_bytes: u64,
    /// The most peers the peer cache remembers.
    pub max_peers: usize,
    /// The most addresses remembered per peer.
    pub max_peer_addrs: usize,
    /// The most entries signed by one key that the node stores (all resources and kinds).
    pub max_signer_entries: u64,
    /// The most bytes (keys and encoded entries) of entries signed by one key that the node
    /// stores.
    pub max_signer_bytes: u64,
}

impl Default for Limits {
    /// The kinds' default limits, 64 MiB in all, 4096 entries and 4 MiB per signer, 1000
    /// peers of 8 addresses each.
    fn default() -> Limits {
        Limits {
            kinds: Kind::KNOWN
                .iter()
                .map(|&kind| (kind, KindLimits::default_for(kind)))
                .collect(),
            max_node_bytes: 64 * 1024 * 1024,
            max_peers: 1000,
            max_peer_addrs: 8,
            max_signer_entries: 4096,
            max_signer_bytes: 4 * 1024 * 1024,
        }
    }
}

impl Limits {
    /// The limits of `kind`.
    pub fn kind(&self, kind: Kind) -> KindLimits {
        self.kinds
            .get(&kind)
            .copied()
            .unwrap_or_else(|| KindLimits::default_for(kind))
    }
}

/// The longest peer address remembered, in bytes; longer ones are dropped.
const MAX_ADDR_LEN: usize = 256;

/// The node's store. Cheap to clone: clones share the database.
#[derive(Debug, Clone)]
pub struct Store {
    db: sled::Db,
    entries: sled::Tree,
    peers: sled::Tree,
    limits: Limits,
    used: Arc<AtomicU64>,
    /// Entries and bytes per signer (the `signer` bytes of the entries).
    signers: Arc<Mutex<HashMap<Vec<u8>, Usage>>>,
    writes: Arc<Mutex<()>>,
    disk_writes: Arc<AtomicU64>,
}

/// What one signer's entries take.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Usage {
    entries: u64,
    bytes: u64,
}

/// The (resource, kind) pairs a store holds entries for: [`Store::all_resources`].
#[derive(Debug)]
pub struct Resources {
    tree: sled::Tree,
    from: Option<Vec<u8>>,
}

impl Store {
    /// Opens (or creates) the store in `dir` with the default [`Limits`].
    pub fn open(dir: &Path) -> Result<Store, Error> {
        Store::open_with(dir, Limits::default())
    }

    /// Opens (or creates) the store in `dir`.
    ///
    /// sled locks the directory; a store of the same directory that was just dropped may hold
    /// the lock a moment longer (its background threads finish first), so this retries for up
    /// to [`LOCK_WAIT`] before it reports the directory as in use. It blocks meanwhile.
    pub fn open_with(dir: &Path, limits: Limits) -> Result<Store, Error> {
        let db = open_db(dir)?;
        let entries = db.open_tree("entries")?;
        let peers = db.open_tree("peers")?;
        let mut used = 0u64;
        let mut signers: HashMap<Vec<u8>, Usage> = HashMap::new();
        for item in entries.iter() {
            let (key, value) = item?;
            let size = (key.len() + value.len()) as u64;
            used += size;
            if let Ok(data) = decode_entry(&value) {
                let usage = signers.entry(data.signer).or_default();
                usage.entries += 1;
                usage.bytes += size;
            }
        }
        Ok(Store {
            db,
            entries,
            peers,
            limits,
            used: Arc::new(AtomicU64::new(used)),
            signers: Arc::new(Mutex::new(signers)),
            writes: Arc::new(Mutex::new(())),
            disk_writes: Arc::new(AtomicU64::new(0)),
        })
    }

    /// The store's limits.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// The bytes of entries stored (keys and encoded entries).
    pub fn used_bytes(&self) -> u64 {
        self.used.load(Ordering::Relaxed)
    }

    /// The entries and bytes stored that `signer` (a public key, protobuf-encoded) signed.
    pub fn signer_usage(&self, signer: &[u8]) -> (u64, u64) {
        let signers = self.signers.lock().unwrap_or_else(PoisonError::into_inner);
        signers
            .get(signer)
            .map_or((0, 0), |usage| (usage.entries, usage.bytes))
    }

    /// How many writes (inserts, deletes and flushes of entries) this store (and its clones)
    /// made since it was opened.
    pub fn disk_writes(&self) -> u64 {
        self.disk_writes.load(Ordering::Relaxed)
    }

    /// Checks `data` with [`check_store`] against what the store holds (the key's live entry,
    /// the resource's live AOR claim) and `policy`, then stores it; gives the stored
    /// generation. Durable before it returns; the entry already held, offered again, is
    /// not written again.
    pub fn store(
        &self,
        resource: &ResourceId,
        kind: Kind,
        key: &[u8],
        data: &StoredData,
        now_ms: u64,
        policy: &AccessPolicy,
    ) -> Result<u64, Error> {
        {
            let _guard = self.lock();
            let current = self.entry(resource, kind, key, now_ms)?;
            let claim = self.claim(resource, now_ms)?;
            check_store(
                resource,
                kind,
                key,
                current.as_ref(),
                claim.as_ref(),
                data,
                now_ms,
                policy,
            )?;
            if current.as_ref() == Some(data) {
                return Ok(data.generation);
            }
            self.insert(resource, kind, key, data, now_ms)?;
        }
        self.flush_written()?;
        Ok(data.generation)
    }

    /// Stores `data` under `resource`, `kind`, `key` as it is, replacing what the key held,
    /// within the limits; durable before it returns. It checks no signature: use
    /// [`Store::store`] for anything that came from the network.
    pub fn put(
        &self,
        resource: &ResourceId,
        kind: Kind,
        key: &[u8],
        data: &StoredData,
        now_ms: u64,
    ) -> Result<(), Error> {
        {
            let _guard = self.lock();
            self.insert(resource, kind, key, data, now_ms)?;
        }
        self.flush_written()?;
        Ok(())
    }

    /// The live entries of `resource` and `kind`, by dictionary key.
    pub fn get(
        &self,
        resource: &ResourceId,
        kind: Kind,
        now_ms: u64,
    ) -> Result<Vec<(Vec<u8>, StoredData)>, Error> {
        let prefix = prefix(resource, kind);
        let mut found = Vec::new();
        for item in self.entries.scan_prefix(prefix) {
            let (key, value) = item?;
            match decode_entry(&value) {
                Ok(data) if !data.is_expired(now_ms) => {
                    found.push((key[prefix.len()..].to_vec(), data));
                }
                Ok(_) => {}
                Err(error) => tracing::warn!(%resource, %kind, %error, "skipped an entry"),
            }
        }
        Ok(found)
    }

    /// The live entry of `resource`, `kind` under `key`.
    pub fn entry(
        &self,
        resource: &ResourceId,
        kind: Kind,
        key: &[u8],
        now_ms: u64,
    ) -> Result<Option<StoredData>, Error> {
        let Some(value) = self.entries.get(full_key(resource, kind, key))? else {
            return Ok(None);
        };
        let data = decode_entry(&value)?;
        Ok((!data.is_expired(now_ms)).then_some(data))
    }

    /// The live AOR claim of `resource`: its AOR-CLAIM entry's value, when the entry and the
    /// claim are both unexpired.
    pub fn claim(&self, resource: &ResourceId, now_ms: u64) -> Result<Option<AorClaim>, Error> {
        let Some(data) = self.entry(resource, Kind::AOR_CLAIM, &[], now_ms)? else {
            return Ok(None);
        };
        let claim = AorClaim::decode(&data.value).map_err(|error| Error::Corrupt {
            what: format!("the AOR claim of {resource}: {error}"),
        })?;
        Ok(claim.is_live(now_ms).then_some(claim))
    }

    /// Deletes the entry under `resource`, `kind`, `key` (after a handover, say); whether there
    /// was one.
    pub fn remove(&self, resource: &ResourceId, kind: Kind, key: &[u8]) -> Result<bool, Error> {
        let removed = {
            let _guard = self.lock();
            self.delete(&full_key(resource, kind, key))?
        };
        if removed {
            self.flush_written()?;
        }
        Ok(removed)
    }

    /// Deletes the entry under `resource`, `kind`, `key` only when it is still `data` (a copy
    /// this node no longer has to hold, say; a newer version that arrived meanwhile stays);
    /// whether it was deleted.
    pub fn remove_if(
        &self,
        resource: &ResourceId,
        kind: Kind,
        key: &[u8],
        data: &StoredData,
    ) -> Result<bool, Error> {
        let full = full_key(resource, kind, key);
        let removed = {
            let _guard = self.lock();
            match self.entries.get(&full)? {
                Some(value) if decode_entry(&value)? == *data => self.delete(&full)?,
                _ => false,
            }
        };
        if removed {
            self.flush_written()?;
        }
        Ok(removed)
    }

    /// Deletes every entry expired at `now_ms` (and any that cannot be decoded); how many.
    pub fn sweep(&self, now_ms: u64) -> Result<usize, Error> {
        let _guard = self.lock();
        let mut removed = 0;
        for item in self.entries.iter() {
            let (key, value) = item?;
            let expired = match decode_entry(&value) {
                Ok(data) => data.is_expired(now_ms),
                Err(error) => {
                    tracing::warn!(%error, "deleted an entry that does not decode");
                    true
                }
            };
            if expired && self.delete(&key)? {
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// Every (resource, kind) the store holds entries for (expired ones included until they
    /// are swept), in key order: what replication and handover walk through.
    pub fn all_resources(&self) -> Resources {
        Resources {
            tree: self.entries.clone(),
            from: Some(Vec::new()),
        }
    }

    /// Remembers the addresses of a peer, for the next start (at most
    /// [`Limits::max_peer_addrs`] of them, each at most 256 bytes). When the cache is full,
    /// the peer remembered longest ago is forgotten.
    pub fn remember_peer(&self, peer: &PeerId, addrs: Vec<String>) -> Result<(), Error> {
        let addrs: Vec<String> = addrs
            .into_iter()
            .filter(|addr| addr.len() <= MAX_ADDR_LEN)
            .take(self.limits.max_peer_addrs)
            .collect();
        let _guard = self.lock();
        let key = peer.to_bytes();
        let sequence = self.db.generate_id()?;
        let known = self.peers.contains_key(&key)?;
        self.peers.insert(&key, encode_value(&(sequence, addrs)))?;
        if !known {
            while self.peers.len() > self.limits.max_peers {
                let oldest = self
                    .peer_entries()?
                    .into_iter()
                    .min_by_key(|(_, seq, _)| *seq);
                match oldest {
                    Some((peer, _, _)) => {
                        self.peers.remove(peer.to_bytes())?;
                    }
                    None => break,
                }
            }
        }
        Ok(())
    }

    /// Forgets a peer.
    pub fn forget_peer(&self, peer: &PeerId) -> Result<(), Error> {
        self.peers.remove(peer.to_bytes())?;
        Ok(())
    }

    /// The peers remembered, the most recently remembered first.
    pub fn peers(&self) -> Result<Vec<(PeerId, Vec<String>)>, Error> {
        let mut peers = self.peer_entries()?;
        peers.sort_by_key(|(_, sequence, _)| std::cmp::Reverse(*sequence));
        Ok(peers
            .into_iter()
            .map(|(peer, _, addrs)| (peer, addrs))
            .collect())
    }

    /// The addresses the peer cache holds for `peer`, if it holds the peer (one read, not a
    /// scan of the cache).
    pub fn peer_addrs(&self, peer: &PeerId) -> Result<Option<Vec<String>>, Error> {
        let Some(value) = self.peers.get(peer.to_bytes())? else {
            return Ok(None);
        };
        let (_, addrs) = decode_value::<(u64, Vec<String>)>(&value, "peer cache entry")?;
        Ok(Some(addrs))
    }

    /// Writes everything to disk.
    pub fn flush(&self) -> Result<(), Error> {
        self.db.flush()?;
        Ok(())
    }

    /// Flushes after a write, counted in [`Store::disk_writes`].
    fn flush_written(&self) -> Result<(), Error> {
        self.disk_writes.fetch_add(1, Ordering::Relaxed);
        self.db.flush()?;
        Ok(())
    }

    fn lock(&self) -> MutexGuard<'_, ()> {
        // The lock guards no data: a panic elsewhere cannot leave it inconsistent.
        self.writes.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Inserts within the limits; the caller holds the write lock and flushes.
    fn insert(
        &self,
        resource: &ResourceId,
        kind: Kind,
        key: &[u8],
        data: &StoredData,
        now_ms: u64,
    ) -> Result<(), Error> {
        if data.is_expired(now_ms) {
            return Err(Error::Expired {
                what: "the entry",
                expired_at_ms: data.expires_at_ms(),
                now_ms,
            });
        }
        let limits = self.limits.kind(kind);
        let size = data.value.len() as u64;
        if size > limits.max_value_bytes {
            return Err(Error::DataTooLarge {
                what: "the value (bytes)",
                size,
                limit: limits.max_value_bytes,
            });
        }
        let full = full_key(resource, kind, key);
        let old = self.entries.get(&full)?;
        if old.is_none() {
            let live = self.live_entries_sweeping(resource, kind, now_ms)?;
            if live >= limits.max_entries {
                return Err(Error::DataTooLarge {
                    what: "the number of entries of this resource",
                    size: live + 1,
                    limit: limits.max_entries,
                });
            }
        }
        let encoded = encode_value(data);
        let old_size = old
            .as_ref()
            .map_or(0, |value| (full.len() + value.len()) as u64);
        let new_size = (full.len() + encoded.len()) as u64;
        let used = self.used_bytes();
        let after = used.saturating_sub(old_size).saturating_add(new_size);
        if new_size > old_size && after > self.limits.max_node_bytes {
            return Err(Error::DataTooLarge {
                what: "this node's storage (bytes)",
                size: after,
                limit: self.limits.max_node_bytes,
            });
        }
        let old_data = old.as_deref().and_then(|value| decode_entry(value).ok());
        let mut signers = self.signers.lock().unwrap_or_else(PoisonError::into_inner);
        let same_signer = old_data
            .as_ref()
            .is_some_and(|old| old.signer == data.signer);
        let usage = signers.get(&data.signer).copied().unwrap_or_default();
        let (entries_after, bytes_after) = if same_signer {
            (
                usage.entries,
                usage
                    .bytes
                    .saturating_sub(old_size)
                    .saturating_add(new_size),
            )
        } else {
            (usage.entries + 1, usage.bytes.saturating_add(new_size))
        };
        if entries_after > usage.entries && entries_after > self.limits.max_signer_entries {
            return Err(Error::DataTooLarge {
                what: "the number of entries this node stores for one signer",
                size: entries_after,
                limit: self.limits.max_signer_entries,
            });
        }
        if bytes_after > usage.bytes && bytes_after > self.limits.max_signer_bytes {
            return Err(Error::DataTooLarge {
                what: "the bytes this node stores for one signer",
                size: bytes_after,
                limit: self.limits.max_signer_bytes,
            });
        }
        self.entries.insert(full, encoded)?;
        self.disk_writes.fetch_add(1, Ordering::Relaxed);
        self.used.store(after, Ordering::Relaxed);
        if !same_signer && let Some(old) = &old_data {
            release(&mut signers, &old.signer, old_size);
        }
        signers.insert(
            data.signer.clone(),
            Usage {
                entries: entries_after,
                bytes: bytes_after,
            },
        );
        Ok(())
    }

    /// Counts the live entries of a resource and kind, deleting the expired ones on the way.
    fn live_entries_sweeping(
        &self,
        resource: &ResourceId,
        kind: Kind,
        now_ms: u64,
    ) -> Result<u64, Error> {
        let mut live = 0;
        for item in self.entries.scan_prefix(prefix(resource, kind)) {
            let (key, value) = item?;
            match decode_entry(&value) {
                Ok(data) if !data.is_expired(now_ms) => live += 1,
                _ => {
                    self.delete(&key)?;
                }
            }
        }
        Ok(live)
    }

    /// Deletes one key and updates the byte count; the caller holds the write lock.
    fn delete(&self, key: &[u8]) -> Result<bool, Error> {
        match self.entries.remove(key)? {
            Some(value) => {
                self.disk_writes.fetch_add(1, Ordering::Relaxed);
                let size = (key.len() + value.len()) as u64;
                if let Ok(data) = decode_entry(&value) {
                    let mut signers = self.signers.lock().unwrap_or_else(PoisonError::into_inner);
                    release(&mut signers, &data.signer, size);
                }
                let _ = self
                    .used
                    .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |used| {
                        Some(used.saturating_sub(size))
                    });
                Ok(true)
            }
            None => Ok(false),
        }
    }

    fn peer_entries(&self) -> Result<Vec<(PeerId, u64, Vec<String>)>, Error> {
        let mut peers = Vec::new();
        for item in self.peers.iter() {
            let (key, value) = item?;
            let Ok(peer) = PeerId::from_bytes(&key) else {
                continue;
            };
            match decode_value::<(u64, Vec<String>)>(&value, "peer cache entry") {
                Ok((sequence, addrs)) => peers.push((peer, sequence, addrs)),
                Err(error) => tracing::warn!(%peer, %error, "skipped a peer cache entry"),
            }
        }
        Ok(peers)
    }
}

impl Iterator for Resources {
    type Item = Result<(ResourceId, Kind), Error>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let from = self.from.take()?;
            let (key, _) = match self.tree.range(from..).next()? {
                Ok(found) => found,
                Err(error) => return Some(Err(error.into())),
            };
            if key.len() < PREFIX_LEN {
                // Not one of ours: skip it.
                let mut next = key.to_vec();
                next.push(0);
                self.from = Some(next);
                continue;
            }
            let mut resource = [0u8; 32];
            resource.copy_from_slice(&key[..32]);
            let mut kind = [0u8; 4];
            kind.copy_from_slice(&key[32..PREFIX_LEN]);
            self.from = successor(&key[..PREFIX_LEN]);
            return Some(Ok((
                ResourceId::from_bytes(resource),
                Kind(u32::from_be_bytes(kind)),
            )));
        }
    }
}

/// Takes one entry of `size` bytes off a signer's usage; a signer with none left is forgotten.
fn release(signers: &mut HashMap<Vec<u8>, Usage>, signer: &[u8], size: u64) {
    if let Some(usage) = signers.get_mut(signer) {
        usage.entries = usage.entries.saturating_sub(1);
        usage.bytes = usage.bytes.saturating_sub(size);
        if usage.entries == 0 {
            signers.remove(signer);
        }
    }
}

/// sled's page cache: the node's entries are bounded by [`Limits::max_node_bytes`] (64 MiB by
/// default) and a node reads few of them at a time, so sled's default of 1 GiB only lets a
/// busy node's memory grow; what is not cached is read from the file (and the OS's cache).
const CACHE_CAPACITY: u64 = 16 * 1024 * 1024;

/// How long [`Store::open_with`] waits for the directory's lock.
pub const LOCK_WAIT: Duration = Duration::from_secs(2);

fn open_db(dir: &Path) -> Result<sled::Db, Error> {
    let started = Instant::now();
    loop {
        let config = sled::Config::new()
            .path(dir)
            // Every write that must last is flushed before it is answered (`flush_written`),
            // so sled's background flusher (a thread per database that wakes every 500 ms)
            // only adds wakeups: 1,000 nodes in one process would run 1,000 such threads.
            // What it would have flushed and nobody flushed since (the peer cache, swept
            // deletions) is flushed when the store closes, or lost in a crash: a peer met
            // again is remembered again, an expired entry swept again.
            .flush_every_ms(None)
            .cache_capacity(CACHE_CAPACITY);
        match config.open() {
            Err(sled::Error::Io(error)) if error.to_string().contains("could not acquire lock") => {
                if started.elapsed() >= LOCK_WAIT {
                    return Err(Error::Io {
                        path: dir.to_path_buf(),
                        source: std::io::Error::new(
                            std::io::ErrorKind::WouldBlock,
                            "the data directory is in use by another node; give each node its own",
                        ),
                    });
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            other => return Ok(other?),
        }
    }
}

const PREFIX_LEN: usize = 36;

fn prefix(resource: &ResourceId, kind: Kind) -> [u8; PREFIX_LEN] {
    let mut prefix = [0u8; PREFIX_LEN];
    prefix[..32].copy_from_slice(resource.as_bytes());
    prefix[32..].copy_from_slice(&kind.0.to_be_bytes());
    prefix
}

fn full_key(resource: &ResourceId, kind: Kind, key: &[u8]) -> Vec<u8> {
    let mut full = Vec::with_capacity(PREFIX_LEN + key.len());
    full.extend_from_slice(&prefix(resource, kind));
    full.extend_from_slice(key);
    full
}

/// The smallest key greater than every key that starts with `prefix`.
fn successor(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut next = prefix.to_vec();
    while let Some(last) = next.pop() {
        if last < u8::MAX {
            next.push(last + 1);
            return Some(next);
        }
    }
    None
}

fn decode_entry(bytes: &[u8]) -> Result<StoredData, Error> {
    decode_value(bytes, "stored entry").map_err(|error| Error::Corrupt {
        what: error.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn successor_skips_the_whole_prefix() {
        assert_eq!(successor(&[1, 2]), Some(vec![1, 3]));
        assert_eq!(successor(&[1, 255]), Some(vec![2]));
        assert_eq!(successor(&[255, 255]), None);
    }
}
