//! Where the messages of a move go: one type for a move that runs now (`moving`), one
//! that is recorded to run again (`lifecycle`, `batch`) and one that is only previewed
//! (`dry_run`). It depends on none of them.
//!
//! A destination names files (a volume and its credential file, or a proxy's CA and
//! token files), never the secrets in them: it is written as is into `lifecycle.json`
//! and `batch.json`. Its JSON shape is that of those files since they exist
//! (`{"kind":"local","volume":..,"credential":"key_file","credential_file":..}` or
//! `{"kind":"remote","url":..,"ca":..,"token_file":..}`) and must stay readable; a
//! local `s3://` volume adds an `"s3"` object (endpoint, credentials file, cache dir,
//! lease seconds) only when one of them was given. This module does not open volumes or
//! connect to proxies.

use crate::volume_admin::S3Args;
use mailferry_store::Credential;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Where a move stores.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "Recorded", try_from = "Recorded")]
pub enum Destination {
    /// A volume on this machine, through an embedded proxy on loopback.
    Local {
        /// Volume directory, or `s3://bucket/prefix`.
        volume: PathBuf,
        /// What unlocks the volume: key file, passphrase file or recovery key file.
        credential: Credential,
        /// How an `s3://` volume is reached and where its working copy is kept (empty
        /// for a volume directory).
        s3: S3Args,
    },
    /// A `mailferry serve` elsewhere.
    Remote {
        /// `https://host:port`.
        url: String,
        /// PEM file of the CA to trust (exactly that one).
        ca: PathBuf,
        /// File holding the token (`mailferry token issue --out`).
        token_file: PathBuf,
    },
}

impl Destination {
    /// The same destination with every path made absolute, as it is recorded so that a
    /// later pass can run from any working directory.
    pub fn absolute(&self) -> Destination {
        match self {
            Destination::Local {
                volume,
                credential,
                s3,
            } => Destination::Local {
                // `s3://...` is not a path: kept as given.
                volume: if volume.to_str().is_some_and(mailferry_bucket::S3Url::is_s3) {
                    volume.clone()
                } else {
                    absolute(volume)
                },
                s3: s3.absolute(),
                credential: match credential {
                    Credential::KeyFile(p) => Credential::KeyFile(absolute(p)),
                    Credential::Passphrase(p) => Credential::Passphrase(absolute(p)),
                    Credential::RecoveryKey(p) => Credential::RecoveryKey(absolute(p)),
                },
            },
            Destination::Remote {
                url,
                ca,
                token_file,
            } => Destination::Remote {
                url: url.clone(),
                ca: absolute(ca),
                token_file: absolute(token_file),
            },
        }
    }
}

/// `p` made absolute against the working directory (as given if that fails).
pub(crate) fn absolute(p: &Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())
}

/// The recorded JSON shape of a [`Destination`]: the credential as its kind and its
/// file, since the store's `Credential` has no serialized form of its own.
#[derive(Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum Recorded {
    Local {
        volume: PathBuf,
        credential: CredentialKind,
        credential_file: PathBuf,
        #[serde(default, skip_serializing_if = "S3Args::is_empty")]
        s3: S3Args,
    },
    Remote {
        url: String,
        ca: PathBuf,
        token_file: PathBuf,
    },
}

/// How a recorded local destination is unlocked.
#[derive(Serialize, Deserialize)]
enum CredentialKind {
    #[serde(rename = "key_file")]
    Key,
    #[serde(rename = "passphrase_file")]
    Passphrase,
    #[serde(rename = "recovery_key_file")]
    RecoveryKey,
}

impl From<Destination> for Recorded {
    fn from(d: Destination) -> Recorded {
        match d {
            Destination::Local {
                volume,
                credential,
                s3,
            } => {
                let (credential, credential_file) = match credential {
                    Credential::KeyFile(p) => (CredentialKind::Key, p),
                    Credential::Passphrase(p) => (CredentialKind::Passphrase, p),
                    Credential::RecoveryKey(p) => (CredentialKind::RecoveryKey, p),
                };
                Recorded::Local {
                    volume,
                    credential,
                    credential_file,
                    s3,
                }
            }
            Destination::Remote {
                url,
                ca,
                token_file,
            } => Recorded::Remote {
                url,
                ca,
                token_file,
            },
        }
    }
}

