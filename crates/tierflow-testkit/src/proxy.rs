//! A TLS-terminating proxy: clients speak TLS to it and it relays the plain bytes to an
//! upstream TCP service. tansu 0.6.0 reads `--cert`/`--key` but never serves TLS, so this is
//! what puts a real TLS handshake (checked by the client against a CA) in front of it.

use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::sync::Arc;
use std::thread::JoinHandle;

use anyhow::{Context, Result};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::sync::oneshot;
use tokio_rustls::TlsAcceptor;

/// Relays until dropped; each connection gets its own upstream connection.
#[derive(Debug)]
pub(crate) struct TlsProxy {
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl TlsProxy {
    /// Serves TLS with `cert`/`key` (PEM) on `listener`, relaying to `upstream`.
    pub(crate) fn start(
        listener: TcpListener,
        upstream: SocketAddr,
        cert: &Path,
        key: &Path,
    ) -> Result<Self> {
        let certs = CertificateDer::pem_file_iter(cert)
            .and_then(Iterator::collect::<Result<Vec<_>, _>>)
            .with_context(|| format!("reading {}", cert.display()))?;
        let key = PrivateKeyDer::from_pem_file(key)
            .with_context(|| format!("reading {}", key.display()))?;
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .context("TLS server certificate")?;
        let acceptor = TlsAcceptor::from(Arc::new(config));
        listener.set_nonblocking(true)?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()
            .context("proxy runtime")?;
        let (stop, mut stopped) = oneshot::channel();
        let thread = std::thread::Builder::new()
            .name("tls-proxy".into())
            .spawn(move || {
                runtime.block_on(async move {
                    let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
                        return;
                    };
                    loop {
                        tokio::select! {
                            _ = &mut stopped => break,
                            accepted = listener.accept() => {
                                let Ok((client, _)) = accepted else { continue };
                                tokio::spawn(relay(acceptor.clone(), client, upstream));
                            }
                        }
                    }
                });
                // Dropping the runtime here cancels every open relay.
            })
            .context("starting the proxy thread")?;
        Ok(Self {
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

async fn relay(acceptor: TlsAcceptor, client: tokio::net::TcpStream, upstream: SocketAddr) {
    let _ = client.set_nodelay(true);
    let Ok(mut tls) = acceptor.accept(client).await else {
        // A failed handshake (say, a client that does not trust the CA) just closes.
        return;
    };
    let Ok(mut plain) = tokio::net::TcpStream::connect(upstream).await else {
        return;
    };
    let _ = plain.set_nodelay(true);
    let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
}

impl Drop for TlsProxy {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
