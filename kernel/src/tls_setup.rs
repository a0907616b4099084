//! The appliance's HTTPS identity at boot: the certificate and key from the configuration
//! (`management.certificate`), or a new self-signed one generated at first boot and saved
//! there (the configuration partition's A/B record, so it survives power cuts and reboots).
//! Its SHA-256 fingerprint goes on the console (banner, `net`) and the status screen.

use alloc::string::String;

use keel_config::schema::ManagementCertificate;
use keel_netstack::iface::Addressing;
use keel_netstack::tls::Identity;
use spin::Mutex;

use crate::kprintln;
use crate::settings::Settings;

static IDENTITY: Mutex<Option<Identity>> = Mutex::new(None);

/// Seconds since 1970 from the RTC (for certificate validity), if it reads.
pub fn unix_now() -> Option<u64> {
    crate::arch::rtc::unix_seconds()
}

/// Loads or generates the identity; saves a generated one in the configuration. Prints
/// the fingerprint, or why HTTPS is off.
pub fn prepare(settings: &mut Settings) {
    let config = settings.current();
    let now = unix_now().unwrap_or(0) as i64;
    if let Some(cert) = &config.management.certificate {
        match Identity::from_pem(&cert.cert_pem, &cert.key_pem, now) {
            Ok(identity) => {
                kprintln!("tls: certificate SHA-256 {}", identity.fingerprint());
                *IDENTITY.lock() = Some(identity);
                return;
            }
            Err(e) => {
                kprintln!(
                    "warning: management.certificate is unusable ({e}); using a temporary \
                     certificate for this boot (replace it with `cert import` or the API)"
                );
                if let Some(identity) = generate(config) {
                    kprintln!(
                        "tls: temporary certificate SHA-256 {}",
                        identity.fingerprint()
                    );
                    *IDENTITY.lock() = Some(identity);
                }
                return;
            }
        }
    }
    let Some(identity) = generate(config) else {
        return;
    };
    let mut updated = config.clone();
    updated.management.certificate = Some(ManagementCertificate {
        cert_pem: identity.cert_pem(),
        key_pem: identity.key_pem(),
    });
    let saved = crate::blk::boot_disk::config_partition()
        .map_err(|e| alloc::string::ToString::to_string(&e))
        .and_then(|mut partition| {
            settings
                .replace(&mut partition, updated)
                .map_err(|e| alloc::string::ToString::to_string(&e))
        });
    match saved {
        Ok(_) => kprintln!(
            "tls: generated a certificate, SHA-256 {}",
            identity.fingerprint()
        ),
        Err(e) => kprintln!(
            "warning: generated certificate not saved ({e}): it changes at every boot; \
             SHA-256 {}",
            identity.fingerprint()
        ),
    }
    *IDENTITY.lock() = Some(identity);
}

/// A new self-signed identity for `config`'s hostname (and static address), or `None` with
/// the reason printed.
fn generate(config: &keel_config::Config) -> Option<Identity> {
    if !keel_netstack::tls::random::is_seeded() {
        kprintln!("warning: no certificate generated: no random source (see the entropy line)");
        return None;
    }
    let address = match Addressing::from_config(&config.network) {
        Ok(Addressing::Static(s)) => Some(s.address.address()),
        _ => None,
    };
    let now = unix_now().unwrap_or(0) as i64;
    match Identity::generate(&config.hostname, address, now) {
        Ok(identity) => Some(identity),
        Err(e) => {
            kprintln!("warning: no certificate generated: {e}");
            None
        }
    }
}

/// The identity in use, if HTTPS can run.
pub fn identity() -> Option<Identity> {
    IDENTITY.lock().clone()
}

/// The certificate's SHA-256 fingerprint, if there is one.
pub fn fingerprint() -> Option<String> {
    IDENTITY.lock().as_ref().map(Identity::fingerprint)
}

/// Makes `identity` (already saved in the configuration) the one in use.
pub fn replace(identity: Identity) {
    kprintln!(
        "tls: certificate replaced, SHA-256 {}",
        identity.fingerprint()
    );
    *IDENTITY.lock() = Some(identity);
}
