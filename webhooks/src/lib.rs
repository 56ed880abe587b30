//! Verification of platform webhook deliveries: pure, synchronous functions of
//! (secret, headers, raw bytes). Nothing here performs I/O, logs, or parses JSON
//! before the signature has been checked.
//!
//! A successful check yields [`Verified`], which only this crate can construct, so
//! code downstream can demand proof that a payload was authenticated.

mod error;
pub mod meta;
pub mod signed_request;
pub mod slack;
// -- telegram, discord ----------------------------------------------------------
pub mod discord;
pub mod telegram;
mod window;

pub use error::VerifyError;

/// A value whose authenticity was checked by one of this crate's verifiers.
///
/// The field is private: outside this crate a `Verified` can only be obtained from a
/// verifier, never built by hand.
#[derive(Debug, Clone, Copy)]
pub struct Verified<T>(T);

impl<T> Verified<T> {
    pub(crate) fn new(inner: T) -> Self {
        Self(inner)
    }

    /// The authenticated value.
    pub fn get(&self) -> &T {
        &self.0
    }

    /// Consumes the proof and returns the authenticated value.
    pub fn into_inner(self) -> T {
        self.0
    }

    /// Keeps the proof while transforming the value (e.g. bytes to a parsed form).
    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> Verified<U> {
        Verified(f(self.0))
    }
}
