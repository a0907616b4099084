//! The appliance's certificate: a self-signed ECDSA P-256 X.509 v3 certificate built here in
//! DER (subject CN and SANs from the hostname and the management address), PEM in and out,
//! the SHA-256 fingerprint, and the checks an operator-supplied pair must pass (the key
//! matches the certificate, the certificate is not expired).

use alloc::string::String;
use alloc::vec::Vec;
use core::net::Ipv4Addr;

use p256::pkcs8::{DecodePrivateKey, EncodePrivateKey, LineEnding};
use sha2::Digest;

/// Why a certificate or key was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CertError {
    /// No good random source: no key is made.
    #[error("cannot make a key: {0}")]
    NoEntropy(#[from] super::random::NotSeeded),
    /// The certificate text is not PEM `CERTIFICATE`.
    #[error("the certificate is not PEM (-----BEGIN CERTIFICATE-----): {0}")]
    CertNotPem(String),
    /// The key text is neither PKCS#8 nor SEC1 PEM of a P-256 key.
    #[error(
        "the key is not a PEM P-256 private key (PKCS#8 \"PRIVATE KEY\" or SEC1 \"EC PRIVATE KEY\")"
    )]
    KeyNotP256,
    /// The certificate's DER does not parse as X.509.
    #[error("the certificate is not valid X.509: {0}")]
    Malformed(&'static str),
    /// The certificate's public key is not the key's.
    #[error("the private key does not match the certificate's public key")]
    KeyMismatch,
    /// The certificate's notAfter is in the past.
    #[error("the certificate expired (notAfter {not_after} s since 1970, now {now})")]
    Expired {
        /// notAfter, in seconds since 1970.
        not_after: i64,
        /// The time of the check.
        now: i64,
    },
}

/// A certificate and its key, as stored (PEM) and as served (DER).
#[derive(Clone, PartialEq, Eq)]
pub struct Identity {
    /// The certificate, DER.
    pub cert_der: Vec<u8>,
    /// The key, PKCS#8 DER.
    pub key_der: Vec<u8>,
}

impl core::fmt::Debug for Identity {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        // Never the key.
        f.debug_struct("Identity")
            .field("fingerprint", &fingerprint(&self.cert_der))
            .finish_non_exhaustive()
    }
}

impl Identity {
    /// The certificate as PEM.
    pub fn cert_pem(&self) -> String {
        pem_rfc7468::encode_string("CERTIFICATE", LineEnding::LF, &self.cert_der)
            .unwrap_or_default()
    }

    /// The key as PKCS#8 PEM.
    pub fn key_pem(&self) -> String {
        pem_rfc7468::encode_string("PRIVATE KEY", LineEnding::LF, &self.key_der).unwrap_or_default()
    }

    /// The certificate's SHA-256 fingerprint, `AB:CD:…`.
    pub fn fingerprint(&self) -> String {
        fingerprint(&self.cert_der)
    }

    /// Parses and checks an operator's PEM pair at time `now` (seconds since 1970).
    pub fn from_pem(cert_pem: &str, key_pem: &str, now: i64) -> Result<Identity, CertError> {
        let (label, cert_der) = pem_rfc7468::decode_vec(cert_pem.trim().as_bytes())
            .map_err(|e| CertError::CertNotPem(alloc::format!("{e}")))?;
        if label != "CERTIFICATE" {
            return Err(CertError::CertNotPem(alloc::format!(
                "its label is {label:?}"
            )));
        }
        let key = p256::SecretKey::from_pkcs8_pem(key_pem.trim())
            .or_else(|_| p256::SecretKey::from_sec1_pem(key_pem.trim()))
            .map_err(|_| CertError::KeyNotP256)?;
        let fields = parse_cert(&cert_der)?;
        let point = p256::EncodedPoint::from(key.public_key());
        let compressed = key.public_key().to_sec1_bytes();
        if fields.public_key != point.as_bytes() && fields.public_key != &compressed[..] {
            return Err(CertError::KeyMismatch);
        }
        if fields.not_after < now {
            return Err(CertError::Expired {
                not_after: fields.not_after,
                now,
            });
        }
        let key_der = key
            .to_pkcs8_der()
            .map_err(|_| CertError::KeyNotP256)?
            .as_bytes()
            .to_vec();
        Ok(Identity { cert_der, key_der })
    }

