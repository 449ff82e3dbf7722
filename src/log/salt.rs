//! The frame salt: a random number in a segment's header (version 2) that
//! seeds the CRC32 of every frame in that segment (docs/FORMAT.md, "Frame
//! salt").
//!
//! A frame's checksum is CRC32 started from the salt instead of from zero
//! (`crc32fast::Hasher::new_with_initial`). CRC32 is affine in its starting
//! value: `crc(s, bytes) = shift(s) ^ crc(0, bytes)`, where `shift` depends
//! only on the length of `bytes` and is linear and invertible (a multiply
//! by a power of `x` modulo the CRC polynomial, which `x` does not divide).
//! So the same bytes checksummed under two different salts *always* get
//! different checksums: a frame written under another salt (another
//! segment, another life of the same file) never validates here, whatever
//! its bytes, rather than failing with probability 1 − 2⁻³² as damage does.
//! Salt zero is plain CRC32: the frames of version-1 segments, which carry
//! no salt, are read as [`Salt::UNSALTED`].
//!
//! The same invertibility lets recovery find a salt again from a frame
//! alone ([`Salt::solving`]) when a segment's header was lost (row 5z).

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher as _};
use std::sync::atomic::{AtomicU64, Ordering};

/// What the checksums of one segment's frames are seeded with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Salt(u32);

impl Salt {
    /// No salt: plain CRC32, as version-1 segments checksum their frames.
    pub const UNSALTED: Salt = Salt(0);

    /// The salt with this value (from a header, or a test).
    pub const fn new(value: u32) -> Salt {
        Salt(value)
    }

    /// Its value, as a header stores it.
    pub const fn get(self) -> u32 {
        self.0
    }

    /// A new random salt for a new segment: never [`Salt::UNSALTED`] (a
    /// version-2 segment's frames must not validate as a version-1
    /// segment's) and never `other` (the salt of the file's previous life,
    /// or of the segment before it), so the frames of those two never
    /// validate here. Any other two segments get the same salt with
    /// probability 2⁻³².
    pub fn fresh(other: Salt) -> Salt {
        // Process-wide: two segments created in the same nanosecond still
        // differ. `RandomState` keys come from the OS's random source.
        static CREATED: AtomicU64 = AtomicU64::new(0);
        loop {
            let mut h = RandomState::new().build_hasher();
            h.write_u64(CREATED.fetch_add(1, Ordering::Relaxed));
            h.write_u32(std::process::id());
            if let Ok(since_epoch) = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
                h.write_u128(since_epoch.as_nanos());
            }
            let wide = h.finish();
            let salt = Salt((wide ^ (wide >> 32)) as u32);
            if salt != Salt::UNSALTED && salt != other {
                return salt;
            }
        }
    }

    /// A CRC32 hasher seeded with this salt.
    pub(crate) fn hasher(self) -> crc32fast::Hasher {
        crc32fast::Hasher::new_with_initial(self.0)
    }

    /// CRC32 of `bytes` seeded with this salt.
    pub fn checksum(self, bytes: &[u8]) -> u32 {
        let mut h = self.hasher();
        h.update(bytes);
        h.finalize()
    }

    /// The one salt under which `bytes` checksum to `stored`. `None` never
    /// happens for CRC32 (the shift is invertible), but is not assumed.
    /// Costs one plain CRC of `bytes` and 32 `combine`s.
    pub fn solving(bytes: &[u8], stored: u32) -> Option<Salt> {
        let unsalted = crc32fast::hash(bytes);
        let len = bytes.len() as u64;
        let shift = |salt: u32| {
            let mut h = crc32fast::Hasher::new_with_initial_len(salt, 0);
            h.combine(&crc32fast::Hasher::new_with_initial_len(unsalted, len));
            h.finalize() ^ unsalted
        };
        // Gaussian elimination over GF(2): `basis[b]` holds an image with
        // highest set bit `b`, and the salt that maps to it.
        let mut basis = [(0u32, 0u32); 32];
        for bit in 0..32 {
            let (mut image, mut salt) = (shift(1 << bit), 1u32 << bit);
            while image != 0 {
                let top = (31 - image.leading_zeros()) as usize;
                if basis[top].0 == 0 {
                    basis[top] = (image, salt);
                    break;
                }
                image ^= basis[top].0;
                salt ^= basis[top].1;
            }
        }
        let (mut want, mut salt) = (stored ^ unsalted, 0u32);
        while want != 0 {
            let top = (31 - want.leading_zeros()) as usize;
            if basis[top].0 == 0 {
                return None;
            }
            want ^= basis[top].0;
            salt ^= basis[top].1;
        }
        Some(Salt(salt))
    }
}

