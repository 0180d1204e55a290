//! A software WebAuthn authenticator for the passkey tests: what a browser and a platform
//! authenticator together answer to `navigator.credentials.create` and `.get`, so the Rust
//! suite runs the ceremonies without a browser. ES256 keys (ring), attestation `none`,
//! resident credentials, user verification, a signature counter the test can set.

#![allow(dead_code)]

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use ciborium::value::Value as Cbor;
use ring::digest::{digest, SHA256};
use ring::rand::{SecureRandom, SystemRandom};
use ring::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_ASN1_SIGNING};
use serde_json::{json, Value};

/// One credential the authenticator holds (resident: it keeps the user handle).
pub struct Credential {
    pub id: Vec<u8>,
    pub user_handle: Vec<u8>,
    pub rp_id: String,
    key: EcdsaKeyPair,
    pub counter: u32,
}

pub struct Authenticator {
    /// The origin the "browser" reports in `clientDataJSON`.
    pub origin: String,
    /// The relying party id whose hash the authenticator signs (normally the options').
    pub rp_id_override: Option<String>,
    /// Whether it reports user verification.
    pub user_verified: bool,
    /// How much the counter moves per use (0: a passkey without a counter).
    pub counter_step: u32,
    pub credentials: Vec<Credential>,
    rng: SystemRandom,
}

fn b64(bytes: &[u8]) -> String {
    B64.encode(bytes)
}

fn sha256(bytes: &[u8]) -> Vec<u8> {
    digest(&SHA256, bytes).as_ref().to_vec()
}

fn cbor(value: &Cbor) -> Vec<u8> {
    let mut out = Vec::new();
    ciborium::ser::into_writer(value, &mut out).expect("cbor");
    out
}

impl Authenticator {
    pub fn new(origin: &str) -> Authenticator {
        Authenticator {
            origin: origin.to_owned(),
            rp_id_override: None,
            user_verified: true,
            counter_step: 1,
            credentials: Vec::new(),
            rng: SystemRandom::new(),
        }
    }

    fn client_data(&self, kind: &str, challenge: &str) -> Vec<u8> {
        serde_json::to_vec(&json!({
            "type": kind,
            "challenge": challenge,
            "origin": self.origin,
            "crossOrigin": false,
        }))
        .unwrap()
    }

    fn flags(&self, attested: bool) -> u8 {
        let mut flags = 0x01; // user present
        if self.user_verified {
            flags |= 0x04;
        }
        if attested {
            flags |= 0x40;
        }
        flags
    }

    /// Answers creation options (`{"publicKey": {...}}` as the server sends them) with a new
    /// credential: the `PublicKeyCredential` JSON a browser client sends back.
    pub fn create(&mut self, options: &Value) -> Value {
        let pk = &options["publicKey"];
        let rp_id = pk["rp"]["id"].as_str().expect("rp.id").to_owned();
        let challenge = pk["challenge"].as_str().expect("challenge");
        let user_handle = B64
            .decode(pk["user"]["id"].as_str().expect("user.id"))
            .expect("user.id b64");
        let mut id = vec![0u8; 32];
        self.rng.fill(&mut id).unwrap();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &self.rng).unwrap();
        let key =
            EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, pkcs8.as_ref(), &self.rng).unwrap();
        let point = key.public_key().as_ref(); // 0x04 || x || y
        let cose = Cbor::Map(vec![
            (Cbor::Integer(1.into()), Cbor::Integer(2.into())), // kty: EC2
            (Cbor::Integer(3.into()), Cbor::Integer((-7).into())), // alg: ES256
            (Cbor::Integer((-1).into()), Cbor::Integer(1.into())), // crv: P-256
            (Cbor::Integer((-2).into()), Cbor::Bytes(point[1..33].to_vec())),
            (Cbor::Integer((-3).into()), Cbor::Bytes(point[33..65].to_vec())),
        ]);
        let counter = 0u32;
        let signed_rp = self.rp_id_override.clone().unwrap_or_else(|| rp_id.clone());
        let mut auth_data = sha256(signed_rp.as_bytes());
        auth_data.push(self.flags(true));
        auth_data.extend_from_slice(&counter.to_be_bytes());
        auth_data.extend_from_slice(&[0u8; 16]); // AAGUID
        auth_data.extend_from_slice(&(id.len() as u16).to_be_bytes());
        auth_data.extend_from_slice(&id);
        auth_data.extend_from_slice(&cbor(&cose));
        let attestation = Cbor::Map(vec![
            (Cbor::Text("fmt".into()), Cbor::Text("none".into())),
            (Cbor::Text("attStmt".into()), Cbor::Map(vec![])),
            (Cbor::Text("authData".into()), Cbor::Bytes(auth_data)),
        ]);
        let client_data = self.client_data("webauthn.create", challenge);
        self.credentials.push(Credential {
            id: id.clone(),
            user_handle,
            rp_id,
            key,
            counter,
        });
        json!({
            "id": b64(&id),
            "rawId": b64(&id),
            "type": "public-key",
            "response": {
                "attestationObject": b64(&cbor(&attestation)),
                "clientDataJSON": b64(&client_data),
                "transports": ["internal"],
            },
            "clientExtensionResults": {},
        })
    }

    /// Answers request options (`publicKey` as the server sends them) with credential
    /// `index`: the assertion JSON a browser client sends back.
    pub fn get(&mut self, public_key: &Value, index: usize) -> Value {
        let challenge = public_key["challenge"].as_str().expect("challenge").to_owned();
        let rp_id = public_key["rpId"].as_str().expect("rpId").to_owned();
        let client_data = self.client_data("webauthn.get", &challenge);
        let flags = self.flags(false);
        let signed_rp = self.rp_id_override.clone().unwrap_or(rp_id);
        let step = self.counter_step;
        let cred = &mut self.credentials[index];
        cred.counter += step;
        let mut auth_data = sha256(signed_rp.as_bytes());
        auth_data.push(flags);
        auth_data.extend_from_slice(&cred.counter.to_be_bytes());
        let mut signed = auth_data.clone();
        signed.extend_from_slice(&sha256(&client_data));
        let signature = cred.key.sign(&self.rng, &signed).unwrap();
        json!({
            "id": b64(&cred.id),
            "rawId": b64(&cred.id),
            "type": "public-key",
            "response": {
                "authenticatorData": b64(&auth_data),
                "clientDataJSON": b64(&client_data),
                "signature": b64(signature.as_ref()),
                "userHandle": b64(&cred.user_handle),
            },
            "clientExtensionResults": {},
        })
    }
}
