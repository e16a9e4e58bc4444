//! Typed identifiers. Every id is a UUIDv7, so ids sort by creation time and
//! double as pagination cursors; the newtypes keep a `UserId` from being passed
//! where a `ProjectId` is expected.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

macro_rules! id_type {
    ($(#[$meta:meta])* $name:ident) => {
        $(#[$meta])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(Uuid);

        impl $name {
            /// A fresh, time-ordered id.
            #[allow(clippy::new_without_default)]
            pub fn new() -> Self {
                Self(Uuid::now_v7())
            }

            pub const fn from_uuid(uuid: Uuid) -> Self {
                Self(uuid)
            }

            pub const fn as_uuid(&self) -> Uuid {
                self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0, f)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.0)
            }
        }

        impl FromStr for $name {
            type Err = uuid::Error;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Uuid::parse_str(s).map(Self)
            }
        }
    };
}

id_type!(
    /// A construction company: the unit of isolation.
    TenantId
);
id_type!(
    /// A person inside one tenant.
    UserId
);
id_type!(
    /// A construction project of one tenant.
    ProjectId
);
id_type!(
    /// One project membership row; its ordering paginates member lists.
    MembershipId
);
id_type!(
    /// One refresh token.
    RefreshTokenId
);
id_type!(
    /// A login session: every refresh token rotated from one login shares it.
    SessionFamilyId
);
id_type!(
    /// One uploaded (or being uploaded) file.
    UploadId
);
id_type!(
    /// One job of the processing queue.
    JobId
);
