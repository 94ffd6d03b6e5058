//! Profile encryption in OpenSSL's salted format, what `openssl enc -aes-256-cbc -k KEY`
//! writes and Cisco phones' `[--key KEY]` profile rules read:
//! `Salted__` ‖ 8-byte salt ‖ AES-256-CBC(PKCS#7), key and IV from EVP_BytesToKey
//! (one iteration of md5 or sha256 over passphrase ‖ salt).
//!
//! The salt is derived from the key and the plaintext rather than drawn at random, so the
//! same profile gives the same bytes over TFTP, HTTP and HTTPS and keeps a stable ETag.
//! That reveals only whether two encrypted profiles are equal.

use std::io::Write;

use aes::cipher::{BlockEncryptMut, KeyIvInit, block_padding::Pkcs7};
use md5::Md5;
use sha2::{Digest as Hash, Sha256};

use super::config::Digest;

type Enc = cbc::Encryptor<aes::Aes256>;

/// One EVP_BytesToKey step: H(previous step ‖ passphrase ‖ salt).
fn round<H: Hash>(prev: &[u8], pass: &[u8], salt: &[u8]) -> Vec<u8> {
    H::new()
        .chain_update(prev)
        .chain_update(pass)
        .chain_update(salt)
        .finalize()
        .to_vec()
}

/// EVP_BytesToKey with one iteration: 32 key bytes then 16 IV bytes.
fn bytes_to_key(digest: Digest, pass: &[u8], salt: &[u8; 8]) -> ([u8; 32], [u8; 16]) {
    let mut material = Vec::with_capacity(64);
    let mut prev: Vec<u8> = Vec::new();
    while material.len() < 48 {
        prev = match digest {
            Digest::Md5 => round::<Md5>(&prev, pass, salt),
            Digest::Sha256 => round::<Sha256>(&prev, pass, salt),
        };
        material.extend_from_slice(&prev);
    }
    let mut key = [0u8; 32];
    let mut iv = [0u8; 16];
    key.copy_from_slice(&material[..32]);
    iv.copy_from_slice(&material[32..48]);
    (key, iv)
}

/// gzip with a fixed header (no name, mtime 0), so equal input gives equal output.
pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    // Writing to a Vec cannot fail.
    let _ = e.write_all(data);
    e.finish().unwrap_or_default()
}

/// Encrypt `plain` (gzipped first if asked) with passphrase `pass`.
pub fn encrypt(plain: &[u8], pass: &str, digest: Digest, compress: bool) -> Vec<u8> {
    let data = if compress {
        gzip(plain)
    } else {
        plain.to_vec()
    };
    let mut h = Sha256::new();
    h.update(b"provbox salt\0");
    h.update(pass.as_bytes());
    h.update([0]);
    h.update(&data);
    let mut salt = [0u8; 8];
    salt.copy_from_slice(&h.finalize()[..8]);
    let (key, iv) = bytes_to_key(digest, pass.as_bytes(), &salt);
    // PKCS#7 always adds 1..=16 bytes.
    let mut out = Vec::with_capacity(16 + data.len() + 16);
    out.extend_from_slice(b"Salted__");
    out.extend_from_slice(&salt);
    let n = data.len();
    out.extend_from_slice(&data);
    out.resize(16 + (n / 16 + 1) * 16, 0);
    let len = Enc::new(&key.into(), &iv.into())
        .encrypt_padded_mut::<Pkcs7>(&mut out[16..], n)
        .map(|c| c.len())
        .expect("buffer has room for the padding");
    out.truncate(16 + len);
    out
}

/// Decrypt the salted format (for tests and `provbox` tooling).
pub fn decrypt(data: &[u8], pass: &str, digest: Digest) -> Option<Vec<u8>> {
    use aes::cipher::BlockDecryptMut;
    type Dec = cbc::Decryptor<aes::Aes256>;
    let rest = data.strip_prefix(b"Salted__")?;
    if rest.len() < 8 {
        return None;
    }
    let mut salt = [0u8; 8];
    salt.copy_from_slice(&rest[..8]);
    let (key, iv) = bytes_to_key(digest, pass.as_bytes(), &salt);
    let mut buf = rest[8..].to_vec();
    let n = Dec::new(&key.into(), &iv.into())
        .decrypt_padded_mut::<Pkcs7>(&mut buf)
        .ok()?
        .len();
    buf.truncate(n);
    Some(buf)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    fn openssl_decrypt(data: &[u8], pass: &str, md: &str) -> Vec<u8> {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("in.enc");
        std::fs::write(&f, data).unwrap();
        let out = Command::new("openssl")
            .args(["enc", "-d", "-aes-256-cbc", "-k", pass, "-md", md, "-in"])
            .arg(&f)
            .output()
            .expect("openssl is installed");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    }

    #[test]
    fn openssl_decrypts_md5_and_sha256_byte_exact() {
        // Lengths around the block size, including an exact multiple (a full padding block).
        for len in [0usize, 1, 15, 16, 17, 1000] {
            let plain: Vec<u8> = (0..len).map(|i| (i * 7 + 3) as u8).collect();
            for (digest, md) in [(Digest::Md5, "md5"), (Digest::Sha256, "sha256")] {
                let enc = encrypt(&plain, "s3cret key", digest, false);
                assert_eq!(&enc[..8], b"Salted__");
                assert_eq!(openssl_decrypt(&enc, "s3cret key", md), plain, "{md} {len}");
                assert_eq!(decrypt(&enc, "s3cret key", digest).unwrap(), plain);
            }
        }
    }

    #[test]
    fn wrong_digest_does_not_decrypt_to_the_plaintext() {
        let enc = encrypt(b"<flat-profile/>", "k", Digest::Md5, false);
        assert_ne!(
            decrypt(&enc, "k", Digest::Sha256).as_deref(),
            Some(&b"<flat-profile/>"[..])
        );
    }

    #[test]
    fn deterministic_and_gzip() {
        let a = encrypt(b"profile", "k", Digest::Md5, true);
        assert_eq!(a, encrypt(b"profile", "k", Digest::Md5, true));
        assert_ne!(a, encrypt(b"profile", "k2", Digest::Md5, true));
        let gz = decrypt(&a, "k", Digest::Md5).unwrap();
        let mut out = String::new();
        std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(&gz[..]), &mut out)
            .unwrap();
        assert_eq!(out, "profile");
    }
}
