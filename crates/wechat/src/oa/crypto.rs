//! Official Account server-URL cryptography, byte-exact (`wechat-protocols` §2.5).
//!
//! - URL verification: `signature = sha1(sorted([token, timestamp, nonce]).join(""))`.
//! - Safe mode: `msg_signature = sha1(sorted([token, timestamp, nonce, Encrypt]).join(""))`;
//!   `Encrypt` is Base64 of AES-256-CBC (key = Base64-decoded EncodingAESKey,
//!   IV = its first 16 bytes) over `random16 ‖ u32_be(len) ‖ xml ‖ appid`,
//!   PKCS#7-padded to **32-byte** blocks.

use std::fmt;

use aes::cipher::{BlockDecryptMut, BlockEncryptMut, KeyIvInit};
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD};
use base64::engine::DecodePaddingMode;
use base64::Engine;
use sha1::{Digest, Sha1};

/// Safe mode pads to 32-byte blocks, not AES's 16.
const BLOCK: usize = 32;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OaCryptoError {
    #[error("the EncodingAESKey must be 43 Base64 characters (32 bytes)")]
    BadAesKey,
    #[error("the signature does not match")]
    BadSignature,
    #[error("the message cannot be decrypted: {0}")]
    Decryption(&'static str),
    #[error("the message is for appid `{0}`, not this account")]
    AppIdMismatch(String),
    #[error("the body has no <{0}> element")]
    Missing(&'static str),
}

/// SHA-1 hex of the parts sorted and joined, as every OA signature is made.
pub fn sorted_sha1(parts: &[&str]) -> String {
    let mut parts = parts.to_vec();
    parts.sort_unstable();
    hex::encode(Sha1::digest(parts.concat().as_bytes()))
}

/// Checks a server-URL verification (`GET ?signature&timestamp&nonce&echostr`);
/// only then may `echostr` be answered.
///
/// # Errors
/// `BadSignature`.
pub fn verify_url(
    token: &str,
    signature: &str,
    timestamp: &str,
    nonce: &str,
) -> Result<(), OaCryptoError> {
    let expected = sorted_sha1(&[token, timestamp, nonce]);
    if same(&expected, signature) {
        Ok(())
    } else {
        Err(OaCryptoError::BadSignature)
    }
}

/// Hex signatures compared in time independent of where they differ.
fn same(expected: &str, given: &str) -> bool {
    let given = given.to_ascii_lowercase();
    expected.len() == given.len()
        && expected
            .bytes()
            .zip(given.bytes())
            .fold(0, |acc, (a, b)| acc | (a ^ b))
            == 0
}

/// One account's safe-mode keys.
#[derive(Clone)]
pub struct SafeMode {
    token: String,
    key: [u8; 32],
    appid: String,
}

impl fmt::Debug for SafeMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SafeMode")
            .field("appid", &self.appid)
            .field("token", &"[redacted]")
            .field("key", &"[redacted]")
            .finish()
    }
}

/// The EncodingAESKey + "=" decoded leniently: real keys end in a
/// character with non-zero trailing bits, which strict decoders refuse.
fn decode_aes_key(encoding_aes_key: &str) -> Result<[u8; 32], OaCryptoError> {
    let lenient = GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        GeneralPurposeConfig::new()
            .with_decode_allow_trailing_bits(true)
            .with_decode_padding_mode(DecodePaddingMode::Indifferent),
    );
    if encoding_aes_key.len() != 43 {
        return Err(OaCryptoError::BadAesKey);
    }
    lenient
        .decode(format!("{encoding_aes_key}="))
        .ok()
        .and_then(|bytes| <[u8; 32]>::try_from(bytes).ok())
        .ok_or(OaCryptoError::BadAesKey)
}

/// The text of `<name>…</name>`, CDATA or not (the first one).
pub fn xml_field<'a>(xml: &'a str, name: &'static str) -> Result<&'a str, OaCryptoError> {
    let open = format!("<{name}>");
    let close = format!("</{name}>");
    let start = xml.find(&open).ok_or(OaCryptoError::Missing(name))? + open.len();
    let end = xml[start..]
        .find(&close)
        .ok_or(OaCryptoError::Missing(name))?
        + start;
    let text = xml[start..end].trim();
    Ok(text
        .strip_prefix("<![CDATA[")
        .and_then(|t| t.strip_suffix("]]>"))
        .unwrap_or(text))
}

impl SafeMode {
    /// # Errors
    /// `BadAesKey`.
    pub fn new(
        token: &str,
        encoding_aes_key: &str,
        appid: &str,
    ) -> Result<SafeMode, OaCryptoError> {
        Ok(SafeMode {
            token: token.to_owned(),
            key: decode_aes_key(encoding_aes_key)?,
            appid: appid.to_owned(),
        })
    }

