//! Throwaway certificates for TLS tests: a fresh CA and a server certificate for 127.0.0.1
//! and localhost, written as PEM files.

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, KeyPair, SanType,
};

pub(crate) struct CertificateFiles {
    pub(crate) ca: PathBuf,
    pub(crate) cert: PathBuf,
    pub(crate) key: PathBuf,
}

pub(crate) fn write_server_certificates(dir: &Path) -> Result<CertificateFiles> {
    let ca_key = KeyPair::generate().context("CA key")?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).context("CA params")?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.distinguished_name = DistinguishedName::new();
    // Distinct names: with rcgen's default name on both, OpenSSL (librdkafka) takes the
    // server certificate for a self-signed one and refuses it.
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "tierflow test CA");
    let ca = ca_params.self_signed(&ca_key).context("CA certificate")?;

    let key = KeyPair::generate().context("server key")?;
    let mut params =
        CertificateParams::new(vec!["localhost".to_owned()]).context("server params")?;
    params.distinguished_name = DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, "localhost");
    params
        .subject_alt_names
        .push(SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)));
    let cert = params
        .signed_by(&key, &ca, &ca_key)
        .context("server certificate")?;

    let files = CertificateFiles {
        ca: dir.join("ca.pem"),
        cert: dir.join("server.pem"),
        key: dir.join("server.key"),
    };
    std::fs::write(&files.ca, ca.pem())?;
    std::fs::write(&files.cert, cert.pem())?;
    std::fs::write(&files.key, key.serialize_pem())?;
    Ok(files)
}
