//! Lease files: who holds a slot, with which epoch, and whether they live.
//!
//! Each slot (one per partition) of a group has `slot-NNNN/lease`. Its holder
//! keeps an exclusive `flock` on it (the kernel drops it the moment the holder
//! dies) and rewrites the record below as a heartbeat. The record is for
//! liveness and for humans; fencing does not depend on it (see `slot.rs`).
//!
//! ```text
//! offset size field
//!  0     8    magic         b"DURQLEAS"
//!  8     4    version       FORMAT_VERSION
//! 12     4    slot          the partition the slot covers
//! 16     8    epoch         the holder's fencing epoch
//! 24    16    member_id     random id of the holder; all zeros = released
//! 40     4    pid           the holder's process id (for humans)
//! 44     4    reserved      zero
//! 48    16    boot_id       the kernel boot the holder runs in
//! 64     8    heartbeat_ms  last sign of life, ms since the Unix epoch
//! 72    32    host          host name, UTF-8, zero-padded
//! 104    8    timeout_ms    the holder's lease timeout: older heartbeats mean hung
//! 112   12    reserved      zero
//! 124    4    crc32         CRC32 of bytes 0..124
//! ```

use crate::codec;
use crate::meta::FORMAT_VERSION;

/// Bytes of a lease record.
pub const LEASE_BYTES: usize = 128;
const MAGIC: [u8; 8] = *b"DURQLEAS";
const VERSION_AT: usize = 8;
const SLOT_AT: usize = 12;
const EPOCH_AT: usize = 16;
const MEMBER_AT: usize = 24;
const PID_AT: usize = 40;
const BOOT_AT: usize = 48;
const HEARTBEAT_AT: usize = 64;
const HOST_AT: usize = 72;
const HOST_BYTES: usize = 32;
const TIMEOUT_AT: usize = HOST_AT + HOST_BYTES;
const CRC_AT: usize = 124;
const _: () = assert!(CRC_AT + 4 == LEASE_BYTES);
const _: () = assert!(TIMEOUT_AT + 8 <= CRC_AT);

/// A random member id; all zeros means "nobody".
pub type MemberId = [u8; 16];
/// The member id of a released lease: nobody holds the slot.
pub const NOBODY: MemberId = [0; 16];

/// The contents of a lease file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// The slot (partition) it covers.
    pub slot: u32,
    /// The holder's fencing epoch.
    pub epoch: u64,
    /// The holder; all zeros once released.
    pub member: MemberId,
    /// The holder's process id.
    pub pid: u32,
    /// The kernel boot the holder runs in.
    pub boot_id: [u8; 16],
    /// Last heartbeat, ms since the Unix epoch.
    pub heartbeat_ms: u64,
    /// The holder's host name (truncated to 32 bytes).
    pub host: String,
    /// The holder's lease timeout in ms: a heartbeat older than this
    /// means the holder is hung.
    pub timeout_ms: u64,
}

impl Lease {
    /// True once the holder let the slot go.
    pub fn is_released(&self) -> bool {
        self.member == NOBODY
    }

    /// True if the last heartbeat is older than the holder's own timeout.
    pub fn is_stale(&self, now_ms: u64) -> bool {
        now_ms.saturating_sub(self.heartbeat_ms) > self.timeout_ms
    }
}

/// Why a lease record was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseError {
    /// No lease file: the slot was never taken.
    Missing,
    /// Shorter than a record (or empty: never written).
    Truncated,
    /// Not a lease record.
    BadMagic,
    /// The checksum does not match.
    BadChecksum,
    /// Another format version.
    Version(u32),
    /// A lease of another slot.
    WrongSlot(u32),
}

impl std::fmt::Display for LeaseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LeaseError::Missing => f.write_str("no lease file"),
            LeaseError::Truncated => f.write_str("lease record cut short"),
            LeaseError::BadMagic => f.write_str("bad lease magic"),
            LeaseError::BadChecksum => f.write_str("lease checksum mismatch"),
            LeaseError::Version(v) => write!(f, "lease format version {v}"),
            LeaseError::WrongSlot(s) => write!(f, "lease belongs to slot {s}"),
        }
    }
}

/// Encodes a lease record.
pub fn encode(lease: &Lease) -> [u8; LEASE_BYTES] {
    let mut b = [0u8; LEASE_BYTES];
    b[..VERSION_AT].copy_from_slice(&MAGIC);
    b[VERSION_AT..SLOT_AT].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    b[SLOT_AT..EPOCH_AT].copy_from_slice(&lease.slot.to_le_bytes());
    b[EPOCH_AT..MEMBER_AT].copy_from_slice(&lease.epoch.to_le_bytes());
    b[MEMBER_AT..PID_AT].copy_from_slice(&lease.member);
    b[PID_AT..PID_AT + 4].copy_from_slice(&lease.pid.to_le_bytes());
    b[BOOT_AT..HEARTBEAT_AT].copy_from_slice(&lease.boot_id);
    b[HEARTBEAT_AT..HOST_AT].copy_from_slice(&lease.heartbeat_ms.to_le_bytes());
    let host = truncate_utf8(&lease.host, HOST_BYTES);
    b[HOST_AT..HOST_AT + host.len()].copy_from_slice(host.as_bytes());
    b[TIMEOUT_AT..TIMEOUT_AT + 8].copy_from_slice(&lease.timeout_ms.to_le_bytes());
    let crc = crc32fast::hash(&b[..CRC_AT]);
    b[CRC_AT..].copy_from_slice(&crc.to_le_bytes());
    b
}