impl From<Recorded> for Destination {
    fn from(r: Recorded) -> Destination {
        match r {
            Recorded::Local {
                volume,
                credential,
                credential_file: f,
                s3,
            } => Destination::Local {
                volume,
                s3,
                credential: match credential {
                    CredentialKind::Key => Credential::KeyFile(f),
                    CredentialKind::Passphrase => Credential::Passphrase(f),
                    CredentialKind::RecoveryKey => Credential::RecoveryKey(f),
                },
            },
            Recorded::Remote {
                url,
                ca,
                token_file,
            } => Destination::Remote {
                url,
                ca,
                token_file,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The `destination` objects of `lifecycle.json` files written before this type
    /// replaced `StoredDestination`: they read unchanged and write back byte for byte.
    #[test]
    fn recorded_destinations_of_earlier_files_read_and_write_back_unchanged() {
        let cases = [
            (
                r#"{"kind":"local","volume":"/srv/vol","credential":"key_file","credential_file":"/srv/vol.key"}"#,
                Destination::Local {
                    volume: "/srv/vol".into(),
                    credential: Credential::KeyFile("/srv/vol.key".into()),
                    s3: S3Args::default(),
                },
            ),
            (
                r#"{"kind":"local","volume":"/v","credential":"passphrase_file","credential_file":"/p"}"#,
                Destination::Local {
                    volume: "/v".into(),
                    credential: Credential::Passphrase("/p".into()),
                    s3: S3Args::default(),
                },
            ),
            (
                r#"{"kind":"local","volume":"/v","credential":"recovery_key_file","credential_file":"/r"}"#,
                Destination::Local {
                    volume: "/v".into(),
                    credential: Credential::RecoveryKey("/r".into()),
                    s3: S3Args::default(),
                },
            ),
            (
                r#"{"kind":"local","volume":"s3://b/p","credential":"key_file","credential_file":"/k","s3":{"s3_endpoint":"http://127.0.0.1:9000","cache_dir":"/c"}}"#,
                Destination::Local {
                    volume: "s3://b/p".into(),
                    credential: Credential::KeyFile("/k".into()),
                    s3: S3Args {
                        s3_endpoint: Some("http://127.0.0.1:9000".into()),
                        cache_dir: Some("/c".into()),
                        ..S3Args::default()
                    },
                },
            ),
            (
                r#"{"kind":"remote","url":"https://store:8443","ca":"/ca.pem","token_file":"/t"}"#,
                Destination::Remote {
                    url: "https://store:8443".into(),
                    ca: "/ca.pem".into(),
                    token_file: "/t".into(),
                },
            ),
        ];
        for (json, want) in cases {
            let got: Destination = serde_json::from_str(json).unwrap();
            assert_eq!(got, want);
            assert_eq!(serde_json::to_string(&got).unwrap(), json);
        }
        let unknown = r#"{"kind":"local","volume":"/v","credential":"pin","credential_file":"/p"}"#;
        assert!(serde_json::from_str::<Destination>(unknown).is_err());
    }

    #[test]
    fn absolute_makes_every_path_absolute() {
        let d = Destination::Local {
            volume: "vol".into(),
            credential: Credential::Passphrase("pass".into()),
            s3: S3Args::default(),
        }
        .absolute();
        let Destination::Local {
            volume, credential, ..
        } = d
        else {
            panic!("local stays local")
        };
        assert!(volume.is_absolute());
        assert!(matches!(credential, Credential::Passphrase(p) if p.is_absolute()));
        let d = Destination::Local {
            volume: "s3://bucket/prefix".into(),
            credential: Credential::Passphrase("pass".into()),
            s3: S3Args {
                cache_dir: Some("cache".into()),
                ..S3Args::default()
            },
        }
        .absolute();
        let Destination::Local { volume, s3, .. } = d else {
            panic!("local stays local")
        };
        assert_eq!(volume, std::path::Path::new("s3://bucket/prefix"));
        assert!(s3.cache_dir.unwrap().is_absolute());
    }
}