    /// A new self-signed identity for `hostname` (and `address` if known), valid from
    /// 2025-01-01 (or a day before `now`, seconds since 1970, if earlier) until 9999-12-31.
    pub fn generate(
        hostname: &str,
        address: Option<Ipv4Addr>,
        now: i64,
    ) -> Result<Identity, CertError> {
        let key = super::provider::random_p256_secret()?;
        let mut serial = [0u8; 16];
        super::random::fill(&mut serial)?;
        let cert_der = self_signed(&key, hostname, address, now, serial);
        let key_der = key
            .to_pkcs8_der()
            .map_err(|_| CertError::KeyNotP256)?
            .as_bytes()
            .to_vec();
        Ok(Identity { cert_der, key_der })
    }
}

/// The DER of a PEM `CERTIFICATE`.
pub fn cert_pem_to_der(pem: &str) -> Option<Vec<u8>> {
    match pem_rfc7468::decode_vec(pem.trim().as_bytes()) {
        Ok(("CERTIFICATE", der)) => Some(der),
        _ => None,
    }
}

/// SHA-256 of `der`, as colon-separated upper-case hex.
pub fn fingerprint(der: &[u8]) -> String {
    let digest = sha2::Sha256::digest(der);
    let mut out = String::with_capacity(95);
    for (i, byte) in digest.iter().enumerate() {
        if i > 0 {
            out.push(':');
        }
        out.push_str(&alloc::format!("{byte:02X}"));
    }
    out
}

/// The P-256 key in a PKCS#8 (or SEC1) DER.
pub fn p256_key_from_der(
    key: &rustls::pki_types::PrivateKeyDer<'_>,
) -> Result<p256::SecretKey, CertError> {
    p256::SecretKey::from_pkcs8_der(key.secret_der())
        .or_else(|_| p256::SecretKey::from_sec1_der(key.secret_der()))
        .map_err(|_| CertError::KeyNotP256)
}

// --- DER writing ---------------------------------------------------------------------------

fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(content.len() + 4);
    out.push(tag);
    let len = content.len();
    if len < 0x80 {
        out.push(len as u8);
    } else if len < 0x100 {
        out.extend_from_slice(&[0x81, len as u8]);
    } else {
        out.extend_from_slice(&[0x82, (len >> 8) as u8, len as u8]);
    }
    out.extend_from_slice(content);
    out
}

fn seq(parts: &[&[u8]]) -> Vec<u8> {
    tlv(0x30, &parts.concat())
}

/// 2025-01-01T00:00:00Z: the notBefore of generated certificates (unless the clock is
/// earlier still).
const NOT_BEFORE: i64 = 1_735_689_600;

// OIDs, content bytes only.
const OID_ECDSA_SHA256: &[u8] = &[0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x04, 0x03, 0x02];
const OID_EC_PUBLIC_KEY: &[u8] = &[0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x02, 0x01];
const OID_P256: &[u8] = &[0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x03, 0x01, 0x07];
const OID_COMMON_NAME: &[u8] = &[0x55, 0x04, 0x03];
const OID_SUBJECT_ALT_NAME: &[u8] = &[0x55, 0x1D, 0x11];

