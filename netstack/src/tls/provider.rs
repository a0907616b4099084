//! Keel's rustls crypto provider over the RustCrypto crates: TLS 1.3 only, the two AEAD
//! suites every modern client offers (AES-128-GCM, ChaCha20-Poly1305, both SHA-256), X25519
//! and P-256 key exchange, ECDSA P-256 server signatures. Nothing here verifies peer
//! certificates: the server asks for no client certificate.

use alloc::boxed::Box;
use alloc::sync::Arc;
use alloc::vec::Vec;

use aes_gcm::aead::{AeadInPlace, KeyInit};
use hmac::Mac;
use rustls::crypto::cipher::{
    AeadKey, InboundOpaqueMessage, InboundPlainMessage, Iv, MessageDecrypter, MessageEncrypter,
    Nonce, OutboundOpaqueMessage, OutboundPlainMessage, PrefixedPayload, Tls13AeadAlgorithm,
    UnsupportedOperationError, make_tls13_aad,
};
use rustls::crypto::tls13::HkdfUsingHmac;
use rustls::crypto::{
    ActiveKeyExchange, CipherSuiteCommon, CryptoProvider, GetRandomFailed, KeyProvider,
    SecureRandom, SharedSecret, SupportedKxGroup, WebPkiSupportedAlgorithms, hash, hmac as rhmac,
};
use rustls::pki_types::PrivateKeyDer;
use rustls::sign::{Signer, SigningKey};
use rustls::{
    CipherSuite, ContentType, Error, NamedGroup, ProtocolVersion, SignatureAlgorithm,
    SignatureScheme, SupportedCipherSuite, Tls13CipherSuite,
};
use sha2::Digest;

use super::random;

/// The provider: TLS 1.3 suites, X25519 then P-256, randomness from [`random`].
pub fn provider() -> CryptoProvider {
    CryptoProvider {
        cipher_suites: alloc::vec![TLS13_AES_128_GCM_SHA256, TLS13_CHACHA20_POLY1305_SHA256],
        kx_groups: alloc::vec![&X25519 as &dyn SupportedKxGroup, &P256],
        signature_verification_algorithms: WebPkiSupportedAlgorithms {
            all: &[],
            mapping: &[],
        },
        secure_random: &KernelRandom,
        key_provider: &EcdsaKeys,
    }
}

// --- hashing -------------------------------------------------------------------------------

struct Sha256Hash;

impl hash::Hash for Sha256Hash {
    fn start(&self) -> Box<dyn hash::Context> {
        Box::new(Sha256Context(sha2::Sha256::new()))
    }
    fn hash(&self, data: &[u8]) -> hash::Output {
        hash::Output::new(&sha2::Sha256::digest(data))
    }
    fn output_len(&self) -> usize {
        32
    }
    fn algorithm(&self) -> hash::HashAlgorithm {
        hash::HashAlgorithm::SHA256
    }
}

struct Sha256Context(sha2::Sha256);

impl hash::Context for Sha256Context {
    fn fork_finish(&self) -> hash::Output {
        hash::Output::new(&self.0.clone().finalize())
    }
    fn fork(&self) -> Box<dyn hash::Context> {
        Box::new(Sha256Context(self.0.clone()))
    }
    fn finish(self: Box<Self>) -> hash::Output {
        hash::Output::new(&self.0.finalize())
    }
    fn update(&mut self, data: &[u8]) {
        self.0.update(data);
    }
}

struct HmacSha256;

impl rhmac::Hmac for HmacSha256 {
    fn with_key(&self, key: &[u8]) -> Box<dyn rhmac::Key> {
        // HMAC takes keys of any length.
        Box::new(HmacSha256Key(
            <hmac::Hmac<sha2::Sha256> as Mac>::new_from_slice(key)
                .expect("HMAC accepts any key length"),
        ))
    }
    fn hash_output_len(&self) -> usize {
        32
    }
}

struct HmacSha256Key(hmac::Hmac<sha2::Sha256>);

impl rhmac::Key for HmacSha256Key {
    fn sign_concat(&self, first: &[u8], middle: &[&[u8]], last: &[u8]) -> rhmac::Tag {
        let mut mac = self.0.clone();
        mac.update(first);
        for part in middle {
            mac.update(part);
        }
        mac.update(last);
        rhmac::Tag::new(&mac.finalize().into_bytes())
    }
    fn tag_len(&self) -> usize {
        32
    }
}

