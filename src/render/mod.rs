//! Rendering: turning a recipient and a job's text into the message that goes out.
//!
//! So far the SMS side: encoding and part counting ([`sms`]). Templates join with the
//! dispatch engine.

pub mod sms;
pub mod stored;
pub mod template;