fn self_signed(
    key: &p256::SecretKey,
    hostname: &str,
    address: Option<Ipv4Addr>,
    now: i64,
    mut serial: [u8; 16],
) -> Vec<u8> {
    // A positive INTEGER without a leading zero byte.
    serial[0] = (serial[0] & 0x7F) | 0x40;
    let algorithm = seq(&[&tlv(0x06, OID_ECDSA_SHA256)]);
    let name = seq(&[&tlv(
        0x31,
        &seq(&[&tlv(0x06, OID_COMMON_NAME), &tlv(0x0C, hostname.as_bytes())]),
    )]);
    // Generous: a client whose clock is behind the appliance's RTC (or an RTC that is ahead)
    // must not see a certificate that is "not valid yet".
    let not_before = utc_time((now - 86_400).min(NOT_BEFORE));
    let validity = seq(&[&not_before, &tlv(0x18, b"99991231235959Z")]);
    let point = p256::EncodedPoint::from(key.public_key());
    let mut bits = alloc::vec![0u8];
    bits.extend_from_slice(point.as_bytes());
    let spki = seq(&[
        &seq(&[&tlv(0x06, OID_EC_PUBLIC_KEY), &tlv(0x06, OID_P256)]),
        &tlv(0x03, &bits),
    ]);
    let mut names = tlv(0x82, hostname.as_bytes());
    if let Some(ip) = address {
        names.extend_from_slice(&tlv(0x87, &ip.octets()));
    }
    let san = seq(&[
        &tlv(0x06, OID_SUBJECT_ALT_NAME),
        &tlv(0x04, &tlv(0x30, &names)),
    ]);
    let extensions = tlv(0xA3, &seq(&[&san]));
    let tbs = seq(&[
        &tlv(0xA0, &tlv(0x02, &[2])),
        &tlv(0x02, &serial),
        &algorithm,
        &name,
        &validity,
        &name,
        &spki,
        &extensions,
    ]);
    let signing = p256::ecdsa::SigningKey::from(key);
    let signature: p256::ecdsa::Signature = p256::ecdsa::signature::Signer::sign(&signing, &tbs);
    let mut sig_bits = alloc::vec![0u8];
    sig_bits.extend_from_slice(signature.to_der().as_bytes());
    seq(&[&tbs, &algorithm, &tlv(0x03, &sig_bits)])
}

/// UTCTime (1950–2049) or GeneralizedTime for `secs` since 1970.
fn utc_time(secs: i64) -> Vec<u8> {
    let (y, mo, d) = civil_from_days(secs.div_euclid(86_400));
    let s = secs.rem_euclid(86_400);
    let (h, mi, se) = (s / 3600, s / 60 % 60, s % 60);
    if (1950..2050).contains(&y) {
        let text = alloc::format!("{:02}{mo:02}{d:02}{h:02}{mi:02}{se:02}Z", y % 100);
        tlv(0x17, text.as_bytes())
    } else {
        let text = alloc::format!("{y:04}{mo:02}{d:02}{h:02}{mi:02}{se:02}Z");
        tlv(0x18, text.as_bytes())
    }
}

/// Days since 1970-01-01 → (year, month, day), proleptic Gregorian.
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// (year, month, day) → days since 1970-01-01.
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

// --- DER reading (only what the checks need) -----------------------------------------------

struct CertFields<'a> {
    public_key: &'a [u8],
    not_after: i64,
}

/// Splits one TLV off `input`: (tag, content, rest).
fn read_tlv(input: &[u8]) -> Result<(u8, &[u8], &[u8]), CertError> {
    let bad = CertError::Malformed("truncated DER");
    let (&tag, rest) = input.split_first().ok_or(bad.clone())?;
    let (&first, rest) = rest.split_first().ok_or(bad.clone())?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7F);
        if n == 0 || n > 3 || rest.len() < n {
            return Err(CertError::Malformed("bad DER length"));
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
        (len, &rest[n..])
    };
    if rest.len() < len {
        return Err(bad);
    }
    Ok((tag, &rest[..len], &rest[len..]))
}

