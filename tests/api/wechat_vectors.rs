//! The WeChat Pay test vectors in `tests/vectors/wechat/` (copied from the
//! project's shared vectors, computed with OpenSSL, Python `cryptography`,
//! PyCryptodome and wechatpayv3): our code must reproduce every byte.

use crate::helpers::{at, int, list};
use o2flow::wechat::pay::crypto::{
    authorization, pay_sign_message, request_message, response_message, ApiV3Key, CryptoError,
    MerchantKey, PlatformKeys, VerifyingKey,
};
use ring::digest::{digest, SHA256};
use serde_json::Value;

const DIR: &str = "tests/vectors/wechat";

pub fn read(name: &str) -> String {
    std::fs::read_to_string(format!("{DIR}/{name}")).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn json(name: &str) -> Value {
    serde_json::from_str(&read(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(digest(&SHA256, bytes))
}

fn s(value: &Value) -> &str {
    value
        .as_str()
        .unwrap_or_else(|| panic!("not a string: {value}"))
}

fn cases(file: &Value) -> Vec<Value> {
    list(file, "cases")
}

fn merchant_key() -> MerchantKey {
    MerchantKey::from_pem(&read("merchant_private_key.pem")).unwrap_or_else(|e| panic!("{e}"))
}

/// Both WeChat Pay keys, as a merchant holds them during a switch.
pub fn platform_keys() -> PlatformKeys {
    let mut keys = PlatformKeys::default();
    let public = VerifyingKey::from_public_key_pem(&read("platform_public_key.pem"))
        .unwrap_or_else(|e| panic!("{e}"));
    keys.add("PUB_KEY_ID_0100000000000000000000000000TEST", public);
    let (certified, serial) = VerifyingKey::from_certificate_pem(&read("platform_cert.pem"))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(serial, "7E57C0DE0000000000000000000000000000B002");
    keys.add(&serial, certified);
    keys
}

fn header<'a>(headers: &'a Value, name: &str) -> &'a str {
    headers
        .as_object()
        .and_then(|h| h.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)))
        .and_then(|(_, v)| v.as_str())
        .unwrap_or_default()
}

