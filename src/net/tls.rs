//! TLS configurations from PEM files (feature `tls`): certificate chains,
//! private keys, the server's and the client's `rustls` configuration, with
//! errors that name the file and what is wrong with it.
//!
//! Every configuration here uses the crate's crypto provider, `ring` (see
//! `Cargo.toml` for why), given explicitly: a program that also links
//! rustls' other provider does not make these builders ambiguous.
//!
//! ```no_run
//! # fn main() -> std::io::Result<()> {
//! let server = sockloop::tls::server_config("cert.pem", "key.pem")?;
//! let client = sockloop::tls::client_config("ca.pem")?;
//! # let _ = (server, client);
//! # Ok(())
//! # }
//! ```

use std::io;
use std::path::Path;
use std::sync::Arc;

pub use rustls;
pub use rustls::{ClientConfig, ServerConfig};

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// The crypto provider of every configuration this module builds: `ring`.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read_file(path: &Path, what: &str) -> io::Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("cannot read {what} {}: {e}", path.display()),
        )
    })
}

fn invalid(path: &Path, what: impl std::fmt::Display) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("{}: {what}", path.display()),
    )
}

/// Reads a PEM file of certificates (`-----BEGIN CERTIFICATE-----`
/// sections), in file order: for a server, its own certificate first, then
/// the intermediates. A file without any is an error (`InvalidData`), as is
/// a malformed section; a missing file keeps its `NotFound` kind.
pub fn load_certs(path: impl AsRef<Path>) -> io::Result<Vec<CertificateDer<'static>>> {
    let path = path.as_ref();
    let pem = read_file(path, "certificate file")?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid(path, format_args!("bad PEM: {e}")))?;
    if certs.is_empty() {
        return Err(invalid(
            path,
            "no certificate in it (expected -----BEGIN CERTIFICATE----- sections): empty chain",
        ));
    }
    Ok(certs)
}

/// Reads the first private key of a PEM file: PKCS#8 (`BEGIN PRIVATE KEY`),
/// PKCS#1 (`BEGIN RSA PRIVATE KEY`) or SEC1 (`BEGIN EC PRIVATE KEY`).
pub fn load_private_key(path: impl AsRef<Path>) -> io::Result<PrivateKeyDer<'static>> {
    let path = path.as_ref();
    let pem = read_file(path, "private key file")?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => invalid(
            path,
            "no private key in it (expected a PRIVATE KEY, RSA PRIVATE KEY or EC PRIVATE KEY section)",
        ),
        e => invalid(path, format_args!("bad PEM: {e}")),
    })
}

/// A server configuration from a PEM certificate chain and its private key
/// (see [`load_certs`], [`load_private_key`]): TLS 1.2 and 1.3, no client
/// certificates. Fails when a file is missing or malformed, the chain is
/// empty, or the key is not the certificate's.
pub fn server_config(
    cert_path: impl AsRef<Path>,
    key_path: impl AsRef<Path>,
) -> io::Result<Arc<ServerConfig>> {
    let (cert_path, key_path) = (cert_path.as_ref(), key_path.as_ref());
    let chain = load_certs(cert_path)?;
    let key = load_private_key(key_path)?;
    server_config_from(chain, key).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!(
                "certificate {} with key {}: {e}",
                cert_path.display(),
                key_path.display()
            ),
        )
    })
}

/// [`server_config`] from certificates and a key already in memory.
pub fn server_config_from(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> io::Result<Arc<ServerConfig>> {
    if chain.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "empty certificate chain",
        ));
    }
    let config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(tls_error)?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| match e {
            rustls::Error::InconsistentKeys(_) => io::Error::new(
                io::ErrorKind::InvalidInput,
                "the private key does not match the certificate \
                 (the first certificate of the chain must be the server's own)",
            ),
            e => tls_error(e),
        })?;
    Ok(Arc::new(config))
}

/// A client configuration that trusts the certificate authorities of a PEM
/// file (and no others): for a private CA or a self-signed server
/// certificate.
pub fn client_config(ca_path: impl AsRef<Path>) -> io::Result<Arc<ClientConfig>> {
    let ca_path = ca_path.as_ref();
    client_config_from(load_certs(ca_path)?)
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", ca_path.display())))
}

/// [`client_config`] from certificate authorities already in memory.
pub fn client_config_from(cas: Vec<CertificateDer<'static>>) -> io::Result<Arc<ClientConfig>> {
    let mut roots = rustls::RootCertStore::empty();
    for ca in cas {
        roots.add(ca).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("not a usable CA certificate: {e}"),
            )
        })?;
    }
    if roots.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "no CA certificate to trust",
        ));
    }
    let config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(tls_error)?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// A rustls error as an `io::Error` (`InvalidData`), message kept.
pub(crate) fn tls_error(e: rustls::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

/// The server name a client verifies the certificate against (a DNS name or
/// an IP address), as rustls wants it.
pub(crate) fn server_name(name: &str) -> io::Result<rustls::pki_types::ServerName<'static>> {
    rustls::pki_types::ServerName::try_from(name.to_owned()).map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("bad TLS server name {name:?}: {e}"),
        )
    })
}
