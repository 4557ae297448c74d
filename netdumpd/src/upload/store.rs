//! The S3 client: object_store's `AmazonS3`, built from [`UploadConfig`] with static
//! credentials, path-style requests (what S3-compatible servers take), object_store's
//! own retries with back-off for each request, and rustls on ring for HTTPS.

use std::sync::{Arc, Once};

use anyhow::Context;
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::{BackoffConfig, ClientOptions, RetryConfig};

use super::settings::{Credentials, UploadConfig};

/// The S3 client for `c`, with `credentials`.
pub fn build(c: &UploadConfig, credentials: &Credentials) -> anyhow::Result<Arc<AmazonS3>> {
    install_tls_provider();
    let retry = RetryConfig {
        backoff: BackoffConfig {
            init_backoff: std::time::Duration::from_millis(200),
            max_backoff: std::time::Duration::from_secs(10),
            base: 2.0,
        },
        max_retries: 10,
        retry_timeout: c.request_retry_timeout,
    };
    let options = ClientOptions::new()
        .with_allow_http(c.allow_http)
        .with_connect_timeout(std::time::Duration::from_secs(10))
        .with_timeout(std::time::Duration::from_secs(300));
    let mut b = AmazonS3Builder::new()
        .with_bucket_name(&c.bucket)
        .with_region(&c.region)
        .with_access_key_id(&credentials.access_key_id)
        .with_secret_access_key(credentials.secret_access_key.as_str())
        .with_allow_http(c.allow_http)
        .with_virtual_hosted_style_request(false)
        .with_retry(retry)
        .with_client_options(options);
    if let Some(e) = &c.endpoint {
        b = b.with_endpoint(e);
    }
    Ok(Arc::new(b.build().with_context(|| format!("S3 client for bucket {}", c.bucket))?))
}

/// reqwest is built without a default TLS crypto provider (to keep aws-lc-rs's C build
/// out): ring is installed as the process's provider once.
fn install_tls_provider() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // Err: another part of the process installed one first; it is used.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// An object_store error, with a hint where the usual cause is known.
pub fn explain(e: &object_store::Error) -> String {
    match e {
        object_store::Error::PermissionDenied { .. } | object_store::Error::Unauthenticated { .. } => {
            format!("the S3 server refused the credentials (check the access key and secret): {e}")
        }
        object_store::Error::NotFound { .. } => format!("not found in the bucket: {e}"),
        _ => e.to_string(),
    }
}
