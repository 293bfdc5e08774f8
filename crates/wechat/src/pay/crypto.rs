//! WeChat Pay v3 cryptography, byte-exact.
//!
//! - Requests are signed with RSASSA-PKCS1-v1_5 / SHA-256 under the merchant
//!   key (ring) over `METHOD\nURL\nTIMESTAMP\nNONCE\nBODY\n`.
//! - Responses and callbacks are verified over `TIMESTAMP\nNONCE\nBODY\n`
//!   with the WeChat Pay public key (`PUB_KEY_ID_…`) or a platform
//!   certificate, chosen by `Wechatpay-Serial`; both may be held during a
//!   switch.
//! - Notification resources are AES-256-GCM under the 32-byte APIv3 key.
//! - Sensitive request fields (a 医保 payer's name and ID digest) are
//!   RSAES-OAEP (SHA-1, MGF1-SHA-1, empty label) under the WeChat Pay key,
//!   Base64; a public-key operation, so the `rsa` crate is fine here.

use std::collections::HashMap;
use std::fmt;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use ring::rand::SystemRandom;
use ring::signature::{self, RsaKeyPair, UnparsedPublicKey};

/// The prefix of WeChat's probe signatures: never valid, never stripped.
pub const SIGNTEST_PREFIX: &str = "WECHATPAY/SIGNTEST/";

/// The scheme of the `Authorization` header.
pub const AUTH_SCHEME: &str = "WECHATPAY2-SHA256-RSA2048";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CryptoError {
    #[error("bad key: {0}")]
    BadKey(String),
    #[error("bad certificate: {0}")]
    BadCertificate(String),
    #[error("signing failed")]
    Signing,
    #[error("no WeChat Pay key is held under serial `{0}`")]
    UnknownSerial(String),
    #[error("the signature is a WeChat probe (WECHATPAY/SIGNTEST/)")]
    Probe,
    #[error("the signature does not verify")]
    BadSignature,
    #[error("decryption failed: wrong key, nonce, associated data or tag")]
    Decryption,
    #[error("the APIv3 key must be exactly 32 bytes")]
    BadApiV3Key,
    #[error("encryption failed: {0}")]
    Encryption(String),
}

/// The merchant's private key (PKCS#8), for signing requests and `paySign`.
pub struct MerchantKey {
    pair: RsaKeyPair,
}

impl fmt::Debug for MerchantKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MerchantKey([redacted])")
    }
}

impl MerchantKey {
    /// Reads a `BEGIN PRIVATE KEY` (PKCS#8) PEM.
    ///
    /// # Errors
    /// `BadKey` for anything else.
    pub fn from_pem(pem_text: &str) -> Result<MerchantKey, CryptoError> {
        let block = pem::parse(pem_text).map_err(|e| CryptoError::BadKey(e.to_string()))?;
        if block.tag() != "PRIVATE KEY" {
            return Err(CryptoError::BadKey(format!(
                "expected a PKCS#8 `PRIVATE KEY` PEM, found `{}`",
                block.tag()
            )));
        }
        let pair = RsaKeyPair::from_pkcs8(block.contents())
            .map_err(|e| CryptoError::BadKey(e.to_string()))?;
        Ok(MerchantKey { pair })
    }

    /// SHA256withRSA (PKCS#1 v1.5) of `message`, Base64.
    ///
    /// # Errors
    /// `Signing` if ring refuses (it does not for a valid key).
    pub fn sign(&self, message: &[u8]) -> Result<String, CryptoError> {
        let mut signature = vec![0; self.pair.public().modulus_len()];
        self.pair
            .sign(
                &signature::RSA_PKCS1_SHA256,
                &SystemRandom::new(),
                message,
                &mut signature,
            )
            .map_err(|_| CryptoError::Signing)?;
        Ok(BASE64.encode(signature))
    }
}

/// `METHOD\nCANONICAL_URL\nTIMESTAMP\nNONCE\nBODY\n`.
pub fn request_message(
    method: &str,
    canonical_url: &str,
    timestamp: &str,
    nonce: &str,
    body: &[u8],
) -> Vec<u8> {
    let mut message = format!("{method}\n{canonical_url}\n{timestamp}\n{nonce}\n").into_bytes();
    message.extend_from_slice(body);
    message.push(b'\n');
    message
}

/// `TIMESTAMP\nNONCE\nBODY\n`: what a response or callback signature covers.
pub fn response_message(timestamp: &str, nonce: &str, body: &[u8]) -> Vec<u8> {
    let mut message = format!("{timestamp}\n{nonce}\n").into_bytes();
    message.extend_from_slice(body);
    message.push(b'\n');
    message
}

/// `appId\ntimeStamp\nnonceStr\npackage\n`: what a client `paySign` covers.
pub fn pay_sign_message(app_id: &str, timestamp: &str, nonce: &str, package: &str) -> String {
    format!("{app_id}\n{timestamp}\n{nonce}\n{package}\n")
}

