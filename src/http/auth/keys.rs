//! API keys: reading key lines, the set of keys in force and its reload,
//! and finding the key a request presents.
//!
//! A key is sent as `Authorization: Bearer <key>`. Only SHA-256 digests of
//! the configured keys are kept, and a presented key is compared with every
//! digest in constant time. Errors name a key's line and name, never the
//! key.

use std::collections::HashSet;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use axum::http::{header, HeaderMap};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::access::Role;
use super::SecurityError;

/// Keys shorter than this are refused at start-up: a key must not be
/// guessable.
pub const KEY_LEN_MIN: usize = 16;

/// One configured key. Only the key's digest is kept.
#[derive(Clone)]
pub struct ApiKey {
    pub name: Arc<str>,
    pub role: Role,
    digest: [u8; 32],
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiKey")
            .field("name", &self.name)
            .field("role", &self.role)
            .finish_non_exhaustive()
    }
}

/// Parses key lines `name role[:doctorId] key`, separated by `separator`;
/// blank lines and lines starting with `#` are skipped. Errors name the
/// line and the key's name, never the key.
pub fn parse_keys(
    text: &str,
    separator: char,
    source_name: &str,
) -> Result<Vec<ApiKey>, SecurityError> {
    let mut keys = Vec::new();
    for (index, line) in text.split(separator).enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let error = |message: String| SecurityError::Key {
            source_name: source_name.to_owned(),
            line: index + 1,
            message,
        };
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [name, role, key] = fields[..] else {
            return Err(error(format!(
                "expected three fields `name role[:doctorId] key`, found {}",
                fields.len()
            )));
        };
        if !crate::engine::is_valid_id(name) {
            return Err(error(
                "the name must be 1–64 characters of A–Z, a–z, 0–9, '.', '_' or '-'".into(),
            ));
        }
        let role = role.parse::<Role>().map_err(error)?;
        if key.chars().count() < KEY_LEN_MIN {
            return Err(error(format!(
                "the key of {name:?} is shorter than {KEY_LEN_MIN} characters"
            )));
        }
        // A key travels in the Authorization header, which the gate reads
        // only as visible ASCII: any other character would make a key that
        // loads but can never be presented.
        if !key.bytes().all(|byte| byte.is_ascii_graphic()) {
            return Err(error(format!(
                "the key of {name:?} has a character that is not visible ASCII (A–Z, a–z, 0–9 and punctuation)"
            )));
        }
        keys.push(ApiKey {
            name: Arc::from(name),
            role,
            digest: Sha256::digest(key.as_bytes()).into(),
        });
    }
    Ok(keys)
}

/// The keys in force, and where they were read from so that they can be
/// read again.
pub(super) struct KeySet {
    /// Empty when the server runs open. A reload replaces the whole set at
    /// once, so a request sees either the old keys or the new ones.
    keys: RwLock<Arc<[ApiKey]>>,
    file: Option<PathBuf>,
    /// Key lines separated by `;`, as `OPD_API_KEYS` holds them. No
    /// `Debug` on this type: these lines hold keys.
    inline: Option<String>,
}

impl KeySet {
    /// Reads the keys of the keys file and of the inline key lines.
    pub(super) fn read(
        file: Option<PathBuf>,
        inline: Option<String>,
    ) -> Result<KeySet, SecurityError> {
        let keys = read_keys(file.as_deref(), inline.as_deref())?;
        Ok(KeySet {
            keys: RwLock::new(keys.into()),
            file,
            inline,
        })
    }

    /// No keys at all.
    pub(super) fn none() -> KeySet {
        KeySet {
            keys: RwLock::new(Arc::new([])),
            file: None,
            inline: None,
        }
    }

    /// The keys in force now.
    pub(super) fn current(&self) -> Arc<[ApiKey]> {
        self.keys
            .read()
            .unwrap_or_else(|poison| poison.into_inner())
            .clone()
    }

    /// Reads the keys file again, with the inline keys (which cannot
    /// change while the process runs), and puts the new set in place of
    /// the old one. Returns how many keys are in force. On any error the
    /// old keys stay: no keys file, an unreadable or invalid file, repeated
    /// names or keys, or a file that would leave no key at all.
    pub(super) fn reload(&self) -> Result<usize, SecurityError> {
        if self.file.is_none() {
            return Err(SecurityError::Reload(
                "keys come only from OPD_API_KEYS, which is read at start-up; use --api-keys-file",
            ));
        }
        let keys = read_keys(self.file.as_deref(), self.inline.as_deref())?;
        if keys.is_empty() {
            return Err(SecurityError::Reload(
                "the new keys file holds no key, which would lock every client out",
            ));
        }
        let count = keys.len();
        *self
            .keys
            .write()
            .unwrap_or_else(|poison| poison.into_inner()) = keys.into();
        Ok(count)
    }

    /// The key whose digest matches `presented`. Every digest is compared,
    /// each in constant time, so timing tells nothing about near misses.
    pub(super) fn find(&self, presented: &str) -> Option<ApiKey> {
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        let keys = self.current();
        let mut found = None;
        for key in keys.iter() {
            if bool::from(key.digest.ct_eq(&digest)) {
                found = Some(key);
            }
        }
        found.cloned()
    }
}

