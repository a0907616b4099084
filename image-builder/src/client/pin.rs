//! Certificate pinning for `https://` appliances: appliances serve a self-signed certificate,
//! so the client trusts the one it saw first (or the `fingerprint` an inventory entry gives)
//! and refuses any other, naming both fingerprints.
//!
//! The pins of appliances without an inventory fingerprint live in a pin file,
//! `known-appliances` next to the inventory: one `URL FINGERPRINT` line per appliance
//! (`#` comments allowed), the fingerprint being the SHA-256 of the certificate's DER as
//! colon-separated upper-case hex, as the appliance's banner and `net` command print it.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

/// The pin file's name, next to the inventory.
pub const PIN_FILE_NAME: &str = "known-appliances";

/// The SHA-256 fingerprint of a DER certificate, in the appliance's own format.
pub fn fingerprint(der: &[u8]) -> String {
    keel_netstack::tls::cert::fingerprint(der)
}

/// `text` as a fingerprint in the canonical form (colon-separated upper-case hex), accepting
/// any case, with or without colons, with or without a `SHA256:` prefix; `None` if it is not
/// 32 bytes of hex.
pub fn normalize_fingerprint(text: &str) -> Option<String> {
    let text = text.trim();
    let text = text
        .strip_prefix("SHA256:")
        .or_else(|| text.strip_prefix("sha256:"))
        .unwrap_or(text);
    let hex: String = text.chars().filter(|c| *c != ':').collect();
    if hex.len() != 64 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
        return None;
    }
    let upper = hex.to_ascii_uppercase();
    let pairs: Vec<&str> = (0..32).map(|i| &upper[2 * i..2 * i + 2]).collect();
    Some(pairs.join(":"))
}

/// Why the pin file could not be used.
#[derive(Clone, Debug)]
pub enum PinError {
    /// Reading or writing the file failed.
    Io {
        /// The pin file.
        path: PathBuf,
        /// What the OS said.
        reason: String,
    },
    /// A line is not `URL FINGERPRINT`.
    BadLine {
        /// The pin file.
        path: PathBuf,
        /// The line number, from 1.
        line: usize,
        /// What is wrong.
        reason: String,
    },
}

impl fmt::Display for PinError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PinError::Io { path, reason } => {
                write!(f, "the pin file {}: {reason}", path.display())
            }
            PinError::BadLine { path, line, reason } => write!(
                f,
                "the pin file {} line {line}: {reason} (each line is `https://HOST[:PORT] \
                 FINGERPRINT`; fix or delete the line)",
                path.display()
            ),
        }
    }
}

impl std::error::Error for PinError {}

/// The `(url, fingerprint)` pairs of pin-file text, in file order.
pub fn parse_pins(text: &str, path: &Path) -> Result<Vec<(String, String)>, PinError> {
    let mut pins = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let bad = |reason: &str| PinError::BadLine {
            path: path.to_path_buf(),
            line: index + 1,
            reason: reason.to_owned(),
        };
        let mut words = line.split_whitespace();
        let (Some(url), Some(print), None) = (words.next(), words.next(), words.next()) else {
            return Err(bad("not two words"));
        };
        if !url.starts_with("https://") {
            return Err(bad("the URL is not https://"));
        }
        let print = normalize_fingerprint(print)
            .ok_or_else(|| bad("the fingerprint is not 32 bytes of hex"))?;
        pins.push((url.trim_end_matches('/').to_owned(), print));
    }
    Ok(pins)
}

/// A pin file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PinStore {
    path: PathBuf,
}

impl PinStore {
    /// The pin file at `path` (it need not exist yet).
    pub fn new(path: PathBuf) -> PinStore {
        PinStore { path }
    }

    /// The pin file next to the inventory at `inventory`.
    pub fn next_to(inventory: &Path) -> PinStore {
        PinStore::new(inventory.with_file_name(PIN_FILE_NAME))
    }