fn expect<'a>(
    input: &'a [u8],
    tag: u8,
    what: &'static str,
) -> Result<(&'a [u8], &'a [u8]), CertError> {
    let (t, content, rest) = read_tlv(input)?;
    if t != tag {
        return Err(CertError::Malformed(what));
    }
    Ok((content, rest))
}

fn parse_cert(der: &[u8]) -> Result<CertFields<'_>, CertError> {
    let (cert, _) = expect(der, 0x30, "not a SEQUENCE")?;
    let (tbs, _) = expect(cert, 0x30, "no tbsCertificate")?;
    let mut rest = tbs;
    if rest.first() == Some(&0xA0) {
        rest = read_tlv(rest)?.2;
    }
    let (_, rest) = expect(rest, 0x02, "no serial number")?;
    let (_, rest) = expect(rest, 0x30, "no signature algorithm")?;
    let (_, rest) = expect(rest, 0x30, "no issuer")?;
    let (validity, rest) = expect(rest, 0x30, "no validity")?;
    let (_, _, after) = read_tlv(validity)?;
    let (tag, not_after, _) = read_tlv(after)?;
    let not_after = parse_time(tag, not_after)?;
    let (_, rest) = expect(rest, 0x30, "no subject")?;
    let (spki, _) = expect(rest, 0x30, "no subject public key info")?;
    let (_, spki_rest) = expect(spki, 0x30, "no public key algorithm")?;
    let (bits, _) = expect(spki_rest, 0x03, "no public key")?;
    let public_key = bits
        .get(1..)
        .ok_or(CertError::Malformed("empty public key"))?;
    Ok(CertFields {
        public_key,
        not_after,
    })
}

fn parse_time(tag: u8, text: &[u8]) -> Result<i64, CertError> {
    let bad = CertError::Malformed("bad notAfter time");
    let digits = |s: &[u8]| -> Result<i64, CertError> {
        s.iter().try_fold(0i64, |acc, &c| {
            c.is_ascii_digit()
                .then(|| acc * 10 + i64::from(c - b'0'))
                .ok_or(bad.clone())
        })
    };
    let (year, rest) = match (tag, text.len()) {
        (0x17, 13) => {
            let yy = digits(&text[..2])?;
            (if yy < 50 { 2000 + yy } else { 1900 + yy }, &text[2..])
        }
        (0x18, 15) => (digits(&text[..4])?, &text[4..]),
        _ => return Err(bad),
    };
    if rest.last() != Some(&b'Z') {
        return Err(bad);
    }
    let f = |i: usize| digits(&rest[i..i + 2]);
    let days = days_from_civil(year, f(0)?, f(2)?);
    Ok(days * 86_400 + f(4)? * 3600 + f(6)? * 60 + f(8)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calendar_round_trips() {
        for days in [-1, 0, 1, 10_957, 19_000, 2_932_896] {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(
            parse_time(0x18, b"99991231235959Z").unwrap(),
            253_402_300_799
        );
    }

    #[test]
    fn generated_identity_passes_its_own_checks() {
        super::super::random::seed([3; 32]);
        let now = 1_800_000_000;
        let id = Identity::generate("keel", Some(Ipv4Addr::new(10, 0, 2, 15)), now).unwrap();
        let again = Identity::from_pem(&id.cert_pem(), &id.key_pem(), now).unwrap();
        assert_eq!(again.cert_der, id.cert_der);
        assert_eq!(id.fingerprint().len(), 95);
        // Another key does not match.
        let other = Identity::generate("keel", None, now).unwrap();
        assert_eq!(
            Identity::from_pem(&id.cert_pem(), &other.key_pem(), now),
            Err(CertError::KeyMismatch)
        );
        assert!(matches!(
            Identity::from_pem("junk", &id.key_pem(), now),
            Err(CertError::CertNotPem(_))
        ));
        assert_eq!(
            Identity::from_pem(&id.cert_pem(), "junk", now),
            Err(CertError::KeyNotP256)
        );
    }
}
