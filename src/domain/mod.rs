//! The gateway's vocabulary, below every other module: validated identifier
//! newtypes and the contract's error codes.

mod error;
mod ids;
mod shared;

pub use error::{ApiError, Code};
pub use ids::{JobId, PhoneId, ProjectId, Region, RequestId, TenantId, is_valid_id, truncate};
pub use shared::{SharedStr, cow_opt, share_last, shared_opt};