    /// Where the file is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn load(&self) -> Result<Vec<(String, String)>, PinError> {
        match std::fs::read_to_string(&self.path) {
            Ok(text) => parse_pins(&text, &self.path),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(PinError::Io {
                path: self.path.clone(),
                reason: e.to_string(),
            }),
        }
    }

    /// The fingerprint pinned for `url`, if any.
    pub fn get(&self, url: &str) -> Result<Option<String>, PinError> {
        let url = url.trim_end_matches('/');
        Ok(self
            .load()?
            .into_iter()
            .find(|(pinned, _)| pinned == url)
            .map(|(_, print)| print))
    }

    /// Pins `print` for `url`, replacing its old pin; written to a temporary file and renamed
    /// so that a crash leaves the old file or the new one.
    pub fn set(&self, url: &str, print: &str) -> Result<(), PinError> {
        let io = |e: std::io::Error| PinError::Io {
            path: self.path.clone(),
            reason: e.to_string(),
        };
        let url = url.trim_end_matches('/');
        // `keel fleet` asks appliances from several threads: one read-modify-write at a time.
        static WRITING: Mutex<()> = Mutex::new(());
        let _writing = WRITING.lock().unwrap_or_else(|e| e.into_inner());
        let mut pins = self.load()?;
        pins.retain(|(pinned, _)| pinned != url);
        pins.push((url.to_owned(), print.to_owned()));
        let mut text = String::from(
            "# Certificates of Keel appliances, pinned by `keel` on first use.\n\
             # If an appliance's certificate was replaced on purpose, delete its line.\n",
        );
        for (url, print) in &pins {
            text.push_str(&format!("{url} {print}\n"));
        }
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let temporary = self.path.with_extension("tmp");
        std::fs::write(&temporary, text).map_err(io)?;
        std::fs::rename(&temporary, &self.path).map_err(io)
    }
}

/// What the verifier knows and saw.
#[derive(Debug, Default)]
struct PinState {
    /// The fingerprint the certificate must have (`None` until the first connection when
    /// nothing is pinned).
    expected: Option<String>,
    /// The fingerprint of the last certificate refused for not matching `expected`.
    refused: Option<String>,
}

/// A refused certificate: what was pinned and what the appliance presented.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mismatch {
    /// The pinned fingerprint.
    pub pinned: String,
    /// The presented certificate's fingerprint.
    pub presented: String,
}

/// A rustls verifier that accepts exactly one end-entity certificate, by its SHA-256: no CA
/// chain and no host name are checked (appliances are self-signed and often reached by IP).
/// With nothing pinned it accepts the first certificate and pins it (in the store when
/// there is one). Handshake signatures are still checked against that certificate's key.
#[derive(Debug)]
pub struct PinVerifier {
    url: String,
    store: Option<PinStore>,
    state: Mutex<PinState>,
    provider: Arc<CryptoProvider>,
}

impl PinVerifier {
    /// A verifier for the appliance at `url`: `expected` is the fingerprint it must present
    /// (an inventory entry's), else the pin in `store`, else the first one seen.
    pub fn new(
        url: &str,
        expected: Option<String>,
        store: Option<PinStore>,
    ) -> Result<PinVerifier, PinError> {
        let expected = match expected {
            Some(print) => Some(print),
            None => match &store {
                Some(store) => store.get(url)?,
                None => None,
            },
        };
        // ring: no post-quantum key exchange, which the appliance (rustls with RustCrypto)
        // does not offer either; aws-lc-rs would add a C/CMake build for nothing.
        #[allow(deprecated)]
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        Ok(PinVerifier {
            url: url.trim_end_matches('/').to_owned(),
            store,
            state: Mutex::new(PinState {
                expected,
                refused: None,
            }),
            provider,
        })
    }

    /// The last refused certificate, if a handshake was refused.
    pub fn mismatch(&self) -> Option<Mismatch> {
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        Some(Mismatch {
            pinned: state.expected.clone()?,
            presented: state.refused.clone()?,
        })
    }

    /// The pin file, if pins are stored.
    pub fn store(&self) -> Option<&PinStore> {
        self.store.as_ref()
    }

