//! Domain newtypes shared by every stage: sequence numbers, message ids and
//! validated names; and the header names with a fixed meaning to the relay. Parsing happens here once; the rest of the code trusts them.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Position of a message in the log; strictly increasing, never reused.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Seq(pub u64);

impl Seq {
    /// The seq right after this one.
    pub fn next(self) -> Seq {
        Seq(self.0.saturating_add(1))
    }

    /// Big-endian bytes, so sled's byte order is numeric order.
    pub fn to_be_bytes(self) -> [u8; 8] {
        self.0.to_be_bytes()
    }

    /// Inverse of [`Seq::to_be_bytes`].
    pub fn from_be_bytes(b: [u8; 8]) -> Seq {
        Seq(u64::from_be_bytes(b))
    }
}

impl fmt::Display for Seq {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// The relay's id for a message (`webhook-id` on every delivery): `msg_` + 26 base32 chars.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct MessageId(String);

impl MessageId {
    /// A fresh id: 48 bits of milliseconds then 80 random bits, so ids sort by time.
    pub fn generate(unix_millis: u64) -> MessageId {
        const ALPHABET: &[u8; 32] = b"0123456789abcdefghjkmnpqrstvwxyz";
        let rand: u128 = rand::random::<u128>() & ((1u128 << 80) - 1);
        let v: u128 = ((unix_millis as u128 & ((1u128 << 48) - 1)) << 80) | rand;
        let mut s = String::with_capacity(30);
        s.push_str("msg_");
        for i in (0..26).rev() {
            s.push(ALPHABET[((v >> (i * 5)) & 31) as usize] as char);
        }
        MessageId(s)
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Why a name was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid name {0:?}: use 1 to 64 characters from a-z, 0-9, '_' and '-'")]
pub struct InvalidName(pub String);

fn validate_name(s: &str) -> Result<(), InvalidName> {
    let ok = !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(InvalidName(s.to_string()))
    }
}

macro_rules! name_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// The name as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl FromStr for $name {
            type Err = InvalidName;
            fn from_str(s: &str) -> Result<Self, InvalidName> {
                validate_name(s)?;
                Ok($name(s.to_string()))
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

name_type!(
    /// A source's name from the config: `[a-z0-9_-]{1,64}`.
    SourceName
);
name_type!(
    /// A destination's name from the config: `[a-z0-9_-]{1,64}`.
    DestinationName
);

/// Headers that describe one hop or the framing: never configured for a
/// destination and never forwarded (nor is any `proxy-*` header).
pub const HOP_BY_HOP_HEADERS: &[&str] = &[
    "connection",
    "keep-alive",
    "transfer-encoding",
    "te",
    "trailer",
    "upgrade",
    "host",
    "content-length",
];

/// Headers only the relay sets on a delivery, whatever came in or is configured.
pub const RELAY_HEADERS: &[&str] = &[
    "webhook-id",
    "webhook-timestamp",
    "webhook-signature",
    "x-hookrelay-source",
    "x-hookrelay-seq",
    "x-hookrelay-attempt",
];

/// Whether the header `name` (lowercase) is hop-by-hop, `proxy-*` or the relay's own.
pub fn is_reserved_header(name: &str) -> bool {
    HOP_BY_HOP_HEADERS.contains(&name)
        || name.starts_with("proxy-")
        || RELAY_HEADERS.contains(&name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_accept_the_documented_alphabet_only() {
        assert!("stripe-prod_2".parse::<SourceName>().is_ok());
        for bad in ["", "Stripe", "a b", "a/b", "ü", &"x".repeat(65)] {
            assert!(bad.parse::<DestinationName>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn message_ids_are_unique_and_sort_by_time() {
        let a = MessageId::generate(1_000);
        let b = MessageId::generate(2_000);
        assert_ne!(a, MessageId::generate(1_000));
        assert!(a.as_str() < b.as_str());
        assert_eq!(a.as_str().len(), 30);
    }

    #[test]
    fn seq_bytes_sort_numerically() {
        assert!(Seq(255).to_be_bytes() < Seq(256).to_be_bytes());
        assert_eq!(Seq::from_be_bytes(Seq(42).to_be_bytes()), Seq(42));
    }
}
