//! Repository URLs and how to reach an S3 endpoint.

use std::path::PathBuf;
use std::time::Duration;

use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::{ClientOptions, RetryConfig};

use crate::RepoError;

/// Where a repository is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RepoUrl {
    /// `s3://bucket/prefix`: the prefix is kept with a trailing '/' (or empty).
    S3 { bucket: String, prefix: String },
    /// `file:///dir`: an absolute local directory.
    File { dir: PathBuf },
}

impl RepoUrl {
    pub fn parse(url: &str) -> Result<RepoUrl, RepoError> {
        let bad = |why: &str| RepoError::Config(format!("{url:?}: {why}"));
        if let Some(rest) = url.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(bad("no bucket (expected s3://bucket/prefix)"));
            }
            let prefix = prefix.trim_matches('/');
            if prefix.split('/').any(|c| c == "." || c == "..") || prefix.contains("//") {
                return Err(bad("the prefix has an empty, '.' or '..' component"));
            }
            let prefix = match prefix.is_empty() {
                true => String::new(),
                false => format!("{prefix}/"),
            };
            return Ok(RepoUrl::S3 {
                bucket: bucket.to_string(),
                prefix,
            });
        }
        if let Some(path) = url.strip_prefix("file://") {
            if !path.starts_with('/') {
                return Err(bad("expected an absolute path (file:///dir)"));
            }
            if path.split('/').any(|c| c == "..") {
                return Err(bad("the path has a '..' component"));
            }
            return Ok(RepoUrl::File {
                dir: PathBuf::from(path),
            });
        }
        Err(bad("expected s3://bucket/prefix or file:///dir"))
    }
}

impl std::fmt::Display for RepoUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RepoUrl::S3 { bucket, prefix } => write!(f, "s3://{bucket}/{prefix}"),
            RepoUrl::File { dir } => write!(f, "file://{}", dir.display()),
        }
    }
}

/// How to reach an S3 endpoint: what is not given here comes from the environment the
/// AWS way (`AWS_ENDPOINT_URL`, `AWS_REGION`, `AWS_ACCESS_KEY_ID`,
/// `AWS_SECRET_ACCESS_KEY`, and the rest object_store reads).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Access {
    pub endpoint: Option<String>,
    pub region: Option<String>,
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
}

/// One request may take this long; a repository that does not answer fails within
/// a few of them (bounded retries), never hangs a reader.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const RETRY_TIMEOUT: Duration = Duration::from_secs(15);
const MAX_RETRIES: usize = 3;

impl Access {
    pub(crate) fn s3(&self, bucket: &str) -> Result<AmazonS3, RepoError> {
        let mut b = AmazonS3Builder::from_env().with_bucket_name(bucket);
        let endpoint = self
            .endpoint
            .clone()
            .or_else(|| std::env::var("AWS_ENDPOINT_URL").ok());
        // Client options replace the builder's: allow_http goes in them.
        let mut client = ClientOptions::new()
            .with_timeout(REQUEST_TIMEOUT)
            .with_connect_timeout(CONNECT_TIMEOUT);
        if let Some(e) = &endpoint {
            client = client.with_allow_http(e.starts_with("http://"));
            b = b.with_endpoint(e).with_virtual_hosted_style_request(false);
        }
        if let Some(r) = &self.region {
            b = b.with_region(r);
        }
        if let Some(k) = &self.access_key_id {
            b = b.with_access_key_id(k);
        }
        if let Some(s) = &self.secret_access_key {
            b = b.with_secret_access_key(s);
        }
        b.with_client_options(client)
            .with_retry(RetryConfig {
                max_retries: MAX_RETRIES,
                retry_timeout: RETRY_TIMEOUT,
                ..RetryConfig::default()
            })
            .build()
            .map_err(|e| RepoError::Config(format!("s3://{bucket}: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_and_bad_ones_say_why() {
        assert_eq!(
            RepoUrl::parse("s3://b/x/y/").unwrap(),
            RepoUrl::S3 {
                bucket: "b".into(),
                prefix: "x/y/".into()
            }
        );
        assert_eq!(
            RepoUrl::parse("s3://b").unwrap(),
            RepoUrl::S3 {
                bucket: "b".into(),
                prefix: String::new()
            }
        );
        assert_eq!(
            RepoUrl::parse("file:///srv/data").unwrap(),
            RepoUrl::File {
                dir: "/srv/data".into()
            }
        );
        for bad in [
            "s3:///x",
            "file://rel",
            "http://x",
            "s3://b/a/../c",
            "file:///a/../b",
        ] {
            assert!(RepoUrl::parse(bad).is_err(), "{bad}");
        }
    }
}