    /// Decides on a certificate by its fingerprint (the verifier's logic without rustls).
    pub fn check(&self, presented: &str) -> Result<(), String> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        match &state.expected {
            Some(expected) if expected == presented => Ok(()),
            Some(expected) => {
                let message = format!(
                    "the certificate of {} changed: pinned {expected}, presented {presented}",
                    self.url
                );
                state.refused = Some(presented.to_owned());
                Err(message)
            }
            None => {
                if let Some(store) = &self.store {
                    store
                        .set(&self.url, presented)
                        .map_err(|e| format!("pinning the certificate: {e}"))?;
                    eprintln!(
                        "keel: pinned the certificate of {} (SHA-256 {presented}) in {}",
                        self.url,
                        store.path().display()
                    );
                }
                state.expected = Some(presented.to_owned());
                Ok(())
            }
        }
    }

    /// A rustls client configuration that verifies with `verifier`.
    pub fn client_config(
        verifier: Arc<PinVerifier>,
    ) -> Result<Arc<rustls::ClientConfig>, rustls::Error> {
        let provider = verifier.provider.clone();
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth();
        Ok(Arc::new(config))
    }
}

impl ServerCertVerifier for PinVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.check(&fingerprint(end_entity.as_ref()))
            .map(|()| ServerCertVerified::assertion())
            .map_err(rustls::Error::General)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89";
    const B: &str = "00:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89";

    #[test]
    fn fingerprints_normalize() {
        assert_eq!(normalize_fingerprint(A).as_deref(), Some(A));
        let bare = A.replace(':', "").to_ascii_lowercase();
        assert_eq!(normalize_fingerprint(&bare).as_deref(), Some(A));
        assert_eq!(
            normalize_fingerprint(&format!("SHA256:{A}")).as_deref(),
            Some(A)
        );
        assert_eq!(normalize_fingerprint("AB:CD"), None);
        assert_eq!(normalize_fingerprint(&A.replace('A', "G")), None);
        assert_eq!(fingerprint(b"x").len(), 95);
    }

    #[test]
    fn the_store_pins_replaces_and_rejects_bad_lines() {
        let dir = tempfile::tempdir().unwrap();
        let store = PinStore::next_to(&dir.path().join("fleet.toml"));
        assert_eq!(store.path(), dir.path().join(PIN_FILE_NAME));
        assert_eq!(store.get("https://10.0.0.5").unwrap(), None);
        store.set("https://10.0.0.5/", A).unwrap();
        store.set("https://10.0.0.6:8443", B).unwrap();
        assert_eq!(store.get("https://10.0.0.5").unwrap().as_deref(), Some(A));
        store.set("https://10.0.0.5", B).unwrap();
        assert_eq!(store.get("https://10.0.0.5").unwrap().as_deref(), Some(B));
        let text = std::fs::read_to_string(store.path()).unwrap();
        assert_eq!(text.matches("https://10.0.0.5 ").count(), 1, "{text}");
        std::fs::write(store.path(), "https://x\n").unwrap();
        let error = store.get("https://x").unwrap_err().to_string();
        assert!(error.contains("line 1: not two words"), "{error}");
        std::fs::write(store.path(), "http://x ab\n").unwrap();
        assert!(store.get("https://x").is_err());
    }

    #[test]
    fn the_verifier_pins_on_first_use_then_refuses_a_change() {
        let dir = tempfile::tempdir().unwrap();
        let store = PinStore::new(dir.path().join("pins"));
        let verifier = PinVerifier::new("https://h:8443", None, Some(store.clone())).unwrap();
        verifier.check(A).unwrap();
        assert_eq!(store.get("https://h:8443").unwrap().as_deref(), Some(A));
        verifier.check(A).unwrap();
        assert_eq!(verifier.mismatch(), None);
        let error = verifier.check(B).unwrap_err();
        assert!(error.contains(A) && error.contains(B), "{error}");
        assert_eq!(
            verifier.mismatch(),
            Some(Mismatch {
                pinned: A.into(),
                presented: B.into()
            })
        );
        // A new client of the same appliance reads the pin back.
        let again = PinVerifier::new("https://h:8443/", None, Some(store.clone())).unwrap();
        assert!(again.check(B).is_err());
        // An inventory fingerprint wins over the store.
        let given = PinVerifier::new("https://h:8443", Some(B.into()), Some(store)).unwrap();
        given.check(B).unwrap();
        assert!(given.check(A).is_err());
    }
}