static HMAC_SHA256: HmacSha256 = HmacSha256;
static HKDF_SHA256: HkdfUsingHmac<'static> = HkdfUsingHmac(&HMAC_SHA256);

// --- AEAD ----------------------------------------------------------------------------------

const TAG_LEN: usize = 16;

#[derive(Clone, Copy)]
enum AeadKind {
    Aes128Gcm,
    ChaCha20Poly1305,
}

enum AeadCipher {
    // Boxed: the soft AES key schedule is 700 bytes, ChaCha20's key 32.
    Aes128Gcm(Box<aes_gcm::Aes128Gcm>),
    ChaCha20Poly1305(chacha20poly1305::ChaCha20Poly1305),
}

impl AeadCipher {
    fn new(kind: AeadKind, key: &AeadKey) -> Result<AeadCipher, Error> {
        let bad = |_| Error::General("AEAD key of the wrong length".into());
        Ok(match kind {
            AeadKind::Aes128Gcm => AeadCipher::Aes128Gcm(Box::new(
                aes_gcm::Aes128Gcm::new_from_slice(key.as_ref()).map_err(bad)?,
            )),
            AeadKind::ChaCha20Poly1305 => AeadCipher::ChaCha20Poly1305(
                chacha20poly1305::ChaCha20Poly1305::new_from_slice(key.as_ref()).map_err(bad)?,
            ),
        })
    }

    fn seal(&self, nonce: &Nonce, aad: &[u8], data: &mut Vec<u8>) -> Result<(), Error> {
        let failed = |_| Error::EncryptError;
        match self {
            AeadCipher::Aes128Gcm(c) => c
                .encrypt_in_place(aes_gcm::Nonce::from_slice(&nonce.0), aad, data)
                .map_err(failed),
            AeadCipher::ChaCha20Poly1305(c) => c
                .encrypt_in_place(chacha20poly1305::Nonce::from_slice(&nonce.0), aad, data)
                .map_err(failed),
        }
    }

    fn open(&self, nonce: &Nonce, aad: &[u8], data: &mut [u8], tag: &[u8]) -> Result<(), Error> {
        let failed = |_| Error::DecryptError;
        match self {
            AeadCipher::Aes128Gcm(c) => c
                .decrypt_in_place_detached(
                    aes_gcm::Nonce::from_slice(&nonce.0),
                    aad,
                    data,
                    aes_gcm::Tag::from_slice(tag),
                )
                .map_err(failed),
            AeadCipher::ChaCha20Poly1305(c) => c
                .decrypt_in_place_detached(
                    chacha20poly1305::Nonce::from_slice(&nonce.0),
                    aad,
                    data,
                    chacha20poly1305::Tag::from_slice(tag),
                )
                .map_err(failed),
        }
    }
}

/// A TLS 1.3 record protection (RFC 8446 §5.2) with one AEAD.
struct Tls13Aead(AeadKind);

struct Tls13Record {
    cipher: Option<AeadCipher>,
    iv: Iv,
}

impl Tls13AeadAlgorithm for Tls13Aead {
    fn encrypter(&self, key: AeadKey, iv: Iv) -> Box<dyn MessageEncrypter> {
        Box::new(Tls13Record {
            cipher: AeadCipher::new(self.0, &key).ok(),
            iv,
        })
    }
    fn decrypter(&self, key: AeadKey, iv: Iv) -> Box<dyn MessageDecrypter> {
        Box::new(Tls13Record {
            cipher: AeadCipher::new(self.0, &key).ok(),
            iv,
        })
    }
    fn key_len(&self) -> usize {
        match self.0 {
            AeadKind::Aes128Gcm => 16,
            AeadKind::ChaCha20Poly1305 => 32,
        }
    }
    fn extract_keys(
        &self,
        _key: AeadKey,
        _iv: Iv,
    ) -> Result<rustls::ConnectionTrafficSecrets, UnsupportedOperationError> {
        // Only kernel TLS offload needs the keys out; Keel has none.
        Err(UnsupportedOperationError)
    }
}