#[test]
fn request_signatures_and_authorization_headers_match_byte_for_byte() {
    let file = json("request_signature.json");
    let key = merchant_key();
    let merchant_public = VerifyingKey::from_public_key_pem(&read("merchant_public_key.pem"))
        .unwrap_or_else(|e| panic!("{e}"));
    let (_, cert_serial) = VerifyingKey::from_certificate_pem(&read("merchant_cert.pem"))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(cert_serial, s(&file["serial_no"]));
    let all = cases(&file);
    assert!(all.len() >= 6);
    for case in all {
        let name = s(&case["name"]);
        let body = s(&case["body"]).as_bytes();
        assert_eq!(sha256_hex(body), s(&case["body_sha256"]), "{name}");
        let message = request_message(
            s(&case["method"]),
            s(&case["canonical_url"]),
            s(&case["timestamp"]),
            s(&case["nonce_str"]),
            body,
        );
        assert_eq!(message, s(&case["message"]).as_bytes(), "{name}");
        assert_eq!(sha256_hex(&message), s(&case["message_sha256"]), "{name}");
        let signature = key.sign(&message).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(signature, s(&case["signature"]), "{name}");
        merchant_public
            .verify(&message, &signature)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let header = authorization(
            &key,
            s(&file["mchid"]),
            s(&file["serial_no"]),
            s(&case["method"]),
            s(&case["canonical_url"]),
            s(&case["timestamp"]),
            s(&case["nonce_str"]),
            body,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(header, s(&case["authorization"]), "{name}");
        let parsed = o2flow::wechat::pay::crypto::parse_authorization(&header)
            .unwrap_or_else(|| panic!("{name}: unparsable"));
        assert_eq!(parsed.signature, signature);
    }
}

#[test]
fn response_signatures_are_checked_by_serial_with_probes_and_tampering_refused() {
    let file = json("response_signature.json");
    let keys = platform_keys();
    for case in cases(&file) {
        let name = s(&case["name"]);
        let headers = &case["headers"];
        let body = s(&case["body"]).as_bytes();
        let message = response_message(
            header(headers, "Wechatpay-Timestamp"),
            header(headers, "Wechatpay-Nonce"),
            body,
        );
        assert_eq!(message, s(&case["message"]).as_bytes(), "{name}");
        let result = keys.verify(
            header(headers, "Wechatpay-Serial"),
            header(headers, "Wechatpay-Timestamp"),
            header(headers, "Wechatpay-Nonce"),
            body,
            header(headers, "Wechatpay-Signature"),
        );
        assert_eq!(
            result.is_ok(),
            case["expected_valid"] == true,
            "{name}: {result:?}"
        );
        match name {
            "signtest_probe" | "signtest_probe_prefix_on_valid_signature" => {
                assert_eq!(result, Err(CryptoError::Probe), "{name}");
            }
            "unknown_serial" => assert!(matches!(result, Err(CryptoError::UnknownSerial(_)))),
            _ => {}
        }
    }
}

fn check_notification(file_name: &str, event_type: &str) {
    let file = json(file_name);
    let keys = platform_keys();
    let http = &file["http"];
    let body = s(&http["body"]).as_bytes();
    assert_eq!(sha256_hex(body), s(&http["body_sha256"]));
    for headers in [
        &http["headers"],
        &file["certificate_mode_variant"]["headers"],
    ] {
        keys.verify(
            header(headers, "Wechatpay-Serial"),
            header(headers, "Wechatpay-Timestamp"),
            header(headers, "Wechatpay-Nonce"),
            body,
            header(headers, "Wechatpay-Signature"),
        )
        .unwrap_or_else(|e| panic!("{file_name}: {e}"));
    }
    let envelope: Value = serde_json::from_slice(body).unwrap_or_default();
    assert_eq!(envelope["event_type"], event_type);
    let resource = &envelope["resource"];
    let key = ApiV3Key::new(s(&file["decryption"]["key"])).unwrap_or_else(|e| panic!("{e}"));
    let plaintext = key
        .decrypt(
            s(&resource["nonce"]),
            s(&resource["associated_data"]),
            s(&resource["ciphertext"]),
        )
        .unwrap_or_else(|e| panic!("{file_name}: {e}"));
    assert_eq!(plaintext, s(&file["decryption"]["plaintext"]).as_bytes());
    let parsed: Value = serde_json::from_slice(&plaintext).unwrap_or_default();
    assert_eq!(parsed, file["plaintext_json"]);
    for negative in file["negative_cases"].as_array().into_iter().flatten() {
        let headers = &negative["headers"];
        let result = keys.verify(
            header(headers, "Wechatpay-Serial"),
            header(headers, "Wechatpay-Timestamp"),
            header(headers, "Wechatpay-Nonce"),
            s(&negative["body"]).as_bytes(),
            header(headers, "Wechatpay-Signature"),
        );
        assert!(result.is_err(), "{}: accepted", s(&negative["name"]));
    }
}

#[test]
fn transaction_notification_verifies_and_decrypts() {
    check_notification("notify_transaction_success.json", "TRANSACTION.SUCCESS");
}

#[test]
fn refund_notification_verifies_and_decrypts() {
    check_notification("notify_refund_success.json", "REFUND.SUCCESS");
}

#[test]
fn aes_gcm_cases_decrypt_or_fail_as_expected_and_encrypt_to_the_same_bytes() {
    let file = json("aes_gcm.json");
    for case in cases(&file) {
        let name = s(&case["name"]);
        let key = ApiV3Key::new(s(&case["key"])).unwrap_or_else(|e| panic!("{e}"));
        let result = key.decrypt(
            s(&case["nonce"]),
            s(&case["associated_data"]),
            s(&case["ciphertext"]),
        );
        if case["expected"] == "ok" {
            let plaintext = result.unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(hex::encode(&plaintext), s(&case["plaintext_hex"]), "{name}");
            let again = key
                .encrypt(s(&case["nonce"]), s(&case["associated_data"]), &plaintext)
                .unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(again, s(&case["ciphertext"]), "{name}");
        } else {
            assert_eq!(result, Err(CryptoError::Decryption), "{name}");
        }
    }
    assert_eq!(
        ApiV3Key::new("too short").err(),
        Some(CryptoError::BadApiV3Key)
    );
}

#[test]
fn pay_sign_matches_for_jsapi_and_mini_program() {
    let file = json("pay_sign.json");
    let key = merchant_key();
    for case in cases(&file) {
        let message = pay_sign_message(
            s(&case["appId"]),
            s(&case["timeStamp"]),
            s(&case["nonceStr"]),
            s(&case["package"]),
        );
        assert_eq!(message, s(&case["message"]));
        assert_eq!(
            key.sign(message.as_bytes())
                .unwrap_or_else(|e| panic!("{e}")),
            s(&case["paySign"]),
            "{}",
            s(&case["name"])
        );
    }
}

#[test]
fn the_certificates_answer_verifies_and_decrypts_to_the_platform_certificate() {
    let file = json("certificates_response.json");
    let response = &file["response"];
    let headers = &response["headers"];
    let body = s(&response["body"]).as_bytes();
    platform_keys()
        .verify(
            header(headers, "Wechatpay-Serial"),
            header(headers, "Wechatpay-Timestamp"),
            header(headers, "Wechatpay-Nonce"),
            body,
            header(headers, "Wechatpay-Signature"),
        )
        .unwrap_or_else(|e| panic!("{e}"));
    let decryption = &file["decryption"];
    let key = ApiV3Key::new(s(&decryption["apiv3_key"])).unwrap_or_else(|e| panic!("{e}"));
    let pem = key
        .decrypt(
            s(&decryption["nonce"]),
            s(&decryption["associated_data"]),
            s(&decryption["ciphertext"]),
        )
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(sha256_hex(&pem), s(&decryption["plaintext_sha256"]));
    let (_, serial) = VerifyingKey::from_certificate_pem(&String::from_utf8_lossy(&pem))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(serial, s(&file["expected"]["serial_no"]));
}

#[test]
fn debug_output_never_shows_keys() {
    let key = merchant_key();
    let api = ApiV3Key::new("TestOnlyApiV3Key-NotReal-32bytes").unwrap_or_else(|e| panic!("{e}"));
    let shown = format!("{key:?} {api:?}");
    assert!(!shown.contains("TestOnly"), "{shown}");
    assert!(shown.contains("redacted"));
}

// ---- RSA-OAEP sensitive fields (医保 payer name and ID digest) -----------------

#[test]
fn oaep_fields_decrypt_under_the_platform_key_and_the_fixed_ciphertexts_decrypt_too() {
    use o2flow::wechat::pay::crypto::id_digest;
    use o2flow_wechat_fake::decrypt_oaep_for_tests;
    let file = json("oaep_encrypt.json");
    let private = read("platform_private_key.pem");
    assert_eq!(
        id_digest("11010519491231002x"),
        "ae05564031c21338aa8a2e7266e7855c",
        "{}",
        s(&file["id_digest_rule"])
    );
    let public = VerifyingKey::from_public_key_pem(&read(s(
        &file["encrypt_with"]["public_key_mode"]["file"]
    )))
    .unwrap_or_else(|e| panic!("{e}"));
    let (certified, serial) = VerifyingKey::from_certificate_pem(&read(s(
        &file["encrypt_with"]["certificate_mode"]["file"]
    )))
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        serial,
        s(&file["encrypt_with"]["certificate_mode"]["Wechatpay-Serial"])
    );
    let all = cases(&file);
    assert_eq!(all.len(), 2);
    for case in all {
        let name = s(&case["name"]);
        let plaintext = s(&case["plaintext"]);
        assert_eq!(
            hex::encode(plaintext),
            s(&case["plaintext_utf8_hex"]),
            "{name}"
        );
        // Theirs decrypts as ours would be decrypted by WeChat Pay.
        assert_eq!(
            decrypt_oaep_for_tests(&private, s(&case["ciphertext"])).as_deref(),
            Ok(plaintext),
            "{name}"
        );
        // Ours: 344 Base64 characters (256 bytes), fresh each time, and decrypts.
        for key in [&public, &certified] {
            let first = key
                .encrypt_oaep(plaintext)
                .unwrap_or_else(|e| panic!("{e}"));
            let second = key
                .encrypt_oaep(plaintext)
                .unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(first.len(), 344, "{name}");
            assert_ne!(first, second, "OAEP is randomised");
            assert_eq!(
                decrypt_oaep_for_tests(&private, &first).as_deref(),
                Ok(plaintext),
                "{name}"
            );
        }
    }
    // Not under another key.
    let ours = public
        .encrypt_oaep("张三")
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        decrypt_oaep_for_tests(&read("merchant_private_key.pem"), &ours),
        Err(CryptoError::Decryption)
    );
}

