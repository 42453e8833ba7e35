//! AES-256-GCM, the one cipher of every format here, behind three calls. ring's
//! assembly (AES-NI, VAES, carry-less multiply) seals at memory speed; nothing else in
//! the crate names it.

use rand::RngCore;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};

pub const NONCE_LEN: usize = 12;
pub const TAG_LEN: usize = 16;

/// One key, ready to seal and open.
pub struct AeadKey(LessSafeKey);

impl AeadKey {
    pub fn new(key: &[u8; 32]) -> Self {
        let unbound = UnboundKey::new(&AES_256_GCM, key)
            .unwrap_or_else(|_| unreachable!("AES-256-GCM takes any 32-byte key"));
        Self(LessSafeKey::new(unbound))
    }

    /// Encrypts `buf` in place under a fresh random nonce; returns nonce and tag.
    pub fn seal_in_place(&self, aad: &[u8], buf: &mut [u8]) -> ([u8; NONCE_LEN], [u8; TAG_LEN]) {
        let mut nonce = [0u8; NONCE_LEN];
        rand::thread_rng().fill_bytes(&mut nonce);
        let tag = self
            .0
            .seal_in_place_separate_tag(Nonce::assume_unique_for_key(nonce), Aad::from(aad), buf)
            .unwrap_or_else(|_| unreachable!("GCM seals up to 64 GiB per message"));
        let mut t = [0u8; TAG_LEN];
        t.copy_from_slice(tag.as_ref());
        (nonce, t)
    }

    /// `nonce || ciphertext || tag` of `plain`.
    pub fn seal(&self, aad: &[u8], plain: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(NONCE_LEN + plain.len() + TAG_LEN);
        out.extend_from_slice(&[0u8; NONCE_LEN]);
        out.extend_from_slice(plain);
        let (nonce, tag) = self.seal_in_place(aad, &mut out[NONCE_LEN..]);
        out[..NONCE_LEN].copy_from_slice(&nonce);
        out.extend_from_slice(&tag);
        out
    }

    /// Decrypts `ciphertext || tag` in place; returns the plaintext part, or `None` if
    /// authentication fails (then `buf` holds nothing usable).
    pub fn open_in_place<'b>(
        &self,
        nonce: &[u8],
        aad: &[u8],
        buf: &'b mut [u8],
    ) -> Option<&'b mut [u8]> {
        let nonce: [u8; NONCE_LEN] = nonce.try_into().ok()?;
        self.0
            .open_in_place(Nonce::assume_unique_for_key(nonce), Aad::from(aad), buf)
            .ok()
    }

    /// Decrypts the `ciphertext || tag` at `in_out[from..]` and writes the plaintext
    /// to the start of `in_out`, in one pass; returns its length, or `None` if
    /// authentication fails.
    pub fn open_within(
        &self,
        nonce: &[u8],
        aad: &[u8],
        in_out: &mut [u8],
        from: usize,
    ) -> Option<usize> {
        let nonce: [u8; NONCE_LEN] = nonce.try_into().ok()?;
        self.0
            .open_within(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad),
                in_out,
                from..,
            )
            .ok()
            .map(|p| p.len())
    }

    /// Opens `nonce || ciphertext || tag`.
    pub fn open(&self, aad: &[u8], sealed: &[u8]) -> Option<Vec<u8>> {
        if sealed.len() < NONCE_LEN + TAG_LEN {
            return None;
        }
        let mut buf = sealed[NONCE_LEN..].to_vec();
        let n = self
            .open_in_place(&sealed[..NONCE_LEN], aad, &mut buf)?
            .len();
        buf.truncate(n);
        Some(buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_and_tamper() {
        let k = AeadKey::new(&[7; 32]);
        let s = k.seal(b"ad", b"hello");
        assert_eq!(k.open(b"ad", &s).unwrap(), b"hello");
        assert!(k.open(b"other", &s).is_none());
        let mut t = s.clone();
        t[13] ^= 1;
        assert!(k.open(b"ad", &t).is_none());
        assert!(AeadKey::new(&[8; 32]).open(b"ad", &s).is_none());
        assert!(k.open(b"ad", &s[..10]).is_none());
        // The plaintext lands at the start of the buffer, wherever the input began.
        let mut buf = vec![0u8; 5];
        buf.extend_from_slice(&s);
        let n = k.open_within(&s[..NONCE_LEN], b"ad", &mut buf, 5 + NONCE_LEN);
        assert_eq!(n, Some(5));
        assert_eq!(&buf[..5], b"hello");
    }
}