/// The `Authorization` header value of a signed request.
#[allow(clippy::too_many_arguments)]
pub fn authorization(
    key: &MerchantKey,
    mchid: &str,
    serial_no: &str,
    method: &str,
    canonical_url: &str,
    timestamp: &str,
    nonce: &str,
    body: &[u8],
) -> Result<String, CryptoError> {
    let signature = key.sign(&request_message(
        method,
        canonical_url,
        timestamp,
        nonce,
        body,
    ))?;
    Ok(format!(
        "{AUTH_SCHEME} mchid=\"{mchid}\",nonce_str=\"{nonce}\",signature=\"{signature}\",timestamp=\"{timestamp}\",serial_no=\"{serial_no}\""
    ))
}

/// The fields of an `Authorization` header, as a server reads them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authorization {
    pub mchid: String,
    pub nonce_str: String,
    pub signature: String,
    pub timestamp: String,
    pub serial_no: String,
}

/// Parses `WECHATPAY2-SHA256-RSA2048 k="v",…` (items in any order).
pub fn parse_authorization(header: &str) -> Option<Authorization> {
    let rest = header.strip_prefix(AUTH_SCHEME)?.strip_prefix(' ')?;
    let mut fields = HashMap::new();
    for item in rest.split(',') {
        let (key, value) = item.trim().split_once('=')?;
        let value = value.strip_prefix('"')?.strip_suffix('"')?;
        fields.insert(key, value.to_owned());
    }
    let mut take = |name: &str| fields.remove(name);
    Some(Authorization {
        mchid: take("mchid")?,
        nonce_str: take("nonce_str")?,
        signature: take("signature")?,
        timestamp: take("timestamp")?,
        serial_no: take("serial_no")?,
    })
}

/// An RSA public key that verifies SHA256withRSA signatures.
#[derive(Clone)]
pub struct VerifyingKey {
    /// PKCS#1 `RSAPublicKey` DER, what ring takes.
    rsa_public_key: Vec<u8>,
}

impl fmt::Debug for VerifyingKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "VerifyingKey({} bytes)", self.rsa_public_key.len())
    }
}

impl VerifyingKey {
    /// From a `BEGIN PUBLIC KEY` (SubjectPublicKeyInfo) PEM.
    ///
    /// # Errors
    /// `BadKey`.
    pub fn from_public_key_pem(pem_text: &str) -> Result<VerifyingKey, CryptoError> {
        let block = pem::parse(pem_text).map_err(|e| CryptoError::BadKey(e.to_string()))?;
        if block.tag() != "PUBLIC KEY" {
            return Err(CryptoError::BadKey(format!(
                "expected a `PUBLIC KEY` PEM, found `{}`",
                block.tag()
            )));
        }
        use x509_parser::prelude::FromDer;
        let (_, spki) = x509_parser::x509::SubjectPublicKeyInfo::from_der(block.contents())
            .map_err(|e| CryptoError::BadKey(e.to_string()))?;
        Ok(VerifyingKey {
            rsa_public_key: spki.subject_public_key.data.to_vec(),
        })
    }

    /// From a `BEGIN CERTIFICATE` PEM; returns the key and the certificate's
    /// serial as upper-case hex.
    ///
    /// # Errors
    /// `BadCertificate`.
    pub fn from_certificate_pem(pem_text: &str) -> Result<(VerifyingKey, String), CryptoError> {
        let block = pem::parse(pem_text).map_err(|e| CryptoError::BadCertificate(e.to_string()))?;
        let (_, certificate) = x509_parser::parse_x509_certificate(block.contents())
            .map_err(|e| CryptoError::BadCertificate(e.to_string()))?;
        let serial = hex::encode_upper(certificate.tbs_certificate.raw_serial());
        let key = VerifyingKey {
            rsa_public_key: certificate
                .tbs_certificate
                .subject_pki
                .subject_public_key
                .data
                .to_vec(),
        };
        Ok((key, serial))
    }

    /// Encrypts a sensitive field as WeChat Pay asks: RSAES-OAEP with
    /// SHA-1 and MGF1-SHA-1, empty label, Base64 (344 characters for a
    /// 2048-bit key). Randomised: the same value gives a new ciphertext each time.
    ///
    /// # Errors
    /// `Encryption` for a value too long for the key (over 214 bytes at 2048 bits).
    pub fn encrypt_oaep(&self, plaintext: &str) -> Result<String, CryptoError> {
        use rsa::pkcs1::DecodeRsaPublicKey;
        let key = rsa::RsaPublicKey::from_pkcs1_der(&self.rsa_public_key)
            .map_err(|e| CryptoError::BadKey(e.to_string()))?;
        let ciphertext = key
            .encrypt(
                &mut rsa::rand_core::OsRng,
                rsa::Oaep::new::<sha1::Sha1>(),
                plaintext.as_bytes(),
            )
            .map_err(|e| CryptoError::Encryption(e.to_string()))?;
        Ok(BASE64.encode(ciphertext))
    }

