//! Group names: what a consumer group may be called.
//!
//! A name becomes a directory under `groups/`, so it must never escape it:
//! 1 to [`GROUP_NAME_BYTES_MAX`] bytes of ASCII letters, digits, `-`, `_` and
//! `.`, not starting with `.` (which also rules out `.` and `..`).

use crate::error::{Error, Result};

/// Longest group name, in bytes.
pub const GROUP_NAME_BYTES_MAX: usize = 64;

/// Checks `name` against the rules above.
pub fn validate(name: &str) -> Result<()> {
    let reason = if name.is_empty() {
        Some("is empty")
    } else if name.len() > GROUP_NAME_BYTES_MAX {
        Some("is longer than 64 bytes")
    } else if name.starts_with('.') {
        Some("starts with '.'")
    } else if !name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.')) {
        Some("may only contain ASCII letters, digits, '-', '_' and '.'")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(Error::InvalidGroupName { name: name.to_owned(), reason }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_names_that_stay_inside_the_queue_are_accepted() {
        for ok in ["red-packet", "a", "orders_v2.1", &"x".repeat(64), "A-Z.0_9"] {
            validate(ok).unwrap();
        }
    }

    #[test]
    fn group_names_that_could_escape_or_confuse_are_rejected() {
        for bad in ["", "..", ".", "../x", "a/b", "a\\b", ".hidden", &"x".repeat(65), "sp ace", "nul\0", "ünï"] {
            assert!(matches!(validate(bad), Err(Error::InvalidGroupName { .. })), "{bad:?}");
        }
    }
}
