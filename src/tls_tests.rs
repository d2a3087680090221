#![allow(clippy::unwrap_used)]
//! Client-certificate identities, with certificates made by rcgen: only a certificate naming exactly one identity
//! (one SPIFFE ID, else one subject CN) identifies anyone, and the handshake refuses one that names several.

use super::*;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    SanType,
};

struct Ca {
    der: CertificateDer<'static>,
    issuer: Issuer<'static, KeyPair>,
}

fn ca() -> Ca {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, "test client CA");
    let der = params.self_signed(&key).unwrap().der().clone();
    Ca { der, issuer: Issuer::new(params, key) }
}

/// A client certificate with these subject CNs (the second and later ones under the CN OID as a custom type,
/// since rcgen keeps one value per type) and these URI SANs.
fn client(ca: &Ca, cns: &[&str], uris: &[&str]) -> CertificateDer<'static> {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    params.distinguished_name = DistinguishedName::new();
    for (i, cn) in cns.iter().enumerate() {
        let ty = if i == 0 { DnType::CommonName } else { DnType::CustomDnType(vec![2, 5, 4, 3]) };
        params.distinguished_name.push(ty, *cn);
    }
    params.subject_alt_names = uris.iter().map(|u| SanType::URI((*u).try_into().unwrap())).collect();
    params.signed_by(&key, &ca.issuer).unwrap().der().clone()
}

fn verifier(ca: &Ca) -> OneIdentityVerifier {
    let mut roots = RootCertStore::empty();
    roots.add(ca.der.clone()).unwrap();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let inner = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider).build().unwrap();
    OneIdentityVerifier { inner }
}

#[test]
fn a_certificate_with_several_common_names_identifies_nobody_and_is_refused_at_the_handshake() {
    let ca = ca();
    let two = client(&ca, &["ci-trainer", "mlflow-admin"], &[]);
    // Both CNs are really in the subject: the parser sees two.
    let (_, parsed) = x509_parser::parse_x509_certificate(two.as_ref()).unwrap();
    assert_eq!(parsed.subject().iter_common_name().count(), 2);
    assert_eq!(client_identity(&two), None);
    assert_eq!(identity_problem(&two).as_deref(), Some("its subject holds 2 common names"));
    let refused = verifier(&ca).verify_client_cert(&two, &[], UnixTime::now());
    assert!(
        matches!(refused, Err(rustls::Error::InvalidCertificate(CertificateError::ApplicationVerificationFailure))),
        "{refused:?}"
    );
}

#[test]
fn a_certificate_with_two_spiffe_ids_is_refused() {
    let ca = ca();
    let cert = client(&ca, &["x"], &["spiffe://a.test/ns/ci", "spiffe://a.test/ns/admin"]);
    assert_eq!(client_identity(&cert), None);
    assert!(verifier(&ca).verify_client_cert(&cert, &[], UnixTime::now()).is_err());
}

#[test]
fn a_certificate_naming_one_identity_is_accepted() {
    let ca = ca();
    let v = verifier(&ca);
    let cn = client(&ca, &["ci-trainer"], &[]);
    assert_eq!(client_identity(&cn).as_deref(), Some("ci-trainer"));
    assert!(v.verify_client_cert(&cn, &[], UnixTime::now()).is_ok());
    // The SPIFFE ID wins over the CN; other URI SANs do not count.
    let spiffe = client(&ca, &["x"], &["spiffe://a.test/ns/ci", "https://example.test/"]);
    assert_eq!(client_identity(&spiffe).as_deref(), Some("spiffe://a.test/ns/ci"));
    assert!(v.verify_client_cert(&spiffe, &[], UnixTime::now()).is_ok());
    // No CN and no SPIFFE ID: verified, but no identity (authentication then asks for a token).
    let anonymous = client(&ca, &[], &[]);
    assert_eq!(client_identity(&anonymous), None);
    assert!(v.verify_client_cert(&anonymous, &[], UnixTime::now()).is_ok());
}