    /// Checks a Base64 SHA256withRSA signature over `message`.
    ///
    /// # Errors
    /// `Probe` for a `WECHATPAY/SIGNTEST/` signature, else `BadSignature`.
    pub fn verify(&self, message: &[u8], signature_b64: &str) -> Result<(), CryptoError> {
        if signature_b64.starts_with(SIGNTEST_PREFIX) {
            return Err(CryptoError::Probe);
        }
        let signature = BASE64
            .decode(signature_b64)
            .map_err(|_| CryptoError::BadSignature)?;
        UnparsedPublicKey::new(&signature::RSA_PKCS1_2048_8192_SHA256, &self.rsa_public_key)
            .verify(message, &signature)
            .map_err(|_| CryptoError::BadSignature)
    }
}

/// The WeChat Pay keys a merchant holds, by `Wechatpay-Serial`: the public
/// key under its `PUB_KEY_ID_…`, platform certificates under their serials.
/// During a switch both are held and each message picks its own.
#[derive(Debug, Clone, Default)]
pub struct PlatformKeys {
    keys: HashMap<String, VerifyingKey>,
}

impl PlatformKeys {
    pub fn add(&mut self, serial: &str, key: VerifyingKey) {
        self.keys.insert(serial.to_ascii_uppercase(), key);
    }

    /// The key held under `serial`.
    pub fn get(&self, serial: &str) -> Option<&VerifyingKey> {
        self.keys.get(&serial.to_ascii_uppercase())
    }

    /// Drops every platform certificate (keys not named `PUB_KEY_ID_…`),
    /// before a fresh download puts the current ones back.
    pub fn retain_public_keys(&mut self) {
        self.keys
            .retain(|serial, _| serial.starts_with("PUB_KEY_ID_"));
    }

    pub fn serials(&self) -> Vec<String> {
        let mut serials: Vec<String> = self.keys.keys().cloned().collect();
        serials.sort();
        serials
    }

    /// Verifies a response or callback: the key named by `serial` over
    /// `TIMESTAMP\nNONCE\nBODY\n` built from the raw body.
    ///
    /// # Errors
    /// `UnknownSerial`, `Probe` or `BadSignature`.
    pub fn verify(
        &self,
        serial: &str,
        timestamp: &str,
        nonce: &str,
        body: &[u8],
        signature: &str,
    ) -> Result<(), CryptoError> {
        if signature.starts_with(SIGNTEST_PREFIX) {
            return Err(CryptoError::Probe);
        }
        let key = self
            .keys
            .get(&serial.to_ascii_uppercase())
            .ok_or_else(|| CryptoError::UnknownSerial(serial.to_owned()))?;
        key.verify(&response_message(timestamp, nonce, body), signature)
    }
}

/// `payer.id_digest` of a 医保 order: the lowercase hex MD5 of the
/// upper-cased ID number (so `…002x` and `…002X` agree).
pub fn id_digest(id_number: &str) -> String {
    use md5::Digest;
    hex::encode(md5::Md5::digest(
        id_number.trim().to_ascii_uppercase().as_bytes(),
    ))
}

/// The APIv3 key: exactly 32 bytes, used as-is as an AES-256 key.
#[derive(Clone)]
pub struct ApiV3Key([u8; 32]);

impl fmt::Debug for ApiV3Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiV3Key([redacted])")
    }
}

impl ApiV3Key {
    /// # Errors
    /// `BadApiV3Key` unless `text` is exactly 32 bytes.
    pub fn new(text: &str) -> Result<ApiV3Key, CryptoError> {
        let bytes: [u8; 32] = text
            .as_bytes()
            .try_into()
            .map_err(|_| CryptoError::BadApiV3Key)?;
        Ok(ApiV3Key(bytes))
    }

    /// Decrypts a notification resource (or a certificate): Base64
    /// ciphertext whose last 16 bytes are the tag.
    ///
    /// # Errors
    /// `Decryption` on any mismatch.
    pub fn decrypt(
        &self,
        nonce: &str,
        associated_data: &str,
        ciphertext_b64: &str,
    ) -> Result<Vec<u8>, CryptoError> {
        let nonce = nonce.as_bytes();
        if nonce.len() != 12 {
            return Err(CryptoError::Decryption);
        }
        let ciphertext = BASE64
            .decode(ciphertext_b64)
            .map_err(|_| CryptoError::Decryption)?;
        Aes256Gcm::new((&self.0).into())
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: &ciphertext,
                    aad: associated_data.as_bytes(),
                },
            )
            .map_err(|_| CryptoError::Decryption)
    }

    /// Encrypts as WeChat Pay does (what the fake server sends).
    ///
    /// # Errors
    /// `Decryption` for a nonce that is not 12 bytes.
    pub fn encrypt(
        &self,
        nonce: &str,
        associated_data: &str,
        plaintext: &[u8],
    ) -> Result<String, CryptoError> {
        let nonce = nonce.as_bytes();
        if nonce.len() != 12 {
            return Err(CryptoError::Decryption);
        }
        let ciphertext = Aes256Gcm::new((&self.0).into())
            .encrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: plaintext,
                    aad: associated_data.as_bytes(),
                },
            )
            .map_err(|_| CryptoError::Decryption)?;
        Ok(BASE64.encode(ciphertext))
    }
}