/// Decodes a lease record of `slot`: magic, then checksum, then version,
/// then slot.
pub fn decode(b: &[u8], slot: u32) -> Result<Lease, LeaseError> {
    let b = b.get(..LEASE_BYTES).ok_or(LeaseError::Truncated)?;
    if b[..VERSION_AT] != MAGIC {
        return Err(LeaseError::BadMagic);
    }
    if crc32fast::hash(&b[..CRC_AT]) != codec::u32_at(b, CRC_AT) {
        return Err(LeaseError::BadChecksum);
    }
    if codec::u32_at(b, VERSION_AT) != FORMAT_VERSION {
        return Err(LeaseError::Version(codec::u32_at(b, VERSION_AT)));
    }
    if codec::u32_at(b, SLOT_AT) != slot {
        return Err(LeaseError::WrongSlot(codec::u32_at(b, SLOT_AT)));
    }
    let host = &b[HOST_AT..HOST_AT + HOST_BYTES];
    let host_len = host.iter().position(|&c| c == 0).unwrap_or(HOST_BYTES);
    Ok(Lease {
        slot,
        epoch: codec::u64_at(b, EPOCH_AT),
        member: id_at(b, MEMBER_AT),
        pid: codec::u32_at(b, PID_AT),
        boot_id: id_at(b, BOOT_AT),
        heartbeat_ms: codec::u64_at(b, HEARTBEAT_AT),
        host: String::from_utf8_lossy(&host[..host_len]).into_owned(),
        timeout_ms: codec::u64_at(b, TIMEOUT_AT),
    })
}

/// The 16-byte id at `at` of a whole record `b`.
fn id_at(b: &[u8], at: usize) -> [u8; 16] {
    let mut id = [0; 16];
    id.copy_from_slice(&b[at..at + 16]);
    id
}

/// The longest prefix of `s` of at most `max` bytes that ends on a
/// character boundary.
fn truncate_utf8(s: &str, max: usize) -> &str {
    // A bounded search down to 0, always a boundary: no step can make it
    // run forever (a `while` loop stepping back one byte at a time could,
    // given a wrong step).
    let end = (0..=s.len().min(max)).rev().find(|&end| s.is_char_boundary(end)).unwrap_or(0);
    &s[..end]
}

pub use crate::layout::member_hex;

#[cfg(test)]
mod tests {
    use super::*;

    fn lease() -> Lease {
        Lease {
            slot: 3,
            epoch: 9,
            member: [7; 16],
            pid: 4242,
            boot_id: [1; 16],
            heartbeat_ms: 1_700_000_000_000,
            host: "host-é".into(),
            timeout_ms: 10_000,
        }
    }

    #[test]
    fn lease_golden_bytes_round_trip() {
        let b = encode(&lease());
        assert_eq!(&b[..8], b"DURQLEAS");
        assert_eq!(b[12..16], 3u32.to_le_bytes());
        assert_eq!(b[16..24], 9u64.to_le_bytes());
        assert_eq!(b[24..40], [7; 16]);
        assert_eq!(b[40..44], 4242u32.to_le_bytes());
        assert_eq!(b[48..64], [1; 16]);
        assert_eq!(b[64..72], 1_700_000_000_000u64.to_le_bytes());
        assert_eq!(&b[72..79], "host-é".as_bytes());
        assert_eq!(b[104..112], 10_000u64.to_le_bytes());
        assert_eq!(b[124..], crc32fast::hash(&b[..124]).to_le_bytes());
        assert_eq!(decode(&b, 3).unwrap(), lease());
    }

    #[test]
    fn lease_damage_is_a_typed_error() {
        let b = encode(&lease());
        assert_eq!(decode(&b[..100], 3), Err(LeaseError::Truncated));
        assert_eq!(decode(&[0; LEASE_BYTES], 3), Err(LeaseError::BadMagic));
        let mut flipped = b;
        flipped[30] ^= 1;
        assert_eq!(decode(&flipped, 3), Err(LeaseError::BadChecksum));
        assert_eq!(decode(&b, 4), Err(LeaseError::WrongSlot(3)));
    }

    #[test]
    fn long_host_names_are_cut_on_a_char_boundary() {
        let l = Lease { host: "é".repeat(40), ..lease() };
        assert_eq!(decode(&encode(&l), 3).unwrap().host, "é".repeat(16));
        // Byte 32 falls inside a character here: the cut backs off to 31.
        let host = format!("x{}", "é".repeat(20));
        assert!(!host.is_char_boundary(HOST_BYTES));
        let l = Lease { host, ..lease() };
        assert_eq!(decode(&encode(&l), 3).unwrap().host, format!("x{}", "é".repeat(15)));
        assert_eq!(truncate_utf8("é", 1), "", "a first character longer than the room");
        assert_eq!(truncate_utf8("short", HOST_BYTES), "short");
    }

    #[test]
    fn a_lease_is_stale_only_once_its_heartbeat_is_older_than_its_timeout() {
        let l = lease();
        let deadline = l.heartbeat_ms + l.timeout_ms;
        assert!(!l.is_stale(deadline), "a heartbeat exactly the timeout old is still fresh");
        assert!(l.is_stale(deadline + 1));
        assert!(!l.is_stale(l.heartbeat_ms - 1), "a clock behind the heartbeat is not staleness");
    }

    #[test]
    fn a_lease_is_released_only_when_its_member_is_all_zeros() {
        assert!(!lease().is_released());
        assert!(Lease { member: [0; 16], ..lease() }.is_released());
        let mut member = [0; 16];
        member[15] = 1;
        assert!(!Lease { member, ..lease() }.is_released(), "one non-zero byte names a holder");
    }
}
