//! Reading the little-endian integers of durq's fixed-layout files.
//!
//! Every durq file stores its integers little-endian at fixed byte
//! positions (docs/FORMAT.md gives each layout). The decoders check a
//! buffer's length before they read its fields, so a field out of range is
//! a bug in the decoder, and indexing panics on it like any slice index.

/// The `u16` stored at `b[at..at + 2]`.
pub(crate) fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

/// The `u32` stored at `b[at..at + 4]`.
pub(crate) fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut field = [0; 4];
    field.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(field)
}

/// The `u64` stored at `b[at..at + 8]`.
pub(crate) fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut field = [0; 8];
    field.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(field)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_read_little_endian_at_their_position() {
        let b = [0xff, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0xff];
        assert_eq!(u16_at(&b, 1), 0x0201);
        assert_eq!(u32_at(&b, 1), 0x0403_0201);
        assert_eq!(u64_at(&b, 1), 0x0807_0605_0403_0201);
    }

    #[test]
    #[should_panic]
    fn a_field_past_the_end_is_a_bug() {
        u32_at(&[0; 4], 1);
    }
}