impl MessageEncrypter for Tls13Record {
    fn encrypt(
        &mut self,
        msg: OutboundPlainMessage<'_>,
        seq: u64,
    ) -> Result<OutboundOpaqueMessage, Error> {
        let cipher = self.cipher.as_ref().ok_or(Error::EncryptError)?;
        let total = msg.payload.len() + 1 + TAG_LEN;
        // TLSInnerPlaintext: the content, then its real type.
        let mut data = Vec::with_capacity(total);
        data.extend_from_slice(&msg.payload.to_vec());
        data.push(u8::from(msg.typ));
        let nonce = Nonce::new(&self.iv, seq);
        cipher.seal(&nonce, &make_tls13_aad(total), &mut data)?;
        let mut payload = PrefixedPayload::with_capacity(total);
        payload.extend_from_slice(&data);
        Ok(OutboundOpaqueMessage::new(
            ContentType::ApplicationData,
            ProtocolVersion::TLSv1_2,
            payload,
        ))
    }
    fn encrypted_payload_len(&self, payload_len: usize) -> usize {
        payload_len + 1 + TAG_LEN
    }
}

impl MessageDecrypter for Tls13Record {
    fn decrypt<'a>(
        &mut self,
        mut msg: InboundOpaqueMessage<'a>,
        seq: u64,
    ) -> Result<InboundPlainMessage<'a>, Error> {
        let cipher = self.cipher.as_ref().ok_or(Error::DecryptError)?;
        let len = msg.payload.len();
        if len < TAG_LEN {
            return Err(Error::DecryptError);
        }
        let aad = make_tls13_aad(len);
        let nonce = Nonce::new(&self.iv, seq);
        let (data, tag) = msg.payload.split_at_mut(len - TAG_LEN);
        cipher.open(&nonce, &aad, data, tag)?;
        msg.payload.truncate(len - TAG_LEN);
        msg.into_tls13_unpadded_message()
    }
}

static AES_128_GCM: Tls13Aead = Tls13Aead(AeadKind::Aes128Gcm);
static CHACHA20_POLY1305: Tls13Aead = Tls13Aead(AeadKind::ChaCha20Poly1305);

// RFC 8446 §5.5: AES-GCM may protect at most 2^24.5 full records per key.
const AES_GCM_LIMIT: u64 = 1 << 24;

/// TLS_AES_128_GCM_SHA256.
pub static TLS13_AES_128_GCM_SHA256: SupportedCipherSuite =
    SupportedCipherSuite::Tls13(&Tls13CipherSuite {
        common: CipherSuiteCommon {
            suite: CipherSuite::TLS13_AES_128_GCM_SHA256,
            hash_provider: &Sha256Hash,
            confidentiality_limit: AES_GCM_LIMIT,
        },
        hkdf_provider: &HKDF_SHA256,
        aead_alg: &AES_128_GCM,
        quic: None,
    });

/// TLS_CHACHA20_POLY1305_SHA256.
pub static TLS13_CHACHA20_POLY1305_SHA256: SupportedCipherSuite =
    SupportedCipherSuite::Tls13(&Tls13CipherSuite {
        common: CipherSuiteCommon {
            suite: CipherSuite::TLS13_CHACHA20_POLY1305_SHA256,
            hash_provider: &Sha256Hash,
            confidentiality_limit: u64::MAX,
        },
        hkdf_provider: &HKDF_SHA256,
        aead_alg: &CHACHA20_POLY1305,
        quic: None,
    });

// --- key exchange --------------------------------------------------------------------------

#[derive(Debug)]
struct X25519Group;

struct X25519Exchange {
    secret: x25519_dalek::StaticSecret,
    public: [u8; 32],
}

impl SupportedKxGroup for X25519Group {
    fn start(&self) -> Result<Box<dyn ActiveKeyExchange>, Error> {
        let mut bytes = [0u8; 32];
        random::fill(&mut bytes).map_err(|_| Error::FailedToGetRandomBytes)?;
        let secret = x25519_dalek::StaticSecret::from(bytes);
        let public = x25519_dalek::PublicKey::from(&secret).to_bytes();
        Ok(Box::new(X25519Exchange { secret, public }))
    }
    fn name(&self) -> NamedGroup {
        NamedGroup::X25519
    }
}

impl ActiveKeyExchange for X25519Exchange {
    fn complete(self: Box<Self>, peer_pub_key: &[u8]) -> Result<SharedSecret, Error> {
        let peer: [u8; 32] = peer_pub_key
            .try_into()
            .map_err(|_| Error::from(rustls::PeerMisbehaved::InvalidKeyShare))?;
        let shared = self
            .secret
            .diffie_hellman(&x25519_dalek::PublicKey::from(peer));
        // RFC 7748 §6.1: an all-zero result means a low-order point from the peer.
        if !shared.was_contributory() {
            return Err(rustls::PeerMisbehaved::InvalidKeyShare.into());
        }
        Ok(SharedSecret::from(&shared.as_bytes()[..]))
    }
    fn pub_key(&self) -> &[u8] {
        &self.public
    }
    fn group(&self) -> NamedGroup {
        NamedGroup::X25519
    }
}