// ---- Official Account: server URL and safe mode ---------------------------------

#[test]
fn official_account_url_verification_signatures() {
    use o2flow::wechat::oa::crypto::{sorted_sha1, verify_url};
    let file = json("oa_url_verification.json");
    let token = s(&file["token"]);
    let all = cases(&file);
    assert_eq!(all.len(), 4);
    for case in all {
        let name = s(&case["name"]);
        let query = &case["query"];
        let outcome = verify_url(
            token,
            s(&query["signature"]),
            s(&query["timestamp"]),
            s(&query["nonce"]),
        );
        assert_eq!(
            outcome.is_ok(),
            at(&case, "expected_valid")
                .as_bool()
                .unwrap_or_else(|| panic!("{name}: expected_valid")),
            "{name}"
        );
        if let Some(expected) = case["expected_signature"].as_str() {
            assert_eq!(
                sorted_sha1(&[token, s(&query["timestamp"]), s(&query["nonce"])]),
                expected,
                "{name}"
            );
        }
    }
}

#[test]
fn official_account_safe_mode_decrypts_encrypts_and_refuses() {
    use o2flow::wechat::oa::crypto::{OaCryptoError, SafeMode};
    let file = json("oa_safe_mode.json");
    let account = &file["account"];
    let mode = SafeMode::new(
        s(&account["token"]),
        s(&account["encoding_aes_key"]),
        s(&account["appid"]),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        hex::encode(mode.key()),
        s(&file["key_derivation"]["aes_key_hex"])
    );
    let random = |case: &Value| -> [u8; 16] {
        s(&case["random16"])
            .as_bytes()
            .try_into()
            .unwrap_or_else(|_| panic!("random16"))
    };
    let mut incoming = vec![file["incoming"].clone()];
    incoming.extend(list(&file, "extra_cases"));
    for case in &incoming {
        let name = s(&case["name"]);
        let xml = mode
            .decrypt_message(
                s(&case["body"]),
                s(&case["query"]["msg_signature"]),
                s(&case["timestamp"]),
                s(&case["nonce"]),
            )
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(xml, s(&case["inner_xml"]), "{name}");
        assert_eq!(xml.len() as i64, int(case, "xml_length"), "{name}");
        // Encrypting it again with the same random bytes gives the same bytes.
        assert_eq!(
            mode.encrypt(&xml, &random(case)),
            s(&case["encrypt"]),
            "{name}"
        );
    }
    let reply = &file["reply"];
    assert_eq!(
        mode.encrypt_reply(
            s(&reply["inner_xml"]),
            &random(reply),
            s(&reply["timestamp"]),
            s(&reply["nonce"])
        ),
        s(&reply["reply_body"])
    );
    assert_eq!(
        mode.msg_signature(
            s(&reply["timestamp"]),
            s(&reply["nonce"]),
            s(&reply["encrypt"])
        ),
        s(&reply["msg_signature"])
    );
    for case in list(&file, "negative_cases") {
        let name = s(&case["name"]);
        let account_mode = match case["configured_appid"].as_str() {
            Some(appid) => {
                SafeMode::new(s(&account["token"]), s(&account["encoding_aes_key"]), appid)
                    .unwrap_or_else(|e| panic!("{e}"))
            }
            None => mode.clone(),
        };
        let outcome = account_mode.decrypt_message(
            s(&case["body"]),
            s(&case["msg_signature"]),
            s(&case["timestamp"]),
            s(&case["nonce"]),
        );
        match name {
            "wrong_msg_signature" => assert_eq!(outcome, Err(OaCryptoError::BadSignature)),
            _ => assert!(
                matches!(outcome, Err(OaCryptoError::AppIdMismatch(_))),
                "{name}: {outcome:?}"
            ),
        }
    }
}