    /// The AES key and IV (its first 16 bytes).
    pub fn key(&self) -> &[u8; 32] {
        &self.key
    }

    pub fn msg_signature(&self, timestamp: &str, nonce: &str, encrypt: &str) -> String {
        sorted_sha1(&[&self.token, timestamp, nonce, encrypt])
    }

    /// Encrypts `xml` with the given 16 random bytes (fresh ones in real use).
    pub fn encrypt(&self, xml: &str, random16: &[u8; 16]) -> String {
        let mut plain = Vec::with_capacity(xml.len() + self.appid.len() + 20 + BLOCK);
        plain.extend_from_slice(random16);
        plain.extend_from_slice(&u32::try_from(xml.len()).unwrap_or(u32::MAX).to_be_bytes());
        plain.extend_from_slice(xml.as_bytes());
        plain.extend_from_slice(self.appid.as_bytes());
        let pad = BLOCK - plain.len() % BLOCK;
        plain.extend(std::iter::repeat_n(u8::try_from(pad).unwrap_or(0), pad));
        let length = plain.len();
        let cipher = cbc::Encryptor::<aes::Aes256>::new((&self.key).into(), self.key[..16].into());
        let encrypted = cipher
            .encrypt_padded_mut::<aes::cipher::block_padding::NoPadding>(&mut plain, length)
            .map(<[u8]>::to_vec)
            .unwrap_or_default();
        STANDARD.encode(encrypted)
    }

    /// Decrypts an `Encrypt` value and checks the appid trailer; returns the inner XML.
    ///
    /// # Errors
    /// `Decryption` or `AppIdMismatch`.
    pub fn decrypt(&self, encrypt: &str) -> Result<String, OaCryptoError> {
        let mut data = STANDARD
            .decode(encrypt)
            .map_err(|_| OaCryptoError::Decryption("not Base64"))?;
        if data.is_empty() || data.len() % 16 != 0 {
            return Err(OaCryptoError::Decryption("not whole AES blocks"));
        }
        let cipher = cbc::Decryptor::<aes::Aes256>::new((&self.key).into(), self.key[..16].into());
        let plain = cipher
            .decrypt_padded_mut::<aes::cipher::block_padding::NoPadding>(&mut data)
            .map_err(|_| OaCryptoError::Decryption("AES-CBC"))?;
        let pad = usize::from(*plain.last().unwrap_or(&0));
        if pad == 0 || pad > BLOCK || pad > plain.len() {
            return Err(OaCryptoError::Decryption("bad padding"));
        }
        let plain = &plain[..plain.len() - pad];
        if plain.len() < 20 {
            return Err(OaCryptoError::Decryption("too short"));
        }
        let length = u32::from_be_bytes([plain[16], plain[17], plain[18], plain[19]]) as usize;
        let rest = &plain[20..];
        if length > rest.len() {
            return Err(OaCryptoError::Decryption("length beyond the message"));
        }
        let (xml, appid) = rest.split_at(length);
        let appid = String::from_utf8_lossy(appid).into_owned();
        if appid != self.appid {
            return Err(OaCryptoError::AppIdMismatch(appid));
        }
        String::from_utf8(xml.to_vec()).map_err(|_| OaCryptoError::Decryption("not UTF-8"))
    }

    /// A safe-mode push: checks `msg_signature` over the body's `Encrypt`,
    /// then decrypts it. Returns the inner XML.
    ///
    /// # Errors
    /// `Missing`, `BadSignature`, `Decryption` or `AppIdMismatch`.
    pub fn decrypt_message(
        &self,
        body: &str,
        msg_signature: &str,
        timestamp: &str,
        nonce: &str,
    ) -> Result<String, OaCryptoError> {
        let encrypt = xml_field(body, "Encrypt")?;
        let expected = self.msg_signature(timestamp, nonce, encrypt);
        if !same(&expected, msg_signature) {
            return Err(OaCryptoError::BadSignature);
        }
        self.decrypt(encrypt)
    }

    /// An encrypted passive reply:
    /// `<xml><Encrypt/><MsgSignature/><TimeStamp/><Nonce/></xml>`.
    pub fn encrypt_reply(
        &self,
        xml: &str,
        random16: &[u8; 16],
        timestamp: &str,
        nonce: &str,
    ) -> String {
        let encrypt = self.encrypt(xml, random16);
        let signature = self.msg_signature(timestamp, nonce, &encrypt);
        format!(
            "<xml>\n<Encrypt><![CDATA[{encrypt}]]></Encrypt>\n<MsgSignature><![CDATA[{signature}]]></MsgSignature>\n<TimeStamp>{timestamp}</TimeStamp>\n<Nonce><![CDATA[{nonce}]]></Nonce>\n</xml>"
        )
    }
}