/// The key of an `Authorization: Bearer <key>` header.
pub(super) fn bearer(headers: &HeaderMap) -> Result<&str, ()> {
    let mut values = headers.get_all(header::AUTHORIZATION).iter();
    let (Some(value), None) = (values.next(), values.next()) else {
        return Err(());
    };
    let (scheme, key) = value
        .to_str()
        .map_err(|_| ())?
        .trim()
        .split_once(' ')
        .ok_or(())?;
    let key = key.trim();
    if !scheme.eq_ignore_ascii_case("bearer") || key.is_empty() {
        return Err(());
    }
    Ok(key)
}

/// The keys of the keys file and of the inline key lines together, each
/// name and key at most once.
fn read_keys(file: Option<&Path>, inline: Option<&str>) -> Result<Vec<ApiKey>, SecurityError> {
    let mut keys = Vec::new();
    if let Some(path) = file {
        keys.extend(read_keys_file(path)?);
    }
    if let Some(text) = inline {
        keys.extend(parse_keys(text, ';', "OPD_API_KEYS")?);
    }
    check_unique(&keys)?;
    Ok(keys)
}

fn read_keys_file(path: &Path) -> Result<Vec<ApiKey>, SecurityError> {
    let file_error = |message: String| SecurityError::KeysFile {
        path: path.display().to_string(),
        message,
    };
    let text = std::fs::read_to_string(path).map_err(|error| file_error(error.to_string()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(metadata) = std::fs::metadata(path) {
            if metadata.permissions().mode() & 0o004 != 0 {
                tracing::warn!(path = %path.display(), "the API keys file is readable by every user: chmod 600 it");
            }
        }
    }
    parse_keys(&text, '\n', &path.display().to_string())
}

fn check_unique(keys: &[ApiKey]) -> Result<(), SecurityError> {
    let mut names = HashSet::new();
    let mut digests = HashSet::new();
    for key in keys {
        let duplicate = |message: String| SecurityError::Key {
            source_name: "the configured keys".into(),
            line: 0,
            message,
        };
        if !names.insert(key.name.clone()) {
            return Err(duplicate(format!("the name {:?} is used twice", key.name)));
        }
        if !digests.insert(key.digest) {
            return Err(duplicate(format!(
                "the key of {:?} is also another key's",
                key.name
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;
    use crate::engine::DoctorId;

    fn keys(text: &str) -> Result<Vec<ApiKey>, SecurityError> {
        parse_keys(text, '\n', "test")
    }

    #[test]
    fn key_lines_give_names_roles_and_digests_only() {
        let parsed = keys(
            "# comment\n\n  desk-1 front-desk 0123456789abcdef0123\ndr-a doctor:D1 fedcba9876543210fedc\nboss admin aaaaaaaaaaaaaaaa\n",
        )
        .unwrap();
        assert_eq!(parsed.len(), 3);
        assert_eq!(&*parsed[0].name, "desk-1");
        assert_eq!(parsed[0].role, Role::FrontDesk);
        assert_eq!(parsed[1].role, Role::Doctor(DoctorId::parse("D1").unwrap()));
        assert_eq!(parsed[2].role, Role::Admin);
        let debug = format!("{:?}", parsed[0]);
        assert!(!debug.contains("0123456789abcdef"), "{debug}");
    }

    #[test]
    fn bad_key_lines_are_refused_without_showing_the_key() {
        for (text, expected) in [
            ("desk front-desk short-key-12345", "shorter than 16"),
            ("desk front-desk", "three fields"),
            ("desk nurse 0123456789abcdef", "unknown role"),
            ("desk doctor 0123456789abcdef", "needs a doctor id"),
            ("desk admin:D1 0123456789abcdef", "only the doctor role"),
            ("bad/name viewer 0123456789abcdef", "name must be"),
        ] {
            let error = keys(text).expect_err(text).to_string();
            assert!(error.contains(expected), "{text}: {error}");
            assert!(!error.contains("0123456789abcdef"), "{error}");
            assert!(!error.contains("short-key-12345"), "{error}");
        }
    }

    #[test]
    fn keys_that_no_header_can_carry_are_refused() {
        for text in [
            "desk front-desk 0123456789abcdéf",
            "desk front-desk 0123456789abcdef\u{7f}",
            "desk front-desk 0123456789abcdef\u{1}",
        ] {
            let error = keys(text).expect_err(text).to_string();
            assert!(error.contains("not visible ASCII"), "{text}: {error}");
            assert!(!error.contains("0123456789abcd"), "{error}");
        }
    }

    #[test]
    fn duplicate_names_and_keys_are_refused() {
        let same_name = keys("a viewer 0123456789abcdef\na admin fedcba9876543210").unwrap();
        assert!(check_unique(&same_name).is_err());
        let same_key = keys("a viewer 0123456789abcdef\nb admin 0123456789abcdef").unwrap();
        assert!(check_unique(&same_key).is_err());
    }

    #[test]
    fn only_bearer_headers_carry_a_key() {
        let with = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::AUTHORIZATION, HeaderValue::from_str(value).unwrap());
            headers
        };
        assert_eq!(bearer(&with("Bearer abc")), Ok("abc"));
        assert_eq!(bearer(&with("bearer   abc ")), Ok("abc"));
        assert_eq!(bearer(&with("Basic abc")), Err(()));
        assert_eq!(bearer(&with("Bearer ")), Err(()));
        assert_eq!(bearer(&HeaderMap::new()), Err(()));
    }
}
