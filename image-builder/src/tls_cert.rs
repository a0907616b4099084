//! The appliance's HTTPS certificate, made on the host by `keel build` so its fingerprint
//! is known before the first boot: created once (ECDSA P-256, self-signed, by the same code
//! the kernel uses, `keel_netstack::tls::cert`), kept in `target/keel/tls-cert.pem` and
//! `tls-key.pem` (mode 0600) so rebuilds keep it, and written into the image's configuration
//! (`management.certificate`) unless that already has one.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use keel_config::Config;
use keel_config::schema::ManagementCertificate;
use keel_netstack::tls::Identity;

/// Why the certificate could not be made or read.
#[derive(Debug, thiserror::Error)]
pub enum TlsCertError {
    /// Reading or writing a PEM file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The kept pair is unusable (edited, or of another key type).
    #[error(
        "{path} and its key are not a usable pair ({reason}): delete both files to make a new \
         certificate"
    )]
    Unusable {
        /// The certificate file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}

/// The certificate files in `out_dir`.
pub fn paths(out_dir: &Path) -> (PathBuf, PathBuf) {
    (out_dir.join("tls-cert.pem"), out_dir.join("tls-key.pem"))
}

/// Reads the kept pair in `out_dir`, or makes a new one for `hostname` there.
pub fn load_or_create(out_dir: &Path, hostname: &str) -> Result<Identity, TlsCertError> {
    let (cert_path, key_path) = paths(out_dir);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    if let (Ok(cert), Ok(key)) = (
        std::fs::read_to_string(&cert_path),
        std::fs::read_to_string(&key_path),
    ) {
        return Identity::from_pem(&cert, &key, now).map_err(|e| TlsCertError::Unusable {
            path: cert_path,
            reason: e.to_string(),
        });
    }
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| TlsCertError::Io { path, source }
    };
    let mut seed = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut seed))
        .map_err(io(Path::new("/dev/urandom")))?;
    keel_netstack::tls::random::seed(seed);
    let identity = Identity::generate(hostname, None, now).map_err(|e| TlsCertError::Unusable {
        path: cert_path.clone(),
        reason: e.to_string(),
    })?;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options
        .open(&key_path)
        .and_then(|mut f| f.write_all(identity.key_pem().as_bytes()))
        .map_err(io(&key_path))?;
    std::fs::write(&cert_path, identity.cert_pem()).map_err(io(&cert_path))?;
    Ok(identity)
}

/// `config` with `identity` as its certificate, unless it has one already.
pub fn with_certificate(mut config: Config, identity: &Identity) -> Config {
    if config.management.certificate.is_none() {
        config.management.certificate = Some(ManagementCertificate {
            cert_pem: identity.cert_pem(),
            key_pem: identity.key_pem(),
        });
    }
    config
}

/// The configuration of an image built without `--config`: [`Config::default`] with `token`
/// as the only API token (the one `keel build` also puts on the kernel command line), and
/// the HTTPS certificate `keel build` keeps in `target/keel/` (without it, the appliance
/// makes its own at first boot). It lives here, not in [`crate::appliance`], whose TOML
/// reader the fuzz crate builds without the host's files.
pub fn default_config(token: &str) -> Config {
    let mut config = Config::default();
    config.management.api_tokens.push(token.to_string());
    match load_or_create(&crate::output_dir(), &config.hostname) {
        Ok(identity) => with_certificate(config, &identity),
        Err(_) => config,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pair_is_made_once_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let first = load_or_create(dir.path(), "keel").unwrap();
        let again = load_or_create(dir.path(), "keel").unwrap();
        assert_eq!(first.fingerprint(), again.fingerprint());
        let config = with_certificate(Config::default(), &first);
        let cert = config.management.certificate.clone().unwrap();
        assert!(cert.cert_pem.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(config.validate().is_ok());
        // An operator's certificate stays.
        let other = with_certificate(config.clone(), &first);
        assert_eq!(other, config);
        std::fs::write(dir.path().join("tls-key.pem"), "junk").unwrap();
        assert!(matches!(
            load_or_create(dir.path(), "keel"),
            Err(TlsCertError::Unusable { .. })
        ));
    }
}