#[derive(Debug)]
struct P256Group;

struct P256Exchange {
    secret: p256::SecretKey,
    public: Vec<u8>,
}

impl SupportedKxGroup for P256Group {
    fn start(&self) -> Result<Box<dyn ActiveKeyExchange>, Error> {
        let secret = random_p256_secret().map_err(|_| Error::FailedToGetRandomBytes)?;
        let public = p256::EncodedPoint::from(secret.public_key())
            .as_bytes()
            .to_vec();
        Ok(Box::new(P256Exchange { secret, public }))
    }
    fn name(&self) -> NamedGroup {
        NamedGroup::secp256r1
    }
}

impl ActiveKeyExchange for P256Exchange {
    fn complete(self: Box<Self>, peer_pub_key: &[u8]) -> Result<SharedSecret, Error> {
        let peer = p256::PublicKey::from_sec1_bytes(peer_pub_key)
            .map_err(|_| Error::from(rustls::PeerMisbehaved::InvalidKeyShare))?;
        let shared = p256::ecdh::diffie_hellman(self.secret.to_nonzero_scalar(), peer.as_affine());
        Ok(SharedSecret::from(&shared.raw_secret_bytes()[..]))
    }
    fn pub_key(&self) -> &[u8] {
        &self.public
    }
    fn group(&self) -> NamedGroup {
        NamedGroup::secp256r1
    }
}

static X25519: X25519Group = X25519Group;
static P256: P256Group = P256Group;

/// A fresh P-256 private key from [`random`] (retrying the rare out-of-range draw).
pub fn random_p256_secret() -> Result<p256::SecretKey, random::NotSeeded> {
    loop {
        let mut bytes = [0u8; 32];
        random::fill(&mut bytes)?;
        if let Ok(key) = p256::SecretKey::from_slice(&bytes) {
            return Ok(key);
        }
    }
}

// --- randomness and keys -------------------------------------------------------------------

#[derive(Debug)]
struct KernelRandom;

impl SecureRandom for KernelRandom {
    fn fill(&self, buf: &mut [u8]) -> Result<(), GetRandomFailed> {
        random::fill(buf).map_err(|_| GetRandomFailed)
    }
}

#[derive(Debug)]
struct EcdsaKeys;

impl KeyProvider for EcdsaKeys {
    fn load_private_key(
        &self,
        key_der: PrivateKeyDer<'static>,
    ) -> Result<Arc<dyn SigningKey>, Error> {
        let key = super::cert::p256_key_from_der(&key_der)
            .map_err(|e| Error::General(alloc::format!("{e}")))?;
        Ok(Arc::new(EcdsaSigningKey(p256::ecdsa::SigningKey::from(
            key,
        ))))
    }
}

/// The server's ECDSA P-256 key, for `ecdsa_secp256r1_sha256` signatures.
#[derive(Debug)]
pub struct EcdsaSigningKey(pub p256::ecdsa::SigningKey);

impl SigningKey for EcdsaSigningKey {
    fn choose_scheme(&self, offered: &[SignatureScheme]) -> Option<Box<dyn Signer>> {
        offered
            .contains(&SignatureScheme::ECDSA_NISTP256_SHA256)
            .then(|| Box::new(EcdsaSigner(self.0.clone())) as Box<dyn Signer>)
    }
    fn algorithm(&self) -> SignatureAlgorithm {
        SignatureAlgorithm::ECDSA
    }
}

#[derive(Debug)]
struct EcdsaSigner(p256::ecdsa::SigningKey);

impl Signer for EcdsaSigner {
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, Error> {
        // RFC 6979 deterministic nonces: no randomness needed, none to get wrong.
        let signature: p256::ecdsa::Signature =
            p256::ecdsa::signature::Signer::sign(&self.0, message);
        Ok(signature.to_der().as_bytes().to_vec())
    }
    fn scheme(&self) -> SignatureScheme {
        SignatureScheme::ECDSA_NISTP256_SHA256
    }
}
