//! TLS on the reactor (feature `tls`).
#![cfg(feature = "tls")]

mod common;
#[path = "common/tls.rs"]
mod certs;

use certs::TestCerts;

#[test]
fn pem_loading_errors_say_what_is_wrong() {
    let c = TestCerts::new("pem");
    assert!(sockloop::tls::server_config(&c.cert_pem, &c.key_pem).is_ok());
    assert!(sockloop::tls::client_config(&c.ca_pem).is_ok());

    let missing = c.ca_pem.with_file_name("nope.pem");
    let e = sockloop::tls::server_config(&missing, &c.key_pem).unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::NotFound, "{e}");
    assert!(e.to_string().contains("nope.pem"), "{e}");

    let e = sockloop::tls::server_config(&c.cert_pem, &c.other_key_pem).unwrap_err();
    assert!(e.to_string().contains("does not match"), "{e}");

    // A key file where the chain should be: no certificate in it.
    let e = sockloop::tls::server_config(&c.key_pem, &c.key_pem).unwrap_err();
    assert!(e.to_string().contains("empty chain"), "{e}");
    let e = sockloop::tls::server_config(&c.cert_pem, &c.cert_pem).unwrap_err();
    assert!(e.to_string().contains("no private key"), "{e}");
    let e = sockloop::tls::server_config_from(Vec::new(), c.key()).unwrap_err();
    assert!(e.to_string().contains("empty certificate chain"), "{e}");
    let e = sockloop::tls::client_config(&c.key_pem).unwrap_err();
    assert!(e.to_string().contains("empty chain"), "{e}");

    let garbage = c.ca_pem.with_file_name("garbage.pem");
    std::fs::write(&garbage, "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n").unwrap();
    let e = sockloop::tls::load_certs(&garbage).unwrap_err();
    assert!(e.to_string().contains("garbage.pem"), "{e}");
}
