//! SHA-256 digests, for two things: ids derived from outside text that SQS FIFO accepts
//! (message group and deduplication ids: at most 128 characters of a fixed set), and
//! fixed-size keys for the skip caches (a body's digest instead of the body: bounded memory).

use sha2::{Digest, Sha256};

/// The first 128 bits of SHA-256 of `bytes`: a cache key (collisions: 2^-64 after 2^32 keys).
pub fn digest128(bytes: &[u8]) -> u128 {
    let hash = Sha256::digest(bytes);
    let mut first = [0u8; 16];
    first.copy_from_slice(&hash[..16]);
    u128::from_be_bytes(first)
}

/// SHA-256 of `bytes` as 64 lower-case hex digits.
pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// Longest message group or deduplication id SQS accepts.
pub const MAX_SQS_ID_CHARS: usize = 128;

/// Whether SQS accepts `text` as a message group or deduplication id as it is: 1 to 128
/// characters of `a-z A-Z 0-9` and ``!"#$%&'()*+,-./:;<=>?@[\]^_`{|}~``.
pub fn is_sqs_id(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= MAX_SQS_ID_CHARS
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b.is_ascii_punctuation())
}

/// `text` when SQS accepts it as an id, else `h-` and its SHA-256 in hex: the same text
/// always gives the same id.
pub fn sqs_id(text: &str) -> String {
    if is_sqs_id(text) {
        text.to_string()
    } else {
        format!("h-{}", sha256_hex(text.as_bytes()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqs_ids_pass_through_or_are_hashed() {
        assert_eq!(sqs_id("user-1@example.com"), "user-1@example.com");
        assert_eq!(sqs_id("a{b}|~`[x]"), "a{b}|~`[x]");
        for unusable in ["", "with space", "é", "tab\t", &"x".repeat(129)] {
            let id = sqs_id(unusable);
            assert!(
                id.starts_with("h-") && id.len() == 66,
                "{unusable:?} -> {id}"
            );
            assert!(is_sqs_id(&id));
            assert_eq!(id, sqs_id(unusable), "stable");
        }
        assert_ne!(sqs_id("a b"), sqs_id("a  b"));
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(digest128(b"abc") >> 96, 0xba7816bf);
    }
}
