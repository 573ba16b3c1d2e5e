//! Development certificates for the mesh (`modhost certs FILE`): a CA for the
//! deployment and one certificate per node, written where the deployment's `[mesh]`
//! says to find them.
//!
//! Keys are ECDSA P-256. The CA's key is written next to its certificate (`ca.pem` →
//! `ca.key`) so that nodes can be added or their certificates renewed later under the
//! same CA; production deployments bring their own CA and keep its key elsewhere.

use anyhow::{bail, Context, Result};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use std::path::{Path, PathBuf};
use time::{Duration, OffsetDateTime};

use crate::deployment::Deployment;

/// What [`generate`] wrote.
#[derive(Debug)]
pub struct Written {
    /// The CA certificate, and whether it was made now (or an existing one reused).
    pub ca: (PathBuf, bool),
    /// Each node's certificate and key.
    pub nodes: Vec<(String, PathBuf, PathBuf)>,
}

/// Makes (or reuses) the deployment's CA and certificates for `nodes` (every node of
/// the deployment when empty), valid for `days` days from now.
pub fn generate(
    deployment: &Deployment,
    nodes: &[String],
    days: i64,
    new_ca: bool,
) -> Result<Written> {
    let Some(mesh) = &deployment.mesh else {
        bail!(
            "{} has no [mesh] section naming where certificates go",
            deployment.file.display()
        );
    };
    let nodes: Vec<String> = if nodes.is_empty() {
        deployment.nodes.keys().cloned().collect()
    } else {
        for node in nodes {
            if !deployment.nodes.contains_key(node) {
                bail!("no node `{node}` in {}", deployment.file.display());
            }
        }
        nodes.to_vec()
    };
    let ca_key_file = mesh.ca.with_extension("key");
    let ca_params = ca_params(&deployment.app_name)?;
    let fresh_ca = new_ca || !mesh.ca.is_file() || !ca_key_file.is_file();
    let ca_key = if fresh_ca {
        let key = KeyPair::generate().context("generating the CA key")?;
        let mut params = ca_params.clone();
        params.not_before = OffsetDateTime::now_utc() - Duration::minutes(5);
        params.not_after = OffsetDateTime::now_utc() + Duration::days(3650);
        let cert = params
            .self_signed(&key)
            .context("signing the CA certificate")?;
        write(&mesh.ca, cert.pem().as_bytes())?;
        write_secret(&ca_key_file, key.serialize_pem().as_bytes())?;
        key
    } else {
        let pem = std::fs::read_to_string(&ca_key_file)
            .with_context(|| format!("reading {}", ca_key_file.display()))?;
        KeyPair::from_pem(&pem).with_context(|| format!("{}: not a key", ca_key_file.display()))?
    };
    let issuer = Issuer::new(ca_params, ca_key);

    let mut written = Vec::new();
    for node in nodes {
        let key = KeyPair::generate().context("generating a node key")?;
        // The node's name (what peers verify), and the DNS names it is reached by (its
        // Services), for clients that check those.
        let mut names = vec![node.clone()];
        if let Some(spec) = deployment.nodes.get(&node) {
            for address in [Some(&spec.listen), Some(&spec.mesh), spec.admin.as_ref()]
                .into_iter()
                .flatten()
            {
                if let Some(name) = address
                    .name()
                    .filter(|name| !names.iter().any(|n| n == name))
                {
                    names.push(name.to_string());
                }
            }
        }
        let mut params = CertificateParams::new(names)
            .with_context(|| format!("node name {node} as a DNS name"))?;
        let mut name = DistinguishedName::new();
        name.push(DnType::CommonName, node.as_str());
        name.push(DnType::OrganizationName, deployment.app_name.as_str());
        params.distinguished_name = name;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.not_before = OffsetDateTime::now_utc() - Duration::minutes(5);
        params.not_after = OffsetDateTime::now_utc() + Duration::days(days);
        let cert = params
            .signed_by(&key, &issuer)
            .with_context(|| format!("signing node {node}'s certificate"))?;
        let (cert_file, key_file) = (mesh.cert_of(&node), mesh.key_of(&node));
        write(&cert_file, cert.pem().as_bytes())?;
        write_secret(&key_file, key.serialize_pem().as_bytes())?;
        written.push((node, cert_file, key_file));
    }
    Ok(Written {
        ca: (mesh.ca.clone(), fresh_ca),
        nodes: written,
    })
}

/// The CA's identity: the same every time for one app, so node certificates made later
/// chain to a CA made earlier.
fn ca_params(app: &str) -> Result<CertificateParams> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, format!("modhost CA for {app}"));
    name.push(DnType::OrganizationName, app);
    params.distinguished_name = name;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    Ok(params)
}

fn write(path: &Path, bytes: &[u8]) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    crate::engine::cache::write_atomically(path, bytes)
        .with_context(|| format!("writing {}", path.display()))
}

/// Writes a private key readable by its owner only.
fn write_secret(path: &Path, bytes: &[u8]) -> Result<()> {
    write(path, bytes)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .with_context(|| format!("restricting {}", path.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::pki_types::{CertificateDer, ServerName};

    /// Whether the PEM certificate at `path` is valid for DNS name `name`.
    fn valid_for(path: &Path, name: &str) -> bool {
        let pem = std::fs::read_to_string(path).unwrap();
        let der: Vec<u8> = first_certificate_der(&pem);
        let der = CertificateDer::from(der);
        let cert = webpki::EndEntityCert::try_from(&der).unwrap();
        cert.verify_is_valid_for_subject_name(&ServerName::try_from(name).unwrap())
            .is_ok()
    }

    /// The DER of the first certificate in `pem`.
    fn first_certificate_der(pem: &str) -> Vec<u8> {
        use base64::Engine;
        let body: String = pem
            .lines()
            .skip_while(|line| !line.starts_with("-----BEGIN CERTIFICATE"))
            .skip(1)
            .take_while(|line| !line.starts_with("-----END"))
            .collect();
        base64::engine::general_purpose::STANDARD
            .decode(body)
            .unwrap()
    }

    #[test]
    fn a_node_certificate_names_the_node_and_the_dns_names_it_is_reached_by() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("app.wasm"), b"\0asm").unwrap();
        let deployment = Deployment::parse(
            &dir.path().join("d.toml"),
            r#"
            [app]
            name = "shop"
            [modules.users]
            component = "app.wasm"
            [nodes.a]
            listen = "shop-a.shop:8080"
            mesh = "shop-a.shop-mesh:7001"
            [nodes.b]
            listen = "10.0.0.2:8080"
            mesh = "10.0.0.2:7001"
            [placement]
            users = ["a", "b"]
            [mesh]
            ca = "certs/ca.pem"
            cert = "certs/{node}.pem"
            key = "certs/{node}.key"
            "#,
        )
        .unwrap();
        generate(&deployment, &[], 1, false).unwrap();
        let a = dir.path().join("certs/a.pem");
        for name in ["a", "shop-a.shop", "shop-a.shop-mesh"] {
            assert!(
                valid_for(&a, name),
                "a's certificate is not valid for {name}"
            );
        }
        assert!(!valid_for(&a, "shop-b.shop-mesh"));
        let b = dir.path().join("certs/b.pem");
        assert!(valid_for(&b, "b"));
        assert!(!valid_for(&b, "shop-a.shop"));
    }
}
