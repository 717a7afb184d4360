//! Certificates made for a test run (rcgen): a CA, and a server certificate
#![allow(dead_code)]
//! it signed for `localhost`, 127.0.0.1 and ::1, written as PEM files so
//! the programs and outside clients (Python's ssl, openssl s_client) can
//! use them too.

use std::path::PathBuf;
use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use sockloop::tls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use sockloop::tls::{ClientConfig, ServerConfig};

/// A CA and a server certificate signed by it, in memory and on disk.
pub struct TestCerts {
    pub ca_der: CertificateDer<'static>,
    pub cert_der: CertificateDer<'static>,
    pub key_der: Vec<u8>,
    pub ca_pem: PathBuf,
    pub cert_pem: PathBuf,
    pub key_pem: PathBuf,
    /// A key that is not the certificate's (for the mismatch error).
    pub other_key_pem: PathBuf,
}

impl TestCerts {
    /// Makes fresh certificates; the PEM files go to a temporary directory
    /// named after `tag`.
    pub fn new(tag: &str) -> TestCerts {
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "sockloop test CA");
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
        let key = KeyPair::generate().unwrap();
        let params = CertificateParams::new(vec![
            "localhost".to_string(),
            "127.0.0.1".to_string(),
            "::1".to_string(),
        ])
        .unwrap();
        let cert = params.signed_by(&key, &ca).unwrap();
        let other = KeyPair::generate().unwrap();

        let dir = std::env::temp_dir().join(format!(
            "sockloop-tls-{}-{}-{tag}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let write = |name: &str, text: &str| {
            let path = dir.join(name);
            std::fs::write(&path, text).unwrap();
            path
        };
        TestCerts {
            ca_der: ca.der().clone(),
            cert_der: cert.der().clone(),
            key_der: key.serialize_der(),
            ca_pem: write("ca.pem", &ca.pem()),
            cert_pem: write("cert.pem", &cert.pem()),
            key_pem: write("key.pem", &key.serialize_pem()),
            other_key_pem: write("other-key.pem", &other.serialize_pem()),
        }
    }

    pub fn key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key_der.clone()))
    }

    pub fn server_config(&self) -> Arc<ServerConfig> {
        sockloop::tls::server_config_from(vec![self.cert_der.clone()], self.key()).unwrap()
    }

    pub fn client_config(&self) -> Arc<ClientConfig> {
        sockloop::tls::client_config_from(vec![self.ca_der.clone()]).unwrap()
    }
}

impl Drop for TestCerts {
    fn drop(&mut self) {
        if let Some(dir) = self.ca_pem.parent() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}