/// A salt with its CRC32 hasher made once: `crc32fast::Hasher` looks the
/// CPU's features up each time one is made (`new_with_initial`), which was
/// a tenth of a 100-byte frame's check on the read path; a clone of a made
/// one does not.
#[derive(Clone)]
pub(crate) struct SaltedCrc {
    salt: Salt,
    made: crc32fast::Hasher,
}

impl SaltedCrc {
    pub(crate) fn new(salt: Salt) -> SaltedCrc {
        SaltedCrc { salt, made: salt.hasher() }
    }

    pub(crate) fn salt(&self) -> Salt {
        self.salt
    }

    /// [`Salt::checksum`] of `bytes`.
    pub(crate) fn checksum(&self, bytes: &[u8]) -> u32 {
        let mut h = self.made.clone();
        h.update(bytes);
        h.finalize()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn salt_zero_is_plain_crc32() {
        assert_eq!(Salt::UNSALTED.checksum(b"hello"), crc32fast::hash(b"hello"));
    }

    #[test]
    fn a_made_hasher_checksums_as_its_salt_does_every_time() {
        let bytes: Vec<u8> = (0..300u32).map(|i| (i * 7 % 253) as u8).collect();
        for salt in [Salt::UNSALTED, Salt::new(0x5a17_c0de)] {
            let crc = SaltedCrc::new(salt);
            for len in [0, 3, 16, 60, 132, 300] {
                assert_eq!(crc.checksum(&bytes[..len]), salt.checksum(&bytes[..len]), "len {len}, {salt:?}");
                assert_eq!(crc.checksum(&bytes[..len]), salt.checksum(&bytes[..len]), "again: len {len}, {salt:?}");
            }
        }
    }

    #[test]
    fn the_same_bytes_under_two_salts_never_share_a_checksum() {
        // Not a probability: the shift of a non-zero salt difference is
        // never zero. Checked over every single-bit and some random
        // differences, at lengths around a frame's.
        let bytes: Vec<u8> = (0..200u32).map(|i| (i * 31 % 251) as u8).collect();
        for len in [0, 1, 28, 100, 132, 200] {
            let body = &bytes[..len];
            for a in [0u32, 1, 0xdead_beef] {
                for diff in (0..32).map(|b| 1u32 << b).chain([3, 0x8000_0001, 0x1234_5678]) {
                    let (x, y) = (Salt::new(a), Salt::new(a ^ diff));
                    assert_ne!(x.checksum(body), y.checksum(body), "len {len}, salts {x:?} {y:?}");
                }
            }
        }
    }

    #[test]
    fn a_salt_is_found_again_from_checksummed_bytes() {
        let bytes = b"some frame bytes, of no particular length".repeat(3);
        for value in [0u32, 1, 0xffff_ffff, 0x5a5a_0001, Salt::fresh(Salt::UNSALTED).get()] {
            let salt = Salt::new(value);
            for len in [0, 7, 64, bytes.len()] {
                let stored = salt.checksum(&bytes[..len]);
                assert_eq!(Salt::solving(&bytes[..len], stored), Some(salt), "len {len}");
            }
        }
    }

    #[test]
    fn fresh_salts_are_never_zero_nor_the_one_to_avoid() {
        let mut last = Salt::UNSALTED;
        for _ in 0..1000 {
            let next = Salt::fresh(last);
            assert!(next != Salt::UNSALTED && next != last);
            last = next;
        }
    }
}
