//! Time and nonces come in from outside the engine, as in the core: the service runs
//! on [`SystemClock`] and [`OsNonces`], and tests can drive time and nonces themselves.

use rand_core::{OsRng, RngCore};
use vigil_core::attestation::UnixTime;

/// Where the verifier reads the time.
pub trait Clock: Send + Sync + 'static {
    /// Now.
    fn now(&self) -> UnixTime;

    /// Now, in whole seconds since the epoch (the store's unit).
    fn now_secs(&self) -> i64 {
        i64::try_from(self.now().as_secs()).unwrap_or(i64::MAX)
    }
}

/// The system's wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> UnixTime {
        let ms = std::time::SystemTime::now()
            .duration_since(std::time::SystemTime::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        UnixTime::from_millis(ms)
    }
}

/// Where quote nonces come from.
pub trait NonceSource: Send + Sync + 'static {
    /// A fresh nonce in Keylime's shape: 20 characters of `[A-Za-z0-9]`.
    fn nonce(&self) -> String;

    /// The 16 random bytes of an integrity event's uuid.
    fn event_uuid(&self) -> [u8; 16] {
        let mut b = [0u8; 16];
        OsRng.fill_bytes(&mut b);
        b
    }
}

/// Nonces from the operating system's generator.
#[derive(Debug, Clone, Copy, Default)]
pub struct OsNonces;

impl NonceSource for OsNonces {
    fn nonce(&self) -> String {
        keylime_nonce(&mut OsRng)
    }
}

/// Keylime's nonce from `rng`: 20 characters of `[A-Za-z0-9]` (rejection sampling, so
/// every character is equally likely).
pub fn keylime_nonce(rng: &mut dyn RngCore) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut out = String::with_capacity(20);
    let mut buf = [0u8; 32];
    while out.len() < 20 {
        rng.fill_bytes(&mut buf);
        for b in buf {
            // 248 = 4 × 62: bytes above it would bias the first characters.
            if b < 248 && out.len() < 20 {
                out.push(char::from(ALPHABET[usize::from(b % 62)]));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nonces_are_keylimes_shape_and_fresh() {
        let a = OsNonces.nonce();
        assert_eq!(a.len(), 20);
        assert!(a.bytes().all(|b| b.is_ascii_alphanumeric()));
        assert_ne!(a, OsNonces.nonce());
    }
}
