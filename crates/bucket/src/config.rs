//! Where a volume lives in object storage (`s3://bucket/prefix`) and how to reach it:
//! endpoint, region and credentials.
//!
//! Credentials come from the usual AWS environment variables or from a file; they are
//! held in zeroized types whose `Debug` prints `[redacted]`, and never logged. This
//! module opens no connection.

use crate::BucketError;
use std::path::{Path, PathBuf};
use zeroize::{Zeroize, ZeroizeOnDrop};

/// `s3://bucket/prefix`, parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct S3Url {
    /// The bucket name.
    pub bucket: String,
    /// The key prefix of the volume's objects, without leading or trailing `/` (may be
    /// empty: the volume then owns the bucket's top level).
    pub prefix: String,
}

impl S3Url {
    /// True if `s` names an object-storage volume (`s3://...`).
    pub fn is_s3(s: &str) -> bool {
        s.starts_with("s3://")
    }

    /// Parses `s3://bucket[/prefix]`.
    pub fn parse(s: &str) -> Result<S3Url, BucketError> {
        let bad = |reason: &str| BucketError::Location {
            url: s.to_string(),
            reason: reason.to_string(),
        };
        let rest = s
            .strip_prefix("s3://")
            .ok_or_else(|| bad("not an s3:// URL; write s3://bucket/prefix"))?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        let valid_bucket = (3..=63).contains(&bucket.len())
            && bucket
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.');
        if !valid_bucket {
            return Err(bad(
                "the bucket name must be 3-63 characters of a-z, 0-9, '-' and '.'",
            ));
        }
        let prefix = prefix.trim_matches('/').to_string();
        if prefix.split('/').any(|p| p == "." || p == "..")
            || prefix.contains("//")
            || prefix.chars().any(|c| c.is_control())
        {
            return Err(bad(
                "the prefix must not hold '.', '..', empty or control-character parts",
            ));
        }
        Ok(S3Url {
            bucket: bucket.to_string(),
            prefix,
        })
    }

    /// A name for the working copy's directory: bucket and prefix with `/` as `_`.
    pub fn cache_name(&self) -> String {
        if self.prefix.is_empty() {
            self.bucket.clone()
        } else {
            format!("{}_{}", self.bucket, self.prefix.replace('/', "_"))
        }
    }
}

impl std::fmt::Display for S3Url {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "s3://{}/{}", self.bucket, self.prefix)
    }
}

/// An access key pair (and session token). Zeroized on drop; `Debug` prints `[redacted]`.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct Credentials {
    pub(crate) access_key_id: String,
    pub(crate) secret_access_key: String,
    pub(crate) session_token: Option<String>,
    /// A region given in the file (the environment's `AWS_REGION` wins).
    pub(crate) region: Option<String>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}

impl Credentials {
    /// From `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY` and `AWS_SESSION_TOKEN`.
    pub fn from_env() -> Result<Credentials, BucketError> {
        let get = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        match (get("AWS_ACCESS_KEY_ID"), get("AWS_SECRET_ACCESS_KEY")) {
            (Some(access_key_id), Some(secret_access_key)) => Ok(Credentials {
                access_key_id,
                secret_access_key,
                session_token: get("AWS_SESSION_TOKEN"),
                region: None,
            }),
            _ => Err(BucketError::Credentials {
                reason: "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY are not both set; set them or give --s3-credentials FILE".into(),
            }),
        }
    }

    /// From a file of `key = value` lines as in `~/.aws/credentials` (its first
    /// profile; `[section]` lines and `#` comments are skipped): `aws_access_key_id`,
    /// `aws_secret_access_key`, optional `aws_session_token` and `region`.
    pub fn from_file(path: &Path) -> Result<Credentials, BucketError> {
        let mut text = std::fs::read_to_string(path).map_err(|e| BucketError::Credentials {
            reason: format!("{}: {e}", path.display()),
        })?;
        let mut c = Credentials {
            access_key_id: String::new(),
            secret_access_key: String::new(),
            session_token: None,
            region: None,
        };
        let mut sections = 0;
        for line in text.lines() {
            let line = line.trim();
            if line.starts_with('[') {
                sections += 1;
                if sections > 1 {
                    break;
                }
                continue;
            }
            if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
                continue;
            }
            let Some((k, v)) = line.split_once('=') else {
                continue;
            };
            let v = v.trim().to_string();
            match k.trim().to_ascii_lowercase().as_str() {
                "aws_access_key_id" => c.access_key_id = v,
                "aws_secret_access_key" => c.secret_access_key = v,
                "aws_session_token" => c.session_token = Some(v),
                "region" => c.region = Some(v),
                _ => {}
            }
        }
        text.zeroize();
        if c.access_key_id.is_empty() || c.secret_access_key.is_empty() {
            return Err(BucketError::Credentials {
                reason: format!(
                    "{}: needs aws_access_key_id and aws_secret_access_key lines",
                    path.display()
                ),
            });
        }
        Ok(c)
    }
}

/// How to reach the object store.
#[derive(Clone, Debug, Default)]
pub struct S3Options {
    /// `--s3-endpoint`: an S3-compatible server (`http://` is allowed for loopback
    /// test servers); `None` for AWS itself.
    pub endpoint: Option<String>,
    /// `--s3-credentials FILE`; `None`: the AWS environment variables.
    pub credentials_file: Option<PathBuf>,
    /// `--cache-dir`: the local working copy; `None`: under the state directory.
    pub cache_dir: Option<PathBuf>,
    /// Seconds the writer lease lasts without renewal (`None`: [`crate::DEFAULT_LEASE`]).
    pub lease_seconds: Option<u64>,
}

impl S3Options {
    /// The credentials these options name.
    pub fn credentials(&self) -> Result<Credentials, BucketError> {
        match &self.credentials_file {
            Some(p) => Credentials::from_file(p),
            None => Credentials::from_env(),
        }
    }

    /// The working copy's directory for `url`: `--cache-dir`, else
    /// `$XDG_STATE_HOME/mailferry/s3/<bucket>_<prefix>` (`~/.local/state/...`).
    pub fn cache_dir_for(&self, url: &S3Url) -> PathBuf {
        if let Some(d) = &self.cache_dir {
            return d.clone();
        }
        let base = std::env::var_os("XDG_STATE_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state")))
            .unwrap_or_else(|| PathBuf::from("."));
        base.join("mailferry").join("s3").join(url.cache_name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_bucket_and_prefix() {
        let u = S3Url::parse("s3://my-bucket/a/b/").unwrap();
        assert_eq!((u.bucket.as_str(), u.prefix.as_str()), ("my-bucket", "a/b"));
        assert_eq!(S3Url::parse("s3://bkt").unwrap().prefix, "");
        for bad in [
            "s3://B/x",
            "s3://ab/x",
            "http://bkt/x",
            "s3://bkt/a/../b",
            "s3://bkt/a//b",
        ] {
            assert!(S3Url::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn credentials_file_reads_the_first_profile_and_hides_the_secret() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("creds");
        std::fs::write(
            &p,
            "[default]\naws_access_key_id = AK\naws_secret_access_key = s3cr3t\nregion = eu-west-1\n[other]\naws_access_key_id = NO\n",
        )
        .unwrap();
        let c = Credentials::from_file(&p).unwrap();
        assert_eq!(c.access_key_id, "AK");
        assert_eq!(c.region.as_deref(), Some("eu-west-1"));
        assert_eq!(format!("{c:?}"), "[redacted]");
        std::fs::write(&p, "aws_access_key_id = AK\n").unwrap();
        assert!(Credentials::from_file(&p).is_err());
    }
}
