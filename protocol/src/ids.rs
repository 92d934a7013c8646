//! The ids that cross every boundary: who a user is, and which
//! conversation, message, stream and session a frame is about.
//!
//! They are all strings on the wire, and all different things: a newtype
//! each means a stream id can never be passed where a conversation id is
//! expected. Inside they are `Arc<str>`, so the many copies an id has (the
//! stream log, every outbox following it, the registry) share one
//! allocation. Server-made ids are UUIDv7 ([`StreamId::generate`] and
//! friends), time-ordered, so stores can use them as clustering keys.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[cfg_attr(test, derive(ts_rs::TS))]
        #[serde(transparent)]
        pub struct $name(Arc<str>);

        impl $name {
            pub fn new(id: impl Into<Arc<str>>) -> $name {
                $name(id.into())
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(&*self.0, f)
            }
        }

        impl std::ops::Deref for $name {
            type Target = str;
            fn deref(&self) -> &str {
                &self.0
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl std::borrow::Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }

        impl From<&str> for $name {
            fn from(id: &str) -> $name {
                $name(id.into())
            }
        }

        impl From<String> for $name {
            fn from(id: String) -> $name {
                $name(id.into())
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                &*self.0 == other
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                &*self.0 == *other
            }
        }
    };
}

macro_rules! generated_id {
    ($name:ident) => {
        impl $name {
            /// A new time-ordered unique id (UUIDv7, hyphenated).
            pub fn generate() -> $name {
                $name(uuid::Uuid::now_v7().to_string().into())
            }
        }
    };
}

id_type!(
    /// A user: the `sub` of their token.
    UserId
);
id_type!(
    /// A conversation of one user.
    ConversationId
);
id_type!(
    /// A stored message (the user's, or the assistant's answer).
    MessageId
);
id_type!(
    /// One generation: the unit of `delta` frames, `cancel` and `resume`.
    StreamId
);
id_type!(
    /// One authenticated connection.
    SessionId
);
id_type!(
    /// A client's `send.id`: its idempotency key within the user.
    ClientMessageId
);

generated_id!(ConversationId);
generated_id!(MessageId);
generated_id!(StreamId);
generated_id!(SessionId);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_plain_strings_on_the_wire() {
        let id = StreamId::from("s-1");
        assert_eq!(serde_json::to_string(&id).unwrap(), "\"s-1\"");
        let back: StreamId = serde_json::from_str("\"s-1\"").unwrap();
        assert_eq!(back, id);
        assert_eq!(format!("{id} {id:?}"), "s-1 \"s-1\"");
    }

    #[test]
    fn generated_ids_are_time_ordered() {
        let a = MessageId::generate();
        let b = MessageId::generate();
        assert!(a < b, "{a} then {b}");
        assert_eq!(a.len(), 36);
    }
}
